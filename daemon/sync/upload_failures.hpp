// Local changes the server did not take, remembered between syncs.
//
// A version the server refused (403 on a shared calendar, 415 for a file
// holding two UIDs, ...) is not sent again and again: it waits until the
// user changes the file. A temporary failure (5xx, 507) is retried with a
// backoff of its own, so that one item never holds up the collection, the
// pull, or the other collections of the account.
//
// Stored beside the collection's state as "<state file>.uploads" (JSON,
// 0600); absent when nothing failed, which is the normal case.
//
// Thread affinity: one thread at a time (the sync job owning it).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

namespace davsyncd::sync {

struct UploadFailure {
    std::string hash;         // content_hash() of the version sent; "" for a deletion
    long status = 0;          // the HTTP status the server answered
    std::string reason;       // the server's words, may be empty
    bool permanent = false;   // refused for this version: only a new version is sent again
    unsigned attempts = 0;    // temporary failures in a row
    int64_t retry_at = 0;     // unix seconds; a temporary failure waits until then
    friend bool operator==(const UploadFailure&, const UploadFailure&) = default;
};

class UploadFailures {
public:
    using Clock = std::chrono::system_clock;

    // A missing file is an empty record; an unreadable one is logged and
    // treated as empty (the worst outcome is one more attempt).
    static UploadFailures load(const std::filesystem::path& path);
    // Atomic, 0600, only when changed; the file is removed when empty.
    void save(const std::filesystem::path& path);

    // Whether the change of `file` to the version `hash` must wait: that very
    // version was refused, or its temporary backoff has not run out.
    bool must_wait(const std::string& file, const std::string& hash, Clock::time_point now) const;
    // Records a failure; the backoff doubles from 30 s up to 1 h per attempt.
    void failed_temporarily(const std::string& file, const std::string& hash, long status, std::string reason,
                            Clock::time_point now);
    void refused(const std::string& file, const std::string& hash, long status, std::string reason);
    void forget(const std::string& file);
    const UploadFailure* find(const std::string& file) const;

    // Drops every record whose file is not in `keep` (the change was undone,
    // uploaded, or resolved another way).
    template <typename Pred>
    void retain_if(Pred&& keep) {
        std::erase_if(by_file_, [&](const auto& entry) { return !keep(entry.first); });
    }

    bool empty() const { return by_file_.empty(); }
    unsigned waiting_retry() const;  // temporary failures
    unsigned refused_count() const;  // permanent refusals left in place

private:
    std::map<std::string, UploadFailure> by_file_;
    std::map<std::string, UploadFailure> on_disk_;
};

}  // namespace davsyncd::sync
