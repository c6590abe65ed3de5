#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <future>
#include <string>
#include <thread>
#include <pthread.h>
#include <unistd.h>

#include "config/config.hpp"
#include "dav/http_client.hpp"

using namespace davsyncd;
using config::ConfigError;

namespace {

const char* const kFile = "/home/a/.config/davsyncd/config.json";

fs::XdgDirs test_xdg() { return fs::XdgDirs{"/home/a/.config", "/home/a/.local/state", "/home/a/.local/share"}; }

config::Config parse(const std::string& text) { return config::parse(text, kFile, test_xdg()); }

// The ConfigError message for `text`; fails the test when it parses.
std::string error_of(const std::string& text) {
    try {
        parse(text);
    } catch (const ConfigError& e) {
        return e.what();
    }
    FAIL_CHECK("expected a ConfigError for: " << text);
    return "";
}

std::string at(int line) { return std::string(kFile) + ":" + std::to_string(line) + ": "; }

// Sets an environment variable for one test and restores it afterwards.
class EnvGuard {
public:
    EnvGuard(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        ::setenv(name, value, 1);
    }
    ~EnvGuard() {
        if (old_) ::setenv(name_, old_->c_str(), 1);
        else ::unsetenv(name_);
    }
    EnvGuard(const EnvGuard&) = delete;
    EnvGuard& operator=(const EnvGuard&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

// A fresh folder under the temp dir, removed at the end of the test.
class TempDir {
public:
    TempDir() {
        path_ = std::filesystem::temp_directory_path() /
                ("davsyncd-test-config-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    static inline int counter_ = 0;
    std::filesystem::path path_;
};

const std::string kMinimal = R"({"accounts": [{"id": "personal", "url": "https://dav.example.org/", "username": "alice",
               "password_command": "pass show dav/alice"}]})";

// Pretty-printed, one key per line, `extra_line` on line 7. Without
// `with_url` line 5 holds verify_tls instead, so that line 7 can be the url.
std::string pretty_account(const std::string& extra_line, bool with_url = true) {
    return std::string("{\n")                                   // 1
           + "  \"accounts\": [\n"                              // 2
           + "    {\n"                                          // 3
           + "      \"id\": \"personal\",\n"                    // 4
           + (with_url ? "      \"url\": \"https://dav.example.org/\",\n"
                       : "      \"verify_tls\": true,\n")       // 5
           + "      \"username\": \"alice\",\n"                 // 6
           + extra_line + ",\n"                                 // 7
           + "      \"password_command\": \"pass show x\"\n"    // 8
           + "    }\n"                                          // 9
           + "  ]\n"                                            // 10
           + "}\n";
}

}  // namespace

TEST_SUITE("config") {

TEST_CASE("the minimal example parses") {
    auto cfg = parse(kMinimal);
    REQUIRE(cfg.accounts.size() == 1);
    const auto& a = cfg.accounts[0];
    CHECK(a.id == "personal");
    CHECK(a.url == "https://dav.example.org/");
    CHECK(a.username == "alice");
    REQUIRE(a.password_command.has_value());
    CHECK(*a.password_command == "pass show dav/alice");
    CHECK_FALSE(a.password.has_value());
    CHECK(cfg.source == kFile);
}

TEST_CASE("defaults") {
    auto cfg = parse(kMinimal);
    CHECK(cfg.state_dir == "/home/a/.local/state/davsyncd");
    CHECK(cfg.data_dir == "/home/a/.local/share/davsyncd");
    CHECK_FALSE(cfg.push_distributor.has_value());
    const auto& a = cfg.accounts.at(0);
    CHECK(a.local_root == "/home/a/.local/share/davsyncd/personal");
    CHECK(a.sync_interval == std::chrono::seconds(900));
    CHECK(a.verify_tls);
    CHECK(a.conflict_policy == config::ConflictPolicy::server_wins);
    CHECK(a.multiget_batch == 0u);
    CHECK(a.collections.include.empty());
    CHECK(a.collections.exclude.empty());
    CHECK(config::default_path(test_xdg()) == "/home/a/.config/davsyncd/config.json");
}

TEST_CASE("every key is read") {
    auto cfg = parse(R"({
      "push_distributor": "org.unifiedpush.Distributor.ntfy",
      "accounts": [{
        "id": "work_2-b", "url": "HTTP://[::1]:5232/dav/", "username": "",
        "local_root": "/srv/dav/work/",
        "sync_interval": 60,
        "collections": {"include": ["cal", "Team"], "exclude": ["birthdays"]},
        "verify_tls": false,
        "conflict_policy": "newest",
        "multiget_batch": 1000
      }, {
        "id": "b", "url": "https://b.example/", "username": "bob", "password": "hunter2",
        "conflict_policy": "local-wins", "collections": {}
      }]
    })");
    REQUIRE(cfg.push_distributor.has_value());
    CHECK(*cfg.push_distributor == "org.unifiedpush.Distributor.ntfy");
    REQUIRE(cfg.accounts.size() == 2);
    const auto& a = cfg.accounts[0];
    CHECK(a.id == "work_2-b");
    CHECK(a.username.empty());
    CHECK_FALSE(a.password_command.has_value());
    CHECK_FALSE(a.password.has_value());
    CHECK(a.local_root == "/srv/dav/work");  // normalised, no trailing slash
    CHECK(a.sync_interval == std::chrono::seconds(60));
    CHECK(a.collections.include == std::vector<std::string>{"cal", "Team"});
    CHECK(a.collections.exclude == std::vector<std::string>{"birthdays"});
    CHECK_FALSE(a.verify_tls);
    CHECK(a.conflict_policy == config::ConflictPolicy::newest);
    CHECK(a.multiget_batch == 1000u);
    const auto& b = cfg.accounts[1];
    REQUIRE(b.password.has_value());
    CHECK(*b.password == "hunter2");
    CHECK(b.conflict_policy == config::ConflictPolicy::local_wins);
    CHECK(b.local_root == "/home/a/.local/share/davsyncd/b");
}

