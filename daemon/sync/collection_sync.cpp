#include "sync/collection_sync.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/fs.hpp"
#include "core/log.hpp"

namespace davsyncd::sync {
namespace {

// Interrupted downloads are finished from this file (see recover_interrupted()).
std::filesystem::path journal_path(const std::filesystem::path& state_file) {
    return state_file.string() + ".journal";
}

std::string utc_stamp() {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
    return buf;
}

// Appends lines to the journal and makes them durable with one fsync.
void append_durably(const std::filesystem::path& path, const std::string& lines) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) throw fs::IoError(cat("cannot open ", path.string()));
    bool ok = ::write(fd, lines.data(), lines.size()) == static_cast<ssize_t>(lines.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) throw fs::IoError(cat("cannot write ", path.string()));
}

// The state of an item whose file now has the stat `st`.
ItemState synced(const Href& href, const Etag& etag, const std::string& file, const std::string& hash,
                 const LocalFile& st) {
    return ItemState{href, etag, file, hash, st.mtime_ns, st.size, st.ctime_ns};
}

// The cheap "unchanged since it was synced" check; otherwise the hash
// decides. The ctime counts too: a same-size rewrite that puts the old mtime
// back (cp -p, rsync -t, touch -r) still moves it, and missing such an edit
// would let the next server change overwrite it.
bool same_stamp(const LocalFile& f, const ItemState& item) {
    return f.mtime_ns == item.mtime_ns && f.size == item.size && f.ctime_ns == item.ctime_ns;
}

}  // namespace

std::string summary(const std::string& label, const SyncReport& r) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.2f", static_cast<double>(r.duration.count()) / 1000.0);
    std::string line = cat(label, ": ", r.downloaded, " down, ", r.uploaded, " up, ", r.deleted_local,
                           " deleted here, ", r.deleted_remote, " deleted on server, ", r.conflicts, " conflicts, ",
                           r.requests, " requests, ", secs, " s");
    if (r.skipped) line += cat(", ", r.skipped, " skipped");
    if (r.refused_mass_deletion) line += cat(" -- REFUSED: ", r.refused_reason);
    return line;
}

CollectionSync::CollectionSync(dav::RemoteCollection& remote, VdirStore& local, SyncOptions options)
    : remote_(remote), local_(local), opts_(std::move(options)) {
    if (opts_.multiget_batch == 0) opts_.multiget_batch = 100;
}

SyncReport CollectionSync::run() {
    const auto started = std::chrono::steady_clock::now();
    const auto requests_before = remote_.requests_sent();
    report_ = {};
    state_ = CollectionState::load(opts_.state_file);
    if (state_.collection_url != remote_.url()) {
        if (!state_.collection_url.empty())
            log::warning(opts_.label, ": state belonged to ", url::redact(state_.collection_url), "; starting afresh");
        state_ = CollectionState{};
        state_.collection_url = remote_.url();
    }

    // 0. Finish the bookkeeping of an interrupted sync.
    recover_interrupted();

    // The collection's name and colour, for khal and khard.
    local_.set_metadata("displayname", remote_.info().display_name);
    local_.set_metadata("color", remote_.info().color);

    // 1. What changed in the folder since the last sync.
    LocalChanges changes = scan_local();
    if (opts_.local_trigger_only && changes.created.empty() && changes.edited.empty() && changes.deleted.empty()) {
        log::debug(opts_.label, ": nothing changed locally");
        state_.save(opts_.state_file);  // keeps the refreshed mtimes of touched files
        report_.token = state_.token;
        report_.items = state_.items.size();
        return report_;
    }
    if (local_side_wiped(changes)) {
        report_.requests = remote_.requests_sent() - requests_before;
        return report_;
    }

    // 2. Upload local changes with conditional requests.
    upload(changes);

    // 3. Pull server changes; 4. the token is saved inside, after its items.
    pull();

    report_.token = state_.token;
    report_.items = state_.items.size();
    report_.requests = remote_.requests_sent() - requests_before;
    report_.duration = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    return report_;
}

