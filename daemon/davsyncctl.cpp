// davsyncctl: look at and steer a running davsyncd over D-Bus.
// Entry point only: argument parsing and printing; bus/client does the talking
// (and secrets/secret_service, for set-password).

#include <algorithm>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <termios.h>
#include <unistd.h>
#include <iomanip>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "bus/client.hpp"
#include "bus/objects.hpp"
#include "config/config.hpp"
#include "core/sanitize.hpp"
#include "secrets/secret_service.hpp"
#include "davsyncd_version.h"

namespace {

using davsyncd::bus::Client;
using davsyncd::bus::Snapshot;
using nlohmann::json;

constexpr const char* kUsage = R"(Usage: davsyncctl [--json] COMMAND

Commands:
  status                         accounts and collections: state, last and next sync, push, errors
  sync [ACCOUNT [COLLECTION]]    sync now and wait for the result (--no-wait: return at once)
  watch                          print the daemon's events as they happen (Ctrl-C to stop)
  reload                         re-read the configuration file
  list [ACCOUNT]                 account ids, or ACCOUNT's collection ids, one per line
                                 (for scripts and shell completion)
  confirm-delete ACCOUNT/COLLECTION
                                 apply the deletions a sync refused (more than the
                                 deletion guard allows) at its next sync, started now
  set-password ACCOUNT           store the account's password in the Secret Service
                                 (asked for without echo on a terminal, else one line
                                 of stdin); a running daemon then uses it

Options:
  --json        machine-readable output (one JSON document; for watch, one per line)
  --no-wait     with sync: do not wait for the sync to finish
  --timeout S   with sync: give up waiting after S seconds (default 600)
  --config FILE with set-password: the configuration that names the account
                (default: $XDG_CONFIG_HOME/davsyncd/config.json)
)";

