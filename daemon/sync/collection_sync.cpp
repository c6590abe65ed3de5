#include "sync/collection_sync.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
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

// Local changes the server did not take (see UploadFailures).
std::filesystem::path uploads_path(const std::filesystem::path& state_file) {
    return state_file.string() + ".uploads";
}

// Items this client created on the server after the stored sync token (see
// CollectionSync::created_since_token_).
std::filesystem::path created_path(const std::filesystem::path& state_file) {
    return state_file.string() + ".created";
}

// Follows a 507-truncated sync-collection only while it makes progress: a
// server that hands back the token it was given, one it gave before, a page
// with no href not seen yet in this sync, or more pages than the collection
// can need, is going round in circles (or is hostile) and gets no more
// requests. The cap lets a server that sends at least ten items a page list
// the whole collection and a thousand changes.
// Whether `content` ends with the END line of its outer component: a body
// cut short (a connection reset with a length that matched) does not.
bool ends_whole(ItemFormat format, std::string_view content) {
    while (!content.empty() && (content.back() == '\n' || content.back() == '\r' || content.back() == ' ' ||
                                content.back() == '\t'))
        content.remove_suffix(1);
    std::string_view end = format == ItemFormat::icalendar ? "END:VCALENDAR" : "END:VCARD";
    if (content.size() < end.size()) return false;
    auto tail = content.substr(content.size() - end.size());
    for (size_t i = 0; i < end.size(); ++i)
        if (std::toupper(static_cast<unsigned char>(tail[i])) != end[i]) return false;
    return content.size() == end.size() || content[content.size() - end.size() - 1] == '\n';
}

// How a read-only collection answers any write, without being asked.
dav::WriteResult read_only_refusal() { return {403, {}, "the collection is read-only", {}}; }

class PageGuard {
public:
    explicit PageGuard(size_t known_items) : max_pages_(100 + known_items / 10) {}

    // "" to ask for the next page, else why not.
    std::string next(const SyncToken& asked, const dav::ChangePage& page) {
        if (++pages_ >= max_pages_) return cat("still truncated after ", pages_, " pages");
        if (page.token == asked) return "the server answered 507 but returned the same sync-token";
        if (!tokens_.insert(page.token.str()).second) return "the server returned a sync-token it had given before";
        bool news = false;
        for (const auto& c : page.changed) news |= hrefs_.insert(c.href.str()).second;
        for (const auto& h : page.deleted) news |= hrefs_.insert(h.str()).second;
        if (!news) return "a truncated page brought no new item";
        return {};
    }

private:
    size_t max_pages_;
    size_t pages_ = 0;
    std::set<std::string> tokens_;
    std::set<std::string> hrefs_;
};

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
    if (r.refused) line += cat(", ", r.refused, " refused by the server");
    if (r.pending_uploads) line += cat(", ", r.pending_uploads, " waiting to upload");
    if (r.skipped) line += cat(", ", r.skipped, " skipped");
    if (r.refused_mass_deletion) line += cat(" -- REFUSED: ", r.refused_reason);
    return line;
}

CollectionSync::CollectionSync(dav::RemoteCollection& remote, VdirStore& local, SyncOptions options)
    : remote_(remote), local_(local), opts_(std::move(options)) {
    if (opts_.multiget_batch == 0) opts_.multiget_batch = 100;
}

std::string CollectionSync::Upload::hash() const { return deletion ? std::string() : content_hash(content); }

