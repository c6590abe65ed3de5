// The sync engine against canned server behaviour (FakeDavCollection):
// the paths real servers will not take on demand.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>

#include "core/fs.hpp"
#include "core/log.hpp"
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
    bool read_only = false;
    std::string color = "#112233";
    config::DeletionGuard guard;

    explicit Fixture(dav::ClientOptions options = {}) : http(std::move(options)) {
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
        info.color = color;
        info.supports_sync_collection = server.sync_collection;
        info.read_only = read_only;
        dav::RemoteCollection remote(http, info);
        sync::VdirStore local(folder(), sync::ItemFormat::icalendar);
        sync::SyncOptions o;
        o.policy = policy;
        o.multiget_batch = 4;
        o.force_delete = force_delete;
        o.deletion_guard = guard;
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
    bool local_exists(const std::string& name) const { return stdfs::exists(folder() / name); }
    // Files in the conflicts folder whose name contains `part` (".reason" sidecars included).
    std::vector<stdfs::path> conflict_files(const std::string& part = "") const {
        std::vector<stdfs::path> out;
        if (!stdfs::exists(conflicts())) return out;
        for (auto& e : stdfs::directory_iterator(conflicts()))
            if (e.path().filename().string().find(part) != std::string::npos) out.push_back(e.path());
        std::sort(out.begin(), out.end());
        return out;
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

// --- one item in trouble never stops the others (issue: never stuck on one item) ---

namespace {

// SabreDAV's answer to a PUT it will not take (verbatim shape, Sabre 4.7.1).
testing::CannedResponse sabre_refusal(int status, const std::string& message) {
    return {status, {{"Content-Type", "application/xml; charset=utf-8"}},
            R"(<?xml version="1.0" encoding="utf-8"?>
<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">
  <s:sabredav-version>4.7.1</s:sabredav-version>
  <s:exception>Sabre\DAV\Exception\Forbidden</s:exception>
  <s:message>)" + message + R"(</s:message>
</d:error>
)"};
}

// Answers writes to one member with `answer`; everything else as usual.
void refuse_writes_to(testing::FakeDavCollection& server, const std::string& name, testing::CannedResponse answer) {
    server.intercept = [target = server.path + name, answer](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if ((r.method == "PUT" || r.method == "DELETE") && r.target == target) return answer;
        return std::nullopt;
    };
}

size_t writes_to(const testing::FakeDavCollection& server, const std::string& name) {
    size_t n = 0;
    for (const auto& r : server.requests())
        if ((r.method == "PUT" || r.method == "DELETE") && r.target == server.path + name) ++n;
    return n;
}

// Three synced items a, b, c; then a and b edited here, n created here and
// x created on the server.
void edits_on_both_sides(Fixture& f) {
    for (const char* n : {"a", "b", "c"}) f.server.put(std::string(n) + ".ics", event(n, "S"));
    f.sync();
    f.write_local("a.ics", event("a", "local edit"));
    f.write_local("b.ics", event("b", "local edit"));
    f.write_local("n.ics", event("n", "new here"));
    f.server.put("x.ics", event("x", "new there"));
}

}  // namespace

TEST_CASE("a refused edit stops only that item: kept in the conflicts folder with the reason, the server's version restored") {
    for (int status : {400, 403, 409, 413, 415, 422}) {
        CAPTURE(status);
        Fixture f;
        edits_on_both_sides(f);
        refuse_writes_to(f.server, "a.ics", sabre_refusal(status, "Calendar objects must have a VJOURNAL component"));
        auto r = f.sync();
        // The others went up and the pull ran in the same sync.
        CHECK(f.server.items().at("b.ics") == event("b", "local edit"));
        CHECK(f.server.items().count("n.ics") == 1);
        CHECK(f.local("x.ics") == event("x", "new there"));
        CHECK(r.refused == 1);
        CHECK(r.uploaded == 2);
        // The refused edit is kept, with the server's words beside it; the server's version is back.
        CHECK(f.local("a.ics") == event("a", "S"));
        auto kept = f.conflict_files("-local-a.ics");
        REQUIRE(kept.size() == 2);
        CHECK(fs::read_file(kept[0]) == event("a", "local edit"));
        auto reason = fs::read_file(kept[1]);
        CHECK(reason.find("HTTP " + std::to_string(status)) != std::string::npos);
        CHECK(reason.find("Calendar objects must have a VJOURNAL component") != std::string::npos);
        // Nothing is left over: the next sync is one request.
        auto again = f.sync();
        CHECK(again.requests == 1);
        CHECK(again.refused_uploads == 0);
    }
}

TEST_CASE("a refused creation with no server version stays in place and is not sent again until it changes") {
    for (int status : {400, 409, 413, 415, 422}) {
        CAPTURE(status);
        Fixture f;
        edits_on_both_sides(f);
        refuse_writes_to(f.server, "n.ics", sabre_refusal(status, "Calendar object contains more than one UID"));
        auto r = f.sync();
        CHECK(r.refused == 1);
        CHECK(r.refused_uploads == 1);
        CHECK(f.local("n.ics") == event("n", "new here"));
        CHECK(f.server.items().count("n.ics") == 0);
        CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
        CHECK(f.local("x.ics") == event("x", "new there"));
        CHECK(writes_to(f.server, "n.ics") == 1);
        auto again = f.sync();
        CHECK(writes_to(f.server, "n.ics") == 1);  // that version is not sent again
        CHECK(again.refused_uploads == 1);
        CHECK(again.requests == 1);
        // The user fixes it: the new version goes up.
        f.server.intercept = nullptr;
        f.write_local("n.ics", event("n", "fixed"));
        auto fixed = f.sync();
        CHECK(fixed.uploaded == 1);
        CHECK(fixed.refused_uploads == 0);
        CHECK(f.server.items().at("n.ics") == event("n", "fixed"));
    }
}

TEST_CASE("a creation forbidden by the server (403) moves to the conflicts folder") {
    Fixture f;
    edits_on_both_sides(f);
    refuse_writes_to(f.server, "n.ics", sabre_refusal(403, "Permission denied"));
    auto r = f.sync();
    CHECK(r.refused == 1);
    CHECK_FALSE(f.local_exists("n.ics"));
    auto kept = f.conflict_files("-local-n.ics");
    REQUIRE(kept.size() == 2);
    CHECK(fs::read_file(kept[0]) == event("n", "new here"));
    CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
    CHECK(f.sync().requests == 1);
}

TEST_CASE("a refused deletion brings the server's version back") {
    Fixture f;
    edits_on_both_sides(f);
    stdfs::remove(f.folder() / "c.ics");
    refuse_writes_to(f.server, "c.ics", sabre_refusal(403, "Permission denied"));
    auto r = f.sync();
    CHECK(r.refused == 1);
    CHECK(f.local("c.ics") == event("c", "S"));
    CHECK(f.server.items().count("c.ics") == 1);
    CHECK(f.server.items().at("b.ics") == event("b", "local edit"));
    CHECK(f.sync().requests == 1);
}

TEST_CASE("a temporary server failure on one item is retried later with its own backoff; the rest goes on") {
    for (int status : {500, 503, 507}) {
        CAPTURE(status);
        Fixture f;
        edits_on_both_sides(f);
        refuse_writes_to(f.server, "a.ics", {status, {{"Retry-After", "120"}}, ""});
        auto r = f.sync();
        CHECK(r.refused == 0);
        CHECK(r.pending_uploads == 1);
        CHECK(f.server.items().at("b.ics") == event("b", "local edit"));
        CHECK(f.local("x.ics") == event("x", "new there"));
        CHECK(f.local("a.ics") == event("a", "local edit"));  // nothing is thrown away
        CHECK(f.conflict_count() == 0);
        CHECK(writes_to(f.server, "a.ics") == 1);
        // Within the item's backoff: not sent again.
        f.server.intercept = nullptr;
        auto soon = f.sync();
        CHECK(writes_to(f.server, "a.ics") == 1);
        CHECK(soon.pending_uploads == 1);
        // Once the backoff has run out (the record says when), it goes up.
        auto uploads = f.root / "state" / "cal.json.uploads";
        auto text = fs::read_file(uploads);
        auto at = text.find("\"retry_at\":");
        REQUIRE(at != std::string::npos);
        auto end = text.find_first_of(",}", at);
        fs::write_atomic(uploads, text.substr(0, at) + "\"retry_at\":0" + text.substr(end));
        auto later = f.sync();
        CHECK(writes_to(f.server, "a.ics") == 2);
        CHECK(later.uploaded == 1);
        CHECK(later.pending_uploads == 0);
        CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
        CHECK_FALSE(stdfs::exists(uploads));
    }
}

TEST_CASE("read-only collection: local edits, creations and deletions are kept aside and the server's versions restored") {
    Fixture f;
    for (const char* n : {"a", "b", "c"}) f.server.put(std::string(n) + ".ics", event(n, "S"));
    f.read_only = true;
    f.sync();
    f.write_local("a.ics", event("a", "local edit"));
    f.write_local("n.ics", event("n", "new here"));
    stdfs::remove(f.folder() / "b.ics");
    f.server.put("c.ics", event("c", "server edit"));
    auto r = f.sync();
    CHECK(f.server.count("PUT") == 0);
    CHECK(f.server.count("DELETE") == 0);
    CHECK(r.refused == 3);
    CHECK(f.local("a.ics") == event("a", "S"));
    CHECK(f.local("b.ics") == event("b", "S"));
    CHECK_FALSE(f.local_exists("n.ics"));
    CHECK(f.local("c.ics") == event("c", "server edit"));  // the pull ran in the same sync
    auto a = f.conflict_files("-local-a.ics");
    auto n = f.conflict_files("-local-n.ics");
    REQUIRE(a.size() == 2);
    REQUIRE(n.size() == 2);
    CHECK(fs::read_file(a[0]) == event("a", "local edit"));
    CHECK(fs::read_file(n[0]) == event("n", "new here"));
    CHECK(fs::read_file(a[1]).find("read-only") != std::string::npos);
    auto again = f.sync();
    CHECK(again.requests == 1);
    CHECK(again.refused == 0);
}

TEST_CASE("an update whose etag is unknown looks first and never becomes If-None-Match: *") {
    Fixture f;
    f.server.weak_put_etags = true;
    f.sync();
    f.write_local("w.ics", event("w", "one"));
    f.sync();  // created; the server answered with a weak etag, which is not kept
    f.write_local("w.ics", event("w", "two"));
    auto r = f.sync();
    CHECK(r.conflicts == 0);
    CHECK(r.uploaded == 1);
    CHECK(f.server.items().at("w.ics") == event("w", "two"));
    size_t creates = 0, matched = 0;
    for (const auto& q : f.server.requests()) {
        if (q.method != "PUT") continue;
        creates += q.header("If-None-Match") == "*";
        matched += !q.header("If-Match").empty();
    }
    CHECK(creates == 1);  // only the creation
    CHECK(matched == 1);
}

TEST_CASE("a server that answers 507 for ever gets a bounded number of requests") {
    SUBCASE("same token every time: stops at once and lists the collection instead") {
        Fixture f;
        for (int i = 0; i < 3; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
        f.sync();
        f.server.put("e9.ics", event("u9", "S"));
        auto stuck = f.server.current_token();
        f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
            if (r.method != "REPORT" || r.body.find("sync-collection") == std::string::npos) return std::nullopt;
            return testing::CannedResponse{207, {{"Content-Type", "application/xml"}},
                R"(<d:multistatus xmlns:d="DAV:"><d:response><d:href>/cal/e9.ics</d:href><d:propstat><d:prop><d:getetag>"x"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>)"
                R"(<d:response><d:href>/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response><d:sync-token>tok-0</d:sync-token></d:multistatus>)"};
        };
        (void)stuck;
        auto r = f.sync();
        CHECK(f.server.count("REPORT", "sync-collection") <= 2);
        CHECK(f.server.count("PROPFIND") >= 1);  // the listing it fell back to
        CHECK(f.local("u9.ics") == event("u9", "S"));
    }
    SUBCASE("a new token and new made-up hrefs every time: stops at the page cap") {
        Fixture f;
        f.server.put("e0.ics", event("u0", "S"));
        f.sync();
        std::atomic<int> n{0};
        f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
            if (r.method == "REPORT" && r.body.find("sync-collection") != std::string::npos) {
                int i = ++n;
                return testing::CannedResponse{207, {{"Content-Type", "application/xml"}},
                    "<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/cal/ghost" + std::to_string(i) +
                    ".ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>"
                    "<d:response><d:href>/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>"
                    "<d:sync-token>never-" + std::to_string(i) + "</d:sync-token></d:multistatus>"};
            }
            return std::nullopt;
        };
        auto r = f.sync();
        CHECK(f.server.count("REPORT", "sync-collection") <= 101);
        CHECK(f.server.count("REPORT", "sync-collection") >= 50);
        CHECK(f.local("u0.ics") == event("u0", "S"));
        (void)r;
    }
    SUBCASE("and no token to fall back on: a clear error") {
        Fixture f;
        f.server.put("e0.ics", event("u0", "S"));
        f.sync();
        f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
            if (r.method == "REPORT" && r.body.find("sync-collection") != std::string::npos)
                return testing::CannedResponse{207, {{"Content-Type", "application/xml"}},
                    R"(<d:multistatus xmlns:d="DAV:"><d:response><d:href>/cal/</d:href><d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response><d:sync-token>same</d:sync-token></d:multistatus>)"};
            if (r.method == "PROPFIND" && r.header("Depth") == "0")
                return testing::CannedResponse{207, {{"Content-Type", "application/xml"}},
                    R"(<d:multistatus xmlns:d="DAV:"><d:response><d:href>/cal/</d:href><d:propstat><d:prop/><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>)"};
            return std::nullopt;
        };
        bool threw = false;
        try {
            f.sync();
        } catch (const dav::RemoteError& e) {
            threw = true;
            CHECK(std::string(e.what()).find("sync-collection never finished") != std::string::npos);
        }
        CHECK(threw);
        CHECK(f.server.count("REPORT", "sync-collection") <= 3);
    }
}

