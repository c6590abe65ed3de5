// The user's configuration: $XDG_CONFIG_HOME/davsyncd/config.json.
//
// The key names are a contract that scripts and tests rely on; the schema in
// config/config.schema.json documents them. The loader is strict: an unknown
// key, a wrong type or a missing required key is an error naming the file,
// line, account and key, because a silently ignored typo in a sync tool's
// config means data in the wrong place.
//
// Pure data and parsing; no I/O except reading the file (and, in
// resolve_password(), running the user's password command). A password kept
// in the Secret Service is looked up by secrets/secret_service.hpp.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/fs.hpp"
#include "core/secret_string.hpp"

namespace davsyncd::config {

struct ConfigError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class ConflictPolicy { server_wins, local_wins, newest };

// Which of an account's collections to sync. A collection matches a pattern
// when the pattern equals its id (last path segment of its href) or its
// display name. Empty include = all. Exclude wins over include.
struct CollectionFilter {
    std::vector<std::string> include;
    std::vector<std::string> exclude;
    bool accepts(const std::string& id, const std::string& display_name) const;
    friend bool operator==(const CollectionFilter&, const CollectionFilter&) = default;
};

// How many deletions one sync may apply to a collection, from either side,
// before it asks the user to confirm: more than `max_items` AND more than
// `max_fraction` of the collection (a wiped disk, a mistaken rm, a server
// that lost its data). A side that became empty always asks.
struct DeletionGuard {
    unsigned max_items = 10;
    double max_fraction = 0.5;
    friend bool operator==(const DeletionGuard&, const DeletionGuard&) = default;
};

struct Account {
    std::string id;        // [A-Za-z0-9_-]{1,64}; names folders, D-Bus paths and logs
    std::string url;       // http(s) URL: a collection home, a principal or just the server
    std::string username;
    std::optional<std::string> password_command;  // run with /bin/sh -c; first line of stdout
    std::optional<SecretString> password;         // inline; discouraged (a warning is logged)
    // Attributes of the account's Secret Service item when they are not the
    // default ones (an item stored by another program); empty = default.
    std::map<std::string, std::string> secret;
    std::filesystem::path local_root;             // folder holding one vdir per collection
    std::chrono::seconds sync_interval{900};      // poll interval
    CollectionFilter collections;
    bool verify_tls = true;
    ConflictPolicy conflict_policy = ConflictPolicy::server_wins;
    unsigned multiget_batch = 0;                  // 0 = engine default
    DeletionGuard deletion_guard;
    // The ntfy server of davsyncd's built-in push receiver, as an origin
    // ("https://ntfy.example.org"); set here or inherited from the top level.
    // When set, it is used even if a UnifiedPush distributor is on the bus.
    std::optional<std::string> push_service;
    // A reload keeps an account's runtime only when nothing here changed.
    friend bool operator==(const Account&, const Account&) = default;
};

// Where an account's password comes from. An account with a username and
// neither `password` nor `password_command` uses the Secret Service.
enum class PasswordSource { none, inline_password, command, secret_service };
PasswordSource password_source(const Account& account);

// The attributes of the account's Secret Service item: `secret` when given,
// else {"application": "davsyncd", "account": <id>}, which is what
// `davsyncctl set-password` stores.
std::map<std::string, std::string> secret_attributes(const Account& account);

struct Config {
    std::filesystem::path source;        // the file it was read from
    std::filesystem::path state_dir;     // $XDG_STATE_HOME/davsyncd
    std::filesystem::path data_dir;      // $XDG_DATA_HOME/davsyncd
    std::optional<std::string> push_distributor;  // D-Bus name to prefer
    std::optional<std::string> push_service;      // default of Account::push_service
    std::vector<Account> accounts;
};

// Default location: $XDG_CONFIG_HOME/davsyncd/config.json.
std::filesystem::path default_path(const fs::XdgDirs& xdg);

// Parses and validates. `local_root` defaults to data_dir/<account id>.
// Throws ConfigError with a message like
//   "/home/a/.config/davsyncd/config.json:7: account 'personal': key 'sync_interval': expected a positive integer (seconds)".
// A missing file gives a message that says how to create one.
Config load(const std::filesystem::path& path, const fs::XdgDirs& xdg);
Config parse(std::string_view text, const std::filesystem::path& source_name, const fs::XdgDirs& xdg);

// How long password_command may run: time for a password manager that asks
// the user to unlock it.
inline constexpr std::chrono::seconds kPasswordCommandTimeout{120};

// The account's password: runs password_command (first line of its stdout,
// without the newline) or returns the inline password ("" for an account
// whose source is the Secret Service: see secrets::). Throws ConfigError
// naming the account (never the password) when the command fails, or when
// it has not finished after `timeout` (its process group is killed then:
// a hanging command must not stall the account for ever).
//
// The command starts with no blocked signals and every signal at its
// default action, whatever the calling thread blocks (the daemon blocks
// SIGTERM, SIGINT and SIGHUP for its signalfd). When `cancel` is given and
// becomes true, the process group is killed within about 100 ms and
// dav::Cancelled (dav/http_client.hpp, the same type a cancelled request
// throws) is thrown.
SecretString resolve_password(const Account& account, std::chrono::milliseconds timeout = kPasswordCommandTimeout,
                             const std::atomic<bool>* cancel = nullptr);

const char* to_string(ConflictPolicy p);

}  // namespace davsyncd::config
