// libFuzzer harness: arbitrary bytes through Document, parse_multistatus and
// every accessor a sync pass uses. Only XmlError may escape the parser;
// anything else (crash, sanitizer report, other exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

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
        }
    } catch (const XmlError&) {
    }
    return 0;
}
