#include "secrets/secret_service.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cstdint>
#include <ctime>
#include <optional>
#include <poll.h>
#include <string.h>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "core/log.hpp"
#include "dav/http_client.hpp"

namespace davsyncd::secrets {
namespace {

constexpr const char* kService = "org.freedesktop.secrets";
constexpr const char* kServicePath = "/org/freedesktop/secrets";
constexpr const char* kServiceIface = "org.freedesktop.Secret.Service";
constexpr const char* kItemIface = "org.freedesktop.Secret.Item";
constexpr const char* kCollectionIface = "org.freedesktop.Secret.Collection";
constexpr const char* kPromptIface = "org.freedesktop.Secret.Prompt";
constexpr std::chrono::milliseconds kCancelSlice{100};

using Secret = sdbus::Struct<sdbus::ObjectPath, std::vector<uint8_t>, std::vector<uint8_t>, std::string>;

using Clock = std::chrono::steady_clock;

void wipe(std::vector<uint8_t>& bytes) {
    if (!bytes.empty()) explicit_bzero(bytes.data(), bytes.size());
    bytes.clear();
}

// A shell word for a hint the user may paste.
std::string shell_word(const std::string& s) {
    bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || std::strchr("@%+=:,./_-", c);
    });
    if (plain) return s;
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string attributes_text(const Attributes& attrs) {
    std::string out;
    for (const auto& [k, v] : attrs) out += cat(out.empty() ? "" : ", ", k, "=", v);
    return "{" + out + "}";
}

// One conversation with the Secret Service over a connection of its own.
class Conversation {
public:
    // `subject` starts every error message ("no password for account 'x': ").
    Conversation(const config::Account& account, const Options& options, std::string subject_text, bool storing)
        : account_(account), options_(options), subject_(std::move(subject_text)), storing_(storing) {
        check_cancel();
        try {
            connection_ = sdbus::createSessionBusConnection();
        } catch (const sdbus::Error& e) {
            throw SecretError(SecretError::Kind::no_service,
                              cat(subject(), "cannot reach the session bus for the Secret Service (", e.getMessage(),
                                  "); ", alternatives()));
        }
    }

    const std::string& subject() const { return subject_; }
    std::string alternatives() const {
        return "start a keyring that offers it (GNOME Keyring, KeePassXC, KWallet) or set 'password_command' in the "
               "account";
    }

    // Calls `method` and waits for its answer, the deadline or the cancel flag.
    template <typename Fill>
    sdbus::MethodReply call(const std::string& path, const char* interface, const char* method, Fill fill) {
        auto proxy = sdbus::createProxy(*connection_, kService, path);
        auto msg = proxy->createMethodCall(interface, method);
        fill(msg);
        std::optional<sdbus::MethodReply> reply;
        std::optional<sdbus::Error> error;
        bool done = false;
        auto timeout_us = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(options_.call_timeout).count());
        // The proxy outlives the wait below, and its pending call dies with it:
        // the handler never runs after this frame is gone.
        proxy->callMethod(
            msg,
            [&](sdbus::MethodReply& r, const sdbus::Error* e) {
                if (e) error = *e;
                else reply = r;
                done = true;
            },
            timeout_us);
        if (!pump([&] { return done; }, Clock::now() + options_.call_timeout))
            throw SecretError(SecretError::Kind::failed,
                              cat(subject(), "the Secret Service did not answer ", method, " within ",
                                  options_.call_timeout.count() / 1000.0, " s"));
        if (error) throw translate(*error, method);
        return std::move(*reply);
    }

    sdbus::MethodReply call(const std::string& path, const char* interface, const char* method) {
        return call(path, interface, method, [](sdbus::MethodCall&) {});
    }

    sdbus::ObjectPath open_session() {
        // "plain": the secret crosses only the local bus, whose peers the
        // kernel authenticates; the DH variant would protect it from no one.
        auto reply = call(kServicePath, kServiceIface, "OpenSession", [](sdbus::MethodCall& m) {
            m << std::string("plain") << sdbus::Variant(std::string());
        });
        sdbus::Variant output;
        sdbus::ObjectPath session;
        reply >> output >> session;
        return session;
    }

