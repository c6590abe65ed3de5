// File system helpers with the durability rules the daemon depends on.
// Safe to call from any thread.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace davsyncd::fs {

struct IoError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Writes `data` to `path` atomically (see Dir::write_atomic). `mode` applies
// to the new file (0600 for anything secret).
// Durability::deferred skips the fsyncs: for bulk writes that the caller
// makes durable at once with Dir::sync_filesystem() before recording them.
enum class Durability { immediate, deferred };
void write_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0644,
                  Durability durability = Durability::immediate);

// Owns one file descriptor.
class Fd {
public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    ~Fd() { reset(); }
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) { reset(); fd_ = o.release(); }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() { int f = fd_; fd_ = -1; return f; }
    void reset();
private:
    int fd_;
};

// An open folder. Every operation takes a plain file name (no '/': refused)
// and works relative to the folder's descriptor, so a name is never
// re-resolved through the path and cannot lead out of the folder; symlinks
// in it are never followed.
class Dir {
public:
    // How write_atomic makes files. automatic: unnamed (O_TMPFILE) where the
    // file system allows it, else through NAME.tmp and a rename.
    // temp_then_rename always takes the second way, which most file systems
    // never reach otherwise: for tests of it.
    enum class WriteMethod { automatic, temp_then_rename };

    // The folder must exist; throws IoError.
    explicit Dir(std::filesystem::path path, WriteMethod method = WriteMethod::automatic);
    const std::filesystem::path& path() const { return path_; }

    std::optional<struct stat> lstat(std::string_view name) const;  // nullopt when missing
    // A regular file's content; throws IoError for anything else.
    std::string read(std::string_view name) const;
    // Readers see the old or the new content, never a mix, and never a
    // half-written file under any name. A new file is written unnamed
    // (O_TMPFILE) and linked in when complete; an existing one is replaced
    // by rename. A crash leaves nothing behind, or at worst NAME.tmp where
    // O_TMPFILE is not supported. Returns the new file's stat.
    struct stat write_atomic(std::string_view name, std::string_view data, unsigned mode,
                             Durability durability = Durability::immediate);
    // Like write_atomic, but only when nothing of that name exists: nullopt
    // (and nothing changed or left behind) when something does. On a
    // case-insensitive file system "A.ics" exists when "a.ics" does.
    std::optional<struct stat> create_atomic(std::string_view name, std::string_view data, unsigned mode,
                                             Durability durability = Durability::immediate);
    void remove(std::string_view name);  // a missing file is not an error
    void sync_filesystem();               // syncfs(2): one flush for many deferred writes

private:
    enum class Existing { replace, keep };
    enum class Outcome { written, exists, unsupported };
    std::optional<struct stat> write(std::string_view name, std::string_view data, unsigned mode,
                                     Durability durability, Existing existing);
    Outcome write_unnamed_then_link(const std::string& target, std::string_view data, unsigned mode, bool sync,
                                    Existing existing, struct stat& st);
    Outcome write_temp_then_rename(const std::string& target, std::string_view data, unsigned mode, bool sync,
                                   Existing existing, struct stat& st);
    bool rename_no_replace(const std::string& tmp, const std::string& target);
    std::filesystem::path path_;
    Fd fd_;
    WriteMethod method_;
};

// Whole file as a string; throws IoError naming the path.
std::string read_file(const std::filesystem::path& path);

// Creates the folder and its parents with `mode` for the folders created.
void make_dirs(const std::filesystem::path& dir, unsigned mode = 0755);

// True when `child` (after lexical normalisation) lies strictly inside `parent`.
bool is_inside(const std::filesystem::path& parent, const std::filesystem::path& child);

// XDG base directories, from the environment with the spec's fallbacks.
struct XdgDirs {
    std::filesystem::path config_home;  // $XDG_CONFIG_HOME or ~/.config
    std::filesystem::path state_home;   // $XDG_STATE_HOME or ~/.local/state
    std::filesystem::path data_home;    // $XDG_DATA_HOME or ~/.local/share
    static XdgDirs from_environment();
};

}  // namespace davsyncd::fs
