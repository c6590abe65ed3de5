#include "dav/discovery.hpp"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "dav/xml.hpp"

namespace davsyncd::dav {
namespace {

// Every property discovery and the sync engine want to know of a collection.
// One Depth-1 PROPFIND on a home returns them for all its collections.
constexpr const char* kCollectionPropfind =
    R"(<?xml version="1.0" encoding="utf-8"?>)"
    R"(<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CR="urn:ietf:params:xml:ns:carddav")"
    R"( xmlns:CS="http://calendarserver.org/ns/" xmlns:A="http://apple.com/ns/ical/" xmlns:P="https://bitfire.at/webdav-push">)"
    R"(<D:prop><D:resourcetype/><D:displayname/><A:calendar-color/><C:calendar-description/><CR:addressbook-description/>)"
    R"(<C:supported-calendar-component-set/><D:supported-report-set/><D:sync-token/><CS:getctag/>)"
    R"(<P:transports/><P:topic/><P:supported-triggers/></D:prop></D:propfind>)";

constexpr const char* kPrincipalPropfind =
    R"(<?xml version="1.0" encoding="utf-8"?>)"
    R"(<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CR="urn:ietf:params:xml:ns:carddav">)"
    R"(<D:prop><D:current-user-principal/><D:resourcetype/><C:calendar-home-set/><CR:addressbook-home-set/></D:prop></D:propfind>)";

std::string describe_status(const std::string& url, long status) {
    if (status == 401) return cat(url::redact(url), ": authentication failed (HTTP 401): check username and password");
    if (status == 403) return cat(url::redact(url), ": access denied (HTTP 403)");
    return cat(url::redact(url), ": unexpected HTTP status ", status);
}

// PROPFIND that must answer 207; anything else is a DiscoveryError, except
// 404/405, which mean "not here" and give nullopt.
struct Found {
    std::string request_url;  // after redirects: hrefs resolve against this
    std::unique_ptr<xml::Document> doc;
    xml::Multistatus ms;
};

std::optional<Found> propfind(HttpClient& http, const std::string& target, const char* depth, const char* body) {
    Response r = http.send(Request::propfind(target, depth, body));
    if (r.status == 404 || r.status == 405 || r.status == 501) return std::nullopt;
    if (r.status != 207) throw RemoteError(describe_status(target, r.status), r.status, r.retry_after());
    Found f;
    f.request_url = r.effective_url.empty() ? target : r.effective_url;
    try {
        f.doc = std::make_unique<xml::Document>(r.body);
        f.ms = xml::parse_multistatus(*f.doc);
    } catch (const xml::XmlError& e) {
        throw DiscoveryError(cat(url::redact(f.request_url), ": ", e.what()));
    }
    return f;
}

// Resolves an href from a response against the URL it came from, refusing
// anything on another origin: a server must not send us to a third party
// with the user's credentials.
std::optional<url::Url> resolve_same_origin(const std::string& base, std::string_view href) {
    auto b = url::parse(base);
    if (!b) return std::nullopt;
    auto u = url::resolve(*b, href);
    if (!u) return std::nullopt;
    if (!url::same_origin(*b, *u)) {
        log::warning(url::redact(base), ": ignoring href on another origin: ", url::redact(u->str()));
        return std::nullopt;
    }
    return u;
}

std::vector<std::string> hrefs_in(const xml::Element* prop, const std::string& base) {
    std::vector<std::string> out;
    if (!prop) return out;
    for (const auto* h : xml::children(prop, xml::kDav, "href"))
        if (auto u = resolve_same_origin(base, xml::text(h))) out.push_back(u->str());
    return out;
}

bool has_child(const xml::Element* e, std::string_view ns, std::string_view local) {
    return e && xml::child(e, ns, local) != nullptr;
}

PushSupport parse_push(const xml::Response& resp) {
    PushSupport push;
    // Either namespace: servers before late 2024 used "DAV:Push".
    auto find = [&](std::string_view local) -> const xml::Element* {
        if (auto* e = resp.find_prop(xml::kPush, local)) return e;
        return resp.find_prop(xml::kPushLegacy, local);
    };
    if (auto* transports = find("transports")) {
        if (auto* wp = xml::push_child(transports, "web-push")) {
            push.web_push = true;
            if (auto* key = xml::push_child(wp, "vapid-public-key")) {
                const char* type = key->Attribute("type");
                if (!type || std::string_view(type) == "p256ecdsa") push.vapid_public_key = xml::text(key, 1024);
            }
        }
    }
    if (auto* topic = find("topic")) push.topic = PushTopic(xml::text(topic, 4096));
    if (auto* triggers = find("supported-triggers")) {
        if (auto* cu = xml::push_child(triggers, "content-update"))
            if (auto* d = xml::child(cu, xml::kDav, "depth")) push.content_update_depth = xml::text(d, 64);
        if (auto* pu = xml::push_child(triggers, "property-update"))
            if (auto* d = xml::child(pu, xml::kDav, "depth")) push.property_update_depth = xml::text(d, 64);
    }
    return push;
}

// A calendar or address book from one multistatus response; nullopt for
// anything else (plain folders, items, principals).
std::optional<CollectionInfo> parse_collection(const xml::Response& resp, const std::string& base) {
    const auto* rt = resp.find_prop(xml::kDav, "resourcetype");
    bool is_calendar = has_child(rt, xml::kCalDav, "calendar");
    bool is_addressbook = has_child(rt, xml::kCardDav, "addressbook");
    if (!is_calendar && !is_addressbook) return std::nullopt;
    auto u = resolve_same_origin(base, resp.href);
    if (!u) return std::nullopt;

    CollectionInfo c;
    c.href = Href(u->path);
    c.url = u->str();
    c.id = url::last_segment(u->path);
    if (auto* e = resp.find_prop(xml::kDav, "displayname")) c.display_name = xml::text(e, 4096);
    if (auto* e = resp.find_prop(xml::kAppleIcal, "calendar-color")) c.color = xml::text(e, 64);
    if (auto* e = resp.find_prop(xml::kCalDav, "calendar-description")) c.description = xml::text(e);
    if (auto* e = resp.find_prop(xml::kCardDav, "addressbook-description")) c.description = xml::text(e);
    if (auto* set = is_calendar ? resp.find_prop(xml::kCalDav, "supported-calendar-component-set") : nullptr)
        for (const auto* comp : xml::children(set, xml::kCalDav, "comp"))
            if (const char* name = comp->Attribute("name")) c.components.emplace_back(name);
    if (auto* reports = resp.find_prop(xml::kDav, "supported-report-set"))
        for (const auto* sr : xml::children(reports, xml::kDav, "supported-report")) {
            // RFC 3253 wraps the name in DAV:report; Xandikos 0.2.8 leaves the wrapper out.
            const auto* report = xml::child(sr, xml::kDav, "report");
            if (has_child(report ? report : sr, xml::kDav, "sync-collection")) c.supports_sync_collection = true;
        }
    if (auto* e = resp.find_prop(xml::kDav, "sync-token")) c.sync_token = SyncToken(xml::text(e, 4096));
    if (auto* e = resp.find_prop(xml::kCalServer, "getctag")) c.ctag = CTag(xml::text(e, 4096));
    c.push = parse_push(resp);

    if (is_addressbook) {
        c.kind = CollectionKind::addressbook;
    } else {
        auto has = [&](const char* comp) { return std::find(c.components.begin(), c.components.end(), comp) != c.components.end(); };
        // A calendar that lists only VTODO is a task list (todoman's); one
        // that lists nothing accepts everything and is a calendar.
        c.kind = (!c.components.empty() && has("VTODO") && !has("VEVENT")) ? CollectionKind::tasks : CollectionKind::calendar;
    }
    return c;
}

std::optional<std::string> principal_from(const Found& f) {
    for (const auto& resp : f.ms.responses)
        if (auto* cup = resp.find_prop(xml::kDav, "current-user-principal"))
            if (auto* href = xml::child(cup, xml::kDav, "href"))
                if (auto u = resolve_same_origin(f.request_url, xml::text(href))) return u->str();
    return std::nullopt;
}

void add_unique(std::vector<std::string>& v, const std::vector<std::string>& more) {
    for (const auto& m : more)
        if (std::find(v.begin(), v.end(), m) == v.end()) v.push_back(m);
}

}  // namespace

const char* to_string(CollectionKind k) {
    switch (k) {
        case CollectionKind::calendar: return "calendar";
        case CollectionKind::tasks: return "tasks";
        case CollectionKind::addressbook: return "addressbook";
    }
    return "calendar";
}

std::optional<CollectionKind> kind_from_string(std::string_view s) {
    if (s == "calendar") return CollectionKind::calendar;
    if (s == "tasks") return CollectionKind::tasks;
    if (s == "addressbook") return CollectionKind::addressbook;
    return std::nullopt;
}

DiscoveryResult discover(HttpClient& http, const std::string& account_url) {
    auto base = url::parse(account_url);
    if (!base) throw DiscoveryError(cat("not an http(s) URL: ", url::redact(account_url)));
    DiscoveryResult result;

    // 1. The principal: asked of the configured URL, then of the well-known
    //    URIs (RFC 6764 §6), which redirect to the service's context path.
    auto first = propfind(http, account_url, "0", kPrincipalPropfind);
    std::optional<std::string> principal = first ? principal_from(*first) : std::nullopt;
    for (const char* wk : {"/.well-known/caldav", "/.well-known/carddav"}) {
        if (principal) break;
        if (auto f = propfind(http, base->origin() + wk, "0", kPrincipalPropfind)) principal = principal_from(*f);
    }

    // 2. The homes, from the principal; without one, the URL is the home.
    if (principal) {
        result.principal_url = *principal;
        log::debug("principal: ", url::redact(*principal));
        if (auto f = propfind(http, *principal, "0", kPrincipalPropfind)) {
            for (const auto& resp : f->ms.responses) {
                add_unique(result.calendar_homes, hrefs_in(resp.find_prop(xml::kCalDav, "calendar-home-set"), f->request_url));
                add_unique(result.addressbook_homes, hrefs_in(resp.find_prop(xml::kCardDav, "addressbook-home-set"), f->request_url));
            }
        }
    }
    std::vector<std::string> homes = result.calendar_homes;
    add_unique(homes, result.addressbook_homes);
    if (homes.empty()) homes.push_back(base->str());

    // 3. The collections: one Depth-1 PROPFIND per home.
    std::set<std::string> seen;
    for (const auto& home : homes) {
        auto f = propfind(http, home, "1", kCollectionPropfind);
        if (!f) {
            log::warning(url::redact(home), ": home not found");
            continue;
        }
        for (const auto& resp : f->ms.responses) {
            auto c = parse_collection(resp, f->request_url);
            if (c && seen.insert(c->url).second) result.collections.push_back(std::move(*c));
        }
    }

    // The DAV header of the first home tells whether the server speaks
    // WebDAV-Push at all (informational: not every server announces it).
    Response opt = http.send(Request::options(homes.front()));
    if (auto dav = opt.header("dav"); dav && dav->find("webdav-push") != std::string::npos)
        result.server_advertises_push = true;

    std::sort(result.collections.begin(), result.collections.end(),
              [](const CollectionInfo& a, const CollectionInfo& b) { return a.url < b.url; });
    if (result.collections.empty())
        throw DiscoveryError(cat(url::redact(account_url), ": no calendars or address books found"));
    return result;
}

CollectionInfo read_collection(HttpClient& http, const std::string& collection_url) {
    auto f = propfind(http, collection_url, "0", kCollectionPropfind);
    if (!f) throw DiscoveryError(cat(url::redact(collection_url), ": collection not found"));
    for (const auto& resp : f->ms.responses)
        if (auto c = parse_collection(resp, f->request_url)) return *c;
    throw DiscoveryError(cat(url::redact(collection_url), ": not a calendar or address book"));
}

// --- JSON (the discovery cache in the state folder and --discover --json) ---

nlohmann::json to_json(const CollectionInfo& c) {
    auto opt = [](const std::optional<std::string>& s) { return s ? nlohmann::json(*s) : nlohmann::json(nullptr); };
    return {
        {"href", c.href.str()},
        {"url", c.url},
        {"id", c.id},
        {"displayname", c.display_name},
        {"color", c.color},
        {"description", c.description},
        {"kind", to_string(c.kind)},
        {"components", c.components},
        {"sync_collection", c.supports_sync_collection},
        {"read_only", c.read_only},
        {"sync_token", c.sync_token.str()},
        {"ctag", c.ctag.str()},
        {"push",
         {{"web_push", c.push.web_push},
          {"vapid_public_key", c.push.vapid_public_key},
          {"topic", c.push.topic.str()},
          {"content_update_depth", opt(c.push.content_update_depth)},
          {"property_update_depth", opt(c.push.property_update_depth)}}},
    };
}

nlohmann::json to_json(const DiscoveryResult& r) {
    nlohmann::json cols = nlohmann::json::array();
    for (const auto& c : r.collections) cols.push_back(to_json(c));
    return {{"principal_url", r.principal_url},
            {"calendar_homes", r.calendar_homes},
            {"addressbook_homes", r.addressbook_homes},
            {"server_advertises_push", r.server_advertises_push},
            {"collections", cols}};
}

CollectionInfo collection_from_json(const nlohmann::json& j) {
    auto opt = [](const nlohmann::json& v) -> std::optional<std::string> {
        return v.is_string() ? std::optional<std::string>(v.get<std::string>()) : std::nullopt;
    };
    CollectionInfo c;
    c.href = Href(j.at("href").get<std::string>());
    c.url = j.at("url").get<std::string>();
    c.id = j.at("id").get<std::string>();
    c.display_name = j.value("displayname", "");
    c.color = j.value("color", "");
    c.description = j.value("description", "");
    c.kind = kind_from_string(j.value("kind", "calendar")).value_or(CollectionKind::calendar);
    c.components = j.value("components", std::vector<std::string>{});
    c.supports_sync_collection = j.value("sync_collection", false);
    c.read_only = j.value("read_only", false);
    c.sync_token = SyncToken(j.value("sync_token", ""));
    c.ctag = CTag(j.value("ctag", ""));
    if (auto p = j.find("push"); p != j.end() && p->is_object()) {
        c.push.web_push = p->value("web_push", false);
        c.push.vapid_public_key = p->value("vapid_public_key", "");
        c.push.topic = PushTopic(p->value("topic", ""));
        c.push.content_update_depth = opt(p->value("content_update_depth", nlohmann::json()));
        c.push.property_update_depth = opt(p->value("property_update_depth", nlohmann::json()));
    }
    return c;
}

}  // namespace davsyncd::dav
