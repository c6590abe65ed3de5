// Reads a DAV:multistatus as it arrives, one DAV:response at a time, so that
// a listing of 100 000 items never exists in memory as a whole.
//
// The byte stream is split at the root's children: a small scanner follows
// tags, comments, CDATA and processing instructions (nothing else of XML
// matters for finding where an element ends), and each complete child of
// the root is parsed alone with tinyxml2, wrapped in the root's own start
// tag so that every namespace declared there still applies. Memory is one
// child at a time, whatever the document's size.
//
// Hostile input: every child is bounded in bytes (and, when parsed, by the
// same xml::Limits as a whole document), nesting by the same depth as
// Document, the number of children by max_responses, and a DOCTYPE is
// refused as it is everywhere else (no entity expansion).
//
// Thread affinity: the caller's (it is fed from curl's write callback).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "dav/xml.hpp"

namespace davsyncd::xml {

struct StreamLimits {
    // One DAV:response as text: an item (16 MiB at most, see item_text) with
    // its escaping and properties.
    size_t max_element_bytes = 32u << 20;
    // Responses in one document: far past any real collection, short of
    // filling a disk with one answer.
    size_t max_responses = 2'000'000;
    Limits per_element{};
};

class MultistatusReader {
public:
    // Called once per DAV:response, in document order; the Response (and
    // the elements it points to) lives only during the call.
    using OnResponse = std::function<void(const Response&)>;

    explicit MultistatusReader(OnResponse on_response, StreamLimits limits = {});

    // Throws XmlError ("malformed XML: ...", "XML document refused: ...");
    // after a throw the reader takes nothing more.
    void feed(std::string_view bytes);
    // The stream ended: throws XmlError unless the document was complete.
    void finish();

    // The top-level DAV:sync-token (RFC 6578), once it has been read.
    const std::optional<std::string>& sync_token() const { return sync_token_; }
    size_t responses() const { return responses_; }

private:
    enum class State { prolog, content, after_root, failed };
    // Scans tokens from pos_; false when the buffer ends inside one.
    bool step();
    // The token starting at tok_ ('<' at buf_[tok_]) ends before `end`.
    void on_start_tag(size_t end, bool self_closing);
    void on_end_tag();
    void emit_child(size_t end);
    void compact();
    [[noreturn]] void fail(const std::string& why);

    OnResponse on_response_;
    StreamLimits limits_;
    State state_ = State::prolog;
    std::string buf_;
    size_t pos_ = 0;           // scanning position (a token boundary, or inside the token at tok_)
    size_t resume_ = 0;        // where the search for the current token's end goes on
    char quote_ = 0;           // inside a tag: the open attribute quote, if any
    bool in_token_ = false;
    size_t tok_ = 0;           // start of the token being scanned
    size_t child_start_ = std::string::npos;
    int depth_ = 0;            // 0: outside the root; 1: directly inside it
    std::string root_start_;   // the root's start tag, verbatim
    std::string root_end_;     // "</prefix:multistatus>"
    std::optional<std::string> sync_token_;
    size_t responses_ = 0;
};

}  // namespace davsyncd::xml
