#include "core/event_loop.hpp"

#include <cassert>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <limits>
#include <system_error>
#include <utility>
#include <vector>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "core/log.hpp"

namespace davsyncd::core {
namespace {

[[noreturn]] void throw_errno(const char* call) {
    throw std::system_error(errno, std::system_category(), call);
}

// Registration ids of the loop's own fds; FdWatch ids start above them.
constexpr std::uint64_t kWakeId = 0;
constexpr std::uint64_t kTimerId = 1;
constexpr std::uint64_t kFirstWatchId = 2;

void epoll_add(int epfd, int fd, std::uint32_t events, std::uint64_t id) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl(EPOLL_CTL_ADD)");
}

// Reads and discards a counter (eventfd, timerfd). Non-blocking: a report
// that raced with an earlier read finds nothing, which is fine.
void drain_counter(int fd) {
    std::uint64_t value;
    while (::read(fd, &value, sizeof value) < 0 && errno == EINTR) {
    }
}

}  // namespace

// ---- UniqueFd ---------------------------------------------------------------

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
}

void UniqueFd::reset(int fd) noexcept {
    // close() is not retried on EINTR: on Linux the fd is gone either way.
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

// ---- EventLoop --------------------------------------------------------------

EventLoop::EventLoop() : next_id_(kFirstWatchId), owner_(std::this_thread::get_id()) {
    epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw_errno("epoll_create1");
    wake_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_) throw_errno("eventfd");
    timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!timer_) throw_errno("timerfd_create");
    epoll_add(epoll_.get(), wake_.get(), EPOLLIN, kWakeId);
    epoll_add(epoll_.get(), timer_.get(), EPOLLIN, kTimerId);
}

EventLoop::~EventLoop() {
    // A source outliving its loop would hold a dangling reference.
    if (sources_ != 0) log::error("event loop destroyed with ", sources_, " event sources still bound to it");
    assert(sources_ == 0 && "destroy every event source before its EventLoop");
}

void EventLoop::run() {
    assert(!running_ && "EventLoop::run() is not re-entrant");
    owner_ = std::this_thread::get_id();
    running_ = true;
    now_ = Clock::now();
    struct Reset {
        EventLoop& l;
        ~Reset() { l.running_ = false; l.quit_ = false; }
    } reset{*this};

    while (!quit_) {
        run_timers();
        if (quit_) break;
        run_defers();
        if (quit_) break;
        run_posted();
        if (quit_) break;
        wait_and_dispatch(prepare_wait());
    }
}

void EventLoop::post(std::function<void()> fn) {
    bool was_empty;
    {
        std::lock_guard lock(post_mutex_);
        was_empty = posted_.empty();
        posted_.push_back(std::move(fn));
    }
    // One write per batch: the loop takes the whole queue each iteration, so
    // a non-empty queue is already due to be seen. (The loop drains the
    // eventfd before it takes the queue, so no write can be lost.)
    if (was_empty) {
        const std::uint64_t one = 1;
        while (::write(wake_.get(), &one, sizeof one) < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;  // counter saturated: the loop is awake anyway
            throw_errno("write(eventfd)");
        }
    }
}

// Fires every timer due at now_ that was scheduled before this pass began.
void EventLoop::run_timers() {
    const std::uint64_t limit = next_seq_;
    std::optional<TimerKey> last;
    for (;;) {
        // Everything before `last` was fired or is too new (a callback may
        // have added more, all too new), so resume after it: O(n log n).
        auto it = last ? timers_.upper_bound(*last) : timers_.begin();
        while (it != timers_.end() && it->first.deadline <= now_ && it->first.seq >= limit) ++it;
        if (it == timers_.end() || it->first.deadline > now_) return;
        last = it->first;
        Timer* t = it->second;
        timers_.erase(it);
        t->key_.reset();
        // A copy, so that the timer may destroy itself (and its callback)
        // while this runs.
        auto callback = t->callback_;
        dispatch(callback);
        if (quit_) return;
    }
}

// Runs the defers pending when the pass began, in scheduling order.
void EventLoop::run_defers() {
    const std::uint64_t limit = next_seq_;
    while (!defers_.empty() && defers_.begin()->first < limit) {
        Defer* d = defers_.begin()->second;
        defers_.erase(defers_.begin());
        d->seq_.reset();
        auto callback = d->callback_;
        dispatch(callback);
        if (quit_) return;
    }
}

