"""davsyncd as a long-running daemon, for rows 5 (push latency), 6
(self-change cost) and the idle half of row 7.

A DaemonRig is davsyncd on a private session bus (the integration tests'
PrivateBus) with its own XDG folders (DaemonEnv), and, with push, the
integration tests' WebDAV-Push front before the bench server
(davtest/pushfront.py) and their UnifiedPush distributor on the same bus
(davtest/distributor.py):

    other client --PUT--> push front --> Radicale
                              | push (RFC 8291, VAPID)
                              v
                         distributor --Connector2.Message--> davsyncd --sync--> vdir

Without push, the daemon talks to the server directly and polls.

The daemon runs with DAVSYNCD_DEBUG=1: its log has one line per sync start
(with the reasons) and one per request, in the order they happened, which
is how row 6 tells which sync made which request (see sync_segments).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .servers import REPO  # noqa: F401  (puts tests/integration on sys.path)

from davtest.daemon import DaemonEnv, wait_until  # noqa: E402
from davtest.dbus import ACCOUNT, COLLECTION, PrivateBus, account_path, collection_path, wait_alive  # noqa: E402
from davtest.distributor import Distributor  # noqa: E402
from davtest.procs import proc_figures  # noqa: E402
from davtest.settle import SettleMixin  # noqa: E402
from davtest.pushfront import STATE_METHODS, PushFront, RequestRecord  # noqa: E402


class RigError(RuntimeError):
    pass


# --- the push front -----------------------------------------------------------------

class BenchPushFront(PushFront):
    """The tests' push front with one change for the benchmark: the sync-token
    sent in a push is looked up once for all the changes of a collection that
    are waiting at that moment, instead of once per change.

    The front learns a collection's new token with a Depth-0 PROPFIND to the
    backend, and Radicale 3.1.8 computes it from every item: about 1 s at
    10 000 contacts. Looked up change by change, the pushes about a burst of
    100 PUTs would trail the burst by 100 s, which no server with WebDAV-Push
    does (it knows its token when it commits). Here every change still gets
    its own push, in order, at most one lookup late, carrying the
    collection's token as it is when the push is sent. Push-Dont-Notify is
    decided per change, as before.

    With lookup_grace > 0 (row 6 sets it), the lookup also waits until no
    write to the collection is in flight and none was answered for
    lookup_grace seconds, but at most lookup_max_hold seconds: a lookup
    takes Radicale's storage lock, and lookups between the PUTs of a burst
    would make every PUT wait for one (measured: 100 PUTs took 138 s
    instead of 26 s). Pushes are then at most lookup_max_hold + one lookup
    late. Nothing else differs from PushFront."""

    def __init__(self, *a, lookup_grace: float = 0.0, lookup_max_hold: float = 5.0, **kw):
        super().__init__(*a, **kw)
        self.lookup_grace = lookup_grace
        self.lookup_max_hold = lookup_max_hold
        self._writes_in_flight: dict[str, int] = {}
        self._last_write: dict[str, float] = {}

    def _forward(self, method, target, header_items, body, h):
        if method.upper() not in STATE_METHODS:
            return super()._forward(method, target, header_items, body, h)
        key = self.parent_key(target)
        with self._cv:
            self._writes_in_flight[key] = self._writes_in_flight.get(key, 0) + 1
        try:
            return super()._forward(method, target, header_items, body, h)
        finally:
            with self._cv:
                self._writes_in_flight[key] -= 1
                self._last_write[key] = time.monotonic()
                self._cv.notify_all()

    def _hold_lookup(self, collection: str) -> None:
        if self.lookup_grace <= 0:
            return
        t0 = time.monotonic()
        with self._cv:
            while not self._stopping:
                now = time.monotonic()
                if now - t0 >= self.lookup_max_hold:
                    return
                quiet = now - self._last_write.get(collection, 0.0)
                if not self._writes_in_flight.get(collection) and quiet >= self.lookup_grace:
                    return
                self._cv.wait(min(0.05, max(0.005, self.lookup_grace - quiet)))

    def _process_event(self, ev) -> None:
        if ev.kind == "content" and (self.honour_dont_notify is False or ev.dont_notify is None):
            self._hold_lookup(ev.collection)
        batch = [ev]
        if ev.kind == "content":
            with self._cv:
                same = [e for e in self._events if e.kind == "content" and e.collection == ev.collection]
                for e in same:
                    self._events.remove(e)
            batch += same
        self._prune()
        with self._lock:
            plan = [(e, self._targets_for(e)) for e in batch]
        if not any(t for _, t in plan):
            return
        if len(batch) > 1:
            self._count("token_lookups_shared", len(batch) - 1)
        token = None
        if ev.kind == "content":
            token = self._lookup_sync_token(ev.collection, ev.authorization,
                                            fallback=[s.authorization for _, ts in plan for s in ts])
        with self._lock:
            for e, targets in plan:
                self._enqueue_for(e, targets, token)


# --- requests as the front saw them -------------------------------------------------

def is_daemon(r: RequestRecord) -> bool:
    return (r.headers.get("User-Agent") or "").startswith("davsyncd/")


def request_kind(r: RequestRecord) -> str:
    """'PUT', 'GET', 'PROPFIND depth=0', 'REPORT sync-collection', ..."""
    if r.method == "REPORT":
        for k in (b"sync-collection", b"calendar-multiget", b"addressbook-multiget",
                  b"calendar-query", b"addressbook-query"):
            if k in r.body:
                return f"REPORT {k.decode()}"
        return "REPORT"
    if r.method == "PROPFIND":
        return f"PROPFIND depth={r.headers.get('Depth')}"
    if r.method == "POST" and b"push-register" in r.body:
        return "POST push-register"
    return r.method


def describe(r: RequestRecord) -> str:
    return f"{request_kind(r)} {urllib.parse.unquote(urllib.parse.urlsplit(r.path).path)} -> {r.status}"


def is_download(kind: str) -> bool:
    return kind == "GET" or kind.endswith("-multiget") or kind.endswith("-query")


def is_light(kind: str) -> bool:
    """A request that costs the server a token computation, not item data."""
    return kind in ("REPORT sync-collection", "PROPFIND depth=0")


# --- the daemon's log ---------------------------------------------------------------

_START_RE = re.compile(r"account '(?P<acc>[^']*)': sync (?P<id>\d+) starts \((?P<reasons>[^)]*)\)")
_REQ_RE = re.compile(r"^(?:<\d>)?(?:debug: )?(?P<method>[A-Z]+) (?P<url>\S+) -> (?P<status>\d+) "
                     r"\((?P<bytes>\d+) bytes, (?P<ms>\d+) ms\)")


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int
    bytes: int


@dataclass
class SyncSegment:
    account: str
    id: int
    reasons: list
    requests: list          # LoggedRequest, in order


def sync_segments(log_text: str) -> tuple[list[SyncSegment], list[LoggedRequest]]:
    """The syncs in a piece of the daemon's debug log, each with the requests
    logged after its start line and before the next sync's start line (the
    requests of one account are sequential and a sync's follow-up starts
    only after it ended); and the requests logged before the first start."""
    segments: list[SyncSegment] = []
    before: list[LoggedRequest] = []
    for line in log_text.splitlines():
        m = _START_RE.search(line)
        if m:
            segments.append(SyncSegment(m["acc"], int(m["id"]),
                                        [x for x in m["reasons"].split(",") if x], []))
            continue
        m = _REQ_RE.search(line)
        if m:
            req = LoggedRequest(m["method"], urllib.parse.unquote(urllib.parse.urlsplit(m["url"]).path),
                                int(m["status"]), int(m["bytes"]))
            (segments[-1].requests if segments else before).append(req)
    return segments, before


# --- /proc figures ------------------------------------------------------------------

PERF_EVENTS = ["sched:sched_switch", "timer:hrtimer_start", "timer:timer_start"]


def perf_start(pid: int) -> Optional[subprocess.Popen]:
    """`perf stat` attached to pid, counting its context switches and the
    timers its threads arm (hrtimer_start, timer_start tracepoints) until
    perf_stop(); None when perf is not installed."""
    perf = shutil.which("perf")
    if not perf:
        return None
    try:
        return subprocess.Popen([perf, "stat", "-x", ",", "-e", ",".join(PERF_EVENTS), "-p", str(pid)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    except OSError:
        return None


def perf_stop(proc: Optional[subprocess.Popen]) -> Optional[dict]:
    """The counts of a perf_start() run ({event: count}); None when perf
    could not count them (no permission, no tracepoints)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    counts = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[2] in PERF_EVENTS:
            if parts[0] == "<not counted>":
                counts[parts[2]] = 0     # attached, but the task never ran in the window
                continue
            try:
                counts[parts[2]] = int(parts[0])
            except ValueError:
                return None              # "<not supported>"
    return counts if len(counts) == len(PERF_EVENTS) else None


