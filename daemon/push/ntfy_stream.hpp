// ntfy's JSON subscription stream (GET /<topic>[,<topic>...]/json): one JSON
// object per line, events "open", "keepalive" and "message" (docs.ntfy.sh,
// "Subscribe via API"). A UnifiedPush message whose body is not UTF-8 (an
// RFC 8291 ciphertext almost always is not) arrives base64-encoded with
// "encoding":"base64"; a text body arrives as it was.
//
// Pure parsing, no I/O; any thread (one parser per stream).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace davsyncd::push {

struct NtfyEvent {
    enum class Kind { open, keepalive, message, other };
    Kind kind = Kind::other;
    std::string id;                // the server's message id: what since= takes
    std::int64_t time = 0;         // Unix seconds
    std::string topic;             // one topic for a message; a list for open
    std::vector<std::uint8_t> body;  // message only, decoded
};

// One line of the stream. Throws std::invalid_argument naming what is wrong
// (not JSON, no event, a message without a topic or body, bad base64, an
// attachment instead of a body).
NtfyEvent parse_ntfy_line(std::string_view line);

// RFC 4648 §4 base64 with padding (what ntfy sends). Throws
// std::invalid_argument.
std::vector<std::uint8_t> base64_decode(std::string_view text);

// Splits the byte stream into lines and parses each one. A line longer than
// kMaxLine (a broken or hostile server) is dropped with an error, as is a
// line that does not parse; the stream goes on.
class NtfyStreamParser {
public:
    static constexpr std::size_t kMaxLine = 64 * 1024;

    struct Result {
        std::vector<NtfyEvent> events;
        std::vector<std::string> errors;
    };
    Result feed(std::string_view bytes);
    void reset() {
        buffer_.clear();
        skipping_ = false;
    }

private:
    std::string buffer_;
    bool skipping_ = false;  // inside an over-long line, until its end
};

}  // namespace davsyncd::push
