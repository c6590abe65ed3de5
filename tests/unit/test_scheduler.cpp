#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>

#include "account/scheduler.hpp"

using namespace davsyncd;
using namespace davsyncd::account;
using namespace std::chrono_literals;

namespace {

// An arbitrary origin for the fake clock; tests only ever add to it.
const TimePoint T0 = TimePoint{} + 1000h;

// Readable failure messages: "T0+30.000s" instead of "{?}".
std::string show(TimePoint t) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - T0).count();
    const char* sign = ms < 0 ? "-" : "+";
    const long long a = ms < 0 ? -ms : ms;
    std::string frac = std::to_string(a % 1000);
    frac.insert(0, 3 - frac.size(), '0');
    return "T0" + std::string(sign) + std::to_string(a / 1000) + "." + frac + "s";
}

// A clock the test advances by hand.
struct FakeClock {
    TimePoint now = T0;
    TimePoint advance(Duration d) { return now += d; }
};

SyncToken tok(const std::string& s) { return SyncToken(s); }

SyncOutcome ok(std::map<std::string, SyncToken> tokens = {}) {
    SyncOutcome o;
    o.kind = SyncOutcome::Kind::ok;
    o.tokens = std::move(tokens);
    return o;
}
SyncOutcome error(std::optional<std::chrono::seconds> retry_after = std::nullopt) {
    SyncOutcome o;
    o.kind = SyncOutcome::Kind::error;
    o.retry_after = retry_after;
    return o;
}
SyncOutcome auth_failed() {
    SyncOutcome o;
    o.kind = SyncOutcome::Kind::auth_failed;
    return o;
}
SyncOutcome cancelled() {
    SyncOutcome o;
    o.kind = SyncOutcome::Kind::cancelled;
    return o;
}

using Cols = std::set<std::string>;

// A scheduler that has done its startup sync (ok, whole account) at T0.
// Afterwards it is idle with the next poll at T0 + interval.
Scheduler started(FakeClock& c, Settings settings = {}) {
    Scheduler s(std::move(settings));
    s.start(c.now);
    auto req = s.take_start(c.now);
    REQUIRE(req);
    s.finished(c.now, ok());
    REQUIRE(s.state() == State::idle);
    return s;
}

}  // namespace

namespace doctest {
template <> struct StringMaker<TimePoint> {
    static String convert(const TimePoint& t) { return show(t).c_str(); }
};
template <> struct StringMaker<std::optional<TimePoint>> {
    static String convert(const std::optional<TimePoint>& t) { return t ? show(*t).c_str() : "nullopt"; }
};
template <> struct StringMaker<State> {
    static String convert(const State& s) { return to_string(s); }
};
}  // namespace doctest

