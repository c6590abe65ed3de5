// The streaming multistatus reader must see exactly what a whole-document
// parse sees, however the bytes are cut, and refuse what Document refuses.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/log.hpp"
#include "dav/multistatus_reader.hpp"

using namespace davsyncd;
using namespace davsyncd::xml;

namespace {

struct Seen {
    std::string href;
    int status = 0;
    std::string etag;
    std::string data;
    bool operator==(const Seen&) const = default;
};

Seen seen_of(const Response& r) {
    Seen s{r.href, r.status, "", ""};
    if (const auto* e = r.find_prop(kDav, "getetag")) s.etag = text(e);
    if (const auto* d = r.find_prop(kCalDav, "calendar-data")) s.data = text(d);
    return s;
}

struct Result {
    std::vector<Seen> responses;
    std::optional<std::string> token;
};

// Feeds `doc` in pieces of `piece` bytes.
Result stream(const std::string& doc, size_t piece, StreamLimits limits = {}) {
    Result out;
    MultistatusReader reader([&](const Response& r) { out.responses.push_back(seen_of(r)); }, limits);
    for (size_t i = 0; i < doc.size(); i += piece) reader.feed(std::string_view(doc).substr(i, piece));
    reader.finish();
    out.token = reader.sync_token();
    CHECK(reader.responses() == out.responses.size());
    return out;
}

Result whole(const std::string& text) {
    Document doc(text);
    auto ms = parse_multistatus(doc);
    Result out;
    for (const auto& r : ms.responses) out.responses.push_back(seen_of(r));
    out.token = ms.sync_token;
    return out;
}

// Namespaces declared on the root and on the response, a default namespace,
// comments, CDATA and attribute values holding '<', '>' and end tags, and
// the sync-token after the responses.
const std::string kTricky =
    "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- a comment </D:response> -->\n"
    "<D:multistatus xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\" title='a > b'>\n"
    "  <D:response><D:href>/cal/a.ics</D:href><D:propstat><D:prop><D:getetag>\"1\"</D:getetag>"
    "<C:calendar-data><![CDATA[BEGIN:VCALENDAR\r\nSUMMARY:</D:response> <x> ]] >\r\nEND:VCALENDAR]]></C:calendar-data>"
    "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>\n"
    "  <!-- between -->\n"
    "  <response xmlns=\"DAV:\" note=\"x</response>\"><href>/cal/b.ics</href><propstat><prop><getetag>\"2\"</getetag>"
    "<cal:calendar-data xmlns:cal=\"urn:ietf:params:xml:ns:caldav\">B &amp; &lt;b&gt;</cal:calendar-data></prop>"
    "<status>HTTP/1.1 200 OK</status></propstat></response>\n"
    "  <D:response><D:href>/cal/gone.ics</D:href><D:status>HTTP/1.1 404 Not Found</D:status></D:response>"
    "<!-- x -->\n"
    "  <D:response/>\n"
    "  <D:sync-token>http://example.org/sync/42</D:sync-token>\n"
    "</D:multistatus>\n<!-- trailing -->\n";

std::string listing(int n) {
    std::string s = R"(<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">)";
    for (int i = 0; i < n; ++i)
        s += cat("<d:response><d:href>/cal/", i, ".ics</d:href><d:propstat><d:prop><d:getetag>\"", i,
                 "\"</d:getetag><c:calendar-data>BEGIN:VCALENDAR&#13;\nUID:", i,
                 "&#13;\nEND:VCALENDAR</c:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>");
    return s + "<d:sync-token>tok-" + std::to_string(n) + "</d:sync-token></d:multistatus>";
}

}  // namespace

