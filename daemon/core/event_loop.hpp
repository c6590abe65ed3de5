// The daemon's main loop: one epoll instance, and small event-source objects
// owned by the code that uses them (after MPD's src/event).
//
// Every event source (FdWatch, Timer, Defer, SignalWatch, InotifyWatch) is
// bound to one EventLoop and one callback when it is built, is switched on and
// off with its own methods, and unregisters itself when it is destroyed. So a
// callback can never run for an object that no longer exists, and no source
// needs a handle or an id. A source may be cancelled, rescheduled or destroyed
// from inside its own callback, or from any other callback.
//
// Threads: the EventLoop belongs to the thread that calls run() (before the
// first run(), to the thread that built it, so that setup code can create and
// schedule sources). All sources are loop-thread-only. The only thing other
// threads may do is EventLoop::post(). Each class comment repeats its rule.
//
// Errors from system calls throw std::system_error whose what() names the call.
// An exception escaping a callback propagates out of run(); the loop stays
// consistent and run() may be called again. With an error handler set
// (set_error_handler), it goes to the handler instead and the loop goes on:
// the daemon must not end because one callback failed.
//
// No global state: a test may build as many loops as it likes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

namespace davsyncd::core {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// Owns one file descriptor; closes it on destruction. Movable, not copyable.
// Thread affinity: none (plain value).
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { int f = fd_; fd_ = -1; return f; }
    void reset(int fd = -1) noexcept;

private:
    int fd_ = -1;
};

class FdWatch;
class Timer;
class Defer;

// The loop. Iteration order: due timers, deferred calls, posted callbacks,
// then one epoll_wait and the fd callbacks it reports. epoll_wait blocks with
// no timeout unless work is already due: the loop makes no wake-ups of its
// own, so an idle daemon costs nothing.
//
// Timers share ONE timerfd (absolute CLOCK_MONOTONIC, nanosecond precision)
// armed to the earliest pending deadline; see Timer.
//
// Thread affinity: post() from any thread; everything else from the loop
// thread only. Destroy every source bound to the loop before the loop itself
// (asserted), and join every thread that may post() before destroying it;
// callbacks still queued at destruction are dropped unrun.
class EventLoop {
public:
    EventLoop();
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Runs callbacks until quit(). The calling thread becomes the loop thread.
    // Not re-entrant: never call run() from a callback.
    void run();

    // Makes run() return once the calling callback returns: no further
    // callback runs in this run(). Whatever was pending stays pending for the
    // next run(). Called before run(), it makes the next run() return at once.
    // Loop thread only.
    void quit() noexcept { quit_ = true; }

    // Queues `fn` to run on the loop thread, in the order of post() calls
    // (per posting thread; across threads, in the order they took the lock),
    // and wakes the loop. Any thread, also the loop thread (the callback then
    // runs on the next iteration, never inside post()).
    void post(std::function<void()> fn);

    // Inside run(): the time the current iteration woke up (one clock read per
    // iteration, so every callback of one iteration sees the same "now").
    // Outside run(): the current time. Loop thread only.
    TimePoint now() const noexcept { return running_ ? now_ : Clock::now(); }

    // How many times epoll_wait returned since construction, including the
    // non-blocking polls made when work was already due. For tests and
    // benchmarks of idle behaviour. Loop thread only.
    std::uint64_t wakeups() const noexcept { return wakeups_; }

    // True on the loop thread (see the file comment). Any thread.
    bool in_loop_thread() const noexcept { return owner_.load() == std::this_thread::get_id(); }

    // Receives every std::exception that escapes a callback, which then counts
    // as done; run() goes on. Without one, the exception leaves run().
    // Loop thread only (before run(), the building thread).
    using ErrorHandler = std::function<void(const std::exception&)>;
    void set_error_handler(ErrorHandler handler) { on_error_ = std::move(handler); }

private:
    friend class FdWatch;
    friend class Timer;
    friend class Defer;

    struct TimerKey {
        TimePoint deadline;
        std::uint64_t seq;  // schedule order: ties fire first-scheduled first
        auto operator<=>(const TimerKey&) const = default;
    };

    // Registrations, called by the sources.
    std::uint64_t add_fd(FdWatch* w, int fd, std::uint32_t events);
    void modify_fd(std::uint64_t id, int fd, std::uint32_t events);
    void remove_fd(std::uint64_t id, int fd) noexcept;
    TimerKey add_timer(Timer* t, TimePoint deadline);
    void remove_timer(const TimerKey& key) noexcept { timers_.erase(key); }
    std::uint64_t add_defer(Defer* d);
    void remove_defer(std::uint64_t seq) noexcept { defers_.erase(seq); }