// --- 0. recover ---------------------------------------------------------------

// A download writes its journal entry (href, etag, file, hash) durably
// before the file, and the state is saved after the files. A crash in
// between leaves files the state does not know; without this step they
// would look like local creations and be uploaded again as duplicates.
void CollectionSync::recover_interrupted() {
    auto path = journal_path(opts_.state_file);
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return;
    std::string text;
    try {
        text = fs::read_file(path);
    } catch (const fs::IoError& e) {
        log::warning(opts_.label, ": ", e.what());
        return;
    }
    unsigned adopted = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        auto end = text.find('\n', pos);
        if (end == std::string::npos) break;  // a torn last line: that file was not written yet
        auto line = text.substr(pos, end - pos);
        pos = end + 1;
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (!j.is_object()) continue;
        std::string file = j.value("file", "");
        std::string hash = j.value("hash", "");
        if (!local_.valid_name(file) || !local_.stat(file)) continue;
        if (content_hash(local_.read(file)) != hash) {
            // Our own write, torn by a power loss before the flush: a file
            // the state does not know is ours alone; the download is redone.
            if (!state_.find_by_file(file)) local_.remove(file);
            continue;  // else the old content: the download is simply redone
        }
        state_.items[j.value("key", "")] =
            synced(Href(j.value("href", "")), Etag(j.value("etag", "")), file, hash, *local_.stat(file));
        ++adopted;
    }
    if (adopted) log::info(opts_.label, ": recovered ", adopted, " items written by an interrupted sync");
    save_state();
}

// --- 1. scan --------------------------------------------------------------------

CollectionSync::LocalChanges CollectionSync::scan_local() {
    LocalChanges changes;
    std::map<std::string, LocalFile> files;
    for (auto& f : local_.list()) files.emplace(f.name, f);
    changes.files = files.size();

    std::set<std::string> known;
    for (auto& [key, item] : state_.items) {
        known.insert(item.file);
        auto it = files.find(item.file);
        if (it == files.end()) {
            changes.deleted.push_back(key);
            continue;
        }
        // Cheap pre-check; the hash decides.
        if (same_stamp(it->second, item)) continue;
        if (content_hash(local_.read(item.file)) == item.hash) {
            item = synced(item.href, item.etag, item.file, item.hash, it->second);  // touched, not changed
            continue;
        }
        changes.edited.push_back(key);
    }
    for (const auto& [name, f] : files)
        if (!known.contains(name)) changes.created.push_back(name);

    if (!changes.created.empty() || !changes.edited.empty() || !changes.deleted.empty())
        log::info(opts_.label, ": local changes: ", changes.created.size(), " new, ", changes.edited.size(), " edited, ",
                  changes.deleted.size(), " deleted");
    return changes;
}

// An empty folder where items used to be is more likely a wiped disk or a
// mistaken rm than the user deleting everything: ask before mirroring it.
bool CollectionSync::local_side_wiped(const LocalChanges& changes) {
    if (opts_.force_delete || changes.files != 0 || state_.items.size() < 2) return false;
    report_.refused_mass_deletion = true;
    report_.refused_reason = cat("the local folder ", local_.folder().string(), " is empty but ", state_.items.size(),
                                 " items were synced before; nothing was deleted on the server (confirm with --force-delete)");
    log::error(opts_.label, ": ", report_.refused_reason);
    return true;
}

// --- 2. upload ------------------------------------------------------------------

void CollectionSync::upload(const LocalChanges& changes) {
    for (const auto& key : changes.deleted) {
        check_cancel();
        upload_deletion(key);
    }
    for (const auto& key : changes.edited) {
        check_cancel();
        upload_edit(key);
    }
    for (const auto& file : changes.created) {
        check_cancel();
        upload_creation(file);
    }
    if (!changes.created.empty() || !changes.edited.empty() || !changes.deleted.empty()) save_state();
}