# --- the rig ------------------------------------------------------------------------

@dataclass
class AccountSpec:
    id: str
    collections: list            # collection names (their ids on the server)
    sync_interval: int = 3600


FAR = 600.0     # seconds: a NextSync further away than this is the poll, not a pending trigger


class DaemonRig(SettleMixin):
    def __init__(self, root: Path, setup, binary: Path, accounts: list[AccountSpec], *,
                 push: bool, log: Callable = print):
        self.root = Path(root)
        self.setup = setup
        self.binary = Path(binary)
        self.accounts = accounts
        self.push = push
        self.log = log
        self.bus: Optional[PrivateBus] = None
        self.front: Optional[BenchPushFront] = None
        self.dist: Optional[Distributor] = None
        self.proc: Optional[subprocess.Popen] = None
        self.monitor = None
        self.env: Optional[DaemonEnv] = None

    # ---- life cycle

    def start(self) -> "DaemonRig":
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.bus = PrivateBus(self.root / "bus").start()
        backend = self.setup.server.base_url
        if self.push:
            self.front = BenchPushFront(backend).start()
            self.dist = Distributor(self.bus.address, self.root / "dist").start()
            base = self.front.base_url
        else:
            base = backend
        url = urllib.parse.urljoin(base, urllib.parse.urlsplit(self.setup.home_url).path)
        self.env = DaemonEnv(self.root / "daemon", binary=self.binary)
        config = self.env.write_config([
            {"id": a.id, "url": url, "username": self.setup.user, "password": self.setup.password,
             "sync_interval": a.sync_interval, "collections": {"include": list(a.collections)}}
            for a in self.accounts])
        self.log_path = self.env.root / "davsyncd.log"
        # The monitor first, so that it sees the start-up syncs too.
        self.monitor = self.bus.monitor()
        self.proc = self.env.start("--config", config,
                                   extra_env={"DBUS_SESSION_BUS_ADDRESS": self.bus.address,
                                              "DAVSYNCD_DEBUG": "1"})
        self.bus.watchdog = self.death
        self.wait(lambda: self.bus.name_has_owner() and self.bus.name_owner_pid() == self.proc.pid,
                  20, "davsyncd to own its bus name")

    def stop(self) -> None:
        for what, fn in (("davsyncd", lambda: self.proc and DaemonEnv.stop(self.proc)),
                         ("distributor", lambda: self.dist and self.dist.stop()),
                         ("push front", lambda: self.front and self.front.stop()),
                         ("bus", lambda: self.bus and self.bus.stop())):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - stop the rest anyway
                self.log(f"    (stopping the {what}: {type(e).__name__}: {e})")
        self.proc = self.dist = self.front = self.bus = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def death(self) -> Optional[str]:
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            return None
        return f"davsyncd exited with {rc}; end of its log:\n{self.log_text()[-3000:]}"

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait(self, predicate, timeout: float, what: str):
        return wait_alive(self.bus, predicate, timeout, what,
                          lambda: "daemon log tail:\n" + self.log_text()[-2500:])

    # ---- D-Bus views

    def account(self, acc: str) -> dict:
        return self.bus.get_all(account_path(acc), ACCOUNT)

    def collection(self, acc: str, folder: str) -> dict:
        return self.bus.get_all(collection_path(acc, folder), COLLECTION)

    def started(self, since: int = 0, acc: Optional[str] = None) -> list:
        paths = {account_path(a.id) for a in self.accounts} if acc is None else {account_path(acc)}
        return self.monitor.find(lambda s: s.member == "SyncStarted" and s.path in paths, since)

    def finished(self, since: int = 0, acc: Optional[str] = None) -> list:
        paths = {account_path(a.id) for a in self.accounts} if acc is None else {account_path(acc)}
        return self.monitor.find(lambda s: s.member == "SyncFinished" and s.path in paths, since)

    def mark(self) -> int:
        return self.monitor.mark()

    # ---- readiness and quiet

    def wait_ready(self, timeout: float) -> None:
        """Every account did its start-up sync (ok) and, with push, is
        subscribed (PushState active); then settle()."""
        def check():
            for a in self.accounts:
                acc = self.account(a.id)
                if acc["LastSync"] == 0 or acc["State"] != "idle":
                    return False
                if acc["LastResult"] != "ok":
                    raise RigError(f"account {a.id}: start-up sync ended {acc['LastResult']}: "
                                   f"{acc.get('LastError')}\n{self.log_text()[-2000:]}")
                if self.push and acc["PushState"] != "active":
                    return False
            return True
        self.wait(check, timeout, "the start-up syncs (and push subscriptions)")
        self.settle(timeout)

    def _caught_up(self, acc_id: str, last_sync: int) -> bool:
        """The monitor has seen the PropertiesChanged carrying LastSync =
        last_sync, hence every signal of that sync before it."""
        if last_sync == 0:
            return True
        path = account_path(acc_id)
        return bool(self.monitor.find(
            lambda s: s.member == "PropertiesChanged" and s.path == path and len(s.args) > 1
            and s.args[0] == ACCOUNT and isinstance(s.args[1], dict)
            and s.args[1].get("LastSync") == last_sync))

    def _daemon_idle(self) -> Optional[int]:
        n = len(self.started())
        for a in self.accounts:
            acc = self.account(a.id)
            if acc["State"] != "idle" or not self._caught_up(a.id, acc["LastSync"]):
                return None
            # A pending trigger makes NextSync near; idle means the poll is next.
            far = min(FAR, a.sync_interval / 2)
            if acc["NextSync"] and acc["NextSync"] / 1e6 - time.time() < far:
                return None
        done = {(s.path, s.args[0]) for s in self.finished()}
        if any((s.path, s.args[0]) not in done for s in self.started()):
            return None
        if len(self.started()) != n:
            return None
        return n + 1

    def quiet(self, seconds: float, deadline: float) -> float:
        """settle(), then wait until `seconds` pass with no new request of
        the daemon at the front and no new sync; returns the seconds waited."""
        t0 = time.monotonic()
        end = t0 + deadline
        while True:
            self.settle(max(5.0, end - time.monotonic()))
            n_req, n_sync = len(self.front.requests()) if self.front else 0, len(self.started())
            time.sleep(seconds)
            if (len(self.front.requests()) if self.front else 0) == n_req and len(self.started()) == n_sync:
                self.settle(max(5.0, end - time.monotonic()))
                if len(self.started()) == n_sync:
                    return time.monotonic() - t0
            if time.monotonic() > end:
                raise RigError(f"the daemon did not stay quiet for {seconds:g} s within {deadline:g} s")

    # ---- the folder and the server

    def folder(self, acc: str, collection: str) -> Path:
        return self.env.data_dir / acc / collection

    def daemon_requests(self, since_seq: int = 0) -> list[RequestRecord]:
        return [r for r in self.front.requests() if is_daemon(r) and r.seq > since_seq]

    def last_seq(self) -> int:
        reqs = self.front.requests()
        return reqs[-1].seq if reqs else 0


# --- waiting for a file -------------------------------------------------------------

def file_state(path: Path):
    try:
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)
    except FileNotFoundError:
        return None


def wait_file(path: Path, before, marker: str, timeout: float, interval: float = 0.005,
              alive: Callable[[], Optional[str]] = lambda: None) -> float:
    """Polls `path` every `interval` s until it is no longer `before` (inode,
    mtime, size) and holds `marker`; returns time.perf_counter() then."""
    deadline = time.perf_counter() + timeout
    checks = 0
    while True:
        now = time.perf_counter()
        st = file_state(path)
        if st is not None and st != before:
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            if marker in text.replace("\r\n ", ""):
                return now
        checks += 1
        if checks % 200 == 0:
            died = alive()
            if died:
                raise RigError(died)
        if now > deadline:
            raise RigError(f"{path} did not get the change within {timeout:g} s")
        time.sleep(interval)


__all__ = ["AccountSpec", "BenchPushFront", "DaemonRig", "RigError", "describe", "file_state",
           "is_daemon", "is_download", "is_light", "perf_start", "perf_stop", "proc_figures", "request_kind",
           "sync_segments", "wait_file", "wait_until"]
