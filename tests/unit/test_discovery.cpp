// Discovery against fake servers laid out like Baïkal and Nextcloud
// (fake_layouts.hpp): from every URL a user may paste, through HTML pages,
// redirects and refusals, to the calendars and address books.
#include <doctest/doctest.h>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/commands.hpp"
#include "capture.hpp"
#include "dav/discovery.hpp"
#include "fake_layouts.hpp"

using namespace davsyncd;
using namespace davsyncd::dav;
using testing::CannedResponse;
using testing::FakeDavLayout;

namespace {

ClientOptions alice(const std::string& password = testing::kPassword) {
    ClientOptions o;
    o.username = testing::kUser;
    o.password = password;
    return o;
}

std::vector<std::string> urls(const DiscoveryResult& r) {
    std::vector<std::string> out;
    for (const auto& c : r.collections) out.push_back(c.url);
    return out;
}

const CollectionInfo& by_url(const DiscoveryResult& r, const std::string& url) {
    auto it = std::find_if(r.collections.begin(), r.collections.end(), [&](const auto& c) { return c.url == url; });
    REQUIRE(it != r.collections.end());
    return *it;
}

bool asked(const FakeDavLayout& s, const std::string& path) {
    for (const auto& r : s.requests())
        if (r.target == path) return true;
    return false;
}

std::vector<std::string> baikal_collections(const FakeDavLayout& s) {
    return {s.url("/dav.php/addressbooks/alice/default/"), s.url("/dav.php/calendars/alice/default/")};
}

}  // namespace

