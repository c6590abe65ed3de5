#include "dav/xml.hpp"

#include <cstring>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/log.hpp"

namespace davsyncd::xml {

namespace {

constexpr int kMaxDepth = 64;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

bool starts_with_icase(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
        char a = s[i], b = prefix[i];
        if (a >= 'a' && a <= 'z') a = static_cast<char>(a - 'a' + 'A');
        if (b >= 'a' && b <= 'z') b = static_cast<char>(b - 'a' + 'A');
        if (a != b) return false;
    }
    return true;
}

int line_of(std::string_view text, size_t pos) {
    int line = 1;
    for (size_t i = 0; i < pos && i < text.size(); ++i)
        if (text[i] == '\n') ++line;
    return line;
}

[[noreturn]] void fail(std::string_view reason, int line) {
    throw XmlError(cat("malformed XML: ", reason, " at line ", line));
}

// Scans the prolog (everything before the root element) for a DOCTYPE
// declaration: BOM, whitespace, processing instructions / XML declaration and
// comments are skipped; the scan stops at the first other markup or text.
void reject_doctype_in_prolog(std::string_view text) {
    size_t i = 0;
    if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;
    while (i < text.size()) {
        if (is_space(text[i])) {
            ++i;
            continue;
        }
        std::string_view rest = text.substr(i);
        if (rest.substr(0, 2) == "<?") {
            size_t end = rest.find("?>", 2);
            if (end == std::string_view::npos) return;  // the parser reports it
            i += end + 2;
        } else if (rest.substr(0, 4) == "<!--") {
            size_t end = rest.find("-->", 4);
            if (end == std::string_view::npos) return;
            i += end + 3;
        } else if (starts_with_icase(rest, "<!DOCTYPE")) {
            fail("DOCTYPE declarations are not allowed", line_of(text, i));
        } else {
            return;
        }
    }
}

// Counts what tinyxml2 would build from `text` without building any of it,
// and refuses a document past `limits` or nested deeper than kMaxDepth.
// The counts are upper bounds for anything tinyxml2 accepts: every node
// starts at a '<' or is a text run between two tags, and every attribute
// needs a '=' outside quoted values. One pass, no allocation.
void check_limits(std::string_view text, const Limits& limits) {
    const size_t n = text.size();
    size_t nodes = 0;
    int depth = 0;
    auto refuse = [&](const std::string& why, size_t pos) {
        throw XmlError(cat("XML document refused: ", why, " (at line ", line_of(text, pos), ")"));
    };
    auto past = [&](size_t from, std::string_view end) {
        size_t e = text.find(end, from);
        return e == std::string_view::npos ? n : e + end.size();
    };
    for (size_t i = 0; i < n;) {
        size_t lt = text.find('<', i);
        if (lt != i) ++nodes;  // a text run (or trailing text, which the parser refuses)
        if (lt == std::string_view::npos) break;
        std::string_view rest = text.substr(lt);
        if (rest.starts_with("<!--")) {
            ++nodes;
            i = past(lt + 4, "-->");
        } else if (rest.starts_with("<![CDATA[")) {
            ++nodes;
            i = past(lt + 9, "]]>");
        } else if (rest.starts_with("<?")) {
            ++nodes;
            i = past(lt + 2, "?>");
        } else if (rest.starts_with("<!")) {
            ++nodes;
            i = past(lt + 2, ">");
        } else if (rest.starts_with("</")) {
            --depth;
            i = past(lt + 2, ">");
        } else {
            // A start tag; a quoted value may hold '>' and '='.
            ++nodes;
            size_t attributes = 0;
            char quote = 0;
            size_t j = lt + 1;
            for (; j < n; ++j) {
                char c = text[j];
                if (quote) {
                    if (c == quote) quote = 0;
                } else if (c == '"' || c == '\'') {
                    quote = c;
                } else if (c == '=') {
                    ++attributes;
                } else if (c == '>') {
                    break;
                }
            }
            bool empty_element = j < n && text[j - 1] == '/';
            if (attributes > limits.max_attributes_per_element)
                refuse(cat("an element with more than ", limits.max_attributes_per_element, " attributes"), lt);
            nodes += attributes;
            if (!empty_element && ++depth > kMaxDepth) fail(cat("elements nested deeper than ", kMaxDepth), line_of(text, lt));
            i = j < n ? j + 1 : n;
        }
        if (nodes > limits.max_nodes)
            refuse(cat("more than ", limits.max_nodes, " nodes (elements, text runs and attributes)"), lt);
    }
}

// Split "D:href" into prefix and local name. has_prefix distinguishes
// "href" from ":href" (an empty, never declared prefix).
struct SplitName {
    std::string_view prefix;
    std::string_view local;
    bool has_prefix = false;
};

SplitName split_name(const Element* e) {
    const char* raw = e->Name();
    std::string_view name = raw ? std::string_view(raw) : std::string_view();
    size_t colon = name.find(':');
    if (colon == std::string_view::npos) return {{}, name, false};
    return {name.substr(0, colon), name.substr(colon + 1), true};
}

}  // namespace

