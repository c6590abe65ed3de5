#include <doctest/doctest.h>

#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/event_loop.hpp"
#include "desktop/route_watch.hpp"

using namespace davsyncd;
using namespace davsyncd::desktop;
using namespace std::chrono_literals;

namespace {

// Builds rtnetlink messages the way the kernel lays them out.
struct NetlinkBuffer {
    std::vector<uint8_t> bytes;

    void route(uint16_t type, uint8_t family, uint8_t dst_len, uint8_t table, uint8_t rtm_type,
               std::vector<std::pair<uint16_t, uint32_t>> attrs) {
        const size_t start = bytes.size();
        bytes.resize(start + NLMSG_LENGTH(sizeof(rtmsg)));
        auto* h = reinterpret_cast<nlmsghdr*>(bytes.data() + start);
        h->nlmsg_type = type;
        auto* rt = static_cast<rtmsg*>(NLMSG_DATA(h));
        rt->rtm_family = family;
        rt->rtm_dst_len = dst_len;
        rt->rtm_table = table;
        rt->rtm_type = rtm_type;
        for (auto [kind, value] : attrs) {
            const size_t at = bytes.size();
            bytes.resize(at + RTA_SPACE(sizeof(uint32_t)));
            auto* a = reinterpret_cast<rtattr*>(bytes.data() + at);
            a->rta_type = kind;
            a->rta_len = RTA_LENGTH(sizeof(uint32_t));
            std::memcpy(RTA_DATA(a), &value, sizeof value);
        }
        bytes.resize(start + NLMSG_ALIGN(bytes.size() - start));
        reinterpret_cast<nlmsghdr*>(bytes.data() + start)->nlmsg_len = static_cast<uint32_t>(bytes.size() - start);
    }
    void done() {
        const size_t start = bytes.size();
        bytes.resize(start + NLMSG_LENGTH(sizeof(int)));
        auto* h = reinterpret_cast<nlmsghdr*>(bytes.data() + start);
        h->nlmsg_type = NLMSG_DONE;
        h->nlmsg_len = NLMSG_LENGTH(sizeof(int));
    }
};

// Runs `body` in a child process inside a new user and network namespace
// (where adding routes needs no privilege). Returns its exit status, or -1
// when the namespaces cannot be made here.
int in_private_network(int (*body)()) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const uid_t uid = ::getuid();
        const gid_t gid = ::getgid();
        if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) ::_exit(200);
        auto write_file = [](const char* path, const std::string& text) {
            int fd = ::open(path, O_WRONLY | O_CLOEXEC);
            bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
            if (fd >= 0) ::close(fd);
            return ok;
        };
        if (!write_file("/proc/self/setgroups", "deny") ||
            !write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
            !write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"))
            ::_exit(200);
        if (std::system("ip link set lo up") != 0) ::_exit(200);
        ::_exit(body());
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (!WIFEXITED(status)) return 255;
    return WEXITSTATUS(status) == 200 ? -1 : WEXITSTATUS(status);
}

// Runs `loop` until `watch` has read the table's state (false after 10 s).
// Changes before that are the state at start, not news.
bool wait_ready(core::EventLoop& loop, const RouteWatch& watch) {
    core::Timer timeout(loop, [&] { loop.quit(); });
    core::Timer poll(loop, [&] {
        if (watch.ready()) loop.quit();
        else poll.schedule_in(10ms);
    });
    timeout.schedule_in(10s);
    poll.schedule_in(0ms);
    loop.run();
    return watch.ready();
}

// In the child: the routing table changes step by step; RouteWatch must say
// "network up" exactly when a default route appears where there was none.
// Exit status: 0 ok, else the number of the failed check.
int route_watch_scenario() {
    core::EventLoop loop;
    int ups = 0;
    RouteWatch watch(loop, [&] {
        ++ups;
        loop.quit();
    });
    core::Timer timeout(loop, [&] { loop.quit(); });
    auto run_until_up = [&](int expected) {
        timeout.schedule_in(10s);
        loop.run();
        return ups == expected;
    };
    auto ip = [](const char* args) { return std::system((std::string("ip ") + args).c_str()) == 0; };

    if (!wait_ready(loop, watch)) return 9;
    if (ups != 0) return 8;
    // A route that is not a default route.
    if (!ip("route add 10.1.0.0/16 dev lo")) return 10;
    // 1. The first default route: up.
    if (!ip("route add default dev lo metric 100")) return 11;
    if (!run_until_up(1)) return 1;
    // 2. A second one, then the first goes, then the second: no up (the
    //    network never went away), and the table is empty again.
    if (!ip("route add default dev lo metric 200")) return 12;
    if (!ip("route del default dev lo metric 100")) return 13;
    if (!ip("route del default dev lo metric 200")) return 14;
    // 3. A default route again: up, the second and last one. Had step 2 said
    //    "up", this would be the third, so this wait also proves step 2.
    if (!ip("route add default dev lo metric 300")) return 15;
    if (!run_until_up(2)) return 2;
    return 0;
}