TEST_CASE("an edit of a file written by an interrupted first sync survives") {
    Fixture f;
    f.server.put("a.ics", event("a", "S"));
    f.server.put("c.ics", event("c", "S"));
    // The first sync was killed after writing c.ics and its journal entry, before saving the state;
    // then the user edited c.ics (khal writes at once).
    stdfs::create_directories(f.folder());
    stdfs::create_directories(f.root / "state");
    fs::write_atomic(f.root / "state" / "cal.json.journal",
                     R"({"key":"/cal/c.ics","href":"/cal/c.ics","etag":"\"e2\"","file":"c.ics","hash":")" +
                         sync::content_hash(event("c", "S")) + "\"}\n");
    f.write_local("c.ics", event("c", "user edit"));
    auto r = f.sync();
    CHECK(f.local("c.ics") == event("c", "user edit"));
    CHECK(f.server.items().at("c.ics") == event("c", "user edit"));
    CHECK(f.server.items().size() == 2);
    CHECK(r.conflicts == 0);
    CHECK(f.local_count() == 2);

    SUBCASE("a torn, invalid file is kept in the conflicts folder and the download redone") {
        Fixture g;
        g.server.put("c.ics", event("c", "S"));
        stdfs::create_directories(g.folder());
        stdfs::create_directories(g.root / "state");
        fs::write_atomic(g.root / "state" / "cal.json.journal",
                         R"({"key":"/cal/c.ics","href":"/cal/c.ics","etag":"\"e1\"","file":"c.ics","hash":")" +
                             sync::content_hash(event("c", "S")) + "\"}\n");
        g.write_local("c.ics", "BEGIN:VCAL");
        g.sync();
        CHECK(g.local("c.ics") == event("c", "S"));
        auto kept = g.conflict_files("-local-c.ics");
        REQUIRE_FALSE(kept.empty());
        CHECK(fs::read_file(kept[0]) == "BEGIN:VCAL");
    }
}

