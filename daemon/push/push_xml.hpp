// The WebDAV-Push wire format (draft-bitfire-webdav-push-00): the
// push-register request we send, the server's answer to it, and the
// push-message we receive. Parsing accepts both the current namespace
// (https://bitfire.at/webdav-push) and the one servers used before late
// 2024 (DAV:Push); we always send the current one.
//
// Pure functions, any thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dav/http_client.hpp"
#include "dav/types.hpp"

namespace davsyncd::push {

using SystemTime = std::chrono::system_clock::time_point;

struct RegisterRequest {
    std::string push_resource;       // the endpoint the distributor gave us
    std::string public_key;          // our P-256 key, base64url uncompressed
    std::string auth_secret;         // base64url
    std::optional<SystemTime> expires;
};

// The push-register body: one web-push-subscription, one trigger
// (content-update depth 1, property-update depth 0 for displayname and
// colour), and the requested expiry.
std::string register_body(const RegisterRequest& r);

// IMF-fixdate ("Wed, 20 Dec 2023 10:03:31 GMT").
std::string http_date(SystemTime t);
// Parses IMF-fixdate, also with "+0000" instead of "GMT" (Nextcloud).
std::optional<SystemTime> parse_http_date(std::string_view s);

struct Registration {
    RegistrationUrl url;                // Location, absolute, byte for byte
    std::optional<SystemTime> expires;  // Expires header, if any
};

// Why a registration failed and what to do about it.
struct RegisterRefused {
    long status = 0;
    std::string reason;                                // e.g. "invalid-subscription", "HTTP 400"
    std::optional<std::chrono::seconds> retry_after;   // 429 / 503
    bool permanent = false;                            // retrying the same request will not help
};

// Interprets the server's answer to a push-register POST: 200, 201 and 204
// with a Location are success; 403 names a precondition (any spelling of
// the draft); 400 (Nextcloud), 429 and others are refusals.
// Returns the registration, or fills `refused`.
std::optional<Registration> parse_register_response(const dav::Response& response, const std::string& request_url,
                                                    RegisterRefused& refused);

struct PushMessage {
    std::optional<PushTopic> topic;
    bool content_update = false;
    SyncToken sync_token;               // from content-update, may be empty
    bool property_update = false;
    bool transports_changed = false;    // property-update naming transports (VAPID rotation)
};

// Parses a decrypted push-message. Throws std::runtime_error naming what is
// wrong (not XML, wrong root, ...).
PushMessage parse_push_message(std::string_view xml_text);

// Push-Dont-Notify header value for one registration URL: the URL as a
// quoted-string (RFC 9110 §5.6.4), backslash-escaping '"' and '\'.
std::string dont_notify_value(const RegistrationUrl& url);

}  // namespace davsyncd::push
