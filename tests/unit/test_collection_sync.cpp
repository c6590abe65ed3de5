// The sync engine against canned server behaviour (FakeDavCollection):
// the paths real servers will not take on demand.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>

#include "core/fs.hpp"
#include "dav/remote_collection.hpp"
#include "fake_dav_server.hpp"
#include "sync/collection_sync.hpp"

namespace stdfs = std::filesystem;
using namespace davsyncd;

namespace {

std::string event(const std::string& uid, const std::string& summary, const std::string& stamp = "20240101T000000Z") {
    return "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:" + uid + "\r\nDTSTAMP:" + stamp +
           "\r\nLAST-MODIFIED:" + stamp + "\r\nDTSTART:20300101T100000Z\r\nSUMMARY:" + summary +
           "\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
}

// One collection synced into a temporary folder.
struct Fixture {
    testing::FakeDavCollection server;
    stdfs::path root;
    dav::HttpClient http{dav::ClientOptions{}};
    config::ConflictPolicy policy = config::ConflictPolicy::server_wins;
    bool force_delete = false;

    Fixture() {
        char tmpl[] = "/tmp/davsyncd-sync-XXXXXX";
        root = ::mkdtemp(tmpl);
    }
    ~Fixture() { stdfs::remove_all(root); }

    stdfs::path folder() const { return root / "data" / "cal"; }
    stdfs::path conflicts() const { return root / "state" / "conflicts"; }

    sync::SyncReport sync() {
        dav::CollectionInfo info;
        info.url = server.url();
        info.href = Href(server.path);
        info.id = "cal";
        info.display_name = "Calendar";
        info.color = "#112233";
        info.supports_sync_collection = server.sync_collection;
        dav::RemoteCollection remote(http, info);
        sync::VdirStore local(folder(), sync::ItemFormat::icalendar);
        sync::SyncOptions o;
        o.policy = policy;
        o.multiget_batch = 4;
        o.force_delete = force_delete;
        o.state_file = root / "state" / "cal.json";
        o.conflicts_dir = conflicts();
        o.label = "test/cal";
        return sync::CollectionSync(remote, local, o).run();
    }

    std::string local(const std::string& name) const { return fs::read_file(folder() / name); }
    void write_local(const std::string& name, const std::string& data) { fs::write_atomic(folder() / name, data); }
    size_t local_count() const {
        size_t n = 0;
        for (auto& e : stdfs::directory_iterator(folder())) n += e.path().extension() == ".ics";
        return n;
    }
    size_t conflict_count() const {
        if (!stdfs::exists(conflicts())) return 0;
        return static_cast<size_t>(std::distance(stdfs::directory_iterator(conflicts()), stdfs::directory_iterator()));
    }
};

}  // namespace

