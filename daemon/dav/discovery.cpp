#include "dav/discovery.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "core/sanitize.hpp"
#include "dav/xml.hpp"

namespace davsyncd::dav {
namespace {

// What discovery needs to know of a collection, and nothing more: one
// Depth-1 PROPFIND on a home returns it for all its collections. The
// sync-token and the ctag are left out on purpose: Radicale computes each
// from every item (over a second for 10 000), and the sync engine reads the
// token itself when it syncs (RemoteCollection::current_token).
constexpr const char* kCollectionPropfind =
    R"(<?xml version="1.0" encoding="utf-8"?>)"
    R"(<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CR="urn:ietf:params:xml:ns:carddav")"
    R"( xmlns:A="http://apple.com/ns/ical/" xmlns:P="https://bitfire.at/webdav-push">)"
    R"(<D:prop><D:resourcetype/><D:displayname/><A:calendar-color/><C:calendar-description/><CR:addressbook-description/>)"
    R"(<C:supported-calendar-component-set/><D:supported-report-set/><D:current-user-privilege-set/>)"
    R"(<P:transports/><P:topic/><P:supported-triggers/></D:prop></D:propfind>)";

constexpr const char* kPrincipalPropfind =
    R"(<?xml version="1.0" encoding="utf-8"?>)"
    R"(<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:CR="urn:ietf:params:xml:ns:carddav">)"
    R"(<D:prop><D:current-user-principal/><D:resourcetype/><C:calendar-home-set/><CR:addressbook-home-set/>)"
    R"(<C:schedule-inbox-URL/><C:schedule-outbox-URL/></D:prop></D:propfind>)";

// "HTTP 403: Access to the requested resource forbidden.", "HTTP 200 with
// an HTML page: Baïkal Server": the status and what the server said with it.
std::string describe_answer(const Response& r) {
    std::string type = r.header("content-type").value_or("");
    std::string reason = xml::server_reason(type, r.body);
    std::string lower = type;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool html = lower.find("html") != std::string::npos;
    return cat("HTTP ", r.status, html ? " with an HTML page" : "", reason.empty() ? "" : ": ", reason);
}

std::string describe_status(const std::string& url, const Response& r) {
    std::string redacted = url::redact(url);
    if (r.status == 401) return cat(redacted, ": authentication failed (HTTP 401): check username and password");
    if (r.status == 403) return cat(redacted, ": access denied (", describe_answer(r), ")");
    return cat(redacted, ": unexpected answer (", describe_answer(r), ")");
}

// A multistatus and the URL it answered for.
struct Found {
    std::string request_url;  // after redirects: hrefs resolve against this
    std::unique_ptr<xml::Document> doc;
    xml::Multistatus ms;
};

// Parses a 207; nullopt (with the reason in `why`) when it is no multistatus.
// Hrefs resolve against the URL that answered, which the HTTP client keeps
// on the origin asked for; anything else would be a base on another host.
std::optional<Found> read_multistatus(const std::string& target, const Response& r, std::string& why) {
    Found f;
    f.request_url = target;
    if (!r.effective_url.empty() && r.effective_url != target) {
        auto asked = url::parse(target), answered = url::parse(r.effective_url);
        if (!asked || !answered || !url::same_origin(*asked, *answered))
            throw DiscoveryError(cat(url::redact(target), ": answered from another origin (", url::redact(r.effective_url),
                                     "); refusing to use it"));
        f.request_url = r.effective_url;
    }
    try {
        f.doc = std::make_unique<xml::Document>(r.body);
        f.ms = xml::parse_multistatus(*f.doc);
    } catch (const xml::XmlError& e) {
        why = cat(url::redact(f.request_url), ": ", e.what());
        return std::nullopt;
    }
    return f;
}

// PROPFIND on a URL discovery already trusts (a principal, a home): it must
// answer 207. 404/405/501 mean "not here" and give nullopt; anything else
// is a RemoteError, a malformed body a DiscoveryError.
std::optional<Found> propfind(HttpClient& http, const std::string& target, const char* depth, const char* body) {
    Response r = http.send(Request::propfind(target, depth, body));
    if (r.status == 404 || r.status == 405 || r.status == 501) return std::nullopt;
    if (r.status != 207) throw RemoteError(describe_status(target, r), r.status, r.retry_after());
    std::string why;
    auto f = read_multistatus(target, r, why);
    if (!f) throw DiscoveryError(why);
    return f;
}

// One URL asked for the principal while looking for the service, and what
// it answered: when none leads anywhere, the error lists them all.
struct Attempt {
    std::string url;
    std::string final_url;  // after redirects, when it differs
    long status = 0;
    std::string answer;     // empty when it was a usable multistatus
    std::optional<std::chrono::seconds> retry_after;
};

struct Probe {
    std::optional<Found> found;
    Attempt attempt;
};

// Asks `target` for the principal. Any answer but a readable multistatus is
// recorded, not thrown: users paste server roots that serve a web page,
// login forms, and paths that only redirect (RFC 6764 §6 says go on).
Probe probe(HttpClient& http, const std::string& target) {
    Probe p;
    p.attempt.url = target;
    Response r;
    try {
        r = http.send(Request::propfind(target, "0", kPrincipalPropfind));
    } catch (const OriginRefused& e) {
        // Not followed, and nothing sent there: one more URL that led nowhere.
        log::warning(e.what());
        if (e.to != url::redact(target)) p.attempt.final_url = e.to;
        p.attempt.answer = cat("redirect refused, ", e.reason, "; nothing was sent there");
        return p;
    }
    if (!r.effective_url.empty() && r.effective_url != target) p.attempt.final_url = r.effective_url;
    p.attempt.status = r.status;
    p.attempt.retry_after = r.retry_after();
    if (r.status != 207) {
        p.attempt.answer = describe_answer(r);
        return p;
    }
    std::string why;
    p.found = read_multistatus(target, r, why);
    if (!p.found) p.attempt.answer = cat("HTTP 207 but ", why);
    return p;
}

std::string describe(const std::vector<Attempt>& tried) {
    std::string out;
    for (const auto& a : tried) {
        if (!out.empty()) out += "; ";
        out += url::redact(a.url);
        if (!a.final_url.empty()) out += cat(" -> ", url::redact(a.final_url));
        out += cat(" (", a.answer.empty() ? "WebDAV, but no principal" : a.answer, ")");
    }
    return out;
}

// No URL led to a service. A refused password must stay recognisable (the
// scheduler stops retrying until the configuration changes), and a server
// that is down must stay retryable, with its Retry-After.
[[noreturn]] void nothing_found(const std::string& account_url, const std::vector<Attempt>& tried) {
    const Attempt* transient = nullptr;
    bool refused = false;
    for (const auto& a : tried) {
        refused = refused || a.status == 401;
        if ((a.status >= 500 || a.status == 429) && (!transient || (a.retry_after && !transient->retry_after)))
            transient = &a;
    }
    std::string where = url::redact(account_url);
    if (refused && !transient)
        throw RemoteError(cat(where, ": authentication failed (HTTP 401): check username and password; tried ",
                              describe(tried)),
                          401, std::nullopt);
    std::string what = cat(where, ": no CalDAV or CardDAV service found; tried ", describe(tried));
    if (transient) throw RemoteError(what, transient->status, transient->retry_after);
    throw DiscoveryError(what);
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

// Whether a DAV:current-user-privilege-set lets us change the members.
// DAV:write aggregates write-content and bind (RFC 3744 §3.12), DAV:all
// everything; write-properties alone (Nextcloud's birthday calendar) only
// lets us recolour the collection.
bool grants_write(const xml::Element* set) {
    for (const auto* privilege : xml::children(set, xml::kDav, "privilege"))
        for (const auto* p : xml::elements(privilege)) {
            if (xml::namespace_of(p) != xml::kDav) continue;
            std::string_view name = xml::local_name(p);
            if (name == "write" || name == "write-content" || name == "bind" || name == "all") return true;
        }
    return false;
}

bool is_collection_of_items(const xml::Response& resp) {
    const auto* rt = resp.find_prop(xml::kDav, "resourcetype");
    return has_child(rt, xml::kCalDav, "calendar") || has_child(rt, xml::kCardDav, "addressbook");
}

// A property that only describes a collection (name, colour, description):
// one too long to keep is left out with a warning, so that a broken or
// hostile value costs that property and not the discovery of the account.
std::string descriptive_text(const xml::Element* e, size_t max_bytes, const std::string& collection_url) {
    try {
        return xml::text(e, max_bytes);
    } catch (const xml::XmlError& ex) {
        log::warning(url::redact(collection_url), ": ", ex.what(), "; left out");
        return {};
    }
}

// A calendar or address book from one multistatus response; nullopt for
// anything else (plain folders, items, principals).
std::optional<CollectionInfo> parse_collection(const xml::Response& resp, const std::string& base) {
    const auto* rt = resp.find_prop(xml::kDav, "resourcetype");
    bool is_calendar = has_child(rt, xml::kCalDav, "calendar");
    bool is_addressbook = has_child(rt, xml::kCardDav, "addressbook");
    if (!is_calendar && !is_addressbook) return std::nullopt;
    if (has_child(rt, xml::kCalDav, "schedule-inbox") || has_child(rt, xml::kCalDav, "schedule-outbox")) return std::nullopt;
    auto u = resolve_same_origin(base, resp.href);
    if (!u) return std::nullopt;

    CollectionInfo c;
    c.href = Href(u->path);
    c.url = u->str();
    // A percent-decoded id need not be UTF-8 (%FF): it names folders, logs and bus paths.
    c.id = sanitize::for_bus(url::last_segment(u->path));
    if (auto* e = resp.find_prop(xml::kDav, "displayname")) c.display_name = descriptive_text(e, 4096, c.url);
    if (auto* e = resp.find_prop(xml::kAppleIcal, "calendar-color")) c.color = descriptive_text(e, 64, c.url);
    if (auto* e = resp.find_prop(xml::kCalDav, "calendar-description"))
        c.description = descriptive_text(e, 64 * 1024, c.url);
    if (auto* e = resp.find_prop(xml::kCardDav, "addressbook-description"))
        c.description = descriptive_text(e, 64 * 1024, c.url);
    if (auto* set = is_calendar ? resp.find_prop(xml::kCalDav, "supported-calendar-component-set") : nullptr)
        for (const auto* comp : xml::children(set, xml::kCalDav, "comp"))
            if (const char* name = comp->Attribute("name")) c.components.emplace_back(name);
    if (auto* reports = resp.find_prop(xml::kDav, "supported-report-set"))
        for (const auto* sr : xml::children(reports, xml::kDav, "supported-report")) {
            // RFC 3253 wraps the name in DAV:report; Xandikos 0.2.8 leaves the wrapper out.
            const auto* report = xml::child(sr, xml::kDav, "report");
            if (has_child(report ? report : sr, xml::kDav, "sync-collection")) c.supports_sync_collection = true;
        }
    // Servers without RFC 3744 leave the property out: then the owner writes.
    if (auto* set = resp.find_prop(xml::kDav, "current-user-privilege-set")) c.read_only = !grants_write(set);
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

bool is_scheduling_box(const DiscoveryResult& r, const std::string& url) {
    auto same = [&](const std::string& box) { return box == url || box + "/" == url || box == url + "/"; };
    return std::any_of(r.scheduling_boxes.begin(), r.scheduling_boxes.end(), same);
}

void add_homes(const Found& f, DiscoveryResult& result) {
    for (const auto& resp : f.ms.responses) {
        add_unique(result.calendar_homes, hrefs_in(resp.find_prop(xml::kCalDav, "calendar-home-set"), f.request_url));
        add_unique(result.addressbook_homes, hrefs_in(resp.find_prop(xml::kCardDav, "addressbook-home-set"), f.request_url));
        // RFC 6638 scheduling mailboxes live in the calendar home, and some
        // servers (DAViCal) type them as plain calendars: they are not the user's.
        for (const char* box : {"schedule-inbox-URL", "schedule-outbox-URL"})
            add_unique(result.scheduling_boxes, hrefs_in(resp.find_prop(xml::kCalDav, box), f.request_url));
    }
}

// Where discovery goes on from: the principal, and the first URL that
// answered WebDAV (a home or a collection when no principal is named).
struct Entry {
    std::optional<std::string> principal;
    std::optional<Found> dav;
};

// The URL the user gave, then the well-known URIs (RFC 6764 §6), which
// redirect to the service's context path (Baïkal's /dav.php/, Nextcloud's
// /remote.php/dav/), whatever the first answered: a web page, a login
// form, 404, 500. Throws, naming every URL tried, when none speaks WebDAV.
Entry find_entry(HttpClient& http, const url::Url& base, const std::string& account_url) {
    std::vector<Attempt> tried;
    Entry entry;
    auto consider = [&](Probe p) {
        if (!p.attempt.answer.empty())
            log::debug(url::redact(p.attempt.url), ": ", p.attempt.answer, "; looking further");
        tried.push_back(std::move(p.attempt));
        if (!p.found) return;
        if (!entry.principal) entry.principal = principal_from(*p.found);
        if (!entry.dav) entry.dav = std::move(p.found);
    };
    consider(probe(http, account_url));
    for (const char* wk : {"/.well-known/caldav", "/.well-known/carddav"}) {
        if (entry.principal) break;
        consider(probe(http, base.origin() + wk));
    }
    if (!entry.principal && !entry.dav) nothing_found(account_url, tried);
    return entry;
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

    // 1. Where the service is: the principal, or at least a URL that speaks WebDAV.
    Entry entry = find_entry(http, *base, account_url);

    // 2. The homes, from the principal, else from what that URL said of itself.
    if (entry.principal) {
        result.principal_url = *entry.principal;
        log::debug("principal: ", url::redact(*entry.principal));
        if (auto f = propfind(http, *entry.principal, "0", kPrincipalPropfind)) add_homes(*f, result);
    } else {
        add_homes(*entry.dav, result);
    }
    std::vector<std::string> homes = result.calendar_homes;
    add_unique(homes, result.addressbook_homes);

    // 3. The collections: one Depth-1 PROPFIND per home. Without a home, the
    //    URL that answered is itself a collection (read alone: Depth 1 would
    //    list every item in it) or holds collections.
    std::set<std::string> seen;
    auto keep = [&](std::optional<CollectionInfo> c) {
        if (c && is_scheduling_box(result, c->url)) return;
        if (c && seen.insert(c->url).second) result.collections.push_back(std::move(*c));
    };
    std::string options_url;
    if (homes.empty()) {
        options_url = entry.dav ? entry.dav->request_url : *entry.principal;
        bool is_collection = entry.dav && std::any_of(entry.dav->ms.responses.begin(), entry.dav->ms.responses.end(),
                                                      is_collection_of_items);
        if (is_collection) keep(read_collection(http, options_url));
        else homes.push_back(options_url);
    } else {
        options_url = homes.front();
    }
    for (const auto& home : homes) {
        auto f = propfind(http, home, "1", kCollectionPropfind);
        if (!f) {
            log::warning(url::redact(home), ": home not found");
            continue;
        }
        for (const auto& resp : f->ms.responses) keep(parse_collection(resp, f->request_url));
    }

    // The DAV header tells whether the server speaks WebDAV-Push at all
    // (informational: not every server announces it).
    Response opt = http.send(Request::options(options_url));
    if (auto dav = opt.header("dav"); dav && dav->find("webdav-push") != std::string::npos)
        result.server_advertises_push = true;

    std::sort(result.collections.begin(), result.collections.end(),
              [](const CollectionInfo& a, const CollectionInfo& b) { return a.url < b.url; });
    if (result.collections.empty()) {
        std::string searched;
        for (const auto& h : homes) searched += cat(searched.empty() ? "" : ", ", url::redact(h));
        throw DiscoveryError(cat(url::redact(account_url), ": no calendars or address books found",
                                 searched.empty() ? "" : " in ", searched));
    }
    return result;
}

std::optional<DiscoveryResult> rediscover_homes(HttpClient& http, const DiscoveryResult& known) {
    std::vector<std::string> homes = known.calendar_homes;
    add_unique(homes, known.addressbook_homes);
    if (homes.empty()) return std::nullopt;
    DiscoveryResult result = known;
    result.collections.clear();
    std::set<std::string> seen;
    for (const auto& home : homes) {
        Response r = http.send(Request::propfind(home, "1", kCollectionPropfind));
        if (r.status == 401 || r.status == 429 || r.status >= 500)
            throw RemoteError(describe_status(home, r), r.status, r.retry_after());
        std::string why;
        auto f = r.status == 207 ? read_multistatus(home, r, why) : std::nullopt;
        if (!f) {
            log::info(url::redact(home), ": home moved or gone (", describe_answer(r), "); discovering from the start");
            return std::nullopt;
        }
        for (const auto& resp : f->ms.responses)
            if (auto c = parse_collection(resp, f->request_url); c && !is_scheduling_box(result, c->url) && seen.insert(c->url).second)
                result.collections.push_back(std::move(*c));
    }
    std::sort(result.collections.begin(), result.collections.end(),
              [](const CollectionInfo& a, const CollectionInfo& b) { return a.url < b.url; });
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
            {"scheduling_boxes", r.scheduling_boxes},
            {"server_advertises_push", r.server_advertises_push},
            {"collections", cols}};
}

DiscoveryResult discovery_from_json(const nlohmann::json& j) {
    DiscoveryResult r;
    r.principal_url = j.value("principal_url", "");
    r.calendar_homes = j.value("calendar_homes", std::vector<std::string>{});
    r.addressbook_homes = j.value("addressbook_homes", std::vector<std::string>{});
    r.scheduling_boxes = j.value("scheduling_boxes", std::vector<std::string>{});
    r.server_advertises_push = j.value("server_advertises_push", false);
    for (const auto& c : j.at("collections")) r.collections.push_back(collection_from_json(c));
    return r;
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
    // Caches written before discovery stopped reading them also hold
    // "sync_token" and "ctag": stale copies, ignored.
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