void CollectionSync::upload_creation(const std::string& file) {
    std::string content = local_.read(file);
    if (!looks_like(local_.format(), content)) {
        log::warning(opts_.label, ": ", file, " is not a valid ", extension(local_.format()), " item; not uploaded");
        ++report_.skipped;
        return;
    }
    auto uid = find_uid(content);
    if (!uid) {
        // Servers require a UID; add one so that the item can be created.
        content = add_uid(content, random_uuid());
        local_.write(file, content);
        uid = find_uid(content);
        log::info(opts_.label, ": ", file, ": added a UID before upload");
    }
    Href href = remote_.member_href(file);
    if (state_.items.contains(href_key(href))) href = remote_.member_href(random_uuid() + extension(local_.format()));

    auto w = remote_.put(href, content, std::nullopt);
    if (w.precondition_failed()) {
        // Something already lives at that href: this very item (an earlier
        // upload whose answer was lost), or another one that took the name.
        auto existing = remote_.get(href);
        if (existing && find_uid(existing->data) == uid) {
            state_.items[href_key(href)] = ItemState{href, existing->etag, file, content_hash(existing->data), 0, 0};
            resolve_conflict(href_key(href), content);
            return;
        }
        href = remote_.member_href(random_uuid() + extension(local_.format()));
        w = remote_.put(href, content, std::nullopt);
    }
    if (!w.ok()) {
        log::warning(opts_.label, ": ", file, ": upload refused (HTTP ", w.status, "); will retry");
        ++report_.skipped;
        return;
    }
    record(href_key(href), href, w.etag, file, content_hash(content));
    ++report_.uploaded;
}

void CollectionSync::upload_edit(const std::string& key) {
    ItemState item = state_.items.at(key);
    std::string content = local_.read(item.file);
    if (!looks_like(local_.format(), content)) {
        log::warning(opts_.label, ": ", item.file, " is not a valid ", extension(local_.format()), " item; not uploaded");
        ++report_.skipped;
        return;
    }
    auto w = remote_.put(item.href, content, item.etag);
    if (w.ok()) {
        record(key, item.href, w.etag, item.file, content_hash(content));
        ++report_.uploaded;
        return;
    }
    // 412: the server copy changed since we saw it (404: it is gone).
    resolve_conflict(key, content);
}

void CollectionSync::upload_deletion(const std::string& key) {
    ItemState item = state_.items.at(key);
    auto w = remote_.remove(item.href, item.etag);
    if (w.ok() || w.not_found()) {
        state_.items.erase(key);
        if (w.ok()) ++report_.deleted_remote;
        return;
    }
    // 412: changed on the server after we last saw it. An edit beats a deletion.
    auto current = remote_.get(item.href);
    if (!current) {
        state_.items.erase(key);
        return;
    }
    auto st = local_.write(item.file, current->data);
    state_.items[key] = synced(item.href, current->etag, item.file, content_hash(current->data), st);
    report_.written_files.push_back(item.file);
    ++report_.downloaded;
    log::info(opts_.label, ": ", item.file, ": deleted here but changed on the server; restored the server's version");
}

// --- conflicts --------------------------------------------------------------------