TEST_CASE("push_service: top level, per account, https or loopback, origin only") {
    auto two = [](const std::string& top, const std::string& second) {
        return "{" + top + R"("accounts": [
            {"id": "a", "url": "https://dav.example.org/", "username": ""},
            {"id": "b", "url": "https://dav.example.org/", "username": "")" + second + "}]}";
    };
    auto cfg = parse(two(R"("push_service": "https://ntfy.example.org/", )", ""));
    CHECK(*cfg.push_service == "https://ntfy.example.org");
    CHECK(*cfg.accounts[0].push_service == "https://ntfy.example.org");
    CHECK(*cfg.accounts[1].push_service == "https://ntfy.example.org");
    cfg = parse(two("", R"(, "push_service": "http://127.0.0.1:8080")"));
    CHECK_FALSE(cfg.accounts[0].push_service.has_value());
    CHECK(*cfg.accounts[1].push_service == "http://127.0.0.1:8080");
    cfg = parse(two(R"("push_service": "https://a.example", )", R"(, "push_service": "https://b.example")"));
    CHECK(*cfg.accounts[0].push_service == "https://a.example");
    CHECK(*cfg.accounts[1].push_service == "https://b.example");

    auto msg = error_of(pretty_account("      \"push_service\": \"http://ntfy.example.org\""));
    CHECK(msg.rfind(at(7) + "account 'personal': key 'push_service': plain http to http://ntfy.example.org", 0) == 0);
    msg = error_of(pretty_account("      \"push_service\": \"https://ntfy.example.org/topic\""));
    CHECK(msg.rfind(at(7) + "account 'personal': key 'push_service': expected the server's address only", 0) == 0);
    msg = error_of(pretty_account("      \"push_service\": 7"));
    CHECK(msg.rfind(at(7) + "account 'personal': key 'push_service':", 0) == 0);
    msg = error_of(R"({"push_service": "ntfy.sh", "accounts": [{"id": "a", "url": "https://d.example/", "username": ""}]})");
    CHECK(msg.rfind(at(1) + "key 'push_service': expected an https:// URL of an ntfy server", 0) == 0);
}

TEST_CASE("the shipped example loads") {
    EnvGuard home("HOME", "/home/tester");
    auto path = std::filesystem::path(SOURCE_ROOT) / "config" / "config.example.json";
    auto cfg = config::load(path, test_xdg());
    CHECK(cfg.source == path);
    REQUIRE(cfg.accounts.size() == 2);
    CHECK(cfg.accounts[0].id == "personal");
    CHECK(cfg.accounts[0].local_root == "/home/a/.local/share/davsyncd/personal");
    CHECK(cfg.accounts[1].id == "work");
    CHECK(cfg.accounts[1].local_root == "/home/tester/Work/dav");
    CHECK(cfg.accounts[1].sync_interval == std::chrono::seconds(1800));
    CHECK(cfg.accounts[1].multiget_batch == 100u);
}

TEST_CASE("unknown key: line, account, key and a suggestion") {
    auto msg = error_of(pretty_account("      \"pasword\": \"x\""));
    CHECK(msg == at(7) + "account 'personal': unknown key 'pasword' (did you mean 'password'?)");
    // Single-line files report line 1.
    msg = error_of(R"({"accounts": [{"id": "p", "url": "https://x.example/", "username": "", "verfy_tls": true}]})");
    CHECK(msg == at(1) + "account 'p': unknown key 'verfy_tls' (did you mean 'verify_tls'?)");
    // Top level, and a key put at the wrong level.
    msg = error_of("{\n\"acounts\": []\n}");
    CHECK(msg == at(2) + "unknown key 'acounts' (did you mean 'accounts'?)");
    msg = error_of("{\"username\": \"x\", \n\n \"url\": \"x\", \"accounts\": []}");
    CHECK(msg.rfind(at(1) + "unknown key 'username'", 0) == 0);
    CHECK(msg.find("inside an entry of 'accounts'") != std::string::npos);
    msg = error_of(pretty_account("      \"push_distributor\": \"org.unifiedpush.Distributor.x\""));
    CHECK(msg.rfind(at(7) + "account 'personal': unknown key 'push_distributor'", 0) == 0);
    CHECK(msg.find("top level") != std::string::npos);
    // Nothing close: the known keys are listed.
    msg = error_of(pretty_account("      \"zzzzzzzz\": 1"));
    CHECK(msg.rfind(at(7) + "account 'personal': unknown key 'zzzzzzzz' (known keys:", 0) == 0);
    CHECK(msg.find("sync_interval") != std::string::npos);
}

TEST_CASE("wrong types") {
    auto msg = error_of(pretty_account("      \"sync_interval\": \"abc\""));
    CHECK(msg == at(7) + "account 'personal': key 'sync_interval': expected a positive integer (seconds), got \"abc\"");
    for (const char* v : {"0", "-5", "1.5", "true", "31536001"}) {
        CAPTURE(v);
        msg = error_of(pretty_account(std::string("      \"sync_interval\": ") + v));
        CHECK(msg.rfind(at(7) + "account 'personal': key 'sync_interval': expected a positive integer", 0) == 0);
        CHECK(msg.find(std::string("got ") + v) != std::string::npos);
    }
    msg = error_of(pretty_account("      \"verify_tls\": \"yes\""));
    CHECK(msg == at(7) + "account 'personal': key 'verify_tls': expected true or false, got \"yes\"");
    msg = error_of(pretty_account("      \"url\": 42", false));
    CHECK(msg == at(7) + "account 'personal': key 'url': expected a string, got 42");
    for (const char* v : {"0", "1001", "\"10\""}) {
        CAPTURE(v);
        msg = error_of(pretty_account(std::string("      \"multiget_batch\": ") + v));
        CHECK(msg.rfind(at(7) + "account 'personal': key 'multiget_batch': expected a positive integer", 0) == 0);
    }
    msg = error_of(pretty_account("      \"collections\": [\"cal\"]"));
    CHECK(msg.rfind(at(7) + "account 'personal': key 'collections': expected an object", 0) == 0);
    msg = error_of(R"({"accounts": [{"id": "p", "url": "https://x.example/", "username": "",
      "collections": {"include": ["a",
         7]}}]})");
    CHECK(msg == at(3) + "account 'p': key 'collections.include': expected a collection id or name (a string), got 7");
    msg = error_of(R"({"accounts": [{"id": "p", "url": "https://x.example/", "username": "",
      "collections": {"exlude": []}}]})");
    CHECK(msg == at(2) + "account 'p': key 'collections': unknown key 'exlude' (did you mean 'exclude'?)");
    msg = error_of("{\"accounts\": {}}");
    CHECK(msg == at(1) + "key 'accounts': expected an array of accounts, got an object");
    msg = error_of("{\"accounts\": [\n\"personal\"]}");
    CHECK(msg == at(2) + "account #1: expected an object, got a string");
    msg = error_of("[1, 2]");
    CHECK(msg.rfind(at(1) + "expected a JSON object", 0) == 0);
}

TEST_CASE("a password of the wrong type is not echoed") {
    auto msg = error_of(pretty_account("      \"password\": 12345678"));
    CHECK(msg == at(7) + "account 'personal': key 'password': expected a string, got an integer");
    CHECK(msg.find("12345678") == std::string::npos);
}

TEST_CASE("an account with a username and no password source uses the Secret Service") {
    auto cfg = parse(R"({"accounts": [{"id": "p", "url": "https://x.example/", "username": "alice"},
                                       {"id": "anon", "url": "https://y.example/", "username": ""}]})");
    const auto& p = cfg.accounts[0];
    CHECK(p.secret.empty());
    CHECK(config::password_source(p) == config::PasswordSource::secret_service);
    CHECK(config::secret_attributes(p) == std::map<std::string, std::string>{{"application", "davsyncd"}, {"account", "p"}});
    CHECK(config::password_source(cfg.accounts[1]) == config::PasswordSource::none);
}

