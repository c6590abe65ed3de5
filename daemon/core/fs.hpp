// File system helpers with the durability rules the daemon depends on.
// Safe to call from any thread.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace davsyncd::fs {

struct IoError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Writes `data` to `path` atomically: NAME.tmp in the same folder, fsync,
// rename over the target, fsync the folder. Readers see the old or the new
// content, never a mix; a crash leaves at worst a stray .tmp file.
// `mode` applies to the new file (0600 for anything secret).
// Durability::deferred skips both fsyncs: for bulk writes that the caller
// makes durable at once with sync_filesystem() before recording them.
enum class Durability { immediate, deferred };
void write_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0644,
                  Durability durability = Durability::immediate);

// syncfs(2) on the file system holding `path`: one flush for many deferred writes.
void sync_filesystem(const std::filesystem::path& path);

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