TEST_SUITE("scheduler") {

TEST_CASE("names of states and reasons") {
    CHECK(std::string(to_string(State::idle)) == "idle");
    CHECK(std::string(to_string(State::syncing)) == "syncing");
    CHECK(std::string(to_string(State::backoff)) == "backoff");
    CHECK(std::string(to_string(State::auth_failed)) == "auth-failed");
    CHECK(std::string(to_string(State::disabled)) == "disabled");

    CHECK(reasons_to_string(0) == "");
    CHECK(reasons_to_string(Reason::push) == "push");
    CHECK(reasons_to_string(Reason::push | Reason::local_change) == "local-change,push");
    CHECK(reasons_to_string(0x7f) == "startup,interval,local-change,user,push,retry,config");
    CHECK(reasons_to_string(Reason::config | (1u << 20)) == "config");
    CHECK(reasons_to_string(Reason::resume | Reason::network) == "resume,network");
}

TEST_CASE("nothing happens before start()") {
    FakeClock c;
    Scheduler s;
    CHECK(s.state() == State::idle);
    CHECK_FALSE(s.has_pending());
    CHECK(s.next_wakeup() == std::nullopt);
    CHECK_FALSE(s.take_start(c.advance(1h)));
    CHECK(s.syncs_started() == 0);
}

TEST_CASE("startup sync runs at once, then the poll is planned from its end") {
    FakeClock c;
    Scheduler s;
    s.start(c.now);
    CHECK(s.has_pending());
    CHECK(s.next_wakeup() == c.now);
    CHECK(s.next_sync() == c.now);
    CHECK(s.next_poll() == std::nullopt);

    auto req = s.take_start(c.now);
    REQUIRE(req);
    CHECK(req->reasons == Reason::startup);
    CHECK(req->collections.empty());
    CHECK(req->id == 1);
    CHECK(s.state() == State::syncing);
    CHECK_FALSE(s.has_pending());
    CHECK(s.syncs_started() == 1);

    // While it runs: no second start, no wakeup, still no poll planned.
    CHECK_FALSE(s.take_start(c.now));
    CHECK(s.next_wakeup() == std::nullopt);
    CHECK(s.next_poll() == std::nullopt);

    c.advance(7s);
    s.finished(c.now, ok());
    CHECK(s.state() == State::idle);
    CHECK(s.next_poll() == T0 + 7s + 15min);
    CHECK(s.next_wakeup() == T0 + 7s + 15min);
    CHECK_FALSE(s.has_pending());
    CHECK_FALSE(s.take_start(c.now));
}

TEST_CASE("interval polling") {
    FakeClock c;
    Settings st;
    st.interval = 10min;
    Scheduler s = started(c, st);

    for (uint64_t round = 2; round <= 4; ++round) {
        const TimePoint poll = *s.next_poll();
        CHECK(s.next_wakeup() == poll);
        CHECK_FALSE(s.take_start(poll - 1ms));
        c.now = poll + 250ms;  // the main loop may wake a little late
        auto req = s.take_start(c.now);
        REQUIRE(req);
        CHECK(req->reasons == Reason::interval);
        CHECK(req->collections.empty());
        CHECK(req->id == round);
        c.advance(3s);
        s.finished(c.now, ok());
        // Planned from the end of the sync, not from the planned time.
        CHECK(s.next_poll() == c.now + 10min);
    }
    CHECK(s.syncs_started() == 4);
}

TEST_CASE("many triggers during a sync coalesce into exactly one follow-up") {
    FakeClock c;
    Scheduler s = started(c);
    s.trigger(c.now, Reason::user, {"A"});
    auto first = s.take_start(c.now);
    REQUIRE(first);
    CHECK(first->collections == Cols{"A"});

    SUBCASE("collections are merged") {
        c.advance(1s);
        s.trigger(c.now, Reason::user, {"A"});
        s.trigger(c.now, Reason::local_change, {"B"});
        s.trigger(c.now, Reason::local_change, {"B"});
        CHECK(s.push(c.now, "C", tok("c2"), tok("c1")));
        s.trigger(c.now, Reason::user, {"D"});
        CHECK(s.has_pending());
        CHECK_FALSE(s.take_start(c.now));  // still syncing

        c.advance(10s);
        s.finished(c.now, ok({{"A", tok("a9")}}));
        CHECK(s.has_pending());
        CHECK(s.next_wakeup() == c.now);
        auto follow = s.take_start(c.now);
        REQUIRE(follow);
        CHECK(follow->reasons == (Reason::user | Reason::local_change | Reason::push));
        CHECK(follow->collections == Cols{"A", "B", "C", "D"});
        CHECK(follow->id == first->id + 1);
        CHECK_FALSE(s.has_pending());
        CHECK_FALSE(s.take_start(c.now));

        c.advance(5s);
        s.finished(c.now, ok());
        CHECK_FALSE(s.has_pending());
        CHECK_FALSE(s.take_start(c.now));
        // The partial syncs did not move the poll planned by the startup sync.
        CHECK(s.next_wakeup() == T0 + 15min);
    }
    SUBCASE("a trigger for the whole account makes the follow-up whole") {
        s.trigger(c.now, Reason::local_change, {"B"});
        s.trigger(c.now, Reason::config);
        s.trigger(c.now, Reason::user, {"C"});
        c.advance(1s);
        s.finished(c.now, ok());
        auto follow = s.take_start(c.now);
        REQUIRE(follow);
        CHECK(follow->reasons == (Reason::local_change | Reason::config | Reason::user));
        CHECK(follow->collections.empty());
        CHECK_FALSE(s.take_start(c.now));
    }
    CHECK(s.syncs_started() == 3);
}

TEST_CASE("a trigger that arrives just before finished() is not lost") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    auto poll = s.take_start(c.now);
    REQUIRE(poll);
    c.advance(4s);
    s.trigger(c.now, Reason::user, {"A"});  // same instant as the end
    s.finished(c.now, ok());
    CHECK(s.state() == State::idle);
    auto follow = s.take_start(c.now);
    REQUIRE(follow);
    CHECK(follow->reasons == Reason::user);
    CHECK(follow->collections == Cols{"A"});
}

TEST_CASE("local-change burst becomes one sync after the quiet time") {
    FakeClock c;
    Scheduler s = started(c);  // local_debounce 2 s
    const TimePoint burst = c.advance(1min);
    s.trigger(c.now, Reason::local_change, {"A"});
    CHECK(s.next_wakeup() == burst + 2s);
    c.advance(500ms);
    s.trigger(c.now, Reason::local_change, {"A"});
    c.advance(500ms);
    s.trigger(c.now, Reason::local_change, {"B"});
    CHECK(s.next_wakeup() == burst + 3s);  // pushed back by the last change

    CHECK_FALSE(s.take_start(burst + 2s));
    CHECK_FALSE(s.take_start(burst + 3s - 1ms));
    auto req = s.take_start(burst + 3s);
    REQUIRE(req);
    CHECK(req->reasons == Reason::local_change);
    CHECK(req->collections == Cols{"A", "B"});
    s.finished(burst + 4s, ok());
    CHECK_FALSE(s.has_pending());
    CHECK_FALSE(s.take_start(burst + 10s));
    CHECK(s.syncs_started() == 2);
}