TEST_CASE("'secret' names the attributes of another program's item") {
    auto cfg = parse(R"({"accounts": [{"id": "p", "url": "https://x.example/", "username": "alice",
                                        "secret": {"service": "dav.example.org", "user": "alice"}}]})");
    const auto& p = cfg.accounts[0];
    CHECK(config::password_source(p) == config::PasswordSource::secret_service);
    CHECK(config::secret_attributes(p) == std::map<std::string, std::string>{{"service", "dav.example.org"}, {"user", "alice"}});
    // Without a username too: some servers take a token alone.
    cfg = parse(R"({"accounts": [{"id": "t", "url": "https://x.example/", "username": "", "secret": {"k": "v"}}]})");
    CHECK(config::password_source(cfg.accounts[0]) == config::PasswordSource::secret_service);
    // A change of attributes is a change of the account (a reload restarts it).
    auto other = cfg.accounts[0];
    other.secret["k"] = "w";
    CHECK_FALSE(other == cfg.accounts[0]);
}

TEST_CASE("bad 'secret' values are named") {
    auto account = [](const std::string& secret, const std::string& more = "") {
        return "{\"accounts\": [{\"id\": \"p\", \"url\": \"https://x.example/\", \"username\": \"a\"" + more +
               ",\n\"secret\": " + secret + "}]}";
    };
    auto msg = error_of(account("\"service=dav\""));
    CHECK(msg.rfind(at(2) + "account 'p': key 'secret': expected an object of Secret Service attributes", 0) == 0);
    CHECK(error_of(account("{}")).find("names no attribute; leave 'secret' out to use the default item") !=
          std::string::npos);
    CHECK(error_of(account("{\"user\": 5}")) == at(2) + "account 'p': key 'secret.user': expected a string, got 5");
    CHECK(error_of(account("{\"\": \"x\"}")).find("attribute names must not be empty") != std::string::npos);
    CHECK(error_of(account("{\"a\": \"x\", \"a\": \"y\"}")).find("'a'") != std::string::npos);
    msg = error_of(account("{\"a\": \"x\"}", ", \"password_command\": \"pass x\""));
    CHECK(msg == at(2) + "account 'p': key 'secret': names a Secret Service item, but 'password_command' is set too; "
                         "keep only one password source");
    msg = error_of(account("{\"a\": \"x\"}", ", \"password\": \"pw\""));
    CHECK(msg.find("but 'password' is set too") != std::string::npos);
}

