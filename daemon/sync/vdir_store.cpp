#include "sync/vdir_store.hpp"

#include "core/utf8.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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

int64_t mtime_ns_of(const struct stat& st) {
    return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + static_cast<int64_t>(st.st_mtim.tv_nsec);
}

// lstat: true when something (of any type) is there, false when missing.
bool lstat_path(const std::filesystem::path& p, struct stat& st) {
    if (::lstat(p.c_str(), &st) == 0) return true;
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw fs::IoError(cat("cannot stat ", p.string(), ": ", std::strerror(errno)));
}

std::filesystem::path metadata_path(const std::filesystem::path& folder, const std::string& key) {
    if (key != "displayname" && key != "color" && key != "description")
        throw std::invalid_argument(cat("unknown vdir metadata key \"", printable(key), "\""));
    return folder / key;
}

std::string without_newlines(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s)
        if (c != '\r' && c != '\n') out.push_back(c);
    return out;
}

}  // namespace

VdirStore::VdirStore(std::filesystem::path folder, ItemFormat format)
    // Absolute, so that the lexical is_inside() check also works for "." and the like.
    : folder_(folder.is_absolute() ? std::move(folder) : std::filesystem::absolute(folder)), format_(format) {
    fs::make_dirs(folder_, 0700);
}

std::vector<LocalFile> VdirStore::list() const {
    DIR* dir = ::opendir(folder_.c_str());
    if (!dir) throw fs::IoError(cat("cannot open folder ", folder_.string(), ": ", std::strerror(errno)));
    std::vector<LocalFile> out;
    int dfd = ::dirfd(dir);
    for (;;) {
        errno = 0;
        struct dirent* ent = ::readdir(dir);
        if (!ent) {
            if (errno != 0) {
                int err = errno;
                ::closedir(dir);
                throw fs::IoError(cat("cannot read folder ", folder_.string(), ": ", std::strerror(err)));
            }
            break;
        }
        std::string name = ent->d_name;
        if (!valid_name(name)) continue;
        struct stat st {};
        if (::fstatat(dfd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished meanwhile
        if (!S_ISREG(st.st_mode)) continue;  // symlinks, folders, devices
        out.push_back(LocalFile{std::move(name), mtime_ns_of(st), static_cast<uint64_t>(st.st_size)});
    }
    ::closedir(dir);
    std::sort(out.begin(), out.end(), [](const LocalFile& a, const LocalFile& b) { return a.name < b.name; });
    return out;
}

std::optional<LocalFile> VdirStore::stat(const std::string& name) const {
    struct stat st {};
    if (!lstat_path(path_of(name), st) || !S_ISREG(st.st_mode)) return std::nullopt;
    return LocalFile{name, mtime_ns_of(st), static_cast<uint64_t>(st.st_size)};
}

std::string VdirStore::read(const std::string& name) const {
    auto path = path_of(name);
    // Never follow a symlink planted in the folder (it could point at any
    // file of the user, which would then be uploaded).
    struct stat st {};
    if (lstat_path(path, st) && !S_ISREG(st.st_mode))
        throw fs::IoError(cat("not a regular file: ", path.string()));
    return fs::read_file(path);
}

void VdirStore::flush() { fs::sync_filesystem(folder_); }

LocalFile VdirStore::write(const std::string& name, std::string_view content, fs::Durability durability) {
    auto path = path_of(name);
    fs::write_atomic(path, content, 0600, durability);
    auto st = stat(name);
    if (!st) throw fs::IoError(cat("file vanished after writing: ", path.string()));
    return *st;
}

void VdirStore::remove(const std::string& name) {
    auto path = path_of(name);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
        throw fs::IoError(cat("cannot remove ", path.string(), ": ", std::strerror(errno)));
}

std::string VdirStore::new_name(const std::optional<std::string>& uid) const {
    const std::string ext = extension(format_);
    auto taken = [&](const std::string& name) {
        struct stat st {};
        return lstat_path(folder_ / name, st);
    };
    if (uid && uid_is_safe(*uid)) {
        std::string name = *uid + ext;
        if (valid_name(name) && !taken(name)) return name;
    }
    for (int attempt = 0; attempt < 16; ++attempt) {
        std::string name = random_uuid() + ext;
        if (!taken(name)) return name;
    }
    throw fs::IoError(cat("cannot find a free file name in ", folder_.string()));
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
    auto path = metadata_path(folder_, key);
    std::string clean = without_newlines(value);
    if (clean.empty()) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            throw fs::IoError(cat("cannot remove ", path.string(), ": ", std::strerror(errno)));
        return;
    }
    if (metadata(key) == clean) return;
    // The rename replaces whatever is there (even a symlink) rather than writing through it.
    fs::write_atomic(path, clean, 0600);
}

std::string VdirStore::metadata(const std::string& key) const {
    auto path = metadata_path(folder_, key);
    struct stat st {};
    if (!lstat_path(path, st) || !S_ISREG(st.st_mode)) return "";
    // Other tools may have written a trailing newline.
    std::string value = fs::read_file(path);
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
    return value;
}

std::filesystem::path VdirStore::path_of(const std::string& name) const {
    if (!valid_name(name)) throw std::invalid_argument(cat("invalid item file name \"", printable(name), "\""));
    auto path = folder_ / name;
    if (!fs::is_inside(folder_, path))
        throw std::invalid_argument(cat("item file name \"", printable(name), "\" leaves ", folder_.string()));
    return path;
}

}  // namespace davsyncd::sync