TEST_SUITE("discovery") {

TEST_CASE("Baïkal: from the server root, past its HTML page, through /.well-known/caldav to /dav.php/") {
    FakeDavLayout server;
    testing::baikal_layout(server);
    HttpClient http(alice());
    auto r = discover(http, server.url("/"));

    CHECK(r.principal_url == server.url("/dav.php/principals/alice/"));
    CHECK(r.calendar_homes == std::vector<std::string>{server.url("/dav.php/calendars/alice/")});
    CHECK(r.addressbook_homes == std::vector<std::string>{server.url("/dav.php/addressbooks/alice/")});
    CHECK(urls(r) == baikal_collections(server));  // not the home, the inbox or the outbox

    const auto& cal = by_url(r, server.url("/dav.php/calendars/alice/default/"));
    CHECK(cal.kind == CollectionKind::calendar);
    CHECK(cal.display_name == "Default calendar");
    CHECK(cal.components == std::vector<std::string>{"VEVENT", "VTODO"});
    CHECK(cal.supports_sync_collection);
    CHECK_FALSE(cal.read_only);
    CHECK_FALSE(r.server_advertises_push);

    // The 301 is followed within the same request; one PROPFIND per home.
    CHECK(server.conversation() == std::vector<std::string>{
                                       "PROPFIND / 0",
                                       "PROPFIND /.well-known/caldav 0",
                                       "PROPFIND /dav.php/ 0",
                                       "PROPFIND /dav.php/principals/alice/ 0",
                                       "PROPFIND /dav.php/calendars/alice/ 1",
                                       "PROPFIND /dav.php/addressbooks/alice/ 1",
                                       "OPTIONS /dav.php/calendars/alice/",
                                   });
}

TEST_CASE("Baïkal: every URL a user may paste leads to the same collections") {
    for (const char* pasted : {"/dav.php", "/dav.php/", "/dav.php/principals/alice/", "/dav.php/calendars/alice/",
                               "/dav.php/calendars/alice/default/"}) {
        CAPTURE(pasted);
        FakeDavLayout server;
        testing::baikal_layout(server);
        HttpClient http(alice());
        auto r = discover(http, server.url(pasted));
        CHECK(urls(r) == baikal_collections(server));
        CHECK(r.principal_url == server.url("/dav.php/principals/alice/"));
        // A URL that answers WebDAV with a principal needs no well-known URI.
        CHECK_FALSE(asked(server, "/.well-known/caldav"));
    }
}

TEST_CASE("Nextcloud: from the root, /remote.php/dav or the principal; birthdays and system contacts are read-only") {
    for (const char* pasted : {"/", "/remote.php/dav", "/remote.php/dav/principals/users/alice/"}) {
        CAPTURE(pasted);
        FakeDavLayout server;
        testing::nextcloud_layout(server);
        HttpClient http(alice());
        auto r = discover(http, server.url(pasted));
        CHECK(urls(r) == std::vector<std::string>{
                             server.url("/remote.php/dav/addressbooks/users/alice/contacts/"),
                             server.url("/remote.php/dav/addressbooks/users/alice/z-server-generated--system/"),
                             server.url("/remote.php/dav/calendars/alice/contact_birthdays/"),
                             server.url("/remote.php/dav/calendars/alice/personal/"),
                         });
        CHECK_FALSE(by_url(r, server.url("/remote.php/dav/calendars/alice/personal/")).read_only);
        CHECK_FALSE(by_url(r, server.url("/remote.php/dav/addressbooks/users/alice/contacts/")).read_only);
        CHECK(by_url(r, server.url("/remote.php/dav/calendars/alice/contact_birthdays/")).read_only);  // read and write-properties: no writing events
        CHECK(by_url(r, server.url("/remote.php/dav/addressbooks/users/alice/z-server-generated--system/")).read_only);
        CHECK(asked(server, "/.well-known/caldav") == (std::string(pasted) == "/"));
    }
}

TEST_CASE("whatever the pasted URL answers, discovery goes on to /.well-known") {
    struct Case {
        const char* what;
        CannedResponse answer;
    };
    std::vector<Case> cases = {
        {"an HTML page", testing::html_page(200, "Welcome", "Hello")},
        {"a proxy's 401 without DAV",
         {401, {{"WWW-Authenticate", "Basic realm=\"intranet\""}, {"Content-Type", "text/html"}},
          "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
          "<center><h1>401 Authorization Required</h1></center>\r\n</body>\r\n</html>\r\n"}},
        {"403", {403, {{"Content-Type", "text/plain"}}, "Directory listings are not supported."}},
        {"404", {404, {{"Content-Type", "text/plain"}}, "The requested resource could not be found."}},
        {"405", {405, {{"Allow", "GET, HEAD"}}, ""}},
        {"a 500 at the root",
         {500, {{"Content-Type", "text/plain"}}, "A server error occurred.  Please contact the administrator."}},
        {"207 with a broken body", {207, {{"Content-Type", "application/xml"}}, "<d:multistatus xmlns:d=\"DAV:\">"}},
    };
    for (const auto& c : cases) {
        CAPTURE(c.what);
        FakeDavLayout server;
        testing::baikal_layout(server);
        server.override_path("/", c.answer);
        HttpClient http(alice());
        auto r = discover(http, server.url("/"));
        CHECK(urls(r) == baikal_collections(server));
        CHECK(asked(server, "/.well-known/caldav"));
    }
}

TEST_CASE("nothing found: the error lists every URL tried and what each answered") {
    FakeDavLayout server;
    testing::baikal_layout(server);
    server.override_path("/.well-known/caldav", {404, {{"Content-Type", "text/plain"}}, "No such file"});
    server.override_path("/.well-known/carddav", testing::moved_to(server.url("/nowhere/")));
    server.override_path("/nowhere/", testing::html_page(404, "404 Not Found", "Not here"));
    HttpClient http(alice());
    try {
        discover(http, server.url("/"));
        FAIL("no exception");
    } catch (const DiscoveryError& e) {
        std::string what = e.what();
        CAPTURE(what);
        CHECK(what.starts_with(server.url("/") + ": no CalDAV or CardDAV service found; tried "));
        CHECK(what.find(server.url("/") + " (HTTP 200 with an HTML page: Baïkal Server)") !=
              std::string::npos);
        CHECK(what.find(server.url("/.well-known/caldav") + " (HTTP 404: No such file)") != std::string::npos);
        CHECK(what.find(server.url("/.well-known/carddav") + " -> " + server.url("/nowhere/") +
                        " (HTTP 404 with an HTML page: 404 Not Found)") != std::string::npos);
    }
}

TEST_CASE("a refused password is an authentication failure, whichever URLs refused it") {
    SUBCASE("Nextcloud: its web page at the root needs no password, its DAV root refuses") {
        FakeDavLayout server;
        testing::nextcloud_layout(server);
        HttpClient http(alice("wrong-password"));
        try {
            discover(http, server.url("/"));
            FAIL("no exception");
        } catch (const RemoteError& e) {
            CHECK(e.status == 401);
            CHECK(e.auth_failed());
            std::string what = e.what();
            CAPTURE(what);
            CHECK(what.find("authentication failed") != std::string::npos);
            CHECK(what.find(server.url("/.well-known/caldav") + " -> " + server.url("/remote.php/dav/") +
                            " (HTTP 401: No public access to this resource.") != std::string::npos);
            CHECK(what.find("wrong-password") == std::string::npos);
        }
    }
    SUBCASE("Baïkal from /dav.php/: every URL refuses") {
        FakeDavLayout server;
        testing::baikal_layout(server);
        server.override_path("/", {401, {{"WWW-Authenticate", "Basic realm=\"BaikalDAV\""}}, ""});
        HttpClient http(alice("wrong-password"));
        auto what = testing::error_of([&] { discover(http, server.url("/dav.php/")); });
        CHECK(what.find("authentication failed (HTTP 401)") != std::string::npos);
        try {
            discover(http, server.url("/dav.php/"));
        } catch (const RemoteError& e) {
            CHECK(e.status == 401);
        }
    }
}

TEST_CASE("a server that is down stays retryable, with its Retry-After") {
    FakeDavLayout server;
    CannedResponse down{503, {{"Retry-After", "120"}, {"Content-Type", "text/plain"}}, "Service Unavailable"};
    server.override_path("/", {401, {{"WWW-Authenticate", "Basic realm=\"x\""}}, ""});
    server.override_path("/.well-known/caldav", down);
    server.override_path("/.well-known/carddav", down);
    HttpClient http(alice());
    try {
        discover(http, server.url("/"));
        FAIL("no exception");
    } catch (const RemoteError& e) {
        CHECK(e.status == 503);  // not an authentication failure: the 401 may come from a proxy in front
        REQUIRE(e.retry_after);
        CHECK(e.retry_after->count() == 120);
        CHECK(std::string(e.what()).find("no CalDAV or CardDAV service found") != std::string::npos);
    }
}

TEST_CASE("the collection PROPFIND asks for the privilege set, never for the sync-token or the ctag") {
    FakeDavLayout server;
    testing::nextcloud_layout(server);
    HttpClient http(alice());
    discover(http, server.url("/remote.php/dav/"));
    int depth1 = 0;
    for (const auto& r : server.requests()) {
        if (r.method != "PROPFIND" || r.header("Depth") != "1") continue;
        ++depth1;
        CAPTURE(r.body);
        CHECK(r.body.find("sync-token") == std::string::npos);
        CHECK(r.body.find("getctag") == std::string::npos);
        CHECK(r.body.find("<D:current-user-privilege-set/>") != std::string::npos);
        CHECK(r.body.find("<D:resourcetype/>") != std::string::npos);
        CHECK(r.body.find("<D:supported-report-set/>") != std::string::npos);
    }
    CHECK(depth1 == 2);
}

TEST_CASE("read-only comes from DAV:current-user-privilege-set") {
    // Radicale 3.1.8 (recorded): "rR" rights give read alone, "rw" these five.
    const std::string radicale_ro = "<current-user-privilege-set><privilege><read /></privilege></current-user-privilege-set>";
    const std::string radicale_rw =
        "<current-user-privilege-set><privilege><read /></privilege><privilege><all /></privilege><privilege><write />"
        "</privilege><privilege><write-properties /></privilege><privilege><write-content /></privilege>"
        "</current-user-privilege-set>";
    auto radicale = [](const std::string& privileges) {
        return CannedResponse{
            207, {{"Content-Type", "text/xml; charset=utf-8"}},
            "<?xml version='1.0' encoding='utf-8'?>\n<multistatus xmlns=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">"
            "<response><href>/alice/cal/</href><propstat><prop><resourcetype><C:calendar /><collection /></resourcetype>" +
                privileges + "</prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"};
    };
    auto privileges = [](const std::string& inner) {
        return "<d:current-user-privilege-set>" + inner + "</d:current-user-privilege-set>";
    };
    auto one = [](const std::string& p) { return "<d:privilege>" + p + "</d:privilege>"; };
    auto sabre = [](const std::string& found, const std::string& missing = "") {
        return testing::sabre_multistatus({testing::dav_response(
            "/alice/cal/", "<d:resourcetype><d:collection/><cal:calendar/></d:resourcetype>" + found, missing)});
    };
    struct Case {
        const char* what;
        CannedResponse answer;
        bool read_only;
    };
    std::vector<Case> cases = {
        {"Radicale, rR", radicale(radicale_ro), true},
        {"Radicale, rw", radicale(radicale_rw), false},
        {"absent (404 propstat)", sabre("", "<d:current-user-privilege-set/>"), false},
        {"not reported at all", sabre(""), false},
        {"read", sabre(privileges(one("<d:read/>"))), true},
        {"read and write-properties", sabre(privileges(one("<d:read/>") + one("<d:write-properties/>"))), true},
        {"an empty set", sabre(privileges("")), true},
        {"write-content", sabre(privileges(one("<d:read/>") + one("<d:write-content/>"))), false},
        {"bind", sabre(privileges(one("<d:read/>") + one("<d:bind/>"))), false},
        {"write", sabre(privileges(one("<d:write/>"))), false},
        {"all (Xandikos)", sabre(privileges(one("<d:all/>"))), false},
        {"a foreign 'write'", sabre(privileges(one("<cal:read-free-busy/>") + one("<x:write xmlns:x=\"urn:x\"/>"))), true},
    };
    for (const auto& c : cases) {
        CAPTURE(c.what);
        FakeDavLayout server;
        server.on("PROPFIND", "/alice/cal/", "0", c.answer);
        HttpClient http(alice());
        CHECK(read_collection(http, server.url("/alice/cal/")).read_only == c.read_only);
    }
}

TEST_CASE("an over-long display name, colour or description is left out; the collection stays") {
    const std::string huge(5000, 'N');
    FakeDavLayout server;
    server.on("PROPFIND", "/alice/cal/", "0",
              testing::sabre_multistatus({testing::dav_response(
                                 "/alice/cal/", "<d:resourcetype><d:collection/><cal:calendar/></d:resourcetype>"
                                                "<d:displayname>" + huge + "</d:displayname>"
                                                "<x:calendar-color xmlns:x=\"http://apple.com/ns/ical/\">#" + huge +
                                                "</x:calendar-color>"
                                                "<cal:calendar-description>" + std::string(70 * 1024, 'D') +
                                                "</cal:calendar-description>")}));
    HttpClient http(alice());
    testing::StderrCapture log;
    auto c = read_collection(http, server.url("/alice/cal/"));
    CHECK(c.url == server.url("/alice/cal/"));
    CHECK(c.display_name.empty());
    CHECK(c.color.empty());
    CHECK(c.description.empty());
    CHECK(log.text().find("text of <d:displayname> is longer than 4096 bytes; left out") != std::string::npos);
}

TEST_CASE("without a principal, the URL that answers is the one collection, or the home of several") {
    auto calendar = testing::sabre_multistatus({testing::dav_response(
        "/cal/", testing::calendar_props("Work", "VEVENT", testing::kReadPrivileges), "<d:current-user-principal/>")});
    SUBCASE("a calendar is read alone, without listing its items") {
        FakeDavLayout server;
        server.on("PROPFIND", "/cal/", "0", calendar);
        HttpClient http(alice());
        auto r = discover(http, server.url("/cal/"));
        CHECK(r.principal_url.empty());
        CHECK(urls(r) == std::vector<std::string>{server.url("/cal/")});
        CHECK(r.collections[0].read_only);
        CHECK(server.conversation() == std::vector<std::string>{
                                           "PROPFIND /cal/ 0",
                                           "PROPFIND /.well-known/caldav 0",
                                           "PROPFIND /.well-known/carddav 0",
                                           "PROPFIND /cal/ 0",
                                           "OPTIONS /cal/",
                                       });
    }
    SUBCASE("a plain collection is the home") {
        FakeDavLayout server;
        server.on("PROPFIND", "/home/", "0",
                  testing::sabre_multistatus({testing::dav_response(
                      "/home/", "<d:resourcetype><d:collection/></d:resourcetype>", "<d:current-user-principal/>")}));
        server.on("PROPFIND", "/home/", "1",
                  testing::sabre_multistatus(
                      {testing::dav_response("/home/", "<d:resourcetype><d:collection/></d:resourcetype>"),
                       testing::dav_response("/home/work/", testing::calendar_props("Work", "VEVENT", testing::kOwnerPrivileges))}));
        HttpClient http(alice());
        auto r = discover(http, server.url("/home/"));
        CHECK(urls(r) == std::vector<std::string>{server.url("/home/work/")});
        CHECK_FALSE(r.collections[0].read_only);
    }
}

TEST_CASE("the JSON cache keeps read_only and reads old caches that still hold a token and a ctag") {
    CollectionInfo c;
    c.href = Href("/dav.php/calendars/alice/default/");
    c.url = "http://h/dav.php/calendars/alice/default/";
    c.id = "default";
    c.read_only = true;
    auto j = to_json(c);
    CHECK(j.at("read_only") == true);
    CHECK_FALSE(j.contains("sync_token"));
    CHECK_FALSE(j.contains("ctag"));
    CHECK(collection_from_json(j).read_only);

    auto old = nlohmann::json::parse(R"({"href": "/alice/work/", "url": "http://h/alice/work/", "id": "work",
        "displayname": "Work", "kind": "calendar", "sync_collection": true,
        "sync_token": "http://radicale.org/ns/sync/abc", "ctag": "\"abc\""})");
    auto back = collection_from_json(old);
    CHECK(back.display_name == "Work");
    CHECK(back.supports_sync_collection);
    CHECK_FALSE(back.read_only);  // caches from before read-only were written: writable, as before
}

