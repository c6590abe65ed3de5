// libFuzzer harness for the item scanner: find_uid, add_uid and
// modification_stamp must never crash on hostile content (a server or a local
// file can hold anything), and must agree with each other.
//
//   CXX=clang++ meson setup build-fuzz -Dfuzzers=true && ninja -C build-fuzz
//   ./build-fuzz/tests/fuzz/fuzz_item -max_len=65536
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "sync/item.hpp"

using namespace davsyncd::sync;

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

bool all_digits(const std::string& s) {
    if (s.empty()) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view content(reinterpret_cast<const char*>(data), size);

    auto uid = find_uid(content);
    if (uid) require(!uid->empty());

    auto stamp = modification_stamp(content);
    if (stamp) require(all_digits(*stamp));

    const std::string_view new_uid = "fuzz-0123-uid";
    std::string with_uid = add_uid(content, new_uid);
    // Inserting only ever adds bytes.
    require(with_uid.size() >= content.size());
    auto after = find_uid(with_uid);
    if (uid) {
        // An item that had a UID keeps it, and its own lines are untouched.
        require(after == uid);
    } else if (after) {
        // An item without one gets exactly the one asked for.
        require(*after == new_uid);
    }
    // Adding again changes nothing: every component now has a UID.
    require(add_uid(with_uid, new_uid) == with_uid);
    // A new UID line carries no stamp.
    require(modification_stamp(with_uid) == stamp);

    (void)looks_like(ItemFormat::icalendar, content);
    (void)looks_like(ItemFormat::vcard, content);
    return 0;
}
