#include "core/sanitize.hpp"

#include "core/utf8.hpp"

namespace davsyncd::sanitize {
namespace {

constexpr char kHex[] = "0123456789abcdef";

enum class Target { bus, terminal };

bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f); }

bool is_bidi_control(char32_t cp) { return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069); }

void append_escape(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += "\\x";
        out += kHex[cp >> 4];
        out += kHex[cp & 0xf];
        return;
    }
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 0xf];
}

// Printable ASCII is by far the common case (ids, colours, most names):
// it needs no decoding and no copy-and-compare.
bool plain_ascii(std::string_view text, Target target) {
    for (unsigned char c : text) {
        if (c >= 0x80 || c == 0) return false;
        if (target == Target::terminal && (c < 0x20 || c == 0x7f)) return false;
    }
    return true;
}

std::string clean(std::string_view text, Target target, Lines lines) {
    if (plain_ascii(text, target)) return std::string(text);
    std::string out;
    out.reserve(text.size() + 8);
    for (size_t i = 0; i < text.size();) {
        // One U+FFFD per stray byte: simple, and never swallows a valid
        // character that follows a broken one.
        const size_t len = utf8::sequence_length(text, i);
        if (len == 0) {
            out += kReplacement;
            ++i;
            continue;
        }
        const char32_t cp = utf8::decode(text, i, len);
        if (utf8::is_noncharacter(cp) || (cp == 0 && target == Target::bus)) {
            out += kReplacement;
        } else if (target == Target::terminal && (is_control(cp) || is_bidi_control(cp)) &&
                   !(cp == '\n' && lines == Lines::many)) {
            append_escape(out, cp);
        } else {
            out.append(text.substr(i, len));
        }
        i += len;
    }
    return out;
}

}  // namespace

std::string for_bus(std::string_view text) { return clean(text, Target::bus, Lines::many); }

bool bus_safe(std::string_view text) {
    if (plain_ascii(text, Target::bus)) return true;
    for (size_t i = 0; i < text.size();) {
        const size_t len = utf8::sequence_length(text, i);
        if (len == 0) return false;
        const char32_t cp = utf8::decode(text, i, len);
        if (cp == 0 || utf8::is_noncharacter(cp)) return false;
        i += len;
    }
    return true;
}

std::string for_terminal(std::string_view text, Lines lines) { return clean(text, Target::terminal, lines); }

}  // namespace davsyncd::sanitize
