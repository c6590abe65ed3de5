// What the sync engine needs to know about the content of one item (an
// iCalendar object or a vCard), without a full parser: its UID, a stable
// content hash, and a modification stamp for the "newest wins" policy.
// Pure functions, any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace davsyncd::sync {

enum class ItemFormat { icalendar, vcard };

// The UID of the object: the first UID property of the first VEVENT, VTODO or
// VJOURNAL (iCalendar; VALARM/VTIMEZONE UIDs are ignored) or of the VCARD.
// Folded lines (RFC 5545 §3.1) are unfolded first; parameters are skipped
// ("UID;X=y:abc" -> "abc"). nullopt when there is none or it is empty.
std::optional<std::string> find_uid(std::string_view content);

// Returns the content with "UID:<uid>" inserted after every BEGIN:VEVENT /
// VTODO / VJOURNAL / VCARD line that has no UID of its own, keeping the
// file's line ending style (CRLF or LF).
std::string add_uid(std::string_view content, std::string_view uid);

// LAST-MODIFIED, else DTSTAMP (iCalendar) or REV (vCard), as digits only
// ("20240105T101500Z" -> "20240105101500") so that two stamps compare as
// strings of equal length. nullopt when there is none.
std::optional<std::string> modification_stamp(std::string_view content);

// Hex SHA-256 of the content with CRLF read as LF: what the state remembers
// to detect local edits, and how two versions are compared.
std::string content_hash(std::string_view content);

// A random RFC 4122 version 4 UUID (lower-case hex with dashes).
std::string random_uuid();

// A cheap sanity check before uploading a local file: it starts with
// BEGIN:VCALENDAR (or BEGIN:VCARD) after an optional BOM and whitespace.
bool looks_like(ItemFormat format, std::string_view content);

const char* extension(ItemFormat format);      // ".ics" / ".vcf"
const char* content_type(ItemFormat format);   // "text/calendar; charset=utf-8" / "text/vcard; charset=utf-8"

}  // namespace davsyncd::sync
