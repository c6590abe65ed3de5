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
#include <string_view>
#include <vector>

#include "dav/http_client.hpp"
#include "push/push_xml.hpp"
#include "sync/account_sync.hpp"

namespace davsyncd::push {

struct Subscription {
    RegistrationUrl url;                 // Location, byte for byte
    std::optional<SystemTime> expires;   // as the server said (may be shorter than asked)
    std::string push_resource;           // the endpoint it was registered with
    std::optional<SystemTime> renewed_at;  // when the server last granted it
    friend bool operator==(const Subscription&, const Subscription&) = default;
};

// When a subscription is due for renewal: after two thirds of the lifetime
// the server granted, so that a server granting ten minutes is renewed every
// six or seven, not at every sync, and one granting three days after two.
// nullopt when the server gave no expiry. States written before renewed_at
// was kept renew one day before expiry.
std::optional<SystemTime> renewal_due(const Subscription& sub);
// The earliest renewal_due() of all, nullopt when none.
std::optional<SystemTime> next_renewal(const std::map<std::string, Subscription>& subs);

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

// Why a push endpoint from a distributor may not be used: it must be https,
// or plain http on loopback (127.0.0.0/8, ::1, localhost: test
// distributors). nullopt when it is fine. The reason names the endpoint's
// origin only: the rest of it is a capability.
std::optional<std::string> endpoint_refusal(std::string_view endpoint);

// Whether a registration URL is on the collection's origin, the only place
// we send its DELETE (with the account's credentials).
bool registration_on_collection_origin(const std::string& collection_url, const RegistrationUrl& registration);

// The write decorator for an account's HTTP client: every state-changing
// request to a subscribed collection (or a member of it) carries
// Push-Dont-Notify with that collection's registration URL.
dav::HttpClient::WriteDecorator dont_notify_decorator(const Subscriptions& subs);

}  // namespace davsyncd::push
