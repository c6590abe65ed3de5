// Web Push message decryption (RFC 8291, content coding aes128gcm of
// RFC 8188) and the key material a subscription needs: a P-256 key pair and
// a 16-byte auth secret, generated with OpenSSL and kept in a 0600 file.
//
// The daemon is the user agent (UA) of RFC 8291: the server (application
// server, AS) encrypts to our public key; the distributor hands us the raw
// encrypted body; we decrypt it here.
//
// Any thread; objects are immutable after construction.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace davsyncd::push {

using Bytes = std::vector<uint8_t>;

// Malformed or undecryptable message: wrong length, bad header, tag
// mismatch (tampered, wrong key or secret), bad padding. The message says
// which, never key material.
struct DecryptError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Base64url without padding (RFC 4648 §5), as Web Push uses it. decode
// accepts padded input too; throws std::invalid_argument on bad characters.
std::string base64url_encode(const Bytes& data);
Bytes base64url_decode(std::string_view text);

class KeyPair {
public:
    // A fresh P-256 key pair and 16-byte auth secret (OpenSSL RNG).
    static KeyPair generate();
    // From raw material: private scalar (32 bytes), auth secret (16 bytes).
    static KeyPair from_private(const Bytes& private_key, const Bytes& auth_secret);
    // Loads the JSON file written by save(); throws std::runtime_error naming
    // the file when it is unreadable or malformed.
    static KeyPair load(const std::filesystem::path& file);
    // Atomic write, mode 0600 (it holds the private key).
    void save(const std::filesystem::path& file) const;

    KeyPair(KeyPair&&) noexcept;
    KeyPair& operator=(KeyPair&&) noexcept;
    ~KeyPair();

    // Uncompressed point, 65 bytes (0x04 || X || Y).
    const Bytes& public_key() const { return public_key_; }
    const Bytes& auth_secret() const { return auth_secret_; }

    // Decrypts one aes128gcm Web Push message body (at most 4096 bytes, a
    // single record) and returns the plaintext without padding.
    Bytes decrypt(const Bytes& body) const;

private:
    struct Impl;
    explicit KeyPair(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
    Bytes public_key_;
    Bytes auth_secret_;
};

}  // namespace davsyncd::push
