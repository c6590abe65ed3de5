#include "account/scheduler.hpp"

#include <algorithm>
#include <utility>

namespace davsyncd::account {

namespace {

constexpr unsigned kWholeAccountReasons = Reason::startup | Reason::interval | Reason::retry;
// Reasons that may end a backoff early (besides the user).
constexpr unsigned kWakeReasons = Reason::resume | Reason::network;

template <typename T>
std::optional<T> earliest(std::optional<T> a, std::optional<T> b) {
    if (!a) return b;
    if (!b) return a;
    return std::min(*a, *b);
}

}  // namespace

const char* to_string(State s) {
    switch (s) {
    case State::idle: return "idle";
    case State::syncing: return "syncing";
    case State::backoff: return "backoff";
    case State::auth_failed: return "auth-failed";
    case State::disabled: return "disabled";
    }
    return "unknown";
}

std::string reasons_to_string(unsigned reasons) {
    static const char* const names[] = {"startup", "interval", "local-change", "user", "push", "retry", "config", "renew", "resume", "network"};
    std::string out;
    for (unsigned bit = 0; bit < std::size(names); ++bit) {
        if (!(reasons & (1u << bit))) continue;
        if (!out.empty()) out += ',';
        out += names[bit];
    }
    return out;
}

Scheduler::Scheduler(Settings settings) : s_(std::move(settings)) {}

// --- events in ---------------------------------------------------------------

void Scheduler::start(TimePoint now) { trigger(now, Reason::startup); }

void Scheduler::trigger(TimePoint now, Reason reason, const std::set<std::string>& collections) {
    Duration debounce{0};
    if (reason == Reason::local_change) debounce = s_.local_debounce;
    else if (reason == Reason::push) debounce = s_.push_debounce;
    add(now, reason, collections, debounce);
}

void Scheduler::add_due(TimePoint now, Duration debounce) {
    if (debounce <= Duration::zero()) {
        pending_.immediate = true;
        pending_.due = earliest(pending_.due, std::optional(now));
        return;
    }
    if (!pending_.first) pending_.first = now;
    TimePoint candidate = std::min(now + debounce, *pending_.first + s_.max_debounce);
    if (!pending_.due) pending_.due = candidate;
    else if (!pending_.immediate) pending_.due = std::max(*pending_.due, candidate);
}

void Scheduler::add(TimePoint now, unsigned reason, const std::set<std::string>& collections, Duration debounce) {
    if (!enabled_) return;
    pending_.any = true;
    pending_.reasons |= reason;
    if (collections.empty()) pending_.all = true;
    else pending_.collections.insert(collections.begin(), collections.end());
    add_due(now, debounce);
}

bool Scheduler::runs(const std::string& collection) const {
    return state_ == State::syncing && (running_all_ || running_.count(collection) > 0);
}

bool Scheduler::push(TimePoint now, const std::string& collection, const SyncToken& pushed, const SyncToken& stored) {
    if (!enabled_) return false;
    if (!runs(collection) && !pushed.empty() && pushed == stored) {
        ++stale_dropped_;
        return false;
    }
    pending_.pushes[collection] = pushed;
    add_due(now, s_.push_debounce);
    return true;
}

void Scheduler::woke(TimePoint now, Reason reason, Duration stagger) {
    add(now, reason, {}, s_.wake_settle + std::max(stagger, Duration::zero()));
}

void Scheduler::finished(TimePoint now, const SyncOutcome& outcome) {
    if (state_ != State::syncing) return;

    const bool whole_account = running_all_;
    switch (outcome.kind) {
    case SyncOutcome::Kind::ok:
        failures_ = 0;
        retry_at_.reset();
        state_ = State::idle;
        if (whole_account || !next_poll_) next_poll_ = now + s_.interval;
        if (whole_account) last_full_sync_ = now;
        break;
    case SyncOutcome::Kind::error:
        ++failures_;
        retry_at_ = now + backoff_delay(outcome.retry_after);
        state_ = State::backoff;
        break;
    case SyncOutcome::Kind::auth_failed:
        ++failures_;
        retry_at_.reset();
        state_ = State::auth_failed;
        break;
    case SyncOutcome::Kind::cancelled:
        state_ = started_from_ == State::syncing ? State::idle : started_from_;
        if (!next_poll_) next_poll_ = now + s_.interval;
        break;
    }

    // Pending pushes the sync has caught up with were our own changes or
    // already seen: drop them.
    for (auto it = pending_.pushes.begin(); it != pending_.pushes.end();) {
        const bool took_part = running_all_ || running_.count(it->first) > 0;
        auto reached = outcome.tokens.find(it->first);
        if (took_part && !it->second.empty() && reached != outcome.tokens.end() && reached->second == it->second)
            it = pending_.pushes.erase(it);
        else
            ++it;
    }
    running_.clear();
    running_all_ = false;

    if (credentials_changed_) {
        credentials_changed_ = false;
        if (state_ == State::backoff || state_ == State::auth_failed) leave_failure(now);
    }
    if (!enabled_) {
        state_ = State::disabled;
        pending_ = {};
        retry_at_.reset();
        next_poll_.reset();
        return;
    }

    if (pending_.empty()) pending_ = {};
    else pending_.due = std::max(pending_.due.value_or(now), now);
}

Duration Scheduler::backoff_delay(std::optional<std::chrono::seconds> retry_after) {
    if (retry_after) return std::max<Duration>(*retry_after, std::chrono::seconds(1));

    // backoff_min * 2^(failures-1), capped; doubling stops at the cap, so no overflow.
    Duration delay = s_.backoff_min;
    for (unsigned i = 1; i < failures_ && delay < s_.backoff_max; ++i)
        delay = delay > s_.backoff_max / 2 ? s_.backoff_max : delay * 2;
    delay = std::min(delay, s_.backoff_max);

    double r = s_.random ? s_.random() : 0.5;
    r = std::clamp(r, 0.0, 1.0);
    const double factor = 1.0 - s_.jitter + 2.0 * s_.jitter * r;
    const auto jittered = std::chrono::duration<double, Duration::period>(delay) * factor;
    return std::max(Duration::zero(), std::chrono::duration_cast<Duration>(jittered));
}

void Scheduler::leave_failure(TimePoint now) {
    state_ = State::idle;
    failures_ = 0;
    retry_at_.reset();
    // A poll that fell due while polls did not apply is covered by the
    // whole-account config sync that follows; that sync re-plans it.
    if (next_poll_ && *next_poll_ <= now) next_poll_.reset();
}

void Scheduler::credentials_changed(TimePoint now) {
    if (!enabled_) return;
    failures_ = 0;
    if (state_ == State::syncing) credentials_changed_ = true;
    else if (state_ == State::backoff || state_ == State::auth_failed) leave_failure(now);
    trigger(now, Reason::config);
}

void Scheduler::set_enabled(TimePoint now, bool enabled) {
    if (enabled == enabled_) return;
    enabled_ = enabled;
    if (!enabled) {
        pending_ = {};
        if (state_ == State::syncing) return;  // finished() lands in disabled
        state_ = State::disabled;
        retry_at_.reset();
        next_poll_.reset();
        return;
    }
    if (state_ == State::disabled) leave_failure(now);
    trigger(now, Reason::config);
}

void Scheduler::set_interval(TimePoint now, Duration interval) {
    s_.interval = interval;
    if (state_ == State::disabled) return;
    next_poll_ = last_full_sync_.value_or(now) + interval;
}

// --- questions out -----------------------------------------------------------

std::optional<SyncRequest> Scheduler::take_start(TimePoint now) {
    if (!enabled_) return std::nullopt;

    const bool pending_due = !pending_.empty() && pending_.due && *pending_.due <= now;
    const bool user_due = pending_due && (pending_.reasons & Reason::user);
    const bool wake_due = pending_due && (pending_.reasons & kWakeReasons);
    unsigned extra = 0;  // reasons of this start beyond the pending ones
    bool whole_account = false;

    switch (state_) {
    case State::syncing:
    case State::disabled:
        return std::nullopt;
    case State::auth_failed:
        if (!user_due) return std::nullopt;
        whole_account = true;  // a failed sync is owed
        break;
    case State::backoff:
        if (retry_at_ && *retry_at_ <= now) extra |= Reason::retry;
        else if (!user_due && !wake_due) return std::nullopt;
        whole_account = true;
        break;
    case State::idle:
        if (next_poll_ && *next_poll_ <= now) extra |= Reason::interval;
        else if (!pending_due) return std::nullopt;
        break;
    }

    SyncRequest req;
    req.id = next_id_++;
    req.reasons = pending_.reasons | extra | (pending_.pushes.empty() ? 0u : unsigned(Reason::push));
    whole_account = whole_account || (pending_.any && pending_.all) || (req.reasons & kWholeAccountReasons);
    if (!whole_account) {
        req.collections = pending_.collections;
        for (const auto& [collection, token] : pending_.pushes) req.collections.insert(collection);
    }

    started_from_ = state_;
    state_ = State::syncing;
    running_ = req.collections;
    running_all_ = req.collections.empty();
    pending_ = {};
    return req;
}

std::optional<TimePoint> Scheduler::next_wakeup() const {
    if (!enabled_) return std::nullopt;
    const std::optional<TimePoint> pending_due = pending_.empty() ? std::nullopt : pending_.due;
    const bool user = pending_.reasons & Reason::user;
    switch (state_) {
    case State::syncing:
    case State::disabled:
        return std::nullopt;
    case State::auth_failed:
        return user ? pending_due : std::nullopt;
    case State::backoff:
        return earliest(retry_at_, user || (pending_.reasons & kWakeReasons) ? pending_due : std::nullopt);
    case State::idle:
        return earliest(next_poll_, pending_due);
    }
    return std::nullopt;
}

std::optional<TimePoint> Scheduler::next_sync() const { return next_wakeup(); }

bool Scheduler::has_pending() const { return !pending_.empty(); }

}  // namespace davsyncd::account