TEST_CASE("the deletion guard counts deletions across every 507 page and waits for confirmation") {
    Fixture f;
    for (int i = 0; i < 30; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
    f.sync();
    for (int i = 0; i < 20; ++i) f.server.remove("e" + std::to_string(i) + ".ics");
    f.server.page_size = 5;  // no page deletes more than 5
    auto r = f.sync();
    CHECK(r.refused_mass_deletion);
    CHECK(r.refused_reason.find("20 of 30") != std::string::npos);
    CHECK(f.local_count() == 30);
    auto again = f.sync();  // still refused, nothing deleted
    CHECK(again.refused_mass_deletion);
    CHECK(f.local_count() == 30);
    f.force_delete = true;
    auto confirmed = f.sync();
    CHECK_FALSE(confirmed.refused_mass_deletion);
    CHECK(confirmed.deleted_local == 20);
    CHECK(f.local_count() == 10);
    f.force_delete = false;
    CHECK(f.sync().requests == 1);
}

TEST_CASE("the deletion guard: under the thresholds deletions go through; the thresholds are configurable") {
    SUBCASE("10 of 30 on the server: not more than 10, applied") {
        Fixture f;
        for (int i = 0; i < 30; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
        f.sync();
        for (int i = 0; i < 10; ++i) f.server.remove("e" + std::to_string(i) + ".ics");
        auto r = f.sync();
        CHECK_FALSE(r.refused_mass_deletion);
        CHECK(r.deleted_local == 10);
    }
    SUBCASE("12 of 30 locally: less than half, applied") {
        Fixture f;
        for (int i = 0; i < 30; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
        f.sync();
        for (int i = 0; i < 12; ++i) stdfs::remove(f.folder() / ("u" + std::to_string(i) + ".ics"));
        auto r = f.sync();
        CHECK_FALSE(r.refused_mass_deletion);
        CHECK(r.deleted_remote == 12);
    }
    SUBCASE("16 of 30 locally: refused, nothing deleted on the server, then confirmed") {
        Fixture f;
        for (int i = 0; i < 30; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
        f.sync();
        for (int i = 0; i < 16; ++i) stdfs::remove(f.folder() / ("u" + std::to_string(i) + ".ics"));
        auto r = f.sync();
        CHECK(r.refused_mass_deletion);
        CHECK(f.server.items().size() == 30);
        CHECK(f.server.count("DELETE") == 0);
        f.force_delete = true;
        CHECK(f.sync().deleted_remote == 16);
        CHECK(f.server.items().size() == 14);
    }
    SUBCASE("a raised threshold lets 16 of 30 through") {
        Fixture f;
        f.guard.max_items = 20;
        for (int i = 0; i < 30; ++i) f.server.put("e" + std::to_string(i) + ".ics", event("u" + std::to_string(i), "S"));
        f.sync();
        for (int i = 0; i < 16; ++i) stdfs::remove(f.folder() / ("u" + std::to_string(i) + ".ics"));
        CHECK(f.sync().deleted_remote == 16);
    }
}

TEST_CASE("a local colour or name is kept when the server has none") {
    Fixture f;
    f.server.put("a.ics", event("a", "S"));
    f.color = "";
    f.sync();
    fs::write_atomic(f.folder() / "color", "#ABCDEF");
    f.sync();
    CHECK(fs::read_file(f.folder() / "color") == "#ABCDEF");
    CHECK(fs::read_file(f.folder() / "displayname") == "Calendar");
}

TEST_CASE("Xandikos' 207 around a refused PUT is a refusal, not a success") {
    // Xandikos 0.2.8, PUT of invalid data (recorded by tests/unit/test_xml.cpp's bodies).
    const std::string body =
        R"(<ns0:multistatus xmlns:ns0="DAV:" xmlns:ns1="urn:ietf:params:xml:ns:caldav"><ns0:response>)"
        R"(<ns0:href>/cal/n.ics</ns0:href><ns0:status>HTTP/1.1 412 Precondition Failed</ns0:status>)"
        R"(<ns0:error><ns1:valid-calendar-data /></ns0:error><ns0:responsedescription>Not a valid calendar file</ns0:responsedescription>)"
        R"(</ns0:response></ns0:multistatus>)";
    Fixture f;
    edits_on_both_sides(f);
    refuse_writes_to(f.server, "n.ics", {207, {{"Content-Type", "text/xml; charset=\"utf-8\""}}, body});
    auto r = f.sync();
    CHECK(r.uploaded == 2);
    CHECK(r.refused == 1);
    CHECK(r.refused_uploads == 1);  // left in place, not sent again until it changes
    CHECK(f.local("n.ics") == event("n", "new here"));
    CHECK(f.server.items().count("n.ics") == 0);
    // Not recorded as synced: a later full listing must not take it for a server deletion.
    f.server.reject_tokens = true;
    f.sync();
    CHECK(f.local("n.ics") == event("n", "new here"));
}

TEST_CASE("a 412 that names a content precondition is a refusal, not a conflict") {
    Fixture f;
    edits_on_both_sides(f);
    refuse_writes_to(f.server, "a.ics",
                     {412, {{"Content-Type", "application/xml"}},
                      R"(<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><C:no-uid-conflict><D:href>/cal/b.ics</D:href></C:no-uid-conflict></D:error>)"});
    auto r = f.sync();
    CHECK(r.conflicts == 0);
    CHECK(r.refused == 1);
    auto kept = f.conflict_files("-local-a.ics");
    REQUIRE(kept.size() == 2);
    CHECK(fs::read_file(kept[1]).find("no-uid-conflict") != std::string::npos);
    CHECK(f.local("a.ics") == event("a", "S"));
}

TEST_CASE("a stale token rejected inside a 207 (Xandikos >= 0.2.10) falls back to a listing") {
    Fixture f;
    f.server.put("a.ics", event("a", "one"));
    f.sync();
    f.server.put("b.ics", event("b", "two"));
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if (r.method != "REPORT" || r.body.find("sync-collection") == std::string::npos ||
            r.body.find("<D:sync-token/>") != std::string::npos)
            return std::nullopt;
        return testing::CannedResponse{207, {{"Content-Type", "text/xml"}},
            R"(<ns0:multistatus xmlns:ns0="DAV:"><ns0:response><ns0:href>/cal/</ns0:href>)"
            R"(<ns0:status>HTTP/1.1 412 Precondition Failed</ns0:status><ns0:error><ns0:valid-sync-token /></ns0:error>)"
            R"(</ns0:response></ns0:multistatus>)"};
    };
    auto r = f.sync();
    CHECK(r.downloaded == 1);
    CHECK(f.local("b.ics") == event("b", "two"));
    CHECK(f.local("a.ics") == event("a", "one"));
}

TEST_CASE("SabreDAV's 403 for a pruned token (diagnostics before the precondition) recovers without losing a local edit") {
    // Verbatim body of SabreDAV 4.7.1 (Nextcloud, Baïkal) for an unknown sync token.
    const std::string sabre_body = R"(<?xml version="1.0" encoding="utf-8"?>
<d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns">
  <s:sabredav-version>4.7.1</s:sabredav-version>
  <s:exception>Sabre\DAV\Exception\InvalidSyncToken</s:exception>
  <s:message>Invalid or unknown sync token</s:message>
  <d:valid-sync-token/>
</d:error>
)";
    Fixture f;
    for (const char* n : {"a", "b", "c"}) f.server.put(std::string(n) + ".ics", event(n, "S"));
    f.sync();
    f.write_local("a.ics", event("a", "local edit"));
    f.server.put("b.ics", event("b", "server edit"));
    f.server.remove("c.ics");
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        bool with_token = r.method == "REPORT" && r.body.find("sync-collection") != std::string::npos &&
                          r.body.find("<D:sync-token/>") == std::string::npos;
        if (with_token) return testing::CannedResponse{403, {{"Content-Type", "application/xml; charset=utf-8"}}, sabre_body};
        return std::nullopt;
    };
    auto r = f.sync();
    CHECK_FALSE(r.refused_mass_deletion);
    CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
    CHECK(f.local("a.ics") == event("a", "local edit"));
    CHECK(f.local("b.ics") == event("b", "server edit"));
    CHECK_FALSE(f.local_exists("c.ics"));
    CHECK(r.conflicts == 0);
}

// --- found by the fault campaign (tests/integration/test_faults.py) ---

TEST_CASE("a GET cut short is never taken for the server's version") {
    Fixture f;
    f.policy = config::ConflictPolicy::local_wins;
    for (const char* n : {"a", "b"}) f.server.put(std::string(n) + ".ics", event(n, "S"));
    f.sync();
    f.write_local("a.ics", event("a", "local edit"));
    f.server.put("a.ics", event("a", "server edit"));
    const std::string whole = event("a", "server edit");
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if (r.method == "GET" && r.target == "/cal/a.ics")
            return testing::CannedResponse{200, {{"ETag", "\"e9\""}}, whole.substr(0, whole.size() / 2)};
        return std::nullopt;
    };
    CHECK_THROWS_AS(f.sync(), dav::RemoteError);
    CHECK(f.server.items().at("a.ics") == event("a", "server edit"));  // not overwritten
    CHECK(f.local("a.ics") == event("a", "local edit"));               // not lost
    CHECK(f.conflict_count() == 0);                                   // no half copy kept as "the server's"
    f.server.intercept = nullptr;
    auto r = f.sync();
    CHECK(r.conflicts == 1);
    CHECK(f.server.items().at("a.ics") == event("a", "local edit"));
    auto kept = f.conflict_files("-server-a.ics");
    REQUIRE(kept.size() == 1);
    CHECK(fs::read_file(kept[0]) == event("a", "server edit"));
}

