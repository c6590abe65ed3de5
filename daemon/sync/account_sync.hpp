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

// The account's collections from <account state>/collections.json when it is
// younger than max_age, else from a fresh discovery (which is then stored).
std::vector<dav::CollectionInfo> cached_or_discovered(dav::HttpClient& http, const config::Account& account,
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

// Syncs one planned collection over `http`.
SyncReport sync_collection(dav::HttpClient& http, const PlannedCollection& plan, const config::Account& account,
                           const RunFlags& flags);

}  // namespace davsyncd::sync