// Both sides changed the item (or a write met a 412). The policy picks the
// version that stays in place; the other one is kept in the conflicts folder.
void CollectionSync::resolve_conflict(const std::string& key, const std::string& local_content) {
    ItemState item = state_.items.at(key);
    auto server = remote_.get(item.href);
    if (!server) {
        // Deleted on the server, edited here: the edit wins.
        auto w = remote_.put(item.href, local_content, std::nullopt);
        if (!w.ok()) {
            log::warning(opts_.label, ": ", item.file, ": re-upload refused (HTTP ", w.status, "); will retry");
            ++report_.skipped;
            return;
        }
        record(key, item.href, w.etag, item.file, content_hash(local_content));
        ++report_.uploaded;
        log::info(opts_.label, ": ", item.file, ": deleted on the server but edited here; uploaded again");
        return;
    }
    if (content_hash(server->data) == content_hash(local_content)) {
        record(key, item.href, server->etag, item.file, content_hash(local_content));  // same change on both sides
        return;
    }

    bool server_wins = true;
    if (opts_.policy == config::ConflictPolicy::local_wins) server_wins = false;
    if (opts_.policy == config::ConflictPolicy::newest) {
        auto l = modification_stamp(local_content);
        auto s = modification_stamp(server->data);
        server_wins = !(l && s && *l > *s);
    }

    ++report_.conflicts;
    if (server_wins) {
        keep_loser(item.file, "local", local_content);
        auto st = local_.write(item.file, server->data);
        state_.items[key] = synced(item.href, server->etag, item.file, content_hash(server->data), st);
        report_.written_files.push_back(item.file);
        ++report_.downloaded;
    } else {
        keep_loser(item.file, "server", server->data);
        auto w = remote_.put(item.href, local_content, server->etag);
        if (!w.ok()) {
            log::warning(opts_.label, ": ", item.file, ": changed again on the server while resolving a conflict; retrying next sync");
            return;
        }
        record(key, item.href, w.etag, item.file, content_hash(local_content));
        ++report_.uploaded;
    }
}

void CollectionSync::keep_loser(const std::string& file, const std::string& side, const std::string& content) {
    fs::make_dirs(opts_.conflicts_dir, 0700);
    // Two conflicts on one file within a second must not share a name: the
    // rename would replace the earlier losing version.
    auto stamp = utc_stamp();
    auto path = opts_.conflicts_dir / cat(stamp, "-", side, "-", file);
    for (int n = 2; std::filesystem::exists(path); ++n) path = opts_.conflicts_dir / cat(stamp, "-", n, "-", side, "-", file);
    fs::write_atomic(path, content, 0600);
    log::warning(opts_.label, ": conflict on ", file, ": both sides changed it; the ", side,
                 " version was set aside in ", path.string());
}

// --- 3. pull ----------------------------------------------------------------------

void CollectionSync::pull() {
    if (!remote_.info().supports_sync_collection) pull_by_ctag();
    else if (state_.token.empty()) pull_full_listing();
    else pull_incremental();
}

// Changes since our token, page by page (a 507 means "ask again").
void CollectionSync::pull_incremental() {
    for (;;) {
        dav::ChangePage page;
        try {
            page = remote_.changes_since(state_.token);
        } catch (const dav::RemoteError& e) {
            // Xandikos before 0.2.10 answers a token it no longer knows with a
            // bare 500. Recover the same way; a server that is really broken
            // fails the listing too.
            if (e.status != 500 || state_.token.empty()) throw;
            log::warning(opts_.label, ": ", e.what(), " on our sync token; treating the token as invalid");
            recover_with_listing();
            return;
        } catch (const dav::InvalidSyncToken& e) {
            log::warning(opts_.label, ": ", e.what(), "; listing everything to recover");
            recover_with_listing();
            return;
        }
        std::vector<Href> fetch;
        for (const auto& c : page.changed) {
            auto it = state_.items.find(href_key(c.href));
            if (it == state_.items.end() || it->second.etag.empty() || it->second.etag != c.etag) fetch.push_back(c.href);
        }
        std::vector<std::string> gone;
        for (const auto& h : page.deleted)
            if (state_.items.contains(href_key(h))) gone.push_back(href_key(h));
        if (refuse_remote_wipe(gone.size(), page.changed.size())) return;

        download(fetch);
        for (const auto& key : gone) apply_remote_deletion(key);
        state_.token = page.token;
        save_state();
        if (!page.truncated) return;
        log::debug(opts_.label, ": result truncated by the server; asking for the rest");
    }
}

