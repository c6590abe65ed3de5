#include "sync/upload_failures.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/log.hpp"

namespace davsyncd::sync {
namespace {

constexpr int64_t kFirstBackoff = 30;     // seconds
constexpr int64_t kLongestBackoff = 3600;

int64_t unix_seconds(UploadFailures::Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace

UploadFailures UploadFailures::load(const std::filesystem::path& path) {
    UploadFailures out;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return out;
    try {
        auto j = nlohmann::json::parse(fs::read_file(path));
        for (const auto& [file, f] : j.at("failures").items()) {
            UploadFailure u;
            u.hash = f.at("hash").get<std::string>();
            u.status = f.at("status").get<long>();
            u.reason = f.value("reason", "");
            u.permanent = f.at("permanent").get<bool>();
            u.attempts = f.value("attempts", 0u);
            u.retry_at = f.value("retry_at", int64_t{0});
            out.by_file_[file] = std::move(u);
        }
    } catch (const std::exception& e) {
        log::warning(path.string(), ": unreadable (", e.what(), "); refused uploads will be tried once more");
        out.by_file_.clear();
    }
    out.on_disk_ = out.by_file_;
    return out;
}

void UploadFailures::save(const std::filesystem::path& path) {
    if (by_file_ == on_disk_) return;
    if (by_file_.empty()) {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    } else {
        nlohmann::json failures = nlohmann::json::object();
        for (const auto& [file, f] : by_file_)
            failures[file] = {{"hash", f.hash},         {"status", f.status},     {"reason", f.reason},
                              {"permanent", f.permanent}, {"attempts", f.attempts}, {"retry_at", f.retry_at}};
        if (path.has_parent_path()) fs::make_dirs(path.parent_path(), 0700);
        // Server strings may hold invalid UTF-8: replaced, never a failed save.
        fs::write_atomic(path,
                         nlohmann::json{{"failures", failures}}.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                         0600);
    }
    on_disk_ = by_file_;
}

bool UploadFailures::must_wait(const std::string& file, const std::string& hash, Clock::time_point now) const {
    const auto* f = find(file);
    if (!f || f->hash != hash) return false;  // a new version is always worth sending
    return f->permanent || unix_seconds(now) < f->retry_at;
}

void UploadFailures::failed_temporarily(const std::string& file, const std::string& hash, long status,
                                        std::string reason, Clock::time_point now) {
    auto& f = by_file_[file];
    unsigned attempts = f.hash == hash && !f.permanent ? f.attempts + 1 : 1;
    int64_t backoff = kFirstBackoff;
    for (unsigned i = 1; i < attempts && backoff < kLongestBackoff; ++i) backoff *= 2;
    f = UploadFailure{hash, status, std::move(reason), false, attempts,
                      unix_seconds(now) + std::min(backoff, kLongestBackoff)};
}

void UploadFailures::refused(const std::string& file, const std::string& hash, long status, std::string reason) {
    by_file_[file] = UploadFailure{hash, status, std::move(reason), true, 0, 0};
}

void UploadFailures::forget(const std::string& file) { by_file_.erase(file); }

const UploadFailure* UploadFailures::find(const std::string& file) const {
    auto it = by_file_.find(file);
    return it == by_file_.end() ? nullptr : &it->second;
}

unsigned UploadFailures::waiting_retry() const {
    return static_cast<unsigned>(std::count_if(by_file_.begin(), by_file_.end(), [](const auto& e) { return !e.second.permanent; }));
}

unsigned UploadFailures::refused_count() const {
    return static_cast<unsigned>(std::count_if(by_file_.begin(), by_file_.end(), [](const auto& e) { return e.second.permanent; }));
}

}  // namespace davsyncd::sync
