#include "sync/vdir_store.hpp"

#include "core/utf8.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "core/fs.hpp"
#include "core/log.hpp"

namespace davsyncd::sync {
namespace {

constexpr size_t kMaxNameBytes = 255;
constexpr size_t kMaxUidNameBytes = 200;

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// A file name made printable for messages: a hostile name must not forge log lines.
std::string printable(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) {
        if (c < 0x20 || c == 0x7f || c == '\\' || c == '"') {
            out += "\\x";
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 0x0f]);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    return out;
}

bool uid_is_safe(const std::string& uid) {
    if (uid.empty() || uid.size() > kMaxUidNameBytes || uid.front() == '.') return false;
    for (char c : uid) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == '+' || c == '-' || c == '@';
        if (!ok) return false;
    }
    return true;
}

int64_t ns_of(const struct timespec& t) {
    return static_cast<int64_t>(t.tv_sec) * 1000000000 + static_cast<int64_t>(t.tv_nsec);
}

void check_metadata_key(const std::string& key) {
    if (key != "displayname" && key != "color" && key != "description")
        throw std::invalid_argument(cat("unknown vdir metadata key \"", printable(key), "\""));
}

LocalFile local_file(const std::string& name, const struct stat& st) {
    return LocalFile{name, ns_of(st.st_mtim), static_cast<uint64_t>(st.st_size), ns_of(st.st_ctim)};
}

// Names in the safe set differ in nothing but ASCII case when they collide
// on a case-insensitive file system; other names get no folding beyond ASCII
// either, which at worst costs a random name.
std::string folded(std::string_view name) {
    std::string out(name);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string without_newlines(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s)
        if (c != '\r' && c != '\n') out.push_back(c);
    return out;
}

}  // namespace

namespace {
std::filesystem::path made(std::filesystem::path folder) {
    // Absolute, so that messages name the real place.
    if (!folder.is_absolute()) folder = std::filesystem::absolute(folder);
    fs::make_dirs(folder, 0700);
    return folder;
}
}  // namespace

VdirStore::VdirStore(std::filesystem::path folder, ItemFormat format) : dir_(made(std::move(folder))), format_(format) {}

std::vector<LocalFile> VdirStore::list() const {
    DIR* dir = ::opendir(folder().c_str());
    if (!dir) throw fs::IoError(cat("cannot open folder ", folder().string(), ": ", std::strerror(errno)));
    std::vector<LocalFile> out;
    int dfd = ::dirfd(dir);
    for (;;) {
        errno = 0;
        struct dirent* ent = ::readdir(dir);
        if (!ent) {
            if (errno != 0) {
                int err = errno;
                ::closedir(dir);
                throw fs::IoError(cat("cannot read folder ", folder().string(), ": ", std::strerror(err)));
            }
            break;
        }
        std::string name = ent->d_name;
        if (!valid_name(name)) continue;
        struct stat st {};
        if (::fstatat(dfd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished meanwhile
        if (!S_ISREG(st.st_mode)) continue;  // symlinks, folders, devices
        out.push_back(local_file(name, st));
    }
    ::closedir(dir);
    std::sort(out.begin(), out.end(), [](const LocalFile& a, const LocalFile& b) { return a.name < b.name; });
    return out;
}

std::optional<LocalFile> VdirStore::stat(const std::string& name) const {
    check_name(name);
    auto st = dir_.lstat(name);
    if (!st || !S_ISREG(st->st_mode)) return std::nullopt;
    return local_file(name, *st);
}

std::string VdirStore::read(const std::string& name) const {
    check_name(name);
    return dir_.read(name);  // never through a symlink planted in the folder
}

void VdirStore::flush() { dir_.sync_filesystem(); }

LocalFile VdirStore::write(const std::string& name, std::string_view content, fs::Durability durability) {
    check_name(name);
    if (reserved_.erase(name) == 0) {
        auto st = dir_.write_atomic(name, content, 0600, durability);
        if (folded_names_) folded_names_->insert(folded(name));
        return local_file(name, st);
    }
    // A new item: never over a file that appeared since new_name().
    std::string target = name;
    for (int attempt = 0; attempt < 16; ++attempt) {
        if (auto st = dir_.create_atomic(target, content, 0600, durability)) return local_file(target, *st);
        log::warning(folder().string(), ": ", printable(target), " appeared meanwhile; the new item takes another name");
        target = new_name(std::nullopt);
        reserved_.erase(target);
    }
    throw fs::IoError(cat("cannot find a free file name in ", folder().string()));
}

void VdirStore::remove(const std::string& name) {
    check_name(name);
    dir_.remove(name);
}

bool VdirStore::name_taken(const std::string& name) {
    if (!folded_names_) {
        std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(folder().c_str()), ::closedir);
        if (!dir) throw fs::IoError(cat("cannot open folder ", folder().string(), ": ", std::strerror(errno)));
        std::unordered_set<std::string> names;
        // Every entry counts, whatever its kind or name: any of them blocks a file of that name.
        for (;;) {
            errno = 0;
            struct dirent* ent = ::readdir(dir.get());
            if (!ent) break;
            names.insert(folded(ent->d_name));
        }
        if (errno != 0) throw fs::IoError(cat("cannot read folder ", folder().string(), ": ", std::strerror(errno)));
        folded_names_ = std::move(names);
    }
    // The listing may be old by now: the file system has the last word.
    return folded_names_->contains(folded(name)) || dir_.lstat(name).has_value();
}

std::string VdirStore::new_name(const std::optional<std::string>& uid) {
    const std::string ext = extension(format_);
    auto reserve = [&](std::string name) {
        folded_names_->insert(folded(name));
        reserved_.insert(name);
        return name;
    };
    if (uid && uid_is_safe(*uid)) {
        std::string name = *uid + ext;
        if (valid_name(name) && !name_taken(name)) return reserve(std::move(name));
    }
    for (int attempt = 0; attempt < 16; ++attempt) {
        std::string name = random_uuid() + ext;
        if (!name_taken(name)) return reserve(std::move(name));
    }
    throw fs::IoError(cat("cannot find a free file name in ", folder().string()));
}

bool VdirStore::valid_name(const std::string& name) const {
    std::string_view ext = extension(format_);
    if (name.empty() || name.size() > kMaxNameBytes) return false;
    if (name == "." || name == ".." || name.front() == '.') return false;
    if (name.size() <= ext.size() || !ends_with(name, ext) || ends_with(name, ".tmp")) return false;
    for (unsigned char c : name)
        if (c == '/' || c == '\0' || c < 0x20 || c == 0x7f) return false;
    return utf8::valid(name);
}

void VdirStore::set_metadata(const std::string& key, const std::string& value) {
    check_metadata_key(key);
    std::string clean = without_newlines(value);
    if (clean.empty()) {
        dir_.remove(key);
        return;
    }
    if (metadata(key) == clean) return;
    // The rename replaces whatever is there (even a symlink) rather than writing through it.
    dir_.write_atomic(key, clean, 0600);
}

std::string VdirStore::metadata(const std::string& key) const {
    check_metadata_key(key);
    auto st = dir_.lstat(key);
    if (!st || !S_ISREG(st->st_mode)) return "";
    // Other tools may have written a trailing newline.
    std::string value = dir_.read(key);
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
    return value;
}

// valid_name() allows no '/' and no "." or "..": such a name stays inside
// the folder, and fs::Dir works relative to the folder's descriptor.
void VdirStore::check_name(const std::string& name) const {
    if (!valid_name(name)) throw std::invalid_argument(cat("invalid item file name \"", printable(name), "\""));
}

}  // namespace davsyncd::sync
