// Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
// U+10FFFF). File names and hrefs end up in JSON state files, which cannot
// hold arbitrary bytes. Pure functions, any thread.
#pragma once

#include <cstddef>
#include <string_view>

namespace davsyncd::utf8 {

// Length of the valid sequence starting at s[i] (1 for ASCII), or 0 when
// the bytes there are not valid UTF-8.
inline size_t sequence_length(std::string_view s, size_t i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) return 1;
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xbf;  // bounds of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;  // overlong
        if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;  // overlong
        if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
        return 0;
    }
    if (i + len > s.size()) return 0;
    for (size_t k = 1; k < len; ++k) {
        unsigned char cc = static_cast<unsigned char>(s[i + k]);
        if (k == 1 ? (cc < lo || cc > hi) : (cc < 0x80 || cc > 0xbf)) return 0;
    }
    return len;
}

// The code point of the valid sequence of `len` bytes at s[i] (as
// returned by sequence_length).
inline char32_t decode(std::string_view s, size_t i, size_t len) {
    auto b = [&](size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k])); };
    switch (len) {
        case 1: return b(0);
        case 2: return ((b(0) & 0x1f) << 6) | (b(1) & 0x3f);
        case 3: return ((b(0) & 0x0f) << 12) | ((b(1) & 0x3f) << 6) | (b(2) & 0x3f);
        default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3f) << 12) | ((b(2) & 0x3f) << 6) | (b(3) & 0x3f);
    }
}

// Unicode's 66 non-characters (U+FDD0..U+FDEF and the last two code points
// of every plane): valid UTF-8, yet refused by sd-bus.
inline bool is_noncharacter(char32_t cp) { return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe; }

inline bool valid(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        size_t len = sequence_length(s, i);
        if (len == 0) return false;
        i += len;
    }
    return true;
}

}  // namespace davsyncd::utf8