// Runs the callbacks posted so far. Taken as a batch under the lock; on
// quit() or an exception the rest goes back to the front of the queue.
void EventLoop::run_posted() {
    std::deque<std::function<void()>> batch;
    {
        std::lock_guard lock(post_mutex_);
        batch.swap(posted_);
    }
    if (batch.empty()) return;
    struct Requeue {
        EventLoop& l;
        std::deque<std::function<void()>>& rest;
        ~Requeue() {
            if (rest.empty()) return;
            std::lock_guard lock(l.post_mutex_);
            l.posted_.insert(l.posted_.begin(), std::make_move_iterator(rest.begin()),
                             std::make_move_iterator(rest.end()));
        }
    } requeue{*this, batch};
    while (!batch.empty() && !quit_) {
        auto fn = std::move(batch.front());
        batch.pop_front();
        dispatch(fn);
    }
}

// Returns the epoll_wait timeout: 0 when work is already due, else -1 with the
// timerfd set to the earliest deadline.
int EventLoop::prepare_wait() {
    if (!defers_.empty()) return 0;
    if (timers_.empty()) {
        arm_timerfd(std::nullopt);
        return -1;
    }
    const TimePoint first = timers_.begin()->first.deadline;
    if (first <= Clock::now()) return 0;
    arm_timerfd(first);
    return -1;
}

void EventLoop::arm_timerfd(std::optional<TimePoint> deadline) {
    if (deadline == armed_) return;
    itimerspec spec{};  // all zero: disarm
    if (deadline) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch()).count();
        spec.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
        spec.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        // {0, 0} would disarm; the monotonic clock is never that early anyway.
        if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    }
    if (::timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) != 0) throw_errno("timerfd_settime");
    armed_ = deadline;
}

void EventLoop::wait_and_dispatch(int timeout_ms) {
    epoll_event events[64];
    const int n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms);
    ++wakeups_;
    now_ = Clock::now();
    if (n < 0) {
        if (errno == EINTR) return;
        throw_errno("epoll_wait");
    }
    for (int i = 0; i < n && !quit_; ++i) {
        const std::uint64_t id = events[i].data.u64;
        if (id == kWakeId) {
            // Posted callbacks run at the start of the next iteration.
            drain_counter(wake_.get());
        } else if (id == kTimerId) {
            // Expired: the timer is disarmed now. Due timers run next iteration.
            drain_counter(timer_.get());
            armed_.reset();
        } else {
            // Looked up by id, not pointer: a watch cancelled or destroyed by
            // an earlier callback of this batch is simply not found.
            auto it = fds_.find(id);
            if (it == fds_.end()) continue;
            auto callback = it->second->callback_;
            dispatch(callback, events[i].events);
        }
    }
}

std::uint64_t EventLoop::add_fd(FdWatch* w, int fd, std::uint32_t events) {
    const std::uint64_t id = next_id_++;
    epoll_add(epoll_.get(), fd, events, id);
    fds_.emplace(id, w);
    return id;
}

void EventLoop::modify_fd(std::uint64_t id, int fd, std::uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) throw_errno("epoll_ctl(EPOLL_CTL_MOD)");
}

void EventLoop::remove_fd(std::uint64_t id, int fd) noexcept {
    fds_.erase(id);
    // EBADF/ENOENT: the owner closed the fd first, which already removed it.
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0 && errno != EBADF && errno != ENOENT)
        log::warning("epoll_ctl(EPOLL_CTL_DEL) on fd ", fd, ": ", std::strerror(errno));
}

EventLoop::TimerKey EventLoop::add_timer(Timer* t, TimePoint deadline) {
    TimerKey key{deadline, next_seq_++};
    timers_.emplace(key, t);
    return key;
}

std::uint64_t EventLoop::add_defer(Defer* d) {
    const std::uint64_t seq = next_seq_++;
    defers_.emplace(seq, d);
    return seq;
}

// ---- FdWatch ----------------------------------------------------------------

FdWatch::FdWatch(EventLoop& loop, Callback callback) : loop_(loop), callback_(std::move(callback)) {
    ++loop_.sources_;
}

FdWatch::~FdWatch() {
    cancel();
    --loop_.sources_;
}