SyncReport CollectionSync::run() {
    const auto started = std::chrono::steady_clock::now();
    const auto requests_before = remote_.requests_sent();
    report_ = {};
    known_files_.reset();
    first_page_.reset();
    failures_ = UploadFailures::load(uploads_path(opts_.state_file));
    // The collection's name and colour, for khal and khard. One the user set
    // stays when the server has none.
    if (!remote_.info().display_name.empty()) local_.set_metadata("displayname", remote_.info().display_name);
    if (!remote_.info().color.empty()) local_.set_metadata("color", remote_.info().color);
    if (auto quiet = unchanged_since_last_sync()) {
        log::debug(opts_.label, ": nothing changed on either side");
        report_.token = quiet->token;
        report_.items = quiet->items;
        report_.requests = remote_.requests_sent() - requests_before;
        report_.duration = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
        return report_;
    }
    state_ = CollectionState::load(opts_.state_file);
    created_since_token_ = load_created();
    if (state_.collection_url != remote_.url()) {
        if (!state_.collection_url.empty())
            log::warning(opts_.label, ": state belonged to ", url::redact(state_.collection_url), "; starting afresh");
        state_ = CollectionState{};
        state_.collection_url = remote_.url();
    }
    auto finish = [&] {
        failures_.save(uploads_path(opts_.state_file));
        report_.pending_uploads = failures_.waiting_retry();
        report_.refused_uploads = failures_.refused_count();
        report_.token = state_.token;
        report_.items = state_.items.size();
        report_.requests = remote_.requests_sent() - requests_before;
        report_.duration =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
        return report_;
    };

    // 0. Finish the bookkeeping of an interrupted sync.
    recover_interrupted();

    // 1. What changed in the folder since the last sync.
    LocalChanges changes = scan_local();
    if (opts_.local_trigger_only && changes.empty()) {
        log::debug(opts_.label, ": nothing changed locally");
        state_.save(opts_.state_file);  // keeps the refreshed mtimes of touched files
        save_summary();
        return finish();
    }
    if (deletion_needs_confirmation(changes.deleted.size(), state_.items.size() - changes.deleted.size(), "local"))
        return finish();

    // 2. Upload local changes with conditional requests.
    upload(changes);

    // 3. Pull server changes; 4. the token is saved inside, after its items.
    pull();
    return finish();
}

// --- the quiet case ------------------------------------------------------------

namespace {

// The stamps of a set of files, in name order, as one digest: equal to the
// digest of the state's records exactly when a scan would find every file
// unchanged by its stamp, and no file added or removed.
std::string folder_digest(std::vector<std::tuple<std::string_view, int64_t, uint64_t, int64_t>> files) {
    std::sort(files.begin(), files.end());
    std::string text;
    text.reserve(files.size() * 64);
    for (const auto& [name, mtime, size, ctime] : files) text += cat(name, '\0', mtime, ' ', size, ' ', ctime, '\n');
    return content_hash(text);
}

}  // namespace

std::optional<StateSummary> CollectionSync::unchanged_since_last_sync() {
    std::error_code ec;
    if (!remote_.info().supports_sync_collection || !failures_.empty() ||
        std::filesystem::exists(journal_path(opts_.state_file), ec) ||
        std::filesystem::exists(created_path(opts_.state_file), ec))
        return std::nullopt;
    auto summary = StateSummary::load(opts_.state_file);
    if (!summary || summary->collection_url != remote_.url() || summary->token.empty()) return std::nullopt;
    auto files = local_.list();
    std::vector<std::tuple<std::string_view, int64_t, uint64_t, int64_t>> stamps;
    stamps.reserve(files.size());
    for (const auto& f : files) stamps.emplace_back(f.name, f.mtime_ns, f.size, f.ctime_ns);
    if (folder_digest(std::move(stamps)) != summary->folder_digest) return std::nullopt;
    if (opts_.local_trigger_only) return summary;
    dav::ChangePage page;
    try {
        page = remote_.changes_since(summary->token);
    } catch (const dav::InvalidSyncToken&) {
        return std::nullopt;  // the full path recovers (and asks again)
    }
    if (page.changed.empty() && page.deleted.empty() && !page.truncated && page.token == summary->token) return summary;
    first_page_.emplace(summary->token, std::move(page));
    return std::nullopt;
}

