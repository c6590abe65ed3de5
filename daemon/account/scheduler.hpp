// The per-account state machine: decides when an account syncs, given the
// triggers that arrive and the results of the syncs it started.
//
// Pure logic: no I/O, no threads, no clock of its own. The main loop feeds it
// events with the current time and asks it two questions after each one:
// "should a sync start now?" (take_start) and "when should I ask again?"
// (next_wakeup). Unit tests drive it with a fake clock.
//
// Coalescing, the point of this class:
//   - At most one sync per account runs at a time.
//   - Every trigger that arrives while a sync runs is folded into ONE pending
//     follow-up (reasons and collections merged): N triggers -> one more
//     sync, never N, and never zero, because a trigger that arrived after the
//     running sync read the server may describe a change that sync missed.
//   - A push is the exception that makes self-notification cheap: it carries
//     the collection's sync-token after the change. A push whose token equals
//     the token we hold is stale (our own change, or one we already have) and
//     is dropped without a request; when a sync ends, pending pushes whose
//     token equals the token the sync ended with are dropped too. Any other
//     pending trigger runs.
//   - Local changes (inotify) and pushes are debounced, so that a burst of
//     writes or a burst of pushes becomes one sync. So are resume and
//     network-up (woke()), so that a resume followed by the network coming
//     back, or a flapping network, becomes one sync.
//
// States:
//   idle        waiting for a trigger or the interval timer
//   syncing     a sync job runs (started by take_start)
//   backoff     the last sync failed; retry at next_retry (exponential with
//               jitter, or the server's Retry-After); explicit user requests
//               (Reason::user) still start at once
//   auth_failed the server refused our credentials; nothing runs until
//               credentials_changed() or an explicit user request
//   disabled    the account is disabled (config); nothing runs
//
// Timing rules in detail:
//   - Due times. Every trigger except local_change, push, resume and network
//     is due at once. A local change is due local_debounce after it, a push
//     push_debounce after it, a resume or network-up wake_settle + its
//     stagger after it; each further debounced trigger pushes the due time back to
//     (its time + its debounce), but never later than (first trigger of the
//     burst + max_debounce), and never earlier than it already was. Once an
//     immediate trigger is pending, debounced ones no longer delay it.
//   - Polling. next_poll is planned only when a sync of the WHOLE account
//     ends ok (now + interval); start() leaves it unset until the startup
//     sync ends. A sync of some collections (a push, a local change) does not
//     postpone the poll, so a busy collection cannot starve the others.
//   - Which collections a start covers: the union of the pending triggers'
//     collections and pushes; the whole account (empty set) when a trigger
//     named no collection, when the poll or a retry is due, for startup, or
//     when the start leaves backoff/auth_failed (the failed sync is owed).
//   - Failures. error: backoff_min * 2^(failures-1), capped at backoff_max,
//     then jittered by a factor 1 - jitter + 2*jitter*random() (so at most
//     backoff_max * (1 + jitter)); a Retry-After is used exactly instead (at
//     least 1 s, no jitter). auth_failed counts as a failure but plans no
//     retry. cancelled keeps the failure count and returns to the state the
//     sync started from (idle, or backoff/auth_failed when a user request
//     started it there); it plans a poll only if none is planned yet.
//   - Triggers while auth_failed or in backoff are kept pending; only a user
//     request (or, in backoff, the retry time) starts them. In backoff, a
//     resume or network-up starts them too once due: the failure was most
//     likely the missing network, so waiting out the backoff helps nobody. Triggers and
//     pushes while disabled are ignored: set_enabled(true) syncs everything.
//   - credentials_changed() while a sync runs takes effect when it ends: the
//     outcome is recorded, then the scheduler leaves backoff/auth_failed.
//     Leaving a failure state drops a poll that fell due meanwhile (the
//     config sync that follows covers the whole account and re-plans it).
//
// Thread affinity: main loop only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dav/types.hpp"

