// One account in the running daemon: its scheduler, its timer and folder
// watches, the sync job it runs on a worker thread, and its D-Bus objects.
//
// The main loop owns all of it. A sync job gets copies of what it needs
// (config, plans, the account's HTTP client while it runs) and hands its
// result back with EventLoop::post(); nothing else crosses threads.
//
// Thread affinity: main loop only, except run_job(), which is the worker.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sdbus-c++/sdbus-c++.h>

#include "account/scheduler.hpp"
#include "bus/objects.hpp"
#include "config/config.hpp"
#include "core/event_loop.hpp"
#include "dav/http_client.hpp"
#include "push/transport.hpp"
#include "push/subscriptions.hpp"
#include "push/webpush_crypto.hpp"
#include "sync/account_sync.hpp"

namespace davsyncd::app {

class AccountRuntime {
public:
    // `on_state_changed` lets the daemon refresh its STATUS= line.
    // `transport` (the UnifiedPush connector or an ntfy receiver) may be
    // null (no push at all); it outlives the runtime.
    AccountRuntime(core::EventLoop& loop, sdbus::IConnection& bus, const config::Config& cfg, config::Account account,
                   push::Transport* transport, std::function<void()> on_state_changed);
    // Stops a running job (it saves what it finished) and waits for it.
    ~AccountRuntime();
    AccountRuntime(const AccountRuntime&) = delete;
    AccountRuntime& operator=(const AccountRuntime&) = delete;

    const config::Account& config() const { return account_; }
    std::string object_path() const;
    account::State state() const { return scheduler_.state(); }

    // A user request (D-Bus Sync, SyncAll); `collections` empty = all.
    void request_sync(const std::set<std::string>& collections = {});
    // The user confirms the deletions a sync of this collection refused
    // (Collection1.ConfirmDeletion): the next sync of it applies them.
    void confirm_deletion(const std::string& folder);
    // The password may have been fixed (a reload, the config file saved):
    // the next sync runs password_command again, and an account that the
    // server refused tries once more.
    void credentials_changed();
    // The machine resumed or the network came back: sync the whole account
    // after `stagger` (and the scheduler's settle time).
    void woke(account::Reason why, core::Duration stagger);
    // Asks a running job to stop at the next item.
    void cancel();
    bool job_running() const { return job_.joinable(); }

    // --- push (from the transport, main loop) ---
    const std::string& push_token() const { return push_.token; }
    push::Transport* push_transport() const { return connector_; }
    void push_endpoint(const std::string& endpoint);
    void push_message(const std::vector<uint8_t>& body);
    void push_lost(const std::string& why);
    // The transport came or went (a distributor appeared or left, the ntfy
    // stream opened or is down).
    void push_distributor_changed();

private:
    struct JobResult;
    void pump();
    void start_job(const account::SyncRequest& request);
    void finish_job(JobResult result);
    void on_folder_event(const std::string& folder, const std::string& name, uint32_t mask);
    bool note_local_change(const std::string& folder);
    void adopt_plans(std::vector<sync::PlannedCollection> plans);
    void publish();
    bus::CollectionValues collection_values(const sync::PlannedCollection& plan) const;

    // Runs on the worker thread.
    struct JobInput;
    static JobResult run_job(JobInput in, dav::HttpClient* http, const std::atomic<bool>* cancel);
    void register_for_push();
    void set_push_state(std::string state);
    void schedule_renewal();
    std::string save_push_state();
    void contained(const char* what, const std::function<void()>& step) noexcept;

    core::EventLoop& loop_;
    sdbus::IConnection& bus_;
    config::Account account_;
    std::filesystem::path state_dir_;
    std::function<void()> on_state_changed_;

    account::Scheduler scheduler_;
    core::Timer timer_;
    core::Timer renewal_;  // push subscriptions, on their own clock
    core::InotifyWatch folders_;

    std::unique_ptr<dav::HttpClient> http_;  // lent to the job while one runs
    bool stale_credentials_ = false;          // drop http_ once the job gives it back
    std::thread job_;
    std::atomic<bool> cancel_{false};
    uint64_t running_id_ = 0;
    // Posted job results check this before touching a destroyed runtime.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

    std::vector<sync::PlannedCollection> plans_;
    // Folder events that arrived while a job ran: most are the job's own
    // writes, which must not trigger another sync.
    std::vector<std::pair<std::string, std::string>> events_during_job_;  // (folder, file name)
    struct CollectionStatus {
        uint32_t items = 0;
        uint64_t last_sync = 0;
        uint32_t pending_uploads = 0, refused_uploads = 0;
        std::string deletion_refused;    // the guard's reason; "" when nothing waits
        bool deletion_confirmed = false;  // by the user, for the next sync of it
        std::unique_ptr<bus::CollectionObject> object;
    };
    std::map<std::string, CollectionStatus> collections_;  // by folder

    // Push: keys, token, endpoint and subscriptions; the last token each
    // collection synced to (a push carrying it is stale); pushes not yet synced.
    push::Transport* connector_;
    std::filesystem::path push_file_, keys_file_;
    std::optional<push::KeyPair> keys_;
    push::AccountPushState push_;
    std::string registered_vapid_;
    bool registered_ = false;
    std::string push_state_ = "poll-only";
    bool rediscover_ = false;
    std::map<std::string, SyncToken> tokens_;
    std::map<std::string, uint32_t> pending_pushes_;
    uint64_t pushes_received_ = 0, pushes_rejected_ = 0;

    uint64_t last_sync_ = 0, last_success_ = 0;
    std::string last_result_, last_error_;
    std::unique_ptr<bus::AccountObject> object_;
};

// Microseconds since the Unix epoch, for D-Bus time properties.
uint64_t unix_usec_now();

}  // namespace davsyncd::app
