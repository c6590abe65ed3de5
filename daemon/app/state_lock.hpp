// One owner of a state folder. Whoever holds <state folder>/lock (flock)
// is the only process writing that folder and the vdir folders of its
// accounts: the daemon for as long as it runs, or one `davsyncd --once`.
// Two writers of one state file would lose records.
//
// The lock is released by the kernel when the process ends, however it
// ends; the file holds the owner's pid so that a refusal can name it.
//
// Thread affinity: any; one object per process.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>

#include "core/fs.hpp"

namespace davsyncd::app {

class StateLock {
public:
    // Takes the lock, or returns nullopt with the holder's pid in `holder`
    // (0 when unknown). Throws fs::IoError when the folder cannot be used.
    static std::optional<StateLock> try_take(const std::filesystem::path& state_dir, pid_t& holder);

private:
    explicit StateLock(fs::Fd fd) : fd_(std::move(fd)) {}
    fs::Fd fd_;
};

}  // namespace davsyncd::app
