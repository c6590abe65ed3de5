#include <doctest/doctest.h>

#include "temp_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>

#include "core/fs.hpp"
#include "sync/account_sync.hpp"
#include "sync/vdir_store.hpp"

namespace stdfs = std::filesystem;
using namespace davsyncd;
using sync::ItemFormat;
using sync::VdirStore;

namespace {

using testing::TempDir;

void put(const stdfs::path& p, const std::string& content) {
    std::ofstream out(p, std::ios::binary);
    out << content;
}

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

bool is_uuid_name(const std::string& name, const std::string& ext) {
    if (name.size() != 36 + ext.size() || name.substr(36) != ext) return false;
    for (size_t k = 0; k < 36; ++k) {
        char c = name[k];
        bool ok = (k == 8 || k == 13 || k == 18 || k == 23) ? c == '-'
                                                            : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        if (!ok) return false;
    }
    return true;
}

}  // namespace

TEST_SUITE("vdir") {

TEST_CASE("constructor creates the folder with mode 0700") {
    TempDir t;
    VdirStore store(t.path / "acc" / "cal", ItemFormat::icalendar);
    CHECK(stdfs::is_directory(t.path / "acc" / "cal"));
    struct stat st{};
    REQUIRE(::stat((t.path / "acc" / "cal").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);
    CHECK(store.folder() == t.path / "acc" / "cal");
    CHECK(store.format() == ItemFormat::icalendar);
}

TEST_CASE("list returns regular item files sorted, skipping everything else") {
    TempDir t;
    VdirStore store(t.path, ItemFormat::icalendar);
    put(t.path / "b.ics", "BB");
    put(t.path / "a.ics", "A");
    put(t.path / "c.ics.tmp", "half written");
    put(t.path / ".hidden.ics", "x");
    put(t.path / "note.txt", "x");
    put(t.path / "card.vcf", "x");
    put(t.path / "displayname", "Work");
    stdfs::create_directory(t.path / "dir.ics");
    stdfs::create_symlink(t.path / "a.ics", t.path / "link.ics");
    stdfs::create_symlink("/etc/passwd", t.path / "passwd.ics");
    put(t.path / "ctl\x01.ics", "x");

    auto files = store.list();
    REQUIRE(files.size() == 2);
    CHECK(files[0].name == "a.ics");
    CHECK(files[0].size == 1);
    CHECK(files[1].name == "b.ics");
    CHECK(files[1].size == 2);
    CHECK(files[0].mtime_ns > 0);

    VdirStore cards(t.path, ItemFormat::vcard);
    auto vcf = cards.list();
    REQUIRE(vcf.size() == 1);
    CHECK(vcf[0].name == "card.vcf");
}

TEST_CASE("write, stat, read and remove") {
    TempDir t;
    VdirStore store(t.path, ItemFormat::vcard);
    CHECK(store.stat("x.vcf") == std::nullopt);
    auto written = store.write("x.vcf", "BEGIN:VCARD\r\nEND:VCARD\r\n");
    CHECK(written.name == "x.vcf");
    CHECK(written.size == 24);
    CHECK(store.stat("x.vcf") == std::optional<sync::LocalFile>(written));
    CHECK(store.read("x.vcf") == "BEGIN:VCARD\r\nEND:VCARD\r\n");
    CHECK_FALSE(stdfs::exists(t.path / "x.vcf.tmp"));

    auto again = store.write("x.vcf", "changed");
    CHECK(again.size == 7);
    CHECK(store.read("x.vcf") == "changed");

    store.remove("x.vcf");
    CHECK_FALSE(stdfs::exists(t.path / "x.vcf"));
    CHECK(store.stat("x.vcf") == std::nullopt);
    store.remove("x.vcf");  // missing is fine
    CHECK_THROWS_AS(store.read("x.vcf"), fs::IoError);
}

TEST_CASE("stat and read do not follow symlinks") {
    TempDir t;
    VdirStore store(t.path / "cal", ItemFormat::icalendar);
    put(t.path / "secret", "private key");
    stdfs::create_symlink(t.path / "secret", t.path / "cal" / "evil.ics");
    CHECK(store.stat("evil.ics") == std::nullopt);
    CHECK_THROWS_AS(store.read("evil.ics"), fs::IoError);
}

TEST_CASE("valid_name") {
    TempDir t;
    VdirStore store(t.path, ItemFormat::icalendar);
    CHECK(store.valid_name("abc.ics"));
    CHECK(store.valid_name("a b+c@d.ics"));
    CHECK(store.valid_name("caf\xc3\xa9.ics"));
    CHECK(store.valid_name(std::string(251, 'a') + ".ics"));
    CHECK_FALSE(store.valid_name(std::string(252, 'a') + ".ics"));
    CHECK_FALSE(store.valid_name(""));
    CHECK_FALSE(store.valid_name("."));
    CHECK_FALSE(store.valid_name(".."));
    CHECK_FALSE(store.valid_name(".ics"));
    CHECK_FALSE(store.valid_name(".hidden.ics"));
    CHECK_FALSE(store.valid_name("abc.vcf"));
    CHECK_FALSE(store.valid_name("abc"));
    CHECK_FALSE(store.valid_name("abc.ics.tmp"));
    CHECK_FALSE(store.valid_name("a/b.ics"));
    CHECK_FALSE(store.valid_name("../x.ics"));
    CHECK_FALSE(store.valid_name(std::string("a\0b.ics", 7)));
    CHECK_FALSE(store.valid_name("a\nb.ics"));
    CHECK_FALSE(store.valid_name("a\x7f.ics"));
    CHECK_FALSE(store.valid_name("caf\xe9.ics"));  // Latin-1, not UTF-8
}

TEST_CASE("invalid names throw std::invalid_argument naming the name, and touch nothing") {
    TempDir t;
    VdirStore store(t.path / "cal", ItemFormat::icalendar);
    for (const char* bad : {"../x.ics", "a/b.ics", ".hidden.ics", "..", "/etc/passwd.ics", "x.txt", ""}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS(store.write(bad, "x"), doctest::Contains(bad), std::invalid_argument);
        CHECK_THROWS_AS(store.read(bad), std::invalid_argument);
        CHECK_THROWS_AS(store.stat(bad), std::invalid_argument);
        CHECK_THROWS_AS(store.remove(bad), std::invalid_argument);
    }
    CHECK_FALSE(stdfs::exists(t.path / "x.ics"));
    CHECK(stdfs::is_empty(t.path / "cal"));
}

TEST_CASE("a relative folder works, also \".\"") {
    TempDir t;
    auto cwd = stdfs::current_path();
    stdfs::current_path(t.path);
    {
        VdirStore here(".", ItemFormat::icalendar);
        here.write("a.ics", "x");
        CHECK(here.read("a.ics") == "x");
        VdirStore sub("sub/cal", ItemFormat::vcard);
        sub.write("b.vcf", "y");
        CHECK_THROWS_AS(sub.write("../b.vcf", "y"), std::invalid_argument);
    }
    stdfs::current_path(cwd);
    CHECK(stdfs::exists(t.path / "a.ics"));
    CHECK(stdfs::exists(t.path / "sub" / "cal" / "b.vcf"));
}

TEST_CASE("new_name uses a safe UID, else a random UUID, never escaping") {
    TempDir t;
    VdirStore store(t.path / "cal", ItemFormat::icalendar);
    CHECK(store.new_name(std::string("abc-123_x.y+z")) == "abc-123_x.y+z.ics");
    CHECK(is_uuid_name(store.new_name(std::nullopt), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string("")), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string("../evil")), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string("a/b")), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string(".hidden")), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string("..")), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string("has space")), ".ics"));
    CHECK(is_uuid_name(store.new_name(std::string("urn:uuid:1")), ".ics"));
    // vdirsyncer's safe set includes '@': most real UIDs contain one.
    CHECK(store.new_name(std::string("x@example.com")) == "x@example.com.ics");
    CHECK(is_uuid_name(store.new_name(std::string("caf\xc3\xa9")), ".ics"));
    CHECK(store.new_name(std::string(200, 'u')) == std::string(200, 'u') + ".ics");
    CHECK(is_uuid_name(store.new_name(std::string(201, 'u')), ".ics"));

    // Collision with an existing file (or anything else of that name).
    store.write("taken.ics", "x");
    CHECK(is_uuid_name(store.new_name(std::string("taken")), ".ics"));
    stdfs::create_symlink("/nonexistent", t.path / "cal" / "dangling.ics");
    CHECK(is_uuid_name(store.new_name(std::string("dangling")), ".ics"));

    // Every name it hands out is usable by the store.
    for (const char* uid : {"../evil", "abc", "a/b", ".x"}) {
        auto name = store.new_name(std::string(uid));
        CHECK(store.valid_name(name));
        store.write(name, "x");
        CHECK(stdfs::exists(t.path / "cal" / name));
    }
    CHECK_FALSE(stdfs::exists(t.path / "evil.ics"));

    VdirStore cards(t.path / "book", ItemFormat::vcard);
    CHECK(cards.new_name(std::string("card1")) == "card1.vcf");
    CHECK(is_uuid_name(cards.new_name(std::nullopt), ".vcf"));
}

