#include "push/webpush_crypto.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/log.hpp"

namespace davsyncd::push {
namespace {

// ---- RAII for OpenSSL handles ---------------------------------------------

template <auto Free>
struct FreeWith {
    template <typename T>
    void operator()(T* p) const noexcept { Free(p); }
};

using PkeyPtr = std::unique_ptr<EVP_PKEY, FreeWith<EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, FreeWith<EVP_PKEY_CTX_free>>;
using BnPtr = std::unique_ptr<BIGNUM, FreeWith<BN_clear_free>>;
using BnCtxPtr = std::unique_ptr<BN_CTX, FreeWith<BN_CTX_free>>;
using GroupPtr = std::unique_ptr<EC_GROUP, FreeWith<EC_GROUP_free>>;
using PointPtr = std::unique_ptr<EC_POINT, FreeWith<EC_POINT_clear_free>>;
using ParamBldPtr = std::unique_ptr<OSSL_PARAM_BLD, FreeWith<OSSL_PARAM_BLD_free>>;
using ParamsPtr = std::unique_ptr<OSSL_PARAM, FreeWith<OSSL_PARAM_free>>;
using KdfPtr = std::unique_ptr<EVP_KDF, FreeWith<EVP_KDF_free>>;
using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, FreeWith<EVP_KDF_CTX_free>>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, FreeWith<EVP_CIPHER_CTX_free>>;

constexpr size_t kPrivateKeyLen = 32;
constexpr size_t kPublicKeyLen = 65;
constexpr size_t kAuthSecretLen = 16;
constexpr size_t kSaltLen = 16;
constexpr size_t kHeaderLen = kSaltLen + 4 + 1;  // salt | rs | idlen
constexpr size_t kTagLen = 16;
constexpr size_t kMaxMessage = 4096;
constexpr uint32_t kMinRecordSize = kTagLen + 2;  // RFC 8188 §2: rs >= 18
constexpr const char* kCurveName = "prime256v1";

// Overwrites a buffer holding key material when it goes out of scope.
struct Wipe {
    Bytes& bytes;
    ~Wipe() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

// An OpenSSL call failed for a reason that is not the input's fault.
[[noreturn]] void openssl_fail(const char* what) {
    unsigned long code = ERR_get_error();
    char reason[256] = "unknown error";
    if (code != 0) ERR_error_string_n(code, reason, sizeof reason);
    ERR_clear_error();
    throw std::runtime_error(cat("OpenSSL: ", what, " failed: ", reason));
}

// The input was rejected by OpenSSL: drop its error queue, report ours.
[[noreturn]] void reject(const std::string& why) {
    ERR_clear_error();
    throw DecryptError(why);
}

// Public key (uncompressed point) for a private scalar; rejects scalars
// outside [1, n-1].
Bytes public_from_private(const BIGNUM* priv) {
    GroupPtr group(EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1));
    if (!group) openssl_fail("EC_GROUP_new_by_curve_name");
    if (BN_is_zero(priv) || BN_is_negative(priv) || BN_cmp(priv, EC_GROUP_get0_order(group.get())) >= 0) {
        ERR_clear_error();
        throw std::invalid_argument("private key is not a valid P-256 scalar");
    }
    BnCtxPtr bn_ctx(BN_CTX_secure_new());
    PointPtr point(EC_POINT_new(group.get()));
    if (!bn_ctx || !point) openssl_fail("EC_POINT_new");
    if (!EC_POINT_mul(group.get(), point.get(), priv, nullptr, nullptr, bn_ctx.get()))
        openssl_fail("EC_POINT_mul");
    Bytes out(kPublicKeyLen);
    size_t n = EC_POINT_point2oct(group.get(), point.get(), POINT_CONVERSION_UNCOMPRESSED, out.data(),
                                  out.size(), bn_ctx.get());
    if (n != kPublicKeyLen) openssl_fail("EC_POINT_point2oct");
    return out;
}

// EVP_PKEY from OSSL_PARAMs (selection: EVP_PKEY_KEYPAIR or EVP_PKEY_PUBLIC_KEY).
// Returns null when OpenSSL refuses the material.
PkeyPtr pkey_from_params(OSSL_PARAM_BLD* bld, int selection) {
    ParamsPtr params(OSSL_PARAM_BLD_to_param(bld));
    if (!params) openssl_fail("OSSL_PARAM_BLD_to_param");
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    if (!ctx) openssl_fail("EVP_PKEY_CTX_new_from_name");
    if (EVP_PKEY_fromdata_init(ctx.get()) <= 0) openssl_fail("EVP_PKEY_fromdata_init");
    EVP_PKEY* raw = nullptr;
    if (EVP_PKEY_fromdata(ctx.get(), &raw, selection, params.get()) <= 0) return nullptr;
    return PkeyPtr(raw);
}

// The sender's public key; DecryptError unless `point` is a valid
// uncompressed P-256 point (on the curve, not infinity, right order).
PkeyPtr peer_public_key(const uint8_t* point, size_t len) {
    if (len != kPublicKeyLen || point[0] != 0x04)
        reject("sender public key (key id) is not an uncompressed P-256 point");
    ParamBldPtr bld(OSSL_PARAM_BLD_new());
    if (!bld) openssl_fail("OSSL_PARAM_BLD_new");
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, kCurveName, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point, len))
        openssl_fail("OSSL_PARAM_BLD_push");
    PkeyPtr key = pkey_from_params(bld.get(), EVP_PKEY_PUBLIC_KEY);
    if (!key) reject("sender public key (key id) is not a valid P-256 point");
    PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
    if (!check) openssl_fail("EVP_PKEY_CTX_new_from_pkey");
    // Belt and braces: fromdata already refuses points off the curve. P-256
    // has cofactor 1, so on the curve and not at infinity is the full check.
    if (EVP_PKEY_public_check_quick(check.get()) != 1) reject("sender public key (key id) is not a valid P-256 point");
    return key;
}