    // Unlocks `objects` through the service, prompting the user when the
    // service asks to. Returns the objects now unlocked.
    std::vector<sdbus::ObjectPath> unlock(const std::vector<sdbus::ObjectPath>& objects) {
        auto reply = call(kServicePath, kServiceIface, "Unlock", [&](sdbus::MethodCall& m) { m << objects; });
        std::vector<sdbus::ObjectPath> unlocked;
        sdbus::ObjectPath prompt;
        reply >> unlocked >> prompt;
        if (prompt != "/") {
            auto result = run_prompt(prompt);
            if (result.containsValueOfType<std::vector<sdbus::ObjectPath>>())
                unlocked = result.get<std::vector<sdbus::ObjectPath>>();
        }
        return unlocked;
    }

    // Shows the service's prompt and waits for the user. Returns the
    // prompt's result; throws SecretError(dismissed) when dismissed.
    sdbus::Variant run_prompt(const sdbus::ObjectPath& prompt) {
        bool completed = false, dismissed = false;
        sdbus::Variant result;
        // Subscribed before the prompt shows, so that its end cannot be missed.
        auto slot = connection_->addMatch(
            cat("type='signal',interface='", kPromptIface, "',member='Completed',path='", std::string(prompt), "'"),
            [&](sdbus::Message& m) {
                m >> dismissed >> result;
                completed = true;
            });
        log::info("account '", account_.id, "': the keyring is locked; asking the user to unlock it");
        call(prompt, kPromptIface, "Prompt", [](sdbus::MethodCall& m) { m << std::string(); });  // no parent window
        bool in_time = false;
        try {
            in_time = pump([&] { return completed; }, Clock::now() + options_.prompt_timeout);
        } catch (const dav::Cancelled&) {
            dismiss(prompt);
            throw;
        }
        if (!in_time) {
            dismiss(prompt);
            throw SecretError(SecretError::Kind::dismissed,
                              cat(subject(), "nobody answered the keyring's unlock prompt within ",
                                  options_.prompt_timeout.count() / 1000, " s; ", ask_again()));
        }
        if (dismissed)
            throw SecretError(SecretError::Kind::dismissed,
                              cat(subject(), "the keyring's unlock prompt was dismissed; ", ask_again()));
        return result;
    }

    std::string ask_again() const {
        return cat("run `davsyncctl ", storing_ ? "set-password " : "sync ", account_.id, "` to be asked again");
    }

    SecretError locked_error() const {
        if (storing_)
            return SecretError(SecretError::Kind::locked,
                               cat(subject(), "the default keyring is locked and was not unlocked; unlock it (for "
                                              "example in Seahorse) and try again"));
        return SecretError(SecretError::Kind::locked,
                           cat(subject(), "the keyring that holds it is locked; unlock it, or run `davsyncctl sync ",
                               account_.id,
                               "`, which asks for the keyring's password (davsyncd never shows that prompt by "
                               "itself)"));
    }

private:
    void check_cancel() const {
        if (options_.cancel && options_.cancel->load(std::memory_order_relaxed))
            throw dav::Cancelled(cat("account '", account_.id, "': Secret Service lookup cancelled"));
    }

    // Best effort: a prompt left open would stay on the user's screen.
    void dismiss(const sdbus::ObjectPath& prompt) noexcept {
        try {
            auto proxy = sdbus::createProxy(*connection_, kService, prompt);
            proxy->callMethod(proxy->createMethodCall(kPromptIface, "Dismiss"), 2'000'000);  // µs
        } catch (...) {
        }
    }