TEST_CASE("rediscovery asks each known home once, and nothing else") {
    FakeDavLayout server;
    testing::baikal_layout(server);
    HttpClient http(alice());
    auto first = discover(http, server.url("/"));
    auto before = server.requests().size();
    auto again = rediscover_homes(http, first);
    REQUIRE(again.has_value());
    CHECK(urls(*again) == baikal_collections(server));
    CHECK(again->principal_url == first.principal_url);
    std::vector<std::string> asked_now;
    auto all = server.requests();
    for (size_t i = before; i < all.size(); ++i) asked_now.push_back(all[i].method + " " + all[i].target + " " + all[i].header("Depth"));
    CHECK(asked_now == std::vector<std::string>{"PROPFIND /dav.php/calendars/alice/ 1", "PROPFIND /dav.php/addressbooks/alice/ 1"});

    SUBCASE("without homes (one collection pasted) a full discovery is due") {
        DiscoveryResult bare = first;
        bare.calendar_homes.clear();
        bare.addressbook_homes.clear();
        CHECK_FALSE(rediscover_homes(http, bare).has_value());
    }
    SUBCASE("a home that moved (404) means discovering from the start") {
        DiscoveryResult moved = first;
        moved.calendar_homes = {server.url("/dav.php/calendars/bob/")};
        CHECK_FALSE(rediscover_homes(http, moved).has_value());
    }
    SUBCASE("the JSON cache round-trips the homes") {
        auto back = discovery_from_json(to_json(first));
        CHECK(back.calendar_homes == first.calendar_homes);
        CHECK(back.addressbook_homes == first.addressbook_homes);
        CHECK(urls(back) == urls(first));
    }
}