TEST_SUITE("sync") {

TEST_CASE("first sync lists everything in one query after reading the token; a no-change sync is one request") {
    Fixture f;
    for (int i = 0; i < 6; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("uid-" + std::to_string(i), "S"));
    auto first = f.sync();
    CHECK(first.downloaded == 6);
    CHECK(first.requests == 2);
    CHECK(f.server.count("REPORT", "calendar-query") == 1);
    CHECK(f.local_count() == 6);
    CHECK(f.local("uid-3.ics") == event("uid-3", "S"));
    CHECK(fs::read_file(f.folder() / "displayname") == "Calendar");
    CHECK(fs::read_file(f.folder() / "color") == "#112233");

    auto second = f.sync();
    CHECK(second.requests == 1);
    CHECK(second.downloaded == 0);
    CHECK(second.uploaded == 0);
}

TEST_CASE("server without sync-collection: ctag check, then etags, then multiget of what changed") {
    Fixture f;
    f.server.sync_collection = false;
    for (int i = 0; i < 5; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
    auto first = f.sync();
    CHECK(first.downloaded == 5);
    CHECK(f.server.count("REPORT", "sync-collection") == 0);
    CHECK(f.server.count("REPORT", "calendar-multiget") == 2);  // batches of 4

    auto unchanged = f.sync();
    CHECK(unchanged.requests == 1);  // the ctag says: nothing to do

    f.server.put("e2.ics", event("u2", "changed"));
    f.server.remove("e4.ics");
    auto changed = f.sync();
    CHECK(changed.downloaded == 1);
    CHECK(changed.deleted_local == 1);
    CHECK(changed.requests == 3);  // ctag, etags, one multiget
    CHECK(f.local("u2.ics") == event("u2", "changed"));
    CHECK_FALSE(stdfs::exists(f.folder() / "u4.ics"));
}

TEST_CASE("a 507-truncated sync-collection is followed page by page") {
    Fixture f;
    f.server.put("seed.ics", event("seed", "S"));
    f.sync();
    for (int i = 0; i < 25; ++i) f.server.put("n" + std::to_string(i) + ".ics", event("n" + std::to_string(i), "S"));
    f.server.page_size = 10;
    auto r = f.sync();
    CHECK(r.downloaded == 25);
    CHECK(f.server.count("REPORT", "sync-collection") == 3);
    CHECK(f.local_count() == 26);
    auto again = f.sync();
    CHECK(again.requests == 1);
    CHECK(again.downloaded == 0);
}

TEST_CASE("a rejected sync token falls back to a full listing without losing a local edit") {
    Fixture f;
    f.server.put("a.ics", event("a", "one"));
    f.server.put("b.ics", event("b", "one"));
    f.sync();
    f.server.put("b.ics", event("b", "server edit"));
    f.write_local("a.ics", event("a", "local edit"));
    f.server.reject_tokens = true;
    auto r = f.sync();
    CHECK(r.uploaded == 1);
    CHECK(r.downloaded == 1);
    CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
    CHECK(f.local("b.ics") == event("b", "server edit"));
}

TEST_CASE("a same-size rewrite that puts the old mtime back is still a local edit") {
    // cp -p, rsync -t, touch -r: only the ctime tells. Missed, the edit
    // would be overwritten by the next server change without a conflict copy.
    Fixture f;
    f.server.put("a.ics", event("a", "one"));
    f.sync();
    auto path = f.folder() / "a.ics";
    struct stat before{};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    f.write_local("a.ics", event("a", "two"));  // same length as "one"
    timespec times[2] = {before.st_atim, before.st_mtim};
    REQUIRE(::utimensat(AT_FDCWD, path.c_str(), times, 0) == 0);
    struct stat after{};
    REQUIRE(::stat(path.c_str(), &after) == 0);
    REQUIRE(after.st_size == before.st_size);
    REQUIRE(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);

    auto r = f.sync();
    CHECK(r.uploaded == 1);
    CHECK(f.server.items().at("a.ics") == event("a", "two"));
    auto again = f.sync();  // the new ctime is recorded: nothing to do, nothing hashed as changed
    CHECK(again.uploaded == 0);
    CHECK(again.requests == 1);
}

TEST_CASE("edited on both sides: server wins by default and the local version is kept") {
    Fixture f;
    f.server.put("a.ics", event("a", "base"));
    f.sync();
    f.server.put("a.ics", event("a", "server"));
    f.write_local("a.ics", event("a", "local"));
    auto r = f.sync();
    CHECK(r.conflicts == 1);
    CHECK(f.local("a.ics") == event("a", "server"));
    CHECK(f.server.items().at("a.ics") == event("a", "server"));
    REQUIRE(f.conflict_count() == 1);
    auto kept = stdfs::directory_iterator(f.conflicts())->path();
    CHECK(kept.filename().string().find("-local-a.ics") != std::string::npos);
    CHECK(fs::read_file(kept) == event("a", "local"));
}

TEST_CASE("edited on both sides with local-wins: the local version goes up, the server's is kept") {
    Fixture f;
    f.policy = config::ConflictPolicy::local_wins;
    f.server.put("a.ics", event("a", "base"));
    f.sync();
    f.server.put("a.ics", event("a", "server"));
    f.write_local("a.ics", event("a", "local"));
    auto r = f.sync();
    CHECK(r.conflicts == 1);
    CHECK(f.server.items().at("a.ics") == event("a", "local"));
    CHECK(f.local("a.ics") == event("a", "local"));
    REQUIRE(f.conflict_count() == 1);
    CHECK(fs::read_file(stdfs::directory_iterator(f.conflicts())->path()) == event("a", "server"));
    CHECK(f.sync().requests == 1);  // settled
}

TEST_CASE("newest policy compares LAST-MODIFIED") {
    Fixture f;
    f.policy = config::ConflictPolicy::newest;
    f.server.put("a.ics", event("a", "base", "20240101T000000Z"));
    f.sync();
    f.server.put("a.ics", event("a", "server", "20240301T000000Z"));
    f.write_local("a.ics", event("a", "local", "20240201T000000Z"));
    f.sync();
    CHECK(f.local("a.ics") == event("a", "server", "20240301T000000Z"));
    f.write_local("a.ics", event("a", "local newer", "20250101T000000Z"));
    f.server.put("a.ics", event("a", "server older", "20240401T000000Z"));
    f.sync();
    CHECK(f.server.items().at("a.ics") == event("a", "local newer", "20250101T000000Z"));
    CHECK(f.conflict_count() == 2);
}

TEST_CASE("deleted here, edited there: the edit wins") {
    Fixture f;
    f.server.put("a.ics", event("a", "base"));
    f.server.put("b.ics", event("b", "base"));
    f.sync();
    stdfs::remove(f.folder() / "a.ics");
    f.server.put("a.ics", event("a", "server edit"));
    f.sync();
    CHECK(f.local("a.ics") == event("a", "server edit"));
    CHECK(f.server.items().contains("a.ics"));
}

TEST_CASE("deleted there, edited here: the edit wins") {
    Fixture f;
    f.server.put("a.ics", event("a", "base"));
    f.server.put("b.ics", event("b", "base"));
    f.sync();
    f.server.remove("a.ics");
    f.write_local("a.ics", event("a", "local edit"));
    f.sync();
    CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
    CHECK(f.local("a.ics") == event("a", "local edit"));
}

TEST_CASE("local creation gets If-None-Match and a UID when it has none") {
    Fixture f;
    f.sync();
    f.write_local("new.ics", "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n");
    auto r = f.sync();
    CHECK(r.uploaded == 1);
    auto puts = f.server.requests();
    bool saw = false;
    for (const auto& q : puts)
        if (q.method == "PUT") {
            saw = true;
            CHECK(q.header("If-None-Match") == "*");
            CHECK(q.body.find("UID:") != std::string::npos);
        }
    CHECK(saw);
    CHECK(f.local("new.ics").find("UID:") != std::string::npos);
    CHECK(f.server.items().at("new.ics") == f.local("new.ics"));
}

TEST_CASE("a wiped local folder is not mirrored to the server without force") {
    Fixture f;
    for (int i = 0; i < 3; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
    f.sync();
    for (int i = 0; i < 3; ++i) stdfs::remove(f.folder() / ("u" + std::to_string(i) + ".ics"));
    auto r = f.sync();
    CHECK(r.refused_mass_deletion);
    CHECK(f.server.items().size() == 3);
    CHECK(f.server.count("DELETE") == 0);
    f.force_delete = true;
    auto forced = f.sync();
    CHECK_FALSE(forced.refused_mass_deletion);
    CHECK(forced.deleted_remote == 3);
    CHECK(f.server.items().empty());
}

TEST_CASE("a server that suddenly lists nothing does not empty the local folder") {
    Fixture f;
    for (int i = 0; i < 3; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
    f.sync();
    for (int i = 0; i < 3; ++i) f.server.remove("e" + std::to_string(i) + ".ics");
    auto r = f.sync();
    CHECK(r.refused_mass_deletion);
    CHECK(f.local_count() == 3);
    auto again = f.sync();  // the token was not advanced: still refused
    CHECK(again.refused_mass_deletion);
    CHECK(f.local_count() == 3);
}

TEST_CASE("hostile hrefs and non-iCalendar bodies never reach the disk") {
    Fixture f;
    f.server.set_raw_member("/other/evil.ics", event("evil", "x"));
    f.server.set_raw_member("/cal/../../etc/passwd.ics", event("evil2", "x"));
    f.server.set_raw_member("http://attacker.example/cal/x.ics", event("evil3", "x"));
    f.server.set_raw_member("/cal/notcal.ics", "<html>not a calendar</html>");
    f.server.put("good.ics", event("good", "x"));
    auto r = f.sync();
    CHECK(r.downloaded == 1);
    CHECK(r.skipped == 1);  // the HTML body; the other hrefs are dropped before that
    CHECK(f.local_count() == 1);
    CHECK_FALSE(stdfs::exists(f.root / "etc"));
}

TEST_CASE("a download interrupted after its files were written is adopted, not uploaded again") {
    Fixture f;
    f.server.put("a.ics", event("a", "S"));
    f.server.put("b.ics", event("b", "S"));
    f.sync();
    // Simulate a crash after writing the file of a new item but before saving the state.
    f.server.put("c.ics", event("c", "S"));
    f.write_local("c.ics", event("c", "S"));
    auto etag = std::string("\"e3\"");
    fs::write_atomic(f.root / "state" / "cal.json.journal",
                     R"({"key":"/cal/c.ics","href":"/cal/c.ics","etag":"\")" + std::string("e3") + R"(\"","file":"c.ics","hash":")" +
                         sync::content_hash(event("c", "S")) + "\"}\n");
    auto r = f.sync();
    CHECK(f.server.count("PUT") == 0);
    CHECK(r.uploaded == 0);
    CHECK(f.local_count() == 3);
    CHECK(f.server.items().size() == 3);
    CHECK_FALSE(stdfs::exists(f.root / "state" / "cal.json.journal"));
    (void)etag;
}

}  // TEST_SUITE