void FdWatch::watch(int fd, std::uint32_t events) {
    assert(loop_.in_loop_thread());
    cancel();
    id_ = loop_.add_fd(this, fd, events);
    fd_ = fd;
    events_ = events;
}

void FdWatch::modify(std::uint32_t events) {
    assert(loop_.in_loop_thread());
    assert(is_watching());
    if (events == events_) return;
    loop_.modify_fd(id_, fd_, events);
    events_ = events;
}

void FdWatch::cancel() noexcept {
    if (fd_ < 0) return;
    loop_.remove_fd(id_, fd_);
    fd_ = -1;
    events_ = 0;
}

// ---- Timer ------------------------------------------------------------------

Timer::Timer(EventLoop& loop, Callback callback) : loop_(loop), callback_(std::move(callback)) {
    ++loop_.sources_;
}

Timer::~Timer() {
    cancel();
    --loop_.sources_;
}

void Timer::schedule_at(TimePoint deadline) {
    assert(loop_.in_loop_thread());
    cancel();
    key_ = loop_.add_timer(this, deadline);
}

void Timer::cancel() noexcept {
    if (!key_) return;
    loop_.remove_timer(*key_);
    key_.reset();
}

// ---- Defer ------------------------------------------------------------------

Defer::Defer(EventLoop& loop, Callback callback) : loop_(loop), callback_(std::move(callback)) {
    ++loop_.sources_;
}

Defer::~Defer() {
    cancel();
    --loop_.sources_;
}

void Defer::schedule() {
    assert(loop_.in_loop_thread());
    if (!seq_) seq_ = loop_.add_defer(this);
}

void Defer::cancel() noexcept {
    if (!seq_) return;
    loop_.remove_defer(*seq_);
    seq_.reset();
}

// ---- SignalWatch and InotifyWatch --------------------------------------------

namespace {

// Tells a handler that reads many events whether a callback destroyed the
// object that owns `slot`: the destructor sets *slot to false.
class AliveGuard {
public:
    explicit AliveGuard(bool*& slot) : slot_(slot) { slot_ = &alive_; }
    ~AliveGuard() {
        if (alive_) slot_ = nullptr;
    }
    AliveGuard(const AliveGuard&) = delete;
    AliveGuard& operator=(const AliveGuard&) = delete;
    bool alive() const { return alive_; }

private:
    bool alive_ = true;
    bool*& slot_;
};

UniqueFd block_and_open_signalfd(std::initializer_list<int> signals) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : signals)
        if (sigaddset(&set, s) != 0) throw_errno("sigaddset");
    if (int rc = ::pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0)
        throw std::system_error(rc, std::system_category(), "pthread_sigmask");
    UniqueFd fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd) throw_errno("signalfd");
    return fd;
}

}  // namespace

SignalWatch::SignalWatch(EventLoop& loop, std::initializer_list<int> signals, Callback callback)
    : callback_(std::move(callback)),
      fd_(block_and_open_signalfd(signals)),
      watch_(loop, [this](std::uint32_t) { on_readable(); }) {
    watch_.watch(fd_.get(), EPOLLIN);
}

SignalWatch::~SignalWatch() {
    if (alive_) *alive_ = false;
}

void SignalWatch::on_readable() {
    AliveGuard guard(alive_);
    auto callback = callback_;  // survives the watch's destruction by the callback
    const int fd = fd_.get();
    for (;;) {
        signalfd_siginfo info[8];
        const ssize_t n = ::read(fd, info, sizeof info);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            throw_errno("read(signalfd)");
        }
        const auto count = static_cast<std::size_t>(n) / sizeof(signalfd_siginfo);
        for (std::size_t i = 0; i < count; ++i) {
            callback(static_cast<int>(info[i].ssi_signo));
            if (!guard.alive()) return;
        }
        if (count < std::size(info)) return;
    }
}

InotifyWatch::InotifyWatch(EventLoop& loop, Callback callback)
    : callback_(std::move(callback)),
      fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)),
      watch_(loop, [this](std::uint32_t) { on_readable(); }) {
    if (!fd_) throw_errno("inotify_init1");
    watch_.watch(fd_.get(), EPOLLIN);
}

InotifyWatch::~InotifyWatch() {
    if (alive_) *alive_ = false;
}