namespace {

// A server whose well-known URIs send the client to `elsewhere`'s DAV root,
// and whose own root is a web page: a compromised or misconfigured front.
void redirects_to(FakeDavLayout& s, const FakeDavLayout& elsewhere) {
    s.override_path("/", testing::html_page(200, "Welcome", "Hello"));
    s.override_path("/.well-known/caldav", testing::moved_to(elsewhere.url("/dav.php/")));
    s.override_path("/.well-known/carddav", testing::moved_to(elsewhere.url("/dav.php/")));
}

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "davsyncd-discovery-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

}  // namespace

TEST_CASE("a redirect to another origin during discovery is refused and named; that origin gets nothing") {
    FakeDavLayout other;
    testing::baikal_layout(other);  // a complete server, to show nothing reaches it
    FakeDavLayout server;
    redirects_to(server, other);
    HttpClient http(alice());
    try {
        discover(http, server.url("/"));
        FAIL("no exception");
    } catch (const DiscoveryError& e) {
        std::string what = e.what();
        CAPTURE(what);
        CHECK(what.find("no CalDAV or CardDAV service found") != std::string::npos);
        CHECK(what.find(server.url("/.well-known/caldav") + " -> " + other.url("/dav.php/") + " (redirect refused, another origin than " +
                        server.url("/").substr(0, server.url("/").size() - 1)) != std::string::npos);
        CHECK(what.find("nothing was sent there") != std::string::npos);
    }
    CHECK(other.requests().empty());
}

