#include <doctest/doctest.h>

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "sync/item.hpp"

using namespace davsyncd::sync;

namespace {

const char* const kEventCrlf =
    "BEGIN:VCALENDAR\r\n"
    "VERSION:2.0\r\n"
    "PRODID:-//test//EN\r\n"
    "BEGIN:VTIMEZONE\r\n"
    "TZID:Europe/Berlin\r\n"
    "UID:timezone-uid\r\n"
    "END:VTIMEZONE\r\n"
    "BEGIN:VEVENT\r\n"
    "DTSTAMP:20240105T101500Z\r\n"
    "BEGIN:VALARM\r\n"
    "UID:alarm-uid\r\n"
    "ACTION:DISPLAY\r\n"
    "END:VALARM\r\n"
    "UID:event-uid-1\r\n"
    "SUMMARY:Meeting\r\n"
    "END:VEVENT\r\n"
    "END:VCALENDAR\r\n";

// Runs `fn` on a thread of its own and waits at most `limit` for it: a
// parser gone quadratic fails the test instead of hanging the suite. `fn`
// must own everything it touches (shared_ptr captures), since a thread that
// misses the deadline is abandoned, not joined.
template <typename Fn>
bool finishes_within(std::chrono::seconds limit, Fn fn) {
    auto done = std::make_shared<std::promise<void>>();
    auto finished = done->get_future();
    std::thread([done, fn = std::move(fn)]() mutable {
        fn();
        done->set_value();
    }).detach();
    return finished.wait_for(limit) == std::future_status::ready;
}

std::string repeated(std::string_view line, int times) {
    std::string out;
    out.reserve(line.size() * static_cast<size_t>(times));
    for (int i = 0; i < times; ++i) out.append(line);
    return out;
}

}  // namespace

TEST_SUITE("item") {

TEST_CASE("find_uid takes the event's UID, not VTIMEZONE's or VALARM's") {
    CHECK(find_uid(kEventCrlf) == std::optional<std::string>("event-uid-1"));
}

TEST_CASE("find_uid ignores a top-level UID outside any item component") {
    CHECK(find_uid("BEGIN:VCALENDAR\nUID:calendar-level\nBEGIN:VTODO\nUID:todo-1\nEND:VTODO\nEND:VCALENDAR\n") ==
          std::optional<std::string>("todo-1"));
    CHECK(find_uid("BEGIN:VCALENDAR\nUID:calendar-level\nEND:VCALENDAR\n") == std::nullopt);
}

TEST_CASE("find_uid unfolds folded lines (CRLF and LF, space and tab)") {
    CHECK(find_uid("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:abc\r\n def\r\n\tghi\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n") ==
          std::optional<std::string>("abcdefghi"));
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEVENT\nU\n ID:folded-name\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::optional<std::string>("folded-name"));
    // A folded BEGIN line still opens the component.
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEV\n ENT\nUID:x1\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::optional<std::string>("x1"));
}

TEST_CASE("find_uid skips parameters, also quoted ones containing ':'") {
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID;X-A=y:abc\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::optional<std::string>("abc"));
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID;X-URL=\"http://x:80/\":real-uid\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::optional<std::string>("real-uid"));
    // A ':' in the value stays in the value.
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:urn:uuid:1234\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::optional<std::string>("urn:uuid:1234"));
}

TEST_CASE("find_uid is case-insensitive and trims trailing whitespace") {
    CHECK(find_uid("begin:vcalendar\nbegin:vevent\nuid:lower-1  \t\r\nend:vevent\nend:vcalendar\n") ==
          std::optional<std::string>("lower-1"));
}

TEST_CASE("find_uid reads the first VEVENT only") {
    const char* two = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:master\nEND:VEVENT\n"
                      "BEGIN:VEVENT\nUID:other\nRECURRENCE-ID:20240101T000000Z\nEND:VEVENT\nEND:VCALENDAR\n";
    CHECK(find_uid(two) == std::optional<std::string>("master"));
}

TEST_CASE("find_uid on vCards") {
    CHECK(find_uid("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice\r\nUID:urn:uuid:card-1\r\nEND:VCARD\r\n") ==
          std::optional<std::string>("urn:uuid:card-1"));
    // vCard group prefixes are not part of the property name.
    CHECK(find_uid("BEGIN:VCARD\nVERSION:3.0\nitem1.UID:grouped\nEND:VCARD\n") ==
          std::optional<std::string>("grouped"));
}

