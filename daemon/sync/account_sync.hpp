// From an account's discovered collections to what the sync engine needs
// for each: which ones to sync, the local folder each one lives in (chosen
// once and kept for life), and where its state and conflicts go.
//
// Thread affinity: any single thread.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <filesystem>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "dav/discovery.hpp"
#include "sync/collection_sync.hpp"

namespace davsyncd::sync {

struct PlannedCollection {
    dav::CollectionInfo info;
    std::string folder;                    // folder name under the account's local_root
    std::filesystem::path local_dir;       // local_root/folder
    std::filesystem::path state_file;      // <account state>/collections/<folder>.json
    std::filesystem::path conflicts_dir;   // <account state>/conflicts/<folder>/
    ItemFormat format = ItemFormat::icalendar;
    std::string label;                     // "<account>/<folder>" for logs
};

// The account's collections after its include/exclude filter, each with a
// folder. Folder names come from the collection id, made safe
// ([A-Za-z0-9_.-], not hidden) and unique, and are remembered in
// <account state>/folders.json so that a collection keeps its folder even
// when others come and go.
std::vector<PlannedCollection> plan_collections(const config::Account& account,
                                                const std::filesystem::path& account_state_dir,
                                                const std::vector<dav::CollectionInfo>& collections);

// A synced collection the server no longer lists. Nothing of it is
// deleted: its folder and state were moved to `kept_at`.
struct RemovedCollection {
    std::string folder;              // its folder name (and Collection1 object)
    std::string id;                  // its id on the server
    std::filesystem::path kept_at;   // where the folder went
};

struct AccountCollections {
    std::vector<dav::CollectionInfo> collections;
    std::vector<RemovedCollection> removed;
    bool discovered = false;         // false: from the cache, no request made
};

// Discovers the account's collections (always), stores the result, and moves
// aside the folder and state of every collection of the previous discovery
// that the server no longer lists, with one log line each.
AccountCollections rediscover(dav::HttpClient& http, const config::Account& account,
                              const std::filesystem::path& account_state_dir);

// The account's collections from <account state>/collections.json when it is
// younger than max_age, else rediscover().
AccountCollections cached_or_rediscovered(dav::HttpClient& http, const config::Account& account,
                                          const std::filesystem::path& account_state_dir,
                                          std::chrono::seconds max_age);

// The stored collections.json, whatever its age; nullopt when there is none
// or it cannot be read. No network.
std::optional<std::vector<dav::CollectionInfo>> load_discovery(const std::filesystem::path& account_state_dir);
// Stores a discovery result as <account state>/collections.json.
void store_discovery(const dav::DiscoveryResult& result, const config::Account& account,
                     const std::filesystem::path& account_state_dir);

// How one run of a collection sync differs from the default.
struct RunFlags {
    bool force_delete = false;
    bool local_trigger_only = false;
    const std::atomic<bool>* cancel = nullptr;
};

// Item files in a collection's folder, whatever its state (a failing
// collection still shows what the user has).
size_t count_local_items(const PlannedCollection& plan);

// Syncs one planned collection over `http`.
SyncReport sync_collection(dav::HttpClient& http, const PlannedCollection& plan, const config::Account& account,
                           const RunFlags& flags);

}  // namespace davsyncd::sync
