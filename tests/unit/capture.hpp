// Test helpers for what a call leaves behind outside its return value: the
// log lines it wrote (the daemon logs to stderr, fd 2) and the process's
// peak resident memory.
// Used from the test's own thread; a capture is one scope.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <string>

namespace testing {

// Redirects fd 2 into a memory file for its lifetime; text() reads what was
// written so far. The original stderr comes back in the destructor.
class StderrCapture {
public:
    StderrCapture() : file_(::memfd_create("stderr-capture", MFD_CLOEXEC)), saved_(::dup(2)) {
        if (file_ < 0 || saved_ < 0 || ::dup2(file_, 2) < 0) throw std::runtime_error("cannot capture stderr");
    }
    ~StderrCapture() {
        ::dup2(saved_, 2);
        ::close(saved_);
        ::close(file_);
    }
    StderrCapture(const StderrCapture&) = delete;
    StderrCapture& operator=(const StderrCapture&) = delete;

    std::string text() const {
        std::string out;
        char buf[4096];
        for (off_t at = 0;;) {
            ssize_t n = ::pread(file_, buf, sizeof buf, at);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
            at += n;
        }
        return out;
    }

private:
    int file_;
    int saved_;
};

// A field of /proc/self/status in KiB ("VmHWM", "VmRSS"), -1 when absent.
inline long proc_status_kib(const std::string& field) {
    std::ifstream in("/proc/self/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
    return -1;
}

// Resets the peak (VmHWM) to the current resident size (Linux >= 4.0), so
// that the peak read afterwards belongs to what ran in between, whatever
// earlier tests in this process used. False when the kernel refuses.
inline bool reset_peak_rss() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return static_cast<bool>(out);
}

}  // namespace testing