    // Processes the connection until `done()`; false when `deadline` passed
    // first. Throws dav::Cancelled when the flag is set.
    template <typename Done>
    bool pump(Done done, Clock::time_point deadline) {
        for (;;) {
            try {
                while (!done() && connection_->processPendingRequest()) {
                }
            } catch (const sdbus::Error& e) {
                throw SecretError(SecretError::Kind::no_service,
                                  cat(subject(), "lost the session bus (", e.getMessage(), ")"));
            }
            if (done()) return true;
            check_cancel();
            auto now = Clock::now();
            if (now >= deadline) return false;
            auto wait = std::min<Clock::duration>(deadline - now, kCancelSlice);
            auto pd = connection_->getEventLoopPollData();
            if (pd.timeout_usec != UINT64_MAX) {
                // sd-bus's own timeout (a call's reply deadline), on CLOCK_MONOTONIC
                timespec ts{};
                clock_gettime(CLOCK_MONOTONIC, &ts);
                auto now_us = static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
                auto bus_wait = std::chrono::microseconds(pd.timeout_usec > now_us ? pd.timeout_usec - now_us : 0);
                wait = std::min<Clock::duration>(wait, bus_wait);
            }
            pollfd pfd{pd.fd, pd.events, 0};
            auto ms = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
            ::poll(&pfd, 1, static_cast<int>(ms));
        }
    }

    SecretError translate(const sdbus::Error& e, const char* method) const {
        const std::string& name = e.getName();
        if (name == "org.freedesktop.DBus.Error.ServiceUnknown" || name == "org.freedesktop.DBus.Error.NameHasNoOwner" ||
            name.starts_with("org.freedesktop.DBus.Error.Spawn."))
            return SecretError(SecretError::Kind::no_service,
                               cat(subject(), "no Secret Service on the session bus (nothing owns ", kService, "); ",
                                   alternatives()));
        if (name == "org.freedesktop.Secret.Error.IsLocked") return locked_error();
        if (name == "org.freedesktop.DBus.Error.NoReply" || name == "org.freedesktop.DBus.Error.Timeout" ||
            name == "org.freedesktop.DBus.Error.TimedOut")
            return SecretError(SecretError::Kind::failed,
                               cat(subject(), "the Secret Service did not answer ", method, " within ",
                                   options_.call_timeout.count() / 1000.0, " s"));
        return SecretError(SecretError::Kind::failed,
                           cat(subject(), "the Secret Service refused ", method, ": ", e.getMessage(), " (", name, ")"));
    }

    const config::Account& account_;
    const Options& options_;
    std::string subject_;
    bool storing_;
    std::unique_ptr<sdbus::IConnection> connection_;
};

SecretString secret_value(Secret& secret) {
    auto& bytes = std::get<2>(secret);
    std::string text(bytes.begin(), bytes.end());
    wipe(bytes);
    return SecretString(std::move(text));
}

}  // namespace

std::string how_to_store(const config::Account& account) {
    std::string tool = "secret-tool store --label davsyncd";
    if (account.secret.empty()) {  // in the order people write it
        tool += cat(" application davsyncd account ", shell_word(account.id));
        return cat("`davsyncctl set-password ", account.id, "` or `", tool, "`");
    }
    for (const auto& [k, v] : account.secret) tool += cat(" ", shell_word(k), " ", shell_word(v));
    return cat("`", tool, "` (or `davsyncctl set-password ", account.id, "`)");
}