TEST_CASE("a response repeated in a multiget is one item, not two files") {
    Fixture f;
    f.server.put("a.ics", event("a", "S"));
    f.sync();
    f.server.put("b.ics", event("b", "S"));
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if (r.method != "REPORT" || r.body.find("calendar-multiget") == std::string::npos) return std::nullopt;
        std::string one = "<d:response><d:href>/cal/b.ics</d:href><d:propstat><d:prop><d:getetag>\"e2\"</d:getetag>"
                          "<c:calendar-data>" + event("b", "S") + "</c:calendar-data></d:prop>"
                          "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>";
        return testing::CannedResponse{207, {{"Content-Type", "application/xml"}},
            R"(<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">)" + one + one + "</d:multistatus>"};
    };
    auto r = f.sync();
    CHECK(r.downloaded == 1);
    CHECK(f.local_count() == 2);
    f.server.intercept = nullptr;
    auto again = f.sync();
    CHECK(again.uploaded == 0);
    CHECK(f.server.items().size() == 2);
}

TEST_CASE("an item created here after the token and deleted there is seen as deleted, though the report omits it") {
    Fixture f;
    f.server.omit_created_then_deleted = true;
    f.server.put("a.ics", event("a", "S"));
    f.sync();
    f.write_local("n.ics", event("n", "new here"));
    // The sync that uploads it fails before its pull completes (or is killed there).
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if (r.method == "REPORT" && r.body.find("sync-collection") != std::string::npos)
            return testing::CannedResponse{503, {}, ""};
        return std::nullopt;
    };
    CHECK_THROWS_AS(f.sync(), dav::RemoteError);
    REQUIRE(f.server.items().count("n.ics") == 1);
    f.server.remove("n.ics");  // another client deletes it
    f.server.intercept = nullptr;
    auto r = f.sync();
    CHECK(r.deleted_local == 1);
    CHECK_FALSE(f.local_exists("n.ics"));
    CHECK(f.server.items().count("n.ics") == 0);  // not uploaded again
    CHECK(f.sync().requests == 1);
}

