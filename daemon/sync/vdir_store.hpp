// One collection's local vdir folder (pimutils vdir format, read by khal,
// khard and todoman): one .ics or .vcf file per item, plus the metadata
// files "displayname" and "color".
//
// Every path is built from a validated file name inside the folder: a remote
// href, a UID or a display name can never name a path outside it. Writes are
// atomic (fs::Dir::write_atomic).
//
// Thread affinity: one thread at a time (the sync job owning it).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/fs.hpp"
#include "sync/item.hpp"

namespace davsyncd::sync {

struct LocalFile {
    std::string name;        // file name inside the folder, e.g. "abc.ics"
    int64_t mtime_ns = 0;    // st_mtim in nanoseconds
    uint64_t size = 0;
    int64_t ctime_ns = 0;    // st_ctim: moves on every write, and no program can set it
    friend bool operator==(const LocalFile&, const LocalFile&) = default;
};

class VdirStore {
public:
    // Creates the folder (0700 parents) when missing.
    VdirStore(std::filesystem::path folder, ItemFormat format);

    const std::filesystem::path& folder() const { return dir_.path(); }
    ItemFormat format() const { return format_; }

    // Regular files with this store's extension; skips *.tmp, hidden files,
    // files without the extension, and symlinks.
    std::vector<LocalFile> list() const;
    std::optional<LocalFile> stat(const std::string& name) const;  // nullopt when missing

    std::string read(const std::string& name) const;
    // Atomic write; returns the new file's stat. Deferred writes become
    // durable with flush().
    // A name from new_name() that is not written yet is created exclusively:
    // when something took it meanwhile (another program, or on a
    // case-insensitive file system a name differing in case), that file is
    // left alone and the item goes to another fresh name. The returned
    // LocalFile::name is the name written: callers record that one.
    LocalFile write(const std::string& name, std::string_view content,
                    fs::Durability durability = fs::Durability::immediate);
    void flush();
    // Missing file is not an error.
    void remove(const std::string& name);

    // A fresh file name for an item: "<uid><ext>" when the UID consists only
    // of [A-Za-z0-9_.+@-] (vdirsyncer's safe set; not starting with '.', at
    // most 200 bytes) and that name is free, else "<random uuid><ext>".
    // Free means: no entry in the folder and no name handed out before by
    // this store equals it ignoring ASCII case, since on exFAT, NTFS, CIFS
    // or casefolded ext4 "ABC.ics" and "abc.ics" are one file (and the folder
    // may be copied to one). The name is reserved until written.
    std::string new_name(const std::optional<std::string>& uid);

    // True when `name` is an acceptable item file name for this store: no '/',
    // no NUL, not "." or "..", not hidden, has the extension, at most 255 bytes.
    bool valid_name(const std::string& name) const;

    // Collection metadata files. Written only when the value differs; an
    // empty value removes the file. Newlines in values are stripped.
    void set_metadata(const std::string& key, const std::string& value);  // key: "displayname" | "color" | "description"
    std::string metadata(const std::string& key) const;                   // "" when missing

private:
    void check_name(const std::string& name) const;  // throws std::invalid_argument
    bool name_taken(const std::string& name);
    fs::Dir dir_;
    ItemFormat format_;
    // Lower-cased names of the folder's entries (read once, at the first
    // new_name) and of every name handed out or written since: one listing
    // instead of one per new item.
    std::optional<std::unordered_set<std::string>> folded_names_;
    std::unordered_set<std::string> reserved_;  // from new_name(), not written yet
};

}  // namespace davsyncd::sync