TEST_CASE("missing required keys") {
    auto msg = error_of("{\n  \"accounts\": [\n    {\"id\": \"p\", \"username\": \"\"}\n  ]\n}");
    CHECK(msg.rfind(at(3) + "account 'p': missing required key 'url'", 0) == 0);
    msg = error_of("{\"accounts\": [\n{\"id\": \"p\", \"url\": \"https://x.example/\"}]}");
    CHECK(msg.rfind(at(2) + "account 'p': missing required key 'username'", 0) == 0);
    msg = error_of(R"({"accounts": [{"id": "a", "url": "https://x.example/", "username": ""},
                                     {"url": "https://y.example/", "username": ""}]})");
    CHECK(msg == at(2) + "account #2: missing required key 'id'");
    msg = error_of("{\n}");
    CHECK(msg.rfind(at(1) + "missing required key 'accounts'", 0) == 0);
}

TEST_CASE("both password and password_command") {
    auto msg = error_of(pretty_account("      \"password\": \"s3cret\""));
    CHECK(msg.rfind(at(8) + "account 'personal': both 'password' and 'password_command'", 0) == 0);
    CHECK(msg.find("s3cret") == std::string::npos);
}

TEST_CASE("bad and duplicate ids") {
    auto msg = error_of(R"({"accounts": [{"id": "a", "url": "https://x.example/", "username": ""},
                                     {"id": "no spaces", "url": "https://y.example/", "username": ""}]})");
    CHECK(msg.rfind(at(2) + "account #2: key 'id': invalid id \"no spaces\"", 0) == 0);
    std::string long_id(65, 'a');
    msg = error_of(R"({"accounts": [{"id": ")" + long_id + R"(", "url": "https://x.example/", "username": ""}]})");
    CHECK(msg.rfind(at(1) + "account #1: key 'id': invalid id", 0) == 0);
    msg = error_of(R"({"accounts": [{"id": 7, "url": "https://x.example/", "username": ""}]})");
    CHECK(msg == at(1) + "account #1: key 'id': expected a string, got 7");
    msg = error_of("{\"accounts\": [\n"
                   "  {\"id\": \"same\", \"url\": \"https://x.example/\", \"username\": \"\"},\n"
                   "  {\"url\": \"https://y.example/\", \"username\": \"\",\n"
                   "   \"id\": \"same\"}\n"
                   "]}");
    CHECK(msg == at(4) + "account #2: key 'id': duplicate account id 'same' (already used by account #1 at line 2)");
}

TEST_CASE("bad urls") {
    for (const char* url : {"ftp://dav.example.org/", "dav.example.org", "https:///dav/", "https://",
                            "https://dav.example.org:99999/", "https://dav.example.org:/", "https://a b/",
                            "https://alice:pw@dav.example.org/", "https://[::1/"}) {
        CAPTURE(url);
        auto msg = error_of(pretty_account(std::string("      \"url\": \"") + url + "\"", false));
        CHECK(msg.rfind(at(7) + "account 'personal': key 'url': expected an absolute http:// or https:// URL", 0) ==
              0);
    }
    auto msg = error_of(pretty_account("      \"url\": \"https://alice:pw@dav.example.org/\"", false));
    CHECK(msg.find("user info") != std::string::npos);
    for (const char* url : {"http://localhost:5232/", "https://dav.example.org", "HTTPS://Dav.Example.org/x?y#z",
                            "https://[2001:db8::1]:8443/dav/"}) {
        CAPTURE(url);
        auto cfg = parse(R"({"accounts": [{"id": "p", "username": "", "url": ")" + std::string(url) + "\"}]}");
        CHECK(cfg.accounts.at(0).url == url);
    }
}

