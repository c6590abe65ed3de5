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
#include "sync/account_sync.hpp"

namespace davsyncd::app {

class AccountRuntime {
public:
    // `on_state_changed` lets the daemon refresh its STATUS= line.
    AccountRuntime(core::EventLoop& loop, sdbus::IConnection& bus, const config::Config& cfg, config::Account account,
                   std::function<void()> on_state_changed);
    // Stops a running job (it saves what it finished) and waits for it.
    ~AccountRuntime();
    AccountRuntime(const AccountRuntime&) = delete;
    AccountRuntime& operator=(const AccountRuntime&) = delete;

    const config::Account& config() const { return account_; }
    std::string object_path() const;
    account::State state() const { return scheduler_.state(); }

    // A user request (D-Bus Sync, SyncAll); `collections` empty = all.
    void request_sync(const std::set<std::string>& collections = {});
    // Asks a running job to stop at the next item.
    void cancel();
    bool job_running() const { return job_.joinable(); }

private:
    struct JobResult;
    void pump();
    void start_job(const account::SyncRequest& request);
    void finish_job(JobResult result);
    void on_folder_event(const std::string& folder, const std::string& name, uint32_t mask);
    void adopt_plans(std::vector<sync::PlannedCollection> plans);
    void publish();
    bus::CollectionValues collection_values(const sync::PlannedCollection& plan) const;

    // Runs on the worker thread.
    static JobResult run_job(account::SyncRequest request, config::Account account, std::filesystem::path state_dir,
                             dav::HttpClient* http, const std::atomic<bool>* cancel);

    core::EventLoop& loop_;
    sdbus::IConnection& bus_;
    config::Account account_;
    std::filesystem::path state_dir_;
    std::function<void()> on_state_changed_;

    account::Scheduler scheduler_;
    core::Timer timer_;
    core::InotifyWatch folders_;

    std::unique_ptr<dav::HttpClient> http_;  // lent to the job while one runs
    std::thread job_;
    std::atomic<bool> cancel_{false};
    uint64_t running_id_ = 0;
    // Posted job results check this before touching a destroyed runtime.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

    std::vector<sync::PlannedCollection> plans_;
    struct CollectionStatus {
        uint32_t items = 0;
        uint64_t last_sync = 0;
        std::unique_ptr<bus::CollectionObject> object;
    };
    std::map<std::string, CollectionStatus> collections_;  // by folder

    uint64_t last_sync_ = 0, last_success_ = 0;
    std::string last_result_, last_error_;
    std::unique_ptr<bus::AccountObject> object_;
};

// Microseconds since the Unix epoch, for D-Bus time properties.
uint64_t unix_usec_now();

}  // namespace davsyncd::app
