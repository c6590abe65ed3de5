// Logging for a journal-friendly daemon: one line per event on stderr, with
// the sd-daemon "<N>" priority prefix that journald turns into a priority.
// When stderr is a terminal the prefix is replaced by a readable level word.
// When stderr is the journal's stream ($JOURNAL_STREAM names it), lines go to
// journald natively instead, so that a line can carry fields (ACCOUNT=,
// COLLECTION=, MESSAGE_ID=) that `journalctl ACCOUNT=personal` selects on.
//
// Any thread may log; each line is written with a single write(2).
// Never log credentials: the HTTP layer only logs URLs through url::redact().
#pragma once

#include <charconv>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace davsyncd {

// Concatenate anything streamable: cat("got ", n, " items").
// (GCC 12 has no <format>; this keeps call sites short without a dependency.)
// Strings and integers are appended directly: cat() runs per item in hot
// paths (10 000 items in a first sync), where a stringstream per call cost
// 7 % of the CPU. Everything else goes through operator<< as before.
namespace detail {
template <typename T>
void append_to(std::string& out, const T& v) {
    if constexpr (std::is_convertible_v<const T&, std::string_view>) {
        out += std::string_view(v);
    } else if constexpr (std::is_same_v<T, char>) {
        out.push_back(v);
    } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, signed char> &&
                         !std::is_same_v<T, unsigned char>) {
        char buf[24];
        auto r = std::to_chars(buf, buf + sizeof buf, v);
        out.append(buf, r.ptr);
    } else {
        std::ostringstream s;
        s << v;
        out += s.str();
    }
}
}  // namespace detail

template <typename... Args>
std::string cat(const Args&... args) {
    std::string out;
    (detail::append_to(out, args), ...);
    return out;
}

namespace log {

enum class Level { error = 3, warning = 4, notice = 5, info = 6, debug = 7 };

// A journal MESSAGE_ID: 128 bits as 32 lowercase hex digits, fixed per kind
// of event so that `journalctl MESSAGE_ID=...` finds every such event across
// versions. Never change one; add a new one for a new kind.
namespace message {
inline constexpr std::string_view sync_done = "e3df0c8ede5742dcbfb5ee4b26b337e6";
inline constexpr std::string_view sync_failed = "6bc2763174354ad48d9818e5e5a4a510";
inline constexpr std::string_view conflict = "554dc01f71f74b09bdf434b18a2c29b3";
inline constexpr std::string_view upload_refused = "83d6daf3c7e54192937c8ecf45bf19fb";
inline constexpr std::string_view deletion_refused = "3df6737b655b4335975d31f3775b718b";
inline constexpr std::string_view push_lost = "dfac4b89a4b4499a9cca11d22c0b7c49";
}  // namespace message

// What a line is about. Only the journal shows it (as fields); the stderr
// format does not change. Empty parts are left out. The views must outlive
// the log call only.
struct Context {
    std::string_view account;
    std::string_view collection;   // the collection's folder name
    std::string_view message_id;   // one of log::message, or empty
};

// Lines above this level are dropped. Default: info (DAVSYNCD_DEBUG=1 in the
// environment gives debug).
void set_max_level(Level level);
bool enabled(Level level);
void write(Level level, std::string_view line, const Context& context = {});

// The journal entry write() sends for a line: "MESSAGE=...", "PRIORITY=N",
// then the context's fields. Exposed for the unit tests.
std::vector<std::string> journal_fields(Level level, std::string_view line, const Context& context);
// Whether fd is the stream $JOURNAL_STREAM ("DEVICE:INODE", as systemd sets
// it) names; false when journal_stream is null or malformed.
bool is_journal_stream(const char* journal_stream, int fd);

template <typename... Args> void error(const Args&... a) { write(Level::error, cat(a...)); }
template <typename... Args> void warning(const Args&... a) { write(Level::warning, cat(a...)); }
template <typename... Args> void notice(const Args&... a) { write(Level::notice, cat(a...)); }
template <typename... Args> void info(const Args&... a) { write(Level::info, cat(a...)); }
template <typename... Args> void debug(const Args&... a) {
    if (enabled(Level::debug)) write(Level::debug, cat(a...));
}
// The same with a context first: log::warning(ctx, "a/b: conflict on ", file).
template <typename... Args> void error(const Context& c, const Args&... a) { write(Level::error, cat(a...), c); }
template <typename... Args> void warning(const Context& c, const Args&... a) { write(Level::warning, cat(a...), c); }
template <typename... Args> void notice(const Context& c, const Args&... a) { write(Level::notice, cat(a...), c); }
template <typename... Args> void info(const Context& c, const Args&... a) { write(Level::info, cat(a...), c); }

}  // namespace log
}  // namespace davsyncd
