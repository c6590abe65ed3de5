#include "dav/xml.hpp"

#include <cstring>
#include <utility>

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

Document::Document(std::string_view text)
    : doc_(std::make_unique<tinyxml2::XMLDocument>(true, tinyxml2::PRESERVE_WHITESPACE)) {
    if (size_t nul = text.find('\0'); nul != std::string_view::npos)
        fail("NUL byte", line_of(text, nul));
    reject_doctype_in_prolog(text);

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

    // Depth check, iteratively (depth of the root is 1).
    std::vector<std::pair<const tinyxml2::XMLElement*, int>> stack{{root, 1}};
    while (!stack.empty()) {
        auto [e, depth] = stack.back();
        stack.pop_back();
        if (depth > kMaxDepth) fail(cat("elements nested deeper than ", kMaxDepth), e->GetLineNum());
        for (const auto* c = e->FirstChildElement(); c; c = c->NextSiblingElement())
            stack.emplace_back(c, depth + 1);
    }
}

const Element* Document::root() const { return doc_->RootElement(); }

// --- names ------------------------------------------------------------------

std::string_view namespace_of(const Element* e) {
    if (!e) return {};
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

std::optional<QName> error_condition(std::string_view body) {
    try {
        Document doc(body);
        const Element* root = doc.root();
        if (!is(root, kDav, "error")) return std::nullopt;
        const Element* first = root->FirstChildElement();
        if (!first) return std::nullopt;
        return QName{std::string(namespace_of(first)), std::string(local_name(first))};
    } catch (const XmlError&) {
        return std::nullopt;
    }
}

// First version: only SabreDAV's s:message (the full reader comes with the
// interoperability work).
std::string server_reason(std::string_view, std::string_view body) {
    try {
        Document doc(body);
        const Element* root = doc.root();
        if (!is(root, kDav, "error")) return {};
        for (const Element* e = root->FirstChildElement(); e; e = e->NextSiblingElement())
            if (is(e, "http://sabredav.org/ns", "message")) return text(e, 4096).substr(0, 200);
    } catch (const XmlError&) {
    }
    return {};
}

}  // namespace davsyncd::xml
