#include "push/ntfy_topic.hpp"

#include <stdexcept>

#include <nlohmann/json.hpp>
#include <openssl/rand.h>

#include "core/fs.hpp"
#include "core/log.hpp"

namespace davsyncd::push {
namespace {

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
constexpr std::size_t kRandomChars = 12;

}  // namespace

std::string random_ntfy_topic() {
    std::string topic = "up";
    while (topic.size() < 2 + kRandomChars) {
        unsigned char b[32];
        if (RAND_bytes(b, sizeof b) != 1) throw std::runtime_error("RAND_bytes failed");
        for (unsigned char c : b) {
            // 248 = 4 * 62: rejecting the rest keeps every character equally likely.
            if (c >= 248 || topic.size() == 2 + kRandomChars) continue;
            topic += kAlphabet[c % 62];
        }
    }
    return topic;
}

bool valid_ntfy_topic(std::string_view topic) {
    if (topic.size() != 2 + kRandomChars || !topic.starts_with("up")) return false;
    return topic.substr(2).find_first_not_of(kAlphabet) == std::string_view::npos;
}

std::string load_or_create_ntfy_topic(const std::filesystem::path& state_dir, const std::string& origin) {
    auto file = state_dir / kNtfyTopicFile;
    std::error_code ec;
    if (std::filesystem::exists(file, ec)) {
        try {
            auto j = nlohmann::json::parse(fs::read_file(file));
            std::string topic = j.value("topic", "");
            if (j.value("service", "") == origin && valid_ntfy_topic(topic)) return topic;
            if (j.value("service", "") != origin)
                log::info(file.string(), ": made for another push service; a new topic for ", origin);
            else
                log::warning(file.string(), ": no usable topic in it; making a new one");
        } catch (const std::exception& e) {
            log::warning(file.string(), ": unreadable (", e.what(), "); making a new topic");
        }
    }
    std::string topic = random_ntfy_topic();
    nlohmann::json j{{"service", origin}, {"topic", topic}};
    fs::make_dirs(state_dir, 0700);
    fs::write_atomic(file, j.dump(2) + "\n", 0600);
    return topic;
}

}  // namespace davsyncd::push
