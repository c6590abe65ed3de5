#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

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

TEST_CASE("Dir writes a new file whole, under its name only, with the mode and the stat it returns") {
    TempDir t;
    fs::Dir dir(t.path);
    auto st = dir.write_atomic("new.vcf", "BEGIN:VCARD\n", 0600, fs::Durability::deferred);
    dir.sync_filesystem();
    std::vector<std::string> names;
    for (auto& e : stdfs::directory_iterator(t.path)) names.push_back(e.path().filename());
    CHECK(names == std::vector<std::string>{"new.vcf"});
    struct stat now{};
    REQUIRE(::stat((t.path / "new.vcf").c_str(), &now) == 0);
    CHECK((now.st_mode & 0777) == 0600);
    CHECK(now.st_size == st.st_size);
    CHECK(now.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
    CHECK(now.st_ctim.tv_nsec == st.st_ctim.tv_nsec);  // taken after the link, which moves it
    CHECK(dir.read("new.vcf") == "BEGIN:VCARD\n");
    auto replaced = dir.write_atomic("new.vcf", "BEGIN:VCARD\r\n", 0600);
    REQUIRE(::stat((t.path / "new.vcf").c_str(), &now) == 0);
    CHECK(now.st_ino == replaced.st_ino);
    CHECK(now.st_ctim.tv_nsec == replaced.st_ctim.tv_nsec);  // and after the rename
}

TEST_CASE("Dir replaces a file, a stale temp file and a symlink without writing through it") {
    TempDir t;
    fs::Dir dir(t.path);
    dir.write_atomic("a.ics", "one", 0600);
    fs::write_atomic(t.path / "a.ics.tmp", "stale", 0644);
    dir.write_atomic("a.ics", "two", 0600);
    CHECK(dir.read("a.ics") == "two");
    CHECK_FALSE(stdfs::exists(t.path / "a.ics.tmp"));

    fs::write_atomic(t.path / "target", "keep me", 0600);
    stdfs::create_symlink(t.path / "target", t.path / "link.ics");
    dir.write_atomic("link.ics", "new", 0600);
    CHECK_FALSE(stdfs::is_symlink(t.path / "link.ics"));
    CHECK(fs::read_file(t.path / "target") == "keep me");
}

TEST_CASE("Dir reads regular files only and refuses names that leave the folder") {
    TempDir t;
    fs::Dir dir(t.path);
    fs::write_atomic(t.path / "secret", "x", 0600);
    stdfs::create_symlink(t.path / "secret", t.path / "s.ics");
    REQUIRE(::mkfifo((t.path / "f.ics").c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(dir.read("s.ics"), doctest::Contains("not a regular file"), fs::IoError);
    CHECK_THROWS_WITH_AS(dir.read("f.ics"), doctest::Contains("f.ics"), fs::IoError);  // and does not hang
    CHECK_FALSE(dir.lstat("missing.ics").has_value());
    for (const char* bad : {"../x.ics", "a/b.ics", "..", ".", ""}) {
        CHECK_THROWS_AS(dir.write_atomic(bad, "x", 0600), fs::IoError);
        CHECK_THROWS_AS(dir.read(bad), fs::IoError);
    }
    CHECK_FALSE(stdfs::exists(t.path.parent_path() / "x.ics"));
    dir.remove("missing.ics");  // not an error
    CHECK_THROWS_WITH_AS(fs::Dir(t.path / "nope"), doctest::Contains("nope"), fs::IoError);
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
