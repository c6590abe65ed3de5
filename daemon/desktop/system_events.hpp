// What the system bus says about the machine, as two events for the daemon:
// "resumed from suspend" (logind's PrepareForSleep(false)) and "the network
// is back" (NetworkManager's StateChanged to connected-global).
//
// Why: the poll timer runs on CLOCK_MONOTONIC, which stands still during
// suspend, so after a resume nothing would sync until a whole poll interval
// of waking time passed (an hour while push works), and most push
// distributors drop the messages sent while the machine slept. Timers do not
// all fire at once after a long sleep: each is late by the time slept.
//
// A resume while NetworkManager last said the network was not global (it
// goes "asleep" before a suspend) waits for connected-global, so that the
// sync does not fail for want of a network; if none comes within
// kNetworkWait, the resume event fires anyway (a LAN-only server may be
// reachable at connected-site).
//
// Either service may be missing, or the system bus itself: then the events
// simply never come, and one debug line says so. Without NetworkManager the
// daemon watches the routing table instead (route_watch.hpp).
//
// Thread affinity: main loop only (the connection is pumped by a BusPump).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include <sdbus-c++/sdbus-c++.h>

#include "core/event_loop.hpp"

namespace davsyncd::desktop {

// NetworkManager's NM_STATE_CONNECTED_GLOBAL.
inline constexpr uint32_t kNmConnectedGlobal = 70;
// How long a resume waits for NetworkManager's connected-global.
inline constexpr std::chrono::seconds kNetworkWait{30};

class SystemEvents {
public:
    struct Handlers {
        std::function<void()> resumed;     // resumed from suspend (and the network is there, or did not come)
        std::function<void()> network_up;  // NetworkManager reached connected-global
        std::function<void()> no_network_manager;  // NetworkManager is not on the bus (told once, at start)
    };

    // Opens the system bus ($DBUS_SYSTEM_BUS_ADDRESS, else the standard
    // socket). nullptr, after one debug line, when there is none.
    static std::unique_ptr<sdbus::IConnection> connect();

    // Subscribes to the two signals on `system_bus` (not owned; it must
    // outlive this) and asks once which of the two services run.
    SystemEvents(core::EventLoop& loop, sdbus::IConnection& system_bus, Handlers handlers);
    SystemEvents(const SystemEvents&) = delete;
    SystemEvents& operator=(const SystemEvents&) = delete;

private:
    void on_prepare_for_sleep(bool going_to_sleep);
    void on_network_state(uint32_t state);

    Handlers handlers_;
    std::unique_ptr<sdbus::IProxy> logind_;
    std::unique_ptr<sdbus::IProxy> network_manager_;
    std::unique_ptr<sdbus::IProxy> bus_;
    std::optional<uint32_t> network_state_;  // last StateChanged seen; unknown until then
    bool resume_waits_ = false;              // a resume waits for connected-global
    core::Timer network_wait_;
};

}  // namespace davsyncd::desktop