// On exFAT, NTFS, CIFS or casefolded ext4 "ABC.ics" and "abc.ics" are one
// file: the second download replaced the first item, and the next scan
// uploaded the deletion of the other. The folder may be on (or be copied to)
// such a file system, so names are kept apart on any file system.
TEST_CASE("two UIDs differing only in case get two names that differ ignoring case, before either is written") {
    TempDir t;
    VdirStore store(t.path / "cal", ItemFormat::icalendar);
    auto first = store.new_name(std::string("Meeting-1@example.com"));
    auto second = store.new_name(std::string("meeting-1@EXAMPLE.com"));
    CHECK(first == "Meeting-1@example.com.ics");
    CHECK(lower(first) != lower(second));
    CHECK(is_uuid_name(second, ".ics"));
    store.write(first, "one");
    store.write(second, "two");
    CHECK(store.read(first) == "one");
    CHECK(store.read(second) == "two");
    CHECK(store.list().size() == 2);
}

TEST_CASE("a file already there under another case blocks the UID's name") {
    TempDir t;
    VdirStore store(t.path / "cal", ItemFormat::icalendar);
    put(t.path / "cal" / "ABC.ics", "theirs");
    auto name = store.new_name(std::string("abc"));
    CHECK(lower(name) != "abc.ics");
    store.write(name, "ours");
    CHECK(store.read("ABC.ics") == "theirs");
    // A file written by the store after its first listing counts too.
    VdirStore other(t.path / "book", ItemFormat::vcard);
    auto card = other.new_name(std::string("x"));
    other.write(card, "1");
    other.write("Mixed.vcf", "2");
    CHECK(lower(other.new_name(std::string("X"))) != "x.vcf");
    CHECK(lower(other.new_name(std::string("mixed"))) != "mixed.vcf");
}

