// The account password kept in the desktop's Secret Service (GNOME Keyring,
// KWallet, KeePassXC: the org.freedesktop.secrets D-Bus API).
//
// Each call opens its own short-lived session-bus connection in the calling
// thread (sdbus-c++ connections must not be shared across threads), talks
// over it with a deadline, watching the cancel flag between slices of at
// most 100 ms, and closes it; the Secret Service session (the "plain"
// algorithm: the bus is local, the transport adds nothing) ends with it.
//
// A locked collection is unlocked through the service's prompt only when
// the caller says a user is waiting (`may_prompt`): a timer or a push never
// makes a dialog appear on the desktop.
//
// Thread affinity: any thread; nothing is shared between calls.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <stdexcept>
#include <string>

#include "config/config.hpp"
#include "core/secret_string.hpp"

namespace davsyncd::secrets {

using Attributes = std::map<std::string, std::string>;

// Why the Secret Service gave no password. The message names what to do.
struct SecretError : std::runtime_error {
    enum class Kind {
        no_service,  // nothing owns org.freedesktop.secrets (or the bus is unreachable)
        locked,      // the item's collection is locked and no prompt was allowed
        dismissed,   // the user dismissed the unlock prompt
        not_found,   // no item has these attributes
        failed,      // any other error or a timeout
    };
    SecretError(Kind kind, const std::string& what) : std::runtime_error(what), kind(kind) {}
    Kind kind;
    // Only the user can change this: retrying on a timer would fail the same way.
    bool needs_user() const { return kind == Kind::not_found || kind == Kind::dismissed || kind == Kind::locked; }
};

struct Options {
    bool may_prompt = false;                     // a user asked: unlock with the service's prompt
    std::chrono::milliseconds call_timeout{10'000};  // each D-Bus call
    std::chrono::milliseconds prompt_timeout = config::kPasswordCommandTimeout;  // the user at the dialog
    const std::atomic<bool>* cancel = nullptr;   // set: dav::Cancelled is thrown within ~100 ms
};

// The secret of the first item with exactly these attributes. Throws
// SecretError (the message starts with "no password for account '<id>'"
// or names the account otherwise) or dav::Cancelled.
SecretString lookup_password(const config::Account& account, const Options& options = {});

// Stores `password` as the account's item: in the default collection,
// labelled "davsyncd: <id>", with secret_attributes(account), replacing an
// item with the same attributes. A locked default collection is unlocked
// with a prompt when `options.may_prompt`. Throws SecretError.
void store_password(const config::Account& account, const SecretString& password, const Options& options = {});

// What to type to store the account's password, for error messages:
// `davsyncctl set-password ID` for the default item, a secret-tool line
// naming the configured attributes otherwise.
std::string how_to_store(const config::Account& account);

}  // namespace davsyncd::secrets