// --- Document ---------------------------------------------------------------

Document::Document(std::string_view text, const Limits& limits)
    : doc_(std::make_unique<tinyxml2::XMLDocument>(true, tinyxml2::PRESERVE_WHITESPACE)) {
    if (size_t nul = text.find('\0'); nul != std::string_view::npos)
        fail("NUL byte", line_of(text, nul));
    reject_doctype_in_prolog(text);
    check_limits(text, limits);

    if (doc_->Parse(text.data(), text.size()) != tinyxml2::XML_SUCCESS)
        fail(doc_->ErrorName(), doc_->ErrorLineNum());

    // tinyxml2 is lenient at the top level: it accepts several root elements,
    // stray text and unknown "<!...>" markup there. Allow exactly one element
    // plus comments, declarations and processing instructions.
    const tinyxml2::XMLElement* root = nullptr;
    for (const tinyxml2::XMLNode* n = doc_->FirstChild(); n; n = n->NextSibling()) {
        if (const auto* unknown = n->ToUnknown()) {
            const char* v = unknown->Value();
            if (v && starts_with_icase(v, "DOCTYPE"))
                fail("DOCTYPE declarations are not allowed", n->GetLineNum());
            fail("unexpected markup outside the root element", n->GetLineNum());
        }
        if (n->ToText()) fail("text outside the root element", n->GetLineNum());
        if (const auto* e = n->ToElement()) {
            if (root) fail("more than one root element", n->GetLineNum());
            root = e;
        }
    }
    if (!root) fail("no root element", 1);
    resolve_namespaces();
}