std::string when(const json& usec) {
    uint64_t us = usec.is_number() ? usec.get<uint64_t>() : 0;
    if (us == 0) return "-";
    std::time_t t = static_cast<std::time_t>(us / 1000000);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::string str(const json& j, const char* key) { return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : ""; }

// What the daemon serves is mostly server text (names, ids, error messages):
// the terminal must show its control characters, not obey them.
std::string shown(const std::string& text) { return davsyncd::sanitize::for_terminal(text); }

// JSON with every non-ASCII character escaped: the same data for a parser,
// and nothing a terminal would act on (C1 controls, bidi overrides).
std::string dumped(const json& j, int indent = -1) {
    return j.dump(indent, ' ', true, json::error_handler_t::replace);
}

int status(Client& client, bool as_json) {
    Snapshot s = client.snapshot();
    if (as_json) {
        json out = {{"manager", s.manager}, {"accounts", json::array()}};
        for (const auto& [path, a] : s.accounts) {
            json acc = a;
            acc["path"] = path;
            acc["collections"] = json::array();
            for (const auto& cpath : a.value("Collections", std::vector<std::string>{}))
                if (auto it = s.collections.find(cpath); it != s.collections.end()) {
                    json c = it->second;
                    c["path"] = cpath;
                    acc["collections"].push_back(c);
                }
            out["accounts"].push_back(acc);
        }
        std::cout << dumped(out, 2) << "\n";
        return 0;
    }
    std::cout << "davsyncd " << shown(str(s.manager, "Version")) << ", config " << shown(str(s.manager, "ConfigPath"))
              << ", push distributor: "
              << (str(s.manager, "PushDistributor").empty() ? "none" : shown(str(s.manager, "PushDistributor"))) << "\n\n";
    std::cout << std::left << std::setw(16) << "ACCOUNT" << std::setw(13) << "STATE" << std::setw(21) << "LAST SYNC"
              << std::setw(21) << "NEXT SYNC" << std::setw(13) << "PUSH" << "RESULT\n";
    for (const auto& [path, a] : s.accounts) {
        std::string result = str(a, "LastResult");
        if (!str(a, "LastError").empty()) result += ": " + str(a, "LastError");
        std::cout << std::setw(16) << shown(str(a, "Id")) << std::setw(13) << shown(str(a, "State")) << std::setw(21)
                  << when(a.value("LastSync", json())) << std::setw(21) << when(a.value("NextSync", json()))
                  << std::setw(13) << shown(str(a, "PushState")) << (result.empty() ? "-" : shown(result)) << "\n";
        if (auto via = str(a, "PushTransport"); !via.empty()) std::cout << "  push via " << shown(via) << "\n";
        for (const auto& cpath : a.value("Collections", std::vector<std::string>{})) {
            auto it = s.collections.find(cpath);
            if (it == s.collections.end()) continue;
            const auto& c = it->second;
            std::string name = str(c, "DisplayName").empty() ? str(c, "Id") : str(c, "DisplayName");
            std::string kind = str(c, "Kind");
            if (c.value("ReadOnly", false)) kind += " (ro)";
            std::cout << "  " << std::setw(22) << shown(name) << std::setw(18) << shown(kind) << std::setw(7)
                      << c.value("ItemCount", 0u) << std::setw(21) << when(c.value("LastSync", json()))
                      << shown(str(c, "LocalPath")) << "\n";
            // What waits for the server or for the user, one line each.
            if (auto n = c.value("PendingUploads", 0u))
                std::cout << "      " << n << " local change(s) waiting to upload (the server failed; retried later)\n";
            if (auto n = c.value("RefusedUploads", 0u))
                std::cout << "      " << n << " local file(s) refused by the server; sent again once changed\n";
            if (auto why = str(c, "DeletionRefused"); !why.empty())
                std::cout << "      deletion refused: " << shown(why) << "\n";
        }
    }
    return 0;
}

// Finds the account (and collection) to sync; empty path when unknown.
struct Target {
    std::string path;
    const char* interface;
    std::string account_path;
};

std::optional<Target> find_target(const Snapshot& s, const std::string& account, const std::string& collection) {
    for (const auto& [path, a] : s.accounts) {
        if (str(a, "Id") != account) continue;
        if (collection.empty()) return Target{path, "io.github.davsyncd.Account1", path};
        for (const auto& cpath : a.value("Collections", std::vector<std::string>{})) {
            auto it = s.collections.find(cpath);
            if (it == s.collections.end()) continue;
            bool match = str(it->second, "Id") == collection || str(it->second, "DisplayName") == collection ||
                         cpath.substr(cpath.rfind('/') + 1) == davsyncd::bus::path_element(collection);
            if (match) return Target{cpath, "io.github.davsyncd.Collection1", path};
        }
        std::cerr << "davsyncctl: account '" << shown(account) << "' has no collection '" << shown(collection) << "'\n";
        return std::nullopt;
    }
    std::cerr << "davsyncctl: no account '" << shown(account) << "'\n";
    return std::nullopt;
}

int sync(Client& client, const std::string& account, const std::string& collection, bool wait, int timeout,
         bool as_json) {
    std::optional<Target> target;
    if (!account.empty()) {
        target = find_target(client.snapshot(), account, collection);
        if (!target) return 1;
    }
    const std::string path = target ? target->path : "";
    const char* interface = target ? target->interface : nullptr;
    if (!wait) {
        if (target) client.sync(path, interface);
        else client.sync_all();
        return 0;
    }
    bool all_ok = true;
    bool finished = client.sync_and_wait(
        path, interface, std::chrono::seconds(timeout),
        [&](const std::string& account_path, const std::string& result, const std::string& summary) {
            if (as_json) std::cout << dumped(json{{"account", account_path}, {"result", result}, {"summary", summary}}) << std::endl;
            else std::cout << davsyncd::sanitize::for_terminal(summary, davsyncd::sanitize::Lines::many) << std::endl;
            all_ok &= result == "ok";
        });
    if (!finished) {
        std::cerr << "davsyncctl: gave up waiting after " << timeout << " s; the sync goes on in the daemon\n";
        return 3;
    }
    return all_ok ? 0 : 1;
}

// Names only, one per line, for shell completion: what `sync` and
// `confirm-delete` accept. Ids are restricted on both sides, but a server
// chose the collection ids: print them as the terminal would show them.
int list(Client& client, const std::string& account) {
    Snapshot s = client.snapshot();
    for (const auto& [path, a] : s.accounts) {
        if (account.empty()) {
            std::cout << shown(str(a, "Id")) << "\n";
            continue;
        }
        if (str(a, "Id") != account) continue;
        for (const auto& cpath : a.value("Collections", std::vector<std::string>{}))
            if (auto it = s.collections.find(cpath); it != s.collections.end()) std::cout << shown(str(it->second, "Id")) << "\n";
        return 0;
    }
    if (account.empty()) return 0;
    std::cerr << "davsyncctl: no account '" << shown(account) << "'\n";
    return 1;
}

int watch(Client& client, bool as_json) {
    client.watch([as_json](const std::string& path, const std::string& iface, const std::string& member, const json& args) {
        if (as_json) {
            std::cout << dumped(json{{"path", path}, {"interface", iface}, {"signal", member}, {"args", args}}) << std::endl;
        } else {
            std::cout << when(json(static_cast<uint64_t>(std::time(nullptr)) * 1000000)) << "  " << shown(path) << "  "
                      << shown(member) << "  " << dumped(args) << std::endl;
        }
    });
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}

// The terminal's settings while a password is typed without echo, so that
// Ctrl-C or a kill restores them (a handler can reach nothing else).
termios g_saved_tty;

void restore_tty_and_die(int sig) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

// One line: typed without echo on a terminal, else read from stdin.
std::optional<davsyncd::SecretString> read_password(const std::string& account_id) {
    std::string line;
    line.reserve(4096);  // so that growing leaves no copy behind
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &g_saved_tty) == 0;
    if (tty) {
        // Echo off before the prompt shows, so that nothing typed after it is echoed.
        termios quiet = g_saved_tty;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        quiet.c_lflag |= ECHONL;
        for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP}) std::signal(sig, restore_tty_and_die);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        std::cerr << "Password for account '" << shown(account_id) << "': " << std::flush;
    }
    bool got = static_cast<bool>(std::getline(std::cin, line));
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &g_saved_tty);
        for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP}) std::signal(sig, SIG_DFL);
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!got && line.empty()) return std::nullopt;
    return davsyncd::SecretString(std::move(line));
}

