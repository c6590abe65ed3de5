#include "desktop/route_watch.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>

#include "core/log.hpp"

namespace davsyncd::desktop {

namespace {

// Reads a u32 attribute; false when its payload is too short.
bool read_u32(const rtattr* attr, uint32_t& out) {
    if (RTA_PAYLOAD(attr) < sizeof(uint32_t)) return false;
    std::memcpy(&out, RTA_DATA(attr), sizeof(uint32_t));
    return true;
}

// A default route of the main table in an RTM_NEWROUTE/RTM_DELROUTE, if it is one.
std::optional<DefaultRoute> default_route_of(const nlmsghdr* h) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) return std::nullopt;
    const auto* rt = static_cast<const rtmsg*>(NLMSG_DATA(h));
    if (rt->rtm_dst_len != 0 || rt->rtm_type != RTN_UNICAST) return std::nullopt;
    if (rt->rtm_family != AF_INET && rt->rtm_family != AF_INET6) return std::nullopt;
    DefaultRoute route;
    route.family = rt->rtm_family;
    uint32_t table = rt->rtm_table;
    int left = static_cast<int>(RTM_PAYLOAD(h));
    for (auto* a = RTM_RTA(rt); RTA_OK(a, left); a = RTA_NEXT(a, left)) {
        switch (a->rta_type) {
        case RTA_TABLE: read_u32(a, table); break;
        case RTA_OIF: read_u32(a, route.oif); break;
        case RTA_PRIORITY: read_u32(a, route.priority); break;
        default: break;
        }
    }
    if (table != RT_TABLE_MAIN) return std::nullopt;
    return route;
}

}  // namespace

RouteMessages parse_route_messages(const uint8_t* data, size_t size) {
    RouteMessages out;
    // NLMSG_OK/NLMSG_NEXT want an aligned header; copy when the buffer is not.
    std::vector<uint8_t> aligned;
    if (reinterpret_cast<uintptr_t>(data) % alignof(nlmsghdr) != 0) {
        aligned.assign(data, data + size);
        data = aligned.data();
    }
    auto left = static_cast<unsigned>(size);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(data); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
        if (h->nlmsg_type == NLMSG_DONE) {
            out.done = true;
        } else if (h->nlmsg_type == NLMSG_ERROR) {
            if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr)) && static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error != 0)
                out.error = true;
        } else if (h->nlmsg_type == RTM_NEWROUTE || h->nlmsg_type == RTM_DELROUTE) {
            if (auto route = default_route_of(h)) out.changes.emplace_back(h->nlmsg_type == RTM_NEWROUTE, *route);
        }
    }
    return out;
}

bool DefaultRoutes::apply(bool added, const DefaultRoute& route) {
    if (!added) {
        routes_.erase(route);
        return false;
    }
    const bool was_empty = routes_.empty();
    routes_.insert(route);
    return was_empty;
}

RouteWatch::RouteWatch(core::EventLoop& loop, std::function<void()> network_up)
    : network_up_(std::move(network_up)), watch_(loop, [this](uint32_t) { on_readable(); }) {
    fd_.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd_) throw std::system_error(errno, std::generic_category(), "socket(AF_NETLINK)");
    sockaddr_nl addr{};
    addr.nl_family = AF_NETLINK;
    addr.nl_groups = RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE;
    if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        throw std::system_error(errno, std::generic_category(), "bind(NETLINK_ROUTE)");
    watch_.watch(fd_.get(), EPOLLIN);
    request_dump();
}

// Asks for every route: the answer tells which default routes exist now
// (at start, and again after the kernel dropped notifications for us).
void RouteWatch::request_dump() {
    struct {
        nlmsghdr h;
        rtmsg rt;
    } req{};
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(rtmsg));
    req.h.nlmsg_type = RTM_GETROUTE;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.rt.rtm_family = AF_UNSPEC;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(fd_.get(), &req, req.h.nlmsg_len, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) < 0)
        throw std::system_error(errno, std::generic_category(), "sendto(RTM_GETROUTE)");
    dumping_ = true;
}

void RouteWatch::on_readable() {
    alignas(nlmsghdr) uint8_t buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == ENOBUFS) {
                // Notifications were lost: ask for the whole table again, and
                // compare what it says with what we knew.
                log::debug("routing notifications overflowed; reading the table again");
                const bool was_empty = routes_.empty();
                routes_.clear();
                if (!dumping_) request_dump();
                resync_from_empty_ = was_empty;
                continue;
            }
            // Nothing else is expected; stop rather than spin on a broken socket.
            log::warning("routing table watch stopped: recv: ", std::strerror(errno));
            watch_.cancel();
            return;
        }
        auto msgs = parse_route_messages(buf, static_cast<size_t>(n));
        for (const auto& [added, route] : msgs.changes)
            if (routes_.apply(added, route) && !dumping_) network_up_();
        if (msgs.done || (dumping_ && msgs.error)) {
            dumping_ = false;
            if (std::exchange(resync_from_empty_, false) && !routes_.empty()) network_up_();
        }
    }
}

}  // namespace davsyncd::desktop
