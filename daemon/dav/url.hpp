// Just enough URL handling for WebDAV: split an absolute http(s) URL, resolve
// an href (absolute path or absolute URL) against it, and tell whether two
// URLs share an origin. Pure functions, any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace davsyncd::url {

struct Url {
    std::string scheme;  // "http" or "https", lower case
    std::string host;    // lower case; IPv6 without brackets
    int port = 0;        // explicit or the scheme's default
    std::string path;    // percent-encoded, starts with '/'
    std::string query;   // without '?', may be empty

    std::string origin() const;      // "https://host[:port]" (default port omitted)
    std::string str() const;         // origin + path (+ "?" + query)
};

// nullopt unless `s` is an absolute http(s) URL with a host.
std::optional<Url> parse(std::string_view s);

// RFC 3986 reference resolution for the forms servers send in hrefs and
// Location headers: absolute URLs, absolute paths, and relative paths.
std::optional<Url> resolve(const Url& base, std::string_view reference);

bool same_origin(const Url& a, const Url& b);

// Why a redirect from `from` to `to` must not be followed ("from https to
// plain http", "another origin than https://a.example"), nullopt when it
// stays within the origin. Credentials go with our requests, so a server
// may only send us elsewhere on itself.
std::optional<std::string> redirect_refusal(const Url& from, const Url& to);

// The origin of an absolute http(s) URL ("https://host[:port]"), nullopt
// for anything else.
std::optional<std::string> origin_of(std::string_view s);

// Whether the host is this machine's loopback: 127.0.0.0/8, ::1 or
// "localhost". Nothing sent there leaves the machine.
bool is_loopback(const Url& u);

// The URL without user info and query, for logs: never leak credentials.
std::string redact(std::string_view s);

// Percent-decoding (invalid escapes are kept as they are) and encoding of one
// path segment (unreserved characters kept).
std::string percent_decode(std::string_view s);
std::string percent_encode_segment(std::string_view s);

// Collapse "//" and resolve "." / ".." in a path; keeps a trailing slash.
std::string normalize_path(std::string_view path);

// Last non-empty path segment, percent-decoded ("/a/b/" -> "b").
std::string last_segment(std::string_view path);

}  // namespace davsyncd::url
