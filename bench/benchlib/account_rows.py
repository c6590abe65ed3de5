"""Rows 9 and 10: the account as a whole rather than one collection.

Row 9, many collections: the first sync of an account with many calendars
(default 20 of 500 events, Radicale), discovery included: `davsyncd --once`
with fresh folders and no discovery cache, against the floor of one Depth-1
PROPFIND of the home (discovery) plus, per calendar, a Depth-0 PROPFIND of
the sync-token and a calendar-query with data.

Row 10, rediscovery: what the daemon pays to re-learn an account's
collection list (dav::rediscover_homes: one Depth-1 PROPFIND per known home
asking only the discovery properties, no sync-token or ctag). Measured three
ways on the same server:
  - the bare request sequence: http.client replaying the daemon's own
    PROPFIND body (read from daemon/dav/discovery.cpp, so it cannot drift)
    to each home in the daemon's discovery cache, on a warm connection;
  - in the daemon: `davsyncd --once` with DAVSYNCD_DEBUG=1 after its
    discovery cache was aged past the six-hour limit, which makes it
    rediscover; its log gives each request's time (curl, whole milliseconds);
  - `davsyncd --discover`: a whole process doing full discovery (principal
    lookup, homes, collections), as an upper bound.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from . import data
from .clients import ClientError, Davsyncd, Run, run_timed
from .floor import FloorClient, bodies_in

REPO = Path(__file__).resolve().parents[2]
DISCOVERY_SOURCE = REPO / "daemon" / "dav" / "discovery.cpp"
DISCOVERY_AGE = 7 * 3600       # older than the daemon's kDiscoveryMaxAge (6 h): --once rediscovers


def discovery_propfind_body(source: Path = DISCOVERY_SOURCE) -> str:
    """The body of kCollectionPropfind, the PROPFIND rediscover_homes sends,
    joined from its raw string literals in discovery.cpp."""
    text = source.read_text()
    m = re.search(r"kCollectionPropfind\s*=\s*(.*?);\n", text, re.S)
    if not m:
        raise ClientError(f"kCollectionPropfind not found in {source}")
    parts = re.findall(r'R"\((.*?)\)"', m.group(1), re.S)
    body = "".join(parts)
    if "<D:propfind" not in body or "sync-token" in body:
        raise ClientError(f"unexpected kCollectionPropfind in {source}: {body[:200]!r}")
    return body


class DavsyncdAccount(Davsyncd):
    """davsyncd whose first sync starts from nothing at all: no --discover
    beforehand, so `--once` discovers the account itself (timed)."""

    def reset(self) -> None:
        self.discover_seconds = None       # discovery is part of the timed --once
        self.fresh_config()

    def discovery_cache(self) -> Path:
        return self.root / "state" / "davsyncd" / "bench" / "collections.json"

    def discover(self) -> Run:
        """`davsyncd --discover`, timed as a process."""
        run, so, se = run_timed([str(self.binary), "--config", str(self.config), "--discover"], self._env())
        if sum(1 for s in self.specs if f"/{s.name}/" in so) != len(self.specs):
            raise ClientError(f"davsyncd --discover did not list every collection:\n{so}\n{se}")
        m = re.search(r"discovered \d+ collections in (\d+) requests", se)
        run.requests = int(m.group(1)) if m else None
        return run

    def rediscovering_sync(self, homes: list[str]) -> Run:
        """`--once` with an aged discovery cache and DAVSYNCD_DEBUG=1; the
        Run's wall is the sum of the home PROPFINDs' times in its log."""
        cache = self.discovery_cache()
        old = time.time() - DISCOVERY_AGE
        os.utime(cache, (old, old))
        env = self._env() | {"DAVSYNCD_DEBUG": "1"}
        proc, so, se = run_timed([str(self.binary), "--config", str(self.config), "--once"], env)
        if cache.stat().st_mtime <= old + 1:
            raise ClientError(f"davsyncd --once did not rediscover (cache not rewritten):\n{se[-2000:]}")
        ms, sizes = [], []
        for home in homes:
            m = re.search(r"PROPFIND " + re.escape(home) + r" -> 207 \((\d+) bytes, (\d+) ms\)", se)
            if not m:
                raise ClientError(f"no PROPFIND of {home} in davsyncd's debug log:\n{se[-3000:]}")
            sizes.append(int(m.group(1)))
            ms.append(int(m.group(2)))
        return Run(wall=sum(ms) / 1000, requests=len(homes),
                   detail={"process_wall": proc.wall, "bytes": sizes, "ms": ms})


def _floor(setup) -> FloorClient:
    return FloorClient(setup.server.port, setup.user, setup.password)


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def _record(results: dict, row: str, name: str, i: int, repeat: int, run: Run) -> None:
    results.setdefault(row, {}).setdefault(name, [None] * repeat)[i] = asdict(run)


# --- row 9 -------------------------------------------------------------------------

def many_collections_specs(n: int, events: int) -> list[data.CollectionSpec]:
    return [data.CollectionSpec(f"calendar-{k:02d}", "events", events, f"Calendar {k + 1}") for k in range(n)]


def floor_account_first_sync(h: FloorClient, setup, specs) -> Run:
    """One Depth-1 PROPFIND of the home with the discovery properties, then
    per collection a Depth-0 PROPFIND of the token and a query with data."""
    body = discovery_propfind_body()
    os.sync()
    h.reset_clock()
    listing = h.request("PROPFIND", _path(setup.home_url), body, {"Depth": "1"})[2]
    got = {}
    for s in specs:
        path = setup.collection_paths[s.name]
        h.propfind_version(path)
        got[s.name] = bodies_in(h.query_all(path, s.is_addressbook), s.is_addressbook)
    run = Run(wall=h.elapsed, requests=h.requests)
    # Outside the clock: the listing named every collection, the queries brought every item.
    missing = [s.name for s in specs if setup.collection_paths[s.name].encode() not in listing]
    short = {k: v for k, v in got.items() if v < next(s.count for s in specs if s.name == k)}
    if missing or short:
        raise ClientError(f"floor: account first sync incomplete (not listed {missing}, short {short})")
    return run


def row_many_collections(setup, specs, root: Path, binary: Path, repeat: int, log, suite: dict) -> None:
    results = suite["rows"]
    d = DavsyncdAccount(root / "davsyncd", setup, specs, binary)
    h = _floor(setup)
    try:
        for i in range(repeat):
            order = ["floor", "davsyncd"] if i % 2 == 0 else ["davsyncd", "floor"]
            for name in order:
                if name == "floor":
                    run = floor_account_first_sync(h, setup, specs)
                else:
                    run = d.first_sync()
                    for s in specs:
                        if d.count(s) != s.count:
                            raise ClientError(f"davsyncd: first sync left {d.count(s)} of {s.count} items in {s.name}")
                _record(results, "9", name, i, repeat, run)
                extra = f", {run.cpu:.2f} s CPU, {run.maxrss_kb / 1024:.0f} MB" if run.cpu else ""
                log(f"    row 9 #{i + 1} {name}: {run.wall:.3f} s, {run.requests} requests{extra}")
    finally:
        h.close()


# --- row 10 ------------------------------------------------------------------------

def row_rediscovery(setup, specs, root: Path, binary: Path, repeat: int, log, suite: dict) -> None:
    results = suite["rows"]
    d = DavsyncdAccount(root / "davsyncd", setup, specs, binary)
    d.reset()
    for i in range(repeat):
        run = d.discover()
        _record(results, "10", "discover", i, repeat, run)
        log(f"    row 10 #{i + 1} davsyncd --discover: {run.wall * 1000:.0f} ms, {run.requests} requests")
    known = json.loads(d.discovery_cache().read_text())
    homes = list(dict.fromkeys(known.get("calendar_homes", []) + known.get("addressbook_homes", [])))
    if not homes:
        raise ClientError(f"no homes in {d.discovery_cache()}")
    suite["extra"]["homes"] = homes
    # In the daemon: one untimed first sync, then --once with an aged cache.
    d.sync()
    for i in range(repeat):
        run = d.rediscovering_sync(homes)
        _record(results, "10", "daemon", i, repeat, run)
        log(f"    row 10 #{i + 1} davsyncd rediscovery (its log): {run.detail['ms']} ms")
    # The bare request sequence, on a warm keep-alive connection.
    body = discovery_propfind_body()
    suite["extra"]["body_bytes"] = len(body)
    h = _floor(setup)
    try:
        for home in homes:
            h.request("PROPFIND", _path(home), body, {"Depth": "1"})      # warm-up, untimed
        for i in range(repeat):
            h.reset_clock()
            listing = b""
            for home in homes:
                listing += h.request("PROPFIND", _path(home), body, {"Depth": "1"})[2]
            missing = [s.name for s in specs if setup.collection_paths[s.name].encode() not in listing]
            if missing:
                raise ClientError(f"floor: rediscovery listing lacks {missing}")
            run = Run(wall=h.elapsed, requests=h.requests, detail={"bytes": len(listing)})
            _record(results, "10", "floor", i, repeat, run)
            log(f"    row 10 #{i + 1} bare replay: {run.wall * 1000:.1f} ms, {run.requests} requests")
    finally:
        h.close()
