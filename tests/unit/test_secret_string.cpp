#include <doctest/doctest.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <utility>

#include "core/secret_string.hpp"

using davsyncd::SecretString;

namespace {

// A password must never reach a log line by accident.
template <typename T>
concept Streamable = requires(std::ostream& os, const T& v) { os << v; };
static_assert(!Streamable<SecretString>);

bool all_zero(const char* p, std::size_t n) { return std::all_of(p, p + n, [](char c) { return c == '\0'; }); }

}  // namespace

TEST_SUITE("secret") {

TEST_CASE("wipe zeroes every byte the string owns, spare capacity included") {
    std::string s(100, 'x');
    s.resize(10);  // the 90 bytes beyond the end still hold 'x'
    const char* buffer = s.data();
    auto capacity = s.capacity();
    SecretString::wipe(s);
    CHECK(s.empty());
    CHECK(s.data() == buffer);  // no reallocation left a copy elsewhere
    CHECK(all_zero(buffer, capacity));
}

TEST_CASE("a std::string moved in is wiped, short (in-place) ones too") {
    std::string small = "hunter2";  // held inside the string object itself
    const char* small_buffer = small.data();
    auto small_capacity = small.capacity();
    SecretString a(std::move(small));
    CHECK(a == "hunter2");
    CHECK(all_zero(small_buffer, small_capacity));

    std::string large(64, 'p');
    SecretString b(std::move(large));  // the heap buffer changes hands
    CHECK(b.size() == 64);
    CHECK(large.empty());
}

TEST_CASE("moving, assigning and clearing keep the value where it belongs") {
    SecretString a = "first";
    SecretString b = std::move(a);
    CHECK(b == "first");
    CHECK(a.empty());
    SecretString c;
    c = b;
    CHECK(c == b);
    c = SecretString("second");
    CHECK(c == "second");
    c.clear();
    CHECK(c.empty());
    CHECK(c.str().empty());
    SecretString d(std::string_view("view"));
    CHECK(std::string(d.c_str()) == "view");
}

}  // TEST_SUITE("secret")