void CollectionSync::save_summary() {
    std::vector<std::tuple<std::string_view, int64_t, uint64_t, int64_t>> stamps;
    stamps.reserve(state_.items.size());
    for (const auto& [key, item] : state_.items) stamps.emplace_back(item.file, item.mtime_ns, item.size, item.ctime_ns);
    StateSummary{state_.collection_url, state_.token, state_.items.size(), folder_digest(std::move(stamps))}.save(
        opts_.state_file);
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
        std::string key = j.value("key", "");
        if (!local_.valid_name(file) || !local_.stat(file) || key.empty()) continue;
        Href href(j.value("href", ""));
        Etag etag(j.value("etag", ""));
        if (state_.find_by_file(file)) continue;  // the state's older version: the download is simply redone
        std::string content = local_.read(file);
        if (content_hash(content) == hash) {
            state_.items[key] = synced(href, etag, file, hash, *local_.stat(file));
            ++adopted;
            continue;
        }
        // Changed since the interrupted sync wrote it: an edit the user made
        // at once (khal writes immediately), or our own write torn by a power
        // loss. Neither is ours to delete.
        if (looks_like(local_.format(), content)) {
            // Known as the downloaded version with no stamp, so the scan sees
            // an edit and uploads it against that etag (a 412 becomes a conflict).
            state_.items[key] = ItemState{href, etag, file, hash, 0, 0, 0};
            log::info(opts_.label, ": ", file, ": edited after an interrupted download; kept as a local edit");
        } else {
            keep_loser(file, "local", content, "refused: it changed after an interrupted download and is not a valid item");
            local_.remove(file);  // the download is redone
        }
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

    drop_waiting(changes);
    if (!changes.empty())
        log::info(opts_.label, ": local changes: ", changes.created.size(), " new, ", changes.edited.size(), " edited, ",
                  changes.deleted.size(), " deleted");
    return changes;
}

// Changes the server refused in this very version, or whose retry time has
// not come, are not sent now; records of changes that are gone are dropped.
void CollectionSync::drop_waiting(LocalChanges& changes) {
    std::set<std::string> changed_files;
    auto now = UploadFailures::Clock::now();
    unsigned waiting = 0;
    auto waits = [&](const std::string& file, bool deletion) {
        changed_files.insert(file);
        if (!failures_.find(file)) return false;
        bool w = failures_.must_wait(file, deletion ? std::string() : content_hash(local_.read(file)), now);
        waiting += w;
        return w;
    };
    std::erase_if(changes.created, [&](const std::string& file) { return waits(file, false); });
    std::erase_if(changes.edited, [&](const std::string& key) { return waits(state_.items.at(key).file, false); });
    std::erase_if(changes.deleted, [&](const std::string& key) { return waits(state_.items.at(key).file, true); });
    failures_.retain_if([&](const std::string& file) { return changed_files.contains(file); });
    if (waiting) log::debug(opts_.label, ": ", waiting, " local change(s) wait (refused, or retried later)");
}

// Deleting many items at once is more likely a wiped disk, a mistaken rm or
// a server that lost its data than the user's wish: ask before mirroring it.
bool CollectionSync::deletion_needs_confirmation(size_t deletions, size_t remaining, const char* side) {
    if (opts_.force_delete || deletions == 0) return false;
    size_t total = deletions + remaining;
    bool emptied = remaining == 0 && total >= 2;
    bool too_many = deletions > opts_.deletion_guard.max_items &&
                    static_cast<double>(deletions) > static_cast<double>(total) * opts_.deletion_guard.max_fraction;
    if (!emptied && !too_many) return false;
    report_.refused_mass_deletion = true;
    report_.refused_reason =
        std::string(side) == "local"
            ? cat(deletions, " of ", total, " items were deleted in ", local_.folder().string(),
                  "; nothing was deleted on the server. Confirm with 'davsyncctl confirm-delete' (or --force-delete)")
            : cat("the server deleted ", deletions, " of ", total,
                  " items; no local file was deleted. Confirm with 'davsyncctl confirm-delete' (or --force-delete)");
    log::error(opts_.label, ": deletion refused: ", report_.refused_reason);
    return true;
}

// --- 2. upload ------------------------------------------------------------------

void CollectionSync::upload(const LocalChanges& changes) {
    if (changes.empty()) return;
    if (remote_.info().read_only) {
        keep_local_changes_of_read_only(changes);
    } else {
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
    }
    save_state();
}

