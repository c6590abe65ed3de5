#include "sync/item.hpp"

#include <memory>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstddef>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace davsyncd::sync {
namespace {

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (ascii_upper(a[i]) != ascii_upper(b[i])) return false;
    return true;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
    return s;
}

std::string_view trim_trailing(std::string_view s) {
    while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
    return s;
}

// The components whose UID and stamps identify an item.
bool is_main_component(std::string_view name) {
    return iequals(name, "VEVENT") || iequals(name, "VTODO") || iequals(name, "VJOURNAL") ||
           iequals(name, "VCARD");
}

// One content line (RFC 5545 §3.1) split into name and value. Parameters are
// skipped: the value starts after the first ':' outside a quoted parameter.
struct Property {
    std::string_view name;   // without a vCard group prefix ("item1.")
    std::string_view value;  // raw, trailing CR/whitespace removed
};

std::optional<Property> split_property(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && line[i] != ';' && line[i] != ':') ++i;
    if (i == line.size()) return std::nullopt;
    std::string_view name = line.substr(0, i);
    if (auto dot = name.rfind('.'); dot != std::string_view::npos) name.remove_prefix(dot + 1);
    bool quoted = false;
    for (; i < line.size(); ++i) {
        char c = line[i];
        if (c == '"') quoted = !quoted;
        else if (c == ':' && !quoted) break;
    }
    if (i == line.size()) return std::nullopt;
    return Property{name, trim_trailing(line.substr(i + 1))};
}

// Walks the logical (unfolded) lines of `content`. For each line `fn` gets
// the unfolded text and the offset just past the line's last physical line
// terminator (where a new line may be inserted).
template <typename Fn>
void for_each_line(std::string_view content, Fn&& fn) {
    std::string logical;
    size_t pos = 0;
    while (pos < content.size()) {
        logical.clear();
        size_t end;
        for (;;) {
            size_t nl = content.find('\n', pos);
            if (nl == std::string_view::npos) {
                logical.append(content.substr(pos));
                end = content.size();
                break;
            }
            std::string_view physical = content.substr(pos, nl - pos);
            if (!physical.empty() && physical.back() == '\r') physical.remove_suffix(1);
            logical.append(physical);
            end = nl + 1;
            if (end < content.size() && (content[end] == ' ' || content[end] == '\t')) {
                pos = end + 1;  // continuation: drop the break and one whitespace
                continue;
            }
            break;
        }
        pos = end;
        fn(std::string_view(logical), end);
    }
}

// One BEGIN/END block, with the properties the sync engine cares about taken
// from its own level only (not from nested components).
struct Component {
    std::string name;
    size_t after_begin = 0;  // offset just past the BEGIN line
    std::optional<std::string> uid;
    std::optional<std::string> last_modified;
    std::optional<std::string> dtstamp;
    std::optional<std::string> rev;
};

std::string ascii_upper(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = ascii_upper(c);
    return out;
}

// The components of `content` in order of their BEGIN lines. END:X closes the
// innermost open X (and anything opened inside it); a stray END is ignored.
// Linear in the input, however hostile: an END finds its BEGIN through a
// per-name stack instead of searching every open component (100 000 stray
// ENDs under 100 000 open BEGINs took minutes that way).
std::vector<Component> parse_components(std::string_view content) {
    std::vector<Component> all;
    // Depths in `open` of the open components of each (upper-cased) name,
    // innermost last. Node-based, so the pointers in `open` stay valid.
    std::unordered_map<std::string, std::vector<size_t>> open_by_name;
    struct Open {
        size_t index;                      // into `all`
        std::vector<size_t>* same_name;    // its entry in open_by_name
    };
    std::vector<Open> open;
    for_each_line(content, [&](std::string_view line, size_t end) {
        auto prop = split_property(line);
        if (!prop) return;
        if (iequals(prop->name, "BEGIN")) {
            Component c;
            c.name = std::string(trim(prop->value));
            c.after_begin = end;
            auto& same_name = open_by_name[ascii_upper(c.name)];
            same_name.push_back(open.size());
            all.push_back(std::move(c));
            open.push_back({all.size() - 1, &same_name});
            return;
        }
        if (iequals(prop->name, "END")) {
            auto it = open_by_name.find(ascii_upper(trim(prop->value)));
            if (it == open_by_name.end() || it->second.empty()) return;
            // Each component is opened once and closed once: linear overall.
            const size_t depth = it->second.back();
            while (open.size() > depth) {
                open.back().same_name->pop_back();
                open.pop_back();
            }
            return;
        }
        if (open.empty()) return;
        Component& top = all[open.back().index];
        auto take_first = [&](std::optional<std::string>& slot) {
            if (!slot && !prop->value.empty()) slot = std::string(prop->value);
        };
        if (iequals(prop->name, "UID")) take_first(top.uid);
        else if (iequals(prop->name, "LAST-MODIFIED")) take_first(top.last_modified);
        else if (iequals(prop->name, "DTSTAMP")) take_first(top.dtstamp);
        else if (iequals(prop->name, "REV")) take_first(top.rev);
    });
    return all;
}

