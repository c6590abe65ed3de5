#include <doctest/doctest.h>

#include <string>
#include <string_view>

#include "core/sanitize.hpp"

using namespace davsyncd;
using sanitize::for_bus;
using sanitize::for_terminal;
using namespace std::string_literals;

namespace {

// UTF-8 of a code point (test-side encoder, so that the cases read as code points).
std::string u8(char32_t cp) {
    std::string out;
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
    return out;
}

const std::string kFffd(sanitize::kReplacement);

}  // namespace

TEST_SUITE("sanitize") {

TEST_CASE("for_bus keeps valid text as it is, including controls and non-Latin scripts") {
    for (std::string s : {""s, "Work"s, "Caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x93\x85"s, "tab\there\nnew line"s,
                          "esc \x1b[31m"s, u8(0xfffd), u8(0xfdcf) + u8(0xfdf0) + u8(0xfffd) + u8(0x10fffd),
                          u8(0x202e)}) {
        CHECK(for_bus(s) == s);
        CHECK(sanitize::bus_safe(s));
    }
}

TEST_CASE("for_bus replaces every non-character with U+FFFD") {
    CHECK(for_bus("Bad" + u8(0xfdd0) + "Name") == "Bad" + kFffd + "Name");
    CHECK(for_bus(u8(0xfdef)) == kFffd);
    CHECK(for_bus(u8(0xfffe) + u8(0xffff)) == kFffd + kFffd);
    // The last two code points of every plane, 1 to 16.
    for (char32_t plane = 1; plane <= 0x10; ++plane) {
        CAPTURE(plane);
        CHECK(for_bus(u8(plane << 16 | 0xfffe)) == kFffd);
        CHECK(for_bus(u8(plane << 16 | 0xffff)) == kFffd);
        CHECK(for_bus(u8(plane << 16 | 0xfffd)) == u8(plane << 16 | 0xfffd));
        CHECK_FALSE(sanitize::bus_safe(u8(plane << 16 | 0xffff)));
    }
}

TEST_CASE("for_bus replaces invalid UTF-8 byte by byte and NUL, and keeps what follows") {
    CHECK(for_bus("a\xff" "b") == "a" + kFffd + "b");
    CHECK(for_bus("\xc3") == kFffd);                              // truncated at the end
    CHECK(for_bus("\xc3" "A") == kFffd + "A");                    // a broken sequence does not eat 'A'
    CHECK(for_bus("\xc0\xaf") == kFffd + kFffd);                  // overlong '/'
    CHECK(for_bus("\xed\xa0\x80") == kFffd + kFffd + kFffd);      // a UTF-16 surrogate
    CHECK(for_bus("\xf4\x90\x80\x80") == kFffd + kFffd + kFffd + kFffd);  // above U+10FFFF
    CHECK(for_bus("\x80" "\xc3\xa9") == kFffd + "\xc3\xa9");
    CHECK(for_bus("a\0b"s) == "a" + kFffd + "b");
    CHECK_FALSE(sanitize::bus_safe("a\0b"s));
    CHECK_FALSE(sanitize::bus_safe("\xff"));
}

TEST_CASE("for_bus output is always accepted, whatever the input") {
    // Every two-byte combination, and each after a valid prefix.
    for (int a = 0; a < 256; ++a)
        for (int b = 0; b < 256; ++b) {
            std::string s{static_cast<char>(a), static_cast<char>(b)};
            auto out = for_bus("x" + s);
            REQUIRE(sanitize::bus_safe(out));
            REQUIRE(for_bus(out) == out);
        }
}

TEST_CASE("for_terminal escapes C0, DEL and C1 visibly") {
    CHECK(for_terminal("\x1b]0;owned\x07title") == "\\x1b]0;owned\\x07title");
    CHECK(for_terminal("\x1b[2J") == "\\x1b[2J");
    CHECK(for_terminal("a\tb\rc\nd") == "a\\x09b\\x0dc\\x0ad");
    CHECK(for_terminal("\x7f") == "\\x7f");
    CHECK(for_terminal("a\0b"s) == "a\\x00b");
    CHECK(for_terminal(u8(0x9b) + "31m") == "\\u009b31m");  // C1 CSI
    CHECK(for_terminal(u8(0x85)) == "\\u0085");
    CHECK(for_terminal(u8(0x80)) == "\\u0080");
    CHECK(for_terminal(u8(0xa0)) == u8(0xa0));  // no-break space is printable
}

TEST_CASE("for_terminal escapes bidi overrides and isolates, not other text") {
    for (char32_t cp : {0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069}) {
        CAPTURE(static_cast<unsigned>(cp));
        auto out = for_terminal("x" + u8(cp) + "y");
        CHECK(out.find(u8(cp)) == std::string::npos);
        CHECK(out.size() == 8);
        CHECK(out.substr(0, 3) == "x\\u");
    }
    CHECK(for_terminal(u8(0x202e)) == "\\u202e");
    CHECK(for_terminal(u8(0x2069)) == "\\u2069");
    CHECK(for_terminal(u8(0x2029) + u8(0x206a)) == u8(0x2029) + u8(0x206a));
    CHECK(for_terminal("Caf\xc3\xa9 \xe6\x97\xa5") == "Caf\xc3\xa9 \xe6\x97\xa5");
}

TEST_CASE("for_terminal also replaces what the bus refuses") {
    CHECK(for_terminal("Bad" + u8(0xfdd0) + "\xff") == "Bad" + kFffd + kFffd);
}

TEST_CASE("for_terminal with Lines::many keeps line breaks and nothing else") {
    CHECK(for_terminal("a: ok\nb: \x1b[1mFAILED", sanitize::Lines::many) == "a: ok\nb: \\x1b[1mFAILED");
    CHECK(for_terminal("a\r\nb", sanitize::Lines::many) == "a\\x0d\nb");
}

}  // TEST_SUITE