// A default route present at start is the state, not a change.
int route_present_at_start_scenario() {
    if (std::system("ip route add default dev lo") != 0) return 10;
    core::EventLoop loop;
    int ups = 0;
    RouteWatch watch(loop, [&] {
        ++ups;
        loop.quit();
    });
    if (!wait_ready(loop, watch)) return 11;
    if (ups != 0) return 1;
    // Gone and back: that is a return.
    if (std::system("ip route del default dev lo") != 0) return 12;
    if (std::system("ip route add default dev lo") != 0) return 13;
    core::Timer timeout(loop, [&] { loop.quit(); });
    timeout.schedule_in(10s);
    loop.run();
    return ups == 1 ? 0 : 2;
}

}  // namespace

TEST_SUITE("desktop") {

TEST_CASE("rtnetlink: default routes of the main table are picked out") {
    NetlinkBuffer b;
    b.route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_MAIN, RTN_UNICAST, {{RTA_OIF, 2}, {RTA_PRIORITY, 100}});
    b.route(RTM_NEWROUTE, AF_INET, 24, RT_TABLE_MAIN, RTN_UNICAST, {{RTA_OIF, 2}});       // not default
    b.route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_LOCAL, RTN_UNICAST, {{RTA_OIF, 2}});       // other table
    b.route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_UNSPEC, RTN_UNICAST, {{RTA_TABLE, 1000}});  // other table, by attribute
    b.route(RTM_NEWROUTE, AF_INET6, 0, RT_TABLE_MAIN, RTN_UNREACHABLE, {});                // not a way out
    b.route(RTM_DELROUTE, AF_INET6, 0, RT_TABLE_MAIN, RTN_UNICAST, {{RTA_OIF, 3}});
    b.route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_UNSPEC, RTN_UNICAST, {{RTA_TABLE, RT_TABLE_MAIN}, {RTA_OIF, 4}});
    b.done();

    auto m = parse_route_messages(b.bytes.data(), b.bytes.size());
    CHECK(m.done);
    CHECK_FALSE(m.error);
    REQUIRE(m.changes.size() == 3);
    CHECK(m.changes[0].first);
    CHECK(m.changes[0].second == DefaultRoute{AF_INET, 2, 100});
    CHECK_FALSE(m.changes[1].first);
    CHECK(m.changes[1].second == DefaultRoute{AF_INET6, 3, 0});
    CHECK(m.changes[2].second == DefaultRoute{AF_INET, 4, 0});
}

TEST_CASE("rtnetlink: truncated and misaligned buffers do not crash") {
    NetlinkBuffer b;
    b.route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_MAIN, RTN_UNICAST, {{RTA_OIF, 2}});
    b.route(RTM_NEWROUTE, AF_INET, 0, RT_TABLE_MAIN, RTN_UNICAST, {{RTA_OIF, 5}});
    for (size_t cut = 0; cut < b.bytes.size(); ++cut) {
        auto m = parse_route_messages(b.bytes.data(), cut);
        CHECK(m.changes.size() <= 1);
    }
    std::vector<uint8_t> shifted(b.bytes.size() + 1);
    std::memcpy(shifted.data() + 1, b.bytes.data(), b.bytes.size());
    CHECK(parse_route_messages(shifted.data() + 1, b.bytes.size()).changes.size() == 2);
    // A header that claims more than there is, and one that claims less than a header.
    auto* h = reinterpret_cast<nlmsghdr*>(b.bytes.data());
    h->nlmsg_len = 1u << 30;
    CHECK(parse_route_messages(b.bytes.data(), b.bytes.size()).changes.empty());
    h->nlmsg_len = 4;
    CHECK(parse_route_messages(b.bytes.data(), b.bytes.size()).changes.empty());
}

TEST_CASE("default routes: up only when the first one appears") {
    DefaultRoutes r;
    const DefaultRoute a{AF_INET, 2, 100}, b{AF_INET6, 2, 1024};
    CHECK(r.apply(true, a));
    CHECK_FALSE(r.apply(true, a));  // the same again (a replace)
    CHECK_FALSE(r.apply(true, b));
    CHECK_FALSE(r.apply(false, a));
    CHECK_FALSE(r.apply(false, b));
    CHECK(r.empty());
    CHECK_FALSE(r.apply(false, b));  // unknown: nothing
    CHECK(r.apply(true, b));
}

TEST_CASE("RouteWatch on a real routing table (private network namespace)") {
    int rc = in_private_network(route_watch_scenario);
    if (rc == -1) {
        MESSAGE("no unprivileged user and network namespaces here; the kernel part is not tested");
        return;
    }
    CHECK(rc == 0);
    rc = in_private_network(route_present_at_start_scenario);
    CHECK(rc == 0);
}

}  // TEST_SUITE
