// libFuzzer harness: arbitrary bytes through Document, parse_multistatus and
// every accessor a sync pass uses. Only XmlError may escape the parser;
// anything else (crash, sanitizer report, other exception) is a bug.
// The same bytes also go through the streaming MultistatusReader, cut into
// pieces sized by the first byte; when both accept the document they must
// report the same responses.
#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <string_view>
#include <vector>

#include "dav/multistatus_reader.hpp"
#include "dav/xml.hpp"

using namespace davsyncd::xml;

namespace {

void walk(const Element* e, int depth) {
    if (!e || depth > 80) return;
    (void)namespace_of(e);
    (void)local_name(e);
    (void)is_push(e, "topic");
    (void)push_child(e, "web-push");
    for (const Element* c : elements(e)) walk(c, depth + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    (void)error_condition(input);
    (void)parse_status_line(input);
    (void)escape(input);
    std::vector<std::string> whole_hrefs, streamed_hrefs;
    bool whole_ok = false, streamed_ok = false;
    try {
        MultistatusReader reader([&](const Response& r) {
            streamed_hrefs.push_back(r.href);
            if (const Element* data = r.find_prop(kCalDav, "calendar-data")) (void)text(data, 1024 * 1024);
        });
        size_t piece = size ? 1 + data[0] % 64 : 1;
        for (size_t i = 0; i < size; i += piece) reader.feed(input.substr(i, piece));
        reader.finish();
        streamed_ok = true;
    } catch (const XmlError&) {
    }
    try {
        Document doc(input);
        walk(doc.root(), 1);
        (void)text(doc.root(), 1024);
        Multistatus ms = parse_multistatus(doc);
        for (const Response& r : ms.responses) {
            for (const PropStat& ps : r.propstats) (void)text(ps.prop);
            if (const Element* etag = r.find_prop(kDav, "getetag")) (void)text(etag);
            if (const Element* data = r.find_prop(kCalDav, "calendar-data")) (void)text(data, 1024 * 1024);
            if (const Element* topic = r.find_prop(kPush, "topic")) (void)text(topic);
            if (const Element* topic = r.find_prop(kPushLegacy, "topic")) (void)text(topic);
            (void)r.find_prop(kCalServer, "getctag");
            (void)text(r.error);
            whole_hrefs.push_back(r.href);
        }
        whole_ok = true;
    } catch (const XmlError&) {
    }
    if (whole_ok && streamed_ok && whole_hrefs != streamed_hrefs) abort();
    return 0;
}