TEST_CASE("a new item never replaces a file that took its name after new_name") {
    TempDir t;
    VdirStore store(t.path / "cal", ItemFormat::icalendar);
    auto name = store.new_name(std::string("race"));
    REQUIRE(name == "race.ics");
    put(t.path / "cal" / "race.ics", "written by another program meanwhile");
    auto written = store.write(name, "the downloaded item");
    CHECK(written.name != name);
    CHECK(is_uuid_name(written.name, ".ics"));
    CHECK(store.read(written.name) == "the downloaded item");
    CHECK(store.read("race.ics") == "written by another program meanwhile");
    // A name that was not handed out as new is an ordinary replacement.
    auto again = store.write("race.ics", "edited");
    CHECK(again.name == "race.ics");
    CHECK(store.read("race.ics") == "edited");
}

TEST_CASE("collections whose ids differ only in case get folders that differ ignoring case, kept across runs") {
    TempDir t;
    config::Account account;
    account.id = "acct";
    account.local_root = t.path / "data";
    auto collection = [](const std::string& id) {
        dav::CollectionInfo c;
        c.id = id;
        c.url = "https://dav.example/cal/" + id + "/";
        c.display_name = id;
        return c;
    };
    std::vector<dav::CollectionInfo> found{collection("Work"), collection("work"), collection("WORK")};
    auto plan = sync::plan_collections(account, t.path / "state", found);
    REQUIRE(plan.size() == 3);
    std::set<std::string> folded;
    for (const auto& p : plan) folded.insert(lower(p.folder));
    CHECK(folded.size() == 3);
    CHECK(plan[0].folder == "Work");
    std::set<std::string> states;
    for (const auto& p : plan) states.insert(lower(p.state_file.filename().string()));
    CHECK(states.size() == 3);

    // A later run keeps each folder, and a newcomer avoids all of them.
    found.push_back(collection("wOrK"));
    auto again = sync::plan_collections(account, t.path / "state", found);
    REQUIRE(again.size() == 4);
    for (size_t i = 0; i < 3; ++i) CHECK(again[i].folder == plan[i].folder);
    folded.insert(lower(again[3].folder));
    CHECK(folded.size() == 4);
}

