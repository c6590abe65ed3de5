#include "dav/url.hpp"

#include <vector>

#include "core/log.hpp"

namespace davsyncd::url {

namespace {

constexpr std::string_view kHex = "0123456789ABCDEF";

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_unreserved(char c) {
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}
bool is_control(char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
}
bool is_url_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

int hex_value(char c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c - 'A' + 10;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lower(c);
    return out;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_url_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_url_space(s.back())) s.remove_suffix(1);
    return s;
}

bool has_control(std::string_view s) {
    for (char c : s)
        if (is_control(c)) return true;
    return false;
}

int default_port(std::string_view scheme) { return scheme == "https" ? 443 : 80; }

// Percent-encodes the characters that may not appear raw in a path or query
// (space, quotes, angle brackets, backslash, ..., and non-ASCII bytes). '%'
// is kept, so encoding an already encoded string changes nothing.
std::string encode_illegal(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        bool bad = u <= 0x20 || u >= 0x7f || c == '"' || c == '<' || c == '>' || c == '\\' || c == '^' ||
                   c == '`' || c == '{' || c == '|' || c == '}';
        if (bad) {
            out += '%';
            out += kHex[u >> 4];
            out += kHex[u & 0x0f];
        } else {
            out += c;
        }
    }
    return out;
}

// Length of a scheme at the start of `s` including the ':', 0 when none.
size_t scheme_length(std::string_view s) {
    if (s.empty() || !is_alpha(s[0])) return 0;
    for (size_t i = 1; i < s.size(); ++i) {
        char c = s[i];
        if (c == ':') return i + 1;
        if (!(is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.')) return 0;
    }
    return 0;
}

// A segment that is "." or ".." once "%2e" is decoded (as browsers treat it).
int dot_segment(std::string_view seg) {
    int dots = 0;
    for (size_t i = 0; i < seg.size();) {
        if (seg[i] == '.') {
            ++i;
        } else if (seg.size() - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' && (seg[i + 2] == 'e' || seg[i + 2] == 'E')) {
            i += 3;
        } else {
            return 0;
        }
        if (++dots > 2) return 0;
    }
    return dots;
}

bool valid_reg_name(std::string_view host) {
    if (host.empty()) return false;
    for (char c : host)
        if (!is_unreserved(c)) return false;
    return true;
}

bool valid_ipv6(std::string_view host) {
    if (host.find(':') == std::string_view::npos) return false;
    for (char c : host)
        if (!(is_hex(c) || c == ':' || c == '.')) return false;
    return true;
}

// Splits the path/query/fragment tail of a URL: fragment dropped.
void split_tail(std::string_view tail, std::string_view& path, std::string_view& query, bool& has_query) {
    if (size_t hash = tail.find('#'); hash != std::string_view::npos) tail = tail.substr(0, hash);
    size_t q = tail.find('?');
    has_query = q != std::string_view::npos;
    path = tail.substr(0, q);
    query = has_query ? tail.substr(q + 1) : std::string_view();
}

}  // namespace

// --- Url --------------------------------------------------------------------

std::string Url::origin() const {
    std::string out = cat(scheme, "://");
    if (host.find(':') != std::string::npos)
        out += cat("[", host, "]");
    else
        out += host;
    if (port != default_port(scheme)) out += cat(":", port);
    return out;
}

std::string Url::str() const {
    std::string out = origin() + (path.empty() ? std::string("/") : path);
    if (!query.empty()) out += cat("?", query);
    return out;
}

std::optional<Url> parse(std::string_view s) {
    s = trim(s);
    if (has_control(s)) return std::nullopt;
    size_t sl = scheme_length(s);
    if (sl == 0) return std::nullopt;
    Url u;
    u.scheme = to_lower(s.substr(0, sl - 1));
    if (u.scheme != "http" && u.scheme != "https") return std::nullopt;
    s.remove_prefix(sl);
    if (s.substr(0, 2) != "//") return std::nullopt;
    s.remove_prefix(2);

    size_t auth_end = s.find_first_of("/?#");
    std::string_view authority = s.substr(0, auth_end);
    std::string_view tail = auth_end == std::string_view::npos ? std::string_view() : s.substr(auth_end);

    // User info is accepted and dropped: credentials never live in a Url.
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);

    std::string_view host, port;
    bool has_port = false;
    if (!authority.empty() && authority.front() == '[') {
        size_t close = authority.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        host = authority.substr(1, close - 1);
        if (!valid_ipv6(host)) return std::nullopt;
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return std::nullopt;
            has_port = true;
            port = after.substr(1);
        }
    } else {
        size_t colon = authority.find(':');
        host = authority.substr(0, colon);
        if (colon != std::string_view::npos) {
            has_port = true;
            port = authority.substr(colon + 1);
        }
        if (!valid_reg_name(host)) return std::nullopt;
    }
    u.host = to_lower(host);

    u.port = default_port(u.scheme);
    if (has_port && !port.empty()) {  // "host:" means the default port
        int value = 0;
        for (char c : port) {
            if (!is_digit(c)) return std::nullopt;
            value = value * 10 + (c - '0');
            if (value > 65535) return std::nullopt;
        }
        if (value < 1) return std::nullopt;
        u.port = value;
    }

    std::string_view path, query;
    bool has_query = false;
    split_tail(tail, path, query, has_query);
    u.path = encode_illegal(normalize_path(path));
    u.query = encode_illegal(query);
    return u;
}