TEST_CASE("a steady stream of local changes still syncs every max_debounce") {
    FakeClock c;
    Scheduler s = started(c);  // local_debounce 2 s, max_debounce 30 s
    const TimePoint begin = c.advance(1min);
    std::vector<TimePoint> starts;
    for (int i = 0; i <= 75; ++i) {
        c.now = begin + std::chrono::seconds(i);
        if (auto req = s.take_start(c.now)) {
            CHECK(req->reasons == Reason::local_change);
            starts.push_back(c.now);
            s.finished(c.now, ok());  // an instant sync
        }
        s.trigger(c.now, Reason::local_change, {"A"});  // one write a second
    }
    // The burst began at +0; the sync starting at +30 took the changes of
    // +0..+29; the change at +30 began the next burst, capped at +60.
    REQUIRE(starts.size() == 2);
    CHECK(starts[0] == begin + 30s);
    CHECK(starts[1] == begin + 60s);
    // The writes stop: one more sync after the quiet time.
    c.now = begin + 75s;
    CHECK(s.next_wakeup() == begin + 77s);
    CHECK(s.take_start(begin + 77s));
}

TEST_CASE("an immediate trigger is not delayed by debounced ones") {
    FakeClock c;
    Scheduler s = started(c);
    const TimePoint t = c.advance(1min);
    s.trigger(t, Reason::local_change, {"A"});
    s.trigger(t + 1s, Reason::user, {"B"});
    CHECK(s.next_wakeup() == t + 1s);
    s.trigger(t + 1500ms, Reason::local_change, {"A"});
    CHECK(s.next_wakeup() == t + 1s);
    auto req = s.take_start(t + 1500ms);
    REQUIRE(req);
    CHECK(req->reasons == (Reason::local_change | Reason::user));
    CHECK(req->collections == Cols{"A", "B"});
}

TEST_CASE("a debounce that ends after finished() keeps its due time") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    const TimePoint change = c.advance(10s);
    s.trigger(change, Reason::local_change, {"A"});
    s.finished(change + 500ms, ok());
    CHECK(s.next_wakeup() == change + 2s);
    CHECK_FALSE(s.take_start(change + 1s));
    CHECK(s.take_start(change + 2s));
}

TEST_CASE("a stale push while idle is dropped and counted") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(1min);
    CHECK_FALSE(s.push(c.now, "A", tok("t5"), tok("t5")));
    CHECK(s.stale_pushes_dropped() == 1);
    CHECK_FALSE(s.has_pending());
    CHECK(s.next_wakeup() == T0 + 15min);
    CHECK_FALSE(s.take_start(c.now + 10s));
    CHECK(s.syncs_started() == 1);

    // An empty token proves nothing: it is not stale.
    CHECK(s.push(c.now, "A", tok(""), tok("")));
    CHECK(s.stale_pushes_dropped() == 1);
}

TEST_CASE("a new push while idle syncs that collection after push_debounce") {
    FakeClock c;
    Scheduler s = started(c);  // push_debounce 500 ms
    const TimePoint t = c.advance(1min);
    CHECK(s.push(t, "A", tok("t6"), tok("t5")));
    CHECK(s.push(t + 100ms, "B", tok("b2"), tok("b1")));
    CHECK(s.has_pending());
    CHECK(s.next_wakeup() == t + 600ms);
    CHECK_FALSE(s.take_start(t + 599ms));
    auto req = s.take_start(t + 600ms);
    REQUIRE(req);
    CHECK(req->reasons == Reason::push);
    CHECK(req->collections == Cols{"A", "B"});
    CHECK(s.stale_pushes_dropped() == 0);
}

TEST_CASE("a push during a sync whose token the sync ended with is dropped at finished()") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));  // poll: whole account

    SUBCASE("pushed differs from stored") {
        CHECK(s.push(c.now + 1s, "A", tok("a2"), tok("a1")));
    }
    SUBCASE("pushed equals stored: queued anyway while the collection syncs") {
        CHECK(s.push(c.now + 1s, "A", tok("a2"), tok("a2")));
        CHECK(s.stale_pushes_dropped() == 0);
    }
    CHECK(s.has_pending());
    s.finished(c.now + 3s, ok({{"A", tok("a2")}, {"B", tok("b7")}}));
    CHECK_FALSE(s.has_pending());
    CHECK(s.state() == State::idle);
    CHECK_FALSE(s.take_start(c.now + 1min));
    CHECK(s.next_wakeup() == c.now + 3s + 15min);
    CHECK(s.syncs_started() == 2);
}

