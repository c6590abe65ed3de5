#include "app/state_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/log.hpp"

namespace davsyncd::app {

std::optional<StateLock> StateLock::try_take(const std::filesystem::path& state_dir, pid_t& holder) {
    holder = 0;
    fs::make_dirs(state_dir, 0700);
    const auto path = state_dir / "lock";
    fs::Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) throw fs::IoError(cat("cannot open ", path.string(), ": ", std::strerror(errno)));
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK) throw fs::IoError(cat("cannot lock ", path.string(), ": ", std::strerror(errno)));
        char buf[32] = {};
        if (::pread(fd.get(), buf, sizeof buf - 1, 0) > 0) holder = static_cast<pid_t>(std::atol(buf));
        return std::nullopt;
    }
    auto pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd.get(), 0) != 0 || ::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
        log::warning("cannot write the pid into ", path.string(), ": ", std::strerror(errno));
    return StateLock(std::move(fd));
}

}  // namespace davsyncd::app