TEST_CASE("local_root: ~ expansion, relative paths, sharing") {
    EnvGuard home("HOME", "/home/tester");
    auto cfg = parse(R"({"accounts": [{"id": "p", "url": "https://x.example/", "username": "",
                                       "local_root": "~/Calendars/p/"}]})");
    CHECK(cfg.accounts.at(0).local_root == "/home/tester/Calendars/p");

    auto msg = error_of(pretty_account("      \"local_root\": \"dav/personal\""));
    CHECK(msg == at(7) + "account 'personal': key 'local_root': expected an absolute path (or one starting with "
                         "~/), got \"dav/personal\"");
    msg = error_of(pretty_account("      \"local_root\": \"~bob/dav\""));
    CHECK(msg.rfind(at(7) + "account 'personal': key 'local_root': expected an absolute path", 0) == 0);
    msg = error_of(pretty_account("      \"local_root\": \"\""));
    CHECK(msg.rfind(at(7) + "account 'personal': key 'local_root': expected an absolute path", 0) == 0);

    // Same folder as another account's default.
    msg = error_of("{\"accounts\": [\n"
                   "  {\"id\": \"a\", \"url\": \"https://x.example/\", \"username\": \"\"},\n"
                   "  {\"id\": \"b\", \"url\": \"https://y.example/\", \"username\": \"\",\n"
                   "   \"local_root\": \"/home/a/.local/share/davsyncd/a/\"}\n"
                   "]}");
    CHECK(msg.rfind(at(4) + "account 'b': key 'local_root': /home/a/.local/share/davsyncd/a is also the local_root "
                            "of account 'a'",
                    0) == 0);
    // One inside the other.
    msg = error_of("{\"accounts\": [\n"
                   "  {\"id\": \"a\", \"url\": \"https://x.example/\", \"username\": \"\", \"local_root\": \"/dav\"},\n"
                   "  {\"id\": \"b\", \"url\": \"https://y.example/\", \"username\": \"\",\n"
                   "   \"local_root\": \"/dav/b\"}\n"
                   "]}");
    CHECK(msg.rfind(at(4) + "account 'b': key 'local_root': /dav/b lies inside /dav", 0) == 0);
}

