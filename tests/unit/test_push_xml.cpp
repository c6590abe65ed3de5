#include <doctest/doctest.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "capture.hpp"
#include "fake_http_server.hpp"
#include "push/push_xml.hpp"
#include "push/subscriptions.hpp"

using namespace davsyncd;
using namespace davsyncd::push;

namespace {
dav::Response response(long status, dav::Headers headers, std::string body = "") {
    dav::Response r;
    r.status = status;
    for (auto& [k, v] : headers) {
        std::string lk;
        for (char c : k) lk += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        r.headers.emplace_back(lk, v);
    }
    r.body = std::move(body);
    return r;
}
}  // namespace

TEST_SUITE("push") {

TEST_CASE("push-register body carries the subscription, one trigger and the expiry") {
    RegisterRequest r{"https://up.example/push/abc?x=1&y=2", "BPUBKEY", "SECRET",
                      std::chrono::system_clock::from_time_t(1703066611)};
    auto body = register_body(r);
    CHECK(body.find("<P:push-register xmlns:P=\"https://bitfire.at/webdav-push\"") != std::string::npos);
    CHECK(body.find("<P:push-resource>https://up.example/push/abc?x=1&amp;y=2</P:push-resource>") != std::string::npos);
    CHECK(body.find("<P:content-encoding>aes128gcm</P:content-encoding>") != std::string::npos);
    CHECK(body.find("<P:subscription-public-key type=\"p256dh\">BPUBKEY</P:subscription-public-key>") != std::string::npos);
    CHECK(body.find("<P:auth-secret>SECRET</P:auth-secret>") != std::string::npos);
    CHECK(body.find("<P:content-update><D:depth>1</D:depth></P:content-update>") != std::string::npos);
    CHECK(body.find("<P:expires>Wed, 20 Dec 2023 10:03:31 GMT</P:expires>") != std::string::npos);
    CHECK(body.find("getetag") == std::string::npos);
    CHECK(body.find("sync-token") == std::string::npos);
}

TEST_CASE("HTTP dates: IMF-fixdate and Nextcloud's +0000") {
    auto t = std::chrono::system_clock::from_time_t(1703066611);
    CHECK(http_date(t) == "Wed, 20 Dec 2023 10:03:31 GMT");
    CHECK(parse_http_date("Wed, 20 Dec 2023 10:03:31 GMT") == t);
    CHECK(parse_http_date("Wed, 20 Dec 2023 10:03:31 +0000") == t);
    CHECK_FALSE(parse_http_date("Wed, 20 Dec 2023 10:03:31 +0200"));
    CHECK_FALSE(parse_http_date("yesterday"));
    CHECK_FALSE(parse_http_date("Wed, 40 Dec 2023 10:03:31 GMT"));
}

TEST_CASE("registration accepted with 201, 204 and Xandikos' 200") {
    RegisterRefused why;
    for (long status : {200L, 201L, 204L}) {
        auto reg = parse_register_response(
            response(status, {{"Location", "https://dav.example/subs/io6Efei4ooph"}, {"Expires", "Wed, 20 Dec 2023 10:03:31 GMT"}}),
            "https://dav.example/cal/", why);
        REQUIRE(reg);
        CHECK(reg->url.str() == "https://dav.example/subs/io6Efei4ooph");
        CHECK(reg->expires == std::chrono::system_clock::from_time_t(1703066611));
    }
    auto rel = parse_register_response(response(201, {{"Location", "/subs/1"}}), "https://dav.example/cal/", why);
    REQUIRE(rel);
    CHECK(rel->url.str() == "https://dav.example/subs/1");
    CHECK_FALSE(rel->expires);
    CHECK_FALSE(parse_register_response(response(201, {}), "https://dav.example/cal/", why));
    CHECK(why.reason.find("Location") != std::string::npos);
}

TEST_CASE("registration refusals: both precondition spellings, 400, 429 with Retry-After") {
    RegisterRefused why;
    auto err = [](const char* cond) {
        return std::string(R"(<?xml version="1.0"?><D:error xmlns:D="DAV:" xmlns:P="https://bitfire.at/webdav-push"><P:)") + cond + "/></D:error>";
    };
    CHECK_FALSE(parse_register_response(response(403, {}, err("no-trigger-supported")), "https://d/c/", why));
    CHECK(why.reason == "no-trigger-supported");
    CHECK(why.permanent);
    CHECK_FALSE(parse_register_response(response(403, {}, err("no-supported-trigger")), "https://d/c/", why));
    CHECK(why.reason == "no-supported-trigger");
    CHECK_FALSE(parse_register_response(response(403, {}, err("invalid-subscription")), "https://d/c/", why));
    CHECK_FALSE(why.permanent);
    CHECK_FALSE(parse_register_response(response(400, {}, "<s:exception>nextcloud</s:exception>"), "https://d/c/", why));
    CHECK(why.status == 400);
    CHECK(why.permanent);
    CHECK_FALSE(parse_register_response(response(429, {{"Retry-After", "120"}}), "https://d/c/", why));
    REQUIRE(why.retry_after);
    CHECK(why.retry_after->count() == 120);
    CHECK_FALSE(why.permanent);
}

TEST_CASE("a SabreDAV-shaped refusal is judged by its condition, not by Sabre's diagnostics before it") {
    // SabreDAV writes s:exception and s:message before the condition (see
    // the sync-token refusal in test_xml.cpp); a push app on Sabre does the same.
    const char* body = R"(<?xml version="1.0" encoding="utf-8"?>
<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">
  <s:exception>Sabre\DAV\Exception\Forbidden</s:exception>
  <s:message>Subscription is invalid</s:message>
  <P:invalid-subscription xmlns:P="https://bitfire.at/webdav-push"/>
</d:error>
)";
    RegisterRefused why;
    CHECK_FALSE(parse_register_response(response(403, {}, body), "https://d/c/", why));
    CHECK(why.reason == "invalid-subscription");
    CHECK_FALSE(why.permanent);  // a new subscription may be accepted

    // Diagnostics alone name no condition: a plain, permanent 403.
    const char* plain = R"(<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">)"
                        R"(<s:exception>Sabre\DAV\Exception\Forbidden</s:exception></d:error>)";
    CHECK_FALSE(parse_register_response(response(403, {}, plain), "https://d/c/", why));
    CHECK(why.reason == "HTTP 403");
    CHECK(why.permanent);
}

