#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <thread>

#include "dav/http_client.hpp"
#include "fake_http_server.hpp"

using namespace davsyncd::dav;

TEST_SUITE("http") {

TEST_CASE("request builders set method, depth and content type") {
    auto p = Request::propfind("http://h/x/", "1", "<a/>");
    CHECK(p.method == "PROPFIND");
    CHECK(p.headers == Headers{{"Depth", "1"}});
    CHECK(p.content_type.starts_with("application/xml"));
    CHECK_FALSE(p.changes_state());
    CHECK(Request::report("http://h/", "0", "").method == "REPORT");
    CHECK(Request::put("http://h/a.ics", "B", "text/calendar").changes_state());
    CHECK(Request::del("http://h/a.ics").changes_state());
    CHECK(Request::post("http://h/", "", "application/xml").changes_state());
    CHECK_FALSE(Request::get("http://h/a.ics").changes_state());
    Request mk{"MKCALENDAR", "http://h/c/", {}, {}, {}};
    CHECK(mk.changes_state());
    Request pp{"PROPPATCH", "http://h/c/", {}, {}, {}};
    CHECK(pp.changes_state());
}

TEST_CASE("write decorator runs on state-changing requests only") {
    testing::FakeHttpServer server;
    for (int i = 0; i < 3; ++i) server.queue({201, {{"ETag", "\"e1\""}}, ""});
    HttpClient http({});
    int decorated = 0;
    http.set_write_decorator([&](Request& r) {
        ++decorated;
        r.header("Push-Dont-Notify", "\"https://x/sub/1\"");
    });
    http.send(Request::put(server.url("/c/a.ics"), "BEGIN:VCALENDAR", "text/calendar"));
    http.send(Request::propfind(server.url("/c/"), "0", "<x/>"));
    http.send(Request::del(server.url("/c/a.ics")).header("If-Match", "\"e1\""));
    auto reqs = server.requests();
    REQUIRE(reqs.size() == 3);
    CHECK(decorated == 2);
    CHECK(reqs[0].method == "PUT");
    CHECK(reqs[0].header("Push-Dont-Notify") == "\"https://x/sub/1\"");
    CHECK(reqs[0].body == "BEGIN:VCALENDAR");
    CHECK(reqs[0].header("Content-Type") == "text/calendar");
    CHECK(reqs[1].method == "PROPFIND");
    CHECK(reqs[1].header("Depth") == "0");
    CHECK_FALSE(reqs[1].has_header("Push-Dont-Notify"));
    CHECK(reqs[2].method == "DELETE");
    CHECK(reqs[2].header("If-Match") == "\"e1\"");
    CHECK(reqs[2].header("Push-Dont-Notify") == "\"https://x/sub/1\"");
}

TEST_CASE("one connection is reused across requests") {
    testing::FakeHttpServer server;
    for (int i = 0; i < 5; ++i) server.queue({207, {}, "<x/>"});
    HttpClient http({});
    for (int i = 0; i < 5; ++i) CHECK(http.send(Request::propfind(server.url("/"), "0", "")).status == 207);
    CHECK(server.connections() == 1);
    CHECK(http.requests_sent() == 5);
}

TEST_CASE("basic auth is sent pre-emptively and user agent names davsyncd") {
    testing::FakeHttpServer server;
    server.queue({207, {}, ""});
    ClientOptions o;
    o.username = "alice";
    o.password = "s3cret";
    HttpClient http(o);
    http.send(Request::propfind(server.url("/"), "0", ""));
    auto r = server.requests().at(0);
    CHECK(r.header("Authorization") == "Basic YWxpY2U6czNjcmV0");
    CHECK(r.header("User-Agent").starts_with("davsyncd/"));
    CHECK(r.header("Accept-Encoding").find("gzip") != std::string::npos);
    CHECK_FALSE(r.has_header("Expect"));
}

TEST_CASE("Retry-After is understood as seconds or a date") {
    testing::FakeHttpServer server;
    server.queue({503, {{"Retry-After", "120"}}, ""});
    server.queue({429, {{"Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"}}, ""});
    server.queue({429, {{"Retry-After", "soon"}}, ""});
    HttpClient http({});
    auto a = http.send(Request::get(server.url("/")));
    CHECK(a.status == 503);
    REQUIRE(a.retry_after());
    CHECK(a.retry_after()->count() == 120);
    auto b = http.send(Request::get(server.url("/")));
    REQUIRE(b.retry_after());
    CHECK(*b.retry_after() == kMinRetryAfter);  // a date in the past: soon, but not at once
    CHECK_FALSE(http.send(Request::get(server.url("/"))).retry_after());
}

namespace {
std::optional<std::chrono::seconds> retry_after(long status, std::string value,
                                                std::int64_t now = 1445412480 /* Wed, 21 Oct 2015 07:28:00 GMT */) {
    Response r;
    r.status = status;
    r.headers = {{"retry-after", std::move(value)}};
    return r.retry_after(now);
}
}  // namespace

TEST_CASE("Retry-After counts only on 429 and 503") {
    CHECK(retry_after(429, "120") == std::chrono::seconds(120));
    CHECK(retry_after(503, "120") == std::chrono::seconds(120));
    for (long status : {200L, 301L, 302L, 401L, 404L, 500L, 502L, 504L}) {
        CAPTURE(status);
        CHECK_FALSE(retry_after(status, "120"));
    }
    Response none;
    none.status = 503;
    CHECK_FALSE(none.retry_after());
}

TEST_CASE("Retry-After is clamped to between 5 s and 6 h") {
    CHECK(kMinRetryAfter == std::chrono::seconds(5));
    CHECK(kMaxRetryAfter == std::chrono::hours(6));
    CHECK(retry_after(503, "0") == kMinRetryAfter);
    CHECK(retry_after(503, "4") == kMinRetryAfter);
    CHECK(retry_after(503, "5") == std::chrono::seconds(5));
    CHECK(retry_after(503, "21600") == std::chrono::seconds(21600));
    CHECK(retry_after(503, "21601") == kMaxRetryAfter);
    CHECK(retry_after(503, "999999999") == kMaxRetryAfter);
    CHECK(retry_after(503, "99999999999999999999999999999999") == kMaxRetryAfter);
    CHECK(retry_after(503, " 120 ") == std::chrono::seconds(120));
    // Dates: ten minutes ahead, far ahead, past, before 1970.
    CHECK(retry_after(503, "Wed, 21 Oct 2015 07:38:00 GMT") == std::chrono::seconds(600));
    CHECK(retry_after(503, "Wednesday, 21-Oct-15 07:38:00 GMT") == std::chrono::seconds(600));
    CHECK(retry_after(503, "Wed Oct 21 07:38:00 2015") == std::chrono::seconds(600));
    CHECK(retry_after(503, "Fri, 31 Dec 9999 23:59:59 GMT") == kMaxRetryAfter);
    CHECK(retry_after(503, "Fri, 31 Dec 99999 23:59:59 GMT") == kMaxRetryAfter);
    CHECK(retry_after(503, "Wed, 21 Oct 2015 07:27:00 GMT") == kMinRetryAfter);
    CHECK(retry_after(503, "Mon, 01 Jan 1900 00:00:00 GMT") == kMinRetryAfter);
    // No overflow whatever "now" is.
    CHECK(retry_after(503, "Fri, 31 Dec 9999 23:59:59 GMT", std::numeric_limits<std::int64_t>::min()) == kMaxRetryAfter);
    CHECK(retry_after(503, "Mon, 01 Jan 1900 00:00:00 GMT", std::numeric_limits<std::int64_t>::max()) == kMinRetryAfter);
}

TEST_CASE("an invalid Retry-After is ignored") {
    for (const char* v : {"", "  ", "-5", "+5", "-1", "1.5", "120s", "soon", "0x10", "12:00", "Wed, 32 Oct 2015 07:28:00 GMT"}) {
        CAPTURE(v);
        CHECK_FALSE(retry_after(429, v));
    }
}

TEST_CASE("response headers are available by case-insensitive name") {
    testing::FakeHttpServer server;
    server.queue({201, {{"ETag", "\"abc\""}, {"Location", "https://x/sub/9"}}, ""});
    HttpClient http({});
    auto r = http.send(Request::post(server.url("/c/"), "<x/>", "application/xml"));
    CHECK(r.status == 201);
    CHECK(r.header("etag") == "\"abc\"");
    CHECK(r.header("LOCATION") == "https://x/sub/9");
    CHECK_FALSE(r.header("expires"));
}

TEST_CASE("header values with line breaks are refused, not sent") {
    testing::FakeHttpServer server;
    HttpClient http({});
    auto req = Request::get(server.url("/"));
    req.header("X-Evil", "a\r\nInjected: yes");
    CHECK_THROWS_AS(http.send(req), HttpError);
    CHECK(server.requests().empty());
}

TEST_CASE("oversized response is an error, not a memory blow-up") {
    testing::FakeHttpServer server;
    server.queue({200, {}, std::string(4096, 'x')});
    ClientOptions o;
    o.max_response_bytes = 1024;
    HttpClient http(o);
    CHECK_THROWS_WITH_AS(http.send(Request::get(server.url("/big"))), doctest::Contains("larger than 1024"), HttpError);
}

TEST_CASE("transport errors name the URL without credentials") {
    HttpClient http({});
    try {
        http.send(Request::get("http://user:pw@127.0.0.1:1/x?token=1"));
        FAIL("expected HttpError");
    } catch (const HttpError& e) {
        std::string msg = e.what();
        CHECK(msg.find("127.0.0.1:1/x") != std::string::npos);
        CHECK(msg.find("pw") == std::string::npos);
        CHECK(msg.find("token") == std::string::npos);
    }
}

namespace {

using Clock = std::chrono::steady_clock;

// Waits for a condition, polling, up to a deadline; false when it never held.
template <typename F>
bool eventually(F condition, std::chrono::seconds deadline = std::chrono::seconds(10)) {
    auto until = Clock::now() + deadline;
    while (!condition()) {
        if (Clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

// Generous: the client promises about a second; a loaded test machine gets more.
constexpr auto kCancelDeadline = std::chrono::seconds(5);

}  // namespace

TEST_CASE("a request to a silent server stops soon after its cancel flag is set") {
    testing::FakeHttpServer server;
    server.queue({207, {}, "<late/>", std::chrono::minutes(5)});
    std::atomic<bool> cancel{false};
    HttpClient http({});
    http.set_cancel(&cancel);
    auto sent = std::async(std::launch::async, [&] { return http.send(Request::propfind(server.url("/c/"), "1", "<x/>")); });
    REQUIRE(eventually([&] { return server.requests().size() == 1; }));
    auto set_at = Clock::now();
    cancel = true;
    REQUIRE(sent.wait_for(kCancelDeadline) == std::future_status::ready);
    CHECK(Clock::now() - set_at < kCancelDeadline);
    CHECK_THROWS_WITH_AS(sent.get(), doctest::Contains("PROPFIND http://127.0.0.1:"), Cancelled);
    CHECK(eventually([&] { return server.hangups() == 1; }));  // the connection was dropped, not left hanging
}

TEST_CASE("a request whose body trickles in stops soon after its cancel flag is set") {
    testing::FakeHttpServer server;
    server.queue({200, {}, std::string(100000, 'x'), {}, std::chrono::milliseconds(100)});
    std::atomic<bool> cancel{false};
    HttpClient http({});
    http.set_cancel(&cancel);
    auto sent = std::async(std::launch::async, [&] { return http.send(Request::get(server.url("/big.ics"))); });
    REQUIRE(eventually([&] { return server.requests().size() == 1; }));
    cancel = true;
    REQUIRE(sent.wait_for(kCancelDeadline) == std::future_status::ready);
    CHECK_THROWS_AS(sent.get(), Cancelled);
}

TEST_CASE("a set cancel flag stops a request before it is sent, and the client works again once it is cleared") {
    testing::FakeHttpServer server;
    server.queue({207, {}, "<x/>"});
    std::atomic<bool> cancel{true};
    HttpClient http({});
    http.set_cancel(&cancel);
    CHECK_THROWS_WITH_AS(http.send(Request::put(server.url("/c/a.ics"), "B", "text/calendar")),
                         doctest::Contains("cancelled before it was sent"), Cancelled);
    CHECK(server.requests().empty());
    cancel = false;
    CHECK(http.send(Request::propfind(server.url("/c/"), "0", "")).status == 207);
    http.set_cancel(nullptr);
}

TEST_CASE("cancelled is not a transport error") {
    // Code that skips HttpError (a failed push registration, say) must let a cancel through.
    CHECK_FALSE(std::is_base_of_v<HttpError, Cancelled>);
    CHECK(std::is_base_of_v<std::exception, Cancelled>);
}

TEST_CASE("a server that trickles its answer is abandoned with a clear error") {
    testing::FakeHttpServer server;
    // 10 bytes a second: 10 000 bytes would take 17 minutes, past the whole-transfer timeout.
    server.queue({200, {}, std::string(10000, 'x'), {}, std::chrono::milliseconds(100)});
    ClientOptions o;
    o.low_speed_window = std::chrono::seconds(2);
    HttpClient http(o);
    auto started = Clock::now();
    CHECK_THROWS_WITH_AS(http.send(Request::get(server.url("/slow.ics"))),
                         doctest::Contains("too slow"), HttpError);
    CHECK(Clock::now() - started < std::chrono::seconds(30));
    CHECK(eventually([&] { return server.hangups() == 1; }));
}

TEST_CASE("a server silent for longer than the low-speed window is abandoned") {
    testing::FakeHttpServer server;
    server.queue({207, {}, "<late/>", std::chrono::minutes(5)});
    ClientOptions o;
    o.low_speed_window = std::chrono::seconds(1);
    HttpClient http(o);
    auto started = Clock::now();
    CHECK_THROWS_WITH_AS(http.send(Request::propfind(server.url("/"), "1", "")), doctest::Contains("too slow"), HttpError);
    CHECK(Clock::now() - started < std::chrono::seconds(30));
}

TEST_CASE("by default a trickle cannot hold a request for the whole timeout") {
    ClientOptions o;
    CHECK(o.low_speed_window < o.timeout / 2);
    // A few bytes a second are far below the limit.
    CHECK(o.low_speed_limit >= 100);
}

}  // TEST_SUITE
