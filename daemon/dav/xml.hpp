// Namespace-aware reading and safe writing of WebDAV XML on top of tinyxml2.
//
// tinyxml2 knows nothing of namespaces: it hands us "D:href" or "href" with
// xmlns attributes somewhere up the tree. Servers use any prefix, or a default
// namespace, so every lookup here resolves the prefix first and compares
// (namespace URI, local name) pairs.
//
// Any thread; a Document is used by one thread at a time.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tinyxml2.h>

namespace davsyncd::xml {

inline constexpr std::string_view kDav = "DAV:";
inline constexpr std::string_view kCalDav = "urn:ietf:params:xml:ns:caldav";
inline constexpr std::string_view kCardDav = "urn:ietf:params:xml:ns:carddav";
inline constexpr std::string_view kCalServer = "http://calendarserver.org/ns/";
inline constexpr std::string_view kAppleIcal = "http://apple.com/ns/ical/";
inline constexpr std::string_view kPush = "https://bitfire.at/webdav-push";
inline constexpr std::string_view kPushLegacy = "DAV:Push";  // servers before late 2024

struct XmlError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

using Element = tinyxml2::XMLElement;

// What a document may hold before any of it is built in memory. A DOM node
// costs about 120 bytes (tinyxml2 9: an element 120, a text run 112, an
// attribute 80), 30 to 60 times the bytes of "<a/>" or "x<a/>", so a cap on
// the body alone does not bound the tree.
struct Limits {
    // Elements, text runs, comments and attributes, counted by a linear
    // scan before parsing. The largest answer measured here (an
    // addressbook-query over 50 000 contacts on Radicale 3.1.8, 27.4 MiB)
    // has 550 000 (350 000 elements, 200 000 text runs) and takes 64 MB
    // as a tree; this cap keeps a hostile tree under about 125 MB.
    size_t max_nodes = 1'000'000;
    // tinyxml2 checks each new attribute against all earlier ones of the
    // element: quadratic (200 000 attributes on one element take minutes).
    // WebDAV elements carry a few; a root declares up to about ten prefixes.
    size_t max_attributes_per_element = 128;
};

// A parsed document. Parsing rejects malformed XML, DOCTYPE declarations
// (entity expansion), nesting deeper than 64 levels, and documents past
// `limits` (before building anything). Namespaces are resolved once, in
// one pass, so that namespace_of() is constant time on any document.
class Document {
public:
    // Throws XmlError("malformed XML: <reason> at line N") or
    // XmlError("XML document refused: <which limit>").
    explicit Document(std::string_view text, const Limits& limits = {});
    const Element* root() const;
    // Work done resolving namespaces (one step per element and attribute),
    // for tests that prove it linear.
    size_t namespace_steps() const { return namespace_steps_; }
private:
    void resolve_namespaces();
    std::unique_ptr<tinyxml2::XMLDocument> doc_;
    size_t namespace_steps_ = 0;
};

// Namespace URI of an element ("" when none), resolved through xmlns
// attributes on it and its ancestors.
std::string_view namespace_of(const Element* e);  // points into the document
// Local name without prefix.
std::string_view local_name(const Element* e);
bool is(const Element* e, std::string_view ns, std::string_view local);
// Matches either push namespace (current or legacy).
bool is_push(const Element* e, std::string_view local);

// First / all direct children with that name. nullptr / empty when none.
const Element* child(const Element* parent, std::string_view ns, std::string_view local);
std::vector<const Element*> children(const Element* parent, std::string_view ns, std::string_view local);
const Element* push_child(const Element* parent, std::string_view local);  // either push namespace
// All direct child elements, any name.
std::vector<const Element*> elements(const Element* parent);

// Concatenated text content of the element and its descendants, whitespace
// trimmed at both ends. At most `max_bytes` (longer text throws XmlError).
std::string text(const Element* e, size_t max_bytes = 64 * 1024);

// Escapes &, <, >, " and ' for element text or attribute values.
std::string escape(std::string_view s);

// --- RFC 4918 multistatus -------------------------------------------------

struct PropStat {
    int status = 0;                  // HTTP status code of the propstat, 0 if missing/unparsable
    const Element* prop = nullptr;   // the DAV:prop element (may be nullptr)
};

struct Response {
    std::string href;                // as sent, percent-encoded, trimmed
    int status = 0;                  // response-level DAV:status, 0 when absent
    std::vector<PropStat> propstats;
    const Element* error = nullptr;  // DAV:error, when present

    // The property element (ns, local) from a 2xx propstat, or nullptr.
    const Element* find_prop(std::string_view ns, std::string_view local) const;
};

struct Multistatus {
    std::vector<Response> responses;
    std::optional<std::string> sync_token;  // top-level DAV:sync-token (RFC 6578)
};

// Parses a DAV:multistatus body. Elements point into `doc`, which must
// outlive the result. Throws XmlError when the root is not DAV:multistatus.
Multistatus parse_multistatus(const Document& doc);

// Status code from a "HTTP/1.1 404 Not Found" line, 0 when unparsable.
int parse_status_line(std::string_view line);

// --- refusals -------------------------------------------------------------

// Namespaces of elements that carry a server's diagnostics inside DAV:error,
// never a condition: SabreDAV's s:exception, s:message, s:sabredav-version;
// Nextcloud's o:retry and o:reason (declared as "o:" by its serializer).
inline constexpr std::string_view kSabre = "http://sabredav.org/ns";
inline constexpr std::string_view kOwncloud = "http://owncloud.org/ns";

struct QName {
    std::string ns;
    std::string local;
    bool operator==(const QName&) const = default;
};

// The pre- and postconditions (RFC 4918 §16) a refusal names, in document
// order: every child of a DAV:error root, or of the DAV:error in each
// response of a multistatus (Xandikos wraps its refusals so). Diagnostic
// elements are skipped: SabreDAV puts three of them before the condition.
// Empty when the body is no such XML. Never throws.
std::vector<QName> error_conditions(std::string_view body);
// Whether the body names that condition among all of them.
bool has_precondition(std::string_view body, std::string_view ns, std::string_view local);
// The first of error_conditions(), nullopt when there is none.
std::optional<QName> error_condition(std::string_view body);

// The server's human-readable reason for a refused request, shortened to one
// line of at most 200 bytes (cut on a character boundary, ending in "…"),
// without control characters, valid UTF-8: SabreDAV's s:message inside
// DAV:error, Xandikos' DAV:responsedescription, the text of a text/plain
// body, or the title/h1 (else the text) of an HTML page. "" when the body
// says nothing useful. Never throws.
std::string server_reason(std::string_view content_type, std::string_view body);

}  // namespace davsyncd::xml