// One walk in document order with the declarations in scope: each element
// and attribute is looked at once, and each element keeps its namespace URI
// in tinyxml2's user-data slot. Looking up the ancestors' attributes on
// every call instead costs depth x attributes per element, which a hostile
// document makes quadratic.
void Document::resolve_namespaces() {
    static constexpr const char* kNoNamespace = "";
    static constexpr const char* kXmlNamespace = "http://www.w3.org/XML/1998/namespace";
    std::vector<const char*> defaults;                                       // xmlns="..."
    std::unordered_map<std::string_view, std::vector<const char*>> prefixed;  // xmlns:p="..."
    struct Declared {
        bool is_default;
        std::string_view prefix;
    };
    std::vector<Declared> declared;   // in scope, innermost last
    std::vector<size_t> marks;        // declared.size() on entering each open element

    auto leave = [&] {
        for (size_t k = declared.size(); k > marks.back(); --k) {
            const Declared& d = declared[k - 1];
            if (d.is_default) defaults.pop_back();
            else prefixed[d.prefix].pop_back();
        }
        declared.resize(marks.back());
        marks.pop_back();
    };

    tinyxml2::XMLElement* e = doc_->RootElement();
    int depth = 1;
    while (e) {
        if (depth > kMaxDepth) fail(cat("elements nested deeper than ", kMaxDepth), e->GetLineNum());
        marks.push_back(declared.size());
        for (const tinyxml2::XMLAttribute* a = e->FirstAttribute(); a; a = a->Next()) {
            ++namespace_steps_;
            std::string_view name = a->Name();
            if (name == "xmlns") {
                defaults.push_back(a->Value());
                declared.push_back({true, {}});
            } else if (name.starts_with("xmlns:")) {
                std::string_view prefix = name.substr(6);
                prefixed[prefix].push_back(a->Value());
                declared.push_back({false, prefix});
            }
        }
        ++namespace_steps_;
        SplitName name = split_name(e);
        const char* ns = kNoNamespace;
        if (name.has_prefix && name.prefix == "xml") {
            ns = kXmlNamespace;
        } else if (!name.has_prefix) {
            if (!defaults.empty()) ns = defaults.back();
        } else if (auto it = prefixed.find(name.prefix); it != prefixed.end() && !it->second.empty()) {
            ns = it->second.back();
        }
        e->SetUserData(const_cast<char*>(ns));  // read back as const char* only

        if (tinyxml2::XMLElement* c = e->FirstChildElement()) {
            e = c;
            ++depth;
            continue;
        }
        while (e) {
            leave();
            if (tinyxml2::XMLElement* sibling = e->NextSiblingElement()) {
                e = sibling;
                break;
            }
            tinyxml2::XMLNode* parent = e->Parent();
            e = parent ? parent->ToElement() : nullptr;
            --depth;
        }
    }
}

const Element* Document::root() const { return doc_->RootElement(); }

// --- names ------------------------------------------------------------------

std::string_view namespace_of(const Element* e) {
    if (!e) return {};
    if (const void* resolved = e->GetUserData()) return static_cast<const char*>(resolved);
    // An element of a tree not built by Document: look it up the old way.
    SplitName name = split_name(e);
    if (name.has_prefix && name.prefix == "xml") return "http://www.w3.org/XML/1998/namespace";
    // Runs for every element of a 10 000-item multistatus: short prefixes
    // stay in the string's inline buffer, so this does not allocate.
    std::string attr = "xmlns";
    if (name.has_prefix) {
        attr += ':';
        attr += name.prefix;
    }
    for (const tinyxml2::XMLNode* n = e; n; n = n->Parent()) {
        const Element* el = n->ToElement();
        if (!el) break;  // reached the document
        if (const char* v = el->Attribute(attr.c_str())) return v;
    }
    return {};
}

std::string_view local_name(const Element* e) {
    if (!e) return {};
    return split_name(e).local;
}

bool is(const Element* e, std::string_view ns, std::string_view local) {
    return e && local_name(e) == local && namespace_of(e) == ns;
}

bool is_push(const Element* e, std::string_view local) {
    if (!e || local_name(e) != local) return false;
    std::string_view ns = namespace_of(e);
    return ns == kPush || ns == kPushLegacy;
}

const Element* child(const Element* parent, std::string_view ns, std::string_view local) {
    if (!parent) return nullptr;
    for (const Element* c = parent->FirstChildElement(); c; c = c->NextSiblingElement())
        if (is(c, ns, local)) return c;
    return nullptr;
}

std::vector<const Element*> children(const Element* parent, std::string_view ns, std::string_view local) {
    std::vector<const Element*> out;
    if (!parent) return out;
    for (const Element* c = parent->FirstChildElement(); c; c = c->NextSiblingElement())
        if (is(c, ns, local)) out.push_back(c);
    return out;
}

const Element* push_child(const Element* parent, std::string_view local) {
    if (!parent) return nullptr;
    for (const Element* c = parent->FirstChildElement(); c; c = c->NextSiblingElement())
        if (is_push(c, local)) return c;
    return nullptr;
}