// The server no longer knows our token: list every member with its etag
// (sync-collection from scratch) and reconcile with what we hold. Local
// edits were uploaded before, so nothing of ours is lost.
void CollectionSync::recover_with_listing() {
    std::vector<dav::MemberEtag> members;
    SyncToken token;
    for (;;) {
        auto page = remote_.changes_since(token);
        members.insert(members.end(), page.changed.begin(), page.changed.end());
        token = page.token;
        if (!page.truncated) break;
    }
    reconcile_listing(members);
    if (report_.refused_mass_deletion) return;
    state_.token = token;
    save_state();
}

// First sync: the cheapest complete listing. The token is read first, so
// anything that changes while we list is reported again next time.
void CollectionSync::pull_full_listing() {
    auto token = remote_.current_token();
    auto all = remote_.list_all();
    std::set<std::string> present;
    for (const auto& m : all) present.insert(href_key(m.href));
    std::vector<std::string> gone;
    for (const auto& [key, item] : state_.items)
        if (!present.contains(key)) gone.push_back(key);
    if (refuse_remote_wipe(gone.size(), all.size())) return;

    store_downloads(all);
    for (const auto& key : gone) apply_remote_deletion(key);
    state_.token = token;
    save_state();
}

// Servers without sync-collection: the ctag says whether anything changed,
// a Depth-1 PROPFIND of etags says what.
void CollectionSync::pull_by_ctag() {
    auto ctag = remote_.current_ctag();
    if (!ctag.empty() && ctag == state_.ctag) return;
    auto members = remote_.list_etags();
    reconcile_listing(members);
    if (report_.refused_mass_deletion) return;
    state_.ctag = ctag;
    save_state();
}

void CollectionSync::reconcile_listing(const std::vector<dav::MemberEtag>& members) {
    std::set<std::string> present;
    std::vector<Href> fetch;
    for (const auto& m : members) {
        auto key = href_key(m.href);
        present.insert(key);
        auto it = state_.items.find(key);
        if (it == state_.items.end() || it->second.etag.empty() || it->second.etag != m.etag) fetch.push_back(m.href);
    }
    std::vector<std::string> gone;
    for (const auto& [key, item] : state_.items)
        if (!present.contains(key)) gone.push_back(key);
    if (refuse_remote_wipe(gone.size(), members.size())) return;
    download(fetch);
    for (const auto& key : gone) apply_remote_deletion(key);
}

bool CollectionSync::refuse_remote_wipe(size_t deletions, size_t additions) {
    if (opts_.force_delete || additions != 0 || state_.items.size() < 2 || deletions != state_.items.size()) return false;
    report_.refused_mass_deletion = true;
    report_.refused_reason = cat("the server's collection is empty but ", deletions,
                                 " items were synced before; no local file was deleted (confirm with --force-delete)");
    log::error(opts_.label, ": ", report_.refused_reason);
    return true;
}

void CollectionSync::download(const std::vector<Href>& hrefs) {
    for (size_t i = 0; i < hrefs.size(); i += opts_.multiget_batch) {
        check_cancel();
        auto end = std::min(hrefs.size(), i + opts_.multiget_batch);
        std::vector<Href> batch(hrefs.begin() + static_cast<std::ptrdiff_t>(i), hrefs.begin() + static_cast<std::ptrdiff_t>(end));
        store_downloads(remote_.multiget(batch));
    }
}

