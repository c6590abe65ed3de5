// What davsyncd remembers about one collection between syncs, stored as JSON
// under $XDG_STATE_HOME/davsyncd/<account>/collections/<folder>.json.
//
// The rule that makes crashes harmless: the state on disk never claims more
// than the vdir folder and the server hold. The engine updates items as each
// file is written and saves the token only after everything it covers is on
// disk, so a crash at any instant at worst repeats work.
//
// Thread affinity: one thread at a time (the sync job owning it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "dav/types.hpp"

namespace davsyncd::sync {

struct ItemState {
    Href href;               // as the server spells it (used in requests)
    Etag etag;               // last known server etag; empty = unknown (re-read)
    std::string file;        // file name in the vdir folder
    std::string hash;        // content_hash() of what was last synced
    int64_t mtime_ns = 0;    // stat of the file when last synced (cheap pre-check)
    uint64_t size = 0;
    int64_t ctime_ns = 0;    // 0 in states written before it was kept: the hash decides once
};

struct CollectionState {
    std::string collection_url;        // which collection this state belongs to
    SyncToken token;                   // RFC 6578 token covering every item below
    CTag ctag;                         // for servers without sync-collection
    // Keyed by the percent-decoded href path, so that two spellings of one
    // href from different responses are the same item.
    std::map<std::string, ItemState> items;

    // Item by file name (linear; collections are small enough, and the engine
    // builds its own index when it needs many look-ups).
    const ItemState* find_by_file(const std::string& file) const;

    // Loads the state; a missing file is an empty state. A corrupt file is
    // moved aside to "<file>.corrupt" with a warning and an empty state is
    // returned (a full resync then reconciles by content, losing nothing).
    static CollectionState load(const std::filesystem::path& path);
    // Atomic write, mode 0600; nothing is written when the file already
    // holds exactly this state (as loaded or last saved by this object).
    void save(const std::filesystem::path& path) const;

private:
    mutable std::string on_disk_;  // the file's text as loaded or last saved
};

// What a sync with nothing to do needs instead of the whole state, kept in
// "<state file>.summary": the token, the item count, and a digest of the
// stamps of the files the state covers. Loading the state of 15 000 items
// costs about 0.1 s; this costs a stat of each file.
//
// It is only believed for the state file it was written after (its inode,
// size and mtime are recorded), so a crash between the two writes, or a
// state saved without it, just means the full path once.
struct StateSummary {
    std::string collection_url;
    SyncToken token;
    size_t items = 0;
    std::string folder_digest;  // of the files as the state recorded them

    // nullopt when missing, unreadable, or not written for the state file as it is now.
    static std::optional<StateSummary> load(const std::filesystem::path& state_file);
    // Writes it for the state file as it is now (call after saving the state).
    void save(const std::filesystem::path& state_file) const;
};

// One line of the download journal: {"key":..,"href":..,"etag":..,"file":..,"hash":..}
// and a newline (read back by CollectionSync's recovery with any JSON parser).
std::string journal_line(const std::string& key, const ItemState& item);

// The key under which an href is stored: percent-decoded path.
std::string href_key(const Href& href);

// The current UTC time as "20261207T001500Z": the stamp in the names of
// what a sync sets aside (conflict copies, vanished collections).
std::string utc_stamp();

}  // namespace davsyncd::sync