Bytes ecdh(EVP_PKEY* own, EVP_PKEY* peer) {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own, nullptr));
    if (!ctx) openssl_fail("EVP_PKEY_CTX_new_from_pkey");
    if (EVP_PKEY_derive_init(ctx.get()) <= 0) openssl_fail("EVP_PKEY_derive_init");
    // The peer was fully validated by peer_public_key().
    if (EVP_PKEY_derive_set_peer_ex(ctx.get(), peer, 0) <= 0) reject("ECDH with the sender public key failed");
    size_t len = 0;
    if (EVP_PKEY_derive(ctx.get(), nullptr, &len) <= 0) openssl_fail("EVP_PKEY_derive");
    Bytes secret(len);
    if (EVP_PKEY_derive(ctx.get(), secret.data(), &len) <= 0) {
        OPENSSL_cleanse(secret.data(), secret.size());
        reject("ECDH with the sender public key failed");
    }
    secret.resize(len);
    return secret;
}

// HKDF-SHA-256 (RFC 5869), extract then expand.
Bytes hkdf(const Bytes& salt, const Bytes& ikm, const Bytes& info, size_t length) {
    KdfPtr kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
    if (!kdf) openssl_fail("EVP_KDF_fetch(HKDF)");
    KdfCtxPtr ctx(EVP_KDF_CTX_new(kdf.get()));
    if (!ctx) openssl_fail("EVP_KDF_CTX_new");
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.data()), ikm.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<uint8_t*>(salt.data()), salt.size()),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<uint8_t*>(info.data()), info.size()),
        OSSL_PARAM_construct_end(),
    };
    Bytes out(length);
    if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) <= 0) openssl_fail("EVP_KDF_derive(HKDF)");
    return out;
}

Bytes label(std::string_view text) {
    Bytes out(text.begin(), text.end());
    out.push_back(0x00);
    return out;
}

