// WebDAV-Push subscriptions of one account: what we registered where, kept
// in <state>/<account>/push.json (0600), and the maintenance that keeps them
// in line with the collections and the distributor's endpoint.
//
// maintain() runs on the sync job's thread (it makes HTTP requests); the
// main loop hands it a copy and takes the result back.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dav/http_client.hpp"
#include "push/push_xml.hpp"
#include "sync/account_sync.hpp"

namespace davsyncd::push {

struct Subscription {
    RegistrationUrl url;                 // Location, byte for byte
    std::optional<SystemTime> expires;   // as the server said (may be shorter than asked)
    std::string push_resource;           // the endpoint it was registered with
    friend bool operator==(const Subscription&, const Subscription&) = default;
};

// By collection URL.
using Subscriptions = std::map<std::string, Subscription>;

struct AccountPushState {
    std::string token;                   // UnifiedPush token: a UUID, stable across restarts
    std::string endpoint;                // current endpoint from the distributor ("" = none)
    Subscriptions subscriptions;

    // Missing file: a fresh state with a new token. Corrupt: same, logged.
    static AccountPushState load(const std::filesystem::path& file);
    void save(const std::filesystem::path& file) const;  // atomic, 0600
};

struct MaintainInput {
    std::string endpoint;                // "" = unsubscribe everything
    std::string public_key;              // base64url
    std::string auth_secret;             // base64url
    SystemTime now;
    std::chrono::seconds lifetime{3 * 24 * 3600};     // asked for at registration
    std::chrono::seconds renew_before{24 * 3600};     // renew when less is left
};

struct MaintainResult {
    unsigned registered = 0, renewed = 0, removed = 0;
    std::vector<std::string> errors;     // one line per refused registration
    std::optional<std::chrono::seconds> retry_after;
};

// Brings `subs` in line: DELETEs registrations of collections that went
// away or of an old endpoint, POSTs push-register for push-capable
// collections without a (fresh enough) subscription.
MaintainResult maintain(dav::HttpClient& http, const std::vector<sync::PlannedCollection>& plans,
                        const MaintainInput& in, Subscriptions& subs);

// The write decorator for an account's HTTP client: every state-changing
// request to a subscribed collection (or a member of it) carries
// Push-Dont-Notify with that collection's registration URL.
dav::HttpClient::WriteDecorator dont_notify_decorator(const Subscriptions& subs);

}  // namespace davsyncd::push
