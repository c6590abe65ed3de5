#include <doctest/doctest.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "core/fs.hpp"
#include "push/webpush_crypto.hpp"

namespace stdfs = std::filesystem;
using namespace davsyncd;
using push::Bytes;
using push::DecryptError;
using push::KeyPair;

namespace {

// RFC 8291 Appendix A.
const char* const kUaPrivate = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
const char* const kUaPublic =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const char* const kAuthSecret = "BTBZMqHH6r4Tts7J_aSIgg";
const char* const kAsPrivate = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
const char* const kAsPublic =
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
const char* const kBody =
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS"
    "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";
const std::string kPlaintext = "When I grow up, I want to be a watermelon";

// Offsets in an aes128gcm body.
constexpr size_t kRsOffset = 16;
constexpr size_t kIdlenOffset = 20;
constexpr size_t kKeyIdOffset = 21;
constexpr size_t kCiphertextOffset = 86;

Bytes b64(const char* s) { return push::base64url_decode(s); }
Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }
std::string str(const Bytes& b) { return std::string(b.begin(), b.end()); }

KeyPair rfc_receiver() { return KeyPair::from_private(b64(kUaPrivate), b64(kAuthSecret)); }

struct TempDir {
    stdfs::path path;
    TempDir() {
        char tmpl[] = "/tmp/davsyncd-test-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { stdfs::remove_all(path); }
};

// ---- A test-only sender (application server side of RFC 8291) ----------------
// Written against the RFC's own formulation (plain HMAC-SHA-256 steps, AES-GCM
// encryption), independent of the code under test.

struct PkeyFree { void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); } };
struct PkeyCtxFree { void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); } };
struct BldFree { void operator()(OSSL_PARAM_BLD* p) const { OSSL_PARAM_BLD_free(p); } };
struct ParamFree { void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); } };
struct BnFree { void operator()(BIGNUM* p) const { BN_free(p); } };
struct CipherCtxFree { void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); } };
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

void ok(bool cond, const char* what) {
    if (!cond) throw std::runtime_error(std::string("test sender: ") + what);
}

// From the public point, plus the private scalar when given.
Pkey make_key(const Bytes& pub, const Bytes* priv) {
    std::unique_ptr<OSSL_PARAM_BLD, BldFree> bld(OSSL_PARAM_BLD_new());
    std::unique_ptr<BIGNUM, BnFree> d;
    ok(OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0), "group");
    ok(OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub.data(), pub.size()), "pub");
    if (priv) {
        d.reset(BN_bin2bn(priv->data(), static_cast<int>(priv->size()), nullptr));
        ok(OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, d.get()), "priv");
    }
    std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(bld.get()));
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    ok(EVP_PKEY_fromdata_init(ctx.get()) == 1, "fromdata_init");
    EVP_PKEY* key = nullptr;
    ok(EVP_PKEY_fromdata(ctx.get(), &key, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params.get()) == 1,
       "fromdata");
    return Pkey(key);
}

Bytes hmac(const Bytes& key, const Bytes& data) {
    Bytes out(32);
    unsigned len = 0;
    ok(HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(), &len),
       "HMAC");
    return out;
}

Bytes concat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

struct Sender {
    Pkey key;
    Bytes pub;

