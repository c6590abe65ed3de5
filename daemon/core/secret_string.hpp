// A password in memory: a std::string whose bytes are overwritten when it is
// replaced, moved from or destroyed, so that a freed buffer (or a core dump,
// should one be made despite PR_SET_DUMPABLE) does not keep it.
//
// It cannot be streamed: a password has no business in a log line, so
// printing one is a compile error rather than a review finding.
//
// What it cannot wipe: copies made before it took the text (a D-Bus message
// buffer, a JSON document) and the old buffer of a string that reallocated
// while growing; callers reserve up front where they build one piecewise.
//
// Thread affinity: none (a value type).
#pragma once

#include <string>
#include <string_view>
#include <string.h>  // explicit_bzero
#include <utility>

namespace davsyncd {

class SecretString {
public:
    SecretString() = default;
    // Implicit on purpose: `options.password = "..."` and a std::string moved
    // in both read naturally; the source of a move is wiped.
    SecretString(std::string&& text) : text_(std::move(text)) { wipe(text); }
    SecretString(const std::string& text) : text_(text) {}
    SecretString(std::string_view text) : text_(text) {}
    SecretString(const char* text) : text_(text) {}

    SecretString(const SecretString& other) : text_(other.text_) {}
    SecretString(SecretString&& other) noexcept : text_(std::move(other.text_)) { wipe(other.text_); }
    SecretString& operator=(const SecretString& other) {
        if (this != &other) {
            wipe(text_);
            text_ = other.text_;
        }
        return *this;
    }
    SecretString& operator=(SecretString&& other) noexcept {
        if (this != &other) {
            wipe(text_);
            text_ = std::move(other.text_);
            wipe(other.text_);
        }
        return *this;
    }
    ~SecretString() { wipe(text_); }

    const std::string& str() const { return text_; }
    const char* c_str() const { return text_.c_str(); }
    bool empty() const { return text_.empty(); }
    std::size_t size() const { return text_.size(); }
    void clear() { wipe(text_); }

    friend bool operator==(const SecretString& a, const SecretString& b) { return a.text_ == b.text_; }
    friend bool operator==(const SecretString& a, std::string_view b) { return a.text_ == b; }
    friend bool operator==(const SecretString& a, const char* b) { return a.text_ == b; }

    // Overwrites every byte the string owns, its spare capacity included
    // (growing to the capacity writes zeros there without reallocating),
    // and leaves it empty. explicit_bzero is never optimised away.
    static void wipe(std::string& s) noexcept {
        s.resize(s.capacity());
        explicit_bzero(s.data(), s.size());
        s.clear();
    }

private:
    std::string text_;
};

}  // namespace davsyncd