TEST_CASE("conflict policy") {
    auto msg = error_of(pretty_account("      \"conflict_policy\": \"server_wins\""));
    CHECK(msg == at(7) + "account 'personal': key 'conflict_policy': expected \"server-wins\", \"local-wins\" or "
                         "\"newest\", got \"server_wins\" (did you mean \"server-wins\"?)");
    CHECK(std::string(config::to_string(config::ConflictPolicy::server_wins)) == "server-wins");
    CHECK(std::string(config::to_string(config::ConflictPolicy::local_wins)) == "local-wins");
    CHECK(std::string(config::to_string(config::ConflictPolicy::newest)) == "newest");
}

TEST_CASE("push_distributor") {
    auto msg = error_of("{\n\"push_distributor\": \"org.example.Distributor\",\n\"accounts\": []}");
    CHECK(msg.rfind(at(2) + "key 'push_distributor': expected a D-Bus name starting with "
                            "'org.unifiedpush.Distributor.'",
                    0) == 0);
    msg = error_of("{\"push_distributor\": \"org.unifiedpush.Distributor.\", \"accounts\": []}");
    CHECK(msg.rfind(at(1) + "key 'push_distributor':", 0) == 0);
    msg = error_of("{\"push_distributor\": \"org.unifiedpush.Distributor.9x\", \"accounts\": []}");
    CHECK(msg.rfind(at(1) + "key 'push_distributor':", 0) == 0);
}

TEST_CASE("no accounts") {
    auto msg = error_of("{\n  \"accounts\": [\n  ]\n}");
    CHECK(msg.rfind(at(2) + "key 'accounts': no accounts configured; add one", 0) == 0);
    CHECK(msg.find("config.example.json") != std::string::npos);
}

TEST_CASE("duplicate keys") {
    auto msg = error_of(pretty_account("      \"username\": \"bob\""));
    CHECK(msg == at(7) + "account 'personal': key 'username' appears more than once");
    msg = error_of("{\"accounts\": [],\n \"accounts\": []}");
    CHECK(msg == at(2) + "key 'accounts' appears more than once");
}

TEST_CASE("JSON syntax errors give line and column") {
    auto msg = error_of("{\n  \"accounts\": [\n    {\"id\": \"a\",}\n  ]\n}\n");
    CHECK(msg.rfind(at(3).substr(0, at(3).size() - 2) + ":16: invalid JSON: ", 0) == 0);
    CHECK(msg.find("json.exception") == std::string::npos);
    // The column is where the parser stopped: the end of the unexpected token.
    msg = error_of("{\"accounts\": [] \"x\": 1}");
    CHECK(msg.rfind(std::string(kFile) + ":1:19: invalid JSON: ", 0) == 0);
    msg = error_of("{\"accounts\": [\n  {\"id\": tru}]}");
    CHECK(msg.rfind(std::string(kFile) + ":2:13: invalid JSON: ", 0) == 0);
    CHECK(msg.find("invalid literal") != std::string::npos);
    msg = error_of("{\"accounts\": [\n");
    CHECK(msg.rfind(std::string(kFile) + ":2:1: invalid JSON: ", 0) == 0);
    msg = error_of(std::string("{\"accounts\": []}\n\0garbage", 25));
    CHECK(msg == std::string(kFile) + ":2:1: invalid JSON: NUL byte");
    msg = error_of("");
    CHECK(msg.rfind(std::string(kFile) + ":1:1: invalid JSON: ", 0) == 0);
    // Strings, escapes and a BOM do not confuse the line count.
    msg = error_of("\xEF\xBB\xBF{\"accounts\": [{\"id\": \"p\", \"url\": \"https://x.example/\",\n"
                   "\"username\": \"a\\\"}\\n{\", \"password\": \"x\",\n"
                   "\"c\\u006fllections\": 5}]}");
    CHECK(msg == at(3) + "account 'p': key 'collections': expected an object like {\"include\": [...], "
                         "\"exclude\": [...]}, got an integer");
}

TEST_CASE("too deep nesting is refused") {
    std::string deep = "{\"accounts\": [{\"id\": \"p\", \"x\": " + std::string(200, '[') + std::string(200, ']') + "}]}";
    auto msg = error_of(deep);
    CHECK(msg.rfind(at(1) + "JSON nested deeper than", 0) == 0);
}

