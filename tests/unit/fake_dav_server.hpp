// An in-memory CalDAV collection behind FakeHttpServer, for engine tests
// that need server behaviour real servers will not show on demand: no
// sync-collection support, 507-truncated results, rejected tokens, and a
// request log to count what the engine asked for.
//
// One collection at /cal/ (iCalendar). Tokens are "tok-<version>"; each
// write bumps the version. Requests are parsed with plain string search:
// the engine under test builds them, so their shape is known.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "fake_http_server.hpp"

namespace testing {

class FakeDavCollection {
public:
    bool sync_collection = true;    // advertise and answer sync-collection
    size_t page_size = 0;           // >0: truncate sync-collection results (507)
    bool reject_tokens = false;     // answer sync-collection with valid-sync-token (403)
    bool weak_put_etags = false;    // answer PUT with a weak etag (the engine must not trust it)
    // Leave out of sync-collection what was created and deleted after the
    // token, as RFC 6578 §3.5 allows and Xandikos 0.2.8 does.
    bool omit_created_then_deleted = false;
    std::string path = "/cal/";
    // Runs before the collection's own handling; an answer replaces it.
    // Used to inject refusals, failures and servers that never finish.
    std::function<std::optional<CannedResponse>(const RecordedRequest&)> intercept;

    FakeDavCollection() {
        server_.set_handler([this](const RecordedRequest& r) {
            if (intercept)
                if (auto canned = intercept(r)) return *canned;
            return handle(r);
        });
    }

    std::string url() const { return server_.url(path); }
    std::vector<RecordedRequest> requests() const { return server_.requests(); }
    size_t count(const std::string& method, const std::string& body_part = "") const {
        size_t n = 0;
        for (const auto& r : server_.requests())
            if (r.method == method && r.body.find(body_part) != std::string::npos) ++n;
        return n;
    }

    // Server-side edits, as another client would make them.
    void put(const std::string& name, const std::string& data) {
        std::lock_guard l(mu_);
        store(name, data);
    }
    void remove(const std::string& name) {
        std::lock_guard l(mu_);
        erase(name);
    }
    std::string current_token() const {
        std::lock_guard l(mu_);
        return token();
    }
    std::map<std::string, std::string> items() const {
        std::lock_guard l(mu_);
        std::map<std::string, std::string> out;
        for (const auto& [n, it] : items_) out[n] = it.data;
        return out;
    }
    void set_raw_member(const std::string& href, const std::string& data) {  // hostile hrefs
        std::lock_guard l(mu_);
        extra_members_.push_back({href, data});
    }

private:
    struct Item {
        std::string data;
        std::string etag;
        unsigned version;
    };
    struct Change {
        unsigned version;
        std::string name;
        bool removed = false;
    };

    void store(const std::string& name, const std::string& data) {
        ++version_;
        items_[name] = Item{data, "\"e" + std::to_string(version_) + "\"", version_};
        log_.push_back({version_, name});
    }
    void erase(const std::string& name) {
        ++version_;
        items_.erase(name);
        log_.push_back({version_, name, true});
    }

    static std::string between(const std::string& s, const std::string& open, const std::string& close, size_t from = 0) {
        auto a = s.find(open, from);
        if (a == std::string::npos) return {};
        a += open.size();
        auto b = s.find(close, a);
        return b == std::string::npos ? std::string() : s.substr(a, b - a);
    }
    static std::string xml_escape(const std::string& s) {
        std::string o;
        for (char c : s) {
            if (c == '&') o += "&amp;";
            else if (c == '<') o += "&lt;";
            else if (c == '>') o += "&gt;";
            else if (c == '\r') o += "&#13;";  // as lxml does; a bare CR would be normalised away
            else o += c;
        }
        return o;
    }
    static CannedResponse multistatus(const std::string& inner) {
        return {207, {{"Content-Type", "application/xml"}},
                R"(<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/">)" +
                    inner + "</d:multistatus>"};
    }
    std::string member(const std::string& name, bool with_data) const {
        const auto& it = items_.at(name);
        return "<d:response><d:href>" + path + name + "</d:href><d:propstat><d:prop><d:getetag>" + xml_escape(it.etag) +
               "</d:getetag>" + (with_data ? "<c:calendar-data>" + xml_escape(it.data) + "</c:calendar-data>" : "") +
               "</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>";
    }
    std::string token() const { return "tok-" + std::to_string(version_); }
    // Whether `name` did not exist at version `since`.
    bool created_after(const std::string& name, unsigned since) const {
        bool existed = false;
        for (const auto& c : log_) {
            if (c.version > since) break;
            if (c.name == name) existed = !c.removed;
        }
        return !existed;
    }
    std::string name_of(const std::string& target) const { return target.substr(path.size()); }