// AES-128-GCM open; false when the tag does not verify.
bool aes128gcm_open(const Bytes& key, const Bytes& nonce, const uint8_t* ciphertext, size_t len,
                    const uint8_t* tag, Bytes& plaintext) {
    CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
    if (!ctx) openssl_fail("EVP_CIPHER_CTX_new");
    if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_128_gcm(), nullptr, nullptr, nullptr) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(nonce.size()), nullptr) != 1 ||
        EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), nonce.data()) != 1)
        openssl_fail("EVP_DecryptInit_ex(aes-128-gcm)");
    plaintext.assign(len + 16, 0);
    int out_len = 0;
    if (EVP_DecryptUpdate(ctx.get(), plaintext.data(), &out_len, ciphertext, static_cast<int>(len)) != 1)
        openssl_fail("EVP_DecryptUpdate");
    size_t total = static_cast<size_t>(out_len);
    if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagLen),
                            const_cast<uint8_t*>(tag)) != 1)
        openssl_fail("EVP_CTRL_GCM_SET_TAG");
    int final_len = 0;
    if (EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + total, &final_len) != 1) {
        OPENSSL_cleanse(plaintext.data(), plaintext.size());
        plaintext.clear();
        ERR_clear_error();
        return false;
    }
    plaintext.resize(total + static_cast<size_t>(final_len));
    return true;
}

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

// Fills the three fields of a key file; returns why it is malformed, or "".
// Never quotes the content: it holds the private key.
std::string parse_key_file(const std::string& text, Bytes& priv, Bytes& pub, Bytes& auth) {
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded()) return "not valid JSON";
    if (!doc.is_object()) return "not a JSON object";
    struct Field { const char* name; size_t size; Bytes& out; };
    for (Field f : {Field{"private_key", kPrivateKeyLen, priv}, Field{"public_key", kPublicKeyLen, pub},
                    Field{"auth_secret", kAuthSecretLen, auth}}) {
        auto it = doc.find(f.name);
        if (it == doc.end() || !it->is_string()) return cat("missing string field \"", f.name, "\"");
        std::string& value = it->get_ref<std::string&>();
        try {
            f.out = base64url_decode(value);
        } catch (const std::invalid_argument& e) {
            OPENSSL_cleanse(value.data(), value.size());
            return cat("field \"", f.name, "\" is not base64url (", e.what(), ")");
        }
        OPENSSL_cleanse(value.data(), value.size());
        if (f.out.size() != f.size)
            return cat("field \"", f.name, "\" must decode to ", f.size, " bytes, got ", f.out.size());
    }
    return {};
}

}  // namespace

// ---- base64url --------------------------------------------------------------

std::string base64url_encode(const Bytes& data) {
    std::string out;
    out.reserve((data.size() * 4 + 2) / 3);
    size_t i = 0;
    for (; i + 3 <= data.size(); i += 3) {
        uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8) | data[i + 2];
        out += kB64Alphabet[(v >> 18) & 63];
        out += kB64Alphabet[(v >> 12) & 63];
        out += kB64Alphabet[(v >> 6) & 63];
        out += kB64Alphabet[v & 63];
    }
    size_t rest = data.size() - i;
    if (rest == 1) {
        uint32_t v = uint32_t{data[i]} << 16;
        out += kB64Alphabet[(v >> 18) & 63];
        out += kB64Alphabet[(v >> 12) & 63];
    } else if (rest == 2) {
        uint32_t v = (uint32_t{data[i]} << 16) | (uint32_t{data[i + 1]} << 8);
        out += kB64Alphabet[(v >> 18) & 63];
        out += kB64Alphabet[(v >> 12) & 63];
        out += kB64Alphabet[(v >> 6) & 63];
    }
    return out;
}

Bytes base64url_decode(std::string_view text) {
    // Optional padding: one or two '=' completing a multiple of 4 characters.
    size_t pad = 0;
    while (pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
    if (pad > 0 && (pad > 2 || text.size() % 4 != 0))
        throw std::invalid_argument("base64url: bad padding");
    text.remove_suffix(pad);
    if (text.size() % 4 == 1) throw std::invalid_argument("base64url: truncated input");

    Bytes out;
    out.reserve(text.size() * 3 / 4);
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        int v = b64_value(text[i]);
        if (v < 0) throw std::invalid_argument(cat("base64url: invalid character at offset ", i));
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<uint8_t>(acc >> bits));
            acc &= (1u << bits) - 1;
        }
    }
    // Canonical encoders leave the unused low bits of the last character zero.
    if (acc != 0) throw std::invalid_argument("base64url: non-zero trailing bits");
    return out;
}

