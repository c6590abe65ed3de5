"""Fault-injection campaign: davsyncd syncing through a faulty network and
server (davtest.faultproxy) never loses an edit, never duplicates an item,
never hangs, and converges once the faults stop.

Seed: $DAVSYNCD_FAULT_SEED, else DEFAULT_SEED (printed, and the first words
of every failure). Rounds: $DAVSYNCD_FAULT_ROUNDS, else ROUNDS (a long run
by hand: DAVSYNCD_FAULT_ROUNDS=40). Servers: $DAVSYNCD_FAULT_SERVERS, else
"radicale,xandikos" (any kind the conftest's server_factory knows, e.g.
davical). Replay a failure with
`DAVSYNCD_FAULT_SEED=<seed> pytest tests/integration/test_faults.py -k <server>`;
the edits follow the seed, and the proxy's decisions follow the seed and the
request sequence, so a replay injects the same faults as long as davsyncd
sends the same requests (timed kills depend on the clock). A failure names
the proxy's request log (every request, its status and its fault), the test's
journal (every edit with its marker and the marker it replaced, every run
with its request range and how it was killed) and each run's stdout/stderr.

Per server, two accounts whose url is the proxy: "sw" (server-wins, the
default) with a calendar and an address book, "lw" (local-wins) with a
calendar. Each round:
  - random edits on both sides, per collection: local edits, creations and
    deletions in the vdir folder, server edits, creations and deletions made
    directly on the real server (not through the proxy); some items are edited
    on both sides. Every edit writes a unique marker (SUMMARY / FN).
  - one or two `davsyncd --once` through the proxy, which injects faults at
    random; some runs are SIGKILLed: at the n-th request (held in the proxy,
    forwarded to the server or not) or after a random delay.
Then the faults are switched off and `--once` runs until one changes nothing
(at most CONVERGE_RUNS); before each of these runs, and before half of the
faulty rounds, the per-item upload backoff is made to run out
(age_upload_backoffs), as time would. What must hold:
  - both sides converge: same UIDs, same content per UID;
  - no UID twice on either side (checked after every round too);
  - every marker is on the server, in the vdir or in the conflicts folder,
    unless a later edit or a deletion was made on a version that showed it
    (then it was legitimately replaced or deleted; an edit beats a deletion,
    so a marker the deleting side never saw must survive);
  - no `--once` hangs (each finishes within RUN_DEADLINE unless we killed
    it), none crashes, none refuses a mass deletion, and with the faults off
    none fails.
The figures (rounds, runs, faults by kind, kills, items lost) are printed at
the end, pass or fail. Every problem is collected as a finding (the first
time it is seen) and the test fails at the end with all of them, so that one
run shows every bug it met.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.faultproxy import FaultProxy
from davtest.vdir import (
    ITEM_SUFFIXES, conflict_copies, normalized, parse_sync_lines, replace_title, server_items,
    set_property, title_of, uid_of, vdir_folder, write_local,
)

DEFAULT_SEED = 20261207
SEED = int(os.environ.get("DAVSYNCD_FAULT_SEED") or DEFAULT_SEED)
ROUNDS = int(os.environ.get("DAVSYNCD_FAULT_ROUNDS") or 15)
FAULT_RATE = 0.15          # share of requests that get a fault
KILL_SHARE = 0.3           # share of faulty runs that are SIGKILLed
RUN_DEADLINE = 120.0       # seconds a --once may take (the hang check)
CONVERGE_RUNS = 6          # --once runs without faults to become quiet
MIN_ITEMS = 4              # items present on both sides never drop below this
PROXY_IDLE_TIMEOUT = 40.0  # a stalled or held request always ends well before

# Local (l_) and server (s_) operations and their weights.
OPS = {
    "l_edit": 3, "s_edit": 3, "both_edit": 1.5,
    "l_create": 1, "s_create": 1,
    "l_delete": 1, "s_delete": 1,
    "l_delete_s_edit": 0.7, "l_edit_s_delete": 0.7,
    "l_edit_twice": 0.5,
}

# account id -> (policy or None for the default, [(collection name, kind, initial items)])
ACCOUNTS = {
    "sw": (None, [("fsw-cal", "cal", 6), ("fsw-ab", "ab", 5)]),
    "lw": ("local-wins", [("flw-cal", "cal", 5)]),
}


@dataclasses.dataclass
class Coll:
    account: str
    name: str
    path: str
    ext: str
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.account}/{self.name}"

    @property
    def is_cards(self) -> bool:
        return self.ext == ".vcf"


@dataclasses.dataclass
class Edit:
    marker: str
    uid: str
    coll: str
    side: str           # "local" / "server" / "seed"
    round: int


@dataclasses.dataclass
class Run:
    round: int
    phase: str          # "faults" / "converge"
    status: Optional[int] = None
    seconds: float = 0.0
    killed: Optional[str] = None      # how it was killed, when it was
    hung: bool = False
    failed_lines: int = 0
    lines: dict = dataclasses.field(default_factory=dict)
    stdout: str = ""
    stderr: str = ""


_FAILED_RE = re.compile(r"^(?P<label>\S+): FAILED: (?P<why>.*)$")
_CRASH_WORDS = ("terminate called", "Assertion `", "AddressSanitizer", "runtime error:",
                "stack smashing detected")


# ---------------------------------------------------------------- both sides, tolerantly

def local_groups(folder: Path) -> dict[str, list[tuple[Path, str]]]:
    """{UID: [(path, text), ...]} of the item files in a vdir folder (a UID
    held by two files has two entries; a file without UID is keyed '')."""
    out: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    if not folder.is_dir():
        return out
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in ITEM_SUFFIXES and not p.name.startswith("."):
            text = p.read_bytes().decode("utf-8", errors="replace")
            out[uid_of(text) or ""].append((p, text))
    return out


def complete(text: str) -> bool:
    """An item with its UID, its title and its closing line."""
    return bool(uid_of(text)) and title_of(text) is not None and bool(
        re.search(r"^END:(VCALENDAR|VCARD)\r?$", text, re.M))


def server_groups(srv, path: str) -> dict[str, list]:
    """{UID: [ServerItem, ...]} of a server collection (read directly)."""
    out: dict[str, list] = defaultdict(list)
    for item in server_items(srv, path).values():
        out[uid_of(item.text) or ""].append(item)
    return out


def age_upload_backoffs(state_dir: Path) -> int:
    """Lets time pass for the per-item upload backoff: a write the server
    failed to take (5xx, 507) waits 30 s doubling to 1 h before davsyncd sends
    it again (README, "When the server says no"), even with --once. Rather
    than wait that long, the retry time of every temporary failure recorded in
    the "<state file>.uploads" files is moved to the past. Refusals (which
    wait for a new version, not for time) stay as they are. Returns the
    number of records aged; a file of another shape is left alone."""
    aged = 0
    for path in sorted(state_dir.rglob("*.uploads")):
        try:
            doc = json.loads(path.read_text())
            failures = doc["failures"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        changed = False
        for rec in failures.values():
            if isinstance(rec, dict) and not rec.get("permanent") and rec.get("retry_at", 0) > 0:
                rec["retry_at"] = 0
                changed = True
                aged += 1
        if changed:
            tmp = path.with_name(path.name + ".aging")
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
    return aged


# ---------------------------------------------------------------- the campaign

class Campaign:
    def __init__(self, srv, env, proxy: FaultProxy, tmp_path: Path):
        self.srv, self.env, self.proxy = srv, env, proxy
        self.rng = random.Random(f"{SEED}-{srv.name}-edits")
        self.counter = 0
        self.colls: list[Coll] = []
        self.edits: list[Edit] = []
        self.seen: set[tuple[str, str, str]] = set()   # (coll, uid, marker) a later change was based on
        self.ops = Counter()
        self.runs: list[Run] = []
        self.findings: list[str] = []
        self._finding_keys: set[str] = set()
        self.run_dir = tmp_path / "runs"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg: Optional[Path] = None
        self.journal: list[str] = []     # what the test did, in order (written next to the proxy log)

    def ctx(self) -> str:
        return f"seed={SEED} server={self.srv.name}"

    def finding(self, text: str, key: Optional[str] = None) -> None:
        if key is not None:
            if key in self._finding_keys:
                return
            self._finding_keys.add(key)
        self.findings.append(text)
        self.note(f"FINDING {text}")

    def note(self, text: str) -> None:
        t = time.time()
        self.journal.append(time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d} {text}")

    # ----- setup

    def setup(self) -> None:
        accounts = []
        for acc_id, (policy, colls) in ACCOUNTS.items():
            for name, kind, count in colls:
                if kind == "cal":
                    path, ext = self.srv.make_calendar(name, f"Faults {name}", "#FF8C00"), ".ics"
                else:
                    path, ext = self.srv.make_addressbook(name, f"Faults {name}"), ".vcf"
                coll = Coll(acc_id, name, path, ext, vdir_folder(self.env, acc_id, name))
                self.colls.append(coll)
                for _ in range(count):
                    uid, text, _ = self.new_item(coll, "seed", 0)
                    self.srv.put_item(coll.path, f"{uid}{ext}", text)
            acc = account_for(self.srv, acc_id, url=self.proxy.url(self.srv.home_url),
                              collections={"include": [n for n, _, _ in colls]})
            if policy:
                acc["conflict_policy"] = policy
            accounts.append(acc)
        self.cfg = self.env.write_config(accounts)

    # ----- markers

    def marker(self, side: str) -> tuple[str, str]:
        self.counter += 1
        stamp = (dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc)
                 + dt.timedelta(seconds=self.counter)).strftime("%Y%m%dT%H%M%SZ")
        return f"fault {side} {self.counter:05d} {self.rng.randrange(16**6):06x}", stamp

    def edited(self, coll: Coll, uid: str, text: str, side: str, rnd: int) -> str:
        base = title_of(text)
        if base:
            self.seen.add((coll.name, uid, base))
        title, stamp = self.marker(side)
        self.edits.append(Edit(title, uid, coll.name, side, rnd))
        self.note(f"round {rnd} {coll.label}: {side} edit of {uid}: {base!r} -> {title!r}")
        text = replace_title(text, title)
        return set_property(text, "REV" if coll.is_cards else "LAST-MODIFIED", stamp)

    def deleted(self, coll: Coll, uid: str, text: str, side: str, rnd: int) -> None:
        base = title_of(text)
        self.note(f"round {rnd} {coll.label}: {side} deletion of {uid} ({base!r})")
        if base:
            self.seen.add((coll.name, uid, base))

    def new_item(self, coll: Coll, side: str, rnd: int) -> tuple[str, str, str]:
        title, stamp = self.marker(side)
        uid = f"fault-{side}-{self.counter:05d}@davsyncd.test"
        if coll.is_cards:
            text = sd.make_contact(self.counter, "fault", uid=uid, given="Fault", family=str(self.counter))
            text = set_property(replace_title(text, title), "REV", stamp)
        else:
            text = sd.make_event(self.counter % 300, "fault", uid=uid, summary=title)
            text = set_property(text, "LAST-MODIFIED", stamp)
        self.edits.append(Edit(title, uid, coll.name, side, rnd))
        self.note(f"round {rnd} {coll.label}: {side} creation of {uid}: {title!r}")
        return uid, text, title

    # ----- one round of edits on one collection

    def check_sides(self, coll: Coll, local, remote, when: str) -> None:
        """Findings for UIDs held twice and for broken items, on either side
        (each problem reported once, when first seen)."""
        problems = []
        for uid, files in local.items():
            if not uid:
                problems.append(f"local file(s) without UID: {[p.name for p, _ in files]}")
            elif len(files) > 1:
                problems.append(f"UID {uid} held by {len(files)} local files: {[p.name for p, _ in files]}")
            for p, text in files:
                if uid and not complete(text):
                    problems.append(f"local file {p.name} is not a complete item: {text!r}")
        for uid, items in remote.items():
            for i in items:
                if not complete(i.text):
                    problems.append(f"server item {i.href} is not a complete item: {i.text!r}")
            if len(items) > 1:
                problems.append(f"UID {uid!r} held by {len(items)} server items: {[i.href for i in items]}")
        for msg in problems:
            self.finding(f"{when}: {coll.label}: {msg}", key=f"{coll.label}: {msg}")

    def play(self, coll: Coll, rnd: int, n_ops: int) -> None:
        local = local_groups(coll.folder)
        remote = server_groups(self.srv, coll.path)
        self.check_sides(coll, local, remote, f"before round {rnd}")
        local = {u: v[0] for u, v in local.items() if u and complete(v[0][1])}     # (path, text)
        remote = {u: v[0] for u, v in remote.items() if u and complete(v[0].text)}  # ServerItem
        # Items present on both sides and not deleted on either this round:
        # deletions never take it below MIN_ITEMS (the mass-deletion guard).
        alive = set(local) & set(remote)
        touched: set[str] = set()
        kinds, weights = zip(*OPS.items())

        def pick(pool) -> Optional[str]:
            choices = sorted(set(pool) - touched)
            if not choices:
                return None
            uid = self.rng.choice(choices)
            touched.add(uid)
            return uid

        def l_edit(uid):
            path, text = local[uid]
            text = self.edited(coll, uid, text, "local", rnd)
            write_local(path, text)
            local[uid] = (path, text)

        def s_edit(uid):
            item = remote[uid]
            text = self.edited(coll, uid, item.text, "server", rnd)
            item.etag = self.srv.put_item(coll.path, item.filename, text, etag=item.etag or None,
                                          create=False)
            item.text = text

        def l_delete(uid):
            path, text = local.pop(uid)
            self.deleted(coll, uid, text, "local", rnd)
            path.unlink()
            alive.discard(uid)

        def s_delete(uid):
            item = remote.pop(uid)
            self.deleted(coll, uid, item.text, "server", rnd)
            self.srv.delete_item(coll.path, item.filename)
            alive.discard(uid)

        for _ in range(n_ops):
            kind = self.rng.choices(kinds, weights)[0]
            if "delete" in kind and len(alive) <= MIN_ITEMS:
                kind = "l_edit" if kind.startswith("l_delete") else "s_edit"
            if kind.startswith("l_") and not coll.folder.is_dir():
                kind = "s_edit" if "edit" in kind else "s_create"   # no local folder yet
            if kind == "l_create":
                uid, text, _ = self.new_item(coll, "local", rnd)
                write_local(coll.folder / f"{uid}{coll.ext}", text)
            elif kind == "s_create":
                uid, text, _ = self.new_item(coll, "server", rnd)
                self.srv.put_item(coll.path, f"{uid}{coll.ext}", text)
            elif kind in ("l_edit", "l_edit_twice"):
                uid = pick(local)
                if uid is None:
                    continue
                l_edit(uid)
                if kind == "l_edit_twice":
                    l_edit(uid)
            elif kind == "s_edit":
                uid = pick(remote)
                if uid is None:
                    continue
                s_edit(uid)
            elif kind == "both_edit":
                uid = pick(set(local) & set(remote))
                if uid is None:
                    continue
                for side in self.rng.sample(["local", "server"], 2):
                    (l_edit if side == "local" else s_edit)(uid)
            elif kind == "l_delete":
                uid = pick(alive & set(local))
                if uid is None:
                    continue
                l_delete(uid)
            elif kind == "s_delete":
                uid = pick(alive & set(remote))
                if uid is None:
                    continue
                s_delete(uid)
            elif kind == "l_delete_s_edit":
                uid = pick(alive)
                if uid is None:
                    continue
                l_delete(uid)
                s_edit(uid)
            elif kind == "l_edit_s_delete":
                uid = pick(alive)
                if uid is None:
                    continue
                l_edit(uid)
                s_delete(uid)
            else:
                raise AssertionError(kind)
            self.ops[kind] += 1

    # ----- one --once

    def launch(self, tag: str) -> tuple[subprocess.Popen, Path, Path]:
        out, err = self.run_dir / f"{tag}.out", self.run_dir / f"{tag}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen([str(self.env.binary), "--config", str(self.cfg), "--once"],
                                    env=self.env.env(), cwd=self.env.root, stdin=subprocess.DEVNULL,
                                    stdout=o, stderr=e, start_new_session=True)
        return proc, out, err

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def run_once(self, rnd: int, phase: str, kill: Optional[tuple] = None) -> Run:
        """One `--once`; `kill` is ("gate", nth, forward) or ("timer", seconds)."""
        run = Run(rnd, phase)
        tag = f"{len(self.runs) + 1:03d}-{phase}-r{rnd}"
        hit: Optional[threading.Event] = None
        if kill and kill[0] == "gate":
            hit = self.proxy.arm_gate(kill[1], kill[2])
        started = time.monotonic()
        deadline = started + RUN_DEADLINE
        first = self.proxy.requests + 1
        self.note(f"run {tag} starts at request #{first}" + (f", kill {kill}" if kill else ""))
        proc, out, err = self.launch(tag)
        try:
            if kill and kill[0] == "timer":
                try:
                    proc.wait(timeout=kill[1])
                except subprocess.TimeoutExpired:
                    self.kill(proc)
                    run.killed = f"after {kill[1]:.2f} s"
            elif hit is not None:
                while proc.poll() is None and time.monotonic() < deadline:
                    if hit.wait(0.01):
                        self.kill(proc)
                        run.killed = (f"at request {kill[1]} of the run "
                                      f"({'forwarded' if kill[2] else 'not forwarded'})")
                        break
            if proc.poll() is None:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    run.hung = True
                    self.kill(proc)
        finally:
            if proc.poll() is None:
                self.kill(proc)
            self.proxy.release()
        run.seconds = time.monotonic() - started
        run.status = proc.returncode
        if run.killed and run.status != -signal.SIGKILL:
            run.killed = None           # it finished on its own just before the kill
        run.stdout = out.read_text(errors="replace")
        run.stderr = err.read_text(errors="replace")
        self.proxy.wait_idle(PROXY_IDLE_TIMEOUT)
        self.note(f"run {tag} ended: status {run.status}, requests #{first}..#{self.proxy.requests}"
                  + (f", killed {run.killed}" if run.killed else "") + (", HUNG" if run.hung else ""))
        self.runs.append(run)
        self.judge(run, tag)
        return run

    def judge(self, run: Run, tag: str) -> None:
        where = f"round {run.round} {run.phase} run {tag}"
        if run.hung:
            self.finding(f"{where}: --once did not finish within {RUN_DEADLINE:g} s (killed); "
                         f"stdout {run.stdout[-1500:]!r} stderr {run.stderr[-3000:]!r}")
            return
        if run.killed:
            return
        crash = [w for w in _CRASH_WORDS if w in run.stderr]
        if run.status not in (0, 1) or crash:
            self.finding(f"{where}: --once crashed (exit status {run.status}; {crash}); "
                         f"stderr {run.stderr[-3000:]!r}")
        for raw in run.stdout.splitlines():
            if not raw.strip():
                continue
            m = _FAILED_RE.match(raw)
            if m:
                run.failed_lines += 1
                if run.phase == "converge":
                    self.finding(f"{where}: failed with the faults off: {raw}")
                continue
            try:
                (line,) = parse_sync_lines(raw).values()
            except AssertionError:
                self.finding(f"{where}: unexpected output line {raw!r}")
                continue
            run.lines[line.label] = line
            if line.refused:
                self.finding(f"{where}: mass-deletion guard triggered: {raw}")
        if run.phase == "converge" and run.status != 0:
            self.finding(f"{where}: exit status {run.status} with the faults off; "
                         f"stdout {run.stdout!r} stderr {run.stderr[-3000:]!r}")

    def faulty_runs(self, rnd: int) -> None:
        if self.rng.random() < 0.5:       # sometimes the backoff of failed uploads has run out
            aged = age_upload_backoffs(self.env.state_dir)
            if aged:
                self.note(f"aged {aged} upload backoff(s)")
        for _ in range(self.rng.choice((1, 1, 2))):
            kill = None
            if self.rng.random() < KILL_SHARE:
                if self.rng.random() < 0.7:
                    kill = ("gate", self.rng.randint(1, 14), self.rng.random() < 0.5)
                else:
                    kill = ("timer", round(self.rng.uniform(0.05, 1.5), 2))
            run = self.run_once(rnd, "faults", kill)
            if run.hung:
                return

    def converge(self) -> Optional[Run]:
        """Faults off; --once until a run changes nothing."""
        self.proxy.faults = False
        for _ in range(CONVERGE_RUNS):
            aged = age_upload_backoffs(self.env.state_dir)
            if aged:
                self.note(f"aged {aged} upload backoff(s)")
            run = self.run_once(len(self.runs), "converge")
            if run.status == 0 and run.lines and set(run.lines) == {c.label for c in self.colls} and all(
                    line.transfers == 0 and line.conflicts == 0 and line.skipped == 0
                    and line.refused is None and getattr(line, "waiting", 0) == 0
                    and getattr(line, "refused_items", 0) == 0 for line in run.lines.values()):
                return run
        self.finding(f"no quiet --once after {CONVERGE_RUNS} runs with the faults off; last: "
                     f"{self.runs[-1].stdout!r}")
        return None

    # ----- the final checks

    def final_checks(self) -> int:
        """Records findings; returns the number of lost markers."""
        lost = 0
        edits_by_coll = defaultdict(list)
        for e in self.edits:
            edits_by_coll[e.coll].append(e)
        for coll in self.colls:
            local = local_groups(coll.folder)
            remote = server_groups(self.srv, coll.path)
            self.check_sides(coll, local, remote, "at the end")
            l_one = {u: v[0][1] for u, v in local.items() if u}
            s_one = {u: v[0].text for u, v in remote.items() if u}
            only_l, only_s = sorted(set(l_one) - set(s_one)), sorted(set(s_one) - set(l_one))
            if only_l or only_s:
                self.finding(f"{coll.label}: sides differ: only local {only_l}, only on the server {only_s}")
            differ = [u for u in sorted(set(l_one) & set(s_one)) if normalized(l_one[u]) != normalized(s_one[u])]
            for u in differ[:5]:
                self.finding(f"{coll.label}: content differs for {u}:\n  local  {normalized(l_one[u])}\n"
                             f"  server {normalized(s_one[u])}")
            if len(set(l_one) & set(s_one)) < MIN_ITEMS:
                self.finding(f"{coll.label}: only {len(set(l_one) & set(s_one))} items left")
            # Every marker accounted for.
            present: set[tuple[str, str]] = set()
            for u, files in local.items():
                present.update((u, title_of(t) or "") for _, t in files)
            for u, items in remote.items():
                present.update((u, title_of(i.text) or "") for i in items)
            copies = conflict_copies(self.env, coll.account, coll.name)
            in_conflicts = {(uid_of(c.text) or "", title_of(c.text) or "") for c in copies}
            for e in edits_by_coll[coll.name]:
                if (coll.name, e.uid, e.marker) in self.seen:
                    continue      # replaced or deleted by someone who saw it
                if (e.uid, e.marker) in present or (e.uid, e.marker) in in_conflicts:
                    continue
                lost += 1
                self.finding(f"{coll.label}: LOST edit {e.marker!r} of {e.uid} "
                             f"(made on the {e.side} side in round {e.round})")
        return lost

    # ----- figures

    def figures(self, rounds: int, lost: int) -> str:
        counts = self.proxy.counts()
        faulty = [r for r in self.runs if r.phase == "faults"]
        conv = [r for r in self.runs if r.phase == "converge"]
        finished = [r.seconds for r in self.runs if not r.killed and not r.hung]
        lines = [
            f"fault campaign {self.ctx()}: {rounds} rounds, {len(faulty)} faulty --once runs "
            f"({sum(1 for r in faulty if r.killed)} killed, "
            f"{sum(1 for r in faulty if r.status == 0 and not r.killed)} clean, "
            f"{sum(r.failed_lines for r in faulty)} FAILED collection lines), "
            f"{len(conv)} runs to converge",
            f"  requests through the proxy: {self.proxy.requests}; faults injected: "
            f"{sum(counts.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
            f"  edits: {len(self.edits)} markers; operations: "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items())),
            f"  longest finished --once: {max(finished, default=0):.1f} s; "
            f"conflict copies: {sum(len(conflict_copies(self.env, c.account, c.name)) for c in self.colls)}",
            f"  items lost: {lost}; findings: {len(self.findings)}",
        ]
        return "\n".join(lines)


SERVER_KINDS = [k for k in (os.environ.get("DAVSYNCD_FAULT_SERVERS") or "radicale,xandikos").split(",") if k]


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_fault_campaign(kind, server_factory, daemon_env, tmp_path, capsys):
    srv = server_factory(kind)
    with FaultProxy(srv.base_url, seed=f"{SEED}-{srv.name}-proxy", rate=FAULT_RATE) as proxy:
        campaign(srv, proxy, daemon_env, tmp_path, capsys)


def campaign(srv, proxy, daemon_env, tmp_path, capsys):
    camp = Campaign(srv, daemon_env, proxy, tmp_path)
    with capsys.disabled():
        print(f"\nfault campaign: seed {SEED} (DAVSYNCD_FAULT_SEED), {ROUNDS} rounds "
              f"(DAVSYNCD_FAULT_ROUNDS), server {srv.name}", flush=True)
    log_path = tmp_path / f"faultproxy-{srv.name}.log"
    journal_path = tmp_path / f"campaign-{srv.name}.log"
    started = time.monotonic()
    rounds = 0
    try:
        camp.setup()
        for rnd in range(1, ROUNDS + 1):
            rounds = rnd
            for coll in camp.colls:
                camp.play(coll, rnd, camp.rng.randint(2, 4))
            camp.faulty_runs(rnd)
            if any(r.hung for r in camp.runs):
                break
        camp.converge()
        lost = camp.final_checks()
    finally:
        # What the proxy and the test did, in order, for a post-mortem.
        log_path.write_text("\n".join(str(e) for e in proxy.log()) + "\n")
        journal_path.write_text("\n".join(camp.journal) + "\n")
    figures = camp.figures(rounds, lost)
    with capsys.disabled():
        print(f"{figures}\n  {time.monotonic() - started:.0f} s; proxy log {log_path}; "
              f"test journal {journal_path}", flush=True)
    if camp.findings:
        faults = "\n".join(f"  #{f.seq} {f.kind} {f.method} {f.path} {f.detail}"
                           for f in proxy.faults_injected())
        kills = "\n".join(f"  run {i + 1:03d} (round {r.round}): killed {r.killed}"
                          for i, r in enumerate(camp.runs) if r.killed)
        pytest.fail(f"{camp.ctx()}: {len(camp.findings)} finding(s):\n- "
                    + "\n- ".join(camp.findings[:40])
                    + f"\n{figures}\nkills:\n{kills}\nfaults injected:\n{faults}\n"
                    f"proxy log: {log_path}\ntest journal: {journal_path}\n"
                    f"each run's output: {camp.run_dir}", pytrace=False)
    assert lost == 0
