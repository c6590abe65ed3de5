#include "core/log.hpp"

#include "core/sanitize.hpp"

#include <atomic>
#include <cstdlib>
#include <unistd.h>

namespace davsyncd::log {
namespace {

Level initial_level() {
    const char* d = std::getenv("DAVSYNCD_DEBUG");
    return (d && *d && std::string_view(d) != "0") ? Level::debug : Level::info;
}

// The one process-wide setting: a logging threshold is configuration of the
// output stream itself, like stderr, not application state.
std::atomic<Level>& max_level() {
    static std::atomic<Level> level{initial_level()};
    return level;
}

const char* word(Level l) {
    switch (l) {
        case Level::error: return "error: ";
        case Level::warning: return "warning: ";
        case Level::notice: return "";
        case Level::info: return "";
        case Level::debug: return "debug: ";
    }
    return "";
}

}  // namespace

void set_max_level(Level level) { max_level() = level; }
bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(max_level().load()); }

void write(Level level, std::string_view line) {
    if (!enabled(level)) return;
    static const bool tty = isatty(STDERR_FILENO);
    std::string out;
    out.reserve(line.size() + 16);
    if (tty) {
        out += word(level);
    } else {
        out += '<';
        out += static_cast<char>('0' + static_cast<int>(level));
        out += '>';
    }
    // One event, one line, and no terminal escape from server text: newlines
    // would forge log lines, control sequences would drive the terminal.
    out += sanitize::for_terminal(line);
    out += '\n';
    (void)!::write(STDERR_FILENO, out.data(), out.size());
}

}  // namespace davsyncd::log
