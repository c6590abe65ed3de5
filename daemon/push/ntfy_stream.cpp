#include "push/ntfy_stream.hpp"

#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/log.hpp"

namespace davsyncd::push {
namespace {

int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

std::string string_field(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return {};
    return it->get<std::string>();
}

}  // namespace

std::vector<std::uint8_t> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0) throw std::invalid_argument("base64: length is not a multiple of 4");
    std::size_t pad = 0;
    while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') ++pad;
    text.remove_suffix(pad);
    std::vector<std::uint8_t> out;
    out.reserve(text.size() * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : text) {
        int v = b64_value(c);
        if (v < 0) throw std::invalid_argument("base64: invalid character");
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
        }
    }
    // Leftover bits must be zero (canonical encoding), and a single leftover
    // character cannot encode a byte.
    if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0) throw std::invalid_argument("base64: bad final quantum");
    return out;
}

NtfyEvent parse_ntfy_line(std::string_view line) {
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) throw std::invalid_argument("not a JSON object");
    NtfyEvent e;
    std::string event = string_field(j, "event");
    if (event.empty()) throw std::invalid_argument("no \"event\"");
    e.id = string_field(j, "id");
    e.topic = string_field(j, "topic");
    if (auto it = j.find("time"); it != j.end() && it->is_number_integer()) e.time = it->get<std::int64_t>();
    if (event == "open") e.kind = NtfyEvent::Kind::open;
    else if (event == "keepalive") e.kind = NtfyEvent::Kind::keepalive;
    else if (event != "message") return e;  // poll_request and whatever comes next: not for us
    if (event != "message") return e;

    e.kind = NtfyEvent::Kind::message;
    if (e.topic.empty()) throw std::invalid_argument("a message without a \"topic\"");
    if (e.id.empty()) throw std::invalid_argument("a message without an \"id\"");
    // A body too big for a message becomes an attachment to download: a
    // Web Push body (at most 4096 bytes) never does, so this is not ours.
    if (j.contains("attachment")) throw std::invalid_argument("a message with an attachment instead of a body");
    auto it = j.find("message");
    if (it == j.end() || !it->is_string()) throw std::invalid_argument("a message without a \"message\" body");
    const auto& text = it->get_ref<const std::string&>();
    std::string encoding = string_field(j, "encoding");
    if (encoding == "base64") {
        e.body = base64_decode(text);
    } else if (encoding.empty()) {
        e.body.assign(text.begin(), text.end());
    } else {
        throw std::invalid_argument(cat("unknown \"encoding\" ", encoding.substr(0, 20)));
    }
    return e;
}

NtfyStreamParser::Result NtfyStreamParser::feed(std::string_view bytes) {
    Result r;
    while (!bytes.empty()) {
        auto nl = bytes.find('\n');
        std::string_view part = bytes.substr(0, nl);
        bytes.remove_prefix(nl == std::string_view::npos ? bytes.size() : nl + 1);
        if (skipping_) {
            if (nl != std::string_view::npos) skipping_ = false;
            continue;
        }
        if (buffer_.size() + part.size() > kMaxLine) {
            r.errors.push_back(cat("a line longer than ", kMaxLine, " bytes"));
            buffer_.clear();
            skipping_ = nl == std::string_view::npos;
            continue;
        }
        buffer_.append(part);
        if (nl == std::string_view::npos) break;  // the rest comes with the next chunk
        std::string line = std::move(buffer_);
        buffer_.clear();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        try {
            r.events.push_back(parse_ntfy_line(line));
        } catch (const std::exception& e) {
            r.errors.push_back(e.what());
        }
    }
    return r;
}

}  // namespace davsyncd::push