TEST_SUITE("multistatus reader") {

TEST_CASE("every way of cutting the bytes gives what a whole-document parse gives") {
    auto expected = whole(kTricky);
    REQUIRE(expected.responses.size() == 3);  // the empty <D:response/> has no href: skipped by both
    CHECK(expected.responses[0].data.find("</D:response> <x>") != std::string::npos);
    CHECK(expected.responses[1].data == "B & <b>");
    CHECK(expected.token == "http://example.org/sync/42");
    for (size_t piece = 1; piece <= kTricky.size(); ++piece) {
        CAPTURE(piece);
        auto got = stream(kTricky, piece);
        CHECK(got.responses == expected.responses);
        CHECK(got.token == expected.token);
    }
}

TEST_CASE("a large listing arrives response by response, in order, with its token") {
    auto doc = listing(3000);
    size_t calls = 0;
    MultistatusReader reader([&](const Response& r) {
        CHECK(r.href == cat("/cal/", calls, ".ics"));
        ++calls;
    });
    // Pieces the size curl hands over; each response is delivered as soon
    // as its end tag is in.
    for (size_t i = 0; i < doc.size(); i += 16384) reader.feed(std::string_view(doc).substr(i, 16384));
    reader.finish();
    CHECK(calls == 3000);
    CHECK(reader.sync_token() == "tok-3000");
}

TEST_CASE("an empty multistatus, self-closing or not") {
    CHECK(stream(R"(<d:multistatus xmlns:d="DAV:"/>)", 3).responses.empty());
    auto r = stream(R"(<multistatus xmlns="DAV:"><sync-token>t</sync-token></multistatus>)", 5);
    CHECK(r.responses.empty());
    CHECK(r.token == "t");
}

TEST_CASE("refusals name what was wrong") {
    auto refused = [](const std::string& doc, StreamLimits limits = {}) -> std::string {
        try {
            stream(doc, 7, limits);
        } catch (const XmlError& e) {
            return e.what();
        }
        return "accepted";
    };
    CHECK(refused(R"(<!DOCTYPE x [<!ENTITY a "b">]><d:multistatus xmlns:d="DAV:"/>)").find("DOCTYPE") != std::string::npos);
    CHECK(refused(R"(<html><body>Error</body></html>)").find("multistatus") != std::string::npos);
    CHECK(refused("Internal Server Error").find("text outside the root") != std::string::npos);
    CHECK(refused(listing(3).substr(0, 400)).find("ended before") != std::string::npos);
    CHECK(refused(R"(<d:multistatus xmlns:d="DAV:"><d:response><d:href>x</d:href></d:wrong></d:multistatus>)")
              .find("malformed XML") != std::string::npos);
    CHECK(refused(R"(<d:multistatus xmlns:d="DAV:"></d:multistatus><d:multistatus xmlns:d="DAV:"/>)")
              .find("second root") != std::string::npos);

    StreamLimits small;
    small.max_element_bytes = 1000;
    auto big = cat(R"(<d:multistatus xmlns:d="DAV:"><d:response><d:href>)", std::string(5000, 'a'),
                   "</d:href></d:response></d:multistatus>");
    CHECK(refused(big, small).find("larger than 1000 bytes") != std::string::npos);
    // An endless comment or text between responses is bounded too.
    auto comment = cat(R"(<d:multistatus xmlns:d="DAV:"><!--)", std::string(5000, 'a'), "--></d:multistatus>");
    CHECK(refused(comment, small).find("larger than 1000 bytes") != std::string::npos);

    StreamLimits few;
    few.max_responses = 10;
    CHECK(refused(listing(11), few).find("more than 10 responses") != std::string::npos);
    CHECK(refused(listing(10), few) == "accepted");

    std::string deep = R"(<d:multistatus xmlns:d="DAV:"><d:response>)";
    for (int i = 0; i < 70; ++i) deep += "<x>";
    CHECK(refused(deep).find("nested deeper") != std::string::npos);
}

TEST_CASE("after a refusal or a throwing callback the reader takes nothing more") {
    MultistatusReader reader([](const Response&) { throw std::runtime_error("disk full"); });
    CHECK_THROWS_WITH(reader.feed(listing(2)), "disk full");
    CHECK_THROWS_AS(reader.feed("<x/>"), XmlError);
    CHECK_THROWS_AS(reader.finish(), XmlError);
}

}  // TEST_SUITE
