// "The network is back" for systems without NetworkManager (systemd-networkd,
// ifupdown, iwd alone): the kernel's routing table, watched over rtnetlink.
// The network counts as back when the main table goes from no default route
// to at least one (IPv4 or IPv6), which is what a DHCP lease or a router
// advertisement gives on reconnecting.
//
// The daemon uses it only where NetworkManager is not on the system bus:
// NetworkManager's connected-global says more (it checks connectivity).
//
// Thread affinity: main loop only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "core/event_loop.hpp"

namespace davsyncd::desktop {

// One default route of the main table, as far as telling routes apart goes.
struct DefaultRoute {
    uint8_t family = 0;     // AF_INET, AF_INET6
    uint32_t oif = 0;       // output interface index (RTA_OIF)
    uint32_t priority = 0;  // metric (RTA_PRIORITY)
    auto operator<=>(const DefaultRoute&) const = default;
};

// What a buffer of rtnetlink messages says about default routes.
struct RouteMessages {
    std::vector<std::pair<bool, DefaultRoute>> changes;  // (added, route), in order
    bool done = false;                                   // NLMSG_DONE: a dump ended
    bool error = false;                                  // NLMSG_ERROR with an error code
};
// Parses what one recv() returned. Malformed or truncated messages end the
// parse (what came before them counts); other message types are skipped.
RouteMessages parse_route_messages(const uint8_t* data, size_t size);

// The set of default routes, fed with changes; says when it goes from empty
// to non-empty.
class DefaultRoutes {
public:
    // True when this change made the set non-empty.
    bool apply(bool added, const DefaultRoute& route);
    bool empty() const { return routes_.empty(); }
    void clear() { routes_.clear(); }

private:
    std::set<DefaultRoute> routes_;
};

class RouteWatch {
public:
    // `network_up` runs when a default route appears where there was none
    // (not for the routes present at start). Throws std::system_error when
    // rtnetlink cannot be opened.
    RouteWatch(core::EventLoop& loop, std::function<void()> network_up);
    RouteWatch(const RouteWatch&) = delete;
    RouteWatch& operator=(const RouteWatch&) = delete;
    // The table's state is known (the dump asked for at start has been read).
    bool ready() const { return !dumping_; }

private:
    void request_dump();
    void on_readable();

    std::function<void()> network_up_;
    core::UniqueFd fd_;
    core::FdWatch watch_;
    DefaultRoutes routes_;
    bool dumping_ = false;  // a dump's answer is still coming: it tells the state, not a change
    bool resync_from_empty_ = false;  // the running dump follows lost notifications, and we had no route
};

}  // namespace davsyncd::desktop
