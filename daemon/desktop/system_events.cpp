#include "desktop/system_events.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "core/log.hpp"

namespace davsyncd::desktop {

namespace {
constexpr const char* kLogind = "org.freedesktop.login1";
constexpr const char* kLogindPath = "/org/freedesktop/login1";
constexpr const char* kLogindManager = "org.freedesktop.login1.Manager";
constexpr const char* kNetworkManager = "org.freedesktop.NetworkManager";
constexpr const char* kNetworkManagerPath = "/org/freedesktop/NetworkManager";
}  // namespace

std::unique_ptr<sdbus::IConnection> SystemEvents::connect() {
    try {
        return sdbus::createSystemBusConnection();
    } catch (const sdbus::Error& e) {
        log::debug("no system bus (", e.getMessage(), "): no sync on resume");
        return nullptr;
    }
}

SystemEvents::SystemEvents(core::EventLoop& loop, sdbus::IConnection& system_bus, Handlers handlers)
    : handlers_(std::move(handlers)),
      network_wait_(loop, [this] {
          if (!std::exchange(resume_waits_, false)) return;
          log::info("the network did not reach connected-global within ", kNetworkWait.count(), " s of the resume");
          handlers_.resumed();
      }) {
    // Match rules name the well-known sender: they hold whenever the service
    // (re)starts, so a logind or NetworkManager started later is heard too.
    logind_ = sdbus::createProxy(system_bus, kLogind, kLogindPath);
    logind_->uponSignal("PrepareForSleep").onInterface(kLogindManager).call([this](bool start) {
        on_prepare_for_sleep(start);
    });
    logind_->finishRegistration();
    network_manager_ = sdbus::createProxy(system_bus, kNetworkManager, kNetworkManagerPath);
    network_manager_->uponSignal("StateChanged").onInterface(kNetworkManager).call([this](uint32_t state) {
        on_network_state(state);
    });
    network_manager_->finishRegistration();

    // Only for the log: which of the two is there now.
    bus_ = sdbus::createProxy(system_bus, "org.freedesktop.DBus", "/org/freedesktop/DBus");
    bus_->callMethodAsync("ListNames").onInterface("org.freedesktop.DBus").uponReplyInvoke(
        [this](const sdbus::Error* error, const std::vector<std::string>& names) {
            if (error) {
                log::debug("system bus: cannot list names (", error->getMessage(), ")");
                return;
            }
            const bool logind = std::find(names.begin(), names.end(), kLogind) != names.end();
            const bool nm = std::find(names.begin(), names.end(), kNetworkManager) != names.end();
            if (!logind && !nm)
                log::debug("neither logind nor NetworkManager on the system bus: no sync on resume");
            else
                log::debug("system bus: ", logind ? "logind" : "no logind", ", ",
                           nm ? "NetworkManager" : "no NetworkManager", "; syncing on resume and network return");
            if (!nm && handlers_.no_network_manager) handlers_.no_network_manager();
        });
}

void SystemEvents::on_prepare_for_sleep(bool going_to_sleep) {
    if (going_to_sleep) {
        log::debug("going to sleep");
        return;
    }
    if (network_state_ && *network_state_ != kNmConnectedGlobal) {
        log::info("resumed from suspend: waiting for the network (NetworkManager state ", *network_state_, ")");
        resume_waits_ = true;
        network_wait_.schedule_in(kNetworkWait);
        return;
    }
    handlers_.resumed();
}

void SystemEvents::on_network_state(uint32_t state) {
    const auto previous = std::exchange(network_state_, state);
    if (state != kNmConnectedGlobal) {
        log::debug("NetworkManager state ", state, ": not connected-global, nothing to sync");
        return;
    }
    if (previous == kNmConnectedGlobal) return;  // no change
    // A resume waiting for the network is covered by this one sync.
    resume_waits_ = false;
    network_wait_.cancel();
    handlers_.network_up();
}

}  // namespace davsyncd::desktop
