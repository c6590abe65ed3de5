#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <thread>

#include "capture.hpp"
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
    const std::string host = "127.0.0.1:" + std::to_string(testing::closed_loopback_port());
    try {
        http.send(Request::get("http://user:pw@" + host + "/x?token=1"));
        FAIL("expected HttpError");
    } catch (const HttpError& e) {
        std::string msg = e.what();
        CHECK(msg.find(host + "/x") != std::string::npos);
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

namespace {

ClientOptions with_password() {
    ClientOptions o;
    o.username = "alice";
    o.password = "s3cret";
    return o;
}

}  // namespace

TEST_CASE("a redirect to another origin is refused, names both URLs, and that origin gets nothing") {
    testing::FakeHttpServer a, b;
    b.set_handler([](const testing::RecordedRequest&) { return testing::CannedResponse{207, {}, "<x/>"}; });
    a.queue({301, {{"Location", b.url("/dav/")}}, ""});
    HttpClient http(with_password());
    try {
        http.send(Request::propfind(a.url("/.well-known/caldav"), "0", "<x/>"));
        FAIL("the redirect was followed");
    } catch (const OriginRefused& e) {
        std::string what = e.what();
        CAPTURE(what);
        CHECK(what.find(a.url("/.well-known/caldav")) != std::string::npos);
        CHECK(what.find(b.url("/dav/")) != std::string::npos);
        CHECK(what.find("another origin") != std::string::npos);
        CHECK(e.to == b.url("/dav/"));
        CHECK(what.find("s3cret") == std::string::npos);
    }
    CHECK(b.requests().empty());
    CHECK(a.requests().size() == 1);
    // Nor does the client go there on its own afterwards: it is pinned to a's origin.
    CHECK_THROWS_AS(http.send(Request::propfind(b.url("/dav/"), "0", "<x/>")), OriginRefused);
    CHECK(b.requests().empty());
}

TEST_CASE("a redirect on the same host but another port or host name is another origin") {
    testing::FakeHttpServer a;
    // "localhost" and "127.0.0.1" reach the same server but are different origins.
    std::string other = "http://localhost:" + a.url("/").substr(a.url("/").rfind(':') + 1) + "dav/";
    a.queue({302, {{"Location", other}}, ""});
    HttpClient http(with_password());
    CHECK_THROWS_AS(http.send(Request::get(a.url("/x"))), OriginRefused);
    CHECK(a.requests().size() == 1);
}

TEST_CASE("a redirect within the origin is followed with method, body and credentials") {
    testing::FakeHttpServer a;
    a.queue({301, {{"Location", "/dav.php/"}}, ""});
    a.queue({308, {{"Location", a.url("/dav.php/principal/")}}, ""});
    a.queue({207, {}, "<ok/>"});
    HttpClient http(with_password());
    auto r = http.send(Request::propfind(a.url("/.well-known/caldav"), "0", "<q/>"));
    CHECK(r.status == 207);
    CHECK(r.body == "<ok/>");
    CHECK(r.effective_url == a.url("/dav.php/principal/"));
    auto reqs = a.requests();
    REQUIRE(reqs.size() == 3);
    for (const auto& q : reqs) {
        CHECK(q.method == "PROPFIND");
        CHECK(q.body == "<q/>");
        CHECK(q.header("Depth") == "0");
        CHECK(q.header("Authorization") == "Basic YWxpY2U6czNjcmV0");
    }
    CHECK(reqs[1].target == "/dav.php/");
    CHECK(reqs[2].target == "/dav.php/principal/");
}

TEST_CASE("a write is never redirected: the 3xx comes back as it is") {
    testing::FakeHttpServer a;
    a.queue({301, {{"Location", "/elsewhere/a.ics"}}, ""});
    HttpClient http(with_password());
    auto r = http.send(Request::put(a.url("/c/a.ics"), "BEGIN:VCALENDAR", "text/calendar"));
    CHECK(r.status == 301);
    CHECK(a.requests().size() == 1);
}

TEST_CASE("the client talks only to its allowed origins, or to the one it was first used with") {
    testing::FakeHttpServer a, b;
    a.set_handler([](const testing::RecordedRequest&) { return testing::CannedResponse{207, {}, "<x/>"}; });
    SUBCASE("configured") {
        ClientOptions o = with_password();
        o.allowed_origins = {a.url("/any/path/")};
        HttpClient http(o);
        auto what = testing::error_of([&] { http.send(Request::get(b.url("/x"))); });
        CHECK(what.find(b.url("/x")) != std::string::npos);
        CHECK(what.find("not the account's origin") != std::string::npos);
        CHECK(http.send(Request::get(a.url("/x"))).status == 207);
    }
    SUBCASE("configured as https: the same host over plain http is another origin") {
        ClientOptions o = with_password();
        o.allowed_origins = {"https" + b.url("/").substr(4)};
        HttpClient http(o);
        CHECK_THROWS_AS(http.send(Request::propfind(b.url("/dav/"), "0", "")), OriginRefused);
    }
    SUBCASE("pinned by the first request") {
        HttpClient http(with_password());
        CHECK(http.send(Request::get(a.url("/x"))).status == 207);
        CHECK_THROWS_AS(http.send(Request::del(b.url("/sub/1"))), OriginRefused);
    }
    CHECK(b.requests().empty());
}

TEST_CASE("a redirect loop ends after max_redirects with an error naming the chain") {
    testing::FakeHttpServer a;
    a.set_handler([](const testing::RecordedRequest& r) {
        return testing::CannedResponse{301, {{"Location", r.target == "/a" ? "/b" : "/a"}}, ""};
    });
    HttpClient http(with_password());
    auto what = testing::error_of([&] { http.send(Request::propfind(a.url("/a"), "0", "")); });
    CAPTURE(what);
    CHECK(what.find("more than 5 redirects") != std::string::npos);
    CHECK(what.find(a.url("/a") + " -> " + a.url("/b") + " -> " + a.url("/a")) != std::string::npos);
    CHECK(a.requests().size() == 6);  // the request and five redirects, then no more
}

TEST_CASE("a 401 is final: the credentials are not sent again and again") {
    testing::FakeHttpServer a;
    SUBCASE("Basic") {
        a.set_handler([](const testing::RecordedRequest&) {
            return testing::CannedResponse{401, {{"WWW-Authenticate", "Basic realm=\"x\""}}, ""};
        });
        HttpClient http(with_password());
        CHECK(http.send(Request::propfind(a.url("/"), "0", "")).status == 401);
        CHECK(a.requests().size() == 1);
    }
    SUBCASE("Digest that calls every nonce stale") {
        // libcurl answers stale=true by asking again, for ever: the client stops it.
        a.set_handler([](const testing::RecordedRequest&) {
            return testing::CannedResponse{
                401, {{"WWW-Authenticate", "Digest realm=\"x\", nonce=\"n\", qop=\"auth\", stale=true"}}, ""};
        });
        ClientOptions o = with_password();
        o.timeout = std::chrono::seconds(20);
        HttpClient http(o);
        auto started = Clock::now();
        // A refused password like any other 401 (the account waits for the
        // user), not a transport failure that would be retried for ever.
        CHECK(http.send(Request::propfind(a.url("/"), "0", "")).status == 401);
        CHECK(a.requests().size() <= 4);
        CHECK(Clock::now() - started < std::chrono::seconds(15));  // a hang guard, not a timing claim
    }
}

TEST_CASE("over plain http the client warns once that the password travels in clear text") {
    testing::FakeHttpServer a;
    for (int i = 0; i < 3; ++i) a.queue({207, {}, "<x/>"});
    testing::StderrCapture log;
    HttpClient http(with_password());
    for (int i = 0; i < 3; ++i) http.send(Request::propfind(a.url("/"), "0", ""));
    std::string text = log.text();
    CAPTURE(text);
    size_t first = text.find("clear text");
    REQUIRE(first != std::string::npos);
    CHECK(text.find("clear text", first + 1) == std::string::npos);
    CHECK(text.find("s3cret") == std::string::npos);
    CHECK(text.find("alice") == std::string::npos);
}

TEST_CASE("a response larger than max_wire_bytes on the wire is refused") {
    testing::FakeHttpServer a;
    a.queue({200, {}, std::string(5000, 'x')});
    ClientOptions o;
    o.max_wire_bytes = 1000;
    HttpClient http(o);
    CHECK_THROWS_WITH_AS(http.send(Request::get(a.url("/big"))), doctest::Contains("larger than 1000 bytes as received"),
                         HttpError);
}

TEST_CASE("a gzip answer is decoded; the decompressed cap applies to what it inflates to") {
    testing::FakeHttpServer a;
    a.queue({200, {{"Content-Encoding", "gzip"}}, testing::gzip_repeated("<a/>", 100000)});
    a.queue({200, {{"Content-Encoding", "gzip"}}, testing::gzip_repeated("<a/>", 100000)});
    {
        HttpClient http({});  // gone before the next client: the fake serves one connection at a time
        auto r = http.send(Request::get(a.url("/small")));
        CHECK(r.body.size() == 100000);
        CHECK(r.body.substr(0, 8) == "<a/><a/>");
    }
    ClientOptions o;
    o.max_response_bytes = 50000;
    HttpClient small(o);
    CHECK_THROWS_WITH_AS(small.send(Request::get(a.url("/small"))),
                         doctest::Contains("larger than 50000 bytes once decompressed"), HttpError);
}

TEST_CASE("a gzip bomb is refused with a clear error, in bounded memory") {
    // 1.7 MB on the wire, 256 MiB inflated.
    const size_t inflated = size_t(256) << 20;
    testing::FakeHttpServer a;
    a.queue({207, {{"Content-Encoding", "gzip"}, {"Content-Type", "application/xml"}}, testing::gzip_repeated("<a/>", inflated)});
    HttpClient http(with_password());
    ClientOptions defaults;
    REQUIRE(testing::reset_peak_rss());
    long before = testing::proc_status_kib("VmHWM");
    auto what = testing::error_of([&] { http.send(Request::propfind(a.url("/dav/"), "1", "<x/>")); });
    long grown_mib = (testing::proc_status_kib("VmHWM") - before) / 1024;
    CAPTURE(what);
    CAPTURE(grown_mib);
    CHECK(what.find("once decompressed") != std::string::npos);
    CHECK(what.find(a.url("/dav/")) != std::string::npos);
    // The body may reach the cap (64 MiB) and, while growing to it, briefly
    // hold half of it twice: well below what the bomb inflates to.
    CHECK(defaults.max_response_bytes <= size_t(64) << 20);
    CHECK(grown_mib < 110);
}

TEST_CASE("a streamed body is not capped at 64 MiB, but a compression bomb is refused by its ratio") {
    testing::FakeHttpServer a;
    // 80 MiB as it is passes (the sink holds none of it); 256 MiB of "<a/>"
    // from 1.7 MB of gzip does not.
    std::string varied;
    for (int i = 0; varied.size() < (80u << 20); ++i) varied += "<d:response><d:href>/c/" + std::to_string(i * 7919) + ".ics</d:href></d:response>\n";
    a.queue({207, {}, varied});
    a.queue({207, {{"Content-Encoding", "gzip"}}, testing::gzip_repeated("<a/>", size_t(256) << 20)});
    HttpClient http(with_password());
    uint64_t got = 0;
    auto count = [&](std::string_view bytes) { got += bytes.size(); };
    CHECK(http.send(Request::report(a.url("/c/"), "1", "<x/>"), count).status == 207);
    CHECK(got == varied.size());
    got = 0;
    auto what = testing::error_of([&] { http.send(Request::report(a.url("/c/"), "1", "<x/>"), count); });
    CHECK(what.find("inflates more than 100-fold once decompressed; refused") != std::string::npos);
    CHECK(got < (64u << 20));
}

}  // TEST_SUITE
