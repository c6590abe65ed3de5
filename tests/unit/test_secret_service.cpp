#include <doctest/doctest.h>

#include <string>

#include "config/config.hpp"
#include "secrets/secret_service.hpp"

using namespace davsyncd;

TEST_SUITE("secret") {

TEST_CASE("the hint names set-password and the secret-tool line for the account's item") {
    config::Account a;
    a.id = "personal";
    CHECK(secrets::how_to_store(a) ==
          "`davsyncctl set-password personal` or "
          "`secret-tool store --label davsyncd application davsyncd account personal`");
    // Attributes of another program's item, quoted for a shell where needed.
    a.secret = {{"service", "dav.example.org"}, {"user", "alice wonder"}, {"note", "it's"}};
    CHECK(secrets::how_to_store(a) ==
          "`secret-tool store --label davsyncd note 'it'\\''s' service dav.example.org user 'alice wonder'` "
          "(or `davsyncctl set-password personal`)");
}

TEST_CASE("only what the user must change waits for the user") {
    using Kind = secrets::SecretError::Kind;
    CHECK(secrets::SecretError(Kind::not_found, "").needs_user());
    CHECK(secrets::SecretError(Kind::locked, "").needs_user());
    CHECK(secrets::SecretError(Kind::dismissed, "").needs_user());
    // A keyring not started yet, or a timeout, may pass: retried with backoff.
    CHECK_FALSE(secrets::SecretError(Kind::no_service, "").needs_user());
    CHECK_FALSE(secrets::SecretError(Kind::failed, "").needs_user());
}

}  // TEST_SUITE("secret")
