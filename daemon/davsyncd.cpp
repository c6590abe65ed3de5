// davsyncd: keeps CalDAV/CardDAV accounts in local vdir folders.
// Entry point only: parses the command line and hands over to the core library.

#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <iostream>
#include <string>
#include <string_view>

#include <curl/curl.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sysexits.h>

#include "app/commands.hpp"
#include "app/daemon.hpp"
#include "app/state_lock.hpp"
#include "bus/client.hpp"
#include "bus/objects.hpp"
#include "core/event_loop.hpp"
#include "config/config.hpp"
#include "core/log.hpp"
#include "core/sanitize.hpp"
#include "davsyncd_version.h"

namespace {

constexpr const char* kUsage = R"(Usage: davsyncd [OPTIONS]

Keeps the calendars and address books of your CalDAV/CardDAV accounts in
local vdir folders (for khal, khard, todoman).

Without --discover or --once, runs as the daemon: syncs on changes, pushes
and a timer, and serves io.github.davsyncd on the session bus.

Options:
  --config PATH     configuration file (default: $XDG_CONFIG_HOME/davsyncd/config.json)
  --account ID      act on this account only
  --discover        find every account's collections, print them and exit
  --json            with --discover: print JSON instead of a table
  --once            sync every account once, print a line per collection, exit
  --force-delete    with --once: mirror a side that became empty (normally refused)
  --debug           log every request
  --version         print the version and exit
  --help            print this help and exit

Exit status:
  0   done (--once, --discover), or the daemon was stopped (SIGTERM)
  1   a sync or discovery failed; no session bus, or it went away
  2   a bad command line
  75  another davsyncd owns the state folder and cannot take the request
      (EX_TEMPFAIL: a second daemon, or --once with no way to reach the
      running daemon over D-Bus; --once otherwise asks the daemon to sync)
  78  the configuration is missing or invalid, or has no such --account
      (EX_CONFIG; the systemd unit does not restart davsyncd for it)
)";

struct Options {
    std::string config_path;
    std::string account;
    bool discover = false;
    bool json = false;
    bool once = false;
    bool force_delete = false;
};

// Returns false (after printing why) on a bad command line.
bool parse_args(int argc, char** argv, Options& o) {
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&](std::string& into) {
            if (i + 1 >= argc) {
                std::cerr << "davsyncd: " << a << " needs a value\n";
                return false;
            }
            into = argv[++i];
            return true;
        };
        if (a == "--config") { if (!value(o.config_path)) return false; }
        else if (a.starts_with("--config=")) o.config_path = std::string(a.substr(9));
        else if (a == "--account") { if (!value(o.account)) return false; }
        else if (a == "--discover") o.discover = true;
        else if (a == "--json") o.json = true;
        else if (a == "--once") o.once = true;
        else if (a == "--force-delete") o.force_delete = true;
        else if (a == "--debug") davsyncd::log::set_max_level(davsyncd::log::Level::debug);
        else if (a == "--version") { std::cout << "davsyncd " << DAVSYNCD_VERSION << "\n"; std::exit(0); }
        else if (a == "--help" || a == "-h") { std::cout << kUsage; std::exit(0); }
        else {
            std::cerr << "davsyncd: unknown option '" << a << "'\n" << kUsage;
            return false;
        }
    }
    return true;
}

// The long-running service: one event loop, the session bus, the accounts.
int run_daemon(davsyncd::config::Config cfg, const davsyncd::fs::XdgDirs& xdg) {
    using namespace davsyncd;
    core::EventLoop loop;
    // Before any thread exists, so that every thread inherits the blocked mask.
    std::function<void(int)> on_signal;
    core::SignalWatch signals(loop, {SIGTERM, SIGINT, SIGHUP}, [&](int signo) { on_signal(signo); });

    std::unique_ptr<sdbus::IConnection> bus;
    try {
        bus = sdbus::createSessionBusConnection();
    } catch (const sdbus::Error& e) {
        log::error("cannot connect to the session bus: ", e.getMessage());
        return 1;
    }
    app::Daemon daemon(loop, *bus, cfg.source, xdg);
    on_signal = [&](int signo) {
        if (signo == SIGHUP) {
            try {
                daemon.reload();
            } catch (const config::ConfigError& e) {
                log::error("reload: ", e.what(), "; keeping the running configuration");
            }
        } else {
            daemon.shutdown();
        }
    };
    try {
        daemon.start(std::move(cfg));
        // The name last: whoever sees it appear (D-Bus activation, systemd's
        // Type=dbus, a client) finds every object already in place.
        bus->requestName(bus::kBusName);
    } catch (const config::ConfigError& e) {
        log::error(e.what());
        return EX_CONFIG;
    } catch (const sdbus::Error& e) {
        log::error("cannot own ", bus::kBusName, " on the session bus (", e.getMessage(),
                   "); is another davsyncd running?");
        return 1;
    }
    loop.run();
    // Without its bus the daemon cannot be reached; a failure status lets
    // systemd restart it if the session goes on.
    return daemon.lost_bus() ? 1 : 0;
}