namespace davsyncd::account {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

enum class State { idle, syncing, backoff, auth_failed, disabled };
// "idle", "syncing", "backoff", "auth-failed", "disabled".
const char* to_string(State s);

// Why a sync runs. A bit set: merged reasons are OR-ed.
enum Reason : unsigned {
    startup = 1u << 0,
    interval = 1u << 1,      // poll timer
    local_change = 1u << 2,  // inotify in a vdir folder
    user = 1u << 3,          // D-Bus Sync(), davsyncctl sync
    push = 1u << 4,          // WebDAV-Push message
    retry = 1u << 5,         // backoff expired
    config = 1u << 6,        // configuration reloaded / credentials changed
    renew = 1u << 7,         // push subscriptions are due for renewal (alone: no collection is synced)
    resume = 1u << 8,        // the machine resumed from suspend (logind)
    network = 1u << 9,       // the network came back (NetworkManager: connected-global)
};
// "push,local-change" etc., in bit order; "" for 0. Unknown bits are ignored.
std::string reasons_to_string(unsigned reasons);

struct Settings {
    Duration interval = std::chrono::minutes(15);          // poll interval (> 0)
    Duration local_debounce = std::chrono::seconds(2);     // quiet time after the last local change
    Duration push_debounce = std::chrono::milliseconds(500);
    Duration max_debounce = std::chrono::seconds(30);      // a steady stream still syncs this often
    // Quiet time after a resume or network-up: the network settles (a
    // resume is often followed by NetworkManager's connected-global).
    Duration wake_settle = std::chrono::seconds(2);
    Duration backoff_min = std::chrono::seconds(30);
    Duration backoff_max = std::chrono::hours(1);
    double jitter = 0.2;                                   // +-20% on backoff delays
    // Returns a number in [0, 1); injected so that tests are deterministic.
    // Values outside are clamped.
    std::function<double()> random = [] { return 0.5; };
};

// What take_start() hands the main loop: which collections to sync and why.
struct SyncRequest {
    std::set<std::string> collections;  // collection ids; empty = all of the account
    unsigned reasons = 0;
    uint64_t id = 0;                    // increases with every sync of this account (1, 2, ...)
};

struct SyncOutcome {
    enum class Kind { ok, error, auth_failed, cancelled };
    Kind kind = Kind::ok;
    std::optional<std::chrono::seconds> retry_after;  // from a 429/503 (error only)
    // The sync-token each collection ended with (for pending pushes). A
    // collection the sync did not reach is simply absent; its pending pushes
    // then stay. Meaningful for every kind, including error and cancelled.
    std::map<std::string, SyncToken> tokens;
};

class Scheduler {
public:
    explicit Scheduler(Settings settings = {});

    // --- events in -----------------------------------------------------------
    // First call: arms the startup sync (due at once). next_poll stays unset
    // until the startup sync ends.
    void start(TimePoint now);
    // A trigger for some collections (empty = all). Debounced for
    // local_change (and push); immediate otherwise (user, config, startup,
    // interval, retry). While a sync runs it is queued as the follow-up.
    void trigger(TimePoint now, Reason reason, const std::set<std::string>& collections = {});
    // A push for one collection. `stored` is the token we hold for it now.
    // Returns false when the push was dropped as stale (pushed == stored,
    // non-empty, while no sync of that collection runs; counted in
    // stale_pushes_dropped) or ignored because the account is disabled: no
    // request will follow from it. While a sync of the collection runs the
    // push is always queued: that sync may end at a newer token, so the
    // comparison happens in finished(). The latest token per collection wins.
    bool push(TimePoint now, const std::string& collection, const SyncToken& pushed, const SyncToken& stored);
    // The machine resumed or the network came back (`reason` is resume or
    // network): what changed meanwhile is unknown and pushes sent meanwhile
    // may be lost, so the whole account syncs, due wake_settle + `stagger`
    // after `now` and debounced like a local change (a further wake pushes
    // it back, within max_debounce). `stagger` spreads the syncs of several
    // accounts. While a sync runs it is folded into the one follow-up. In
    // backoff it starts once due; while auth_failed it waits like any trigger.
    void woke(TimePoint now, Reason reason, Duration stagger = Duration::zero());
    // The sync started by the last take_start() has ended. Ignored when no
    // sync runs. Pending pushes of collections that took part in the sync are
    // dropped when outcome.tokens holds their pushed token; anything left
    // pending becomes due no earlier than `now`.
    void finished(TimePoint now, const SyncOutcome& outcome);
    // Credentials or configuration changed: leaves auth_failed/backoff
    // (failures reset to 0) and syncs the whole account soon (Reason::config).
    void credentials_changed(TimePoint now);
    // false: disabled at once, or when the running sync ends; pending work
    // and planned polls/retries are dropped. true (when disabled): idle with
    // failures reset, and a config sync of the whole account. Enabling an
    // enabled account does nothing.
    void set_enabled(TimePoint now, bool enabled);
    // New poll interval (e.g. longer while push is healthy). Re-plans the
    // next poll: last full sync's end + interval, or now + interval if none.
    void set_interval(TimePoint now, Duration interval);