std::vector<const Element*> elements(const Element* parent) {
    std::vector<const Element*> out;
    if (!parent) return out;
    for (const Element* c = parent->FirstChildElement(); c; c = c->NextSiblingElement()) out.push_back(c);
    return out;
}

// --- text -------------------------------------------------------------------

std::string text(const Element* e, size_t max_bytes) {
    if (!e) return {};
    // Document order walk over all descendants, without recursion. The whole
    // text is bounded by the document, which is already in memory; the limit
    // applies to the trimmed result.
    std::string out;
    const tinyxml2::XMLNode* n = e->FirstChild();
    while (n) {
        if (const auto* t = n->ToText()) {
            if (const char* v = t->Value()) out += v;
        }
        if (n->ToElement() && n->FirstChild()) {
            n = n->FirstChild();
            continue;
        }
        while (n && n != e && !n->NextSibling()) n = n->Parent();
        if (!n || n == e) break;
        n = n->NextSibling();
    }
    std::string_view trimmed = trim(out);
    if (trimmed.size() > max_bytes)
        throw XmlError(cat("text of <", e->Name(), "> is longer than ", max_bytes, " bytes"));
    if (trimmed.size() == out.size()) return out;
    return std::string(trimmed);
}

std::string escape(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&apos;"; break;
        default: out += c;
        }
    }
    return out;
}

// --- multistatus ------------------------------------------------------------

const Element* Response::find_prop(std::string_view ns, std::string_view local) const {
    for (const PropStat& ps : propstats) {
        if (ps.status < 200 || ps.status > 299 || !ps.prop) continue;
        if (const Element* p = child(ps.prop, ns, local)) return p;
    }
    return nullptr;
}

int parse_status_line(std::string_view line) {
    line = trim(line);
    if (line.substr(0, 5) != "HTTP/") return 0;
    size_t sp = line.find_first_of(" \t");
    if (sp == std::string_view::npos) return 0;
    std::string_view rest = line.substr(sp);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    if (rest.size() < 3) return 0;
    int code = 0;
    for (size_t i = 0; i < 3; ++i) {
        if (rest[i] < '0' || rest[i] > '9') return 0;
        code = code * 10 + (rest[i] - '0');
    }
    if (rest.size() > 3 && rest[3] != ' ' && rest[3] != '\t') return 0;
    if (code < 100 || code > 599) return 0;
    return code;
}

Multistatus parse_multistatus(const Document& doc) {
    const Element* root = doc.root();
    if (!root) throw XmlError("expected DAV:multistatus, got an empty document");
    if (!is(root, kDav, "multistatus"))
        throw XmlError(cat("expected DAV:multistatus, got {", namespace_of(root), "}", local_name(root)));

    Multistatus ms;
    for (const Element* r : children(root, kDav, "response")) {
        const Element* href = child(r, kDav, "href");
        if (!href) continue;
        Response resp;
        resp.href = text(href);
        if (const Element* st = child(r, kDav, "status")) resp.status = parse_status_line(text(st));
        for (const Element* ps : children(r, kDav, "propstat")) {
            PropStat p;
            if (const Element* st = child(ps, kDav, "status")) p.status = parse_status_line(text(st));
            p.prop = child(ps, kDav, "prop");
            resp.propstats.push_back(p);
        }
        resp.error = child(r, kDav, "error");
        ms.responses.push_back(std::move(resp));
    }
    if (const Element* token = child(root, kDav, "sync-token")) ms.sync_token = text(token);
    return ms;
}

// --- refusals ---------------------------------------------------------------

namespace {

bool is_diagnostic(std::string_view ns) { return ns == kSabre || ns == kOwncloud || ns == "o:"; }

void add_conditions(const Element* error, std::vector<QName>& out) {
    for (const Element* c = error->FirstChildElement(); c; c = c->NextSiblingElement()) {
        std::string_view ns = namespace_of(c);
        if (!is_diagnostic(ns)) out.push_back({std::string(ns), std::string(local_name(c))});
    }
}

}  // namespace