    static Sender rfc() { Bytes priv = b64(kAsPrivate); return {make_key(b64(kAsPublic), &priv), b64(kAsPublic)}; }
    static Sender fresh() {
        Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
        ok(key != nullptr, "keygen");
        Bytes pub(65);
        size_t len = 0;
        ok(EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, pub.data(), pub.size(), &len) &&
               len == 65, "get pub");
        return {std::move(key), pub};
    }

    // `record` is the whole padded plaintext (data, delimiter, zeros).
    Bytes encrypt(const Bytes& ua_public, const Bytes& auth, const Bytes& salt, const Bytes& record,
                  uint32_t rs = 4096) const {
        Pkey peer = make_key(ua_public, nullptr);
        std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
        ok(EVP_PKEY_derive_init(ctx.get()) == 1 && EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) == 1, "derive");
        Bytes ecdh(32);
        size_t len = ecdh.size();
        ok(EVP_PKEY_derive(ctx.get(), ecdh.data(), &len) == 1 && len == 32, "derive");

        // RFC 8291 §3.4, step by step.
        Bytes prk_key = hmac(auth, ecdh);
        Bytes key_info = concat(concat(bytes(std::string_view("WebPush: info\0", 14)), ua_public), pub);
        Bytes ikm = hmac(prk_key, concat(key_info, {0x01}));
        Bytes prk = hmac(salt, ikm);
        Bytes cek = hmac(prk, concat(bytes(std::string_view("Content-Encoding: aes128gcm\0", 28)), {0x01}));
        cek.resize(16);
        Bytes nonce = hmac(prk, concat(bytes(std::string_view("Content-Encoding: nonce\0", 24)), {0x01}));
        nonce.resize(12);

        std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> c(EVP_CIPHER_CTX_new());
        ok(EVP_EncryptInit_ex(c.get(), EVP_aes_128_gcm(), nullptr, cek.data(), nonce.data()) == 1, "enc init");
        Bytes ct(record.size() + 16);
        int n = 0, m = 0;
        ok(EVP_EncryptUpdate(c.get(), ct.data(), &n, record.data(), static_cast<int>(record.size())) == 1, "enc");
        ok(EVP_EncryptFinal_ex(c.get(), ct.data() + n, &m) == 1, "enc final");
        ok(EVP_CIPHER_CTX_ctrl(c.get(), EVP_CTRL_GCM_GET_TAG, 16, ct.data() + n + m) == 1, "tag");
        ct.resize(static_cast<size_t>(n + m) + 16);

        Bytes body = salt;
        for (int shift : {24, 16, 8, 0}) body.push_back(static_cast<uint8_t>(rs >> shift));
        body.push_back(static_cast<uint8_t>(pub.size()));
        body.insert(body.end(), pub.begin(), pub.end());
        body.insert(body.end(), ct.begin(), ct.end());
        return body;
    }
};

Bytes random_bytes(size_t n) {
    Bytes out(n);
    ok(RAND_bytes(out.data(), static_cast<int>(n)) == 1, "RAND_bytes");
    return out;
}

Bytes padded(std::string_view data, uint8_t delimiter = 0x02, size_t zeros = 0) {
    Bytes out = bytes(data);
    out.push_back(delimiter);
    out.insert(out.end(), zeros, 0x00);
    return out;
}

void set_rs(Bytes& body, uint32_t rs) {
    for (int i = 0; i < 4; ++i) body[kRsOffset + i] = static_cast<uint8_t>(rs >> (24 - 8 * i));
}

}  // namespace