// A read-only collection (a shared calendar, a subscription) takes no
// write: each local change is handled as the server would refuse it, without
// asking it first.
void CollectionSync::keep_local_changes_of_read_only(const LocalChanges& changes) {
    const auto read_only = read_only_refusal();
    for (const auto& key : changes.deleted) {
        check_cancel();
        refuse({state_.items.at(key).file, key, {}, true}, read_only);
    }
    for (const auto& key : changes.edited) {
        check_cancel();
        const auto& file = state_.items.at(key).file;
        refuse({file, key, local_.read(file), false}, read_only);
    }
    for (const auto& file : changes.created) {
        check_cancel();
        refuse({file, std::nullopt, local_.read(file), false}, read_only);
    }
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

    auto w = remote_.put(href, content, dav::PutCondition::create);
    if (w.precondition_failed()) {
        // Something already lives at that href: this very item (an earlier
        // upload whose answer was lost), or another one that took the name.
        auto existing = server_copy(href);
        if (existing && find_uid(existing->data) == uid) {
            state_.items[href_key(href)] = ItemState{href, existing->etag, file, content_hash(existing->data), 0, 0};
            resolve_conflict(href_key(href), content);
            return;
        }
        href = remote_.member_href(random_uuid() + extension(local_.format()));
        w = remote_.put(href, content, dav::PutCondition::create);
    }
    if (!w.ok()) {
        not_taken({file, std::nullopt, content, false}, w);
        return;
    }
    failures_.forget(file);
    record(href_key(href), href, w.etag, file, content_hash(content));
    created_since_token_.insert(href_key(href));
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
    Etag base = item.etag;
    if (base.empty()) {
        // The server gave no usable etag for the version we know (a weak one
        // after a PUT). Look before writing: unchanged there means ours to update.
        auto server = server_copy(item.href);
        if (!server || content_hash(server->data) != item.hash || server->etag.empty()) {
            resolve_conflict(key, content);
            return;
        }
        base = server->etag;
    }
    auto w = remote_.put(item.href, content, dav::PutCondition::if_match, base);
    if (w.ok()) {
        failures_.forget(item.file);
        record(key, item.href, w.etag, item.file, content_hash(content));
        ++report_.uploaded;
        return;
    }
    // 412: the server copy changed since we saw it (404: it is gone).
    if (w.precondition_failed() || w.not_found()) resolve_conflict(key, content);
    else not_taken({item.file, key, content, false}, w);
}

void CollectionSync::upload_deletion(const std::string& key) {
    ItemState item = state_.items.at(key);
    auto w = remote_.remove(item.href, item.etag);
    if (w.ok() || w.not_found()) {
        failures_.forget(item.file);
        state_.items.erase(key);
        if (w.ok()) ++report_.deleted_remote;
        return;
    }
    if (!w.precondition_failed()) {
        not_taken({item.file, key, {}, true}, w);
        return;
    }
    // 412: changed on the server after we last saw it. An edit beats a deletion.
    auto current = server_copy(item.href);
    if (!current) {
        state_.items.erase(key);
        return;
    }
    restore_server_version(key, *current);
    log::info(opts_.label, ": ", item.file, ": deleted here but changed on the server; restored the server's version");
}

// A write the server did not take. A temporary failure is retried later
// with this item's own backoff; anything else is a refusal.
void CollectionSync::not_taken(const Upload& change, const dav::WriteResult& w) {
    if (!w.temporary()) {
        refuse(change, w);
        return;
    }
    failures_.failed_temporarily(change.file, change.hash(), w.status, w.reason, UploadFailures::Clock::now());
    const auto* f = failures_.find(change.file);
    auto wait = f->retry_at - std::chrono::duration_cast<std::chrono::seconds>(
                                  UploadFailures::Clock::now().time_since_epoch()).count();
    log::warning(opts_.label, ": ", change.file, ": the server failed to take ", change.deletion ? "the deletion" : "the change",
                 " (", w.describe(), "); trying again in ", wait, " s (attempt ", f->attempts, ")");
}