// `--once` while a daemon owns the state folder: two writers of one state
// file would lose records, so the daemon does the sync and we print its
// lines. Without a way to reach it, refuse (EX_TEMPFAIL) and say who holds it.
int once_through_daemon(const davsyncd::config::Config& cfg, const std::string& account, bool force_delete,
                        pid_t holder) {
    using namespace davsyncd;
    const auto who = cat("davsyncd (pid ", holder, ") is running on ", cfg.state_dir.string());
    if (force_delete) {
        log::error(who, "; confirm refused deletions through it: davsyncctl confirm-delete ACCOUNT/COLLECTION");
        return EX_TEMPFAIL;
    }
    try {
        bus::Client client;
        log::info(who, "; asking it to sync");
        bool all_ok = true;
        bool finished = client.sync_and_wait(
            account.empty() ? "" : bus::account_path(account), "io.github.davsyncd.Account1", std::chrono::minutes(30),
            [&](const std::string&, const std::string& result, const std::string& summary) {
                std::cout << sanitize::for_terminal(summary, sanitize::Lines::many) << std::endl;
                all_ok &= result == "ok";
            });
        if (!finished) {
            log::error("the running davsyncd did not finish within 30 minutes; its sync goes on");
            return 1;
        }
        return all_ok ? 0 : 1;
    } catch (const bus::NotRunning& e) {
        log::error(who, " and cannot be asked to sync (", e.what(), "); stop it first");
    } catch (const sdbus::Error& e) {
        log::error(who, " and cannot be asked to sync (", e.getMessage(), "); stop it first");
    }
    return EX_TEMPFAIL;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace davsyncd;
    // The account passwords live in this process's memory: no core dump,
    // and no ptrace or /proc/PID/mem by other processes of the user.
    // Children (password_command) are dumpable again after their exec.
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) log::warning("cannot turn off core dumps: ", std::strerror(errno));

    Options opts;
    if (!parse_args(argc, argv, opts)) return 2;

    // libcurl's global set-up must happen before any thread starts.
    curl_global_init(CURL_GLOBAL_DEFAULT);
    // One malloc arena: a sync job's thread would otherwise get an arena of
    // its own, which malloc_trim() cannot shrink well. Measured after a first
    // sync of 15 000 items, idle: private memory 32 MB with the default,
    // 15 MB with trimming, 3.9 MB with trimming and one arena. The job and
    // the event loop rarely allocate at the same moment.
    mallopt(M_ARENA_MAX, 1);

    auto xdg = fs::XdgDirs::from_environment();
    config::Config cfg;
    try {
        cfg = config::load(opts.config_path.empty() ? config::default_path(xdg) : std::filesystem::path(opts.config_path), xdg);
    } catch (const config::ConfigError& e) {
        log::error(e.what());
        return EX_CONFIG;  // a restart cannot help: systemd's RestartPreventExitStatus= knows it
    }
    if (!opts.account.empty()) {
        bool known = false;
        for (const auto& a : cfg.accounts) known |= a.id == opts.account;
        if (!known) {
            log::error("no account '", opts.account, "' in ", cfg.source.string());
            return EX_CONFIG;
        }
    }

    // The daemon and --once write the state and vdir folders: one at a time.
    std::optional<app::StateLock> lock;
    pid_t holder = 0;
    if (!opts.discover) {
        try {
            lock = app::StateLock::try_take(cfg.state_dir, holder);
        } catch (const fs::IoError& e) {
            log::error(e.what());
            return 1;
        }
    }
    int status = 0;
    if (opts.discover) {
        status = app::discover(cfg, opts.account, opts.json, std::cout);
    } else if (opts.once) {
        status = lock ? app::sync_once(cfg, opts.account, opts.force_delete, std::cout)
                      : once_through_daemon(cfg, opts.account, opts.force_delete, holder);
    } else if (!lock) {
        log::error("another davsyncd (pid ", holder, ") is running on ", cfg.state_dir.string(),
                   "; not starting a second one");
        status = EX_TEMPFAIL;
    } else {
        status = run_daemon(std::move(cfg), xdg);
    }
    curl_global_cleanup();
    return status;
}
