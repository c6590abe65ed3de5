#include "push/push_xml.hpp"

#include <ctime>
#include <stdexcept>

#include "core/log.hpp"
#include "dav/xml.hpp"

namespace davsyncd::push {
namespace {

constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

}  // namespace

std::string http_date(SystemTime t) {
    std::time_t tt = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday], tm.tm_mday,
                  kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

std::optional<SystemTime> parse_http_date(std::string_view s) {
    // "Wed, 20 Dec 2023 10:03:31 GMT" or "... +0000"
    char day[4] = {}, mon[4] = {}, zone[8] = {};
    int mday = 0, year = 0, hh = 0, mm = 0, ss = 0;
    std::string text(s);
    if (std::sscanf(text.c_str(), "%3s, %d %3s %d %d:%d:%d %7s", day, &mday, mon, &year, &hh, &mm, &ss, zone) != 8)
        return std::nullopt;
    std::string z = zone;
    if (z != "GMT" && z != "UTC" && z != "+0000") return std::nullopt;
    int month = -1;
    for (int i = 0; i < 12; ++i)
        if (std::string_view(mon) == kMonths[i]) month = i;
    if (month < 0 || mday < 1 || mday > 31 || year < 1970 || year > 9999 || hh > 23 || mm > 59 || ss > 60)
        return std::nullopt;
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month;
    tm.tm_mday = mday;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    std::time_t t = timegm(&tm);
    if (t == -1) return std::nullopt;
    return std::chrono::system_clock::from_time_t(t);
}

std::string register_body(const RegisterRequest& r) {
    std::string body = cat(
        R"(<?xml version="1.0" encoding="utf-8"?>)",
        R"(<P:push-register xmlns:P="https://bitfire.at/webdav-push" xmlns:D="DAV:">)",
        "<P:subscription><P:web-push-subscription>",
        "<P:push-resource>", xml::escape(r.push_resource), "</P:push-resource>",
        "<P:content-encoding>aes128gcm</P:content-encoding>",
        R"(<P:subscription-public-key type="p256dh">)", xml::escape(r.public_key), "</P:subscription-public-key>",
        "<P:auth-secret>", xml::escape(r.auth_secret), "</P:auth-secret>",
        "</P:web-push-subscription></P:subscription>",
        // Not getetag, getlastmodified or sync-token: they change with every write.
        "<P:trigger><P:content-update><D:depth>1</D:depth></P:content-update>",
        "<P:property-update><D:depth>0</D:depth><D:prop><D:displayname/>",
        R"(<A:calendar-color xmlns:A="http://apple.com/ns/ical/"/></D:prop></P:property-update></P:trigger>)");
    if (r.expires) body += cat("<P:expires>", http_date(*r.expires), "</P:expires>");
    body += "</P:push-register>";
    return body;
}

std::optional<Registration> parse_register_response(const dav::Response& response, const std::string& request_url,
                                                    RegisterRefused& refused) {
    refused = {};
    refused.status = response.status;
    if (response.status == 200 || response.status == 201 || response.status == 204) {
        auto location = response.header("location");
        if (!location || location->empty()) {
            refused.reason = cat("HTTP ", response.status, " without a Location header");
            refused.permanent = true;
            return std::nullopt;
        }
        // The registration URL must be kept byte for byte as the server sent
        // it (it is matched in Push-Dont-Notify); only a relative one is
        // made absolute, as the draft requires an absolute URL.
        std::string reg = *location;
        auto base = url::parse(request_url);
        auto abs = url::parse(reg);
        if (!abs) {
            abs = base ? url::resolve(*base, reg) : std::nullopt;
            if (!abs) {
                refused.reason = "unusable Location header";
                refused.permanent = true;
                return std::nullopt;
            }
            reg = abs->str();
        }
        // We DELETE this URL later, with the credentials: only on the
        // collection's own origin.
        if (!base || !url::same_origin(*base, *abs)) {
            refused.reason = cat("registration URL ", url::redact(reg), " is on another origin than the collection (",
                                 base ? base->origin() : url::redact(request_url), "); not kept");
            refused.permanent = true;
            return std::nullopt;
        }
        Registration out{RegistrationUrl(reg), std::nullopt};
        if (auto e = response.header("expires")) out.expires = parse_http_date(*e);
        return out;
    }
    refused.retry_after = response.retry_after();
    if (response.status == 403) {
        if (auto cond = xml::error_condition(response.body)) refused.reason = cond->local;
        else refused.reason = "HTTP 403";
        // push-not-available and the trigger conditions will not change by retrying.
        refused.permanent = refused.reason != "invalid-subscription";
    } else if (response.status == 429 || response.status == 503) {
        refused.reason = cat("HTTP ", response.status, " (try again later)");
    } else {
        refused.reason = cat("HTTP ", response.status);
        refused.permanent = response.status == 400 || response.status == 404 || response.status == 405 ||
                            response.status == 415 || response.status == 501;
    }
    return std::nullopt;
}

PushMessage parse_push_message(std::string_view xml_text) {
    xml::Document doc(xml_text);
    const auto* root = doc.root();
    if (!root || !xml::is_push(root, "push-message"))
        throw std::runtime_error(cat("not a push-message (root element <", root ? root->Name() : "", ">)"));
    PushMessage m;
    if (const auto* t = xml::push_child(root, "topic")) {
        auto text = xml::text(t, 4096);
        if (!text.empty()) m.topic = PushTopic(text);
    }
    if (const auto* cu = xml::push_child(root, "content-update")) {
        m.content_update = true;
        if (const auto* tok = xml::child(cu, xml::kDav, "sync-token")) m.sync_token = SyncToken(xml::text(tok, 4096));
    }
    if (const auto* pu = xml::push_child(root, "property-update")) {
        m.property_update = true;
        if (const auto* prop = xml::child(pu, xml::kDav, "prop"))
            if (xml::push_child(prop, "transports")) m.transports_changed = true;
    }
    return m;
}

std::string dont_notify_value(const RegistrationUrl& url) {
    std::string out = "\"";
    for (char c : url.str()) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

}  // namespace davsyncd::push