namespace {

SecretString lookup(const config::Account& account, const Options& options) {
    auto attrs = config::secret_attributes(account);
    Conversation bus(account, options, cat("no password for account '", account.id, "': "), false);
    std::vector<sdbus::ObjectPath> unlocked, locked;
    auto found = bus.call(kServicePath, kServiceIface, "SearchItems", [&](sdbus::MethodCall& m) { m << attrs; });
    found >> unlocked >> locked;
    if (unlocked.empty() && locked.empty()) {
        std::string which = account.secret.empty()
                                ? ""
                                : cat("no Secret Service item has the attributes ", attributes_text(attrs),
                                      " named in 'secret'; ");
        throw SecretError(SecretError::Kind::not_found, cat(bus.subject(), which, "store one with ", how_to_store(account)));
    }
    if (unlocked.empty()) {
        if (!options.may_prompt) throw bus.locked_error();
        for (const auto& path : bus.unlock(locked))
            if (std::find(locked.begin(), locked.end(), path) != locked.end()) unlocked.push_back(path);
        // Unlocking a collection may report the collection rather than the item.
        if (unlocked.empty()) {
            std::vector<sdbus::ObjectPath> again_locked;
            auto again = bus.call(kServicePath, kServiceIface, "SearchItems", [&](sdbus::MethodCall& m) { m << attrs; });
            again >> unlocked >> again_locked;
        }
        if (unlocked.empty()) throw bus.locked_error();
    }
    auto session = bus.open_session();
    Secret secret;
    auto reply = bus.call(unlocked.front(), kItemIface, "GetSecret", [&](sdbus::MethodCall& m) { m << session; });
    reply >> secret;
    auto password = secret_value(secret);
    if (password.empty())
        throw SecretError(SecretError::Kind::not_found,
                          cat(bus.subject(), "its Secret Service item ", attributes_text(attrs),
                              " holds an empty secret; store one with ", how_to_store(account)));
    return password;
}

void store(const config::Account& account, const SecretString& password, const Options& options) {
    auto attrs = config::secret_attributes(account);
    Conversation bus(account, options, cat("cannot store the password of account '", account.id, "': "), true);
    sdbus::ObjectPath collection;
    auto alias = bus.call(kServicePath, kServiceIface, "ReadAlias", [](sdbus::MethodCall& m) { m << std::string("default"); });
    alias >> collection;
    if (collection == "/")
        throw SecretError(SecretError::Kind::not_found,
                          cat(bus.subject(), "the Secret Service has no default collection; create a keyring and make it the "
                                      "default (for example with Seahorse)"));
    sdbus::Variant locked_v;
    auto got = bus.call(collection, "org.freedesktop.DBus.Properties", "Get", [](sdbus::MethodCall& m) {
        m << std::string(kCollectionIface) << std::string("Locked");
    });
    got >> locked_v;
    if (locked_v.containsValueOfType<bool>() && locked_v.get<bool>()) {
        if (!options.may_prompt) throw bus.locked_error();
        auto now = bus.unlock({collection});
        if (std::find(now.begin(), now.end(), collection) == now.end()) throw bus.locked_error();
    }
    auto session = bus.open_session();
    std::map<std::string, sdbus::Variant> properties{
        {"org.freedesktop.Secret.Item.Label", sdbus::Variant(cat("davsyncd: ", account.id))},
        {"org.freedesktop.Secret.Item.Attributes", sdbus::Variant(attrs)},
    };
    Secret secret{session, std::vector<uint8_t>{},
                  std::vector<uint8_t>(password.str().begin(), password.str().end()),
                  std::string("text/plain; charset=utf8")};
    sdbus::ObjectPath item, prompt;
    try {
        auto created = bus.call(collection, kCollectionIface, "CreateItem", [&](sdbus::MethodCall& m) {
            m << properties << secret << true;  // replace an item with the same attributes
        });
        created >> item >> prompt;
    } catch (...) {
        wipe(std::get<2>(secret));
        throw;
    }
    wipe(std::get<2>(secret));
    if (prompt != "/") bus.run_prompt(prompt);
}

}  // namespace

// An answer of the wrong shape (a broken or hostile service) is an error
// naming the account, like any other.
SecretString lookup_password(const config::Account& account, const Options& options) {
    try {
        return lookup(account, options);
    } catch (const sdbus::Error& e) {
        throw SecretError(SecretError::Kind::failed, cat("no password for account '", account.id,
                                                         "': unexpected answer from the Secret Service: ", e.getMessage()));
    }
}

void store_password(const config::Account& account, const SecretString& password, const Options& options) {
    try {
        store(account, password, options);
    } catch (const sdbus::Error& e) {
        throw SecretError(SecretError::Kind::failed, cat("cannot store the password of account '", account.id,
                                                         "': unexpected answer from the Secret Service: ", e.getMessage()));
    }
}

}  // namespace davsyncd::secrets
