// The long-running daemon: the configuration, one AccountRuntime per
// account, the Manager D-Bus object, and the plumbing between the event
// loop and the bus connection.
//
// Thread affinity: main loop only.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "app/account_runtime.hpp"
#include "bus/objects.hpp"
#include "config/config.hpp"
#include "core/event_loop.hpp"
#include "desktop/route_watch.hpp"
#include "desktop/system_events.hpp"
#include "push/connector.hpp"
#include "push/ntfy_receiver.hpp"

namespace davsyncd::app {

// Drives an sd-bus connection from our event loop: its fd through FdWatch,
// its timeout through a Timer, and every pending message processed after
// each wake-up (sdbus-c++ 1.2 needs processPendingRequest() drained).
class BusPump {
public:
    // `on_lost` runs once when the connection fails (the bus went away: the
    // session is ending, or dbus-daemon died); the pump stops watching then.
    // `name` says which bus in the log ("session bus", "system bus").
    BusPump(core::EventLoop& loop, sdbus::IConnection& connection, std::function<void()> on_lost,
            std::string name = "session bus");
    // Call after sending signals or replies: the connection is processed on
    // the next loop iteration (never re-entered from inside a bus callback),
    // so the queued bytes go out and the watches are re-armed.
    void after_send() { after_send_.schedule(); }
    bool lost() const { return lost_; }

private:
    void process();

    sdbus::IConnection& connection_;
    std::function<void()> on_lost_;
    std::string name_;
    bool lost_ = false;
    core::FdWatch fd_;
    core::Timer timeout_;
    core::Defer after_send_;
};

class Daemon {
public:
    Daemon(core::EventLoop& loop, sdbus::IConnection& connection, std::filesystem::path config_path,
           fs::XdgDirs xdg);
    ~Daemon();

    // Starts every account of the (already loaded) configuration.
    void start(config::Config cfg);
    // Re-reads the configuration; the old one stays when the new one is invalid
    // (throws config::ConfigError). Account objects come and go on the bus.
    void reload();
    void sync_all();
    // Drops and re-opens every push connection of our own now (the ntfy
    // streams), e.g. after a resume from suspend, when they are likely dead
    // and the server's next keepalive is far. A distributor reconnects itself.
    void reconnect_push();
    // SIGTERM: ask running jobs to stop at the next item, wait for them, quit.
    void shutdown();
    // True when the daemon stopped because the session bus went away.
    bool lost_bus() const { return pump_.lost(); }

private:
    void apply(config::Config cfg);
    void make_connector(const std::string& preferred_distributor);
    push::Transport::Handlers push_handlers();
    // The account's push transport: the ntfy receiver of its push_service
    // (made on first use), else the UnifiedPush connector.
    push::Transport* transport_for(const config::Account& account);
    void drop_unused_receivers();
    void watch_config();
    void on_config_event(const std::string& name);
    void reload_after_edit();
    AccountRuntime* by_push_token(const std::string& token);
    void publish();
    void notify_status();
    void watch_system_bus();
    void watch_routes();
    void system_woke(account::Reason why);

    core::EventLoop& loop_;
    sdbus::IConnection& connection_;
    BusPump pump_;
    std::filesystem::path config_path_;
    fs::XdgDirs xdg_;
    config::Config cfg_;
    std::unique_ptr<bus::ManagerObject> manager_;
    std::unique_ptr<push::Connector> connector_;
    // Built-in receivers by service origin: one stream per service, shared
    // by every account that uses it. Declared after connector_ and before
    // accounts_: accounts go first.
    std::map<std::string, std::unique_ptr<push::NtfyReceiver>> receivers_;
    std::vector<std::unique_ptr<AccountRuntime>> accounts_;
    std::optional<config::Config> pending_;  // loaded by Reload(), applied right after
    core::Defer deferred_apply_;
    core::InotifyWatch config_watch_;  // the config file's folder
    core::Timer config_settle_;        // an editor's burst of writes becomes one reload
    std::string last_status_;
    // Resume and network return (optional: nullptr without a system bus).
    // Declared in the order of their lifetimes: events, then pump, then bus.
    std::unique_ptr<sdbus::IConnection> system_bus_;
    std::unique_ptr<BusPump> system_pump_;
    std::unique_ptr<desktop::SystemEvents> system_events_;
    std::unique_ptr<desktop::RouteWatch> route_watch_;  // only without NetworkManager
};

}  // namespace davsyncd::app
