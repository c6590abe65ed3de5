// libFuzzer harness for the URL helpers. Input: "base\nreference". Besides
// looking for crashes it checks invariants the sync code relies on: parsed
// and resolved URLs round-trip through str(), paths start with '/' and have
// no dot segments, and normalisation is idempotent.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "dav/url.hpp"

using namespace davsyncd::url;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool has_dot_segment(const std::string& path) {
    size_t pos = 0;
    while (pos <= path.size()) {
        size_t slash = path.find('/', pos);
        size_t end = slash == std::string::npos ? path.size() : slash;
        std::string seg = path.substr(pos, end - pos);
        if (seg == "." || seg == "..") return true;
        if (slash == std::string::npos) break;
        pos = slash + 1;
    }
    return false;
}

void check_url(const Url& u) {
    check(u.scheme == "http" || u.scheme == "https");
    check(!u.host.empty());
    check(u.port >= 1 && u.port <= 65535);
    check(!u.path.empty() && u.path[0] == '/');
    check(u.path.find("//") == std::string::npos);
    check(!has_dot_segment(u.path));
    for (char c : u.str()) check(static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f);
    auto again = parse(u.str());
    check(again.has_value());
    check(again->str() == u.str());
    check(same_origin(*again, u));
    check(again->origin() == u.origin());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    size_t nl = input.find('\n');
    std::string_view base_text = input.substr(0, nl);
    std::string_view ref = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);

    (void)redact(input);
    std::string norm = normalize_path(input);
    check(!norm.empty() && norm[0] == '/');
    check(normalize_path(norm) == norm);
    check(percent_decode(percent_encode_segment(input)) == input);
    (void)last_segment(input);

    auto base = parse(base_text);
    if (!base) return 0;
    check_url(*base);
    std::string redacted = redact(base_text);
    // Redaction keeps the origin and drops the query. (Its path may parse a
    // little differently: whitespace before a '?' becomes trailing and is trimmed.)
    if (auto r = parse(redacted)) {
        check(r->origin() == base->origin());
        check(r->query.empty());
    }

    if (auto resolved = resolve(*base, ref)) check_url(*resolved);
    return 0;
}