TEST_CASE("push-message in the current and the legacy namespace") {
    auto m = parse_push_message(R"(<P:push-message xmlns:P="https://bitfire.at/webdav-push" xmlns:D="DAV:">)"
                                R"(<P:topic>O7M1nQ7cKkKTKsoS_j6Z3w</P:topic><P:content-update>)"
                                R"(<D:sync-token>http://example.com/sync/10</D:sync-token></P:content-update></P:push-message>)");
    REQUIRE(m.topic);
    CHECK(m.topic->str() == "O7M1nQ7cKkKTKsoS_j6Z3w");
    CHECK(m.content_update);
    CHECK(m.sync_token.str() == "http://example.com/sync/10");
    CHECK_FALSE(m.property_update);

    auto legacy = parse_push_message(R"(<push-message xmlns="DAV:Push"><topic>t1</topic>)"
                                     R"(<content-update><sync-token xmlns="DAV:">42</sync-token></content-update></push-message>)");
    REQUIRE(legacy.topic);
    CHECK(legacy.topic->str() == "t1");
    CHECK(legacy.sync_token.str() == "42");
}

TEST_CASE("a message without topic announcing transports is a VAPID key rotation") {
    auto m = parse_push_message(R"(<P:push-message xmlns:P="https://bitfire.at/webdav-push" xmlns:D="DAV:">)"
                                R"(<P:property-update><D:prop><P:transports/></D:prop></P:property-update></P:push-message>)");
    CHECK_FALSE(m.topic);
    CHECK(m.property_update);
    CHECK(m.transports_changed);
}

TEST_CASE("garbage and foreign roots are errors naming the problem") {
    CHECK_THROWS(parse_push_message("not xml"));
    CHECK_THROWS_WITH(parse_push_message(R"(<D:multistatus xmlns:D="DAV:"/>)"), doctest::Contains("not a push-message"));
}

TEST_CASE("Push-Dont-Notify quotes the registration URL byte for byte") {
    CHECK(dont_notify_value(RegistrationUrl("https://example.com/webdav/subscriptions/io6Efei4ooph")) ==
          "\"https://example.com/webdav/subscriptions/io6Efei4ooph\"");
    CHECK(dont_notify_value(RegistrationUrl("https://e/x\"y\\z")) == "\"https://e/x\\\"y\\\\z\"");
}

