// The one gate for text that came from a server (display names, ids, URLs,
// error messages) or from a file name on its way out of the daemon.
//
// Two places are stricter than the JSON and XML the text arrived in:
// - the D-Bus wire: sd-bus refuses invalid UTF-8, NUL and Unicode
//   non-characters, and a refused string throws out of the emission of a
//   signal (InterfacesAdded in a constructor ended the daemon, at every start,
//   since the collection was cached);
// - terminals and logs: control characters and bidi overrides in a display
//   name can move the cursor, rewrite the window title or reorder what the
//   user reads.
//
// Pure functions, any thread.
#pragma once

#include <string>
#include <string_view>

namespace davsyncd::sanitize {

// U+FFFD REPLACEMENT CHARACTER: what stands for anything that cannot be sent.
inline constexpr std::string_view kReplacement = "\xef\xbf\xbd";

// Valid UTF-8 that sd-bus accepts. Each byte that is not part of a valid
// sequence, each non-character (U+FDD0..U+FDEF, U+xFFFE and U+xFFFF in every
// plane) and NUL becomes U+FFFD; everything else is kept as it is: the bus
// carries text faithfully and each client decides how to show it.
std::string for_bus(std::string_view text);

// True when for_bus(text) == text, without building a copy.
bool bus_safe(std::string_view text);

// Whether for_terminal leaves line breaks in place: sync summaries are one
// line per collection; names and messages are one line.
enum class Lines { one, many };

// for_bus, and every control character written as a visible escape so that
// the terminal shows it instead of obeying it: C0 and DEL as \xHH (ESC is
// "\x1b"), C1 and the bidi embeddings, overrides and isolates (U+202A..U+202E,
// U+2066..U+2069) as \uHHHH. Lines::many keeps '\n' (and only '\n').
std::string for_terminal(std::string_view text, Lines lines = Lines::one);

}  // namespace davsyncd::sanitize