TEST_CASE("find_uid returns nullopt when there is none or it is empty") {
    CHECK(find_uid("") == std::nullopt);
    CHECK(find_uid("garbage without lines") == std::nullopt);
    CHECK(find_uid("BEGIN:VCARD\nFN:Bob\nEND:VCARD\n") == std::nullopt);
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:\nEND:VEVENT\nEND:VCALENDAR\n") == std::nullopt);
    CHECK(find_uid("BEGIN:VCALENDAR\nBEGIN:VEVENT\nBEGIN:VALARM\nUID:alarm\nEND:VALARM\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::nullopt);
}

TEST_CASE("add_uid on an LF file inserts after BEGIN:VEVENT, and find_uid finds it") {
    std::string in = "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nSUMMARY:x\nBEGIN:VALARM\nUID:alarm\nEND:VALARM\n"
                     "END:VEVENT\nEND:VCALENDAR\n";
    std::string out = add_uid(in, "new-uid");
    CHECK(out == "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:new-uid\nSUMMARY:x\nBEGIN:VALARM\nUID:alarm\n"
                 "END:VALARM\nEND:VEVENT\nEND:VCALENDAR\n");
    CHECK(out.find('\r') == std::string::npos);
    CHECK(find_uid(out) == std::optional<std::string>("new-uid"));
}

TEST_CASE("add_uid on a CRLF vCard keeps CRLF") {
    std::string in = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Alice\r\nEND:VCARD\r\n";
    std::string out = add_uid(in, "card-uid");
    CHECK(out == "BEGIN:VCARD\r\nUID:card-uid\r\nVERSION:4.0\r\nFN:Alice\r\nEND:VCARD\r\n");
    CHECK(find_uid(out) == std::optional<std::string>("card-uid"));
}

TEST_CASE("add_uid fills every component without a UID and leaves others alone") {
    std::string in = "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nSUMMARY:a\r\nEND:VTODO\r\n"
                     "BEGIN:VJOURNAL\r\nUID:has-one\r\nEND:VJOURNAL\r\nEND:VCALENDAR\r\n";
    std::string out = add_uid(in, "u1");
    CHECK(out == "BEGIN:VCALENDAR\r\nBEGIN:VTODO\r\nUID:u1\r\nSUMMARY:a\r\nEND:VTODO\r\n"
                 "BEGIN:VJOURNAL\r\nUID:has-one\r\nEND:VJOURNAL\r\nEND:VCALENDAR\r\n");
    // Already complete: unchanged.
    CHECK(add_uid(kEventCrlf, "zzz") == kEventCrlf);
    // Nothing to fill.
    CHECK(add_uid("BEGIN:VCALENDAR\nEND:VCALENDAR\n", "zzz") == "BEGIN:VCALENDAR\nEND:VCALENDAR\n");
}

TEST_CASE("add_uid keeps folded BEGIN lines intact and cannot inject lines") {
    CHECK(add_uid("BEGIN:VC\n ARD\nFN:x\nEND:VCARD\n", "f1") == "BEGIN:VC\n ARD\nUID:f1\nFN:x\nEND:VCARD\n");
    std::string out = add_uid("BEGIN:VCARD\nFN:x\nEND:VCARD\n", "a\r\nFN:evil");
    CHECK(out == "BEGIN:VCARD\nUID:aFN:evil\nFN:x\nEND:VCARD\n");
    // Without a final line break.
    CHECK(add_uid("BEGIN:VCARD", "u") == "BEGIN:VCARD\r\nUID:u");
    CHECK(find_uid(add_uid("BEGIN:VCARD", "u")) == std::optional<std::string>("u"));
}

TEST_CASE("modification_stamp prefers LAST-MODIFIED, then DTSTAMP, then REV") {
    CHECK(modification_stamp("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTAMP:20240101T000000Z\n"
                             "LAST-MODIFIED:20240105T101500Z\nEND:VEVENT\nEND:VCALENDAR\n") ==
          std::optional<std::string>("20240105101500"));
    CHECK(modification_stamp(kEventCrlf) == std::optional<std::string>("20240105101500"));
    CHECK(modification_stamp("BEGIN:VCARD\nREV:2024-01-05T10:15:00Z\nEND:VCARD\n") ==
          std::optional<std::string>("20240105101500"));
    CHECK(modification_stamp("BEGIN:VCARD\nFN:x\nEND:VCARD\n") == std::nullopt);
}

TEST_CASE("modification_stamp reads the main component only") {
    // A LAST-MODIFIED in a nested VALARM or in the VTIMEZONE does not count.
    const char* ics = "BEGIN:VCALENDAR\nBEGIN:VTIMEZONE\nLAST-MODIFIED:20990101T000000Z\nEND:VTIMEZONE\n"
                      "BEGIN:VEVENT\nBEGIN:VALARM\nLAST-MODIFIED:20980101T000000Z\nEND:VALARM\n"
                      "DTSTAMP:20240102T030405Z\nEND:VEVENT\nEND:VCALENDAR\n";
    CHECK(modification_stamp(ics) == std::optional<std::string>("20240102030405"));
}

TEST_CASE("content_hash is a stable hex SHA-256") {
    CHECK(content_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(content_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(content_hash(kEventCrlf) == content_hash(std::string(kEventCrlf)));
    CHECK(content_hash("abc") != content_hash("abd"));
}

TEST_CASE("random_uuid is a lower-case version 4 UUID and unique") {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) {
        std::string u = random_uuid();
        REQUIRE(u.size() == 36);
        for (size_t k = 0; k < u.size(); ++k) {
            if (k == 8 || k == 13 || k == 18 || k == 23) {
                CHECK(u[k] == '-');
            } else {
                bool hex = (u[k] >= '0' && u[k] <= '9') || (u[k] >= 'a' && u[k] <= 'f');
                CHECK(hex);
            }
        }
        CHECK(u[14] == '4');
        CHECK(std::string("89ab").find(u[19]) != std::string::npos);
        seen.insert(u);
    }
    CHECK(seen.size() == 1000);
}

TEST_CASE("looks_like accepts BOM, whitespace and any case") {
    CHECK(looks_like(ItemFormat::icalendar, "BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"));
    CHECK(looks_like(ItemFormat::icalendar, "\xEF\xBB\xBF \r\n begin:vcalendar\n"));
    CHECK(looks_like(ItemFormat::vcard, "\xEF\xBB\xBF" "BEGIN:VCARD\nEND:VCARD\n"));
    CHECK_FALSE(looks_like(ItemFormat::vcard, "BEGIN:VCALENDAR\n"));
    CHECK_FALSE(looks_like(ItemFormat::icalendar, "BEGIN:VCARD\n"));
    CHECK_FALSE(looks_like(ItemFormat::vcard, "BEGIN:VCARDX\n"));
    CHECK_FALSE(looks_like(ItemFormat::icalendar, ""));
    CHECK_FALSE(looks_like(ItemFormat::icalendar, "<html>BEGIN:VCALENDAR"));
}

// Each stray END used to search the whole stack of open components: 100 000
// of them under 100 000 open ones took minutes. The deadline only guards
// against a hang; linear parsing takes well under a second.
TEST_CASE("100 000 BEGIN lines then 100 000 unmatched END lines parse in linear time, correctly") {
    constexpr int kDepth = 100000;
    struct Outcome {
        std::optional<std::string> uid, stamp, uid_after_add;
    };
    auto outcome = std::make_shared<Outcome>();
    auto hostile = std::make_shared<std::string>("BEGIN:VCALENDAR\r\n" + repeated("BEGIN:X\r\n", kDepth) +
                                                 repeated("END:Y\r\n", kDepth) +
                                                 "BEGIN:VEVENT\r\nUID:deep\r\nDTSTAMP:20240105T101500Z\r\n"
                                                 "END:VEVENT\r\n" + repeated("end:x\r\n", kDepth) +
                                                 "BEGIN:VTODO\r\nEND:VTODO\r\nEND:VCALENDAR\r\n");
    REQUIRE(finishes_within(std::chrono::seconds(60), [hostile, outcome] {
        outcome->uid = find_uid(*hostile);
        outcome->stamp = modification_stamp(*hostile);
        outcome->uid_after_add = find_uid(add_uid(*hostile, "added"));
    }));
    // The stray ENDs closed nothing; the VEVENT nested in every X is the item.
    CHECK(outcome->uid == "deep");
    CHECK(outcome->stamp == "20240105101500");
    CHECK(outcome->uid_after_add == "deep");
}

TEST_CASE("END closes the innermost open component of its name and everything opened inside it") {
    // END:VEVENT closes the unterminated X inside it, so the UID after it is
    // the calendar's (ignored), not the event's; a stray END:VEVENT later is ignored.
    std::string text =
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nBEGIN:X\nEND:VEVENT\nUID:outside\nEND:VEVENT\n"
        "BEGIN:VTODO\nUID:todo\nEND:VTODO\nEND:VCALENDAR\n";
    CHECK_FALSE(find_uid(text).has_value());
    std::string with = add_uid(text, "new");
    CHECK(with.find("BEGIN:VEVENT\nUID:new\n") != std::string::npos);
    CHECK(with.find("BEGIN:VTODO\nUID:todo\n") != std::string::npos);
    // Names match case-insensitively; a nested component of the same name
    // is closed first.
    CHECK(find_uid("BEGIN:VCARD\nBEGIN:vcard\nUID:inner\nend:VCARD\nUID:outer\nEND:VCARD\n") == "outer");
}

TEST_CASE("extension and content_type") {
    CHECK(std::string(extension(ItemFormat::icalendar)) == ".ics");
    CHECK(std::string(extension(ItemFormat::vcard)) == ".vcf");
    CHECK(std::string(content_type(ItemFormat::icalendar)) == "text/calendar; charset=utf-8");
    CHECK(std::string(content_type(ItemFormat::vcard)) == "text/vcard; charset=utf-8");
}

}  // TEST_SUITE