    CannedResponse handle(const RecordedRequest& r) {
        std::lock_guard l(mu_);
        if (r.method == "PROPFIND" && r.header("Depth") == "0") {
            return multistatus("<d:response><d:href>" + path + "</d:href><d:propstat><d:prop>" +
                               (sync_collection ? "<d:sync-token>" + token() + "</d:sync-token>" : "") +
                               "<cs:getctag>ctag-" + std::to_string(version_) +
                               "</cs:getctag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>");
        }
        if (r.method == "PROPFIND") {
            std::string out = "<d:response><d:href>" + path + "</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>";
            for (const auto& [n, it] : items_) out += member(n, false);
            return multistatus(out);
        }
        if (r.method == "REPORT" && r.body.find("sync-collection") != std::string::npos) {
            if (!sync_collection) return {403, {}, "<d:error xmlns:d=\"DAV:\"><d:supported-report/></d:error>"};
            auto since_text = between(r.body, "<D:sync-token>", "</D:sync-token>");
            unsigned since = 0;
            if (!since_text.empty()) {
                if (reject_tokens || !since_text.starts_with("tok-"))
                    return {403, {}, R"(<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>)"};
                since = static_cast<unsigned>(std::stoul(since_text.substr(4)));
            }
            // Latest change per name after `since`, in version order.
            std::map<std::string, unsigned> latest;
            for (const auto& c : log_)
                if (c.version > since) latest[c.name] = c.version;
            std::vector<std::pair<unsigned, std::string>> ordered;
            for (const auto& [n, v] : latest) ordered.push_back({v, n});
            std::sort(ordered.begin(), ordered.end());
            bool truncated = page_size && ordered.size() > page_size;
            if (truncated) ordered.resize(page_size);
            std::string out;
            for (const auto& [v, n] : ordered) {
                if (!items_.contains(n) && omit_created_then_deleted && created_after(n, since)) continue;
                if (items_.contains(n)) out += member(n, false);
                else out += "<d:response><d:href>" + path + n + "</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>";
            }
            if (truncated) out += "<d:response><d:href>" + path + "</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>";
            std::string tok = truncated ? "tok-" + std::to_string(ordered.back().first) : token();
            return multistatus(out + "<d:sync-token>" + tok + "</d:sync-token>");
        }
        if (r.method == "REPORT" && r.body.find("calendar-multiget") != std::string::npos) {
            std::string out;
            size_t pos = 0;
            for (;;) {
                auto href = between(r.body, "<D:href>", "</D:href>", pos);
                if (href.empty()) break;
                pos = r.body.find("</D:href>", pos) + 1;
                auto n = href.substr(path.size());
                if (items_.contains(n)) out += member(n, true);
                else out += "<d:response><d:href>" + href + "</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>";
            }
            return multistatus(out);
        }
        if (r.method == "REPORT" && r.body.find("calendar-query") != std::string::npos) {
            std::string out;
            for (const auto& [n, it] : items_) out += member(n, true);
            for (const auto& [href, data] : extra_members_)
                out += "<d:response><d:href>" + href + "</d:href><d:propstat><d:prop><d:getetag>\"x\"</d:getetag><c:calendar-data>" +
                       xml_escape(data) + "</c:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>";
            return multistatus(out);
        }
        auto n = name_of(r.target);
        bool exists = items_.contains(n);
        auto if_match = r.header("If-Match");
        if (r.method == "GET") {
            if (!exists) return {404, {}, ""};
            return {200, {{"ETag", items_[n].etag}}, items_[n].data};
        }
        if (r.method == "PUT") {
            if (r.header("If-None-Match") == "*" && exists) return {412, {}, ""};
            if (!if_match.empty() && (!exists || items_[n].etag != if_match)) return {412, {}, ""};
            store(n, r.body);
            return {exists ? 204 : 201, {{"ETag", (weak_put_etags ? "W/" : "") + items_[n].etag}}, ""};
        }
        if (r.method == "DELETE") {
            if (!exists) return {404, {}, ""};
            if (!if_match.empty() && items_[n].etag != if_match) return {412, {}, ""};
            erase(n);
            return {204, {}, ""};
        }
        return {405, {}, ""};
    }

    mutable std::mutex mu_;
    std::map<std::string, Item> items_;
    std::vector<Change> log_;
    std::vector<std::pair<std::string, std::string>> extra_members_;
    unsigned version_ = 0;
    FakeHttpServer server_;  // last: its thread stops before the members above die
};

}  // namespace testing
