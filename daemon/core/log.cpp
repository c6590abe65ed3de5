#include "core/log.hpp"

#include "core/sanitize.hpp"

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
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

// journald adds no identifier to native entries; the stream it replaces had
// the program's name (`journalctl -t davsyncd`).
std::string identifier() {
    const char* name = program_invocation_short_name;
    return cat("SYSLOG_IDENTIFIER=", name && *name ? name : "davsyncd");
}

bool parse_number(std::string_view text, unsigned long long& out) {
    if (text.empty()) return false;
    auto r = std::from_chars(text.data(), text.data() + text.size(), out);
    return r.ec == std::errc() && r.ptr == text.data() + text.size();
}

// Sends one entry; false when journald did not take it.
bool send_to_journal(Level level, std::string_view line, const Context& context) {
    static const std::string ident = identifier();
    auto fields = journal_fields(level, line, context);
    fields.push_back(ident);
    std::vector<iovec> iov;
    iov.reserve(fields.size());
    for (auto& f : fields) iov.push_back({f.data(), f.size()});
    return sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) >= 0;
}

}  // namespace

bool is_journal_stream(const char* journal_stream, int fd) {
    if (!journal_stream) return false;
    std::string_view v(journal_stream);
    auto colon = v.find(':');
    unsigned long long dev = 0, ino = 0;
    if (colon == std::string_view::npos || !parse_number(v.substr(0, colon), dev) ||
        !parse_number(v.substr(colon + 1), ino))
        return false;
    struct stat st {};
    if (::fstat(fd, &st) != 0) return false;
    return st.st_dev == dev && st.st_ino == ino;
}

std::vector<std::string> journal_fields(Level level, std::string_view line, const Context& context) {
    std::vector<std::string> out;
    out.reserve(5);
    // The same text as on stderr: one event, one line, nothing a terminal obeys.
    out.push_back(cat("MESSAGE=", sanitize::for_terminal(line)));
    out.push_back(cat("PRIORITY=", static_cast<int>(level)));
    if (!context.account.empty()) out.push_back(cat("ACCOUNT=", sanitize::for_terminal(context.account)));
    if (!context.collection.empty()) out.push_back(cat("COLLECTION=", sanitize::for_terminal(context.collection)));
    if (!context.message_id.empty()) out.push_back(cat("MESSAGE_ID=", context.message_id));
    return out;
}

void set_max_level(Level level) { max_level() = level; }
bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(max_level().load()); }

void write(Level level, std::string_view line, const Context& context) {
    if (!enabled(level)) return;
    // Decided once: systemd sets $JOURNAL_STREAM when it connects stderr to
    // the journal, and a child that inherited the variable but not the
    // stream (a shell redirect) must not log elsewhere than its stderr.
    static const bool journal = is_journal_stream(std::getenv("JOURNAL_STREAM"), STDERR_FILENO);
    if (journal && send_to_journal(level, line, context)) return;
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
