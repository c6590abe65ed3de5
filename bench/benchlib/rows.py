"""The benchmark rows. Each of rows 1-4 runs every client K times on one
server (clients take turns within a repeat, in rotated order, so that nobody
always goes first) and records one Run per client and repeat.

Rows 5 (push latency) and 6 (self-change cost), and the idle half of row 7,
need davsyncd as a long-running daemon: they are listed in ROWS with
`daemon` set and run together by daemon_rows.run_daemon_rows.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional
from urllib.parse import urlsplit

from . import data
from .account_rows import discovery_propfind_body
from .clients import ClientError, Davsyncd, Run
from .floor import FloorClient, bodies_in, changes_of, token_of


@dataclass
class RowDef:
    id: str
    title: str
    fn: Optional[Callable] = None
    pending: Optional[str] = None      # why the row is not measured yet
    daemon: bool = False               # measured with the long-running daemon (daemon_rows.py)


# --- the floor as a client with state ------------------------------------------------

class Floor:
    """Bare HTTP client with a token per collection: the server floor."""

    name = "floor"

    def __init__(self, setup, specs: list[data.CollectionSpec]):
        self.setup = setup
        self.specs = specs
        self.tokens: dict[str, str] = {}
        self.choice: dict[str, str] = {}    # collection -> "A" / "B", the faster first-sync sequence
        self.http: FloorClient | None = None

    def connect(self) -> FloorClient:
        if self.http is None:
            self.http = setup_floor(self.setup)
        return self.http

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None

    def _timed(self, fn) -> Run:
        h = self.connect()
        os.sync()          # as before every client run
        h.reset_clock()
        detail = fn(h) or {}
        return Run(wall=h.elapsed, requests=h.requests, detail=detail)

    def first_sync(self, i: int = 0) -> Run:
        """Per collection, the fastest of the complete sequences that return
        every item and a token: (A) Depth-0 PROPFIND of the token, then a
        calendar-/addressbook-query with data; (B) one sync-collection without
        token asking for the data. The first repeat runs both and keeps the
        faster of those that brought every item's data; later repeats run
        that one only."""
        total, requests, chosen, incomplete = 0.0, 0, {}, {}
        h = self.connect()
        os.sync()
        for s in self.specs:
            path = self.setup.collection_paths[s.name]

            def seq_a():
                tok = h.propfind_version(path)
                return tok, h.query_all(path, s.is_addressbook)

            def seq_b():
                body = h.sync_collection(path, "", with_data=True, is_addressbook=s.is_addressbook)
                return token_of(body), body

            got = {}
            seqs = (("A", seq_a), ("B", seq_b))
            if s.name in self.choice:
                seqs = tuple(x for x in seqs if x[0] == self.choice[s.name])
            for label, seq in seqs:
                h.reset_clock()
                tok, body = seq()
                # Outside the clock: a sequence counts only if it really
                # brought every item's data (Xandikos 0.2.8 answers a
                # sync-collection that asks for calendar-data with 404 for
                # that property: fast, and useless for a first sync).
                if bodies_in(body, s.is_addressbook) < s.count:
                    incomplete[s.name + " " + label] = bodies_in(body, s.is_addressbook)
                    continue
                got[label] = (h.elapsed, h.requests, tok)
            if not got:
                raise ClientError(f"floor: no request sequence brought all {s.count} items of {s.name}")
            best = min(got, key=lambda k: got[k][0])
            self.choice[s.name] = best
            secs, req, tok = got[best]
            total += secs
            requests += req
            self.tokens[s.name] = tok
            chosen[s.name] = {k: round(v[0], 4) for k, v in got.items()} | {"used": best}
        # Kept apart from the wall time: what discovery costs the floor (one
        # Depth-1 PROPFIND of the home with davsyncd's discovery body), for
        # the "discovery included" ratio next to davsyncd's --discover.
        h.reset_clock()
        h.request("PROPFIND", urlsplit(self.setup.home_url).path, discovery_propfind_body(), {"Depth": "1"})
        return Run(wall=total, requests=requests, detail={"candidates": chosen, "incomplete": incomplete,
                                                          "discovery": round(h.elapsed, 4)})

    def no_change(self) -> Run:
        def fn(h):
            for s in self.specs:
                tok = h.propfind_version(self.setup.collection_paths[s.name])
                if tok != self.tokens[s.name]:
                    raise ClientError(f"floor: token of {s.name} changed during the no-change row")
        return self._timed(fn)

    def pull(self, h: FloorClient, s: data.CollectionSpec) -> int:
        """Incremental sync-collection plus one GET per changed item; returns the count."""
        path = self.setup.collection_paths[s.name]
        body = h.sync_collection(path, self.tokens[s.name])
        changed, deleted = changes_of(body)     # outside the clock: only requests are timed
        self.tokens[s.name] = token_of(body)
        for href, _ in changed:
            h.get(href)
        return len(changed) + len(deleted)

    def one_change(self, changed: data.CollectionSpec) -> Run:
        def fn(h):
            n = 0
            for s in self.specs:
                if s.name == changed.name:
                    n = self.pull(h, s)
                else:
                    tok = h.propfind_version(self.setup.collection_paths[s.name])
                    if tok != self.tokens[s.name]:
                        raise ClientError(f"floor: unexpected change in {s.name}")
            if n != 1:
                raise ClientError(f"floor: expected one change, saw {n}")
            return {"changes": n}
        return self._timed(fn)

    def catch_up(self) -> None:
        """Untimed: absorb changes other clients made since our last sync."""
        h = self.connect()
        for s in self.specs:
            path = self.setup.collection_paths[s.name]
            body = h.sync_collection(path, self.tokens[s.name])
            self.tokens[s.name] = token_of(body)

    def local_edit(self, s: data.CollectionSpec, index: int, text: str) -> Run:
        """Conditional PUT of the edit, then the incremental sync-collection
        of that collection (which reports our own change) and a Depth-0
        PROPFIND of the others' tokens."""
        h = self.connect()
        path = self.setup.collection_paths[s.name] + s.item_name(index, self.setup.seed)
        etag, _ = h.get(path)          # what a client would know from its state (untimed)

        def fn(h):
            h.put(path, text, etag, s.is_addressbook)
            for other in self.specs:
                opath = self.setup.collection_paths[other.name]
                if other.name == s.name:
                            self.tokens[s.name] = token_of(h.sync_collection(opath, self.tokens[s.name]))
                else:
                    h.propfind_version(opath)
        return self._timed(fn)