TEST_CASE("the configured URL itself redirecting to another origin is refused too") {
    FakeDavLayout other;
    testing::baikal_layout(other);
    FakeDavLayout server;
    server.override_path("/dav/", testing::moved_to(other.url("/dav.php/")));
    HttpClient http(alice());
    auto what = testing::error_of([&] { discover(http, server.url("/dav/")); });
    CAPTURE(what);
    CHECK(what.find(server.url("/dav/") + " -> " + other.url("/dav.php/") + " (redirect refused") != std::string::npos);
    CHECK(other.requests().empty());
}

TEST_CASE("davsyncd --discover against a server redirecting to another origin says so and sends it nothing") {
    FakeDavLayout other;
    testing::baikal_layout(other);
    FakeDavLayout server;
    redirects_to(server, other);
    TempDir dir;
    config::Config cfg;
    cfg.state_dir = dir.path / "state";
    cfg.data_dir = dir.path / "data";
    config::Account account;
    account.id = "personal";
    account.url = server.url("/");
    account.username = testing::kUser;
    account.password = testing::kPassword;
    account.local_root = cfg.data_dir / "personal";
    cfg.accounts.push_back(account);

    std::ostringstream out;
    int status = 0;
    std::string log;
    {
        testing::StderrCapture capture;
        status = app::discover(cfg, "", false, out);
        log = capture.text();
    }
    CAPTURE(log);
    CHECK(status == 1);
    CHECK(out.str().empty());
    CHECK(log.find("account 'personal': discovery failed") != std::string::npos);
    CHECK(log.find(other.url("/dav.php/")) != std::string::npos);
    CHECK(log.find("redirect refused") != std::string::npos);
    CHECK(log.find(testing::kPassword) == std::string::npos);
    CHECK(other.requests().empty());
}