TEST_CASE("a registration URL on another origin than the collection is refused, not kept") {
    RegisterRefused why;
    for (const char* location : {"https://evil.example/subs/1", "http://dav.example/subs/1", "https://dav.example:8443/subs/1",
                                 "//evil.example/subs/1"}) {
        CAPTURE(location);
        CHECK_FALSE(parse_register_response(response(201, {{"Location", location}}), "https://dav.example/cal/", why));
        CHECK(why.permanent);
        CHECK(why.reason.find("another origin than the collection (https://dav.example)") != std::string::npos);
    }
    CHECK(parse_register_response(response(201, {{"Location", "https://dav.example:443/subs/1"}}), "https://dav.example/cal/", why));
}

namespace {

sync::PlannedCollection push_capable(const std::string& url) {
    sync::PlannedCollection p;
    p.info.url = url;
    p.info.push.web_push = true;
    p.info.push.topic = PushTopic("topic-1");
    p.label = "personal/work";
    return p;
}

MaintainInput endpoint(const std::string& e) {
    MaintainInput in;
    in.endpoint = e;
    in.public_key = "BPublicKey";
    in.auth_secret = "secret";
    in.now = std::chrono::system_clock::from_time_t(1703066611);
    return in;
}

}  // namespace

TEST_CASE("maintain: a foreign registration URL is not stored, and no DELETE ever goes there") {
    testing::FakeHttpServer server, elsewhere;
    server.queue({201, {{"Location", elsewhere.url("/subs/1")}}, ""});
    server.set_handler({});
    dav::HttpClient http({});
    Subscriptions subs;
    auto r = maintain(http, {push_capable(server.url("/cal/"))}, endpoint("https://push.example/e/1"), subs);
    CHECK(subs.empty());
    CHECK(r.registered == 0);
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].find(elsewhere.url("/subs/1")) != std::string::npos);
    CHECK(r.errors[0].find("another origin") != std::string::npos);

    // A registration stored by an older version that took any Location.
    subs[server.url("/cal/")] = Subscription{RegistrationUrl(elsewhere.url("/subs/1")), std::nullopt, "https://push.example/e/1", std::nullopt};
    auto gone = maintain(http, {}, endpoint(""), subs);
    CHECK(subs.empty());
    CHECK(gone.removed == 0);
    CHECK(elsewhere.requests().empty());
    CHECK(server.requests().size() == 1);  // the POST alone
}

TEST_CASE("push endpoints: https, or plain http on loopback only; the reason names the origin, not the capability") {
    CHECK_FALSE(endpoint_refusal("https://push.example/wpush/v2/gAAAA?x=1"));
    CHECK_FALSE(endpoint_refusal("http://127.0.0.1:8080/push/abc"));
    CHECK_FALSE(endpoint_refusal("http://[::1]:8080/push/abc"));
    CHECK_FALSE(endpoint_refusal("http://localhost:8080/push/abc"));
    auto why = endpoint_refusal("http://push.example/wpush/secret-capability?token=abc");
    REQUIRE(why);
    CHECK(why->find("http://push.example") != std::string::npos);
    CHECK(why->find("secret-capability") == std::string::npos);
    CHECK(why->find("token") == std::string::npos);
    CHECK(endpoint_refusal("file:///etc/passwd"));
    CHECK(endpoint_refusal("not a url"));
}

TEST_CASE("a stored push state forgets foreign registrations and a plain-http endpoint") {
    std::string tmpl = (std::filesystem::temp_directory_path() / "davsyncd-push-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    std::filesystem::path file = std::filesystem::path(tmpl) / "push.json";
    std::ofstream(file) << R"({"token": "t-1", "endpoint": "http://push.example/e/secret",
        "subscriptions": {"https://dav.example/cal/": {"url": "https://evil.example/subs/1", "push_resource": "x"},
                          "https://dav.example/tasks/": {"url": "https://dav.example/subs/2", "push_resource": "x"}}})";
    AccountPushState state;
    {
        testing::StderrCapture log;
        state = AccountPushState::load(file);
        CHECK(log.text().find("secret") == std::string::npos);
    }
    CHECK(state.token == "t-1");
    CHECK(state.endpoint.empty());
    CHECK(state.subscriptions.size() == 1);
    CHECK(state.subscriptions.count("https://dav.example/tasks/") == 1);
    std::filesystem::remove_all(tmpl);
}

}  // TEST_SUITE