TEST_SUITE("webpush") {

TEST_CASE("RFC 8291 Appendix A vector decrypts") {
    KeyPair kp = rfc_receiver();
    CHECK(kp.public_key() == b64(kUaPublic));
    CHECK(kp.auth_secret() == b64(kAuthSecret));
    Bytes body = b64(kBody);
    REQUIRE(body.size() == 144);
    CHECK(str(kp.decrypt(body)) == kPlaintext);
    // Objects are immutable: decrypting twice gives the same answer.
    CHECK(str(kp.decrypt(body)) == kPlaintext);
}

TEST_CASE("the test sender reproduces the RFC 8291 body byte for byte") {
    Bytes body = b64(kBody);
    Bytes salt(body.begin(), body.begin() + 16);
    CHECK(Sender::rfc().encrypt(b64(kUaPublic), b64(kAuthSecret), salt, padded(kPlaintext)) == body);
}

TEST_CASE("messages from a fresh sender, with padding, decrypt") {
    KeyPair kp = rfc_receiver();
    Sender s = Sender::fresh();
    auto send = [&](const Bytes& record, uint32_t rs = 4096) {
        return kp.decrypt(s.encrypt(kp.public_key(), kp.auth_secret(), random_bytes(16), record, rs));
    };
    CHECK(str(send(padded("hello", 0x02, 100))) == "hello");
    CHECK(send(padded("")).empty());  // ciphertext of 17 bytes, the minimum
    // Zero and 0x02 bytes inside the data are data, not padding.
    CHECK(str(send(padded(std::string_view("a\x02\x00" "b\x02", 5), 0x02, 3))) == std::string("a\x02\x00" "b\x02", 5));
    // Ciphertext exactly the record size, and rs = 18 with a 17-byte ciphertext.
    CHECK(str(send(padded("xy", 0x02, 10), 29)) == "xy");
    CHECK(send(padded(""), 18).empty());
}

TEST_CASE("a message of exactly 4096 bytes decrypts; 4097 bytes is refused") {
    KeyPair kp = rfc_receiver();
    Sender s = Sender::fresh();
    std::string data(3000, 'x');
    Bytes body = s.encrypt(kp.public_key(), kp.auth_secret(), random_bytes(16), padded(data, 0x02, 4096 - 86 - 16 - 3001));
    REQUIRE(body.size() == 4096);
    CHECK(str(kp.decrypt(body)) == data);

    Bytes big = s.encrypt(kp.public_key(), kp.auth_secret(), random_bytes(16), padded(data, 0x02, 4096 - 86 - 16 - 3000));
    REQUIRE(big.size() == 4097);
    CHECK_THROWS_WITH_AS(kp.decrypt(big), doctest::Contains("larger than 4096 bytes"), DecryptError);
    Bytes huge = b64(kBody);
    huge.resize(100000, 0);
    CHECK_THROWS_WITH_AS(kp.decrypt(huge), "message larger than 4096 bytes", DecryptError);
}

TEST_CASE("flipped bits are rejected") {
    KeyPair kp = rfc_receiver();
    const Bytes body = b64(kBody);
    auto flipped = [&](size_t byte, int bit) {
        Bytes b = body;
        b[byte] ^= static_cast<uint8_t>(1u << bit);
        return b;
    };
    SUBCASE("in the ciphertext") {
        CHECK_THROWS_WITH_AS(kp.decrypt(flipped(kCiphertextOffset + 3, 0)),
                             "authentication failed (tampered message or wrong key)", DecryptError);
    }
    SUBCASE("in the tag") {
        CHECK_THROWS_WITH_AS(kp.decrypt(flipped(body.size() - 1, 7)), doctest::Contains("authentication failed"),
                             DecryptError);
    }
    SUBCASE("in the salt") {
        CHECK_THROWS_WITH_AS(kp.decrypt(flipped(5, 2)), doctest::Contains("authentication failed"), DecryptError);
    }
    SUBCASE("in the key id") {
        // Almost every change makes the point invalid; the format byte always does.
        CHECK_THROWS_WITH_AS(kp.decrypt(flipped(kKeyIdOffset, 1)), doctest::Contains("sender public key"),
                             DecryptError);
        CHECK_THROWS_AS(kp.decrypt(flipped(kKeyIdOffset + 40, 4)), DecryptError);
    }
    SUBCASE("any single bit outside the record size") {
        // rs is not authenticated: a larger rs still fits a single record.
        for (size_t i = 0; i < body.size(); ++i) {
            if (i >= kRsOffset && i < kRsOffset + 4) continue;
            for (int bit = 0; bit < 8; ++bit) {
                CAPTURE(i);
                CAPTURE(bit);
                CHECK_THROWS_AS(kp.decrypt(flipped(i, bit)), DecryptError);
            }
        }
    }
}

TEST_CASE("a key id that is a valid point but not the sender's fails authentication") {
    KeyPair kp = rfc_receiver();
    Bytes body = b64(kBody);
    Bytes other = KeyPair::generate().public_key();
    std::copy(other.begin(), other.end(), body.begin() + kKeyIdOffset);
    CHECK_THROWS_WITH_AS(kp.decrypt(body), doctest::Contains("authentication failed"), DecryptError);
}

TEST_CASE("invalid key ids are rejected") {
    KeyPair kp = rfc_receiver();
    const Bytes body = b64(kBody);
    SUBCASE("not on the curve") {
        Bytes b = body;
        b[kKeyIdOffset + 64] ^= 0x01;  // last byte of Y
        CHECK_THROWS_WITH_AS(kp.decrypt(b), doctest::Contains("not a valid P-256 point"), DecryptError);
    }
    SUBCASE("all zero") {
        Bytes b = body;
        std::fill(b.begin() + kKeyIdOffset + 1, b.begin() + kCiphertextOffset, 0);
        CHECK_THROWS_WITH_AS(kp.decrypt(b), doctest::Contains("sender public key"), DecryptError);
    }
    SUBCASE("compressed point with the right length") {
        Bytes b = body;
        b[kKeyIdOffset] = 0x02;
        CHECK_THROWS_WITH_AS(kp.decrypt(b), doctest::Contains("uncompressed"), DecryptError);
    }
    SUBCASE("wrong key id length") {
        for (int idlen : {0, 33, 64, 66, 255}) {
            CAPTURE(idlen);
            Bytes b = body;
            b[kIdlenOffset] = static_cast<uint8_t>(idlen);
            CHECK_THROWS_WITH_AS(kp.decrypt(b), doctest::Contains("key id length"), DecryptError);
        }
        // A 33-byte compressed key followed by the rest: still refused.
        Bytes sender = b64(kAsPublic);
        Bytes b(body.begin(), body.begin() + kIdlenOffset);
        b.push_back(33);
        b.push_back(0x02 | (sender[64] & 1));
        b.insert(b.end(), sender.begin() + 1, sender.begin() + 33);
        b.insert(b.end(), body.begin() + kCiphertextOffset, body.end());
        CHECK_THROWS_WITH_AS(kp.decrypt(b), doctest::Contains("key id length"), DecryptError);
    }
}

TEST_CASE("truncated and empty bodies are rejected") {
    KeyPair kp = rfc_receiver();
    const Bytes body = b64(kBody);
    CHECK_THROWS_WITH_AS(kp.decrypt({}), doctest::Contains("too short"), DecryptError);
    CHECK_THROWS_WITH_AS(kp.decrypt(Bytes(body.begin(), body.begin() + 50)), doctest::Contains("too short"),
                         DecryptError);
    CHECK_THROWS_WITH_AS(kp.decrypt(Bytes(body.begin(), body.begin() + kCiphertextOffset + 16)),
                         doctest::Contains("ciphertext too short"), DecryptError);
    CHECK_THROWS_WITH_AS(kp.decrypt(Bytes(body.begin(), body.end() - 1)), doctest::Contains("authentication failed"),
                         DecryptError);
    for (size_t n = 0; n < body.size(); ++n) {
        CAPTURE(n);
        CHECK_THROWS_AS(kp.decrypt(Bytes(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(n))), DecryptError);
    }
    // Appended bytes are not ignored either.
    Bytes longer = body;
    longer.push_back(0);
    CHECK_THROWS_AS(kp.decrypt(longer), DecryptError);
}

TEST_CASE("record size limits") {
    KeyPair kp = rfc_receiver();
    Bytes body = b64(kBody);  // 58-byte ciphertext
    SUBCASE("below 18") {
        for (uint32_t rs : {0u, 1u, 17u}) {
            CAPTURE(rs);
            set_rs(body, rs);
            CHECK_THROWS_WITH_AS(kp.decrypt(body), doctest::Contains("record size"), DecryptError);
        }
    }
    SUBCASE("rs = 17 with a 17-byte ciphertext that fits it") {
        Sender s = Sender::fresh();
        Bytes b = s.encrypt(kp.public_key(), kp.auth_secret(), random_bytes(16), padded(""), 17);
        REQUIRE(b.size() == kCiphertextOffset + 17);
        CHECK_THROWS_WITH_AS(kp.decrypt(b), "record size 17 is below 18", DecryptError);
        set_rs(b, 18);
        CHECK(kp.decrypt(b).empty());
    }
    SUBCASE("ciphertext longer than the record size (a second record)") {
        set_rs(body, 57);
        CHECK_THROWS_WITH_AS(kp.decrypt(body), doctest::Contains("record size"), DecryptError);
        set_rs(body, 18);
        CHECK_THROWS_AS(kp.decrypt(body), DecryptError);
    }
    SUBCASE("ciphertext exactly the record size, and the largest rs") {
        set_rs(body, 58);
        CHECK(str(kp.decrypt(body)) == kPlaintext);
        set_rs(body, 0xffffffffu);
        CHECK(str(kp.decrypt(body)) == kPlaintext);
    }
}

TEST_CASE("wrong auth secret or wrong private key fails authentication") {
    const Bytes body = b64(kBody);
    SUBCASE("auth secret") {
        Bytes auth = b64(kAuthSecret);
        auth[0] ^= 0x80;
        KeyPair kp = KeyPair::from_private(b64(kUaPrivate), auth);
        CHECK_THROWS_WITH_AS(kp.decrypt(body), "authentication failed (tampered message or wrong key)", DecryptError);
    }
    SUBCASE("private key") {
        KeyPair fresh = KeyPair::generate();
        CHECK_THROWS_WITH_AS(fresh.decrypt(body), doctest::Contains("authentication failed"), DecryptError);
        // Even with the right auth secret.
        KeyPair fresh2 = KeyPair::from_private(b64(kAsPrivate), b64(kAuthSecret));
        CHECK_THROWS_WITH_AS(fresh2.decrypt(body), doctest::Contains("authentication failed"), DecryptError);
    }
}

TEST_CASE("bad padding is rejected") {
    KeyPair kp = rfc_receiver();
    Sender s = Sender::fresh();
    auto send = [&](const Bytes& record) {
        return kp.decrypt(s.encrypt(kp.public_key(), kp.auth_secret(), random_bytes(16), record));
    };
    // Delimiter 0x01 marks a non-final record: not valid for a single record.
    CHECK_THROWS_WITH_AS(send(padded("hello", 0x01)), "bad padding", DecryptError);
    CHECK_THROWS_WITH_AS(send(padded("hello", 0x01, 20)), "bad padding", DecryptError);
    CHECK_THROWS_WITH_AS(send(padded("hello", 0x03, 2)), "bad padding", DecryptError);
    // No delimiter at all.
    CHECK_THROWS_WITH_AS(send(bytes("hello")), "bad padding", DecryptError);
    // Only zeros.
    CHECK_THROWS_WITH_AS(send(Bytes(30, 0x00)), "bad padding", DecryptError);
    CHECK_THROWS_WITH_AS(send(Bytes(1, 0x00)), "bad padding", DecryptError);
    // Something non-zero after the delimiter.
    Bytes r = padded("hello", 0x02, 4);
    r.push_back(0x07);
    r.push_back(0x00);
    CHECK_THROWS_WITH_AS(send(r), "bad padding", DecryptError);
    // And the valid form of the same, for contrast.
    CHECK(str(send(padded("hello", 0x02, 5))) == "hello");
}

TEST_CASE("generate gives fresh, well-formed keys that decrypt") {
    KeyPair a = KeyPair::generate();
    KeyPair b = KeyPair::generate();
    for (const KeyPair* kp : {&a, &b}) {
        REQUIRE(kp->public_key().size() == 65);
        CHECK(kp->public_key()[0] == 0x04);
        CHECK(kp->auth_secret().size() == 16);
    }
    CHECK(a.public_key() != b.public_key());
    CHECK(a.auth_secret() != b.auth_secret());

    Sender s = Sender::fresh();  // also proves the public key is a valid point
    Bytes body = s.encrypt(a.public_key(), a.auth_secret(), random_bytes(16), padded("for a"));
    CHECK(str(a.decrypt(body)) == "for a");
    CHECK_THROWS_WITH_AS(b.decrypt(body), doctest::Contains("authentication failed"), DecryptError);
}

TEST_CASE("from_private validates its input") {
    Bytes priv = b64(kUaPrivate);
    Bytes auth = b64(kAuthSecret);
    CHECK_THROWS_AS(KeyPair::from_private(Bytes(31, 1), auth), std::invalid_argument);
    CHECK_THROWS_AS(KeyPair::from_private(Bytes(33, 1), auth), std::invalid_argument);
    CHECK_THROWS_AS(KeyPair::from_private(priv, Bytes(15, 1)), std::invalid_argument);
    CHECK_THROWS_AS(KeyPair::from_private(priv, Bytes(17, 1)), std::invalid_argument);
    CHECK_THROWS_AS(KeyPair::from_private(Bytes(32, 0), auth), std::invalid_argument);
    CHECK_THROWS_AS(KeyPair::from_private(Bytes(32, 0xff), auth), std::invalid_argument);  // >= group order
    // The group order n itself is out of range; n - 1 is the largest valid scalar.
    Bytes n = push::base64url_decode("_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE");
    REQUIRE(n.size() == 32);
    CHECK_THROWS_AS(KeyPair::from_private(n, auth), std::invalid_argument);
    n[31] -= 1;
    CHECK(KeyPair::from_private(n, auth).public_key().size() == 65);
    Bytes one(32, 0);
    one[31] = 1;  // public key = the generator
    CHECK(push::base64url_encode(KeyPair::from_private(one, auth).public_key()) ==
          "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU");
}

TEST_CASE("KeyPair moves") {
    KeyPair a = rfc_receiver();
    KeyPair b = std::move(a);
    CHECK(str(b.decrypt(b64(kBody))) == kPlaintext);
    KeyPair c = KeyPair::generate();
    c = std::move(b);
    CHECK(c.public_key() == b64(kUaPublic));
    CHECK(str(c.decrypt(b64(kBody))) == kPlaintext);
}

TEST_CASE("save and load round trip") {
    TempDir t;
    auto file = t.path / "push" / "sub" / "keys.json";
    rfc_receiver().save(file);

    struct stat st{};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(::stat((t.path / "push").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK_FALSE(stdfs::exists(t.path / "push" / "sub" / "keys.json.tmp"));

    std::string text = fs::read_file(file);
    CHECK(text.find(std::string("\"private_key\": \"") + kUaPrivate + "\"") != std::string::npos);
    CHECK(text.find(std::string("\"public_key\": \"") + kUaPublic + "\"") != std::string::npos);
    CHECK(text.find(std::string("\"auth_secret\": \"") + kAuthSecret + "\"") != std::string::npos);

    KeyPair loaded = KeyPair::load(file);
    CHECK(loaded.public_key() == b64(kUaPublic));
    CHECK(loaded.auth_secret() == b64(kAuthSecret));
    CHECK(str(loaded.decrypt(b64(kBody))) == kPlaintext);

    // A generated pair too, saved over the first file.
    KeyPair g = KeyPair::generate();
    g.save(file);
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    KeyPair g2 = KeyPair::load(file);
    CHECK(g2.public_key() == g.public_key());
    CHECK(g2.auth_secret() == g.auth_secret());
    Bytes body = Sender::fresh().encrypt(g.public_key(), g.auth_secret(), random_bytes(16), padded("again"));
    CHECK(str(g2.decrypt(body)) == "again");

    // Padded base64 and other key orders are accepted.
    fs::write_atomic(file, std::string("{\"auth_secret\": \"") + kAuthSecret + "==\", \"public_key\": \"" + kUaPublic +
                               "\", \"private_key\": \"" + kUaPrivate + "=\"}", 0600);
    CHECK(str(KeyPair::load(file).decrypt(b64(kBody))) == kPlaintext);
}

TEST_CASE("load rejects corrupt files, naming the file and not the key") {
    TempDir t;
    auto file = t.path / "keys.json";
    const std::string priv = kUaPrivate, pub = kUaPublic, auth = kAuthSecret;
    auto json = [](const std::string& p, const std::string& q, const std::string& a) {
        return "{\"private_key\": \"" + p + "\", \"public_key\": \"" + q + "\", \"auth_secret\": \"" + a + "\"}";
    };
    Bytes other_pub = KeyPair::generate().public_key();
    struct Case { std::string content; std::string reason; };
    const Case cases[] = {
        {"", "not valid JSON"},
        {"{\"private_key\": \"" + priv, "not valid JSON"},
        {"[\"" + priv + "\"]", "not a JSON object"},
        {"{\"public_key\": \"" + pub + "\", \"auth_secret\": \"" + auth + "\"}", "private_key"},
        {"{\"private_key\": 12, \"public_key\": \"" + pub + "\", \"auth_secret\": \"" + auth + "\"}", "private_key"},
        {json(priv, pub, ""), "auth_secret"},
        {json(priv + "AA", pub, auth), "private_key"},
        {json(priv, pub.substr(0, 80), auth), "public_key"},
        {json(priv, pub, auth + "A"), "auth_secret"},
        {json(priv.substr(0, 40) + "+/=", pub, auth), "base64url"},
        {json(priv, push::base64url_encode(other_pub), auth), "does not match"},
        {json(std::string(43, 'A'), pub, auth), "private key"},  // zero scalar
    };
    for (const Case& c : cases) {
        CAPTURE(c.content);
        fs::write_atomic(file, c.content, 0600);
        std::string message;
        try {
            (void)KeyPair::load(file);
        } catch (const std::runtime_error& e) {
            message = e.what();
        }
        CHECK(message.find(file.string()) != std::string::npos);
        CHECK(message.find(c.reason) != std::string::npos);
        CHECK(message.find(priv.substr(0, 12)) == std::string::npos);
    }
    CHECK_THROWS_WITH_AS(KeyPair::load(t.path / "missing.json"), doctest::Contains((t.path / "missing.json").c_str()),
                         std::runtime_error);
}

TEST_CASE("base64url encodes without padding and round trips") {
    // RFC 4648 §10.
    const std::pair<const char*, const char*> vectors[] = {
        {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy"},
    };
    for (auto [plain, enc] : vectors) {
        CAPTURE(plain);
        CHECK(push::base64url_encode(bytes(plain)) == enc);
        CHECK(str(push::base64url_decode(enc)) == plain);
    }
    CHECK(str(push::base64url_decode("Zg==")) == "f");
    CHECK(str(push::base64url_decode("Zm8=")) == "fo");
    CHECK(str(push::base64url_decode("Zm9vYg==")) == "foob");
    // The URL-safe alphabet: 0xfb 0xff -> "-_8" (standard base64: "+/8").
    CHECK(push::base64url_encode({0xfb, 0xff}) == "-_8");
    CHECK(push::base64url_decode("-_8") == Bytes{0xfb, 0xff});

    Bytes all(256);
    for (int i = 0; i < 256; ++i) all[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    for (size_t n = 0; n <= all.size(); ++n) {
        Bytes part(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n));
        std::string enc = push::base64url_encode(part);
        CHECK(enc.find('=') == std::string::npos);
        CHECK(push::base64url_decode(enc) == part);
    }
}

TEST_CASE("base64url rejects bad input") {
    for (const char* bad : {"Zm9v+A", "Zm9v/A", "Zm 9v", "Zm9v\n", "Z", "Zm9vY", "Zg=", "Zg===", "Z===", "=", "==",
                            "Z=g=", "Zm9v====", "Zh", "Zm9", "\xc3\xa9xx", "Zm9v!"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(push::base64url_decode(bad), std::invalid_argument);
    }
    CHECK_THROWS_AS(push::base64url_decode(std::string_view("Zm\0v", 4)), std::invalid_argument);
}

}  // TEST_SUITE("webpush")
