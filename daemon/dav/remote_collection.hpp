// The requests the sync engine makes of one calendar or address book on the
// server: listing changes (RFC 6578 sync-collection), full listings, fetching
// bodies (multiget), and conditional writes. One method, one request (the
// engine counts on that to keep its request budget honest).
//
// Member hrefs in responses are checked: an href on another origin or
// outside the collection is dropped with a warning, never followed.
//
// Thread affinity: whoever owns the HttpClient.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dav/discovery.hpp"
#include "dav/http_client.hpp"
#include "dav/types.hpp"
#include "dav/xml.hpp"

namespace davsyncd::dav {

struct MemberEtag {
    Href href;
    Etag etag;
};

struct MemberData {
    Href href;
    Etag etag;
    std::string data;
};

// One answer to sync-collection.
struct ChangePage {
    std::vector<MemberEtag> changed;   // created or modified since the token
    std::vector<Href> deleted;
    SyncToken token;                   // the token after this page
    bool truncated = false;            // 507 on the collection: ask again with `token`
};

// The server no longer accepts our sync token (DAV:valid-sync-token
// precondition, recognised by the error element whatever the status code).
struct InvalidSyncToken : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The answer to a PUT or DELETE. Every status is a result, not an
// exception (except 401, which concerns the whole account), so that one
// refused item never stops the rest of the collection.
struct WriteResult {
    long status = 0;
    Etag etag;           // from the response; empty when the server sent none
    std::string reason;  // the server's own words (Sabre's s:message, a text body), may be empty
    std::string condition;  // the precondition the server named (e.g. "valid-calendar-data"), may be empty
    bool ok() const { return status >= 200 && status < 300; }
    // The version on the server is not the one we named: a conflict.
    bool precondition_failed() const { return status == 412 && condition.empty(); }
    bool not_found() const { return status == 404 || status == 410; }
    // The server will not take this version of the item, however often it
    // is sent: 400, 403, 409 (no-uid-conflict), 413, 415, 422 and the like.
    bool refused() const {
        return status >= 400 && status < 500 && !precondition_failed() && !not_found() && status != 401 &&
               status != 408 && status != 423 && status != 429;
    }
    // (A 412 that names a content precondition is refused(), not precondition_failed().)
    // Worth trying again later: 5xx (507 included), 408, 423, 429, and
    // anything else unexpected (a redirect we did not follow).
    bool temporary() const { return !ok() && !precondition_failed() && !not_found() && !refused(); }
    // "HTTP 403: <reason>", for logs and the conflicts folder.
    std::string describe() const;
};

// How a PUT guards against overwriting a change it has not seen.
enum class PutCondition {
    create,        // If-None-Match: * (a new member)
    if_match,      // If-Match: <etag> (an update of the version we know)
    unconditional  // the server gave no etag to match (rare): plain PUT
};

class RemoteCollection {
public:
    RemoteCollection(HttpClient& http, CollectionInfo info);

    const CollectionInfo& info() const { return info_; }
    const std::string& url() const { return info_.url; }
    bool is_addressbook() const { return info_.kind == CollectionKind::addressbook; }
    uint64_t requests_sent() const { return http_.requests_sent(); }

    // Depth-0 PROPFIND of the sync-token alone, or of the getctag alone:
    // servers compute each from every item (Radicale 3.1.8, 10 000 contacts:
    // 1.0-1.4 s for one, 1.9-3.0 s for both), so never ask for both.
    SyncToken current_token();
    CTag current_ctag();
    // REPORT sync-collection asking for etags only. Throws InvalidSyncToken.
    ChangePage changes_since(const SyncToken& token);
    // PROPFIND Depth 1 of getetag (servers without sync-collection).
    std::vector<MemberEtag> list_etags();
    // calendar-query / addressbook-query returning every member with its data:
    // the cheapest complete listing on the servers measured. (Not a
    // sync-collection asking for the data: Xandikos 0.2.8 answers 404 for
    // calendar-data there, and its multiget costs ~0.1 s per item.)
    //
    // Listings with data are read as they arrive (xml::MultistatusReader):
    // each member goes to `sink` once its response is complete, so memory
    // holds one member at a time whatever the collection's size.
    using MemberSink = std::function<void(MemberData&&)>;
    void list_all(const MemberSink& sink);
    // calendar-multiget / addressbook-multiget; members the server reports
    // missing are left out.
    void multiget(const std::vector<Href>& hrefs, const MemberSink& sink);
    // GET; nullopt on 404/410.
    std::optional<MemberData> get(const Href& href);
    // PUT guarded by `condition` (`etag` is used with if_match). Throws only
    // for 401 and transport failures; every other status is a WriteResult.
    WriteResult put(const Href& href, const std::string& body, PutCondition condition, const Etag& etag = {});
    // DELETE with If-Match (none when the etag is unknown). Same contract as put().
    WriteResult remove(const Href& href, const Etag& if_match);

    // The href for a new member with this file name (percent-encoded).
    Href member_href(const std::string& file_name) const;

private:
    std::string absolute(const Href& href) const;
    // The href as a member of this collection, or nullopt (logged) when it is
    // on another origin, outside the collection, or the collection itself.
    std::optional<Href> member(std::string_view href) const;
    [[noreturn]] void fail(const Request& req, const Response& resp) const;
    // Sends a request answered by a multistatus and reads it as it arrives:
    // `on_response` sees each DAV:response; returns the top-level sync-token.
    // A non-207 answer is returned in `answer` for the caller to judge.
    std::optional<std::string> stream_multistatus(Request req, const std::function<void(const xml::Response&)>& on_response,
                                                  Response& answer);
    void stream_data(Request req, const MemberSink& sink);
    WriteResult write_result(const Request& req, const Response& resp) const;
    std::string current_property(std::string_view ns, std::string_view name);  // "" when absent

    HttpClient& http_;
    CollectionInfo info_;
    url::Url base_;
    std::string decoded_path_;  // base_.path percent-decoded, to compare member paths with
};

}  // namespace davsyncd::dav
