// HTTP for one account over libcurl's easy interface.
//
// One HttpClient owns one curl handle, so the connection is kept alive and
// reused across requests (and DNS/TLS work is done once). Basic and Digest
// auth, TLS verification (unless the account turns it off), timeouts,
// gzip, a davsyncd User-Agent, and Retry-After parsing live here.
//
// A request can be stopped from another thread through the flag given to
// set_cancel(): libcurl's progress callback reads it at least once a
// second, also while the server is silent, and send() then throws
// Cancelled.
//
// Every request of the daemon goes through send(). State-changing requests
// (PUT, DELETE, MOVE, COPY, PROPPATCH, MKCOL, MKCALENDAR, POST) also pass
// through the write decorator, the one place where headers such as
// Push-Dont-Notify are attached.
//
// Origin pinning: the password goes with every request (Basic is sent up
// front), so a client only ever talks to the origins it was given
// (ClientOptions::allowed_origins, else the origin of its first request).
// Redirects are followed here, not by libcurl, and only within the
// request's origin: a redirect to another host, port or scheme (https to
// http included) is refused before anything is sent there.
//
// Every response is bounded twice, as received and once decompressed, so
// that a compressed bomb cannot fill memory.
//
// Thread affinity: one thread at a time (a sync job owns its client).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dav/url.hpp"

namespace davsyncd::dav {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
    std::string method;               // "PROPFIND", "REPORT", "PUT", ...
    std::string url;                  // absolute URL
    Headers headers;                  // extra headers ("Depth", "If-Match", ...)
    std::string body;
    std::string content_type;         // sets Content-Type when body is non-empty

    static Request propfind(std::string url, std::string depth, std::string body);
    static Request report(std::string url, std::string depth, std::string body);
    static Request get(std::string url);
    static Request put(std::string url, std::string body, std::string content_type);
    static Request del(std::string url);
    static Request post(std::string url, std::string body, std::string content_type);
    static Request options(std::string url);

    Request& header(std::string name, std::string value);
    bool changes_state() const;       // PUT, DELETE, MOVE, COPY, PROPPATCH, MKCOL, MKCALENDAR, POST
};

// A server may not hold us off for longer than this (a typo or a hostile
// value would otherwise stop the account for days), nor ask us to hammer it
// sooner than this.
inline constexpr std::chrono::seconds kMaxRetryAfter{6 * 3600};
inline constexpr std::chrono::seconds kMinRetryAfter{5};

struct Response {
    long status = 0;
    Headers headers;                  // names lower-cased, in order received (last hop only)
    std::string body;
    std::string effective_url;        // after redirects (always on the request's origin)

    // First header with that (case-insensitive) name.
    std::optional<std::string> header(std::string_view name) const;
    // Retry-After as a delay (delta-seconds or HTTP-date), only on a 429 or
    // 503 (elsewhere it is not a request to wait: RFC 9110 lets a 3xx carry
    // it for a redirect) and only when valid, clamped to
    // [kMinRetryAfter, kMaxRetryAfter].
    std::optional<std::chrono::seconds> retry_after() const;
    // Same, against a given "now" (seconds since the epoch), for tests.
    std::optional<std::chrono::seconds> retry_after(std::int64_t now_unix) const;
    bool ok() const { return status >= 200 && status < 300; }
};

// Transport failure (DNS, connect, TLS, timeout, too large, too many
// redirects). Names the URL (redacted) and curl's reason.
struct HttpError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A request or a redirect to an origin this client may not talk to. Nothing
// was sent there. `from` is the URL asked for, `to` the one refused (both
// redacted; equal when the request itself was refused).
struct OriginRefused : HttpError {
    OriginRefused(const std::string& what, std::string from, std::string to, std::string reason)
        : HttpError(what), from(std::move(from)), to(std::move(to)), reason(std::move(reason)) {}
    std::string from, to;
    std::string reason;   // "another origin than https://a.example", "from https to plain http", ...
};

// The request was stopped because the flag given to HttpClient::set_cancel()
// was set. Not an HttpError: nothing is wrong with the server or the
// network, and code that retries or skips transport failures must not
// swallow it.
struct Cancelled : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A request the server refused. `status` is the HTTP status; `retry_after`
// comes from the response when present (429, 503).
struct RemoteError : std::runtime_error {
    RemoteError(const std::string& what, long status, std::optional<std::chrono::seconds> retry_after)
        : std::runtime_error(what), status(status), retry_after(retry_after) {}
    long status;
    std::optional<std::chrono::seconds> retry_after;
    bool auth_failed() const { return status == 401; }
};

