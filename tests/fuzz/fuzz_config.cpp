// libFuzzer harness for the configuration parser: any byte string must
// either parse or fail with ConfigError; anything else (another exception, a
// crash, a sanitizer report, a hang) is a bug.
//
//   CXX=clang++ meson setup build-fuzz -Dfuzzers=true
//   ninja -C build-fuzz && ./build-fuzz/tests/fuzz/fuzz-config -max_len=4096
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.hpp"
#include "core/log.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace davsyncd;
    // The inline-password warning would flood the output.
    static const bool quiet = (log::set_max_level(log::Level::error), true);
    (void)quiet;
    static const fs::XdgDirs xdg{"/fuzz/config", "/fuzz/state", "/fuzz/data"};
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        config::Config cfg = config::parse(text, "fuzz.json", xdg);
        // Touch the result so that a parse returning garbage shows up under ASan.
        for (const auto& a : cfg.accounts) {
            (void)a.collections.accepts(a.id, a.username);
            (void)config::to_string(a.conflict_policy);
        }
    } catch (const config::ConfigError&) {
    }
    return 0;
}
