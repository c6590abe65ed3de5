#include "app/account_runtime.hpp"

#include <malloc.h>
#include <sys/inotify.h>

#include <chrono>
#include <map>
#include <unordered_set>

#include "app/commands.hpp"
#include "core/log.hpp"
#include "sync/collection_sync.hpp"
#include "secrets/secret_service.hpp"

namespace davsyncd::app {

// What a job needs, copied from the main loop's state when it starts.
struct AccountRuntime::JobInput {
    account::SyncRequest request;
    std::set<std::string> deletions_confirmed;  // folders whose refused deletions the user confirmed
    config::Account account;
    std::filesystem::path state_dir;
    bool rediscover = false;
    push::MaintainInput push;
    push::Subscriptions subscriptions;
};

struct AccountRuntime::JobResult {
    uint64_t id = 0;
    account::SyncOutcome outcome;
    std::string error;
    std::vector<std::string> summary;
    std::unique_ptr<dav::HttpClient> new_http;  // made by the job when none was lent
    std::optional<std::vector<sync::PlannedCollection>> plans;
    std::map<std::string, sync::SyncReport> reports;  // by folder
    std::map<std::string, uint32_t> local_counts;      // by folder, for collections that failed
    std::vector<sync::RemovedCollection> removed;       // gone from the server, moved aside
    push::Subscriptions subscriptions;
    push::MaintainResult maintenance;
};

uint64_t unix_usec_now() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
}