struct ClientOptions {
    std::string username;
    std::string password;
    bool verify_tls = true;
    std::chrono::seconds connect_timeout{15};
    std::chrono::seconds timeout{300};          // whole transfer
    // A transfer that moves fewer than low_speed_limit bytes a second (both
    // directions together, averaged over 5 s) for low_speed_window is
    // abandoned. The window is also the longest silence allowed while the
    // server computes its answer (Radicale: 12 s for a 50 000-contact query
    // on a 2-core machine). At 1 KiB/s a minute is a dead link or a trickle:
    // the 300 s timeout already needs 3.4 KiB/s for a 1 MiB answer.
    std::chrono::seconds low_speed_window{60};
    long low_speed_limit = 1024;                // bytes per second
    // The body once decompressed: what memory holds. The largest answer
    // measured here, the first sync's addressbook-query over 50 000
    // contacts on Radicale 3.1.8, is 27.4 MiB (4.7 MiB gzipped).
    size_t max_response_bytes = 64u << 20;
    // The body as received, before decompression: an identity answer is as
    // large on the wire as in memory, so the same figure; the decompressed
    // cap is what stops a compressed bomb.
    size_t max_wire_bytes = 64u << 20;
    // A body handed to a sink as it arrives (send() with a BodySink) is not
    // held in memory, so only this cap applies to it, as received and once
    // decompressed: far past any collection (a 100 000-contact listing is
    // about 55 MiB), short of filling a disk from one answer.
    uint64_t max_streamed_bytes = uint64_t{4} << 30;
    // Hops followed for one request (GET, PROPFIND, REPORT, OPTIONS), all
    // within its origin. One more is an error naming the chain.
    int max_redirects = 5;
    // Origins ("https://dav.example.org", or any URL on it) requests may go
    // to. Empty: the origin of the first request, for the client's life.
    std::vector<std::string> allowed_origins;
};

class HttpClient {
public:
    explicit HttpClient(ClientOptions options);
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    // Sends the request and returns any HTTP status (4xx/5xx are not
    // exceptions; a 401 is returned as it is, never retried with the same
    // credentials). Throws OriginRefused for a URL or a redirect off the
    // allowed origins, HttpError on transport failure or a redirect loop,
    // Cancelled when the cancel flag is set before or during the transfer.
    Response send(Request request);

    // Receives the body of a 2xx answer piece by piece (decompressed) as it
    // arrives, instead of Response::body. Other answers (a redirect, an
    // error page) are buffered as usual. An exception from the sink stops
    // the transfer and leaves send() unchanged.
    using BodySink = std::function<void(std::string_view)>;
    Response send(Request request, const BodySink& sink);

    // The flag (owned by the caller, outliving this client or reset to
    // nullptr first) that stops requests when it becomes true; read from
    // the thread running send(), written from any thread.
    void set_cancel(const std::atomic<bool>* flag);

    // Called with every state-changing request just before it is sent.
    using WriteDecorator = std::function<void(Request&)>;
    void set_write_decorator(WriteDecorator d) { write_decorator_ = std::move(d); }

    // Counts for logs, tests and benchmarks.
    uint64_t requests_sent() const { return requests_sent_; }
    uint64_t bytes_received() const { return bytes_received_; }

private:
    // One exchange, no redirect followed; `location` receives the absolute
    // URL of a 3xx's Location, when it has one.
    Response perform(const Request& request, std::string& location, const BodySink* sink);
    // Throws OriginRefused unless `target` is on an allowed origin.
    void check_origin(const std::string& target, const std::string& asked_for);
    void warn_if_cleartext(const url::Url& target);

    struct Curl;
    ClientOptions options_;
    std::vector<std::string> origins_;   // normalised allowed_origins
    std::unique_ptr<Curl> curl_;
    WriteDecorator write_decorator_;
    bool warned_cleartext_ = false;
    uint64_t requests_sent_ = 0;
    uint64_t bytes_received_ = 0;
};

std::string user_agent();

}  // namespace davsyncd::dav