// Writes downloaded items: first their journal entries (one fsync), then
// the files; the state that covers them is saved by the caller.
void CollectionSync::store_downloads(const std::vector<dav::MemberData>& items) {
    struct Planned {
        const dav::MemberData* item;
        std::string key, file, hash;
    };
    std::vector<Planned> plan;
    std::vector<std::string> edited_meanwhile;
    std::set<std::string> names_taken;
    for (const auto& item : items) {
        if (!looks_like(local_.format(), item.data)) {
            log::warning(opts_.label, ": ", url::redact(item.href.str()), ": server sent something that is not a ",
                         extension(local_.format()), " item; skipped");
            ++report_.skipped;
            continue;
        }
        auto key = href_key(item.href);
        auto it = state_.items.find(key);
        if (it != state_.items.end()) {
            if (!it->second.etag.empty() && it->second.etag == item.etag) continue;  // ours already
            if (local_file_changed(it->second)) {
                edited_meanwhile.push_back(key);  // edited here during this sync
                continue;
            }
            plan.push_back({&item, key, it->second.file, content_hash(item.data)});
        } else {
            auto name = local_.new_name(find_uid(item.data));
            if (!names_taken.insert(name).second) {
                name = local_.new_name(std::nullopt);  // two items with one UID
                names_taken.insert(name);
            }
            plan.push_back({&item, key, name, content_hash(item.data)});
        }
    }
    if (!plan.empty()) {
        std::string lines;
        for (const auto& p : plan) lines += journal_line(p.key, ItemState{p.item->href, p.item->etag, p.file, p.hash});
        fs::make_dirs(opts_.state_file.parent_path(), 0700);
        append_durably(journal_path(opts_.state_file), lines);
    }
    // One syncfs for the batch instead of two fsyncs per file (600 files:
    // 5 s -> well under one); nothing is recorded before it.
    size_t written = 0;
    std::vector<std::pair<const Planned*, LocalFile>> done;
    for (const auto& p : plan) {
        if (++written % 100 == 0 && opts_.cancel && opts_.cancel->load()) break;  // a SIGTERM need not wait for 10 000 files
        done.emplace_back(&p, local_.write(p.file, p.item->data, fs::Durability::deferred));
    }
    if (!done.empty()) local_.flush();
    for (const auto& [p, st] : done) {
        state_.items[p->key] = synced(p->item->href, p->item->etag, p->file, p->hash, st);
        report_.written_files.push_back(p->file);
        ++report_.downloaded;
    }
    if (done.size() < plan.size()) check_cancel();
    for (const auto& key : edited_meanwhile) resolve_conflict(key, local_.read(state_.items.at(key).file));
}

// The server deleted an item. Delete the file, unless it was edited here:
// then the edit wins and goes back to the server.
void CollectionSync::apply_remote_deletion(const std::string& key) {
    ItemState item = state_.items.at(key);
    if (local_file_changed(item)) {
        std::string content = local_.read(item.file);
        auto w = remote_.put(item.href, content, std::nullopt);
        if (w.ok()) {
            record(key, item.href, w.etag, item.file, content_hash(content));
            ++report_.uploaded;
            log::info(opts_.label, ": ", item.file, ": deleted on the server but edited here; uploaded again");
        } else {
            log::warning(opts_.label, ": ", item.file, ": re-upload refused (HTTP ", w.status, "); will retry");
            ++report_.skipped;
        }
        return;
    }
    local_.remove(item.file);
    state_.items.erase(key);
    report_.removed_files.push_back(item.file);
    ++report_.deleted_local;
}

// --- bookkeeping ----------------------------------------------------------------

// True when the file exists and its content differs from what was last synced.
bool CollectionSync::local_file_changed(const ItemState& item) const {
    auto st = local_.stat(item.file);
    if (!st) return false;
    if (same_stamp(*st, item)) return false;
    return content_hash(local_.read(item.file)) != item.hash;
}

void CollectionSync::record(const std::string& key, const Href& href, const Etag& etag,
                            const std::string& file, const std::string& hash) {
    auto st = local_.stat(file);
    state_.items[key] = synced(href, etag, file, hash, st.value_or(LocalFile{}));
}

// Stops between two items when asked to. Everything finished so far is
// saved first; the token is not, so the next sync picks up the rest.
void CollectionSync::check_cancel() {
    if (!opts_.cancel || !opts_.cancel->load()) return;
    save_state();
    throw Cancelled(cat(opts_.label, ": cancelled"));
}

void CollectionSync::save_state() {
    state_.save(opts_.state_file);
    std::error_code ec;
    std::filesystem::remove(journal_path(opts_.state_file), ec);
}

}  // namespace davsyncd::sync
