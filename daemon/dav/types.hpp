// Small value types for the WebDAV vocabulary, so that a function taking an
// href cannot be handed an etag by mistake. They are plain strings inside;
// the point is the name at the call site, not behaviour.
#pragma once

#include <compare>
#include <string>
#include <string_view>
#include <utility>

namespace davsyncd {

template <typename Tag>
class StrongString {
public:
    StrongString() = default;
    explicit StrongString(std::string v) : value_(std::move(v)) {}

    const std::string& str() const noexcept { return value_; }
    bool empty() const noexcept { return value_.empty(); }

    friend auto operator<=>(const StrongString&, const StrongString&) = default;

private:
    std::string value_;
};

// Path part of a member or collection URL, percent-encoded exactly as the
// server sent it (e.g. "/dav/calendars/alice/work/event1.ics").
using Href = StrongString<struct HrefTag>;
// Entity tag including its quotes, exactly as the server sent it ("\"abc\"" or W/"abc").
using Etag = StrongString<struct EtagTag>;
// RFC 6578 sync token (an opaque URI), or empty for "no token yet".
using SyncToken = StrongString<struct SyncTokenTag>;
// Calendar server ctag (CS:getctag), an opaque string.
using CTag = StrongString<struct CTagTag>;
// Absolute registration URL of a WebDAV-Push subscription (the Location header).
using RegistrationUrl = StrongString<struct RegistrationUrlTag>;
// WebDAV-Push topic of a collection.
using PushTopic = StrongString<struct PushTopicTag>;

}  // namespace davsyncd