TEST_CASE("DAViCal's 412 naming DAV:if-match is a changed etag (a conflict), not a refusal") {
    Fixture f;
    for (const char* n : {"a", "b"}) f.server.put(std::string(n) + ".ics", event(n, "S"));
    f.sync();
    f.write_local("a.ics", event("a", "local edit"));
    f.server.put("a.ics", event("a", "server edit"));
    // DAViCal 1.1.12 (Debian 12), recorded by tests/integration/test_davical.py.
    refuse_writes_to(f.server, "a.ics", {412, {{"Content-Type", "text/xml; charset=\"utf-8\""}},
        R"(<?xml version="1.0" encoding="utf-8" ?>
<error xmlns="DAV:">
 <if-match/>Existing resource ETag of "abc" does not match "def"
</error>
)"});
    auto r = f.sync();
    CHECK(r.refused == 0);
    CHECK(r.conflicts == 1);
    CHECK(f.local("a.ics") == event("a", "server edit"));
}

TEST_CASE("an upload the server took although its answer was a 503 is adopted by the pull, not downloaded as a second file") {
    Fixture f;
    f.server.put("a.ics", event("a", "S"));
    f.sync();
    f.write_local("n.ics", event("n", "new here"));
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if (r.method != "PUT" || r.target != "/cal/n.ics") return std::nullopt;
        f.server.put("n.ics", r.body);  // the write happened ...
        return testing::CannedResponse{503, {{"Retry-After", "60"}}, ""};  // ... and the answer says otherwise
    };
    auto r = f.sync();
    f.server.intercept = nullptr;
    CHECK(f.local_count() == 2);
    CHECK(r.pending_uploads == 0);
    auto again = f.sync();
    CHECK(again.uploaded == 0);
    CHECK(again.requests == 1);
    CHECK(f.local_count() == 2);
    CHECK(f.server.items().size() == 2);
    CHECK(f.local("n.ics") == event("n", "new here"));
}

