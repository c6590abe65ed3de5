// The ntfy topic of one account: the secret half of its push endpoint
// (https://<service>/<topic>?up=1). Anyone who knows it can send to us and
// read what the server sends, so it is random, kept in the account's state
// folder with mode 0600 (<state>/ntfy-topic.json, written atomically), and
// never logged.
//
// Any thread (plain file I/O); the daemon calls it on the main loop.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace davsyncd::push {

inline constexpr const char* kNtfyTopicFile = "ntfy-topic.json";

// "up" and 12 characters from [A-Za-z0-9] out of the system's CSPRNG
// (about 71 bits). ntfy charges the rate limits of a topic shaped like this
// (prefix "up", 14 characters) to its subscriber instead of to the
// publisher, the CalDAV server: that is what UnifiedPush topics look like.
std::string random_ntfy_topic();
bool valid_ntfy_topic(std::string_view topic);

// The topic for `origin` kept in `state_dir`: the stored one when it was
// made for that origin and is well-formed, else a new one that is saved
// first. Throws (fs::IoError, std::runtime_error) when a new topic cannot
// be saved: a topic that is not on disk would change at the next start
// and leave the server's subscriptions pointing nowhere.
std::string load_or_create_ntfy_topic(const std::filesystem::path& state_dir, const std::string& origin);

}  // namespace davsyncd::push