TEST_CASE("a push during a sync with a different token gives one follow-up") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    CHECK(s.push(c.now + 1s, "A", tok("a3"), tok("a1")));
    s.finished(c.now + 3s, ok({{"A", tok("a2")}}));
    CHECK(s.has_pending());
    auto follow = s.take_start(c.now + 3s);
    REQUIRE(follow);
    CHECK(follow->reasons == Reason::push);
    CHECK(follow->collections == Cols{"A"});
    s.finished(c.now + 4s, ok({{"A", tok("a3")}}));
    CHECK_FALSE(s.has_pending());
    CHECK_FALSE(s.take_start(c.now + 5s));
}

TEST_CASE("a pending push survives when the sync did not reach its collection") {
    FakeClock c;
    Scheduler s = started(c);
    s.trigger(c.now, Reason::user, {"A"});
    REQUIRE(s.take_start(c.now));  // syncs A only
    // B does not take part: a push of B equal to what we hold is stale at once.
    CHECK_FALSE(s.push(c.now, "B", tok("b1"), tok("b1")));
    CHECK(s.stale_pushes_dropped() == 1);
    // A push of B with a new token is queued; the token map of a sync of A
    // must not drop it even if it happens to name B.
    CHECK(s.push(c.now, "B", tok("b2"), tok("b1")));
    // A push of A that the sync never reports a token for (e.g. it failed
    // before A) stays.
    CHECK(s.push(c.now, "A", tok("a2"), tok("a2")));
    s.finished(c.now + 1s, ok({{"B", tok("b2")}}));
    auto follow = s.take_start(c.now + 1s);
    REQUIRE(follow);
    CHECK(follow->collections == Cols{"A", "B"});
    CHECK(follow->reasons == Reason::push);
}

TEST_CASE("50 pushes during a sync give at most one follow-up") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    for (int i = 1; i <= 50; ++i) {
        const std::string col = (i % 2) ? "A" : "B";
        CHECK(s.push(c.now + std::chrono::milliseconds(10 * i), col, tok(col + std::to_string(i)), tok(col + "0")));
    }

    SUBCASE("the sync ended at the last pushed tokens: no follow-up") {
        s.finished(c.now + 2s, ok({{"A", tok("A49")}, {"B", tok("B50")}}));
        CHECK_FALSE(s.has_pending());
        for (auto t = c.now + 2s; t < c.now + 10min; t += 1s) CHECK_FALSE(s.take_start(t));
        CHECK(s.syncs_started() == 2);
    }
    SUBCASE("the sync ended earlier for one collection: exactly one follow-up") {
        s.finished(c.now + 2s, ok({{"A", tok("A21")}, {"B", tok("B50")}}));
        int follow_ups = 0;
        for (auto t = c.now + 2s; t < c.now + 10min; t += 1s) {
            if (auto req = s.take_start(t)) {
                ++follow_ups;
                CHECK(req->collections == Cols{"A"});
                CHECK(req->reasons == Reason::push);
                s.finished(t, ok({{"A", tok("A49")}}));
            }
        }
        CHECK(follow_ups == 1);
        CHECK(s.syncs_started() == 3);
    }
}

TEST_CASE("push plus local change during a sync: the follow-up runs although the push tokens match") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    CHECK(s.push(c.now + 1s, "A", tok("a2"), tok("a1")));
    s.trigger(c.now + 1s, Reason::local_change, {"A"});
    s.finished(c.now + 5s, ok({{"A", tok("a2")}}));
    CHECK(s.has_pending());
    auto follow = s.take_start(c.now + 5s);
    REQUIRE(follow);
    CHECK(follow->reasons == Reason::local_change);  // the push itself was dropped
    CHECK(follow->collections == Cols{"A"});
}

TEST_CASE("backoff grows 30, 60, 120, ... up to 1 h and resets after success") {
    FakeClock c;
    Scheduler s = started(c);  // random() = 0.5: no jitter
    c.advance(15min);
    REQUIRE(s.take_start(c.now));

    const std::chrono::seconds expected[] = {30s, 60s, 120s, 240s, 480s, 960s, 1920s, 3600s, 3600s, 3600s};
    unsigned n = 0;
    for (auto delay : expected) {
        ++n;
        c.advance(2s);
        s.finished(c.now, error());
        CHECK(s.state() == State::backoff);
        CHECK(s.consecutive_failures() == n);
        CHECK(s.next_retry() == c.now + delay);
        CHECK(s.next_wakeup() == c.now + delay);
        CHECK_FALSE(s.take_start(c.now + delay - 1ms));
        c.advance(delay);
        auto retry = s.take_start(c.now);
        REQUIRE(retry);
        CHECK(retry->reasons == Reason::retry);
        CHECK(retry->collections.empty());
    }

    c.advance(2s);
    s.finished(c.now, ok());
    CHECK(s.state() == State::idle);
    CHECK(s.consecutive_failures() == 0);
    CHECK(s.next_retry() == std::nullopt);
    CHECK(s.next_wakeup() == c.now + 15min);

    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.finished(c.now, error());
    CHECK(s.consecutive_failures() == 1);
    CHECK(s.next_retry() == c.now + 30s);
}

