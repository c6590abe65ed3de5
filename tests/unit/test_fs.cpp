#include <doctest/doctest.h>

#include "temp_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/fs.hpp"

namespace stdfs = std::filesystem;
using namespace davsyncd;

namespace {
using testing::TempDir;

// Runs `fn` on a thread of its own and waits at most `limit` for it, so that
// a write blocked for ever fails the test instead of hanging the suite. `fn`
// must own what it touches (shared_ptr captures): a thread that misses the
// deadline is abandoned, not joined.
template <typename Fn>
bool finishes_within(std::chrono::seconds limit, Fn fn) {
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    std::thread([done, fn = std::move(fn)]() mutable {
        try {
            fn();
        } catch (...) {
        }
        done->set_value();
    }).detach();
    return finished.wait_for(limit) == std::future_status::ready;
}

// A writer blocked in open() on a FIFO wakes up once a reader opens it.
void release_fifo_writer(const stdfs::path& fifo) {
    int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) ::close(fd);
}
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

// Another program (or a hostile one sharing the folder) can leave anything
// at NAME.tmp. Opening a FIFO for writing blocks until a reader comes: the
// sync job and every sync after it would hang.
TEST_CASE("the rename fallback writes past a FIFO planted at NAME.tmp, new file or replacement") {
    TempDir t;
    auto dir = std::make_shared<fs::Dir>(t.path, fs::Dir::WriteMethod::temp_then_rename);
    const auto fifo = t.path / "a.ics.tmp";
    for (const char* content : {"new", "replaced"}) {
        CAPTURE(content);
        REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
        auto written = std::make_shared<bool>(false);
        bool finished = finishes_within(std::chrono::seconds(30), [dir, written, content = std::string(content)] {
            dir->write_atomic("a.ics", content, 0600);
            *written = true;
        });
        if (!finished) release_fifo_writer(fifo);
        REQUIRE(finished);
        CHECK(*written);
        CHECK(dir->read("a.ics") == content);
        struct stat st {};
        REQUIRE(::lstat((t.path / "a.ics").c_str(), &st) == 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK((st.st_mode & 0777) == 0600);
        CHECK_FALSE(stdfs::exists(stdfs::symlink_status(fifo)));
    }
}

TEST_CASE("the rename fallback replaces a stale temp file or symlink at NAME.tmp without writing through it") {
    TempDir t;
    fs::Dir dir(t.path, fs::Dir::WriteMethod::temp_then_rename);
    fs::write_atomic(t.path / "a.ics.tmp", "stale", 0644);
    dir.write_atomic("a.ics", "one", 0600);
    CHECK(dir.read("a.ics") == "one");
    fs::write_atomic(t.path / "target", "keep me", 0600);
    stdfs::create_symlink(t.path / "target", t.path / "a.ics.tmp");
    dir.write_atomic("a.ics", "two", 0600);
    CHECK(dir.read("a.ics") == "two");
    CHECK(fs::read_file(t.path / "target") == "keep me");
    CHECK_FALSE(stdfs::exists(stdfs::symlink_status(t.path / "a.ics.tmp")));
    // Something that cannot simply be removed is a clear error, not a hang.
    stdfs::create_directory(t.path / "b.ics.tmp");
    CHECK_THROWS_WITH_AS(dir.write_atomic("b.ics", "x", 0600), doctest::Contains("b.ics.tmp"), fs::IoError);
}

TEST_CASE("the O_TMPFILE path replaces past a FIFO at NAME.tmp too") {
    TempDir t;
    auto dir = std::make_shared<fs::Dir>(t.path);
    dir->write_atomic("a.ics", "one", 0600);
    REQUIRE(::mkfifo((t.path / "a.ics.tmp").c_str(), 0600) == 0);
    bool finished = finishes_within(std::chrono::seconds(30), [dir] { dir->write_atomic("a.ics", "two", 0600); });
    if (!finished) release_fifo_writer(t.path / "a.ics.tmp");
    REQUIRE(finished);
    CHECK(dir->read("a.ics") == "two");
}

TEST_CASE("create_atomic never replaces anything, on either write path") {
    for (auto method : {fs::Dir::WriteMethod::automatic, fs::Dir::WriteMethod::temp_then_rename}) {
        TempDir t;
        fs::Dir dir(t.path, method);
        auto st = dir.create_atomic("a.ics", "first", 0600);
        REQUIRE(st.has_value());
        CHECK(dir.read("a.ics") == "first");
        CHECK(st->st_size == 5);
        CHECK_FALSE(dir.create_atomic("a.ics", "second", 0600).has_value());
        CHECK(dir.read("a.ics") == "first");
        stdfs::create_symlink("/nonexistent", t.path / "dangling.ics");
        CHECK_FALSE(dir.create_atomic("dangling.ics", "x", 0600).has_value());
        CHECK(stdfs::is_symlink(t.path / "dangling.ics"));
        if (method == fs::Dir::WriteMethod::temp_then_rename) REQUIRE(::mkfifo((t.path / "b.ics.tmp").c_str(), 0600) == 0);
        CHECK(dir.create_atomic("b.ics", "b", 0600).has_value());
        // Nothing of ours left behind, and the FIFO in the way is gone.
        std::vector<std::string> names;
        for (auto& e : stdfs::directory_iterator(t.path)) names.push_back(e.path().filename());
        std::sort(names.begin(), names.end());
        CHECK(names == std::vector<std::string>{"a.ics", "b.ics", "dangling.ics"});
    }
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
