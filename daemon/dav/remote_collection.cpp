#include "dav/remote_collection.hpp"

#include "core/log.hpp"
#include "dav/multistatus_reader.hpp"
#include "dav/xml.hpp"

namespace davsyncd::dav {
namespace {

constexpr const char* kXmlHead = R"(<?xml version="1.0" encoding="utf-8"?>)";

// The namespace and element names that differ between CalDAV and CardDAV.
struct Dialect {
    const char* ns;
    const char* data;       // calendar-data / address-data
    const char* multiget;   // calendar-multiget / addressbook-multiget
    const char* query;      // calendar-query / addressbook-query
    const char* filter;     // the match-everything filter
};

constexpr Dialect kCalDav{"urn:ietf:params:xml:ns:caldav", "calendar-data", "calendar-multiget", "calendar-query",
                          R"(<C:filter><C:comp-filter name="VCALENDAR"/></C:filter>)"};
constexpr Dialect kCardDav{"urn:ietf:params:xml:ns:carddav", "address-data", "addressbook-multiget",
                           "addressbook-query", R"(<C:filter/>)"};

std::string status_text(long status) { return cat("HTTP ", status); }

}  // namespace

RemoteCollection::RemoteCollection(HttpClient& http, CollectionInfo info) : http_(http), info_(std::move(info)) {
    auto u = url::parse(info_.url);
    if (!u) throw std::invalid_argument(cat("not an http(s) collection URL: ", url::redact(info_.url)));
    base_ = *u;
    if (!base_.path.ends_with('/')) base_.path += '/';
    decoded_path_ = url::percent_decode(base_.path);
}

std::string RemoteCollection::absolute(const Href& href) const {
    auto u = url::resolve(base_, href.str());
    return u ? u->str() : base_.str();
}

Href RemoteCollection::member_href(const std::string& file_name) const {
    return Href(base_.path + url::percent_encode_segment(file_name));
}

std::optional<Href> RemoteCollection::member(std::string_view href) const {
    auto u = url::resolve(base_, href);
    if (!u || !url::same_origin(base_, *u)) {
        log::warning(url::redact(info_.url), ": ignoring member href on another origin: ", url::redact(std::string(href)));
        return std::nullopt;
    }
    // Compare decoded paths: servers spell the same path with different escapes.
    const std::string& coll = decoded_path_;
    std::string path = url::percent_decode(u->path);
    if (path == coll || path + "/" == coll) return std::nullopt;  // the collection itself
    if (!path.starts_with(coll) || path.find('/', coll.size()) != std::string::npos) {
        log::warning(url::redact(info_.url), ": ignoring href outside the collection: ", url::redact(u->path));
        return std::nullopt;
    }
    return Href(u->path);
}

void RemoteCollection::fail(const Request& req, const Response& resp) const {
    // The server's own words (Sabre's s:message, a text page) say more than the status.
    auto reason = xml::server_reason(resp.header("content-type").value_or(""), resp.body);
    throw RemoteError(cat(req.method, " ", url::redact(req.url), ": ", status_text(resp.status),
                          resp.status == 401 ? " (authentication failed)" : "", reason.empty() ? "" : ": ", reason),
                      resp.status, resp.retry_after());
}

std::string RemoteCollection::current_property(std::string_view ns, std::string_view name) {
    auto req = Request::propfind(info_.url, "0",
                                 cat(kXmlHead, R"(<D:propfind xmlns:D="DAV:" xmlns:P=")", ns, R"("><D:prop><P:)", name,
                                     "/></D:prop></D:propfind>"));
    auto resp = http_.send(req);
    if (resp.status != 207) fail(req, resp);
    xml::Document doc(resp.body);
    for (const auto& r : xml::parse_multistatus(doc).responses)
        if (auto* p = r.find_prop(ns, name)) return xml::text(p, 4096);
    return {};
}

SyncToken RemoteCollection::current_token() { return SyncToken(current_property(xml::kDav, "sync-token")); }

CTag RemoteCollection::current_ctag() { return CTag(current_property(xml::kCalServer, "getctag")); }

ChangePage RemoteCollection::changes_since(const SyncToken& token) {
    std::string body = cat(kXmlHead, R"(<D:sync-collection xmlns:D="DAV:">)",
                           token.empty() ? std::string("<D:sync-token/>")
                                         : cat("<D:sync-token>", xml::escape(token.str()), "</D:sync-token>"),
                           "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>");
    // RFC 6578 §3.2: the report is defined for Depth 0 only.
    auto req = Request::report(info_.url, "0", std::move(body));
    ChangePage page;
    Response resp;
    auto token_after = stream_multistatus(req, [&](const xml::Response& r) {
        // Xandikos since 0.2.10 answers a stale token with a 207 whose
        // response carries the 412 and the precondition.
        if (r.error && xml::child(r.error, xml::kDav, "valid-sync-token"))
            throw InvalidSyncToken(cat(url::redact(info_.url), ": server rejected the sync token (", r.status, " in a 207)"));
        if (r.status == 507) {  // truncated result (RFC 6578 §3.6), reported on the collection itself
            page.truncated = true;
            return;
        }
        auto href = member(r.href);
        if (!href) return;
        if (r.status == 404 || r.status == 410) {
            page.deleted.push_back(*href);
            return;
        }
        const auto* etag = r.find_prop(xml::kDav, "getetag");
        page.changed.push_back({*href, Etag(etag ? xml::text(etag, 1024) : "")});
    }, resp);
    if (resp.status != 207) {
        // Radicale says 403, Xandikos 412 (or 500 in 0.2.8): the error element decides.
        if (xml::has_precondition(resp.body, xml::kDav, "valid-sync-token"))
            throw InvalidSyncToken(cat(url::redact(info_.url), ": server rejected the sync token (", status_text(resp.status), ")"));
        fail(req, resp);
    }
    page.token = SyncToken(token_after.value_or(""));
    if (page.token.empty()) throw RemoteError(cat("REPORT ", url::redact(info_.url), ": no sync-token in the answer"), 207, std::nullopt);
    return page;
}

std::vector<MemberEtag> RemoteCollection::list_etags() {
    auto req = Request::propfind(info_.url, "1",
                                 cat(kXmlHead, R"(<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getetag/></D:prop></D:propfind>)"));
    std::vector<MemberEtag> out;
    Response resp;
    stream_multistatus(req, [&](const xml::Response& r) {
        const auto* rt = r.find_prop(xml::kDav, "resourcetype");
        if (rt && xml::child(rt, xml::kDav, "collection")) return;
        auto href = member(r.href);
        if (!href) return;
        const auto* etag = r.find_prop(xml::kDav, "getetag");
        out.push_back({*href, Etag(etag ? xml::text(etag, 1024) : "")});
    }, resp);
    if (resp.status != 207) fail(req, resp);
    return out;
}

std::optional<std::string> RemoteCollection::stream_multistatus(Request req,
                                                                const std::function<void(const xml::Response&)>& on_response,
                                                                Response& answer) {
    const std::string what = cat(req.method, " ", url::redact(req.url));
    xml::MultistatusReader reader(on_response);
    try {
        answer = http_.send(std::move(req), [&](std::string_view bytes) { reader.feed(bytes); });
        if (answer.status != 207) return std::nullopt;
        reader.finish();
    } catch (const xml::XmlError& e) {
        throw xml::XmlError(cat(what, ": ", e.what()));
    }
    return reader.sync_token();
}

namespace {

// The body of an item from calendar-data/address-data. Servers may indent
// it inside the element, so it is trimmed, and the final line ending that
// iCalendar and vCard require is put back in the file's own style.
std::string item_text(const xml::Element* data) {
    std::string text = xml::text(data, 16u << 20);
    if (!text.empty()) text += text.find("\r\n") != std::string::npos ? "\r\n" : "\n";
    return text;
}

}  // namespace

void RemoteCollection::stream_data(Request req, const MemberSink& sink) {
    const Dialect& d = is_addressbook() ? kCardDav : kCalDav;
    Response resp;
    stream_multistatus(req, [&](const xml::Response& r) {
        const auto* data = r.find_prop(d.ns, d.data);
        if (!data) return;  // 404 in a multiget: gone since it was listed
        auto href = member(r.href);
        if (!href) return;
        const auto* etag = r.find_prop(xml::kDav, "getetag");
        sink(MemberData{*href, Etag(etag ? xml::text(etag, 1024) : ""), item_text(data)});
    }, resp);
    if (resp.status != 207) fail(req, resp);
}

void RemoteCollection::list_all(const MemberSink& sink) {
    const Dialect& d = is_addressbook() ? kCardDav : kCalDav;
    stream_data(Request::report(info_.url, "1",
                                cat(kXmlHead, "<C:", d.query, R"( xmlns:D="DAV:" xmlns:C=")", d.ns, R"(">)",
                                    "<D:prop><D:getetag/><C:", d.data, "/></D:prop>", d.filter, "</C:", d.query, ">")),
                sink);
}

void RemoteCollection::multiget(const std::vector<Href>& hrefs, const MemberSink& sink) {
    if (hrefs.empty()) return;
    const Dialect& d = is_addressbook() ? kCardDav : kCalDav;
    std::string body = cat(kXmlHead, "<C:", d.multiget, R"( xmlns:D="DAV:" xmlns:C=")", d.ns, R"(">)",
                           "<D:prop><D:getetag/><C:", d.data, "/></D:prop>");
    for (const auto& h : hrefs) body += cat("<D:href>", xml::escape(h.str()), "</D:href>");
    body += cat("</C:", d.multiget, ">");
    stream_data(Request::report(info_.url, "1", std::move(body)), sink);
}

std::optional<MemberData> RemoteCollection::get(const Href& href) {
    auto req = Request::get(absolute(href));
    auto resp = http_.send(req);
    if (resp.status == 404 || resp.status == 410) return std::nullopt;
    if (resp.status != 200) fail(req, resp);
    return MemberData{href, Etag(resp.header("etag").value_or("")), std::move(resp.body)};
}

std::string WriteResult::describe() const {
    std::string out = cat("HTTP ", status);
    if (!condition.empty()) out += cat(" (", condition, ")");
    if (!reason.empty()) out += cat(": ", reason);
    return out;
}

// A write's answer as a result; only a refused password is the account's
// problem rather than this item's.
WriteResult RemoteCollection::write_result(const Request& req, const Response& resp) const {
    if (resp.status == 401) fail(req, resp);
    WriteResult w{resp.status, Etag(resp.header("etag").value_or("")), {}, {}};
    if (resp.status == 207) {
        // Xandikos wraps a refused write in a multistatus (0.2.8: a PUT of
        // invalid data answers 207 holding a 412 and valid-calendar-data).
        // The inner status decides; one we cannot read is worth a retry.
        w.status = 500;
        try {
            xml::Document doc(resp.body);
            for (const auto& r : xml::parse_multistatus(doc).responses)
                if (r.status) {
                    w.status = r.status;
                    break;
                }
        } catch (const xml::XmlError&) {
        }
        if (w.ok()) w.status = 500;  // a "success" without an etag or a location is no success
    }
    if (!w.ok()) {
        // A CalDAV/CardDAV precondition of the content (valid-calendar-data,
        // no-uid-conflict, ...) is a refusal even with 412, not a changed
        // etag. DAV:if-match or DAV:if-none-match (DAViCal names them with
        // its 412) is the changed etag itself.
        for (const auto& c : xml::error_conditions(resp.body))
            if (c.ns == xml::kCalDav || c.ns == xml::kCardDav) {
                w.condition = c.local;
                break;
            }
        w.reason = xml::server_reason(resp.header("content-type").value_or(""), resp.body);
    }
    return w;
}

WriteResult RemoteCollection::put(const Href& href, const std::string& body, PutCondition condition, const Etag& etag) {
    auto req = Request::put(absolute(href), body,
                            is_addressbook() ? "text/vcard; charset=utf-8" : "text/calendar; charset=utf-8");
    if (condition == PutCondition::if_match && etag.empty())
        throw std::logic_error("PUT If-Match without an etag");  // would silently become unconditional
    if (condition == PutCondition::if_match) req.header("If-Match", etag.str());
    if (condition == PutCondition::create) req.header("If-None-Match", "*");
    auto w = write_result(req, http_.send(req));
    // A weak etag from a PUT does not identify the stored bytes (RFC 4791 §5.3.4): re-read later.
    if (w.etag.str().starts_with("W/")) w.etag = Etag();
    return w;
}

WriteResult RemoteCollection::remove(const Href& href, const Etag& if_match) {
    auto req = Request::del(absolute(href));
    if (!if_match.empty()) req.header("If-Match", if_match.str());
    auto w = write_result(req, http_.send(req));
    w.etag = Etag();
    return w;
}

}  // namespace davsyncd::dav