def setup_floor(setup) -> FloorClient:
    return FloorClient(setup.server.port, setup.user, setup.password)


# --- context -----------------------------------------------------------------------

@dataclass
class Context:
    setup: object
    specs: list
    seed: int
    clients: dict                   # name -> client (davsyncd, vdirsyncer, floor)
    repeat: int
    slow_repeat: dict               # client name -> repeats for that client (default: repeat)
    log: Callable
    results: dict = field(default_factory=dict)   # row id -> client -> [run dict | None]
    notes: dict = field(default_factory=dict)     # row id -> [str]
    stale: set = field(default_factory=set)       # clients that have not seen the latest server changes
    edits: int = 0
    slow_run: float = 45.0          # a client slower than this (one run) runs once per row
    capped: dict = field(default_factory=dict)    # (row, client) -> repeats
    only_rows: dict = field(default_factory=dict)  # client -> rows it takes part in (absent: all)
    extra: dict = field(default_factory=dict)     # anything else worth keeping (daemon start-up, ...)

    def repeats_for(self, name: str, row: str = "") -> int:
        if row and name in self.only_rows and row not in self.only_rows[name]:
            return 0
        n = min(self.repeat, self.slow_repeat.get(name, self.repeat))
        return min(n, self.capped.get((row, name), n))

    def order(self, i: int, row: str = "") -> list[str]:
        names = [n for n in self.clients if i < self.repeats_for(n, row)]
        k = i % len(names) if names else 0
        return names[k:] + names[:k]

    def record(self, row: str, name: str, i: int, run: Optional[Run]) -> None:
        per = self.results.setdefault(row, {}).setdefault(name, [None] * self.repeat)
        per[i] = asdict(run) if run is not None else None
        if run is not None and i == 0 and run.wall > self.slow_run and self.repeats_for(name, row) > 1:
            self.capped[(row, name)] = 1
            self.note(row, f"{name} ran once: one run took {run.wall:.0f} s (more than --slow-run {self.slow_run:g} s)")

    def note(self, row: str, text: str) -> None:
        if text not in self.notes.setdefault(row, []):
            self.notes[row].append(text)

    def admin(self) -> FloorClient:
        return setup_floor(self.setup)


def _describe(run: Run) -> str:
    extra = f", {run.requests} requests" if run.requests is not None else ""
    extra += f", {run.cpu:.2f} s CPU, {run.maxrss_kb / 1024:.0f} MB" if run.cpu else ""
    return f"{run.wall:.3f} s{extra}"


# --- row 1 -------------------------------------------------------------------------

def row_first_sync(ctx: Context, row: str = "1") -> None:
    for i in range(ctx.repeat):
        for name in ctx.order(i, row):
            c = ctx.clients[name]
            run = c.first_sync(i) if name == "floor" else c.first_sync()
            if name != "floor":
                for s in ctx.specs:
                    n = c.count(s)
                    if n != s.count:
                        raise ClientError(f"{name}: first sync left {n} of {s.count} items in {s.name}")
            ctx.record(row, name, i, run)
            ctx.log(f"    row {row} #{i + 1} {name}: {_describe(run)}")
    ctx.stale.clear()


# --- row 2 -------------------------------------------------------------------------

