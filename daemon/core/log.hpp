// Logging for a journal-friendly daemon: one line per event on stderr, with
// the sd-daemon "<N>" priority prefix that journald turns into a priority.
// When stderr is a terminal the prefix is replaced by a readable level word.
//
// Any thread may log; each line is written with a single write(2).
// Never log credentials: the HTTP layer only logs URLs through url::redact().
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace davsyncd {

// Concatenate anything streamable: cat("got ", n, " items").
// (GCC 12 has no <format>; this keeps call sites short without a dependency.)
template <typename... Args>
std::string cat(const Args&... args) {
    std::ostringstream out;
    (out << ... << args);
    return out.str();
}

namespace log {

enum class Level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

// Lines above this level are dropped. Default: info (DAVSYNCD_DEBUG=1 in the
// environment gives debug).
void set_max_level(Level level);
bool enabled(Level level);
void write(Level level, std::string_view line);

template <typename... Args> void error(const Args&... a) { write(Level::error, cat(a...)); }
template <typename... Args> void warning(const Args&... a) { write(Level::warning, cat(a...)); }
template <typename... Args> void notice(const Args&... a) { write(Level::notice, cat(a...)); }
template <typename... Args> void info(const Args&... a) { write(Level::info, cat(a...)); }
template <typename... Args> void debug(const Args&... a) {
    if (enabled(Level::debug)) write(Level::debug, cat(a...));
}

}  // namespace log
}  // namespace davsyncd
