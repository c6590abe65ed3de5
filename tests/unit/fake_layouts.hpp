// Fake servers shaped like the ones whose URLs users paste into the
// configuration, for discovery tests: Baïkal (DAV under /dav.php/, an HTML
// page at /) and Nextcloud (DAV under /remote.php/dav/, an HTML page at /),
// each with /.well-known/caldav and /.well-known/carddav answering 301 to
// the DAV root, a principal, two homes, a calendar and an address book.
//
// The bodies are written by hand from SabreDAV 4.x's serializer (both
// servers run it): "d:" for DAV:, "cal:" and "card:" for CalDAV and
// CardDAV, privileges flattened as Sabre's ACL plugin reports them, and
// Sabre's DAV:error bodies for 401 and 404. Nextcloud's read-only birthday
// calendar and system address book come from its source (Calendar::getACL,
// SystemAddressbook). Routes are matched on method, path and Depth; one
// path can be overridden for every method (a 500 at the root, a proxy's 401).
//
// The server thread calls the handler; tests read requests() afterwards.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "fake_http_server.hpp"

namespace testing {

inline constexpr const char* kUser = "alice";
inline constexpr const char* kPassword = "secret";

// One multistatus response: properties found (200) and properties missing (404).
inline std::string dav_response(const std::string& href, const std::string& found, const std::string& missing = "") {
    std::string out = "<d:response><d:href>" + href + "</d:href>";
    if (!found.empty()) out += "<d:propstat><d:prop>" + found + "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>";
    if (!missing.empty())
        out += "<d:propstat><d:prop>" + missing + "</d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>";
    return out + "</d:response>";
}

inline CannedResponse sabre_multistatus(const std::vector<std::string>& responses) {
    std::string body =
        "<?xml version=\"1.0\"?>\n<d:multistatus xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\""
        " xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" xmlns:cs=\"http://calendarserver.org/ns/\""
        " xmlns:card=\"urn:ietf:params:xml:ns:carddav\" xmlns:x1=\"http://apple.com/ns/ical/\">";
    for (const auto& r : responses) body += r;
    body += "</d:multistatus>\n";
    return {207, {{"Content-Type", "application/xml; charset=utf-8"}, {"DAV", "1, 3, extended-mkcol, access-control, calendar-access, addressbook, sync-collection"}}, body};
}

inline CannedResponse sabre_error(int status, const std::string& exception, const std::string& message,
                                  std::vector<std::pair<std::string, std::string>> headers = {}) {
    headers.emplace_back("Content-Type", "application/xml; charset=utf-8");
    return {status, std::move(headers),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" xmlns:s=\"http://sabredav.org/ns\">\n"
            "  <s:exception>" + exception + "</s:exception>\n  <s:message>" + message + "</s:message>\n</d:error>\n"};
}

inline CannedResponse moved_to(const std::string& location) {
    return {301, {{"Location", location}, {"Content-Type", "text/html; charset=iso-8859-1"}},
            "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>301 Moved Permanently</title>\n"
            "</head><body>\n<h1>Moved Permanently</h1>\n</body></html>\n"};
}

inline CannedResponse html_page(int status, const std::string& title, const std::string& body_text) {
    return {status, {{"Content-Type", "text/html; charset=UTF-8"}},
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + title +
                "</title>\n<script>var x = '<b>';</script>\n</head>\n<body>\n<p>" + body_text + "</p>\n</body>\n</html>\n"};
}

// Privileges of the owner of a collection, flattened as Sabre reports them.
inline const std::string kOwnerPrivileges =
    "<d:current-user-privilege-set><d:privilege><d:write/></d:privilege><d:privilege><d:write-acl/></d:privilege>"
    "<d:privilege><d:write-properties/></d:privilege><d:privilege><d:write-content/></d:privilege>"
    "<d:privilege><d:bind/></d:privilege><d:privilege><d:unbind/></d:privilege><d:privilege><d:unlock/></d:privilege>"
    "<d:privilege><d:read/></d:privilege><d:privilege><d:read-acl/></d:privilege>"
    "<d:privilege><d:read-current-user-privilege-set/></d:privilege><d:privilege><cal:read-free-busy/></d:privilege>"
    "</d:current-user-privilege-set>";
// Nextcloud's birthday calendar: read, and write-properties for the colour.
inline const std::string kBirthdayPrivileges =
    "<d:current-user-privilege-set><d:privilege><d:write-properties/></d:privilege><d:privilege><d:read/></d:privilege>"
    "<d:privilege><d:read-acl/></d:privilege><d:privilege><d:read-current-user-privilege-set/></d:privilege>"
    "<d:privilege><cal:read-free-busy/></d:privilege></d:current-user-privilege-set>";
inline const std::string kReadPrivileges =
    "<d:current-user-privilege-set><d:privilege><d:read/></d:privilege><d:privilege><d:read-acl/></d:privilege>"
    "<d:privilege><d:read-current-user-privilege-set/></d:privilege></d:current-user-privilege-set>";

inline const std::string kSyncReports =
    "<d:supported-report-set><d:supported-report><d:report><d:expand-property/></d:report></d:supported-report>"
    "<d:supported-report><d:report><d:sync-collection/></d:report></d:supported-report></d:supported-report-set>";

inline std::string calendar_props(const std::string& name, const std::string& components, const std::string& privileges) {
    std::string comps;
    for (size_t a = 0; a < components.size();) {
        size_t b = components.find(',', a);
        if (b == std::string::npos) b = components.size();
        comps += "<cal:comp name=\"" + components.substr(a, b - a) + "\"/>";
        a = b + 1;
    }
    return "<d:resourcetype><d:collection/><cal:calendar/></d:resourcetype><d:displayname>" + name +
           "</d:displayname><x1:calendar-color>#0082c9</x1:calendar-color><cal:supported-calendar-component-set>" + comps +
           "</cal:supported-calendar-component-set>" + kSyncReports + privileges;
}

inline std::string addressbook_props(const std::string& name, const std::string& privileges) {
    return "<d:resourcetype><d:collection/><card:addressbook/></d:resourcetype><d:displayname>" + name +
           "</d:displayname>" + kSyncReports + privileges;
}

// What the collection PROPFIND asks for and a plain collection lacks.
inline const std::string kMissingCollectionProps =
    "<d:displayname/><x1:calendar-color/><cal:calendar-description/><card:addressbook-description/>"
    "<cal:supported-calendar-component-set/>";

class FakeDavLayout {
public:
    FakeDavLayout() { server_.set_handler([this](const RecordedRequest& r) { return handle(r); }); }