namespace {

const char* to_string(account::SyncOutcome::Kind k) {
    switch (k) {
        case account::SyncOutcome::Kind::ok: return "ok";
        case account::SyncOutcome::Kind::error: return "error";
        case account::SyncOutcome::Kind::auth_failed: return "auth-failed";
        case account::SyncOutcome::Kind::cancelled: return "cancelled";
    }
    return "error";
}

std::vector<std::string> split_reasons(unsigned reasons) {
    std::vector<std::string> out;
    std::string all = account::reasons_to_string(reasons);
    size_t pos = 0;
    while (pos < all.size()) {
        auto comma = all.find(',', pos);
        out.push_back(all.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
        if (comma == std::string::npos) break;
        pos = comma + 1;
    }
    return out;
}

// Only item files count: our own temporary files and metadata do not.
bool is_item_event(const std::string& name) {
    if (name.empty() || name.front() == '.' || name.ends_with(".tmp")) return false;
    return name.ends_with(".ics") || name.ends_with(".vcf");
}

// A steady-clock instant as microseconds since the Unix epoch.
uint64_t to_unix_usec(account::TimePoint when, account::TimePoint now) {
    auto delta = std::chrono::duration_cast<std::chrono::microseconds>(when - now).count();
    auto n = static_cast<int64_t>(unix_usec_now()) + delta;
    return n > 0 ? static_cast<uint64_t>(n) : 0;
}

account::Settings settings_for(const config::Account& a) {
    account::Settings s;
    s.interval = a.sync_interval;
    s.random = [] { return static_cast<double>(std::rand()) / (static_cast<double>(RAND_MAX) + 1.0); };
    return s;
}

}  // namespace

AccountRuntime::AccountRuntime(core::EventLoop& loop, sdbus::IConnection& bus, const config::Config& cfg,
                               config::Account account, push::Transport* connector,
                               std::function<void()> on_state_changed)
    : loop_(loop),
      bus_(bus),
      account_(std::move(account)),
      state_dir_(account_state_dir(cfg, account_)),
      on_state_changed_(std::move(on_state_changed)),
      scheduler_(settings_for(account_)),
      timer_(loop, [this] { contained("scheduling", [&] { pump(); }); }),
      renewal_(loop, [this] {
          contained("renewing push subscriptions", [&] {
              scheduler_.trigger(loop_.now(), account::Reason::renew);
              pump();
          });
      }),
      folders_(loop, [this](const std::string& folder, const std::string& name, uint32_t mask) {
          contained("a folder event", [&] { on_folder_event(folder, name, mask); });
      }),
      connector_(connector),
      push_file_(state_dir_ / "push.json"),
      keys_file_(state_dir_ / "push-keys.json") {
    // Push keys and token: made once, kept across restarts (0600). A disk
    // that refuses them is this account's error, not the daemon's end.
    bool fresh_keys = !std::filesystem::exists(keys_file_);
    try {
        if (!fresh_keys) keys_ = push::KeyPair::load(keys_file_);
    } catch (const std::exception& e) {
        log::warning("account '", account_.id, "': push keys unusable (", e.what(), "); making new ones");
        fresh_keys = true;
    }
    if (fresh_keys) {
        keys_ = push::KeyPair::generate();
        try {
            keys_->save(keys_file_);
        } catch (const std::exception& e) {
            last_error_ = cat("cannot save the push keys: ", e.what());
            log::error("account '", account_.id, "': ", last_error_);
        }
    }
    push_ = push::AccountPushState::load(push_file_);
    if (auto failed = save_push_state(); !failed.empty()) last_error_ = failed;

    bus::AccountValues v;
    v.id = account_.id;
    v.url = url::redact(account_.url);
    v.state = account::to_string(scheduler_.state());
    object_ = std::make_unique<bus::AccountObject>(bus_, object_path(), v, [this] { request_sync(); });

    // Collections known from an earlier run appear at once (no network here).
    if (auto known = sync::load_discovery(state_dir_)) {
        adopt_plans(sync::plan_collections(account_, state_dir_, *known));
        // What the folders hold, until a sync says more: a server that is
        // down at start must not make them look empty (one readdir each).
        for (const auto& plan : plans_) collections_[plan.folder].items = static_cast<uint32_t>(sync::count_local_items(plan));
        register_for_push();
    }

    scheduler_.start(loop_.now());
    pump();
}

AccountRuntime::~AccountRuntime() {
    *alive_ = false;
    cancel_ = true;
    if (job_.joinable()) job_.join();
}

std::string AccountRuntime::object_path() const { return bus::account_path(account_.id); }

void AccountRuntime::request_sync(const std::set<std::string>& collections) {
    if (scheduler_.state() == account::State::disabled)
        throw sdbus::Error(bus::error::kDisabled, cat("account '", account_.id, "' is disabled"));
    scheduler_.trigger(loop_.now(), account::Reason::user, collections);
    pump();
}

void AccountRuntime::confirm_deletion(const std::string& folder) {
    auto it = collections_.find(folder);
    if (it == collections_.end() || it->second.deletion_refused.empty())
        throw sdbus::Error(bus::error::kNothingToConfirm,
                           cat("collection '", account_.id, "/", folder, "' has no refused deletion to confirm"));
    log::info(account_.id, "/", folder, ": the user confirmed the refused deletion; syncing");
    it->second.deletion_confirmed = true;
    request_sync({folder});
}

void AccountRuntime::credentials_changed() {
    log::info("account '", account_.id, "': credentials may have changed; reading them again");
    if (job_running()) stale_credentials_ = true;
    else http_.reset();
    scheduler_.credentials_changed(loop_.now());
    pump();
}

// Push subscriptions whose renewal fell due while asleep are renewed (or
// registered again) by this sync's maintenance, which reads the wall clock;
// the renewal timer, late by the time slept, is re-armed when it ends.
void AccountRuntime::woke(account::Reason why, core::Duration stagger) {
    contained("a resume", [&] {
        scheduler_.woke(loop_.now(), why, stagger);
        pump();
    });
}

void AccountRuntime::cancel() { cancel_ = true; }

// After every event: start what is due, arm the timer for the next
// decision, publish the state.
void AccountRuntime::pump() {
    auto now = loop_.now();
    if (!job_running())
        if (auto request = scheduler_.take_start(now)) start_job(*request);
    if (auto wake = scheduler_.next_wakeup()) timer_.schedule_at(*wake);
    else timer_.cancel();
    publish();
    if (on_state_changed_) on_state_changed_();
}

void AccountRuntime::start_job(const account::SyncRequest& request) {
    running_id_ = request.id;
    cancel_ = false;
    log::debug("account '", account_.id, "': sync ", request.id, " starts (", account::reasons_to_string(request.reasons), ")");
    object_->sync_started(request.id, split_reasons(request.reasons));
    JobInput in{request, {}, account_, state_dir_, rediscover_, {}, push_.subscriptions};
    rediscover_ = false;
    for (auto& [folder, status] : collections_)
        if (status.deletion_confirmed && (request.collections.empty() || request.collections.contains(folder))) {
            in.deletions_confirmed.insert(folder);
            status.deletion_confirmed = false;
        }
    in.push.endpoint = push_.endpoint;
    in.push.public_key = push::base64url_encode(keys_->public_key());
    in.push.auth_secret = push::base64url_encode(keys_->auth_secret());
    in.push.now = std::chrono::system_clock::now();
    for (const auto& plan : plans_)
        if (!request.collections.empty() && request.collections.contains(plan.folder)) pending_pushes_[plan.folder] = 0;
    if (request.collections.empty()) pending_pushes_.clear();
    std::weak_ptr<bool> alive = alive_;
    job_ = std::thread([this, in = std::move(in), http = http_.get(), alive]() mutable {
        auto result = std::make_shared<JobResult>(run_job(std::move(in), http, &cancel_));
        loop_.post([this, alive, result] {
            if (auto a = alive.lock(); a && *a) contained("finishing a sync", [&] { finish_job(std::move(*result)); });
        });
    });
}

AccountRuntime::JobResult AccountRuntime::run_job(JobInput in, dav::HttpClient* http, const std::atomic<bool>* cancel) {
    const auto& request = in.request;
    const auto& account = in.account;
    const auto& state_dir = in.state_dir;
    JobResult r;
    r.subscriptions = in.subscriptions;
    r.id = request.id;
    std::set<std::string> failed;  // folders whose sync failed
    try {
        if (!http) {
            // Runs password_command or asks the Secret Service: never on the main
            // loop. Only a user's request may bring up the keyring's unlock prompt.
            r.new_http = make_client_ptr(account, cancel, (request.reasons & account::Reason::user) != 0);
            http = r.new_http.get();
        }
        // Every request stops within a second of a stop, a reload or a disable.
        http->set_cancel(cancel);
        // A user's Sync() and a poll look for collections created, shared or
        // deleted on the server meanwhile; so does a push about properties.
        bool look_again = in.rediscover || (request.reasons & (account::Reason::user | account::Reason::interval));
        auto found = look_again ? sync::rediscover(*http, account, state_dir)
                                : sync::cached_or_rediscovered(*http, account, state_dir, kDiscoveryMaxAge);
        r.removed = std::move(found.removed);
        auto& collections = found.collections;
        auto plans = sync::plan_collections(account, state_dir, collections);
        // Subscriptions first, so that our own writes below already carry
        // Push-Dont-Notify and changes by others during the sync are pushed.
        r.maintenance = push::maintain(*http, plans, in.push, r.subscriptions);
        http->set_write_decorator(push::dont_notify_decorator(r.subscriptions));
        // Only the renewal of push subscriptions is due: no collection is synced.
        if (request.reasons == account::Reason::renew) {
            r.plans = std::move(plans);
            r.outcome.kind = account::SyncOutcome::Kind::ok;
            return r;
        }
        // Only a folder event asked: a scan that finds nothing costs no request.
        bool local_only = request.reasons == account::Reason::local_change;
        bool collection_gone = false;
        for (const auto& plan : plans) {
            if (!request.collections.empty() && !request.collections.contains(plan.folder)) continue;
            try {
                auto report = sync::sync_collection(*http, plan, account,
                                                    {.force_delete = in.deletions_confirmed.contains(plan.folder),
                                                     .local_trigger_only = local_only,
                                                     .cancel = cancel});
                auto line = sync::summary(plan.label, report);
                if (report.requests || report.written_files.size() || report.removed_files.size())
                    log::info(log::Context{account.id, plan.folder, log::message::sync_done}, line);
                r.summary.push_back(line);
                r.outcome.tokens[plan.folder] = report.token;
                // A refused deletion waits for the user (Collection1.DeletionRefused);
                // it is no failure to retry, and the account's other collections go on.
                r.reports[plan.folder] = std::move(report);
            } catch (const dav::RemoteError& e) {
                if (e.auth_failed()) throw;
                collection_gone |= e.status == 404 || e.status == 410;
                log::error(log::Context{account.id, plan.folder, log::message::sync_failed}, plan.label,
                           ": sync failed: ", e.what());
                r.summary.push_back(cat(plan.label, ": FAILED: ", e.what()));
                r.error = e.what();
                r.outcome.retry_after = e.retry_after;
                failed.insert(plan.folder);
            } catch (const sync::Cancelled&) {
                throw;
            } catch (const dav::Cancelled&) {
                throw;
            } catch (const std::exception& e) {
                log::error(log::Context{account.id, plan.folder, log::message::sync_failed}, plan.label,
                           ": sync failed: ", e.what());
                r.summary.push_back(cat(plan.label, ": FAILED: ", e.what()));
                r.error = e.what();
                failed.insert(plan.folder);
            }
        }
        for (const auto& plan : plans)
            if (failed.contains(plan.folder)) r.local_counts[plan.folder] = static_cast<uint32_t>(sync::count_local_items(plan));
        if (collection_gone && !found.discovered) {
            // A collection answered 404/410: deleted or unshared on the server.
            // Look now rather than failing every sync until the next discovery.
            log::info("account '", account.id, "': a collection is gone from the server; discovering again");
            auto again = sync::rediscover(*http, account, state_dir);
            plans = sync::plan_collections(account, state_dir, again.collections);
            // Its failure was the collection's going, not the account's.
            for (auto& gone : again.removed) {
                failed.erase(gone.folder);
                r.removed.push_back(std::move(gone));
            }
        }
        r.plans = std::move(plans);
        r.outcome.kind = failed.empty() ? account::SyncOutcome::Kind::ok : account::SyncOutcome::Kind::error;
    } catch (const sync::Cancelled& e) {
        r.outcome.kind = account::SyncOutcome::Kind::cancelled;
        r.error = e.what();
    } catch (const dav::Cancelled& e) {
        r.outcome.kind = account::SyncOutcome::Kind::cancelled;
        r.error = e.what();
    } catch (const dav::RemoteError& e) {
        r.outcome.kind = e.auth_failed() ? account::SyncOutcome::Kind::auth_failed : account::SyncOutcome::Kind::error;
        r.outcome.retry_after = e.retry_after;
        r.error = e.what();
        log::error("account '", account.id, "': ", e.what());
    } catch (const secrets::SecretError& e) {
        // No item, or a locked keyring on a sync no user asked for: waits for
        // the user (set-password, sync, reload) like a refused password.
        r.outcome.kind = e.needs_user() ? account::SyncOutcome::Kind::auth_failed : account::SyncOutcome::Kind::error;
        r.error = e.what();
        log::error(e.what());
    } catch (const std::exception& e) {
        r.outcome.kind = account::SyncOutcome::Kind::error;
        r.error = e.what();
        log::error("account '", account.id, "': ", e.what());
    }
    return r;
}

void AccountRuntime::finish_job(JobResult r) {
    job_.join();
    if (r.new_http) http_ = std::move(r.new_http);
    // A refused password is read again (password_command runs again) before
    // the next attempt: the user may have fixed it meanwhile.
    if (r.outcome.kind == account::SyncOutcome::Kind::auth_failed || std::exchange(stale_credentials_, false))
        http_.reset();
    // Saved before the scheduler hears the outcome: a full or read-only disk
    // is this account's error, retried with backoff like any other.
    if (r.subscriptions != push_.subscriptions || r.maintenance.registered || r.maintenance.renewed) {
        push_.subscriptions = r.subscriptions;
        if (auto failed = save_push_state(); !failed.empty() && r.outcome.kind == account::SyncOutcome::Kind::ok) {
            r.outcome.kind = account::SyncOutcome::Kind::error;
            r.error = failed;
        }
    }
    scheduler_.finished(loop_.now(), r.outcome);

    last_sync_ = unix_usec_now();
    last_result_ = to_string(r.outcome.kind);
    if (r.outcome.kind == account::SyncOutcome::Kind::ok) {
        last_success_ = last_sync_;
        last_error_.clear();
    } else {
        last_error_ = r.error;
    }
    if (r.plans) adopt_plans(std::move(*r.plans));
    for (const auto& [folder, token] : r.outcome.tokens) tokens_[folder] = token;
    register_for_push();
    if (!push_.endpoint.empty()) {
        bool all = true, any = false;
        for (const auto& plan : plans_)
            if (plan.info.push.usable()) {
                any = true;
                all &= push_.subscriptions.contains(plan.info.url);
            }
        if (!r.maintenance.errors.empty()) set_push_state("failed");
        else if (any && all) set_push_state("active");
    }
    schedule_renewal();
    for (const auto& [folder, count] : r.local_counts)
        if (auto it = collections_.find(folder); it != collections_.end()) it->second.items = count;
    for (const auto& gone : r.removed) object_->collection_removed(gone.id, gone.folder, gone.kept_at.string());
    for (auto& [folder, report] : r.reports) {
        auto it = collections_.find(folder);
        if (it == collections_.end()) continue;
        it->second.items = static_cast<uint32_t>(report.items);
        it->second.pending_uploads = report.pending_uploads;
        it->second.refused_uploads = report.refused_uploads;
        it->second.deletion_refused = report.refused_mass_deletion ? report.refused_reason : "";
        if (!report.refused_mass_deletion) it->second.last_sync = last_sync_;
        if (it->second.object) it->second.object->changed(report.written_files, report.removed_files);
    }
    // Folder events of the job's own writes are dropped; any other file
    // changed during the sync is a local change to sync next. (A first sync
    // writes 10 000 files and sees as many events: look-ups, not scans.)
    std::map<std::filesystem::path, std::unordered_set<std::string>> ours;
    for (const auto& plan : plans_) {
        auto it = r.reports.find(plan.folder);
        if (it == r.reports.end()) continue;
        auto& names = ours[plan.local_dir];
        names.insert(it->second.written_files.begin(), it->second.written_files.end());
        names.insert(it->second.removed_files.begin(), it->second.removed_files.end());
    }
    auto events = std::move(events_during_job_);
    events_during_job_.clear();
    for (const auto& [folder, name] : events) {
        auto it = ours.find(std::filesystem::path(folder));
        if (it == ours.end() || !it->second.contains(name)) note_local_change(folder);
    }
    std::string summary;
    for (const auto& line : r.summary) summary += (summary.empty() ? "" : "\n") + line;
    object_->sync_finished(r.id, last_result_, summary);
    pump();
    // A first sync of 10 000 items leaves tens of megabytes free in the
    // malloc arenas (the job thread's above all); give them back, as the
    // daemon will now idle for minutes or hours.
    r = JobResult{};
    events = {};
    ::malloc_trim(0);
    // Test-only: proves that an exception escaping a loop callback stays
    // with this account (tests/integration/test_contained.py).
    if (const char* hook = std::getenv("DAVSYNCD_TEST_THROW_AFTER_SYNC"); hook && account_.id == hook)
        throw std::runtime_error("injected by DAVSYNCD_TEST_THROW_AFTER_SYNC");
}

// The push state on disk (0600). A failure (ENOSPC, EROFS, EACCES) is
// returned as a message naming the file, never thrown into the loop.
std::string AccountRuntime::save_push_state() {
    try {
        push_.save(push_file_);
        return {};
    } catch (const std::exception& e) {
        auto what = cat("cannot save the push state: ", e.what());
        log::error("account '", account_.id, "': ", what);
        return what;
    }
}

// One entry point of this account from the loop. Whatever it throws puts
// this account into an error state; the daemon, the bus and the other
// accounts go on.
void AccountRuntime::contained(const char* what, const std::function<void()>& step) noexcept {
    try {
        step();
    } catch (const std::exception& e) {
        log::error("account '", account_.id, "': internal error while ", what, ": ", e.what(), " (contained)");
        last_result_ = "error";
        last_error_ = cat("internal error while ", what, ": ", e.what());
        try {
            publish();
        } catch (const std::exception& again) {
            log::error("account '", account_.id, "': cannot publish the error: ", again.what());
        }
    }
}

void AccountRuntime::on_folder_event(const std::string& folder, const std::string& name, uint32_t mask) {
    if (mask & IN_Q_OVERFLOW) {
        scheduler_.trigger(loop_.now(), account::Reason::local_change);  // events were lost: look at everything
        pump();
        return;
    }
    if (!is_item_event(name)) return;
    if (job_running()) {
        events_during_job_.emplace_back(folder, name);  // sorted out in finish_job()
        return;
    }
    if (note_local_change(folder)) pump();
}

// A local change in one of our folders: the scheduler debounces it.
bool AccountRuntime::note_local_change(const std::string& folder) {
    for (const auto& plan : plans_) {
        if (plan.local_dir == std::filesystem::path(folder)) {
            scheduler_.trigger(loop_.now(), account::Reason::local_change, {plan.folder});
            return true;
        }
    }
    return false;
}

// Takes the collections of the latest discovery: objects and folder watches
// for new ones, InterfacesRemoved for those that went away.
void AccountRuntime::adopt_plans(std::vector<sync::PlannedCollection> plans) {
    std::set<std::string> keep;
    for (const auto& plan : plans) {
        keep.insert(plan.folder);
        auto& status = collections_[plan.folder];
        if (!status.object) {
            status.object = std::make_unique<bus::CollectionObject>(
                bus_, bus::collection_path(account_.id, plan.folder), collection_values(plan),
                bus::CollectionObject::Handlers{[this, folder = plan.folder] { request_sync({folder}); },
                                                [this, folder = plan.folder] { confirm_deletion(folder); }});
        }
        // The folder exists once the first sync wrote it; adding again is harmless.
        if (std::filesystem::is_directory(plan.local_dir))
            folders_.add(plan.local_dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE);
    }
    for (auto it = collections_.begin(); it != collections_.end();) {
        if (keep.contains(it->first)) {
            ++it;
            continue;
        }
        for (const auto& old : plans_)
            if (old.folder == it->first) folders_.remove(old.local_dir);
        it = collections_.erase(it);
    }
    plans_ = std::move(plans);
}

// --- push -------------------------------------------------------------------------

// Registers our token with the distributor once there is something to
// subscribe, and again when the server's VAPID key changed (the endpoint
// must be bound to it).
void AccountRuntime::register_for_push() {
    if (!connector_) return;
    std::string vapid;
    bool capable = false;
    for (const auto& plan : plans_) {
        if (!plan.info.push.usable()) continue;
        capable = true;
        if (vapid.empty()) vapid = plan.info.push.vapid_public_key;
    }
    if (!capable) return;
    if (registered_ && vapid == registered_vapid_) return;
    if (registered_) log::info("account '", account_.id, "': the server's push key changed; registering again");
    registered_ = true;
    registered_vapid_ = vapid;
    // The connector registers now, or when a distributor appears.
    connector_->add({push_.token, cat("davsyncd: ", account_.id), vapid, state_dir_});
    if (!connector_->transport().empty() && push_state_ != "active") set_push_state("registering");
}

// Arms the renewal timer for the earliest subscription due; a subscription
// that expired without renewal shows as "lapsed" (polling covers it).
void AccountRuntime::schedule_renewal() {
    auto due = push::next_renewal(push_.subscriptions);
    if (!due) {
        renewal_.cancel();
        return;
    }
    auto now = std::chrono::system_clock::now();
    for (const auto& [collection, sub] : push_.subscriptions)
        if (sub.expires && *sub.expires <= now) set_push_state("lapsed");
    // At least a few seconds apart: a server granting seconds must not make us spin.
    auto in = std::max<std::chrono::system_clock::duration>(*due - now, std::chrono::seconds(5));
    renewal_.schedule_in(std::chrono::duration_cast<core::Duration>(in));
}

// The connector itself registers every known token with a new distributor;
// here only the state follows.
void AccountRuntime::push_distributor_changed() {
    if (connector_->transport().empty()) set_push_state("poll-only");
    else if (registered_ && push_state_ != "active") set_push_state("registering");
    publish();  // PushTransport
}

void AccountRuntime::set_push_state(std::string state) {
    if (state == push_state_) return;
    log::info("account '", account_.id, "': push ", state);
    push_state_ = std::move(state);
    // The spec wants polling to go on; while push works it is a safety net.
    auto interval = std::chrono::duration_cast<account::Duration>(account_.sync_interval);
    if (push_state_ == "active") interval = std::max<account::Duration>(interval * 4, std::chrono::hours(1));
    scheduler_.set_interval(loop_.now(), interval);
    pump();
}

void AccountRuntime::push_endpoint(const std::string& endpoint) {
    if (endpoint == push_.endpoint && push_state_ == "active") return;
    // The endpoint is a capability URL: its origin only.
    log::info("account '", account_.id, "': push endpoint on ", url::origin_of(endpoint).value_or("?"));
    push_.endpoint = endpoint;
    if (auto failed = save_push_state(); !failed.empty()) last_error_ = failed;
    // The next sync (re-)registers every subscription with it.
    scheduler_.trigger(loop_.now(), account::Reason::config);
    pump();
}

void AccountRuntime::push_lost(const std::string& why) {
    log::warning(log::Context{account_.id, {}, log::message::push_lost}, "account '", account_.id, "': push lost: ", why,
                 "; polling");
    set_push_state(connector_->transport().empty() ? "poll-only" : "failed");
}

// A message from the server, through the distributor: decrypt, parse, and
// turn it into a push trigger carrying the collection's new sync-token.
void AccountRuntime::push_message(const std::vector<uint8_t>& body) {
    ++pushes_received_;
    push::PushMessage msg;
    try {
        auto plain = keys_->decrypt(body);
        msg = push::parse_push_message(std::string(plain.begin(), plain.end()));
    } catch (const std::exception& e) {
        ++pushes_rejected_;
        log::warning("account '", account_.id, "': push message dropped (", e.what(), "); ", pushes_rejected_,
                     " dropped so far");
        return;
    }
    if (!msg.topic) {
        if (msg.transports_changed) {
            // The server rotated its VAPID key: fetch it, then a new endpoint.
            log::info("account '", account_.id, "': the server announced new push transports");
            rediscover_ = true;
            scheduler_.trigger(loop_.now(), account::Reason::push);
            pump();
        }
        return;
    }
    for (const auto& plan : plans_) {
        if (plan.info.push.topic != *msg.topic) continue;
        if (msg.property_update) rediscover_ = true;
        auto stored = tokens_[plan.folder];
        if (scheduler_.push(loop_.now(), plan.folder, msg.sync_token, stored)) ++pending_pushes_[plan.folder];
        else log::debug(plan.label, ": push for token we already hold; nothing to do");
        pump();
        return;
    }
    log::debug("account '", account_.id, "': push for an unknown topic ", msg.topic->str());
}

bus::CollectionValues AccountRuntime::collection_values(const sync::PlannedCollection& plan) const {
    bus::CollectionValues v;
    v.id = plan.info.id;
    v.url = url::redact(plan.info.url);
    v.display_name = plan.info.display_name;
    v.kind = dav::to_string(plan.info.kind);
    v.color = plan.info.color;
    v.local_path = plan.local_dir.string();
    v.read_only = plan.info.read_only;
    if (auto it = collections_.find(plan.folder); it != collections_.end()) {
        v.item_count = it->second.items;
        v.last_sync = it->second.last_sync;
        v.pending_uploads = it->second.pending_uploads;
        v.refused_uploads = it->second.refused_uploads;
        v.deletion_refused = it->second.deletion_refused;
    }
    if (auto it = push_.subscriptions.find(plan.info.url); it != push_.subscriptions.end()) {
        v.push_subscription = it->second.url.str();
        if (it->second.expires)
            v.push_expires = static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(it->second.expires->time_since_epoch()).count());
    }
    if (auto it = pending_pushes_.find(plan.folder); it != pending_pushes_.end()) v.pending_pushes = it->second;
    return v;
}

void AccountRuntime::publish() {
    auto now = loop_.now();
    bus::AccountValues v;
    v.id = account_.id;
    v.url = url::redact(account_.url);
    v.state = account::to_string(scheduler_.state());
    v.last_sync = last_sync_;
    v.last_success = last_success_;
    v.last_result = last_result_;
    v.last_error = last_error_;
    if (auto next = scheduler_.next_sync()) v.next_sync = to_unix_usec(*next, now);
    v.push_state = push_state_;
    v.push_transport = connector_ ? connector_->transport() : "";
    for (const auto& plan : plans_) {
        v.collections.emplace_back(bus::collection_path(account_.id, plan.folder));
        if (auto& obj = collections_[plan.folder].object) obj->update(collection_values(plan));
    }
    object_->update(v);
}

}  // namespace davsyncd::app