int set_password(const std::string& account_id, const std::string& config_path) {
    namespace config = davsyncd::config;
    auto xdg = davsyncd::fs::XdgDirs::from_environment();
    config::Config cfg;
    try {
        cfg = config::load(config_path.empty() ? config::default_path(xdg) : std::filesystem::path(config_path), xdg);
    } catch (const config::ConfigError& e) {
        std::cerr << "davsyncctl: " << shown(e.what()) << "\n";
        return 1;
    }
    auto it = std::find_if(cfg.accounts.begin(), cfg.accounts.end(), [&](const auto& a) { return a.id == account_id; });
    if (it == cfg.accounts.end()) {
        std::cerr << "davsyncctl: no account '" << shown(account_id) << "' in " << shown(cfg.source.string()) << "\n";
        return 1;
    }
    if (config::password_source(*it) != config::PasswordSource::secret_service)
        std::cerr << "davsyncctl: warning: account '" << shown(account_id) << "' takes its password from '"
                  << (it->password ? "password" : "password_command")
                  << "' in the configuration, not from the Secret Service; remove that key to use this one\n";
    auto password = read_password(account_id);
    if (!password || password->empty()) {
        std::cerr << "davsyncctl: no password given; nothing stored\n";
        return 1;
    }
    try {
        davsyncd::secrets::store_password(*it, *password, {.may_prompt = true});  // the user is here
    } catch (const davsyncd::secrets::SecretError& e) {
        std::cerr << "davsyncctl: " << shown(e.what()) << "\n";
        return 1;
    }
    std::cout << "stored the password of account '" << shown(account_id) << "' in the Secret Service\n";
    // An account waiting for its password retries after a reload (which
    // re-reads every credential); a daemon that is not running is not started.
    try {
        Client client;
        if (client.running()) {
            client.reload();
            std::cout << "asked the running davsyncd to use it\n";
        }
    } catch (const std::exception& e) {
        std::cerr << "davsyncctl: could not tell the running davsyncd: " << shown(e.what()) << "\n";
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    bool as_json = false, wait = true;
    int timeout = 600;
    std::vector<std::string> args;
    std::string config_path;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--json") as_json = true;
        else if (a == "--no-wait") wait = false;
        else if (a == "--timeout" && i + 1 < argc) timeout = std::atoi(argv[++i]);
        else if (a == "--config" && i + 1 < argc) config_path = argv[++i];
        else if (a == "--help" || a == "-h") { std::cout << kUsage; return 0; }
        else if (a == "--version") { std::cout << "davsyncctl " << DAVSYNCD_VERSION << "\n"; return 0; }
        else if (a.starts_with("--")) { std::cerr << "davsyncctl: unknown option '" << a << "'\n" << kUsage; return 2; }
        else args.push_back(a);
    }
    if (args.empty()) args.push_back("status");
    // For `watch`, signals must be blocked before the bus thread starts.
    if (args[0] == "watch") {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
    }
    // Needs no daemon: it talks to the Secret Service.
    if (args[0] == "set-password") {
        if (args.size() != 2) {
            std::cerr << "davsyncctl: set-password takes ACCOUNT\n";
            return 2;
        }
        return set_password(args[1], config_path);
    }
    try {
        Client client;
        const std::string& cmd = args[0];
        if (cmd == "status" && args.size() == 1) return status(client, as_json);
        if (cmd == "sync" && args.size() <= 3)
            return sync(client, args.size() > 1 ? args[1] : "", args.size() > 2 ? args[2] : "", wait, timeout, as_json);
        if (cmd == "watch" && args.size() == 1) return watch(client, as_json);
        if (cmd == "list" && args.size() <= 2) return list(client, args.size() > 1 ? args[1] : "");
        if (cmd == "confirm-delete" && args.size() == 2) {
            auto slash = args[1].find('/');
            if (slash == std::string::npos) {
                std::cerr << "davsyncctl: confirm-delete takes ACCOUNT/COLLECTION, e.g. personal/work\n";
                return 2;
            }
            auto s = client.snapshot();
            auto target = find_target(s, args[1].substr(0, slash), args[1].substr(slash + 1));
            if (!target) return 1;
            client.confirm_deletion(target->path);
            std::cout << "confirmed; " << shown(args[1]) << " is syncing\n";
            return 0;
        }
        if (cmd == "reload" && args.size() == 1) {
            client.reload();
            std::cout << "configuration reloaded\n";
            return 0;
        }
        std::cerr << "davsyncctl: unknown command\n" << kUsage;
        return 2;
    } catch (const davsyncd::bus::NotRunning& e) {
        std::cerr << "davsyncctl: " << shown(e.what()) << "\n";
        return 4;
    } catch (const sdbus::Error& e) {
        std::cerr << "davsyncctl: " << shown(e.getMessage()) << " (" << shown(e.getName()) << ")\n";
        return 1;
    }
}
