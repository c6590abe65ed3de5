// The daemon's one-shot commands (--discover, --once), kept out of main() so
// that tests and the daemon itself can call them.
// Main thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iosfwd>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "dav/http_client.hpp"

namespace davsyncd::app {

// An HTTP client set up for the account: credentials, TLS policy.
// The password comes from the config, password_command or the Secret
// Service; `may_prompt` (a user asked for this sync) lets the Secret Service
// show its unlock prompt for a locked keyring. Throws config::ConfigError
// or secrets::SecretError when the password cannot be obtained, and
// dav::Cancelled when `cancel` is set while it is being obtained.
std::unique_ptr<dav::HttpClient> make_client_ptr(const config::Account& account, const std::atomic<bool>* cancel,
                                                 bool may_prompt);

// Where an account's state lives: <state_dir>/<account id>/.
std::filesystem::path account_state_dir(const config::Config& cfg, const config::Account& account);

// Discovers every account's collections, stores them under the state folder
// (collections.json) and prints them (a table, or JSON). Returns the exit
// status: 0 when every account was discovered.
int discover(const config::Config& cfg, const std::string& only_account, bool json, std::ostream& out);

// How long a stored discovery result is trusted before --once discovers again.
inline constexpr std::chrono::hours kDiscoveryMaxAge{6};

// Syncs every account (or one) once, printing a line per collection.
// Returns 0 when every collection synced without error or refusal.
int sync_once(const config::Config& cfg, const std::string& only_account, bool force_delete, std::ostream& out);

}  // namespace davsyncd::app