TEST_CASE("metadata set, unchanged, removed") {
    TempDir t;
    VdirStore store(t.path, ItemFormat::icalendar);
    CHECK(store.metadata("displayname") == "");

    store.set_metadata("displayname", "Work\r\n");
    CHECK(fs::read_file(t.path / "displayname") == "Work");
    CHECK(store.metadata("displayname") == "Work");

    store.set_metadata("color", "#1E90FF");
    CHECK(fs::read_file(t.path / "color") == "#1E90FF");
    CHECK(store.metadata("color") == "#1E90FF");

    // Same value: the file is not rewritten (inode and mtime kept).
    struct stat before{};
    REQUIRE(::stat((t.path / "displayname").c_str(), &before) == 0);
    ::usleep(20000);
    store.set_metadata("displayname", "Work");
    struct stat after{};
    REQUIRE(::stat((t.path / "displayname").c_str(), &after) == 0);
    CHECK(before.st_ino == after.st_ino);
    CHECK(before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);
    CHECK(before.st_mtim.tv_sec == after.st_mtim.tv_sec);

    // A trailing newline written by another tool does not count as a change.
    put(t.path / "description", "Team calendar\n");
    CHECK(store.metadata("description") == "Team calendar");

    store.set_metadata("displayname", "Private\nStuff");
    CHECK(store.metadata("displayname") == "PrivateStuff");

    store.set_metadata("displayname", "");
    CHECK_FALSE(stdfs::exists(t.path / "displayname"));
    CHECK(store.metadata("displayname") == "");
    store.set_metadata("displayname", "");  // already gone: fine
    store.set_metadata("color", "\r\n");    // only newlines: removes
    CHECK_FALSE(stdfs::exists(t.path / "color"));

    // Metadata files never show up as items.
    CHECK(store.list().empty());
}

TEST_CASE("metadata rejects unknown keys") {
    TempDir t;
    VdirStore store(t.path, ItemFormat::icalendar);
    for (const char* key : {"order", "../x", "displayname/../../x", "", "x.ics"}) {
        CAPTURE(key);
        CHECK_THROWS_AS(store.set_metadata(key, "v"), std::invalid_argument);
        CHECK_THROWS_AS(store.metadata(key), std::invalid_argument);
    }
    CHECK(stdfs::is_empty(t.path));
}

}  // TEST_SUITE
