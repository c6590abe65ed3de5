#include "dav/multistatus_reader.hpp"

#include <cstring>

#include "core/log.hpp"

namespace davsyncd::xml {
namespace {

// Same as Document's own limit, so that a child refused here would have
// been refused as part of a whole document too.
constexpr int kMaxDepth = 64;
// A root start tag declares a few namespaces; kilobytes of it are hostile.
constexpr size_t kMaxRootTag = 64u << 10;
// Consumed bytes are dropped from the front of the buffer once this many
// have gathered (fewer moves than dropping after every token).
constexpr size_t kCompactAfter = 256u << 10;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool all_space(std::string_view s) {
    for (char c : s)
        if (!is_space(c)) return false;
    return true;
}

}  // namespace

MultistatusReader::MultistatusReader(OnResponse on_response, StreamLimits limits)
    : on_response_(std::move(on_response)), limits_(limits) {}

void MultistatusReader::fail(const std::string& why) {
    state_ = State::failed;
    std::string().swap(buf_);
    throw XmlError(why);
}

void MultistatusReader::feed(std::string_view bytes) {
    if (state_ == State::failed) throw XmlError("XML stream already refused");
    try {
        buf_.append(bytes);
        while (step()) {
        }
        // What is kept: the child being read, else the token being read.
        size_t keep_from = child_start_ != std::string::npos ? child_start_ : in_token_ ? tok_ : pos_;
        if (buf_.size() - keep_from > limits_.max_element_bytes)
            fail(cat("XML document refused: an element larger than ", limits_.max_element_bytes, " bytes"));
        compact();
    } catch (...) {
        state_ = State::failed;
        throw;
    }
}

void MultistatusReader::finish() {
    if (state_ == State::failed) throw XmlError("XML stream already refused");
    if (state_ != State::after_root || in_token_) fail("malformed XML: the multistatus ended before its root element was closed");
}

void MultistatusReader::compact() {
    size_t keep_from = child_start_ != std::string::npos ? child_start_ : in_token_ ? tok_ : pos_;
    if (keep_from < kCompactAfter) return;
    buf_.erase(0, keep_from);
    pos_ -= keep_from;
    resume_ -= std::min(resume_, keep_from);
    if (in_token_) tok_ -= keep_from;
    if (child_start_ != std::string::npos) child_start_ -= keep_from;
}

bool MultistatusReader::step() {
    if (state_ == State::failed) return false;
    if (!in_token_) {
        if (state_ == State::prolog && pos_ == 0) {  // a byte order mark, maybe not all in yet
            constexpr std::string_view kBom = "\xEF\xBB\xBF";
            if (buf_.size() < kBom.size() && kBom.starts_with(buf_)) return false;
            if (std::string_view(buf_).starts_with(kBom)) pos_ = kBom.size();
        }
        size_t lt = buf_.find('<', pos_);
        size_t text_end = lt == std::string::npos ? buf_.size() : lt;
        // Between the root's children text is ignored (and dropped); outside
        // the root only white space may stand.
        if (state_ != State::content && !all_space(std::string_view(buf_).substr(pos_, text_end - pos_)))
            fail("malformed XML: text outside the root element");
        pos_ = text_end;
        if (lt == std::string::npos) return false;
        in_token_ = true;
        tok_ = resume_ = lt;
        quote_ = 0;
    }
    std::string_view b(buf_);
    if (b.size() - tok_ < 2) return false;
    auto end_of = [&](std::string_view terminator, size_t skip) -> size_t {
        size_t from = std::max(resume_, tok_ + skip);
        size_t at = b.find(terminator, from);
        if (at == std::string_view::npos) {
            resume_ = b.size() >= terminator.size() ? std::max(from, b.size() - terminator.size() + 1) : from;
            return std::string_view::npos;
        }
        return at + terminator.size();
    };
    size_t end = std::string_view::npos;
    char kind = b[tok_ + 1];
    if (kind == '?') {
        end = end_of("?>", 2);
    } else if (kind == '!') {
        std::string_view head = b.substr(tok_, 9);
        if (head.starts_with("<!--")) {
            end = end_of("-->", 4);
        } else if (head.starts_with("<![CDATA[")) {
            if (state_ != State::content) fail("malformed XML: CDATA outside the root element");
            end = end_of("]]>", 9);
        } else if (std::string_view("<!--").starts_with(head) || std::string_view("<![CDATA[").starts_with(head)) {
            return false;  // too few bytes yet to tell
        } else {
            fail("XML document refused: DOCTYPE and other declarations are not accepted");
        }
    } else if (kind == '/') {
        end = end_of(">", 2);
        if (end != std::string_view::npos) {
            pos_ = end;
            in_token_ = false;
            on_end_tag();
            return true;
        }
    } else {
        // A start tag: '>' ends it unless inside a quoted attribute value.
        size_t i = std::max(resume_, tok_ + 1);
        while (i < b.size()) {
            if (quote_) {
                size_t q = b.find(quote_, i);
                if (q == std::string_view::npos) {
                    i = b.size();
                    break;
                }
                quote_ = 0;
                i = q + 1;
                continue;
            }
            size_t at = b.find_first_of("\"'>", i);
            if (at == std::string_view::npos) {
                i = b.size();
                break;
            }
            if (b[at] == '>') {
                end = at + 1;
                break;
            }
            quote_ = b[at];
            i = at + 1;
        }
        if (end == std::string_view::npos) {
            resume_ = i;
            if (state_ == State::prolog && b.size() - tok_ > kMaxRootTag) fail("XML document refused: a root start tag of over 64 KiB");
            return false;
        }
        bool self_closing = end - tok_ >= 3 && b[end - 2] == '/';
        pos_ = end;
        in_token_ = false;
        on_start_tag(end, self_closing);
        return true;
    }
    if (end == std::string_view::npos) return false;
    // A comment, a processing instruction or CDATA: part of a child when
    // inside one, otherwise nothing.
    pos_ = end;
    in_token_ = false;
    return true;
}

void MultistatusReader::on_start_tag(size_t end, bool self_closing) {
    if (state_ == State::after_root) fail("malformed XML: a second root element");
    if (state_ == State::prolog) {
        root_start_ = buf_.substr(tok_, end - tok_);
        size_t name_end = root_start_.find_first_of(" \t\r\n/>", 1);
        std::string name = root_start_.substr(1, name_end - 1);
        if (self_closing) {
            // An empty multistatus: still checked to be one.
            Document doc(root_start_, limits_.per_element);
            parse_multistatus(doc);
            state_ = State::after_root;
            return;
        }
        root_end_ = cat("</", name, ">");
        // Not a multistatus (an HTML error page, another root) is refused
        // now, before anything of it is read.
        Document doc(root_start_ + root_end_, limits_.per_element);
        parse_multistatus(doc);
        state_ = State::content;
        depth_ = 1;
        return;
    }
    if (depth_ == 1) child_start_ = tok_;
    if (self_closing) {
        if (depth_ == 1) emit_child(end);
        return;
    }
    if (++depth_ > kMaxDepth) fail(cat("XML document refused: nested deeper than ", kMaxDepth, " levels"));
}

void MultistatusReader::on_end_tag() {
    if (state_ != State::content) fail("malformed XML: an end tag outside the root element");
    --depth_;
    if (depth_ == 0) {
        state_ = State::after_root;
        return;
    }
    if (depth_ == 1) emit_child(pos_);
}

void MultistatusReader::emit_child(size_t end) {
    std::string text;
    text.reserve(root_start_.size() + (end - child_start_) + root_end_.size());
    text.append(root_start_).append(buf_, child_start_, end - child_start_).append(root_end_);
    child_start_ = std::string::npos;
    Document doc(text, limits_.per_element);
    std::string().swap(text);
    auto ms = parse_multistatus(doc);
    if (ms.sync_token) sync_token_ = std::move(ms.sync_token);
    for (const auto& r : ms.responses) {
        if (++responses_ > limits_.max_responses)
            fail(cat("XML document refused: more than ", limits_.max_responses, " responses in one multistatus"));
        on_response_(r);
    }
}

}  // namespace davsyncd::xml