TEST_CASE("load: missing, unreadable and real files") {
    TempDir dir;
    auto missing = dir.path() / "davsyncd" / "config.json";
    try {
        config::load(missing, test_xdg());
        FAIL_CHECK("no error for a missing file");
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        CHECK(msg.rfind(missing.string() + " does not exist", 0) == 0);
        CHECK(msg.find("config.example.json") != std::string::npos);
        CHECK(msg.find("--config") != std::string::npos);
    }
    try {
        config::load(dir.path(), test_xdg());  // a folder: open works, read fails
        FAIL_CHECK("no error for a folder");
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        CHECK(msg == "cannot read " + dir.path().string() + ": Is a directory");
    }
    auto file = dir.path() / "config.json";
    {
        std::ofstream out(file);
        out << "{\n  \"accounts\": [\n    {\"id\": \"p\", \"url\": \"https://x.example/\", \"username\": \"\",\n"
               "     \"sync_interval\": -1}\n  ]\n}\n";
    }
    try {
        config::load(file, test_xdg());
        FAIL_CHECK("no error for a bad sync_interval");
    } catch (const ConfigError& e) {
        CHECK(std::string(e.what()) ==
              file.string() + ":4: account 'p': key 'sync_interval': expected a positive integer (seconds), got -1");
    }
    {
        std::ofstream out(file);
        out << kMinimal;
    }
    auto cfg = config::load(file, test_xdg());
    CHECK(cfg.source == file);
    CHECK(cfg.accounts.at(0).id == "personal");
}

TEST_CASE("resolve_password") {
    config::Account a;
    a.id = "personal";
    CHECK(config::resolve_password(a) == "");
    a.password = "inline pw";
    CHECK(config::resolve_password(a) == "inline pw");

    a.password.reset();
    a.password_command = "printf 'secret\\nother'";
    CHECK(config::resolve_password(a) == "secret");
    a.password_command = "printf 'crlf pw\\r\\n'";
    CHECK(config::resolve_password(a) == "crlf pw");
    a.password_command = "printf 'no newline'";
    CHECK(config::resolve_password(a) == "no newline");
    a.password_command = "head -c 200000 /dev/zero | tr '\\0' x; echo; echo second";
    CHECK(config::resolve_password(a).size() > 65536);

    a.password_command = "printf 'leaked-secret'; exit 3";
    try {
        config::resolve_password(a);
        FAIL_CHECK("no error for a failing command");
    } catch (const ConfigError& e) {
        std::string msg = e.what();
        CHECK(msg == "account 'personal': password_command failed (exit status 3)");
        CHECK(msg.find("leaked-secret") == std::string::npos);
    }
    a.password_command = "true";
    try {
        config::resolve_password(a);
        FAIL_CHECK("no error for empty output");
    } catch (const ConfigError& e) {
        CHECK(std::string(e.what()).rfind("account 'personal': password_command failed (exit status 0", 0) == 0);
    }
    a.password_command = "echo; echo second";
    CHECK_THROWS_AS(config::resolve_password(a), ConfigError);

    // A command that never finishes (a password manager waiting for an
    // unlock nobody gives) is stopped, with its children.
    a.password_command = "sleep 300 & sleep 300";
    CHECK_THROWS_WITH_AS(config::resolve_password(a, std::chrono::milliseconds(200)),
                         "account 'personal': password_command failed (did not finish within 0.2 s; stopped it)",
                         ConfigError);
}

namespace {

// Blocks signals in the calling thread and ignores one, as the daemon's
// threads do, until destroyed.
struct DaemonLikeSignals {
    sigset_t old_mask;
    struct sigaction old_usr1 {};
    DaemonLikeSignals() {
        sigset_t block;
        sigemptyset(&block);
        for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&block, s);
        pthread_sigmask(SIG_BLOCK, &block, &old_mask);
        struct sigaction ign {};
        ign.sa_handler = SIG_IGN;
        sigaction(SIGUSR1, &ign, &old_usr1);
    }
    ~DaemonLikeSignals() {
        sigaction(SIGUSR1, &old_usr1, nullptr);
        pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    }
};

