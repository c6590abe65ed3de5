#include "sync/account_sync.hpp"

#include <ctime>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/log.hpp"

namespace davsyncd::sync {
namespace {

std::string safe_folder_name(const std::string& id) {
    std::string out;
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
        out += ok ? c : '_';
    }
    while (!out.empty() && out.front() == '.') out.erase(0, 1);
    if (out.size() > 100) out.resize(100);
    return out.empty() ? "collection" : out;
}

// Folders whose names differ only in case ("Work" and "work") are one
// folder on exFAT, NTFS, CIFS or casefolded ext4: uniqueness is decided on
// the ASCII-folded name (folder names are ASCII, see safe_folder_name).
std::string folded(std::string_view name) {
    std::string out(name);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::map<std::string, std::string> load_folders(const std::filesystem::path& file) {
    std::map<std::string, std::string> out;
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) return out;
    auto j = nlohmann::json::parse(fs::read_file(file), nullptr, false);
    if (!j.is_object()) {
        log::warning(file.string(), ": unreadable; collection folders are assigned again");
        return out;
    }
    for (auto& [href, folder] : j.items())
        if (folder.is_string() && safe_folder_name(folder.get<std::string>()) == folder.get<std::string>())
            out[href] = folder.get<std::string>();
    return out;
}

}  // namespace

std::vector<PlannedCollection> plan_collections(const config::Account& account,
                                                const std::filesystem::path& account_state_dir,
                                                const std::vector<dav::CollectionInfo>& collections) {
    auto folders_file = account_state_dir / "folders.json";
    auto folders = load_folders(folders_file);
    std::set<std::string> used;  // folded
    for (const auto& [href, folder] : folders) used.insert(folded(folder));

    bool assigned = false;
    std::vector<PlannedCollection> out;
    for (const auto& c : collections) {
        if (!account.collections.accepts(c.id, c.display_name)) continue;
        auto& folder = folders[c.url];
        if (folder.empty()) {
            auto base = safe_folder_name(c.id);
            folder = base;
            for (int n = 2; used.contains(folded(folder)); ++n) folder = cat(base, "-", n);
            used.insert(folded(folder));
            assigned = true;
        }
        PlannedCollection p;
        p.info = c;
        p.folder = folder;
        p.local_dir = account.local_root / folder;
        p.state_file = account_state_dir / "collections" / (folder + ".json");
        p.conflicts_dir = account_state_dir / "conflicts" / folder;
        p.format = c.kind == dav::CollectionKind::addressbook ? ItemFormat::vcard : ItemFormat::icalendar;
        p.label = cat(account.id, "/", folder);
        out.push_back(std::move(p));
    }
    if (assigned) {
        fs::make_dirs(account_state_dir, 0700);
        fs::write_atomic(folders_file, nlohmann::json(folders).dump(2) + "\n", 0600);
    }
    return out;
}

void store_discovery(const dav::DiscoveryResult& result, const config::Account& account,
                     const std::filesystem::path& account_state_dir) {
    auto j = dav::to_json(result);
    j["id"] = account.id;
    fs::make_dirs(account_state_dir, 0700);
    fs::write_atomic(account_state_dir / "collections.json", j.dump(2) + "\n", 0600);
}

namespace {

std::optional<dav::DiscoveryResult> load_discovery_result(const std::filesystem::path& account_state_dir) {
    auto file = account_state_dir / "collections.json";
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) return std::nullopt;
    try {
        return dav::discovery_from_json(nlohmann::json::parse(fs::read_file(file)));
    } catch (const std::exception& e) {
        log::warning(file.string(), ": unreadable (", e.what(), "); discovering again");
        return std::nullopt;
    }
}

}  // namespace

std::optional<std::vector<dav::CollectionInfo>> load_discovery(const std::filesystem::path& account_state_dir) {
    if (auto r = load_discovery_result(account_state_dir)) return std::move(r->collections);
    return std::nullopt;
}