// The server will not take this version, however often it is sent. The
// user's version is never lost:
//   - the server has a version: the local one goes to the conflicts folder
//     (with the reason beside it) and the server's is restored;
//   - it has none and forbids writing here (403, read-only): the local file
//     goes to the conflicts folder;
//   - it has none and rejects the content (400, 409, 415, ...): the file
//     stays and is not sent again until the user changes it.
// A refused deletion brings the server's version back.
void CollectionSync::refuse(const Upload& change, const dav::WriteResult& w) {
    ++report_.refused;
    failures_.forget(change.file);
    std::optional<dav::MemberData> server;
    if (change.key) server = server_copy(state_.items.at(*change.key).href);
    const std::string why = cat("refused by the server (", w.describe(), ")");
    if (change.deletion) {
        if (server) restore_server_version(*change.key, *server);
        else state_.items.erase(*change.key);
        log::warning(opts_.label, ": ", change.file, ": deletion ", why,
                     server ? "; restored the server's version" : "; the server no longer has it either");
        return;
    }
    if (server) {
        auto aside = keep_loser(change.file, "local", change.content, why);
        restore_server_version(*change.key, *server);
        log::warning(opts_.label, ": ", change.file, ": change ", why, "; kept it in ", aside.string(),
                     " and restored the server's version");
        return;
    }
    if (w.status == 403) {
        auto aside = keep_loser(change.file, "local", change.content, why);
        local_.remove(change.file);
        if (change.key) state_.items.erase(*change.key);
        report_.removed_files.push_back(change.file);
        log::warning(opts_.label, ": ", change.file, ": ", why, "; moved it to ", aside.string());
        return;
    }
    failures_.refused(change.file, change.hash(), w.status, w.reason);
    log::warning(opts_.label, ": ", change.file, ": ", why, "; left in place, not sent again until it changes");
}

// The server's current version of one item (GET), nullopt when it has none.
// A body that is not a whole item (a connection cut mid-body with a length
// that matched) is never taken for the server's version: it would be
// written here, or lose against our version and be overwritten there.
std::optional<dav::MemberData> CollectionSync::server_copy(const Href& href) {
    auto copy = remote_.get(href);
    if (copy && (!looks_like(local_.format(), copy->data) || !ends_whole(local_.format(), copy->data)))
        throw dav::RemoteError(cat("GET ", url::redact(href.str()), ": the server sent something that is not a whole ",
                                   extension(local_.format()), " item; trying again next sync"),
                               0, std::nullopt);
    return copy;
}

// Puts the server's version of a known item back in the folder.
void CollectionSync::restore_server_version(const std::string& key, const dav::MemberData& server) {
    const std::string file = state_.items.at(key).file;
    auto st = local_.write(file, server.data);
    state_.items[key] = synced(server.href, server.etag, file, content_hash(server.data), st);
    report_.written_files.push_back(file);
    ++report_.downloaded;
}

// --- conflicts --------------------------------------------------------------------

// Both sides changed the item (or a write met a 412). The policy picks the
// version that stays in place; the other one is kept in the conflicts folder.
void CollectionSync::resolve_conflict(const std::string& key, const std::string& local_content) {
    ItemState item = state_.items.at(key);
    auto server = server_copy(item.href);
    if (!server) {
        // Deleted on the server, edited here: the edit wins.
        auto w = remote_.put(item.href, local_content, dav::PutCondition::create);
        if (!w.ok()) {
            not_taken({item.file, key, local_content, false}, w);
            return;
        }
        failures_.forget(item.file);
        record(key, item.href, w.etag, item.file, content_hash(local_content));
        ++report_.uploaded;
        created_since_token_.insert(key);
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
        keep_loser(item.file, "local", local_content, "both sides changed it");
        restore_server_version(key, *server);
    } else {
        keep_loser(item.file, "server", server->data, "both sides changed it");
        auto w = server->etag.empty() ? remote_.put(item.href, local_content, dav::PutCondition::unconditional)
                                      : remote_.put(item.href, local_content, dav::PutCondition::if_match, server->etag);
        if (w.precondition_failed()) {
            log::warning(opts_.label, ": ", item.file, ": changed again on the server while resolving a conflict; retrying next sync");
            return;
        }
        if (!w.ok()) {
            not_taken({item.file, key, local_content, false}, w);
            return;
        }
        failures_.forget(item.file);
        record(key, item.href, w.etag, item.file, content_hash(local_content));
        ++report_.uploaded;
    }
}

// Keeps a version that lost (a conflict, or a refusal) in the conflicts
// folder as <stamp>-<side>-<file>; with a refusal, the server's reason goes
// into <that name>.reason beside it.
std::filesystem::path CollectionSync::keep_loser(const std::string& file, const std::string& side,
                                                 const std::string& content, const std::string& why) {
    fs::make_dirs(opts_.conflicts_dir, 0700);
    // Two conflicts on one file within a second must not share a name: the
    // rename would replace the earlier losing version.
    auto stamp = utc_stamp();
    auto path = opts_.conflicts_dir / cat(stamp, "-", side, "-", file);
    for (int n = 2; std::filesystem::exists(path); ++n) path = opts_.conflicts_dir / cat(stamp, "-", n, "-", side, "-", file);
    fs::write_atomic(path, content, 0600);
    if (why.starts_with("refused")) {
        auto reason = path;
        reason += ".reason";
        fs::write_atomic(reason, why + "\n", 0600);
    } else {
        log::warning(opts_.label, ": conflict on ", file, ": ", why, "; the ", side, " version was set aside in ",
                     path.string());
    }
    return path;
}