    // Calls a source's callback, handing an exception to on_error_ if set.
    template <typename Fn, typename... Args>
    void dispatch(Fn& fn, Args... args) {
        if (!on_error_) return fn(args...);
        try {
            fn(args...);
        } catch (const std::exception& e) {
            on_error_(e);
        }
    }

    void run_timers();
    void run_defers();
    void run_posted();
    int prepare_wait();
    void wait_and_dispatch(int timeout_ms);
    void arm_timerfd(std::optional<TimePoint> deadline);

    UniqueFd epoll_;
    UniqueFd wake_;   // eventfd written by post()
    UniqueFd timer_;  // the one timerfd
    std::optional<TimePoint> armed_;  // what timer_ is set to, if anything

    std::unordered_map<std::uint64_t, FdWatch*> fds_;  // by registration id
    std::map<TimerKey, Timer*> timers_;                // pending timers, earliest first
    std::map<std::uint64_t, Defer*> defers_;           // pending defers, by schedule order
    std::uint64_t next_id_;                            // fd registration ids
    std::uint64_t next_seq_ = 0;                       // timer and defer schedule order
    std::size_t sources_ = 0;                          // live sources bound to this loop

    std::mutex post_mutex_;
    std::deque<std::function<void()>> posted_;  // guarded by post_mutex_
    ErrorHandler on_error_;

    std::atomic<std::thread::id> owner_;
    TimePoint now_{};
    std::uint64_t wakeups_ = 0;
    bool running_ = false;
    bool quit_ = false;
};

// Calls back when an fd it does not own becomes ready. Level-triggered unless
// EPOLLET is passed; `events` are EPOLL* bits, which equal the POLL* bits that
// sd_bus_get_events() returns, so the sd-bus fd can be watched directly and
// modify()d after each sd_bus_process(). The callback receives the ready
// events (EPOLLERR and EPOLLHUP are always reported).
//
// Call cancel() (or destroy the watch) BEFORE closing the fd: after a close,
// the fd number may already belong to someone else.
//
// Thread affinity: loop thread only.
class FdWatch {
public:
    using Callback = std::function<void(std::uint32_t events)>;
    FdWatch(EventLoop& loop, Callback callback);
    ~FdWatch();
    FdWatch(const FdWatch&) = delete;
    FdWatch& operator=(const FdWatch&) = delete;

    // Starts watching `fd` (replacing a previous fd). Events already reported
    // for the previous registration are dropped. Throws std::system_error
    // (e.g. EPERM for a regular file).
    void watch(int fd, std::uint32_t events);
    // Changes the events of the current fd. Requires is_watching().
    void modify(std::uint32_t events);
    // Stops watching; pending reports are dropped. No-op when idle.
    void cancel() noexcept;

    bool is_watching() const noexcept { return fd_ >= 0; }
    int fd() const noexcept { return fd_; }
    std::uint32_t events() const noexcept { return events_; }
    EventLoop& loop() const noexcept { return loop_; }

private:
    friend class EventLoop;
    EventLoop& loop_;
    Callback callback_;
    int fd_ = -1;
    std::uint32_t events_ = 0;
    std::uint64_t id_ = 0;
};

// Calls back once at a deadline.
//
// All timers of a loop share one timerfd and an ordered map (O(log n) to
// schedule and cancel): 100 accounts with a few timers each cost one fd, and
// the kernel is re-armed at most once per loop iteration, only when the
// earliest deadline changed. A timerfd per Timer would cost an fd and an
// epoll registration per timer and two syscalls per schedule, for nothing.
// Deadlines are absolute CLOCK_MONOTONIC, so there is no millisecond rounding
// and a timer never fires early. (The monotonic clock stops during suspend:
// a deadline measured in wall time passes late after a resume.)
//
// A deadline already passed fires on the next iteration, never inside
// schedule_*(). Equal deadlines fire in scheduling order. A timer scheduled
// by a timer callback never fires in the same pass, so a timer rescheduling
// itself into the past cannot starve the loop.
//
// Thread affinity: loop thread only.
class Timer {
public:
    using Callback = std::function<void()>;
    Timer(EventLoop& loop, Callback callback);
    ~Timer();
    Timer(const Timer&) = delete;
    Timer& operator=(const Timer&) = delete;

    // (Re)schedules: replaces any pending deadline.
    void schedule_at(TimePoint deadline);
    // Relative to loop.now().
    void schedule_in(Duration delay) { schedule_at(loop_.now() + delay); }
    void cancel() noexcept;