std::vector<QName> error_conditions(std::string_view body) {
    std::vector<QName> out;
    try {
        Document doc(body);
        const Element* root = doc.root();
        if (is(root, kDav, "error")) {
            add_conditions(root, out);
        } else if (is(root, kDav, "multistatus")) {
            for (const Element* r : children(root, kDav, "response"))
                if (const Element* e = child(r, kDav, "error")) add_conditions(e, out);
        }
    } catch (...) {
        // Not XML, or no memory for it: then it names no condition.
        out.clear();
    }
    return out;
}

bool has_precondition(std::string_view body, std::string_view ns, std::string_view local) {
    for (const QName& q : error_conditions(body))
        if (q.ns == ns && q.local == local) return true;
    return false;
}

std::optional<QName> error_condition(std::string_view body) {
    auto all = error_conditions(body);
    if (all.empty()) return std::nullopt;
    return std::move(all.front());
}

// --- server reasons -----------------------------------------------------------

namespace {

constexpr size_t kReasonBytes = 200;
// An error page says what matters near its top; a huge body is not read to the end.
constexpr size_t kScanBytes = 64 * 1024;
constexpr std::string_view kEllipsis = "\xE2\x80\xA6";
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lower_ascii(c);
    return out;
}

// "Text/HTML; charset=utf-8" -> "text/html".
std::string media_type(std::string_view content_type) {
    return lower(trim(content_type.substr(0, content_type.find(';'))));
}

// Length of the valid UTF-8 sequence at s[i] and its code point; length 0
// when the bytes there are not valid UTF-8 (overlong, surrogate, truncated).
struct CodePoint {
    size_t length = 0;
    char32_t value = 0;
};

CodePoint decode_utf8(std::string_view s, size_t i) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
    unsigned char c = b(0);
    if (c < 0x80) return {1, c};
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (n == 0 || c > 0xF4 || i + n > s.size()) return {};
    char32_t v = c & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) {
        if ((b(k) & 0xC0) != 0x80) return {};
        v = (v << 6) | (b(k) & 0x3F);
    }
    bool overlong = (n == 3 && v < 0x800) || (n == 4 && v < 0x10000);
    if (overlong || (v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF) return {};
    return {n, v};
}

