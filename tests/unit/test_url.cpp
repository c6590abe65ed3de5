#include <doctest/doctest.h>

#include <string>

#include "dav/url.hpp"

using namespace davsyncd;
using namespace davsyncd::url;

namespace {

Url must_parse(std::string_view s) {
    auto u = parse(s);
    REQUIRE_MESSAGE(u.has_value(), "parse failed: ", std::string(s));
    return *u;
}

// resolve() as a string, "(none)" when it fails.
std::string res(std::string_view base, std::string_view ref) {
    auto u = resolve(must_parse(base), ref);
    return u ? u->str() : "(none)";
}

}  // namespace

TEST_SUITE("url") {

TEST_CASE("parse splits an absolute URL") {
    Url u = must_parse("https://dav.example.com/remote.php/dav/?a=1&b=2#frag");
    CHECK(u.scheme == "https");
    CHECK(u.host == "dav.example.com");
    CHECK(u.port == 443);
    CHECK(u.path == "/remote.php/dav/");
    CHECK(u.query == "a=1&b=2");
    CHECK(u.origin() == "https://dav.example.com");
    CHECK(u.str() == "https://dav.example.com/remote.php/dav/?a=1&b=2");
}

TEST_CASE("parse: case, default ports, empty path") {
    Url u = must_parse("HTTP://Example.COM");
    CHECK(u.scheme == "http");
    CHECK(u.host == "example.com");
    CHECK(u.port == 80);
    CHECK(u.path == "/");
    CHECK(u.query == "");
    CHECK(u.str() == "http://example.com/");

    Url q = must_parse("https://example.com?x=1");
    CHECK(q.path == "/");
    CHECK(q.query == "x=1");

    Url path_case = must_parse("HtTpS://HOST.example/Dav/Alice/");
    CHECK(path_case.scheme == "https");
    CHECK(path_case.host == "host.example");
    CHECK(path_case.path == "/Dav/Alice/");  // the path keeps its case
}

TEST_CASE("parse: ports") {
    CHECK(must_parse("http://h:8080/").port == 8080);
    CHECK(must_parse("http://h:8080/").origin() == "http://h:8080");
    CHECK(must_parse("https://h:443/").origin() == "https://h");  // default port omitted
    CHECK(must_parse("http://h:443/").origin() == "http://h:443");
    CHECK(must_parse("https://h:80/").origin() == "https://h:80");
    CHECK(must_parse("http://h:1/").port == 1);
    CHECK(must_parse("http://h:65535/").port == 65535);
    CHECK(must_parse("http://h:/").port == 80);  // empty port = default
    CHECK_FALSE(parse("http://h:0/"));
    CHECK_FALSE(parse("http://h:65536/"));
    CHECK_FALSE(parse("http://h:99999999999999999999/"));
    CHECK_FALSE(parse("http://h:-1/"));
    CHECK_FALSE(parse("http://h:8o/"));
    CHECK_FALSE(parse("http://h:80:80/"));
}

TEST_CASE("parse: IPv6 literals") {
    Url u = must_parse("https://[2001:DB8::1]:8443/dav");
    CHECK(u.host == "2001:db8::1");
    CHECK(u.port == 8443);
    CHECK(u.path == "/dav");
    CHECK(u.origin() == "https://[2001:db8::1]:8443");
    CHECK(u.str() == "https://[2001:db8::1]:8443/dav");
    CHECK(must_parse("http://[::1]").str() == "http://[::1]/");
    CHECK(must_parse("http://[::ffff:127.0.0.1]/").host == "::ffff:127.0.0.1");
    CHECK_FALSE(parse("http://[::1/"));
    CHECK_FALSE(parse("http://[::1]x/"));
    CHECK_FALSE(parse("http://[]/"));
    CHECK_FALSE(parse("http://[example.com]/"));
    CHECK_FALSE(parse("http://::1/"));
}

TEST_CASE("parse: user info is accepted and dropped") {
    Url u = must_parse("https://alice:s3cret@dav.example.com/cal/");
    CHECK(u.host == "dav.example.com");
    CHECK(u.str() == "https://dav.example.com/cal/");
    CHECK(u.str().find("s3cret") == std::string::npos);
    // An '@' inside the password: the last one ends the user info.
    CHECK(must_parse("https://a:p@ss@h.example/").host == "h.example");
    CHECK(must_parse("https://alice@[::1]:81/").str() == "https://[::1]:81/");
    CHECK_FALSE(parse("https://alice:pw@/x"));
}

TEST_CASE("parse rejects what is not an absolute http(s) URL") {
    CHECK_FALSE(parse(""));
    CHECK_FALSE(parse("/relative/path"));
    CHECK_FALSE(parse("example.com/dav"));
    CHECK_FALSE(parse("ftp://example.com/"));
    CHECK_FALSE(parse("mailto:alice@example.com"));
    CHECK_FALSE(parse("https:example.com"));
    CHECK_FALSE(parse("https:/example.com"));
    CHECK_FALSE(parse("https://"));
    CHECK_FALSE(parse("https:///path"));
    CHECK_FALSE(parse("https://exa mple.com/"));
    CHECK_FALSE(parse("https://example.com\r\nX-Injected: 1/"));
    CHECK_FALSE(parse("https://example.com/a\nb"));
    CHECK_FALSE(parse(std::string("https://example.com/\0x", 21)));
    CHECK_FALSE(parse("https://ex\\ample.com/"));
    CHECK_FALSE(parse("1http://example.com/"));
}

TEST_CASE("parse normalizes the path and encodes characters that may not appear raw") {
    CHECK(must_parse("https://h/a/./b/../c//d/").path == "/a/c/d/");
    CHECK(must_parse("https://h/../../etc/passwd").path == "/etc/passwd");
    CHECK(must_parse("https://h/a b/ü").path == "/a%20b/%C3%BC");
    CHECK(must_parse("https://h/a%20b/").path == "/a%20b/");  // already encoded: unchanged
    CHECK(must_parse("https://h/a\\..\\b").path == "/a%5C..%5Cb");
    CHECK(must_parse("  https://h/x  ").str() == "https://h/x");  // surrounding whitespace
    // str() parses back to the same URL.
    Url u = must_parse("https://[::1]:8443/a b/?q=1 2");
    Url again = must_parse(u.str());
    CHECK(again.str() == u.str());
    CHECK(again.query == "q=1%202");
}

TEST_CASE("resolve: absolute paths and absolute URLs") {
    const char* base = "https://dav.example.com/dav/calendars/alice/work/";
    CHECK(res(base, "/dav/calendars/alice/work/ev1.ics") == "https://dav.example.com/dav/calendars/alice/work/ev1.ics");
    CHECK(res(base, "/other/?x=1#f") == "https://dav.example.com/other/?x=1");
    CHECK(res(base, "https://other.example.org/dav/") == "https://other.example.org/dav/");
    CHECK(res(base, "HTTP://Other.example.org:8080") == "http://other.example.org:8080/");
    CHECK(res(base, "//cdn.example.net/p") == "https://cdn.example.net/p");
    CHECK(res(base, "ftp://example.com/") == "(none)");
    CHECK(res(base, "mailto:alice@example.com") == "(none)");
    CHECK(res(base, "/a\r\nb") == "(none)");
}

TEST_CASE("resolve: relative paths merge with the base directory") {
    const char* base = "https://h/dav/calendars/alice/work/?q=1";
    CHECK(res(base, "ev1.ics") == "https://h/dav/calendars/alice/work/ev1.ics");
    CHECK(res(base, "./ev1.ics") == "https://h/dav/calendars/alice/work/ev1.ics");
    CHECK(res(base, "../home/") == "https://h/dav/calendars/alice/home/");
    CHECK(res(base, "../../../../../../x") == "https://h/x");
    CHECK(res(base, "sub/item?a=b") == "https://h/dav/calendars/alice/work/sub/item?a=b");
    CHECK(res("https://h/dav/file.ics", "other.ics") == "https://h/dav/other.ics");
    CHECK(res("https://h/dav/file.ics", "..") == "https://h/");
    CHECK(res("https://h/dav/sub/file.ics", "..") == "https://h/dav/");
    CHECK(res("https://h/dav/sub/file.ics", ".") == "https://h/dav/sub/");
    CHECK(res("https://h", "a") == "https://h/a");
    // Empty reference: the base itself (without fragment); "?q" replaces the query only.
    CHECK(res(base, "") == "https://h/dav/calendars/alice/work/?q=1");
    CHECK(res(base, "?z=9") == "https://h/dav/calendars/alice/work/?z=9");
    CHECK(res(base, "#frag") == "https://h/dav/calendars/alice/work/?q=1");
    // The base's query never leaks into a path reference.
    CHECK(res(base, "/x") == "https://h/x");
    // Unencoded characters in hrefs are encoded.
    CHECK(res(base, "/dav/my event.ics") == "https://h/dav/my%20event.ics");
}

TEST_CASE("resolve never escapes the root") {
    Url base = must_parse("https://dav.example.com/dav/calendars/alice/");
    auto u = resolve(base, "/../../etc/passwd");
    REQUIRE(u);
    CHECK(u->path == "/etc/passwd");
    CHECK(u->str() == "https://dav.example.com/etc/passwd");
    CHECK(same_origin(*u, base));

    auto rel = resolve(base, "../../../../../../../../etc/passwd");
    REQUIRE(rel);
    CHECK(rel->path == "/etc/passwd");

    auto encoded = resolve(base, "/%2e%2e/%2E%2E/etc/passwd");
    REQUIRE(encoded);
    CHECK(encoded->path == "/etc/passwd");
}

TEST_CASE("same_origin detects references to another host, scheme or port") {
    Url base = must_parse("https://dav.example.com/dav/");
    CHECK(same_origin(base, *resolve(base, "/elsewhere/")));
    CHECK(same_origin(base, *resolve(base, "https://DAV.example.com:443/x")));
    CHECK_FALSE(same_origin(base, *resolve(base, "https://evil.example.net/dav/")));
    CHECK_FALSE(same_origin(base, *resolve(base, "//evil.example.net/dav/")));
    CHECK_FALSE(same_origin(base, *resolve(base, "http://dav.example.com/dav/")));
    CHECK_FALSE(same_origin(base, *resolve(base, "https://dav.example.com:8443/dav/")));
    // User info cannot disguise the host.
    auto tricky = resolve(base, "https://dav.example.com@evil.example.net/");
    REQUIRE(tricky);
    CHECK(tricky->host == "evil.example.net");
    CHECK_FALSE(same_origin(base, *tricky));
}

TEST_CASE("redact removes credentials and the query") {
    CHECK(redact("https://alice:s3cret@dav.example.com/cal/?token=abc#frag") == "https://dav.example.com/cal/");
    CHECK(redact("https://dav.example.com/cal/") == "https://dav.example.com/cal/");
    CHECK(redact("https://alice@dav.example.com") == "https://dav.example.com");
    CHECK(redact("https://a:p@ss@h/x") == "https://h/x");
    CHECK(redact("http://[::1]:8080/p?x") == "http://[::1]:8080/p");
    // '@' in the path is not user info.
    CHECK(redact("https://h/principals/alice@example.com/") == "https://h/principals/alice@example.com/");
    CHECK(redact("/dav/cal/?secret=1") == "/dav/cal/");
    CHECK(redact("//alice:pw@h/x?y") == "//h/x");
    CHECK(redact("alice:pw@h.example/dav") == "h.example/dav");
    // Text around a URL: one URL is expected, everything after its query goes.
    CHECK(redact("GET https://u:p@h/x?t=1 -> https://h2/y?z") == "GET https://h/x");
    // A URL inside the query is dropped with it, credentials and all.
    CHECK(redact("https://h/login?next=https://u:p@h2/") == "https://h/login");
    // Arbitrary strings do not throw.
    CHECK(redact("") == "");
    CHECK(redact("not a url") == "not a url");
    CHECK(redact("://") == "://");
    CHECK(redact("@@@") == "");
    CHECK(redact("https://") == "https://");
    CHECK(redact(std::string("\0https://u:p@h\0?x", 17)).find("u:p") == std::string::npos);
}

TEST_CASE("percent_decode and percent_encode_segment") {
    CHECK(percent_decode("a%20b%2Fc%2fd") == "a b/c/d");
    CHECK(percent_decode("%C3%BC") == "ü");
    CHECK(percent_decode("100%") == "100%");
    CHECK(percent_decode("%zz%4") == "%zz%4");
    CHECK(percent_decode("%%41") == "%A");
    CHECK(percent_decode("a+b") == "a+b");
    CHECK(percent_decode("") == "");

    CHECK(percent_encode_segment("AZaz09-._~") == "AZaz09-._~");
    CHECK(percent_encode_segment("a b/c") == "a%20b%2Fc");
    CHECK(percent_encode_segment("ü@%") == "%C3%BC%40%25");
    CHECK(percent_encode_segment("..") == "..");
    std::string all;
    for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
    CHECK(percent_decode(percent_encode_segment(all)) == all);
}

TEST_CASE("normalize_path") {
    CHECK(normalize_path("") == "/");
    CHECK(normalize_path("/") == "/");
    CHECK(normalize_path("//") == "/");
    CHECK(normalize_path("/a//b///c") == "/a/b/c");
    CHECK(normalize_path("/a/b/") == "/a/b/");
    CHECK(normalize_path("/a/./b/.") == "/a/b/");
    CHECK(normalize_path("/a/b/..") == "/a/");
    CHECK(normalize_path("/a/b/../c") == "/a/c");
    CHECK(normalize_path("/..") == "/");
    CHECK(normalize_path("/../../etc/passwd") == "/etc/passwd");
    CHECK(normalize_path("/a/../../../b/") == "/b/");
    CHECK(normalize_path("/a/%2e%2E/b") == "/b");
    CHECK(normalize_path("/a/.%2e/b") == "/b");
    CHECK(normalize_path("/a/.../b") == "/a/.../b");   // three dots is a name
    CHECK(normalize_path("/a/..b/c.") == "/a/..b/c.");
    CHECK(normalize_path("a/b") == "/a/b");
    for (const char* p : {"/x/../y//z/./", "/%2e%2e/a", "/a/b/c/../../..", "////"})
        CHECK(normalize_path(normalize_path(p)) == normalize_path(p));
}

TEST_CASE("last_segment") {
    CHECK(last_segment("/a/b/") == "b");
    CHECK(last_segment("/a/b") == "b");
    CHECK(last_segment("/dav/cal/my%20event.ics") == "my event.ics");
    CHECK(last_segment("/a/b//") == "b");
    CHECK(last_segment("/") == "");
    CHECK(last_segment("") == "");
    CHECK(last_segment("name") == "name");
    CHECK(last_segment("/subscriptions/io6Efei4ooph") == "io6Efei4ooph");
}

TEST_CASE("redirects: only within the origin; https to http and other hosts or ports are refused") {
    auto why = [](std::string_view from, std::string_view to) {
        return redirect_refusal(must_parse(from), must_parse(to)).value_or("(followed)");
    };
    CHECK(why("https://dav.example/.well-known/caldav", "https://dav.example/dav.php/") == "(followed)");
    CHECK(why("https://dav.example/", "https://DAV.example:443/x") == "(followed)");
    CHECK(why("https://dav.example/", "http://dav.example/x") == "from https to plain http");
    CHECK(why("https://dav.example/", "https://evil.example/x") == "another origin than https://dav.example");
    CHECK(why("https://dav.example/", "https://dav.example:8443/x") == "another origin than https://dav.example");
    CHECK(why("http://dav.example/", "https://dav.example/x") == "another origin than http://dav.example");
}

TEST_CASE("origin_of and is_loopback") {
    CHECK(origin_of("https://user:pw@Dav.Example:443/a/b?q") == "https://dav.example");
    CHECK(origin_of("http://[::1]:8080/x") == "http://[::1]:8080");
    CHECK_FALSE(origin_of("ftp://x/"));
    CHECK_FALSE(origin_of("/relative"));
    for (const char* u : {"http://127.0.0.1:8080/push/x", "http://127.1.2.3/", "http://localhost:9/", "http://[::1]/"}) {
        CAPTURE(u);
        CHECK(is_loopback(must_parse(u)));
    }
    for (const char* u : {"http://127.evil.example/", "http://127.0.0.1.evil.example/", "http://128.0.0.1/",
                          "http://localhost.evil.example/", "http://[::2]/", "http://127.0.0.256/", "http://example.org/"}) {
        CAPTURE(u);
        CHECK_FALSE(is_loopback(must_parse(u)));
    }
}

}  // TEST_SUITE