TEST_CASE("backoff_min above backoff_max is capped too") {
    FakeClock c;
    Settings st;
    st.backoff_min = 2h;
    Scheduler s = started(c, st);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.finished(c.now, error());
    CHECK(s.next_retry() == c.now + 1h);
}

TEST_CASE("jitter stays within +-20%") {
    for (double r : {0.0, 0.999}) {
        CAPTURE(r);
        FakeClock c;
        Settings st;
        st.random = [r] { return r; };
        Scheduler s = started(c, st);
        c.advance(15min);
        REQUIRE(s.take_start(c.now));
        s.finished(c.now, error());
        const auto first = *s.next_retry() - c.now;
        // Then drive the failure count to the cap.
        for (int i = 0; i < 12; ++i) {
            c.now = *s.next_retry();
            REQUIRE(s.take_start(c.now));
            s.finished(c.now, error());
        }
        const auto capped = *s.next_retry() - c.now;
        if (r == 0.0) {
            CHECK(first == Duration(24s));
            CHECK(capped == Duration(48min));  // 3600 s * 0.8
        } else {
            CHECK(first == std::chrono::duration_cast<Duration>(std::chrono::duration<double>(30 * 1.1996)));
            CHECK(capped >= Duration(3600s) * 1.199);
            CHECK(capped < Duration(3600s) * 1.2);
        }
    }
}

TEST_CASE("Retry-After is used exactly") {
    FakeClock c;
    Settings st;
    st.random = [] { return 0.0; };  // would shorten a computed delay
    Scheduler s = started(c, st);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));

    SUBCASE("as given") {
        s.finished(c.now, error(std::chrono::seconds(7200)));  // above backoff_max too
        CHECK(s.next_retry() == c.now + 2h);
        CHECK_FALSE(s.take_start(c.now + 2h - 1s));
        CHECK(s.take_start(c.now + 2h));
    }
    SUBCASE("at least one second") {
        s.finished(c.now, error(std::chrono::seconds(0)));
        CHECK(s.next_retry() == c.now + 1s);
    }
    CHECK(s.consecutive_failures() == 1);
}

TEST_CASE("backoff: triggers wait for the retry, a user request starts at once") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.finished(c.now, error());
    const TimePoint retry = c.now + 30s;
    REQUIRE(s.next_retry() == retry);

    SUBCASE("local change and push wait, the retry covers them") {
        s.trigger(c.now + 1s, Reason::local_change, {"A"});
        CHECK(s.push(c.now + 1s, "B", tok("b2"), tok("b1")));
        s.trigger(c.now + 1s, Reason::interval);
        CHECK(s.has_pending());
        CHECK(s.next_wakeup() == retry);
        CHECK_FALSE(s.take_start(c.now + 10s));
        CHECK_FALSE(s.take_start(retry - 1ms));
        auto req = s.take_start(retry);
        REQUIRE(req);
        CHECK(req->reasons == (Reason::retry | Reason::local_change | Reason::push | Reason::interval));
        CHECK(req->collections.empty());
        CHECK_FALSE(s.has_pending());
    }
    SUBCASE("a user request starts before the retry, for the whole account") {
        s.trigger(c.now + 5s, Reason::user, {"A"});
        CHECK(s.next_wakeup() == c.now + 5s);
        auto req = s.take_start(c.now + 5s);
        REQUIRE(req);
        CHECK(req->reasons == Reason::user);
        CHECK(req->collections.empty());
        s.finished(c.now + 6s, ok());
        CHECK(s.state() == State::idle);
        CHECK(s.consecutive_failures() == 0);
        CHECK(s.next_retry() == std::nullopt);
        CHECK_FALSE(s.take_start(retry));
    }
}

TEST_CASE("auth_failed stops retries and polls; a user request still runs; credentials_changed recovers") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.finished(c.now, auth_failed());
    CHECK(s.state() == State::auth_failed);
    CHECK(s.consecutive_failures() == 1);
    CHECK(s.next_retry() == std::nullopt);
    CHECK(s.next_wakeup() == std::nullopt);
    CHECK(s.next_sync() == std::nullopt);

    // Neither time nor ordinary triggers start anything.
    s.trigger(c.now + 1s, Reason::local_change, {"A"});
    CHECK(s.push(c.now + 1s, "B", tok("b2"), tok("b1")));
    s.trigger(c.now + 1s, Reason::interval);
    CHECK(s.next_wakeup() == std::nullopt);
    for (auto t = c.now; t < c.now + 3h; t += 1min) CHECK_FALSE(s.take_start(t));
    CHECK(s.syncs_started() == 2);

    // A user request runs, and takes the waiting triggers along.
    c.advance(3h);
    s.trigger(c.now, Reason::user, {"A"});
    REQUIRE(s.next_wakeup());
    CHECK(*s.next_wakeup() <= c.now);  // the waiting triggers were due long ago: ask at once
    auto req = s.take_start(c.now);
    REQUIRE(req);
    CHECK(req->reasons == (Reason::user | Reason::local_change | Reason::push | Reason::interval));
    CHECK(req->collections.empty());
    s.finished(c.now + 1s, auth_failed());
    CHECK(s.state() == State::auth_failed);
    CHECK(s.consecutive_failures() == 2);
    CHECK_FALSE(s.has_pending());
    CHECK_FALSE(s.take_start(c.now + 1h));

    // New credentials: idle, failures reset, a config sync at once.
    c.advance(1h);
    s.credentials_changed(c.now);
    CHECK(s.state() == State::idle);
    CHECK(s.consecutive_failures() == 0);
    CHECK(s.next_wakeup() == c.now);
    auto cfg = s.take_start(c.now);
    REQUIRE(cfg);
    CHECK(cfg->reasons == Reason::config);
    CHECK(cfg->collections.empty());
    s.finished(c.now + 2s, ok());
    CHECK(s.state() == State::idle);
    CHECK(s.next_poll() == c.now + 2s + 15min);
}

