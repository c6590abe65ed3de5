#include <doctest/doctest.h>

#include "temp_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/fs.hpp"
#include "sync/sync_state.hpp"

namespace stdfs = std::filesystem;
using namespace davsyncd;
using sync::CollectionState;
using sync::href_key;
using sync::ItemState;

namespace {

using testing::TempDir;

void put(const stdfs::path& p, const std::string& content) {
    std::ofstream out(p, std::ios::binary);
    out << content;
}

ItemState item(const std::string& href, const std::string& file, int64_t mtime, uint64_t size) {
    ItemState s;
    s.href = Href(href);
    s.etag = Etag("\"etag-" + file + "\"");
    s.file = file;
    s.hash = "hash-" + file;
    s.mtime_ns = mtime;
    s.size = size;
    return s;
}

void check_equal(const CollectionState& a, const CollectionState& b) {
    CHECK(a.collection_url == b.collection_url);
    CHECK(a.token == b.token);
    CHECK(a.ctag == b.ctag);
    REQUIRE(a.items.size() == b.items.size());
    for (auto ia = a.items.begin(), ib = b.items.begin(); ia != a.items.end(); ++ia, ++ib) {
        CHECK(ia->first == ib->first);
        CHECK(ia->second.href == ib->second.href);
        CHECK(ia->second.etag == ib->second.etag);
        CHECK(ia->second.file == ib->second.file);
        CHECK(ia->second.hash == ib->second.hash);
        CHECK(ia->second.mtime_ns == ib->second.mtime_ns);
        CHECK(ia->second.size == ib->second.size);
        CHECK(ia->second.ctime_ns == ib->second.ctime_ns);
    }
}

}  // namespace