template <typename F>
bool eventually(F condition, std::chrono::seconds deadline = std::chrono::seconds(10)) {
    auto until = std::chrono::steady_clock::now() + deadline;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

bool process_gone(const std::string& pid) {
    std::ifstream stat("/proc/" + pid + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    auto paren = line.rfind(')');
    return paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z';
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    return s;
}

}  // namespace

TEST_CASE("password_command runs with no blocked or ignored signals, whatever the daemon blocks") {
    DaemonLikeSignals daemon_like;
    config::Account a;
    a.id = "personal";
    // The "password" is the command's own signal state: "<blocked> <ignored>".
    a.password_command = "grep -E '^Sig(Blk|Ign):' /proc/self/status | cut -f2 | tr '\\n' ' '";
    std::string state = config::resolve_password(a).str();
    auto space = state.find(' ');
    REQUIRE(space == 16);
    CHECK(state.substr(0, space) == "0000000000000000");
    auto ignored = std::stoull(state.substr(space + 1, 16), nullptr, 16);
    // Bits are signal - 1. glibc's posix_spawn leaves its own two internal
    // signals (32 and 33, below SIGRTMIN) ignored; the child's libc takes
    // them over when it needs them. Every other signal is at its default.
    constexpr std::uint64_t kGlibcInternal = (1ull << 31) | (1ull << 32);
    CHECK((ignored & ~kGlibcInternal) == 0);
    // The shell itself too (a password manager run as `exec pass ...`).
    a.password_command = "exec grep -E '^SigBlk:' /proc/self/status";
    CHECK(config::resolve_password(a) == "SigBlk:\t0000000000000000");
}

TEST_CASE("password_command stops when its cancel flag is set") {
    auto dir = std::filesystem::temp_directory_path() / ("davsyncd-pwcancel-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    config::Account a;
    a.id = "personal";

    // Already set: nothing runs.
    std::atomic<bool> cancel{true};
    a.password_command = "touch " + (dir / "ran").string();
    CHECK_THROWS_WITH_AS(config::resolve_password(a, config::kPasswordCommandTimeout, &cancel),
                         "account 'personal': password_command cancelled", dav::Cancelled);
    CHECK_FALSE(std::filesystem::exists(dir / "ran"));

    // Set while it waits (a password manager asking to be unlocked): it and
    // its children are stopped.
    cancel = false;
    a.password_command = "sleep 300 & echo $! > " + (dir / "child").string() + "; sleep 300";
    auto running = std::async(std::launch::async,
                              [&] { return config::resolve_password(a, config::kPasswordCommandTimeout, &cancel); });
    REQUIRE(eventually([&] { return !slurp(dir / "child").empty(); }));
    cancel = true;
    REQUIRE(running.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
    CHECK_THROWS_AS(running.get(), dav::Cancelled);
    CHECK(eventually([&] { return process_gone(slurp(dir / "child")); }));

    // A cancel flag that stays clear changes nothing.
    cancel = false;
    a.password_command = "printf 'secret\\n'";
    CHECK(config::resolve_password(a, config::kPasswordCommandTimeout, &cancel) == "secret");
    std::filesystem::remove_all(dir);
}

TEST_CASE("password_command that closes its output but runs on is stopped at the deadline") {
    config::Account a;
    a.id = "personal";
    a.password_command = "printf 'secret\\n'; exec >&-; sleep 300";
    CHECK_THROWS_WITH_AS(config::resolve_password(a, std::chrono::milliseconds(300)),
                         "account 'personal': password_command failed (did not finish within 0.3 s; stopped it)",
                         ConfigError);
}

TEST_CASE("collection filter") {
    config::CollectionFilter all;
    CHECK(all.accepts("cal", "Calendar"));
    CHECK(all.accepts("x", ""));

    config::CollectionFilter f;
    f.include = {"cal", "Team Meetings"};
    CHECK(f.accepts("cal", "Whatever"));
    CHECK(f.accepts("b1f2", "Team Meetings"));
    CHECK_FALSE(f.accepts("contacts", "Contacts"));
    CHECK_FALSE(f.accepts("Cal", "calendar"));  // exact match only
    CHECK_FALSE(f.accepts("team", "Team"));

    f.exclude = {"Team Meetings"};
    CHECK_FALSE(f.accepts("b1f2", "Team Meetings"));  // exclude wins
    CHECK(f.accepts("cal", ""));

    config::CollectionFilter ex;
    ex.exclude = {"birthdays"};
    CHECK_FALSE(ex.accepts("birthdays", "Birthdays"));
    CHECK_FALSE(ex.accepts("abc", "birthdays"));
    CHECK(ex.accepts("abc", "Personal"));
}

}  // TEST_SUITE("config")
