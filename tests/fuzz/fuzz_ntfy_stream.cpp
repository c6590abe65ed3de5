// libFuzzer harness for the ntfy JSON stream parser (what a push server,
// or anyone on the path to a plain-http one, sends the daemon). Besides
// crashes it checks that how the bytes are cut into reads does not matter:
// the input fed whole and fed in pieces (cut where the first byte says)
// gives the same events and errors, and a decoded body never outgrows its
// line.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "push/ntfy_stream.hpp"

using namespace davsyncd::push;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

bool same(const NtfyEvent& a, const NtfyEvent& b) {
    return a.kind == b.kind && a.id == b.id && a.time == b.time && a.topic == b.topic && a.body == b.body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const size_t step = 1 + data[0] % 16;
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

    NtfyStreamParser whole;
    auto a = whole.feed(in);
    NtfyStreamParser pieces;
    NtfyStreamParser::Result b;
    for (size_t pos = 0; pos < in.size(); pos += step) {
        auto r = pieces.feed(in.substr(pos, step));
        b.events.insert(b.events.end(), r.events.begin(), r.events.end());
        b.errors.insert(b.errors.end(), r.errors.begin(), r.errors.end());
    }
    check(a.events.size() == b.events.size());
    for (size_t i = 0; i < a.events.size(); ++i) {
        check(same(a.events[i], b.events[i]));
        check(a.events[i].body.size() <= NtfyStreamParser::kMaxLine);
    }
    check(a.errors.size() == b.errors.size());
    return 0;
}
