#include "core/fs.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.hpp"

namespace davsyncd::fs {
namespace {

// Owns one file descriptor.
class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() { if (fd_ >= 0) ::close(fd_); }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    int release() { int f = fd_; fd_ = -1; return f; }
private:
    int fd_;
};

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& p) {
    throw IoError(cat(what, " ", p.string(), ": ", std::strerror(errno)));
}

}  // namespace

void write_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode, Durability durability) {
    const bool sync = durability == Durability::immediate;
    std::filesystem::path tmp = path;
    tmp += ".tmp";
    {
        Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
        if (fd.get() < 0) fail("cannot create", tmp);
        // O_CREAT does not change the mode of an existing stale .tmp file.
        if (::fchmod(fd.get(), mode) != 0) fail("cannot chmod", tmp);
        const char* p = data.data();
        size_t left = data.size();
        while (left > 0) {
            ssize_t n = ::write(fd.get(), p, left);
            if (n < 0) {
                if (errno == EINTR) continue;
                ::unlink(tmp.c_str());
                fail("cannot write", tmp);
            }
            p += n;
            left -= static_cast<size_t>(n);
        }
        if (sync && ::fsync(fd.get()) != 0) { ::unlink(tmp.c_str()); fail("cannot fsync", tmp); }
        if (::close(fd.release()) != 0) { ::unlink(tmp.c_str()); fail("cannot close", tmp); }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) { ::unlink(tmp.c_str()); fail("cannot rename to", path); }
    if (!sync) return;
    // The rename is durable only once the folder entry is.
    auto dir = path.parent_path();
    Fd dfd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.get() >= 0) ::fsync(dfd.get());
}

void sync_filesystem(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) fail("cannot open", path);
    if (::syncfs(fd.get()) != 0) fail("cannot sync the file system of", path);
}

std::string read_file(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) fail("cannot open", path);
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot read", path);
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

void make_dirs(const std::filesystem::path& dir, unsigned mode) {
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec)) return;
    if (dir.has_parent_path() && dir.parent_path() != dir) make_dirs(dir.parent_path(), mode);
    if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) fail("cannot create folder", dir);
}

bool is_inside(const std::filesystem::path& parent, const std::filesystem::path& child) {
    auto p = parent.lexically_normal();
    if (!p.has_filename()) p = p.parent_path();  // "/a/b/" -> "/a/b"
    auto c = child.lexically_normal();
    auto cit = c.begin();
    for (auto pit = p.begin(); pit != p.end(); ++pit, ++cit)
        if (cit == c.end() || *pit != *cit) return false;
    if (cit == c.end() || cit->empty()) return false;  // the same folder, not inside
    for (; cit != c.end(); ++cit)
        if (*cit == "..") return false;
    return true;
}

XdgDirs XdgDirs::from_environment() {
    auto env_or = [](const char* var, const char* fallback_under_home) {
        const char* v = std::getenv(var);
        // The spec says relative values are invalid and must be ignored.
        if (v && *v == '/') return std::filesystem::path(v);
        const char* home = std::getenv("HOME");
        return std::filesystem::path(home && *home ? home : "/") / fallback_under_home;
    };
    return XdgDirs{env_or("XDG_CONFIG_HOME", ".config"), env_or("XDG_STATE_HOME", ".local/state"),
                   env_or("XDG_DATA_HOME", ".local/share")};
}

}  // namespace davsyncd::fs
