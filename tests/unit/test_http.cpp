#include <doctest/doctest.h>

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
    CHECK(b.retry_after()->count() == 0);  // a date in the past: retry now
    CHECK_FALSE(http.send(Request::get(server.url("/"))).retry_after());
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

}  // TEST_SUITE
