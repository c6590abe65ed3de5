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

[[noreturn]] void fail(const std::string& what, const std::filesystem::path& p) {
    throw IoError(cat(what, " ", p.string(), ": ", std::strerror(errno)));
}

void write_all(int fd, std::string_view data, const std::filesystem::path& what) {
    const char* p = data.data();
    size_t left = data.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot write", what);
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
}

// O_TMPFILE is missing on some file systems (older NFS, many FUSE ones).
bool tmpfile_unsupported(int err) { return err == EOPNOTSUPP || err == EISDIR || err == EINVAL || err == ENOENT; }

}  // namespace

void Fd::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

Dir::Dir(std::filesystem::path path, WriteMethod method) : path_(std::move(path)), method_(method) {
    fd_ = Fd(::open(path_.empty() ? "." : path_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_.valid()) fail("cannot open folder", path_);
}

namespace {
void check_plain_name(std::string_view name, const std::filesystem::path& dir) {
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos ||
        name.find('\0') != std::string_view::npos)
        throw IoError(cat("not a plain file name in ", dir.string(), ": \"", name, "\""));
}
}  // namespace

std::optional<struct stat> Dir::lstat(std::string_view name) const {
    check_plain_name(name, path_);
    struct stat st {};
    if (::fstatat(fd_.get(), std::string(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return st;
    if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
    fail("cannot stat", path_ / name);
}

std::string Dir::read(std::string_view name) const {
    check_plain_name(name, path_);
    // O_NOFOLLOW: a symlink planted in the folder could point at any file of
    // the user; O_NONBLOCK: a FIFO must not hang us before the type check.
    Fd fd(::openat(fd_.get(), std::string(name).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno == ELOOP) throw IoError(cat("not a regular file: ", (path_ / name).string()));
        fail("cannot open", path_ / name);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail("cannot stat", path_ / name);
    if (!S_ISREG(st.st_mode)) throw IoError(cat("not a regular file: ", (path_ / name).string()));
    std::string out;
    out.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    for (;;) {
        if (got == out.size()) out.resize(out.size() + 65536);  // grew since the fstat
        ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("cannot read", path_ / name);
        }
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    out.resize(got);
    return out;
}

// The unnamed file needs no temporary name and no rename when the target is
// new (a first sync: 10 000 of them), and a new inode has exactly `mode`
// less the umask, so no fchmod either. `unsupported` when the file system
// (or a missing /proc) does not allow it; nothing was named then.
Dir::Outcome Dir::write_unnamed_then_link(const std::string& target, std::string_view data, unsigned mode, bool sync,
                                          Existing existing, struct stat& st) {
    Fd fd(::openat(fd_.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode));
    if (!fd.valid()) {
        if (tmpfile_unsupported(errno)) return Outcome::unsupported;
        fail("cannot create a file in", path_);
    }
    write_all(fd.get(), data, path_ / target);
    if (sync && ::fsync(fd.get()) != 0) fail("cannot fsync", path_ / target);
    // The stat is taken once the file has its name: linking (and renaming)
    // moves the ctime, which the sync engine compares.
    auto stat_now = [&] {
        if (::fstat(fd.get(), &st) != 0) fail("cannot stat", path_ / target);
        return Outcome::written;
    };
    const std::string self = cat("/proc/self/fd/", fd.get());
    // linkat never replaces: this is also what makes a creation exclusive.
    if (::linkat(AT_FDCWD, self.c_str(), fd_.get(), target.c_str(), AT_SYMLINK_FOLLOW) == 0) return stat_now();
    if (errno == ENOENT) return Outcome::unsupported;  // no /proc
    if (errno != EEXIST) fail("cannot link", path_ / target);
    if (existing == Existing::keep) return Outcome::exists;  // the unnamed file vanishes with its descriptor
    // Replacing: name it NAME.tmp (a stale one goes first), then rename over.
    const std::string tmp = target + ".tmp";
    ::unlinkat(fd_.get(), tmp.c_str(), 0);
    if (::linkat(AT_FDCWD, self.c_str(), fd_.get(), tmp.c_str(), AT_SYMLINK_FOLLOW) != 0) fail("cannot link", path_ / tmp);
    if (::renameat(fd_.get(), tmp.c_str(), fd_.get(), target.c_str()) != 0) {
        ::unlinkat(fd_.get(), tmp.c_str(), 0);
        fail("cannot rename to", path_ / target);
    }
    return stat_now();
}

// Moves the complete NAME.tmp to NAME unless NAME exists. RENAME_NOREPLACE
// where the file system has it (ext4, xfs, btrfs, exFAT, CIFS...), else a hard
// link, which refuses an existing name as well; a file system with neither
// (NFS without links, some FUSE ones) gets a check just before the rename.
bool Dir::rename_no_replace(const std::string& tmp, const std::string& target) {
    if (::renameat2(fd_.get(), tmp.c_str(), fd_.get(), target.c_str(), RENAME_NOREPLACE) == 0) return true;
    if (errno == EEXIST) return false;
    if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) fail("cannot rename to", path_ / target);
    if (::linkat(fd_.get(), tmp.c_str(), fd_.get(), target.c_str(), 0) == 0) {
        ::unlinkat(fd_.get(), tmp.c_str(), 0);
        return true;
    }
    if (errno == EEXIST) return false;
    if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS) fail("cannot link", path_ / target);
    struct stat st {};
    if (::fstatat(fd_.get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return false;
    if (errno != ENOENT) fail("cannot stat", path_ / target);
    if (::renameat(fd_.get(), tmp.c_str(), fd_.get(), target.c_str()) != 0) fail("cannot rename to", path_ / target);
    return true;
}

Dir::Outcome Dir::write_temp_then_rename(const std::string& target, std::string_view data, unsigned mode, bool sync,
                                         Existing existing, struct stat& st) {
    const std::string tmp = target + ".tmp";
    // Whatever sits at NAME.tmp goes first (a stale file of an interrupted
    // write, or a FIFO or symlink another program left there), and O_EXCL
    // makes sure that what we open is the regular file we just made: opening
    // a FIFO for writing would block until some reader came, for ever.
    if (::unlinkat(fd_.get(), tmp.c_str(), 0) != 0 && errno != ENOENT) fail("cannot remove", path_ / tmp);
    Fd fd(::openat(fd_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, mode));
    if (!fd.valid()) fail("cannot create", path_ / tmp);
    try {
        write_all(fd.get(), data, path_ / tmp);
        if (sync && ::fsync(fd.get()) != 0) fail("cannot fsync", path_ / tmp);
        if (::close(fd.release()) != 0) fail("cannot close", path_ / tmp);
        if (existing == Existing::keep) {
            if (!rename_no_replace(tmp, target)) {
                ::unlinkat(fd_.get(), tmp.c_str(), 0);
                return Outcome::exists;
            }
        } else if (::renameat(fd_.get(), tmp.c_str(), fd_.get(), target.c_str()) != 0) {
            fail("cannot rename to", path_ / target);
        }
    } catch (...) {
        ::unlinkat(fd_.get(), tmp.c_str(), 0);
        throw;
    }
    // After the rename, which moves the ctime.
    if (::fstatat(fd_.get(), target.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) fail("cannot stat", path_ / target);
    return Outcome::written;
}

std::optional<struct stat> Dir::write(std::string_view name, std::string_view data, unsigned mode,
                                      Durability durability, Existing existing) {
    check_plain_name(name, path_);
    const bool sync = durability == Durability::immediate;
    const std::string target(name);
    struct stat st {};
    auto outcome = method_ == WriteMethod::temp_then_rename
                       ? Outcome::unsupported
                       : write_unnamed_then_link(target, data, mode, sync, existing, st);
    if (outcome == Outcome::unsupported) outcome = write_temp_then_rename(target, data, mode, sync, existing, st);
    if (outcome == Outcome::exists) return std::nullopt;
    // The new name is durable only once the folder entry is.
    if (sync) ::fsync(fd_.get());
    return st;
}

struct stat Dir::write_atomic(std::string_view name, std::string_view data, unsigned mode, Durability durability) {
    return *write(name, data, mode, durability, Existing::replace);
}

std::optional<struct stat> Dir::create_atomic(std::string_view name, std::string_view data, unsigned mode,
                                              Durability durability) {
    return write(name, data, mode, durability, Existing::keep);
}

void Dir::remove(std::string_view name) {
    check_plain_name(name, path_);
    if (::unlinkat(fd_.get(), std::string(name).c_str(), 0) != 0 && errno != ENOENT) fail("cannot remove", path_ / name);
}

void Dir::sync_filesystem() {
    if (::syncfs(fd_.get()) != 0) fail("cannot sync the file system of", path_);
}

void write_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode, Durability durability) {
    Dir(path.parent_path()).write_atomic(path.filename().string(), data, mode, durability);
}

std::string read_file(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) fail("cannot open", path);
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