    std::string url(const std::string& path = "/") const { return server_.url(path); }
    std::vector<RecordedRequest> requests() const { return server_.requests(); }
    // "PROPFIND /dav.php/ 0" per request, to compare whole conversations.
    std::vector<std::string> conversation() const {
        std::vector<std::string> out;
        for (const auto& r : server_.requests()) {
            std::string depth = r.header("Depth");
            out.push_back(r.method + " " + r.target + (depth.empty() ? "" : " " + depth));
        }
        return out;
    }

    // depth "" matches any Depth (and none).
    void on(const std::string& method, const std::string& path, const std::string& depth, CannedResponse r) {
        std::lock_guard l(mu_);
        routes_[{method, path, depth}] = std::move(r);
    }
    // Every method on `path`, before any route and before authentication
    // (a web page, a proxy in front of the server).
    void override_path(const std::string& path, CannedResponse r) {
        std::lock_guard l(mu_);
        overrides_[path] = std::move(r);
    }
    // Requests whose Authorization is not Basic alice:secret get `refusal`.
    void require_auth(CannedResponse refusal) {
        std::lock_guard l(mu_);
        refusal_ = std::move(refusal);
        auth_required_ = true;
    }
    void set_not_found(CannedResponse r) {
        std::lock_guard l(mu_);
        not_found_ = std::move(r);
    }

private:
    CannedResponse handle(const RecordedRequest& r) {
        std::lock_guard l(mu_);
        if (auto o = overrides_.find(r.target); o != overrides_.end()) return o->second;
        if (auth_required_ && r.header("Authorization") != "Basic YWxpY2U6c2VjcmV0") return refusal_;  // alice:secret
        std::string depth = r.header("Depth");
        if (auto it = routes_.find({r.method, r.target, depth}); it != routes_.end()) return it->second;
        if (auto it = routes_.find({r.method, r.target, ""}); it != routes_.end()) return it->second;
        return not_found_;
    }