TEST_CASE("an item cut short in a download is fetched again, never written or covered by the token") {
    Fixture f;
    f.server.put("a.ics", event("a", "S"));
    f.sync();
    f.server.put("b.ics", event("b", "S"));
    const std::string whole = event("b", "S");
    f.server.intercept = [&](const testing::RecordedRequest& r) -> std::optional<testing::CannedResponse> {
        if (r.method != "REPORT" || r.body.find("calendar-multiget") == std::string::npos) return std::nullopt;
        return testing::CannedResponse{207, {{"Content-Type", "application/xml"}},
            R"(<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:response><d:href>/cal/b.ics</d:href>)"
            R"(<d:propstat><d:prop><d:getetag>"e2"</d:getetag><c:calendar-data>)" + whole.substr(0, whole.size() / 2) +
            R"(</c:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>)"};
    };
    CHECK_THROWS_AS(f.sync(), dav::RemoteError);
    CHECK_FALSE(f.local_exists("b.ics"));
    f.server.intercept = nullptr;
    auto r = f.sync();
    CHECK(r.downloaded == 1);
    CHECK(f.local("b.ics") == whole);
}

}  // TEST_SUITE

TEST_CASE("a collection far larger than the response-size cap is synced whole: listings are read as they arrive") {
    // Buffered, a 64 KiB cap would refuse this listing of about 1.5 MB; read
    // response by response it only bounds what an error page may hold.
    dav::ClientOptions small;
    small.max_response_bytes = 64u << 10;
    small.max_wire_bytes = 64u << 10;
    Fixture f(small);
    constexpr int kItems = 5000;
    for (int i = 0; i < kItems; ++i) f.server.put(cat("e", i, ".ics"), event(cat("uid-", i), cat("event number ", i)));
    auto r = f.sync();
    CHECK(r.downloaded == kItems);
    CHECK(f.local_count() == kItems);
    // Every item whole and in its own file (named after its UID).
    for (int i = 0; i < kItems; i += 97) CHECK(f.local(cat("uid-", i, ".ics")) == event(cat("uid-", i), cat("event number ", i)));
    CHECK(f.local(cat("uid-", kItems - 1, ".ics")) == event(cat("uid-", kItems - 1), cat("event number ", kItems - 1)));

    // The next sync's multiget and sync-collection pages stream the same way.
    for (int i = 0; i < kItems; i += 2) f.server.put(cat("e", i, ".ics"), event(cat("uid-", i), "changed"));
    auto again = f.sync();
    CHECK(again.downloaded == kItems / 2);
    CHECK(f.local("uid-0.ics") == event("uid-0", "changed"));
    CHECK(f.local("uid-1.ics") == event("uid-1", "event number 1"));

    // An error page past the cap is still refused (it is held in memory).
    f.server.intercept = [](const testing::RecordedRequest& req) -> std::optional<testing::CannedResponse> {
        if (req.method != "REPORT") return std::nullopt;
        return testing::CannedResponse{500, {{"Content-Type", "text/plain"}}, std::string(100u << 10, 'x')};
    };
    f.server.put("late.ics", event("late", "late"));
    CHECK_THROWS_WITH_AS(f.sync(), doctest::Contains("response larger than 65536 bytes"), dav::HttpError);
}