// --- 3. pull ----------------------------------------------------------------------

void CollectionSync::pull() {
    if (!remote_.info().supports_sync_collection) pull_by_ctag();
    else if (state_.token.empty()) pull_full_listing();
    else pull_incremental();
}

// Changes since our token, page by page (a 507 means "ask again"). The
// token is saved after each page while no deletion waits; deletions of all
// pages are counted together for the deletion guard and applied at the end.
void CollectionSync::pull_incremental() {
    PageGuard guard(state_.items.size());
    std::set<std::string> gone;
    std::set<std::string> seen;  // every key the pages named, to check our own creations against
    SyncToken cursor = state_.token;
    for (;;) {
        check_cancel();
        dav::ChangePage page;
        try {
            if (first_page_ && first_page_->first == cursor) page = std::move(std::exchange(first_page_, std::nullopt)->second);
            else page = remote_.changes_since(cursor);
        } catch (const dav::RemoteError& e) {
            // Xandikos before 0.2.10 answers a token it no longer knows with a
            // bare 500. Recover the same way; a server that is really broken
            // fails the listing too.
            if (e.status != 500 || cursor != state_.token) throw;
            log::warning(opts_.label, ": ", e.what(), " on our sync token; treating the token as invalid");
            recover_with_listing();
            return;
        } catch (const dav::InvalidSyncToken& e) {
            if (cursor != state_.token) throw;  // a token the server gave a moment ago
            log::warning(opts_.label, ": ", e.what(), "; listing everything to recover");
            recover_with_listing();
            return;
        }
        std::vector<Href> fetch;
        for (const auto& c : page.changed) {
            seen.insert(href_key(c.href));
            gone.erase(href_key(c.href));
            auto it = state_.items.find(href_key(c.href));
            if (it == state_.items.end() || it->second.etag.empty() || it->second.etag != c.etag) fetch.push_back(c.href);
        }
        for (const auto& h : page.deleted) {
            seen.insert(href_key(h));
            if (state_.items.contains(href_key(h))) gone.insert(href_key(h));
        }
        download(fetch);
        auto asked = std::exchange(cursor, page.token);
        // Resumable page by page, while nothing waits to be checked at the end.
        if (gone.empty() && created_since_token_.empty()) {
            state_.token = cursor;
            save_state();
        }
        if (!page.truncated) break;
        if (auto stop = guard.next(asked, page); !stop.empty()) {
            log::warning(opts_.label, ": ", stop, "; listing the collection instead");
            pull_by_listing();
            return;
        }
        log::debug(opts_.label, ": result truncated by the server; asking for the rest");
    }
    // An item we created after our token and the server deleted since may
    // go unreported: RFC 6578 §3.5 lets a server omit what was created and
    // removed after the token (Xandikos 0.2.8 does). Look at each one that
    // the report did not name.
    for (const auto& key : created_since_token_) {
        auto it = state_.items.find(key);
        if (seen.contains(key) || it == state_.items.end()) continue;
        if (server_copy(it->second.href)) continue;
        log::info(opts_.label, ": ", it->second.file, ": created here after the last sync, deleted on the server since");
        gone.insert(key);
    }
    if (deletion_needs_confirmation(gone.size(), state_.items.size() - gone.size(), "server")) return;
    for (const auto& key : gone) apply_remote_deletion(key);
    state_.token = cursor;
    token_covers_all();
    save_state();
}