    FakeHttpServer server_;
    std::mutex mu_;
    std::map<std::tuple<std::string, std::string, std::string>, CannedResponse> routes_;
    std::map<std::string, CannedResponse> overrides_;
    CannedResponse refusal_;
    bool auth_required_ = false;
    CannedResponse not_found_{404, {}, ""};
};

// Baïkal 0.9 (SabreDAV 4.x, Basic auth configured): DAV under /dav.php/,
// its "running alright" page at /, well-known redirects as its docs set them up.
inline void baikal_layout(FakeDavLayout& s) {
    s.override_path("/", html_page(200, "Baïkal Server", "Baïkal is running alright."));
    s.override_path("/.well-known/caldav", moved_to(s.url("/dav.php/")));
    s.override_path("/.well-known/carddav", moved_to(s.url("/dav.php/")));
    s.require_auth(sabre_error(401, "Sabre\\DAV\\Exception\\NotAuthenticated", "Username or password was incorrect",
                               {{"WWW-Authenticate", "Basic realm=\"BaikalDAV\""}}));
    s.set_not_found(sabre_error(404, "Sabre\\DAV\\Exception\\NotFound", "Could not find node"));

    const std::string principal = "/dav.php/principals/alice/";
    auto root = sabre_multistatus({dav_response(
        "/dav.php/",
        "<d:current-user-principal><d:href>" + principal + "</d:href></d:current-user-principal>"
        "<d:resourcetype><d:collection/></d:resourcetype>",
        "<cal:calendar-home-set/><card:addressbook-home-set/>")});
    s.on("PROPFIND", "/dav.php/", "0", root);
    s.on("PROPFIND", "/dav.php", "0", root);
    s.on("PROPFIND", principal, "0",
         sabre_multistatus({dav_response(
             principal,
             "<d:current-user-principal><d:href>" + principal + "</d:href></d:current-user-principal>"
             "<d:resourcetype><d:principal/></d:resourcetype>"
             "<cal:calendar-home-set><d:href>/dav.php/calendars/alice/</d:href></cal:calendar-home-set>"
             "<card:addressbook-home-set><d:href>/dav.php/addressbooks/alice/</d:href></card:addressbook-home-set>")}));
    auto cal_home_self = dav_response(
        "/dav.php/calendars/alice/",
        "<d:current-user-principal><d:href>" + principal + "</d:href></d:current-user-principal>"
        "<d:resourcetype><d:collection/></d:resourcetype>",
        "<cal:calendar-home-set/><card:addressbook-home-set/>");
    s.on("PROPFIND", "/dav.php/calendars/alice/", "0", sabre_multistatus({cal_home_self}));
    auto calendar = dav_response("/dav.php/calendars/alice/default/",
                                 calendar_props("Default calendar", "VEVENT,VTODO", kOwnerPrivileges),
                                 "<cal:calendar-description/><card:addressbook-description/>");
    s.on("PROPFIND", "/dav.php/calendars/alice/", "1",
         sabre_multistatus({dav_response("/dav.php/calendars/alice/",
                                         "<d:resourcetype><d:collection/></d:resourcetype>" + kOwnerPrivileges,
                                         kMissingCollectionProps),
                            calendar,
                            dav_response("/dav.php/calendars/alice/inbox/",
                                         "<d:resourcetype><d:collection/><cal:schedule-inbox/></d:resourcetype>" + kOwnerPrivileges,
                                         kMissingCollectionProps),
                            dav_response("/dav.php/calendars/alice/outbox/",
                                         "<d:resourcetype><d:collection/><cal:schedule-outbox/></d:resourcetype>" + kOwnerPrivileges,
                                         kMissingCollectionProps)}));
    // The calendar itself, Depth 0: for discovery from its own URL.
    s.on("PROPFIND", "/dav.php/calendars/alice/default/", "0",
         sabre_multistatus({dav_response("/dav.php/calendars/alice/default/",
                                         "<d:current-user-principal><d:href>" + principal +
                                             "</d:href></d:current-user-principal>"
                                             "<d:resourcetype><d:collection/><cal:calendar/></d:resourcetype>",
                                         "<cal:calendar-home-set/><card:addressbook-home-set/>")}));
    s.on("PROPFIND", "/dav.php/addressbooks/alice/", "1",
         sabre_multistatus({dav_response("/dav.php/addressbooks/alice/",
                                         "<d:resourcetype><d:collection/></d:resourcetype>" + kOwnerPrivileges,
                                         kMissingCollectionProps),
                            dav_response("/dav.php/addressbooks/alice/default/",
                                         addressbook_props("Default Address Book", kOwnerPrivileges),
                                         "<x1:calendar-color/><cal:calendar-description/><card:addressbook-description/>"
                                         "<cal:supported-calendar-component-set/>")}));
    for (const char* path : {"/dav.php/", "/dav.php/calendars/alice/", "/dav.php/calendars/alice/default/"})
        s.on("OPTIONS", path, "",
             {200, {{"DAV", "1, 3, extended-mkcol, access-control, calendarserver-principal-property-search, calendar-access, addressbook"}}, ""});
}

// Nextcloud 28: DAV under /remote.php/dav/, the login page at /, the
// owner's calendar and contacts plus the read-only birthday calendar and
// system address book.
inline void nextcloud_layout(FakeDavLayout& s) {
    s.override_path("/", html_page(200, "Login – Nextcloud", "Log in to Nextcloud"));
    s.override_path("/.well-known/caldav", moved_to(s.url("/remote.php/dav/")));
    s.override_path("/.well-known/carddav", moved_to(s.url("/remote.php/dav/")));
    s.require_auth(sabre_error(401, "Sabre\\DAV\\Exception\\NotAuthenticated",
                               "No public access to this resource., Username or password was incorrect, No 'Authorization: "
                               "Bearer' header found. Either the client didn't send one, or the server is mis-configured, "
                               "Username or password was incorrect",
                               {{"WWW-Authenticate", "Basic realm=\"Nextcloud\", charset=\"UTF-8\""}}));
    s.set_not_found(sabre_error(404, "Sabre\\DAV\\Exception\\NotFound", "File with name x could not be located"));

    const std::string principal = "/remote.php/dav/principals/users/alice/";
    auto root = sabre_multistatus({dav_response(
        "/remote.php/dav/",
        "<d:current-user-principal><d:href>" + principal + "</d:href></d:current-user-principal>"
        "<d:resourcetype><d:collection/></d:resourcetype>",
        "<cal:calendar-home-set/><card:addressbook-home-set/>")});
    s.on("PROPFIND", "/remote.php/dav/", "0", root);
    s.on("PROPFIND", "/remote.php/dav", "0", root);
    s.on("PROPFIND", principal, "0",
         sabre_multistatus({dav_response(
             principal,
             "<d:current-user-principal><d:href>" + principal + "</d:href></d:current-user-principal>"
             "<d:resourcetype><d:principal/></d:resourcetype>"
             "<cal:calendar-home-set><d:href>/remote.php/dav/calendars/alice/</d:href></cal:calendar-home-set>"
             "<card:addressbook-home-set><d:href>/remote.php/dav/addressbooks/users/alice/</d:href></card:addressbook-home-set>")}));
    s.on("PROPFIND", "/remote.php/dav/calendars/alice/", "1",
         sabre_multistatus(
             {dav_response("/remote.php/dav/calendars/alice/", "<d:resourcetype><d:collection/></d:resourcetype>" + kOwnerPrivileges,
                           kMissingCollectionProps),
              dav_response("/remote.php/dav/calendars/alice/personal/",
                           calendar_props("Personal", "VEVENT,VTODO", kOwnerPrivileges),
                           "<cal:calendar-description/><card:addressbook-description/>"),
              dav_response("/remote.php/dav/calendars/alice/contact_birthdays/",
                           calendar_props("Contact birthdays", "VEVENT", kBirthdayPrivileges),
                           "<cal:calendar-description/><card:addressbook-description/>"),
              dav_response("/remote.php/dav/calendars/alice/inbox/",
                           "<d:resourcetype><d:collection/><cal:schedule-inbox/></d:resourcetype>" + kOwnerPrivileges,
                           kMissingCollectionProps),
              dav_response("/remote.php/dav/calendars/alice/trashbin/",
                           "<d:resourcetype><d:collection/><nc:trash-bin xmlns:nc=\"http://nextcloud.com/ns\"/></d:resourcetype>" +
                               kOwnerPrivileges,
                           kMissingCollectionProps)}));
    s.on("PROPFIND", "/remote.php/dav/addressbooks/users/alice/", "1",
         sabre_multistatus({dav_response("/remote.php/dav/addressbooks/users/alice/",
                                         "<d:resourcetype><d:collection/></d:resourcetype>" + kOwnerPrivileges,
                                         kMissingCollectionProps),
                            dav_response("/remote.php/dav/addressbooks/users/alice/contacts/",
                                         addressbook_props("Contacts", kOwnerPrivileges),
                                         "<x1:calendar-color/><cal:calendar-description/><card:addressbook-description/>"
                                         "<cal:supported-calendar-component-set/>"),
                            dav_response("/remote.php/dav/addressbooks/users/alice/z-server-generated--system/",
                                         addressbook_props("Accounts", kReadPrivileges),
                                         "<x1:calendar-color/><cal:calendar-description/><card:addressbook-description/>"
                                         "<cal:supported-calendar-component-set/>")}));
    s.on("OPTIONS", "/remote.php/dav/calendars/alice/", "",
         {200, {{"DAV", "1, 3, extended-mkcol, access-control, calendarserver-principal-property-search, nc-calendar-search, nc-enable-birthday-calendar, calendar-access, calendar-proxy, calendarserver-subscribed, oc-resource-sharing, addressbook, nextcloud-checksum-update, nc-calendar-webcal-cache, calendarserver-sharing"}}, ""});
}

}  // namespace testing
