// Two-way sync of one collection: the server's calendar or address book on
// one side, a local vdir folder on the other, and the remembered state of
// the last sync in between.
//
// The algorithm (each step logs a line; see run()):
//   0. recover   — finish the bookkeeping of a sync that was interrupted
//   1. scan      — what changed in the folder since the last sync
//   2. upload    — local creations, edits and deletions, as conditional
//                  requests, so that a concurrent server change surfaces as a
//                  412 and becomes a conflict instead of being overwritten
//   3. pull      — server changes since our token (sync-collection), or a
//                  full listing on the first sync / with an invalid token /
//                  without sync-collection (ctag, then etags)
//   4. save      — the new token, only after what it covers is on disk
//
// Nothing is ever dropped: the losing side of a conflict is written to the
// conflicts folder, an edit beats a deletion, and deleting more than the
// deletion guard allows in one sync waits for the user's confirmation.
// One item the server will not take never stops the others: a refused
// version goes to the conflicts folder (or waits until the user changes
// it), a temporary failure is retried with that item's own backoff, and the
// pull runs all the same. Read-only collections never send a write.
//
// Thread affinity: runs on one thread (a sync job), owning everything it uses.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "dav/remote_collection.hpp"
#include "sync/sync_state.hpp"
#include "sync/upload_failures.hpp"
#include "sync/vdir_store.hpp"

namespace davsyncd::sync {

struct SyncOptions {
    config::ConflictPolicy policy = config::ConflictPolicy::server_wins;
    unsigned multiget_batch = 100;
    // Deleting more than this in one sync, from either side, waits for the
    // user's confirmation (as does a side that became empty).
    config::DeletionGuard deletion_guard;
    bool force_delete = false;                 // the user confirmed: apply any number of deletions
    std::filesystem::path state_file;          // CollectionState JSON
    std::filesystem::path conflicts_dir;       // where losing versions go
    std::string label;                         // "account/collection" for logs
    // Only a local change asked for this sync: when the scan finds nothing
    // (e.g. the event was our own write), stop without a request.
    bool local_trigger_only = false;
    // Set from another thread to stop at the next item; what is done is saved.
    const std::atomic<bool>* cancel = nullptr;
};

// Thrown by run() when SyncOptions::cancel was set; state is consistent.
struct Cancelled : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct SyncReport {
    unsigned downloaded = 0;       // items written locally (new or changed)
    unsigned uploaded = 0;         // items created or updated on the server
    unsigned deleted_local = 0;    // local files removed because the server removed them
    unsigned deleted_remote = 0;   // server items removed because the file was removed
    unsigned conflicts = 0;        // losing versions kept in the conflicts folder
    unsigned refused = 0;          // local changes the server refused this sync (see log)
    unsigned skipped = 0;          // items that could not be handled (see log)
    // After the sync: local changes waiting to be sent again (temporary
    // server failures) and refused versions left in place until they change.
    unsigned pending_uploads = 0;
    unsigned refused_uploads = 0;
    uint64_t requests = 0;
    std::chrono::milliseconds duration{0};
    SyncToken token;               // the server token this sync ended with
    bool refused_mass_deletion = false;
    std::string refused_reason;
    size_t items = 0;              // items in the collection after the sync
    std::vector<std::string> written_files;  // local file names created or replaced
    std::vector<std::string> removed_files;  // local file names deleted
};

// The line printed per collection by --once and logged by the daemon.
std::string summary(const std::string& label, const SyncReport& r);

class CollectionSync {
public:
    CollectionSync(dav::RemoteCollection& remote, VdirStore& local, SyncOptions options);
    // Throws dav::RemoteError / dav::HttpError / fs::IoError when the sync
    // cannot go on; what was done until then is saved.
    SyncReport run();

private:
    struct LocalChanges {
        std::vector<std::string> created;   // file names unknown to the state
        std::vector<std::string> edited;    // state keys whose file content changed
        std::vector<std::string> deleted;   // state keys whose file is gone
        size_t files = 0;                   // item files in the folder
        bool empty() const { return created.empty() && edited.empty() && deleted.empty(); }
    };
    // One local change on its way to the server.
    struct Upload {
        std::string file;
        std::optional<std::string> key;     // state key; none for a creation
        std::string content;                // "" for a deletion
        bool deletion = false;
        std::string hash() const;
    };

    // Nothing changed in the folder since the last sync (by the summary,
    // without loading the state) and, unless only a folder event asked,
    // nothing on the server either. A server page that does list changes is
    // kept in first_page_ for the pull, so that it is not asked twice.
    std::optional<StateSummary> unchanged_since_last_sync();
    void save_summary();
    void recover_interrupted();
    LocalChanges scan_local();
    void drop_waiting(LocalChanges& changes);
    void upload(const LocalChanges& changes);
    void keep_local_changes_of_read_only(const LocalChanges& changes);
    void upload_creation(const std::string& file);
    void upload_edit(const std::string& key);
    void upload_deletion(const std::string& key);
    void not_taken(const Upload& change, const dav::WriteResult& w);
    void refuse(const Upload& change, const dav::WriteResult& w);
    std::optional<dav::MemberData> server_copy(const Href& href);
    void restore_server_version(const std::string& key, const dav::MemberData& server);
    void pull();
    void pull_incremental();
    void recover_with_listing();
    void pull_full_listing();
    void pull_by_listing();
    void pull_by_ctag();
    void reconcile_listing(const std::vector<dav::MemberEtag>& members);
    void download(const std::vector<Href>& hrefs);
    // Writes the members a listing delivers in batches as they arrive, so
    // that no listing is held whole; adds their keys to `present` if given.
    void receive(const std::function<void(const dav::RemoteCollection::MemberSink&)>& list,
                 std::set<std::string>* present = nullptr);
    void store_downloads(const std::vector<dav::MemberData>& items);
    bool adopt_own_creation(const dav::MemberData& item);
    void apply_remote_deletion(const std::string& key);
    bool deletion_needs_confirmation(size_t deletions, size_t remaining, const char* side);

    void resolve_conflict(const std::string& key, const std::string& local_content);
    std::filesystem::path keep_loser(const std::string& file, const std::string& side, const std::string& content,
                                     const std::string& why);
    bool local_file_changed(const ItemState& item) const;
    void check_cancel();
    void record(const std::string& key, const Href& href, const Etag& etag, const std::string& file,
                const std::string& hash);
    void save_state();
    void token_covers_all();
    std::set<std::string> load_created();
    void save_created();

    dav::RemoteCollection& remote_;
    VdirStore& local_;
    SyncOptions opts_;
    CollectionState state_;
    UploadFailures failures_;
    // Keys of items this client created on the server after the stored
    // token (kept in "<state file>.created" until a pull completes): the
    // server may never report their deletion (RFC 6578 §3.5).
    std::set<std::string> created_since_token_, created_on_disk_;
    // File names the state knows, built on first need by adopt_own_creation().
    std::optional<std::set<std::string>> known_files_;
    SyncReport report_;
    // The answer to "changes since <token>" read by unchanged_since_last_sync().
    std::optional<std::pair<SyncToken, dav::ChangePage>> first_page_;
};

}  // namespace davsyncd::sync