// The server no longer knows our token: list every member with its etag
// (sync-collection from scratch, page by page; only the hrefs are kept
// across pages) and reconcile with what we hold. Local edits were uploaded
// before, so nothing of ours is lost.
void CollectionSync::recover_with_listing() {
    PageGuard guard(state_.items.size());
    std::set<std::string> present;
    SyncToken token;
    for (;;) {
        check_cancel();
        auto page = remote_.changes_since(token);
        std::vector<Href> fetch;
        for (const auto& c : page.changed) {
            present.insert(href_key(c.href));
            auto it = state_.items.find(href_key(c.href));
            if (it == state_.items.end() || it->second.etag.empty() || it->second.etag != c.etag) fetch.push_back(c.href);
        }
        download(fetch);
        auto asked = std::exchange(token, page.token);
        if (!page.truncated) break;
        if (auto stop = guard.next(asked, page); !stop.empty()) {
            log::warning(opts_.label, ": ", stop, "; listing the collection instead");
            pull_by_listing();
            return;
        }
    }
    std::vector<std::string> gone;
    for (const auto& [key, item] : state_.items)
        if (!present.contains(key)) gone.push_back(key);
    if (deletion_needs_confirmation(gone.size(), state_.items.size() - gone.size(), "server")) return;
    for (const auto& key : gone) apply_remote_deletion(key);
    state_.token = token;
    token_covers_all();
    save_state();
}

// First sync: the cheapest complete listing. The token is read first, so
// anything that changes while we list is reported again next time.
//
// Members are written as they arrive; the deletions the listing implies are
// judged once it is complete (what arrived is on disk and recorded either way).
void CollectionSync::pull_full_listing() {
    auto token = remote_.current_token();
    std::set<std::string> present;
    receive([&](const auto& sink) { remote_.list_all(sink); }, &present);
    std::vector<std::string> gone;
    for (const auto& [key, item] : state_.items)
        if (!present.contains(key)) gone.push_back(key);
    if (deletion_needs_confirmation(gone.size(), state_.items.size() - gone.size(), "server")) {
        save_state();  // the members that did arrive, under the old token
        return;
    }
    for (const auto& key : gone) apply_remote_deletion(key);
    state_.token = token;
    token_covers_all();
    save_state();
}

// When sync-collection paging goes nowhere: one PROPFIND of every etag,
// after reading the token, reconciled like a ctag listing. A server that
// cannot give a token here fails the collection with a clear error.
void CollectionSync::pull_by_listing() {
    auto token = remote_.current_token();
    if (token.empty())
        throw dav::RemoteError(cat(opts_.label, ": sync-collection never finished and the collection has no sync-token"),
                               0, std::nullopt);
    reconcile_listing(remote_.list_etags());
    if (report_.refused_mass_deletion) return;
    state_.token = token;
    token_covers_all();
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
    token_covers_all();
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
    if (deletion_needs_confirmation(gone.size(), state_.items.size() - gone.size(), "server")) return;
    download(fetch);
    for (const auto& key : gone) apply_remote_deletion(key);
}

void CollectionSync::download(const std::vector<Href>& hrefs) {
    for (size_t i = 0; i < hrefs.size(); i += opts_.multiget_batch) {
        check_cancel();
        auto end = std::min(hrefs.size(), i + opts_.multiget_batch);
        std::vector<Href> batch(hrefs.begin() + static_cast<std::ptrdiff_t>(i), hrefs.begin() + static_cast<std::ptrdiff_t>(end));
        receive([&](const auto& sink) { remote_.multiget(batch, sink); });
    }
}

void CollectionSync::receive(const std::function<void(const dav::RemoteCollection::MemberSink&)>& list,
                             std::set<std::string>* present) {
    // One journal fsync and one syncfs per batch: large enough that a first
    // sync of 50 000 items pays for a dozen, small enough to stay a few MB.
    constexpr size_t kBatchItems = 4096;
    constexpr size_t kBatchBytes = 8u << 20;
    std::vector<dav::MemberData> batch;
    size_t bytes = 0;
    auto flush = [&] {
        store_downloads(batch);
        batch.clear();
        bytes = 0;
    };
    list([&](dav::MemberData&& m) {
        if (present) present->insert(href_key(m.href));
        bytes += m.data.size();
        batch.push_back(std::move(m));
        if (batch.size() >= kBatchItems || bytes >= kBatchBytes) flush();
    });
    flush();
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
    std::set<std::string> keys_seen;
    for (const auto& item : items) {
        // A response repeated in one multistatus (a proxy, a server bug) is
        // one item: written twice it would become a second file, and then a
        // second copy on the server.
        if (!keys_seen.insert(href_key(item.href)).second) continue;
        // An item cut short (a body truncated with a length that matched) is
        // fetched again next sync rather than written or skipped for good.
        if (looks_like(local_.format(), item.data) && !ends_whole(local_.format(), item.data))
            throw dav::RemoteError(cat(url::redact(item.href.str()), ": the server sent an item cut short; trying again next sync"),
                                   0, std::nullopt);
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
            if (adopt_own_creation(item)) continue;
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
        // The name actually written: another program may have taken ours meanwhile.
        state_.items[p->key] = synced(p->item->href, p->item->etag, st.name, p->hash, st);
        report_.written_files.push_back(st.name);
        ++report_.downloaded;
    }
    if (done.size() < plan.size()) check_cancel();
    for (const auto& key : edited_meanwhile) resolve_conflict(key, local_.read(state_.items.at(key).file));
}