TEST_CASE("a sync with nothing to do on either side reads the summary, not the state, and misses no change") {
    Fixture f;
    for (int i = 0; i < 20; ++i) f.server.put(cat("e", i, ".ics"), event(cat("uid-", i), "first"));
    CHECK(f.sync().downloaded == 20);

    // The state file replaced by garbage of the same size, its stamp put
    // back: a sync that loaded it would find it corrupt and set it aside.
    auto state = f.root / "state" / "cal.json";
    auto original = fs::read_file(state);
    struct stat before {};
    REQUIRE(::stat(state.c_str(), &before) == 0);
    {
        int fd = ::open(state.c_str(), O_WRONLY);
        REQUIRE(fd >= 0);
        std::string garbage(original.size(), '#');
        REQUIRE(::pwrite(fd, garbage.data(), garbage.size(), 0) == static_cast<ssize_t>(garbage.size()));
        struct timespec times[2] = {before.st_atim, before.st_mtim};
        REQUIRE(::futimens(fd, times) == 0);
        ::close(fd);
    }
    auto quiet = f.sync();
    CHECK(quiet.requests == 1);  // the sync-collection report, nothing else
    CHECK(quiet.items == 20);
    CHECK_FALSE(stdfs::exists(f.root / "state" / "cal.json.corrupt"));
    fs::write_atomic(state, original);  // a rewrite: the summary no longer matches it

    // The next sync takes the full path once (the summary is for another
    // version of the state) and finds nothing; then the quiet path again.
    CHECK(f.sync().requests == 1);
    CHECK(f.sync().requests == 1);

    // A change on the server: the report the quiet check read is reused.
    f.server.put("e3.ics", event("uid-3", "changed there"));
    auto pulled = f.sync();
    CHECK(pulled.downloaded == 1);
    CHECK(pulled.requests == 2);  // report + multiget
    CHECK(f.local("uid-3.ics") == event("uid-3", "changed there"));

    // A change here, even one that keeps the size: seen by its stamp.
    auto edited = event("uid-4", "CHANGED-HERE");
    REQUIRE(edited.size() == event("uid-4", "changed here").size());
    f.write_local("uid-4.ics", edited);
    CHECK(f.sync().uploaded == 1);
    CHECK(f.server.items().at("e4.ics") == edited);

    // A file touched without a change: the full path, which finds nothing to send.
    CHECK(f.sync().requests == 1);
    ::utimensat(AT_FDCWD, (f.folder() / "uid-5.ics").c_str(), nullptr, 0);
    auto touched = f.sync();
    CHECK(touched.uploaded == 0);
    CHECK(touched.requests == 1);
}