TEST_CASE("credentials_changed leaves backoff at once") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.finished(c.now, error(std::chrono::seconds(3600)));
    s.credentials_changed(c.now + 1s);
    CHECK(s.state() == State::idle);
    CHECK(s.consecutive_failures() == 0);
    CHECK(s.next_retry() == std::nullopt);
    auto req = s.take_start(c.now + 1s);
    REQUIRE(req);
    CHECK(req->reasons == Reason::config);
}

TEST_CASE("credentials_changed during a sync that fails takes effect when it ends") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.credentials_changed(c.now + 1s);
    CHECK(s.state() == State::syncing);
    s.finished(c.now + 2s, auth_failed());  // refused the old credentials
    CHECK(s.state() == State::idle);
    CHECK(s.consecutive_failures() == 0);
    auto req = s.take_start(c.now + 2s);
    REQUIRE(req);
    CHECK(req->reasons == Reason::config);
    // A refusal of the new credentials counts again.
    s.finished(c.now + 3s, auth_failed());
    CHECK(s.state() == State::auth_failed);
    CHECK(s.consecutive_failures() == 1);
}

TEST_CASE("disabled: nothing runs; enabling syncs everything") {
    FakeClock c;
    Scheduler s = started(c);
    s.trigger(c.now, Reason::local_change, {"A"});

    s.set_enabled(c.now, false);
    CHECK(s.state() == State::disabled);
    CHECK_FALSE(s.enabled());
    CHECK_FALSE(s.has_pending());
    CHECK(s.next_wakeup() == std::nullopt);
    CHECK(s.next_sync() == std::nullopt);

    s.trigger(c.now, Reason::user);
    CHECK_FALSE(s.push(c.now, "A", tok("a2"), tok("a1")));
    CHECK(s.stale_pushes_dropped() == 0);
    s.credentials_changed(c.now);
    CHECK(s.state() == State::disabled);
    for (auto t = c.now; t < c.now + 2h; t += 1min) CHECK_FALSE(s.take_start(t));
    CHECK(s.syncs_started() == 1);

    c.advance(2h);
    s.set_enabled(c.now, true);
    CHECK(s.state() == State::idle);
    CHECK(s.enabled());
    auto req = s.take_start(c.now);
    REQUIRE(req);
    CHECK(req->reasons == Reason::config);
    CHECK(req->collections.empty());

    // Enabling an enabled account changes nothing.
    s.set_enabled(c.now, true);
    CHECK_FALSE(s.has_pending());
}

TEST_CASE("disabling during a sync lands in disabled when it ends") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.trigger(c.now, Reason::user);  // queued, then dropped by the disable
    s.set_enabled(c.now + 1s, false);
    CHECK(s.state() == State::syncing);
    CHECK_FALSE(s.has_pending());
    s.trigger(c.now + 2s, Reason::user);
    CHECK_FALSE(s.has_pending());
    CHECK_FALSE(s.take_start(c.now + 2s));

    SUBCASE("sync ok") { s.finished(c.now + 3s, ok()); }
    SUBCASE("sync failed") { s.finished(c.now + 3s, error()); }
    CHECK(s.state() == State::disabled);
    CHECK(s.next_wakeup() == std::nullopt);
    CHECK(s.next_retry() == std::nullopt);
    CHECK_FALSE(s.take_start(c.now + 1h));

    // Re-enabled: a config sync.
    s.set_enabled(c.now + 1h, true);
    CHECK(s.take_start(c.now + 1h));
}

TEST_CASE("disable and re-enable during one sync queues a config follow-up") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.set_enabled(c.now, false);
    s.set_enabled(c.now, true);
    s.finished(c.now + 1s, ok());
    CHECK(s.state() == State::idle);
    auto req = s.take_start(c.now + 1s);
    REQUIRE(req);
    CHECK(req->reasons == Reason::config);
}