def row_no_change(ctx: Context, row: str = "2") -> None:
    for i in range(ctx.repeat):
        for name in ctx.order(i, row):
            c = ctx.clients[name]
            run = c.no_change() if name == "floor" else c.sync()
            if isinstance(c, Davsyncd) and (run.down or run.up):
                raise ClientError(f"davsyncd moved items in the no-change row: {run.detail}")
            ctx.record(row, name, i, run)
            ctx.log(f"    row {row} #{i + 1} {name}: {_describe(run)}")


# --- row 3 -------------------------------------------------------------------------

def _catch_up(ctx: Context, name: str, row: str) -> None:
    """Brings davsyncd and the floor up to date (untimed) before a timed run.
    vdirsyncer is not (a catch-up costs as much as a sync); what it picks up
    in addition is noted."""
    if name not in ctx.stale:
        return
    c = ctx.clients[name]
    if name == "floor":
        c.catch_up()
    elif isinstance(c, Davsyncd):
        c.sync()
    else:
        ctx.note(row, f"{name}'s timed runs also fetch the items the other clients uploaded "
                      f"since its previous run (one multiget of up to {len(ctx.clients)} items)")
        return
    ctx.stale.discard(name)


# Item versions are unique within the process: suites may share a server,
# and an edit that restores earlier content would not be a change at all.
_versions = itertools.count(100)


def change_on_server(ctx: Context, s: data.CollectionSpec, index: int) -> str:
    """Untimed server-side edit of one item; returns the NOTE/DESCRIPTION line to look for."""
    h = ctx.admin()
    path = ctx.setup.collection_paths[s.name] + s.item_name(index, ctx.seed)
    etag, _ = h.get(path)
    text = s.item(index, ctx.seed, next(_versions))
    h.put(path, text, etag, s.is_addressbook)
    new_etag, _ = h.get(path)
    h.close()
    if new_etag == etag:
        raise ClientError(f"the server edit of {path} did not change its etag")
    return marker_line(text)


def marker_line(text: str) -> str:
    for line in text.split("\r\n"):
        if line.startswith("NOTE:") or line.startswith("DESCRIPTION:"):
            return line
    raise ValueError("no marker line")


def row_one_change(ctx: Context, row: str = "3") -> None:
    s = ctx.specs[0]                 # the largest collection (the address book)
    for i in range(ctx.repeat):
        index = (11 + 97 * i) % s.count
        for name in ctx.order(i, row):
            _catch_up(ctx, name, row)
        marker = change_on_server(ctx, s, index)
        ctx.stale.update(ctx.clients)
        for name in ctx.order(i, row):
            c = ctx.clients[name]
            run = c.one_change(s) if name == "floor" else c.sync()
            ctx.stale.discard(name)
            if name != "floor":
                got = c.local_file(s, index, ctx.seed).read_text(errors="replace")
                if marker not in got.replace("\r\n ", ""):
                    raise ClientError(f"{name}: the server change did not arrive in {c.local_file(s, index, ctx.seed)}")
            if isinstance(c, Davsyncd) and run.down != 1:
                raise ClientError(f"davsyncd: expected 1 download, got {run.down}: {run.detail}")
            ctx.record(row, name, i, run)
            ctx.log(f"    row {row} #{i + 1} {name}: {_describe(run)}")
    ctx.stale.update(n for n in ctx.clients if ctx.repeats_for(n, row) < ctx.repeat)


# --- row 4 -------------------------------------------------------------------------

def row_local_edit(ctx: Context, row: str = "4") -> None:
    s = ctx.specs[0]
    for i in range(ctx.repeat):
        for name in ctx.order(i, row):
            c = ctx.clients[name]
            _catch_up(ctx, name, row)
            index = (500 + 31 * i + 7 * list(ctx.clients).index(name)) % s.count
            text = s.item(index, ctx.seed, next(_versions))
            if name == "floor":
                run = c.local_edit(s, index, text)
            else:
                path = c.local_file(s, index, ctx.seed)
                if not path.exists():
                    raise ClientError(f"{name}: {path} missing")
                path.write_text(text, newline="")
                run = c.sync()
                if isinstance(c, Davsyncd) and run.up != 1:
                    raise ClientError(f"davsyncd: expected 1 upload, got {run.up}: {run.detail}")
            # The edit is on the server now (checked untimed).
            h = ctx.admin()
            _, body = h.get(ctx.setup.collection_paths[s.name] + s.item_name(index, ctx.seed))
            h.close()
            if marker_line(text).encode() not in body.replace(b"\r\n ", b""):
                raise ClientError(f"{name}: the local edit of item {index} is not on the server")
            ctx.stale.update(n for n in ctx.clients if n != name)
            ctx.record(row, name, i, run)
            ctx.log(f"    row {row} #{i + 1} {name}: {_describe(run)}")


ROWS = [
    RowDef("1", "First sync", row_first_sync),
    RowDef("2", "No-change sync", row_no_change),
    RowDef("3", "One item changed on the server", row_one_change),
    RowDef("4", "One local edit uploaded", row_local_edit),
    RowDef("5", "Push latency", daemon=True),
    RowDef("6", "Self-change cost", daemon=True),
]