    bool is_pending() const noexcept { return key_.has_value(); }
    // The pending deadline; requires is_pending().
    TimePoint deadline() const noexcept { return key_->deadline; }
    EventLoop& loop() const noexcept { return loop_; }

private:
    friend class EventLoop;
    EventLoop& loop_;
    Callback callback_;
    std::optional<EventLoop::TimerKey> key_;
};

// Calls back on the next loop iteration: for work that must not run inside
// the current callback, such as destroying a D-Bus object from within its
// own method handler. schedule() while pending is a no-op (one run). A Defer
// scheduled from a Defer callback runs on the following iteration.
//
// Thread affinity: loop thread only (from other threads, use post()).
class Defer {
public:
    using Callback = std::function<void()>;
    Defer(EventLoop& loop, Callback callback);
    ~Defer();
    Defer(const Defer&) = delete;
    Defer& operator=(const Defer&) = delete;

    void schedule();
    void cancel() noexcept;
    bool is_pending() const noexcept { return seq_.has_value(); }

private:
    friend class EventLoop;
    EventLoop& loop_;
    Callback callback_;
    std::optional<std::uint64_t> seq_;
};

// Receives signals through a signalfd.
//
// The constructor BLOCKS the signals in the calling thread's mask. Create it
// in main() before any other thread starts (libcurl resolver threads, sync
// workers, sd-bus helpers...): threads inherit the mask of their creator, so
// only then is no thread left where a process-directed signal (kill, systemd
// stopping the unit) would take its default action instead of reaching the
// signalfd. The mask is NOT restored on destruction: a signal arriving during
// shutdown stays pending instead of killing the process half-way. Children
// that exec should reset their mask.
//
// Standard signals coalesce: two SIGHUPs before the loop reads give one
// callback. Use one SignalWatch per signal number per process.
//
// Thread affinity: loop thread only.
class SignalWatch {
public:
    using Callback = std::function<void(int signo)>;
    SignalWatch(EventLoop& loop, std::initializer_list<int> signals, Callback callback);
    ~SignalWatch();
    SignalWatch(const SignalWatch&) = delete;
    SignalWatch& operator=(const SignalWatch&) = delete;

private:
    void on_readable();

    Callback callback_;
    UniqueFd fd_;
    FdWatch watch_;
    bool* alive_ = nullptr;  // set while on_readable() runs callbacks
};

// Watches folders through one inotify fd.
//
// The callback gets the folder as given to add(), the entry name inside it
// ("" for events about the folder itself) and the inotify mask (IN_ISDIR
// included). Special reports:
//   - folder "" and mask IN_Q_OVERFLOW: the kernel queue overflowed and
//     events were lost; the owner must rescan everything it watches.
//   - mask IN_IGNORED for a folder: the kernel dropped the watch (the folder
//     was deleted or unmounted); it is no longer watched. (Not reported for
//     remove() and clear(), which are silent.)
// After remove() or clear() no event for that folder reaches the callback,
// even one the kernel had already queued.
//
// Thread affinity: loop thread only.
class InotifyWatch {
public:
    using Callback = std::function<void(const std::string& folder, const std::string& name, std::uint32_t mask)>;
    InotifyWatch(EventLoop& loop, Callback callback);
    ~InotifyWatch();
    InotifyWatch(const InotifyWatch&) = delete;
    InotifyWatch& operator=(const InotifyWatch&) = delete;

    // Watches `folder` for `mask` (IN_* bits; adding IN_ONLYDIR refuses
    // non-folders). Adding a watched folder again replaces its mask. Returns
    // false and logs a warning when the folder cannot be watched: missing,
    // no permission, the user's inotify watch limit, or the same folder
    // already watched under another path (a symlink or bind mount).
    bool add(const std::filesystem::path& folder, std::uint32_t mask);
    // Stops watching `folder` (as given to add()). No-op if not watched.
    void remove(const std::filesystem::path& folder) noexcept;
    // Stops watching every folder.
    void clear() noexcept;

    bool is_watching(const std::filesystem::path& folder) const { return by_folder_.count(folder.string()) != 0; }
    std::size_t size() const noexcept { return by_folder_.size(); }

private:
    void on_readable();

    Callback callback_;
    UniqueFd fd_;
    FdWatch watch_;
    struct Entry {
        std::string folder;
        std::uint32_t mask;
    };
    std::unordered_map<int, Entry> by_wd_;
    std::unordered_map<std::string, int> by_folder_;
    bool* alive_ = nullptr;  // set while on_readable() runs callbacks
};

}  // namespace davsyncd::core