TEST_SUITE("state") {

TEST_CASE("a missing file is an empty state") {
    TempDir t;
    auto s = CollectionState::load(t.path / "nope.json");
    CHECK(s.collection_url.empty());
    CHECK(s.token.empty());
    CHECK(s.ctag.empty());
    CHECK(s.items.empty());
    CHECK_FALSE(stdfs::exists(t.path / "nope.json.corrupt"));
}

TEST_CASE("save and load round trip, mode 0600, parents created") {
    TempDir t;
    CollectionState s;
    s.collection_url = "https://dav.example.com/cal/alice/work/";
    s.token = SyncToken("http://example.com/sync/42");
    s.ctag = CTag("ctag \"quoted\" 7");
    auto a = item("/cal/alice/work/a%40b.ics", "a@b.ics", 1704450900123456789, 512);
    a.ctime_ns = 1704450900987654321;
    auto b = item("/cal/alice/work/caf%C3%A9.ics", "caf\xc3\xa9.ics", -5, 0);
    b.etag = Etag();  // unknown
    s.items[href_key(a.href)] = a;
    s.items[href_key(b.href)] = b;

    auto path = t.path / "state" / "acc" / "collections" / "work.json";
    s.save(path);
    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(::stat(path.parent_path().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK_FALSE(stdfs::exists(path.string() + ".tmp"));

    auto text = fs::read_file(path);
    CHECK(text.find("\"version\":1") != std::string::npos);
    CHECK(text.find('\n') == std::string::npos);  // compact

    auto loaded = CollectionState::load(path);
    check_equal(s, loaded);
    CHECK(loaded.items.count("/cal/alice/work/a@b.ics") == 1);

    // Saving a change over an existing state keeps mode 0600.
    ::chmod(path.c_str(), 0644);
    loaded.token = SyncToken("http://example.com/sync/43");
    loaded.save(path);
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("an unchanged state is not written again, a changed one is") {
    TempDir t;
    auto path = t.path / "s.json";
    auto inode = [&] {
        struct stat st{};
        REQUIRE(::stat(path.c_str(), &st) == 0);
        return st.st_ino;  // every atomic write makes a new inode
    };
    CollectionState s;
    s.collection_url = "https://dav.example.com/cal/";
    s.items["/cal/a.ics"] = item("/cal/a.ics", "a.ics", 1, 10);
    s.save(path);
    auto first = inode();
    s.save(path);
    CHECK(inode() == first);

    auto loaded = CollectionState::load(path);
    loaded.save(path);
    CHECK(inode() == first);
    loaded.token = SyncToken("t2");
    loaded.save(path);
    CHECK(inode() != first);
    CHECK(CollectionState::load(path).token == SyncToken("t2"));
}

TEST_CASE("find_by_file") {
    CollectionState s;
    s.items["/x/1.ics"] = item("/x/1.ics", "1.ics", 0, 0);
    s.items["/x/2.ics"] = item("/x/2.ics", "two.ics", 0, 0);
    REQUIRE(s.find_by_file("two.ics") != nullptr);
    CHECK(s.find_by_file("two.ics")->href == Href("/x/2.ics"));
    CHECK(s.find_by_file("2.ics") == nullptr);
}

TEST_CASE("a corrupt file is moved aside and an empty state returned") {
    TempDir t;
    const char* cases[] = {
        "{not json",
        "",
        "[1,2,3]",
        R"({"version":2,"collection_url":"","token":"","ctag":"","items":{}})",
        R"({"version":1,"collection_url":5,"token":"","ctag":"","items":{}})",
        R"({"version":1,"collection_url":"u","token":"","ctag":"","items":[]})",
        R"({"version":1,"collection_url":"u","token":"","ctag":"","items":{"/a":{"href":"/a","etag":"","file":"a.ics","hash":"h","mtime_ns":"1","size":1}}})",
        R"({"version":1,"collection_url":"u","token":"","ctag":"","items":{"/a":{"href":"/a","etag":"","file":"a.ics","hash":"h","mtime_ns":1,"size":-1}}})",
        R"({"version":1,"collection_url":"u","token":"","ctag":"","items":{"/a":{"href":"/a","file":"a.ics","hash":"h","mtime_ns":1,"size":1}}})",
    };
    for (const char* text : cases) {
        CAPTURE(text);
        auto path = t.path / "c.json";
        stdfs::remove(t.path / "c.json.corrupt");
        put(path, text);
        auto s = CollectionState::load(path);
        CHECK(s.items.empty());
        CHECK(s.collection_url.empty());
        CHECK(s.token.empty());
        CHECK_FALSE(stdfs::exists(path));
        REQUIRE(stdfs::exists(t.path / "c.json.corrupt"));
        CHECK(fs::read_file(t.path / "c.json.corrupt") == text);
    }
}

TEST_CASE("the corruption warning names the file") {
    TempDir t;
    auto path = t.path / "broken.json";
    put(path, "{\"version\":1,");
    // Capture stderr, where the log goes.
    auto captured = t.path / "stderr.txt";
    int saved = ::dup(2);
    int fd = ::open(captured.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    ::close(fd);
    auto s = CollectionState::load(path);
    ::dup2(saved, 2);
    ::close(saved);
    CHECK(s.items.empty());
    auto text = fs::read_file(captured);
    CHECK(text.find(path.string()) != std::string::npos);
    CHECK(text.find("corrupt") != std::string::npos);
}

TEST_CASE("unknown members are ignored, and odd bytes survive a round trip") {
    TempDir t;
    auto path = t.path / "extra.json";
    put(path, R"({"version":1,"future":{"a":[1,{"b":2}]},"collection_url":"u","token":"","ctag":"",)"
              R"("items":{"/a.ics":{"href":"/a.ics","etag":"e","file":"a.ics","hash":"h","mtime_ns":1,"size":2,)"
              R"("extra":[true,null,1.5]}}})");
    auto s = CollectionState::load(path);
    CHECK(stdfs::exists(path));
    REQUIRE(s.items.count("/a.ics") == 1);
    CHECK(s.items.at("/a.ics").size == 2);

    // A percent-decoded key that is not UTF-8 ("%FF") and control characters
    // in strings: the file stays valid JSON and the key comes back exactly.
    CollectionState odd;
    odd.collection_url = "https://h/c/";
    odd.token = SyncToken("tab\there \"quote\" back\\slash \x01");
    auto it = item("/c/x%FFy.ics", "x.ics", 1, 1);
    odd.items[href_key(it.href)] = it;
    REQUIRE(odd.items.count("/c/x\xFFy.ics") == 1);
    odd.save(path);
    auto back = CollectionState::load(path);
    CHECK(stdfs::exists(path));  // not treated as corrupt
    CHECK(back.token == odd.token);
    CHECK(back.items.count("/c/x\xFFy.ics") == 1);
}

TEST_CASE("a well-formed file by hand loads") {
    TempDir t;
    auto path = t.path / "ok.json";
    put(path, R"({"version":1,"collection_url":"https://h/c/","token":"t1","ctag":"","items":)"
              R"({"/c/a%20b.ics":{"href":"/c/a%20b.ics","etag":"\"1\"","file":"ab.ics","hash":"h","mtime_ns":-3,"size":9}}})");
    auto s = CollectionState::load(path);
    CHECK(s.collection_url == "https://h/c/");
    CHECK(s.token == SyncToken("t1"));
    REQUIRE(s.items.size() == 1);
    // The key is the decoded href, whatever spelling the file used.
    REQUIRE(s.items.count("/c/a b.ics") == 1);
    CHECK(s.items.at("/c/a b.ics").mtime_ns == -3);
    CHECK(s.items.at("/c/a b.ics").ctime_ns == 0);  // states from before ctime was kept still load
    CHECK(s.items.at("/c/a b.ics").size == 9);
    CHECK(stdfs::exists(path));
}

TEST_CASE("href_key makes spellings of one href equal") {
    CHECK(href_key(Href("/a/b%40c.ics")) == href_key(Href("/a/b@c.ics")));
    CHECK(href_key(Href("/a/b%40c.ics")) == "/a/b@c.ics");
    CHECK(href_key(Href("https://dav.example.com/a/b%40c.ics")) == "/a/b@c.ics");
    CHECK(href_key(Href("http://dav.example.com:8080/a/b@c.ics")) == "/a/b@c.ics");
    CHECK(href_key(Href("https://dav.example.com")) == "/");
    CHECK(href_key(Href("/a/b%2Fc.ics")) == "/a/b/c.ics");
    CHECK(href_key(Href("/odd/x://y.ics")) == "/odd/x://y.ics");
    CHECK(href_key(Href("/a/b.ics")) != href_key(Href("/a/c.ics")));
}

TEST_CASE("50 000 items round-trip through save and load") {
    TempDir t;
    CollectionState s;
    s.collection_url = "https://dav.example.com/cal/";
    s.token = SyncToken("token");
    for (int i = 0; i < 50000; ++i) {
        std::string name = "0123456789abcdef-" + std::to_string(i) + ".ics";
        auto it = item("/cal/" + name, name, 1704450900123456789LL + i, 1000u + static_cast<uint64_t>(i));
        it.hash = std::string(64, 'f');
        s.items[href_key(it.href)] = it;
    }
    auto path = t.path / "big.json";
    s.save(path);
    auto loaded = CollectionState::load(path);
    REQUIRE(loaded.items.size() == 50000);
    // One assertion for the lot (50 000 x 7 CHECKs would dominate the run time).
    size_t mismatches = 0;
    for (auto a = s.items.begin(), b = loaded.items.begin(); a != s.items.end(); ++a, ++b) {
        bool same = a->first == b->first && a->second.href == b->second.href && a->second.etag == b->second.etag &&
                    a->second.file == b->second.file && a->second.hash == b->second.hash &&
                    a->second.mtime_ns == b->second.mtime_ns && a->second.size == b->second.size;
        if (!same) ++mismatches;
    }
    CHECK(mismatches == 0);
}

}  // TEST_SUITE