// A new member whose name is that of a local file the state does not know,
// holding the same UID: our own creation, which the server took although
// we never heard (an answer lost to a reset, a 5xx after the write). It is
// recorded as the server's version of that file, whose content then
// decides: the same, synced; different, an edit to upload. Downloading it
// under another name would make a second file, and then a second copy on
// the server.
bool CollectionSync::adopt_own_creation(const dav::MemberData& item) {
    std::string name = url::last_segment(item.href.str());
    if (!local_.valid_name(name) || !local_.stat(name)) return false;
    if (!known_files_) {
        known_files_.emplace();
        for (const auto& [key, st] : state_.items) known_files_->insert(st.file);
    }
    if (known_files_->contains(name)) return false;
    auto uid = find_uid(item.data);
    if (!uid || find_uid(local_.read(name)) != uid) return false;
    // No stamp: the next scan compares contents.
    state_.items[href_key(item.href)] = ItemState{item.href, item.etag, name, content_hash(item.data), 0, 0, 0};
    known_files_->insert(name);
    failures_.forget(name);
    log::info(opts_.label, ": ", name, ": the server has our upload of it already; adopted");
    return true;
}

// The server deleted an item. Delete the file, unless it was edited here:
// then the edit wins and goes back to the server.
void CollectionSync::apply_remote_deletion(const std::string& key) {
    ItemState item = state_.items.at(key);
    if (local_file_changed(item)) {
        Upload change{item.file, key, local_.read(item.file), false};
        if (remote_.info().read_only) {
            refuse(change, read_only_refusal());
            return;
        }
        auto w = remote_.put(item.href, change.content, dav::PutCondition::create);
        if (!w.ok()) {
            not_taken(change, w);
            return;
        }
        failures_.forget(item.file);
        record(key, item.href, w.etag, item.file, content_hash(change.content));
        ++report_.uploaded;
        created_since_token_.insert(key);
        log::info(opts_.label, ": ", item.file, ": deleted on the server but edited here; uploaded again");
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
    save_summary();
    save_created();
    std::error_code ec;
    std::filesystem::remove(journal_path(opts_.state_file), ec);
}

// The token covers everything now: a later deletion of those items is
// reported like any other.
void CollectionSync::token_covers_all() { created_since_token_.clear(); }

std::set<std::string> CollectionSync::load_created() {
    std::set<std::string> out;
    std::error_code ec;
    if (!std::filesystem::exists(created_path(opts_.state_file), ec)) return out;
    auto j = nlohmann::json::parse(fs::read_file(created_path(opts_.state_file)), nullptr, false);
    if (j.is_array())
        for (const auto& k : j)
            if (k.is_string()) out.insert(k.get<std::string>());
    created_on_disk_ = out;
    return out;
}

void CollectionSync::save_created() {
    if (created_since_token_ == created_on_disk_) return;
    std::error_code ec;
    if (created_since_token_.empty()) {
        std::filesystem::remove(created_path(opts_.state_file), ec);
    } else {
        nlohmann::json keys = nlohmann::json::array();
        for (const auto& k : created_since_token_) keys.push_back(k);
        fs::write_atomic(created_path(opts_.state_file), keys.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                         0600);
    }
    created_on_disk_ = created_since_token_;
}

}  // namespace davsyncd::sync
