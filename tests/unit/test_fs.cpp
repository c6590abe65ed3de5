#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "core/fs.hpp"

namespace stdfs = std::filesystem;
using namespace davsyncd;

namespace {
struct TempDir {
    stdfs::path path;
    TempDir() {
        char tmpl[] = "/tmp/davsyncd-test-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { stdfs::remove_all(path); }
};
}  // namespace

TEST_SUITE("fs") {

TEST_CASE("write_atomic replaces content and leaves no temp file") {
    TempDir t;
    auto f = t.path / "a.ics";
    fs::write_atomic(f, "one");
    fs::write_atomic(f, "two");
    CHECK(fs::read_file(f) == "two");
    CHECK_FALSE(stdfs::exists(t.path / "a.ics.tmp"));
}

TEST_CASE("write_atomic applies the mode, also over a stale temp file") {
    TempDir t;
    auto f = t.path / "keys";
    fs::write_atomic(t.path / "keys.tmp", "stale", 0644);
    fs::write_atomic(f, "secret", 0600);
    struct stat st{};
    REQUIRE(::stat(f.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("read_file names the path when it fails") {
    CHECK_THROWS_WITH_AS(fs::read_file("/nonexistent/x"), doctest::Contains("/nonexistent/x"), fs::IoError);
}

TEST_CASE("is_inside rejects escapes") {
    CHECK(fs::is_inside("/data/acc", "/data/acc/cal/a.ics"));
    CHECK(fs::is_inside("/data/acc/", "/data/acc/cal"));
    CHECK_FALSE(fs::is_inside("/data/acc", "/data/acc"));
    CHECK_FALSE(fs::is_inside("/data/acc", "/data/acc/../other"));
    CHECK_FALSE(fs::is_inside("/data/acc", "/data/accomplice/x"));
    CHECK_FALSE(fs::is_inside("/data/acc", "/etc/passwd"));
}

TEST_CASE("make_dirs creates parents") {
    TempDir t;
    fs::make_dirs(t.path / "a/b/c", 0700);
    CHECK(stdfs::is_directory(t.path / "a/b/c"));
    fs::make_dirs(t.path / "a/b/c", 0700);  // idempotent
}

TEST_CASE("XDG directories follow the environment and ignore relative values") {
    ::setenv("HOME", "/home/u", 1);
    ::setenv("XDG_STATE_HOME", "/s", 1);
    ::setenv("XDG_DATA_HOME", "relative", 1);
    ::unsetenv("XDG_CONFIG_HOME");
    auto x = fs::XdgDirs::from_environment();
    CHECK(x.state_home == "/s");
    CHECK(x.data_home == "/home/u/.local/share");
    CHECK(x.config_home == "/home/u/.config");
}

}  // TEST_SUITE