TEST_CASE("cancelled keeps the failure count and the pending follow-up") {
    FakeClock c;
    Scheduler s = started(c);

    SUBCASE("from idle") {
        s.trigger(c.now, Reason::user, {"A"});
        REQUIRE(s.take_start(c.now));
        s.trigger(c.now + 1s, Reason::user, {"B"});
        s.finished(c.now + 2s, cancelled());
        CHECK(s.state() == State::idle);
        CHECK(s.consecutive_failures() == 0);
        CHECK(s.next_poll() == T0 + 15min);  // unchanged
        auto follow = s.take_start(c.now + 2s);
        REQUIRE(follow);
        CHECK(follow->collections == Cols{"B"});
    }
    SUBCASE("a user sync started in backoff returns to backoff") {
        c.advance(15min);
        REQUIRE(s.take_start(c.now));
        s.finished(c.now, error());
        s.finished(c.now, error());  // ignored: nothing runs
        CHECK(s.consecutive_failures() == 1);
        const auto retry = s.next_retry();
        s.trigger(c.now + 1s, Reason::user);
        REQUIRE(s.take_start(c.now + 1s));
        s.finished(c.now + 2s, cancelled());
        CHECK(s.state() == State::backoff);
        CHECK(s.consecutive_failures() == 1);
        CHECK(s.next_retry() == retry);
        CHECK_FALSE(s.take_start(c.now + 3s));
        CHECK(s.take_start(*retry));
    }
    SUBCASE("a cancelled startup sync still plans a poll") {
        Scheduler fresh;
        fresh.start(c.now);
        REQUIRE(fresh.take_start(c.now));
        fresh.finished(c.now + 1s, cancelled());
        CHECK(fresh.state() == State::idle);
        CHECK(fresh.next_wakeup() == c.now + 1s + 15min);
    }
}

TEST_CASE("set_interval re-plans the next poll") {
    FakeClock c;
    Scheduler s = started(c);  // last full sync ended at T0
    REQUIRE(s.next_poll() == T0 + 15min);

    SUBCASE("longer") {
        s.set_interval(T0 + 5min, 1h);
        CHECK(s.next_poll() == T0 + 1h);
        CHECK_FALSE(s.take_start(T0 + 15min));
        auto req = s.take_start(T0 + 1h);
        REQUIRE(req);
        CHECK(req->reasons == Reason::interval);
        s.finished(T0 + 1h, ok());
        CHECK(s.next_poll() == T0 + 2h);
    }
    SUBCASE("shorter, already elapsed: due at once") {
        s.set_interval(T0 + 5min, 2min);
        CHECK(s.next_poll() == T0 + 2min);
        CHECK(s.take_start(T0 + 5min));
    }
    SUBCASE("before any sync ended: from now") {
        Scheduler fresh;
        fresh.set_interval(T0, 1h);
        CHECK(fresh.next_poll() == T0 + 1h);
    }
}

TEST_CASE("a partial sync does not postpone the poll of the whole account") {
    FakeClock c;
    Scheduler s = started(c);
    for (auto t = T0 + 1min; t < T0 + 15min; t += 1min) {
        CHECK(s.push(t, "A", tok("a" + std::to_string((t - T0) / 1min)), tok("old")));
        auto req = s.take_start(t + 500ms);
        REQUIRE(req);
        CHECK(req->collections == Cols{"A"});
        s.finished(t + 1s, ok());
    }
    CHECK(s.next_wakeup() == T0 + 15min);
    auto poll = s.take_start(T0 + 15min);
    REQUIRE(poll);
    CHECK(poll->reasons == Reason::interval);
    CHECK(poll->collections.empty());
}

TEST_CASE("a due poll merges the pending triggers into one whole sync") {
    FakeClock c;
    Scheduler s = started(c);
    s.trigger(T0 + 15min - 1s, Reason::local_change, {"A"});  // due T0+15min+1s
    CHECK(s.next_wakeup() == T0 + 15min);
    auto req = s.take_start(T0 + 15min);
    REQUIRE(req);
    CHECK(req->reasons == (Reason::interval | Reason::local_change));
    CHECK(req->collections.empty());
    CHECK_FALSE(s.has_pending());
    s.finished(T0 + 15min + 1s, ok());
    CHECK_FALSE(s.take_start(T0 + 16min));
}

// --- resume from suspend and network return (woke) ---------------------------

TEST_CASE("a resume syncs the whole account once, after the settle time") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(1min);
    s.woke(c.now, Reason::resume);
    CHECK(s.has_pending());
    CHECK(s.next_wakeup() == c.now + 2s);
    CHECK_FALSE(s.take_start(c.now + 2s - 1ms));
    auto req = s.take_start(c.now + 2s);
    REQUIRE(req);
    CHECK(req->reasons == Reason::resume);
    CHECK(req->collections.empty());
    CHECK_FALSE(s.has_pending());
    s.finished(c.now + 3s, ok());
    CHECK_FALSE(s.has_pending());
    // A whole-account sync: the poll is planned from its end.
    CHECK(s.next_wakeup() == c.now + 3s + 15min);
}