// ---- KeyPair ---------------------------------------------------------------

struct KeyPair::Impl {
    PkeyPtr pkey;        // P-256 key pair (private scalar and public point)
    Bytes private_key;   // the raw 32-byte scalar, for save()
    ~Impl() { OPENSSL_cleanse(private_key.data(), private_key.size()); }
};

KeyPair::KeyPair(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
KeyPair::KeyPair(KeyPair&&) noexcept = default;
KeyPair& KeyPair::operator=(KeyPair&&) noexcept = default;
KeyPair::~KeyPair() {
    OPENSSL_cleanse(auth_secret_.data(), auth_secret_.size());
}

KeyPair KeyPair::from_private(const Bytes& private_key, const Bytes& auth_secret) {
    if (private_key.size() != kPrivateKeyLen)
        throw std::invalid_argument(cat("private key must be ", kPrivateKeyLen, " bytes, got ", private_key.size()));
    if (auth_secret.size() != kAuthSecretLen)
        throw std::invalid_argument(cat("auth secret must be ", kAuthSecretLen, " bytes, got ", auth_secret.size()));

    BnPtr priv(BN_secure_new());
    if (!priv) openssl_fail("BN_secure_new");
    if (!BN_bin2bn(private_key.data(), static_cast<int>(private_key.size()), priv.get())) openssl_fail("BN_bin2bn");
    Bytes pub = public_from_private(priv.get());

    ParamBldPtr bld(OSSL_PARAM_BLD_new());
    if (!bld) openssl_fail("OSSL_PARAM_BLD_new");
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, kCurveName, 0) ||
        !OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv.get()) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub.data(), pub.size()))
        openssl_fail("OSSL_PARAM_BLD_push");
    PkeyPtr pkey = pkey_from_params(bld.get(), EVP_PKEY_KEYPAIR);
    if (!pkey) openssl_fail("EVP_PKEY_fromdata(P-256 key pair)");

    auto impl = std::make_unique<Impl>();
    impl->pkey = std::move(pkey);
    impl->private_key = private_key;
    KeyPair kp(std::move(impl));
    kp.public_key_ = std::move(pub);
    kp.auth_secret_ = auth_secret;
    return kp;
}

KeyPair KeyPair::generate() {
    PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    if (!key) openssl_fail("EVP_PKEY_Q_keygen(P-256)");
    BIGNUM* raw = nullptr;
    if (EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &raw) != 1) openssl_fail("EVP_PKEY_get_bn_param");
    BnPtr priv(raw);
    Bytes private_key(kPrivateKeyLen);
    Wipe wipe_private{private_key};
    if (BN_bn2binpad(priv.get(), private_key.data(), static_cast<int>(private_key.size())) < 0)
        openssl_fail("BN_bn2binpad");
    Bytes auth(kAuthSecretLen);
    Wipe wipe_auth{auth};
    if (RAND_bytes(auth.data(), static_cast<int>(auth.size())) != 1) openssl_fail("RAND_bytes");
    return from_private(private_key, auth);
}

KeyPair KeyPair::load(const std::filesystem::path& file) {
    std::string text = fs::read_file(file);  // IoError names the file
    Bytes priv, pub, auth;
    std::string why;
    {
        Wipe wipe_priv{priv};
        Wipe wipe_auth{auth};
        why = parse_key_file(text, priv, pub, auth);
        OPENSSL_cleanse(text.data(), text.size());
        if (why.empty()) {
            try {
                KeyPair kp = from_private(priv, auth);
                if (kp.public_key() == pub) return kp;
                why = "public_key does not match private_key";
            } catch (const std::invalid_argument& e) {
                why = e.what();
            }
        }
    }
    throw std::runtime_error(cat("cannot load push keys from ", file.string(), ": ", why));
}