bool InotifyWatch::add(const std::filesystem::path& folder, std::uint32_t mask) {
    assert(watch_.loop().in_loop_thread());
    mask &= ~static_cast<std::uint32_t>(IN_MASK_ADD | IN_MASK_CREATE);
    const std::string key = folder.string();
    auto known = by_folder_.find(key);
    // For a new folder, IN_MASK_CREATE (Linux 4.18) makes the kernel refuse an
    // inode that already has a watch: a second path to a watched folder would
    // otherwise silently share, and overwrite the mask of, the first one's.
    const int wd = ::inotify_add_watch(fd_.get(), key.c_str(), known == by_folder_.end() ? (mask | IN_MASK_CREATE) : mask);
    if (wd < 0) {
        const int err = errno;
        if (err == EEXIST)
            log::warning("cannot watch ", key, ": the same folder is already watched under another path");
        else if (err == ENOSPC)
            log::warning("cannot watch ", key, ": inotify watch limit reached (fs.inotify.max_user_watches)");
        else
            log::warning("cannot watch ", key, ": ", std::strerror(err));
        return false;
    }
    if (known != by_folder_.end() && known->second != wd) {
        // The path names another folder now (the old one was renamed away):
        // drop the old watch.
        const int old = known->second;
        by_wd_.erase(old);
        by_folder_.erase(known);
        ::inotify_rm_watch(fd_.get(), old);
        if (auto other = by_wd_.find(wd); other != by_wd_.end()) {
            // ...and that folder is already watched under another path, whose
            // mask we just replaced: put it back.
            ::inotify_add_watch(fd_.get(), key.c_str(), other->second.mask);
            log::warning("cannot watch ", key, ": the same folder is already watched as ", other->second.folder);
            return false;
        }
    }
    by_folder_[key] = wd;
    by_wd_[wd] = Entry{key, mask};
    return true;
}

void InotifyWatch::remove(const std::filesystem::path& folder) noexcept {
    auto it = by_folder_.find(folder.string());
    if (it == by_folder_.end()) return;
    // Fails with EINVAL when the kernel already dropped the watch (folder
    // deleted, IN_IGNORED queued); nothing to do then.
    ::inotify_rm_watch(fd_.get(), it->second);
    by_wd_.erase(it->second);
    by_folder_.erase(it);
}

void InotifyWatch::clear() noexcept {
    for (const auto& entry : by_wd_) ::inotify_rm_watch(fd_.get(), entry.first);
    by_wd_.clear();
    by_folder_.clear();
}

void InotifyWatch::on_readable() {
    AliveGuard guard(alive_);
    auto callback = callback_;  // survives the watch's destruction by the callback
    // Room for at least one event with the longest name (the kernel never
    // splits an event across reads; a smaller buffer gets EINVAL).
    alignas(inotify_event) char buf[16384];
    static_assert(sizeof buf >= sizeof(inotify_event) + NAME_MAX + 1);
    for (;;) {
        const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            throw_errno("read(inotify)");
        }
        const auto end = static_cast<std::size_t>(n);
        std::size_t pos = 0;
        while (pos + sizeof(inotify_event) <= end) {
            // Events are variable-length: a header, then `len` bytes of name
            // padded with NULs. Copy the header out rather than cast.
            inotify_event ev;
            std::memcpy(&ev, buf + pos, sizeof ev);
            const char* name_start = buf + pos + sizeof ev;
            pos += sizeof ev + ev.len;
            if (pos > end) break;  // the kernel writes whole events; defensive

            if (ev.mask & IN_Q_OVERFLOW) {
                log::warning("inotify queue overflowed: events were lost");
                callback(std::string(), std::string(), IN_Q_OVERFLOW);
            } else {
                auto it = by_wd_.find(ev.wd);
                if (it == by_wd_.end()) continue;  // removed by remove()/clear(): stay silent
                // Copied: the callback may remove() the folder, or destroy us.
                const std::string folder = it->second.folder;
                if (ev.mask & IN_IGNORED) {
                    by_folder_.erase(folder);
                    by_wd_.erase(it);
                }
                callback(folder, std::string(name_start, ::strnlen(name_start, ev.len)), ev.mask);
            }
            if (!guard.alive()) return;
        }
    }
}

}  // namespace davsyncd::core