const Component* main_component(const std::vector<Component>& all) {
    for (const auto& c : all)
        if (is_main_component(c.name)) return &c;
    return nullptr;
}

std::optional<std::string> digits_of(const std::optional<std::string>& value) {
    if (!value) return std::nullopt;
    std::string out;
    for (char c : *value)
        if (c >= '0' && c <= '9') out.push_back(c);
    if (out.empty()) return std::nullopt;
    return out;
}

}  // namespace

std::optional<std::string> find_uid(std::string_view content) {
    auto all = parse_components(content);
    const Component* main = main_component(all);
    if (!main) return std::nullopt;
    return main->uid;
}

std::string add_uid(std::string_view content, std::string_view uid) {
    // A UID with a line break would inject properties: drop the breaks.
    std::string clean;
    for (char c : uid)
        if (c != '\r' && c != '\n') clean.push_back(c);

    size_t first_nl = content.find('\n');
    const char* eol = (first_nl == std::string_view::npos || (first_nl > 0 && content[first_nl - 1] == '\r'))
                          ? "\r\n"
                          : "\n";

    std::string out;
    out.reserve(content.size() + 64);
    size_t copied = 0;
    for (const auto& c : parse_components(content)) {
        if (!is_main_component(c.name) || c.uid) continue;
        out.append(content.substr(copied, c.after_begin - copied));
        copied = c.after_begin;
        // The BEGIN line may be the last one, without a line break.
        if (c.after_begin == content.size() && !content.empty() && content.back() != '\n') {
            out.append(eol);
            out.append("UID:").append(clean);
        } else {
            out.append("UID:").append(clean).append(eol);
        }
    }
    out.append(content.substr(copied));
    return out;
}

std::optional<std::string> modification_stamp(std::string_view content) {
    auto all = parse_components(content);
    const Component* main = main_component(all);
    if (!main) return std::nullopt;
    if (auto s = digits_of(main->last_modified)) return s;
    if (auto s = digits_of(main->dtstamp)) return s;
    return digits_of(main->rev);
}

std::string content_hash(std::string_view content) {
    // Line endings do not count: XML parsing turns the CRLF of iCalendar
    // into LF, servers store either, and neither is a change by the user.
    std::string lf;
    if (content.find("\r\n") != std::string_view::npos) {
        lf.reserve(content.size());
        for (size_t i = 0; i < content.size(); ++i)
            if (!(content[i] == '\r' && i + 1 < content.size() && content[i + 1] == '\n')) lf.push_back(content[i]);
        content = lf;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(content.data(), content.size(), digest, &len, EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("SHA-256 failed");
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(len * 2);
    for (unsigned int i = 0; i < len; ++i) {
        out.push_back(hex[digest[i] >> 4]);
        out.push_back(hex[digest[i] & 0x0f]);
    }
    return out;
}

std::string random_uuid() {
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1) throw std::runtime_error("RAND_bytes failed");
    b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
    b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
        out.push_back(hex[b[i] >> 4]);
        out.push_back(hex[b[i] & 0x0f]);
    }
    return out;
}

bool looks_like(ItemFormat format, std::string_view content) {
    if (content.substr(0, 3) == "\xEF\xBB\xBF") content.remove_prefix(3);
    while (!content.empty() && is_blank(content.front())) content.remove_prefix(1);
    std::string_view want = format == ItemFormat::icalendar ? "BEGIN:VCALENDAR" : "BEGIN:VCARD";
    if (content.size() < want.size() || !iequals(content.substr(0, want.size()), want)) return false;
    // "BEGIN:VCARDX" is not a vCard.
    return content.size() == want.size() || is_blank(content[want.size()]);
}

const char* extension(ItemFormat format) { return format == ItemFormat::icalendar ? ".ics" : ".vcf"; }

const char* content_type(ItemFormat format) {
    return format == ItemFormat::icalendar ? "text/calendar; charset=utf-8" : "text/vcard; charset=utf-8";
}

}  // namespace davsyncd::sync