void KeyPair::save(const std::filesystem::path& file) const {
    if (!impl_) throw std::logic_error("KeyPair::save on a moved-from object");
    if (file.has_parent_path()) fs::make_dirs(file.parent_path(), 0700);
    // Built by hand (base64url needs no JSON escaping) so that the only
    // copies of the secret are the ones wiped below.
    std::string priv = base64url_encode(impl_->private_key);
    std::string data;
    data.reserve(256);
    data += "{\n  \"private_key\": \"";
    data += priv;
    data += "\",\n  \"public_key\": \"";
    data += base64url_encode(public_key_);
    data += "\",\n  \"auth_secret\": \"";
    data += base64url_encode(auth_secret_);
    data += "\"\n}\n";
    OPENSSL_cleanse(priv.data(), priv.size());
    try {
        fs::write_atomic(file, data, 0600);
    } catch (...) {
        OPENSSL_cleanse(data.data(), data.size());
        throw;
    }
    OPENSSL_cleanse(data.data(), data.size());
}

Bytes KeyPair::decrypt(const Bytes& body) const {
    if (!impl_) throw std::logic_error("KeyPair::decrypt on a moved-from object");
    if (body.size() > kMaxMessage) reject(cat("message larger than ", kMaxMessage, " bytes"));
    if (body.size() < kHeaderLen)
        reject(cat("message too short for the aes128gcm header (", body.size(), " bytes)"));
    const uint8_t* p = body.data();
    Bytes salt(p, p + kSaltLen);
    uint32_t rs = (uint32_t{p[16]} << 24) | (uint32_t{p[17]} << 16) | (uint32_t{p[18]} << 8) | p[19];
    size_t idlen = p[20];
    if (idlen != kPublicKeyLen)
        reject(cat("key id length is ", idlen, ", expected ", kPublicKeyLen, " (sender public key)"));
    if (body.size() < kHeaderLen + idlen)
        reject(cat("message too short for the aes128gcm header (", body.size(), " bytes)"));
    if (rs < kMinRecordSize) reject(cat("record size ", rs, " is below ", kMinRecordSize));
    const uint8_t* keyid = p + kHeaderLen;
    const uint8_t* ciphertext = keyid + idlen;
    size_t ct_len = body.size() - kHeaderLen - idlen;
    if (ct_len < kTagLen + 1)
        reject(cat("ciphertext too short (", ct_len, " bytes, need at least ", kTagLen + 1, ")"));
    if (ct_len > rs)
        reject(cat("ciphertext of ", ct_len, " bytes exceeds the record size ", rs,
                   " (only single-record messages are supported)"));

    PkeyPtr sender = peer_public_key(keyid, idlen);
    Bytes as_public(keyid, keyid + idlen);

    // RFC 8291 §3.3: combine the ECDH secret with the auth secret.
    Bytes ecdh_secret = ecdh(impl_->pkey.get(), sender.get());
    Wipe wipe_ecdh{ecdh_secret};
    Bytes key_info = label("WebPush: info");
    key_info.insert(key_info.end(), public_key_.begin(), public_key_.end());
    key_info.insert(key_info.end(), as_public.begin(), as_public.end());
    Bytes ikm = hkdf(auth_secret_, ecdh_secret, key_info, 32);
    Wipe wipe_ikm{ikm};

    // RFC 8188 §2.2/2.3 (RFC 8291 §3.4): content encryption key and nonce.
    Bytes cek = hkdf(salt, ikm, label("Content-Encoding: aes128gcm"), 16);
    Wipe wipe_cek{cek};
    Bytes nonce = hkdf(salt, ikm, label("Content-Encoding: nonce"), 12);  // record 0: XOR with 0

    Bytes plaintext;
    if (!aes128gcm_open(cek, nonce, ciphertext, ct_len - kTagLen, ciphertext + ct_len - kTagLen, plaintext))
        reject("authentication failed (tampered message or wrong key)");

    // RFC 8188 §2: data || delimiter (0x02 for the last record) || zeros.
    size_t end = plaintext.size();
    while (end > 0 && plaintext[end - 1] == 0x00) --end;
    if (end == 0 || plaintext[end - 1] != 0x02) {
        OPENSSL_cleanse(plaintext.data(), plaintext.size());
        reject("bad padding");
    }
    plaintext.resize(end - 1);
    return plaintext;
}

}  // namespace davsyncd::push