    // --- questions out ---------------------------------------------------------
    // A sync to start now, if one is due; the scheduler is then `syncing`
    // and the pending follow-up is empty (taken into the request).
    std::optional<SyncRequest> take_start(TimePoint now);
    // When take_start() may next have something to say (may be <= now: ask
    // at once); nullopt: only after another event (auth_failed without a
    // user request, disabled, or syncing).
    std::optional<TimePoint> next_wakeup() const;

    // --- observation (D-Bus properties) ---------------------------------------
    State state() const { return state_; }
    bool enabled() const { return enabled_; }             // false also while a disabling sync still runs
    std::optional<TimePoint> next_sync() const;          // next planned start, if any (as next_wakeup)
    std::optional<TimePoint> next_retry() const { return retry_at_; }
    std::optional<TimePoint> next_poll() const { return next_poll_; }
    unsigned consecutive_failures() const { return failures_; }
    bool has_pending() const;                             // a follow-up is queued
    uint64_t stale_pushes_dropped() const { return stale_dropped_; }
    uint64_t syncs_started() const { return next_id_ - 1; }

private:
    // The follow-up being collected. collections empty + any = all.
    struct Pending {
        bool any = false;                 // something non-push is pending
        unsigned reasons = 0;             // of the non-push triggers
        bool all = false;                 // some trigger named no collection
        bool immediate = false;           // a non-debounced trigger is pending
        std::set<std::string> collections;
        std::map<std::string, SyncToken> pushes;  // collection -> latest pushed token
        std::optional<TimePoint> due;     // when it may start (debounce)
        std::optional<TimePoint> first;   // first debounced trigger of the burst (max_debounce)
        bool empty() const { return !any && pushes.empty(); }
    };

    // Records a trigger that is due `debounce` after `now` (0: at once).
    void add_due(TimePoint now, Duration debounce);
    void add(TimePoint now, unsigned reason, const std::set<std::string>& collections, Duration debounce);
    bool runs(const std::string& collection) const;  // part of the running sync?
    Duration backoff_delay(std::optional<std::chrono::seconds> retry_after);
    void leave_failure(TimePoint now);                // -> idle, failures 0, no retry, no overdue poll

    Settings s_;
    State state_ = State::idle;
    State started_from_ = State::idle;    // state before the running sync (for cancelled)
    bool enabled_ = true;
    bool credentials_changed_ = false;    // during the running sync
    Pending pending_;
    std::optional<TimePoint> next_poll_;
    std::optional<TimePoint> last_full_sync_;  // end of the last ok sync of the whole account
    std::optional<TimePoint> retry_at_;
    unsigned failures_ = 0;
    uint64_t next_id_ = 1;
    uint64_t stale_dropped_ = 0;
    std::set<std::string> running_;       // collections of the running sync (empty = all)
    bool running_all_ = false;
};

}  // namespace davsyncd::account