void append_utf8(std::string& out, char32_t v) {
    if (v < 0x80) {
        out += static_cast<char>(v);
    } else if (v < 0x800) {
        out += static_cast<char>(0xC0 | (v >> 6));
        out += static_cast<char>(0x80 | (v & 0x3F));
    } else if (v < 0x10000) {
        out += static_cast<char>(0xE0 | (v >> 12));
        out += static_cast<char>(0x80 | ((v >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (v & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (v >> 18));
        out += static_cast<char>(0x80 | ((v >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((v >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (v & 0x3F));
    }
}

bool is_blank(char32_t v) {
    return v == ' ' || (v >= 0x09 && v <= 0x0D) || v == 0xA0 || v == 0x2028 || v == 0x2029;
}

// Characters that would make a log line or a D-Bus string lie about what it
// says: C0/C1 controls, and the bidirectional overrides and isolates.
bool is_control(char32_t v) {
    return v < 0x20 || (v >= 0x7F && v <= 0x9F) || (v >= 0x202A && v <= 0x202E) || (v >= 0x2066 && v <= 0x2069);
}

// One line of at most kReasonBytes: runs of white space become one space,
// controls go, invalid UTF-8 becomes U+FFFD; a longer text is cut on a
// character boundary and ends in "…".
std::string one_line(std::string_view s) {
    std::string out;
    bool space = false;
    for (size_t i = 0; i < s.size() && out.size() <= kReasonBytes;) {
        CodePoint cp = decode_utf8(s, i);
        i += cp.length ? cp.length : 1;
        if (cp.length && is_blank(cp.value)) {
            space = !out.empty();
            continue;
        }
        if (cp.length && is_control(cp.value)) continue;
        if (space) out += ' ';
        space = false;
        if (cp.length) append_utf8(out, cp.value);
        else out += kReplacement;
    }
    if (out.size() <= kReasonBytes) return out;
    size_t cut = kReasonBytes - kEllipsis.size();
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += kEllipsis;
    return out;
}

// Text, not bytes of an image or an archive: valid UTF-8 (a sequence cut by
// the scan limit at the very end is fine) and no NUL.
bool looks_like_text(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        if (s[i] == '\0') return false;
        CodePoint cp = decode_utf8(s, i);
        if (!cp.length) return s.size() - i < 4 && static_cast<unsigned char>(s[i]) >= 0xC2;
        i += cp.length;
    }
    return true;
}

bool looks_like_html(std::string_view body) {
    std::string head = lower(body.substr(0, 1024));
    return head.find("<html") != std::string::npos || head.find("<!doctype html") != std::string::npos;
}

// --- HTML: just enough to find what a person would read first ---

size_t find_icase(std::string_view hay, std::string_view needle, size_t from = 0) {
    if (needle.empty() || hay.size() < needle.size()) return std::string_view::npos;
    for (size_t i = from; i + needle.size() <= hay.size(); ++i) {
        size_t k = 0;
        while (k < needle.size() && lower_ascii(hay[i + k]) == needle[k]) ++k;
        if (k == needle.size()) return i;
    }
    return std::string_view::npos;
}

// Whether an opening tag named `name` (lower case) starts at html[i].
bool tag_at(std::string_view html, size_t i, std::string_view name) {
    if (html.substr(i, 1) != "<" || find_icase(html.substr(i + 1, name.size()), name) != 0) return false;
    size_t after = i + 1 + name.size();
    return after < html.size() && (html[after] == '>' || html[after] == '/' || is_space(html[after]));
}

// &amp; &lt; &gt; &quot; &apos; &nbsp; and numeric references; others stay as written.
std::string decode_entities(std::string_view s) {
    static constexpr std::pair<std::string_view, std::string_view> kNamed[] = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", "\xC2\xA0"}};
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        size_t semi = s[i] == '&' ? s.find(';', i) : std::string_view::npos;
        if (semi == std::string_view::npos || semi - i > 10) {
            out += s[i];
            continue;
        }
        std::string_view name = s.substr(i + 1, semi - i - 1);
        bool done = false;
        if (name.size() > 1 && name[0] == '#') {
            bool hex = name[1] == 'x' || name[1] == 'X';
            std::string_view digits = name.substr(hex ? 2 : 1);
            char32_t v = 0;
            bool ok = !digits.empty();
            for (char c : digits) {
                int d = (c >= '0' && c <= '9') ? c - '0'
                        : hex && lower_ascii(c) >= 'a' && lower_ascii(c) <= 'f' ? lower_ascii(c) - 'a' + 10
                                                                                : -1;
                if (d < 0 || v > 0x10FFFF) ok = false;
                if (!ok) break;
                v = v * (hex ? 16 : 10) + static_cast<char32_t>(d);
            }
            if (ok) {
                if (v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) out += kReplacement;
                else append_utf8(out, v);
                done = true;
            }
        } else {
            for (const auto& [n, text] : kNamed)
                if (name == n) {
                    out += text;
                    done = true;
                }
        }
        if (done) i = semi;
        else out += s[i];
    }
    return out;
}

// The text of an HTML fragment: tags become spaces; comments, scripts and
// styles are dropped.
std::string html_text(std::string_view html) {
    std::string out;
    for (size_t i = 0; i < html.size();) {
        if (html[i] != '<') {
            out += html[i++];
            continue;
        }
        size_t end;
        if (html.substr(i, 4) == "<!--") {
            end = html.find("-->", i + 4);
            end = end == std::string_view::npos ? html.size() : end + 3;
        } else if (tag_at(html, i, "script") || tag_at(html, i, "style")) {
            std::string close = tag_at(html, i, "script") ? "</script" : "</style";
            end = find_icase(html, close, i);
            end = end == std::string_view::npos ? html.size() : html.find('>', end);
            end = end == std::string_view::npos ? html.size() : end + 1;
        } else {
            end = html.find('>', i);
            end = end == std::string_view::npos ? html.size() : end + 1;
        }
        out += ' ';
        i = end;
    }
    return one_line(decode_entities(out));
}

// The text of the first <name> element, "" when there is none.
std::string html_element(std::string_view html, std::string_view name) {
    for (size_t i = find_icase(html, cat("<", name)); i != std::string_view::npos;
         i = find_icase(html, cat("<", name), i + 1)) {
        if (!tag_at(html, i, name)) continue;
        size_t open_end = html.find('>', i);
        if (open_end == std::string_view::npos) return {};
        size_t close = find_icase(html, cat("</", name), open_end);
        return html_text(html.substr(open_end + 1, close == std::string_view::npos ? std::string_view::npos
                                                                                   : close - open_end - 1));
    }
    return {};
}

// Error pages put the status in <title> and say it again, or say more, in
// <h1> (Apache: "404 Not Found" / "Not Found"): the longer one when one
// holds the other, both otherwise.
std::string html_reason(std::string_view html) {
    std::string title = html_element(html, "title");
    std::string h1 = html_element(html, "h1");
    if (title.empty() && h1.empty()) {
        size_t body = find_icase(html, "<body");
        return html_text(body == std::string_view::npos ? html : html.substr(body));
    }
    if (h1.empty() || title.find(h1) != std::string::npos) return title;
    if (title.empty() || h1.find(title) != std::string::npos) return h1;
    return one_line(cat(title, ": ", h1));
}

// --- XML refusals ---

std::string first_text(const Element* parent, std::string_view ns, std::string_view local) {
    for (const Element* e : children(parent, ns, local))
        if (std::string t = one_line(text(e)); !t.empty()) return t;
    return {};
}

std::string error_reason(const Element* error) {
    if (std::string m = first_text(error, kSabre, "message"); !m.empty()) return m;
    if (std::string m = first_text(error, "o:", "reason"); !m.empty()) return m;
    return first_text(error, kOwncloud, "reason");
}

std::string xml_reason(const Document& doc) {
    const Element* root = doc.root();
    if (is(root, kDav, "error")) return error_reason(root);
    if (!is(root, kDav, "multistatus")) return {};
    for (const Element* r : children(root, kDav, "response")) {
        if (std::string d = first_text(r, kDav, "responsedescription"); !d.empty()) return d;
        if (const Element* e = child(r, kDav, "error"))
            if (std::string m = error_reason(e); !m.empty()) return m;
    }
    return first_text(root, kDav, "responsedescription");
}

}  // namespace

std::string server_reason(std::string_view content_type, std::string_view body) {
    try {
        std::string type = media_type(content_type);
        std::string_view head = body.substr(0, kScanBytes);
        bool html = type == "text/html" || type == "application/xhtml+xml";
        if (html || (type != "text/plain" && looks_like_html(head))) return html_reason(head);
        if (type == "text/plain") return one_line(head);
        if (trim(head).substr(0, 1) == "<") {
            // Error bodies are small; a huge one is no reason worth parsing.
            if (body.size() > 16 * kScanBytes) return {};
            try {
                return xml_reason(Document(body));
            } catch (const XmlError&) {
                return {};
            }
        }
        // Xandikos sends its plain messages as application/octet-stream.
        if (looks_like_text(head)) return one_line(head);
    } catch (...) {
        // A reason is a nicety: without memory for it there is none.
    }
    return {};
}

}  // namespace davsyncd::xml