std::optional<Url> resolve(const Url& base, std::string_view reference) {
    reference = trim(reference);
    if (has_control(reference)) return std::nullopt;

    if (size_t sl = scheme_length(reference); sl != 0) {
        // Absolute URL; only http(s) is of any use to us.
        return parse(reference);
    }
    if (reference.substr(0, 2) == "//") return parse(cat(base.scheme, ":", reference));

    std::string_view path, query;
    bool has_query = false;
    split_tail(reference, path, query, has_query);

    Url out = base;
    if (path.empty()) {
        // "" or "?q": same path, query from the reference when it has one.
        if (has_query) out.query = encode_illegal(query);
        out.path = encode_illegal(normalize_path(base.path));
        return out;
    }
    std::string merged;
    if (path.front() == '/') {
        merged = std::string(path);
    } else {
        std::string_view dir = base.path;
        size_t slash = dir.rfind('/');
        dir = slash == std::string_view::npos ? std::string_view("/") : dir.substr(0, slash + 1);
        merged = cat(dir, path);
    }
    out.path = encode_illegal(normalize_path(merged));
    out.query = encode_illegal(query);
    return out;
}

bool same_origin(const Url& a, const Url& b) {
    return a.scheme == b.scheme && a.host == b.host && a.port == b.port;
}

std::optional<std::string> redirect_refusal(const Url& from, const Url& to) {
    if (same_origin(from, to)) return std::nullopt;
    if (from.scheme == "https" && to.scheme == "http") return std::string("from https to plain http");
    return cat("another origin than ", from.origin());
}

std::optional<std::string> origin_of(std::string_view s) {
    auto u = parse(s);
    if (!u) return std::nullopt;
    return u->origin();
}

bool is_loopback(const Url& u) {
    if (u.host == "localhost" || u.host == "::1") return true;
    // Dotted-quad 127.x.y.z only: "127.evil.example" is a name, not an address.
    std::string_view h = u.host;
    if (!h.starts_with("127.")) return false;
    int parts = 0;
    size_t pos = 0;
    while (pos <= h.size()) {
        size_t dot = h.find('.', pos);
        std::string_view part = h.substr(pos, dot == std::string_view::npos ? std::string_view::npos : dot - pos);
        if (part.empty() || part.size() > 3) return false;
        int value = 0;
        for (char c : part) {
            if (!is_digit(c)) return false;
            value = value * 10 + (c - '0');
        }
        if (value > 255) return false;
        ++parts;
        if (dot == std::string_view::npos) break;
        pos = dot + 1;
    }
    return parts == 4;
}

// --- redaction --------------------------------------------------------------

std::string redact(std::string_view s) {
    // The query and the fragment go first: everything from the first '?' or '#'.
    s = s.substr(0, s.find_first_of("?#"));

    // Then the user info of the (first) authority: after "scheme://", after a
    // leading "//", or a bare "user:pw@host/..." with no scheme at all.
    size_t auth = std::string_view::npos;
    if (size_t sep = s.find("://"); sep != std::string_view::npos) {
        auth = sep + 3;
    } else if (s.substr(0, 2) == "//") {
        auth = 2;
    } else if (!s.empty() && s.front() != '/' && s.substr(0, s.find('/')).find('@') != std::string_view::npos) {
        auth = 0;
    }
    if (auth == std::string_view::npos) return std::string(s);

    size_t auth_end = s.find('/', auth);
    if (auth_end == std::string_view::npos) auth_end = s.size();
    std::string_view authority = s.substr(auth, auth_end - auth);
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
    return cat(s.substr(0, auth), authority, s.substr(auth_end));
}

// --- paths ------------------------------------------------------------------

std::string percent_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && is_hex(s[i + 1]) && is_hex(s[i + 2])) {
            out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

std::string percent_encode_segment(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        if (is_unreserved(c)) {
            out += c;
        } else {
            auto u = static_cast<unsigned char>(c);
            out += '%';
            out += kHex[u >> 4];
            out += kHex[u & 0x0f];
        }
    }
    return out;
}

std::string normalize_path(std::string_view path) {
    std::vector<std::string_view> segments;
    bool trailing_slash = false;
    size_t pos = 0;
    while (pos <= path.size()) {
        size_t slash = path.find('/', pos);
        size_t end = slash == std::string_view::npos ? path.size() : slash;
        std::string_view seg = path.substr(pos, end - pos);
        bool last = slash == std::string_view::npos;
        int dots = dot_segment(seg);
        if (seg.empty()) {
            if (last) trailing_slash = true;  // "a/" ends with an empty segment
        } else if (dots == 1) {
            if (last) trailing_slash = true;
        } else if (dots == 2) {
            if (!segments.empty()) segments.pop_back();
            if (last) trailing_slash = true;
        } else {
            segments.push_back(seg);
        }
        if (last) break;
        pos = slash + 1;
    }
    if (segments.empty()) return "/";
    std::string out;
    for (std::string_view seg : segments) {
        out += '/';
        out += seg;
    }
    if (trailing_slash) out += '/';
    return out;
}

std::string last_segment(std::string_view path) {
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    size_t slash = path.rfind('/');
    std::string_view seg = slash == std::string_view::npos ? path : path.substr(slash + 1);
    return percent_decode(seg);
}

}  // namespace davsyncd::url