TEST_CASE("same-origin redirects still lead to the service (Nextcloud's well-known URIs)") {
    FakeDavLayout server;
    testing::nextcloud_layout(server);
    HttpClient http(alice());
    auto r = discover(http, server.url("/"));
    CHECK(r.collections.size() == 4);
    CHECK(asked(server, "/.well-known/caldav"));
    for (const auto& c : r.collections) CHECK(c.url.starts_with(server.url("/remote.php/dav/")));
}

TEST_CASE("a gzip bomb answering discovery is refused with a clear error, in bounded memory") {
    // The issue's case: 8 MB of <a/> (2 million elements), 51 KB on the wire.
    FakeDavLayout server;
    testing::CannedResponse bomb{207,
                                 {{"Content-Type", "application/xml"}, {"Content-Encoding", "gzip"}},
                                 testing::gzip_repeated("<a/>", 8u << 20)};
    server.override_path("/", bomb);
    server.override_path("/.well-known/caldav", bomb);
    server.override_path("/.well-known/carddav", bomb);
    HttpClient http(alice());
    REQUIRE(testing::reset_peak_rss());
    long before = testing::proc_status_kib("VmHWM");
    auto what = testing::error_of([&] { discover(http, server.url("/")); });
    long grown_mib = (testing::proc_status_kib("VmHWM") - before) / 1024;
    CAPTURE(what);
    CAPTURE(grown_mib);
    CHECK(what.find("XML document refused: more than 1000000 nodes") != std::string::npos);
    // The 8 MiB body, never a tree of it (that took 568 MB). Past 1 MiB a
    // body reserves the 64 MiB cap, which only MALLOC_PERTURB_ (set by
    // meson test) makes resident at once.
    CHECK(grown_mib < 80);
}

TEST_CASE("scheduling mailboxes the principal names are not synced, even typed as plain calendars (DAViCal)") {
    FakeDavLayout s;
    const std::string principal = "/caldav.php/alice/";
    s.on("PROPFIND", principal, "0",
         testing::sabre_multistatus({testing::dav_response(
             principal,
             "<d:current-user-principal><d:href>" + principal + "</d:href></d:current-user-principal>"
             "<d:resourcetype><d:principal/><d:collection/></d:resourcetype>"
             "<cal:calendar-home-set><d:href>" + principal + "</d:href></cal:calendar-home-set>"
             "<cal:schedule-inbox-URL><d:href>" + principal + ".in/</d:href></cal:schedule-inbox-URL>"
             "<cal:schedule-outbox-URL><d:href>" + principal + ".out/</d:href></cal:schedule-outbox-URL>")}));
    s.on("PROPFIND", principal, "1",
         testing::sabre_multistatus({
             testing::dav_response(principal + "calendar/", testing::calendar_props("Calendar", "VEVENT", testing::kOwnerPrivileges)),
             testing::dav_response(principal + ".in/", testing::calendar_props("", "VEVENT", testing::kOwnerPrivileges)),
             testing::dav_response(principal + ".out/", testing::calendar_props("", "VEVENT", testing::kOwnerPrivileges)),
         }));
    HttpClient http(alice());
    auto r = discover(http, s.url(principal));
    CHECK(urls(r) == std::vector<std::string>{s.url(principal + "calendar/")});
    auto again = rediscover_homes(http, discovery_from_json(to_json(r)));
    REQUIRE(again.has_value());
    CHECK(urls(*again) == std::vector<std::string>{s.url(principal + "calendar/")});
}

}  // TEST_SUITE