namespace {

// Moves a vanished collection's folder and state out of the way: under the
// account's state folder when it is on the same file system, else beside
// the folder as a hidden ".removed-…" folder (readers skip hidden folders).
std::filesystem::path set_aside(const PlannedCollection& plan, const std::filesystem::path& account_state_dir) {
    const auto name = cat(plan.folder, "-", utc_stamp());
    const auto aside = account_state_dir / "removed" / name;
    fs::make_dirs(aside, 0700);
    auto kept = aside / "items";
    std::error_code ec;
    if (std::filesystem::exists(plan.local_dir, ec)) {
        std::filesystem::rename(plan.local_dir, kept, ec);
        if (ec) {  // another file system (local_root elsewhere): mark it in place instead
            kept = plan.local_dir.parent_path() / cat(".removed-", name);
            std::filesystem::rename(plan.local_dir, kept, ec);
            if (ec) throw fs::IoError(cat("cannot move ", plan.local_dir.string(), " aside: ", ec.message()));
        }
    }
    for (const char* suffix : {"", ".uploads", ".journal", ".created", ".summary"}) {
        auto from = plan.state_file;
        from += suffix;
        std::filesystem::rename(from, aside / cat("state.json", suffix), ec);
    }
    return kept;
}

}  // namespace

AccountCollections rediscover(dav::HttpClient& http, const config::Account& account,
                              const std::filesystem::path& account_state_dir) {
    auto before = load_discovery_result(account_state_dir);
    // The homes seldom move: asking them alone is one request each.
    std::optional<dav::DiscoveryResult> quick;
    if (before) quick = dav::rediscover_homes(http, *before);
    // Homes that suddenly list nothing are confirmed by a full discovery,
    // which fails rather than set every folder aside.
    if (quick && quick->collections.empty()) quick.reset();
    auto result = quick ? std::move(*quick) : dav::discover(http, account.url);
    store_discovery(result, account, account_state_dir);
    AccountCollections out{result.collections, {}, true};
    if (!before) return out;
    std::set<std::string> now;
    for (const auto& c : result.collections) now.insert(c.url);
    for (const auto& plan : plan_collections(account, account_state_dir, before->collections)) {
        if (now.contains(plan.info.url)) continue;
        auto kept = set_aside(plan, account_state_dir);
        log::warning(plan.label, ": the collection is gone from the server; its folder was moved to ", kept.string());
        out.removed.push_back({plan.folder, plan.info.id, kept});
    }
    return out;
}

AccountCollections cached_or_rediscovered(dav::HttpClient& http, const config::Account& account,
                                          const std::filesystem::path& account_state_dir,
                                          std::chrono::seconds max_age) {
    std::error_code ec;
    auto mtime = std::filesystem::last_write_time(account_state_dir / "collections.json", ec);
    if (!ec && std::filesystem::file_time_type::clock::now() - mtime < max_age)
        if (auto known = load_discovery(account_state_dir)) return {*known, {}, false};
    return rediscover(http, account, account_state_dir);
}

size_t count_local_items(const PlannedCollection& plan) {
    std::error_code ec;
    if (!std::filesystem::is_directory(plan.local_dir, ec)) return 0;
    return VdirStore(plan.local_dir, plan.format).list().size();
}

SyncReport sync_collection(dav::HttpClient& http, const PlannedCollection& plan, const config::Account& account,
                           const RunFlags& flags) {
    dav::RemoteCollection remote(http, plan.info);
    VdirStore local(plan.local_dir, plan.format);
    SyncOptions o;
    o.policy = account.conflict_policy;
    if (account.multiget_batch) o.multiget_batch = account.multiget_batch;
    o.deletion_guard = account.deletion_guard;
    o.force_delete = flags.force_delete;
    o.local_trigger_only = flags.local_trigger_only;
    o.cancel = flags.cancel;
    o.state_file = plan.state_file;
    o.conflicts_dir = plan.conflicts_dir;
    o.label = plan.label;
    return CollectionSync(remote, local, std::move(o)).run();
}

}  // namespace davsyncd::sync
