#include "app/daemon.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <systemd/sd-daemon.h>

#include <system_error>

#include "core/log.hpp"
#include "davsyncd_version.h"

namespace davsyncd::app {

// --- BusPump ----------------------------------------------------------------

namespace {
uint32_t to_epoll(short poll_events) {
    uint32_t e = 0;
    if (poll_events & POLLIN) e |= EPOLLIN;
    if (poll_events & POLLOUT) e |= EPOLLOUT;
    if (poll_events & POLLPRI) e |= EPOLLPRI;
    return e;
}
}  // namespace

BusPump::BusPump(core::EventLoop& loop, sdbus::IConnection& connection, std::function<void()> on_lost,
                 std::string name)
    : connection_(connection),
      on_lost_(std::move(on_lost)),
      name_(std::move(name)),
      fd_(loop, [this](uint32_t) { process(); }),
      timeout_(loop, [this] { process(); }),
      after_send_(loop, [this] { process(); }) {
    auto pd = connection_.getEventLoopPollData();
    fd_.watch(pd.fd, to_epoll(pd.events));
    process();
}

void BusPump::process() {
    if (lost_) return;
    try {
        while (connection_.processPendingRequest()) {
        }
        auto pd = connection_.getEventLoopPollData();
        fd_.modify(to_epoll(pd.events));
        if (pd.timeout_usec == UINT64_MAX) {
            timeout_.cancel();
        } else {
            // sd-bus speaks CLOCK_MONOTONIC, which is what steady_clock is on Linux.
            timeout_.schedule_at(core::TimePoint(std::chrono::duration_cast<core::Duration>(pd.getAbsoluteTimeout())));
        }
    } catch (const sdbus::Error& e) {
        lost_ = true;
        fd_.cancel();
        timeout_.cancel();
        log::notice("lost the ", name_, " (", e.getMessage(), ")");
        on_lost_();
    }
}

// --- Daemon -------------------------------------------------------------------

Daemon::Daemon(core::EventLoop& loop, sdbus::IConnection& connection, std::filesystem::path config_path,
               fs::XdgDirs xdg)
    : loop_(loop),
      connection_(connection),
      pump_(loop, connection, [this] { shutdown(); }),
      config_path_(std::move(config_path)),
      xdg_(std::move(xdg)),
      deferred_apply_(loop, [this] {
          if (!pending_) return;
          log::info("configuration reloaded from ", config_path_.string());
          apply(std::move(*pending_));
          pending_.reset();
      }),
      config_watch_(loop, [this](const std::string&, const std::string& name, uint32_t) { on_config_event(name); }),
      config_settle_(loop, [this] { reload_after_edit(); }) {
    // The last line of defence: a callback that throws is logged and the
    // daemon stays up (accounts contain their own errors before this).
    loop_.set_error_handler([](const std::exception& e) {
        log::error("internal error in an event callback (contained; davsyncd goes on): ", e.what());
    });
}

Daemon::~Daemon() {
    route_watch_.reset();
    system_events_.reset();
    accounts_.clear();
    receivers_.clear();
    connector_.reset();
    manager_.reset();
}

void Daemon::start(config::Config cfg) {
    manager_ = std::make_unique<bus::ManagerObject>(
        connection_, bus::ManagerValues{DAVSYNCD_VERSION, config_path_.string(), "", {}},
        bus::ManagerObject::Handlers{
            [this] { sync_all(); },
            [this] {
                // Load now so that the caller hears about a bad file; apply
                // after this handler returns, since applying destroys objects.
                try {
                    pending_ = config::load(config_path_, xdg_);
                } catch (const config::ConfigError& e) {
                    throw sdbus::Error(bus::error::kConfigInvalid, e.what());
                }
                deferred_apply_.schedule();
            }});
    make_connector(cfg.push_distributor.value_or(""));
    cfg_.push_distributor = cfg.push_distributor;  // apply() must not take it for a change
    apply(std::move(cfg));
    watch_config();
    watch_system_bus();
    log::notice("davsyncd ", DAVSYNCD_VERSION, " running with ", accounts_.size(), " account(s) from ",
                config_path_.string());
    sd_notify(0, "READY=1");
}

void Daemon::make_connector(const std::string& preferred_distributor) {
    // The old connector leaves the bus first: both export the same object path.
    connector_.reset();
    connector_ = std::make_unique<push::Connector>(connection_, bus::kBusName, preferred_distributor, push_handlers());
}

// The same handlers for every transport: what follows a message does not
// depend on how it travelled.
push::Transport::Handlers Daemon::push_handlers() {
    return push::Transport::Handlers{
        [this](const std::string& token, const std::string& endpoint) {
            if (auto* a = by_push_token(token)) a->push_endpoint(endpoint);
        },
        [this](const std::string& token, const std::vector<uint8_t>& message) {
            if (auto* a = by_push_token(token)) a->push_message(message);
        },
        [this](const std::string& token, const std::string& why) {
            if (auto* a = by_push_token(token)) a->push_lost(why);
        },
        [this](const std::string&) {
            for (auto& a : accounts_)
                if (a) a->push_distributor_changed();
            publish();
        }};
}

push::Transport* Daemon::transport_for(const config::Account& account) {
    if (!account.push_service) return connector_.get();
    auto& r = receivers_[*account.push_service];
    if (!r) {
        log::info("push: built-in receiver for ", *account.push_service);
        r = std::make_unique<push::NtfyReceiver>(loop_, *account.push_service, push_handlers());
    }
    return r.get();
}

void Daemon::drop_unused_receivers() {
    for (auto it = receivers_.begin(); it != receivers_.end();) {
        bool used = std::any_of(accounts_.begin(), accounts_.end(),
                                [&](const auto& a) { return a->config().push_service == it->first; });
        it = used ? std::next(it) : receivers_.erase(it);
    }
}

void Daemon::reload() {
    auto cfg = config::load(config_path_, xdg_);
    log::info("configuration reloaded from ", config_path_.string());
    apply(std::move(cfg));
}

// The configuration file changed on disk (an editor saved it): reload once
// the writes settle. A file that does not load keeps the running one.
void Daemon::watch_config() {
    config_watch_.add(config_path_.parent_path(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE);
}

void Daemon::on_config_event(const std::string& name) {
    if (name != config_path_.filename().string()) return;
    config_settle_.schedule_in(std::chrono::milliseconds(500));
}

void Daemon::reload_after_edit() {
    try {
        reload();
    } catch (const config::ConfigError& e) {
        log::error("configuration changed on disk but not reloaded: ", e.what(), "; the running one stays");
    }
}

// Keeps the runtimes of unchanged accounts (their schedule and connection);
// changed accounts are rebuilt, removed ones stop (InterfacesRemoved).
void Daemon::apply(config::Config cfg) {
    // Another distributor: every account registers again with the new connector.
    const bool new_distributor = connector_ && cfg.push_distributor != cfg_.push_distributor;
    // 1. Stop the accounts that are gone or changed, before anything new
    //    claims their object paths.
    std::vector<std::unique_ptr<AccountRuntime>> kept;
    for (auto& rt : accounts_) {
        bool keep = !new_distributor &&
                    std::any_of(cfg.accounts.begin(), cfg.accounts.end(), [&](const auto& a) { return rt->config() == a; });
        if (keep) {
            kept.push_back(std::move(rt));
            continue;
        }
        log::info("account '", rt->config().id, "': stopped (removed or changed in the configuration)");
        if (auto* t = rt->push_transport()) t->remove(rt->push_token());
        rt->cancel();  // all of them at once: each stops within a second
    }
    accounts_.clear();  // the stopped ones are destroyed here: jobs stop, objects leave the bus
    if (new_distributor) {
        log::info("push distributor preference changed to '", cfg.push_distributor.value_or(""), "'");
        make_connector(cfg.push_distributor.value_or(""));
    }
    // A reload is the user's sign that the password may be fixed now.
    for (auto& rt : kept)
        if (rt->state() == account::State::auth_failed) rt->credentials_changed();

    // 2. The accounts in configuration order: kept ones as they are, the rest new.
    for (const auto& account : cfg.accounts) {
        auto it = std::find_if(kept.begin(), kept.end(), [&](const auto& rt) { return rt && rt->config() == account; });
        if (it != kept.end()) {
            accounts_.push_back(std::move(*it));
        } else {
            log::info("account '", account.id, "': starting");
            accounts_.push_back(std::make_unique<AccountRuntime>(loop_, connection_, cfg, account, transport_for(account),
                                                                 [this] { notify_status(); }));
        }
    }
    drop_unused_receivers();
    cfg_ = std::move(cfg);
    publish();
}

AccountRuntime* Daemon::by_push_token(const std::string& token) {
    for (auto& a : accounts_)
        if (a->push_token() == token) return a.get();
    return nullptr;
}

void Daemon::sync_all() {
    for (auto& a : accounts_) {
        try {
            a->request_sync();
        } catch (const sdbus::Error& e) {
            log::info(e.getMessage());  // a disabled account is not an error for "all"
        }
    }
}

void Daemon::reconnect_push() {
    for (auto& [origin, receiver] : receivers_) receiver->reconnect();
}

void Daemon::shutdown() {
    log::notice("stopping");
    sd_notify(0, "STOPPING=1");
    for (auto& a : accounts_) a->cancel();
    accounts_.clear();  // joins the jobs; each saved what it finished
    receivers_.clear();  // push streams close now
    loop_.quit();
}

void Daemon::publish() {
    bus::ManagerValues v{DAVSYNCD_VERSION, config_path_.string(), connector_ ? connector_->distributor() : "", {}};
    for (const auto& a : accounts_) v.accounts.emplace_back(a->object_path());
    if (manager_) manager_->update(v);
    notify_status();
}

// Resume from suspend and network return: a sync of every account, since
// what changed meanwhile is unknown and pushes sent meanwhile may be lost.
void Daemon::watch_system_bus() {
    system_bus_ = desktop::SystemEvents::connect();
    if (!system_bus_) return watch_routes();
    system_pump_ = std::make_unique<BusPump>(
        loop_, *system_bus_,
        [this] {
            log::info("no sync on resume from now on");
            if (!route_watch_) watch_routes();
        },
        "system bus");
    system_events_ = std::make_unique<desktop::SystemEvents>(
        loop_, *system_bus_,
        desktop::SystemEvents::Handlers{[this] { system_woke(account::Reason::resume); },
                                        [this] { system_woke(account::Reason::network); },
                                        [this] { watch_routes(); }});
    system_pump_->after_send();  // the match rules go out on the next iteration
}

// Without NetworkManager: a default route appearing is the network's return.
void Daemon::watch_routes() {
    try {
        route_watch_ = std::make_unique<desktop::RouteWatch>(loop_, [this] { system_woke(account::Reason::network); });
        log::debug("no NetworkManager: watching the routing table for the network's return");
    } catch (const std::system_error& e) {
        log::debug("no NetworkManager, and the routing table cannot be watched (", e.what(),
                   "): no sync on network return");
    }
}

// Several accounts must not all hit the network in the same second after a
// resume: each one after the first starts a little later (at most
// kStaggerSpan for the last), while a single account is not delayed.
void Daemon::system_woke(account::Reason why) {
    constexpr std::chrono::milliseconds kStaggerStep{1500}, kStaggerSpan{20000};
    std::vector<AccountRuntime*> awake;
    for (auto& a : accounts_)
        if (a->state() != account::State::disabled) awake.push_back(a.get());
    log::info(why == account::Reason::resume ? "resumed from suspend" : "the network is back", ": syncing ",
              awake.size(), " account(s)");
    reconnect_push();  // a stream that died in the sleep resumes now, with since=
    if (awake.empty()) return;
    const auto step = std::min<core::Duration>(kStaggerStep, kStaggerSpan / std::max<size_t>(awake.size() - 1, 1));
    for (size_t i = 0; i < awake.size(); ++i) awake[i]->woke(why, step * static_cast<int64_t>(i));
}

// One STATUS= line for `systemctl --user status davsyncd`.
void Daemon::notify_status() {
    unsigned syncing = 0, failing = 0;
    for (const auto& a : accounts_) {
        if (!a) continue;  // a slot being filled during apply()
        syncing += a->state() == account::State::syncing;
        failing += a->state() == account::State::backoff || a->state() == account::State::auth_failed;
    }
    auto status = cat(accounts_.size(), " account(s)", syncing ? cat(", ", syncing, " syncing") : "",
                      failing ? cat(", ", failing, " failing") : "");
    if (status != last_status_) {
        last_status_ = status;
        sd_notify(0, ("STATUS=" + status).c_str());
    }
    pump_.after_send();
}

}  // namespace davsyncd::app
