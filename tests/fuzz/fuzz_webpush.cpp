// libFuzzer harness for Web Push decryption: any body a distributor hands us
// (the network decides its content) must either decrypt or throw
// DecryptError. Anything else escaping — another exception, a crash, a leak,
// an out-of-bounds read — is a bug. The keys are those of RFC 8291
// Appendix A, so the seed corpus (that RFC's body) is a valid message and
// mutations of it reach every validation step up to the tag check.
//
//   CXX=clang++ meson setup build-fuzz -Dfuzzers=true && ninja -C build-fuzz
//   ./build-fuzz/tests/fuzz/fuzz-webpush -max_len=5000 scratch-corpus tests/fuzz/corpus/webpush
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "push/webpush_crypto.hpp"

using namespace davsyncd::push;

namespace {

void require(bool ok) {
    if (!ok) std::abort();
}

const KeyPair& receiver() {
    static const KeyPair kp = KeyPair::from_private(base64url_decode("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"),
                                                    base64url_decode("BTBZMqHH6r4Tts7J_aSIgg"));
    return kp;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Bytes body(data, data + size);
    try {
        Bytes plaintext = receiver().decrypt(body);
        // A message that decrypts has a full header, a tag and a delimiter.
        require(size <= 4096);
        require(size >= 86 + 17);
        require(plaintext.size() <= size - 86 - 17);
    } catch (const DecryptError&) {
        // Expected for almost every input.
    }
    return 0;
}
