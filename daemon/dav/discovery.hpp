// Account discovery: from the URL a user pastes (the server, a service root
// such as /remote.php/dav or /dav.php, a principal, a home or one
// collection) to the list of calendars and address books, with the
// properties the sync engine and the push code need.
//
// Steps (RFC 6764 §6, RFC 4791 §6.2.1, RFC 6352 §7.1.1):
//   1. PROPFIND current-user-principal on the configured URL, then on
//      /.well-known/caldav and /.well-known/carddav (redirects followed),
//      whatever the configured URL answered (a web page, 401, 404, 500).
//   2. PROPFIND calendar-home-set and addressbook-home-set on the principal.
//   3. PROPFIND Depth 1 on each home: resourcetype, displayname, colour,
//      supported components, supported-report-set, current-user-privilege-set
//      and the WebDAV-Push properties. Not the sync-token or the ctag: the
//      sync engine reads those when it syncs.
// When no principal is found, the URL that answered WebDAV is the home, or
// the one collection when it is a calendar or address book itself.
//
// Thread affinity: whoever owns the HttpClient.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "dav/http_client.hpp"
#include "dav/types.hpp"

namespace davsyncd::dav {

enum class CollectionKind { calendar, tasks, addressbook };
const char* to_string(CollectionKind k);
std::optional<CollectionKind> kind_from_string(std::string_view s);

// What a collection says about WebDAV-Push (draft-bitfire-webdav-push-00).
struct PushSupport {
    bool web_push = false;               // transports contains web-push
    std::string vapid_public_key;        // base64url, empty when none advertised
    PushTopic topic;
    std::optional<std::string> content_update_depth;   // supported-triggers
    std::optional<std::string> property_update_depth;
    bool usable() const { return web_push && !topic.empty(); }
};

struct CollectionInfo {
    Href href;                 // as the server sent it
    std::string url;           // absolute
    std::string id;            // last path segment, percent-decoded
    std::string display_name;
    std::string color;         // "#RRGGBB" or "#RRGGBBAA" as sent, may be empty
    std::string description;
    CollectionKind kind = CollectionKind::calendar;
    std::vector<std::string> components;  // VEVENT, VTODO, ... (calendars only)
    bool supports_sync_collection = false;
    // DAV:current-user-privilege-set (RFC 3744) grants no write privilege:
    // shared calendars, subscriptions, Nextcloud's birthday calendar.
    bool read_only = false;
    PushSupport push;
};

struct DiscoveryResult {
    std::string principal_url;           // empty when none was found
    std::vector<std::string> calendar_homes;
    std::vector<std::string> addressbook_homes;
    std::vector<std::string> scheduling_boxes;  // RFC 6638 inbox and outbox: never synced
    bool server_advertises_push = false; // "webdav-push" in the DAV header
    std::vector<CollectionInfo> collections;
};

struct DiscoveryError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Throws RemoteError for a refused request and DiscoveryError when nothing
// usable was found or a response was malformed, both naming the URL. When no
// URL tried speaks WebDAV, the error lists each with its answer; it is a
// RemoteError with status 401 (authentication failed) when one of them
// refused the credentials and none was down, a RemoteError with the 5xx/429
// status (and Retry-After) when one was down. Hrefs that point to another
// origin than the account's are skipped with a warning.
DiscoveryResult discover(HttpClient& http, const std::string& account_url);

// The collections of the homes an earlier discovery found: one Depth-1
// PROPFIND per home and nothing else, for the frequent rediscovery (a user's
// Sync(), every poll). nullopt when the earlier result has no homes or a home
// no longer answers 207: then a full discover() is due. Throws RemoteError
// for 401 and for a server that is down (5xx, 429).
std::optional<DiscoveryResult> rediscover_homes(HttpClient& http, const DiscoveryResult& known);

// Reads the collection properties (Depth 0) of one known collection, e.g.
// after a push property-update. Same parsing as discovery.
CollectionInfo read_collection(HttpClient& http, const std::string& collection_url);

nlohmann::json to_json(const DiscoveryResult& r);
nlohmann::json to_json(const CollectionInfo& c);
CollectionInfo collection_from_json(const nlohmann::json& j);
DiscoveryResult discovery_from_json(const nlohmann::json& j);  // throws nlohmann::json::exception

}  // namespace davsyncd::dav