TEST_CASE("a resume followed by the network coming back is one sync") {
    FakeClock c;
    Scheduler s = started(c);
    s.woke(c.now, Reason::resume);
    s.woke(c.now + 1500ms, Reason::network);
    CHECK(s.next_wakeup() == c.now + 3500ms);
    CHECK_FALSE(s.take_start(c.now + 2s));
    auto req = s.take_start(c.now + 3500ms);
    REQUIRE(req);
    CHECK(req->reasons == (Reason::resume | Reason::network));
    CHECK(req->collections.empty());
    s.finished(c.now + 4s, ok());
    CHECK_FALSE(s.has_pending());
    CHECK(s.syncs_started() == 2);
}

TEST_CASE("a flapping network coalesces, and still syncs within max_debounce") {
    FakeClock c;
    Scheduler s = started(c);
    // connected-global every second for a minute: debounced into one sync
    // that starts max_debounce after the first.
    std::optional<SyncRequest> req;
    TimePoint started_at{};
    for (auto t = c.now; t < c.now + 60s && !req; t += 1s) {
        s.woke(t, Reason::network);
        if ((req = s.take_start(t))) started_at = t;
    }
    REQUIRE(req);
    CHECK(started_at == c.now + 30s);
    CHECK(req->reasons == Reason::network);
    CHECK(s.syncs_started() == 2);
}

TEST_CASE("a resume during a running sync folds into one follow-up, never zero") {
    FakeClock c;
    Scheduler s = started(c);
    s.trigger(c.now, Reason::user, {"A"});
    auto first = s.take_start(c.now);
    REQUIRE(first);

    SUBCASE("one resume") {
        s.woke(c.now + 1s, Reason::resume);
    }
    SUBCASE("a resume and network flaps") {
        s.woke(c.now + 1s, Reason::resume);
        for (int i = 0; i < 5; ++i) s.woke(c.now + 1s + i * 100ms, Reason::network);
    }
    CHECK_FALSE(s.take_start(c.now + 10s));  // still syncing
    s.finished(c.now + 10s, ok({{"A", tok("a2")}}));
    CHECK(s.has_pending());
    REQUIRE(s.next_wakeup());
    CHECK(*s.next_wakeup() <= c.now + 10s);  // the settle time passed during the sync
    auto follow = s.take_start(c.now + 10s);
    REQUIRE(follow);
    CHECK((follow->reasons & Reason::resume));
    CHECK(follow->collections.empty());
    s.finished(c.now + 11s, ok());
    CHECK_FALSE(s.has_pending());
    CHECK_FALSE(s.take_start(c.now + 1min));
    CHECK(s.syncs_started() == 3);
}

TEST_CASE("the stagger spreads accounts; without it an account is not delayed") {
    FakeClock c;
    Scheduler a = started(c), b = started(c);
    a.woke(c.now, Reason::resume);
    b.woke(c.now, Reason::resume, 1500ms);
    CHECK(a.next_wakeup() == c.now + 2s);
    CHECK(b.next_wakeup() == c.now + 3500ms);
    CHECK(a.take_start(c.now + 2s));
    CHECK_FALSE(b.take_start(c.now + 2s));
    CHECK(b.take_start(c.now + 3500ms));
}

TEST_CASE("backoff: the network coming back retries once settled") {
    FakeClock c;
    Scheduler s = started(c);
    c.advance(15min);
    REQUIRE(s.take_start(c.now));
    s.finished(c.now, error());
    REQUIRE(s.state() == State::backoff);
    const TimePoint retry = c.now + 30s;
    REQUIRE(s.next_retry() == retry);

    s.woke(c.now + 1s, Reason::network);
    CHECK(s.next_wakeup() == c.now + 3s);
    CHECK_FALSE(s.take_start(c.now + 2s));
    auto req = s.take_start(c.now + 3s);
    REQUIRE(req);
    CHECK(req->reasons == Reason::network);
    CHECK(req->collections.empty());
    s.finished(c.now + 4s, ok());
    CHECK(s.state() == State::idle);
    CHECK(s.next_retry() == std::nullopt);
    CHECK_FALSE(s.take_start(retry));
}

TEST_CASE("auth_failed and disabled: a resume starts nothing") {
    FakeClock c;
    Scheduler s = started(c);
    SUBCASE("auth_failed keeps it pending for the user's request") {
        REQUIRE(s.take_start(c.now + 15min));
        s.finished(c.now + 15min, auth_failed());
        s.woke(c.now + 16min, Reason::resume);
        CHECK(s.has_pending());
        CHECK(s.next_wakeup() == std::nullopt);
        CHECK_FALSE(s.take_start(c.now + 20min));
    }
    SUBCASE("disabled ignores it") {
        s.set_enabled(c.now, false);
        s.woke(c.now, Reason::resume);
        s.woke(c.now, Reason::network);
        CHECK_FALSE(s.has_pending());
        CHECK_FALSE(s.take_start(c.now + 1min));
    }
}

}  // TEST_SUITE
