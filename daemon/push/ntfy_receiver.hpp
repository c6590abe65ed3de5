// davsyncd's built-in push receiver: for desktops without a UnifiedPush
// distributor (GNOME, Xfce, tiling window managers), davsyncd is its own
// distributor on an ntfy server.
//
// One NtfyReceiver per push service (an origin such as
// https://ntfy.example.org). Every account using that service has its own
// random topic (ntfy_topic.hpp); its endpoint is
// https://<service>/<topic>?up=1, which the account registers as its Web
// Push endpoint with the CalDAV/CardDAV server. The receiver holds ONE
// streaming subscription for all those topics (GET /<t1>,<t2>/json) and
// hands each message to Handlers::message, the same path that distributor
// messages take.
//
// Power: the transfer runs on the daemon's epoll loop through libcurl's
// multi socket API (an FdWatch per curl socket, a Timer for curl's timer),
// so an idle stream costs exactly the server's keepalives: no thread, no
// polling interval. A watchdog notices a stream that went silent (a dead
// NAT mapping, a suspended laptop) after `idle_timeout` without a byte.
// Lost streams come back with exponential backoff and jitter, and with
// since=<last message id> so that what was sent meanwhile still arrives.
// Stopping is immediate: destroying the receiver removes the transfer.
//
// Privacy: topics and endpoints are capabilities and never reach the log;
// only the service's origin does.
//
// Thread affinity: main loop only.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/event_loop.hpp"
#include "push/ntfy_stream.hpp"
#include "push/transport.hpp"

namespace davsyncd::push {

class NtfyReceiver final : public Transport {
public:
    struct Options {
        // Silence that counts as a dead stream: ntfy's keepalives come every
        // 45 s by default; three missed ones and a bit.
        std::chrono::seconds idle_timeout{150};
        std::chrono::milliseconds backoff_min{1000};
        std::chrono::milliseconds backoff_max{std::chrono::minutes(5)};
    };
    // `origin`: "https://host[:port]" (config::Account::push_service).
    NtfyReceiver(core::EventLoop& loop, std::string origin, Handlers handlers, Options options);
    NtfyReceiver(core::EventLoop& loop, std::string origin, Handlers handlers)
        : NtfyReceiver(loop, std::move(origin), std::move(handlers), Options{}) {}
    ~NtfyReceiver() override;
    NtfyReceiver(const NtfyReceiver&) = delete;
    NtfyReceiver& operator=(const NtfyReceiver&) = delete;

    void add(const Registration& registration) override;
    void remove(const std::string& token) override;
    // "ntfy:<origin>" while the stream is open (or being resumed after a
    // short drop), "" while it is down.
    std::string transport() const override { return up_ ? "ntfy:" + origin_ : ""; }
    void reconnect() override;

    const std::string& origin() const { return origin_; }
    bool empty() const { return tokens_.empty(); }

    // For the log and tests: streams opened since construction.
    unsigned connections() const { return connections_; }

private:
    struct Curl;  // the multi and easy handles, and their sockets
    struct Entry {
        std::string topic;
        bool announced = false;  // new_endpoint() sent since the stream (re)opened
    };

    void start();
    void stop_transfer();
    void restart_soon();
    void on_bytes(const char* data, std::size_t size);
    void on_event(const NtfyEvent& e);
    void on_finished(const std::string& why, bool clean);
    void retry_later(const std::string& why);
    void set_up(bool up, const std::string& why);
    void check_idle();
    std::string stream_url() const;

    core::EventLoop& loop_;
    std::string origin_;
    Handlers handlers_;
    Options options_;
    std::map<std::string, Entry> tokens_;  // by token
    std::unique_ptr<Curl> curl_;           // the transfer, while one runs
    NtfyStreamParser parser_;
    core::Timer retry_;
    core::Timer watchdog_;
    core::Defer restart_;    // topics changed: one new stream for all changes of this iteration
    core::Defer finished_;   // curl said done: handled outside curl's callbacks
    bool up_ = false;        // transport() non-empty
    bool open_ = false;      // the current stream sent "open"
    std::string last_id_;    // of the last message: since= on the next stream
    std::int64_t open_time_ = 0;  // the server's time at the last "open"
    unsigned failures_ = 0;  // consecutive streams that ended without opening
    unsigned connections_ = 0;
    unsigned bad_lines_ = 0;  // of the current stream, for the log
    core::TimePoint last_byte_{};
    core::TimePoint started_{};
    std::mt19937 random_{std::random_device{}()};
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace davsyncd::push
