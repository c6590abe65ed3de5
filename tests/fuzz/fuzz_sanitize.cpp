// libFuzzer harness for the sanitiser that stands between server text and
// the bus or a terminal. Whatever the bytes, its output must be what sd-bus
// accepts (one non-character ended the daemon at every start) and, for
// terminals, hold no control character a terminal would obey.
//
//   CXX=clang++ meson setup build-fuzz -Dfuzzers=true -Dtests=false && ninja -C build-fuzz
//   ./build-fuzz/tests/fuzz/fuzz-sanitize -max_len=4096
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/sanitize.hpp"
#include "core/utf8.hpp"

using namespace davsyncd;

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

// An independent statement of what sd-bus accepts (systemd's utf8_is_valid
// and unichar_is_valid), so that the harness does not merely repeat the code.
bool sd_bus_accepts(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        size_t len = utf8::sequence_length(s, i);
        if (len == 0) return false;
        char32_t cp = utf8::decode(s, i, len);
        if (cp == 0 || cp >= 0x110000 || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0xfdd0 && cp <= 0xfdef) ||
            (cp & 0xfffe) == 0xfffe)
            return false;
        i += len;
    }
    return true;
}

bool terminal_safe(std::string_view s, bool newlines_allowed) {
    for (size_t i = 0; i < s.size();) {
        size_t len = utf8::sequence_length(s, i);
        if (len == 0) return false;
        char32_t cp = utf8::decode(s, i, len);
        bool control = cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
        bool bidi = (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
        if ((control && !(cp == '\n' && newlines_allowed)) || bidi) return false;
        i += len;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);

    std::string bus = sanitize::for_bus(text);
    require(sd_bus_accepts(bus));
    require(sanitize::bus_safe(bus));
    require(sanitize::bus_safe(text) == (bus == text));
    require(sanitize::for_bus(bus) == bus);  // idempotent
    // Valid characters survive: every replacement stands for at least one input byte.
    require(bus.size() <= text.size() * 3);

    std::string one_line = sanitize::for_terminal(text);
    require(sd_bus_accepts(one_line));
    require(terminal_safe(one_line, false));
    require(one_line.find('\n') == std::string::npos);
    std::string lines = sanitize::for_terminal(text, sanitize::Lines::many);
    require(terminal_safe(lines, true));
    // Bounded growth: an escape is at most six bytes ("\u202e") for a character of at least one.
    require(one_line.size() <= text.size() * 6);
    return 0;
}
