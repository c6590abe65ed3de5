"""Benchmark servers: the integration tests' Radicale and Xandikos classes
(tests/integration/davtest/servers.py), filled with generated data before
they start, and warmed so that no client pays for a cold server cache.

A server is described by a ServerSetup; `prepare()` writes the data and
warms caches, `start()` starts the fresh server process the clients meet.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from davtest.servers import Radicale, Xandikos  # noqa: E402

from . import data  # noqa: E402
from .floor import FloorClient  # noqa: E402

PYTHON = "/usr/bin/python3"
PASSWORD = "bench-password"


def _parallel(cmds: list[list[str]]) -> None:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    failed = []
    for p, c in zip(procs, cmds):
        out, _ = p.communicate()
        if p.returncode != 0:
            failed.append(f"{' '.join(c)}:\n{out}")
    if failed:
        raise RuntimeError("radicale warm-up failed:\n" + "\n".join(failed))


class BenchRadicale(Radicale):
    """Radicale with Debian's package defaults except what the test class
    sets (htpasswd auth, owner_only rights, loopback, warnings-only log)."""

    def __init__(self, workdir):
        super().__init__(workdir, password=PASSWORD)


class BenchXandikos(Xandikos):
    def __init__(self, workdir):
        super().__init__(workdir, password=PASSWORD)


class ServerSetup:
    """One server with its collections. Subclasses: RadicaleSetup, XandikosSetup."""

    kind = "?"

    def __init__(self, workdir: Path, specs: list[data.CollectionSpec], seed: int, log=print):
        self.workdir = Path(workdir)
        self.specs = specs
        self.seed = seed
        self.log = log
        self.server = None
        self.collection_paths: dict[str, str] = {}   # spec name -> server path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def home_url(self) -> str:
        return self.server.home_url

    @property
    def user(self) -> str:
        return self.server.user

    @property
    def password(self) -> str:
        return self.server.password

    def floor(self) -> FloorClient:
        return FloorClient(self.server.port, self.server.user, self.server.password)

    def warm(self, full: bool = False) -> float:
        """Reads every collection once (a query with data), so that no client
        meets cold files; `full` also runs sync-collection, the collection
        etag and a Depth-1 PROPFIND (for servers that build caches on them).
        Returns seconds."""
        t0 = time.monotonic()
        fl = self.floor()
        for spec in self.specs:
            path = self.collection_paths[spec.name]
            fl.query_all(path, spec.is_addressbook)
            if full:
                fl.propfind_version(path, ctag=True)
                fl.sync_collection(path, "", with_data=False)
                fl.list_etags(path)
        fl.close()
        return time.monotonic() - t0

    def settle(self) -> None:
        """Lets the file system finish the writes of the preparation, so that
        the first timed client does not pay for them."""
        os.sync()
        time.sleep(3)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def url_of(self, spec_name: str) -> str:
        return self.server.url(self.collection_paths[spec_name])


class RadicaleSetup(ServerSetup):
    kind = "radicale"

    def prepare(self) -> None:
        """Writes the storage, then fills Radicale's item and history caches
        with Radicale's own storage code, one process per collection."""
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        t0 = time.monotonic()
        size = data.populate_radicale(self.workdir / "collections", "alice", self.specs, self.seed)
        self.collection_paths = {s.name: f"/alice/{s.name}/" for s in self.specs}
        self.log(f"  radicale: wrote {sum(s.count for s in self.specs)} items "
                 f"({size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        script = str(Path(__file__).with_name("radicale_warm.py"))
        folder = str(self.workdir / "collections")
        paths = [self.collection_paths[s.name] for s in self.specs]
        jobs = max(1, min(os.cpu_count() or 1, 4))
        _parallel([[PYTHON, script, "items", folder, str(k), str(jobs), *paths] for k in range(jobs)])
        _parallel([[PYTHON, script, "sync", folder, p] for p in paths])
        self.log(f"  radicale: caches filled in {time.monotonic() - t0:.1f} s")

    def start(self) -> None:
        self.server = BenchRadicale(self.workdir).start()
        secs = self.warm()   # cheap now; loads the OS page cache the same way for everyone
        self.settle()
        self.log(f"  radicale: started on port {self.server.port} (warm check {secs:.1f} s)")


class XandikosSetup(ServerSetup):
    kind = "xandikos"

    def prepare(self) -> None:
        """Starts Xandikos once to create the principal and collections, adds
        the items as one git commit per collection, and warms it."""
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        srv = BenchXandikos(self.workdir).start()
        self.server = srv
        try:
            t0 = time.monotonic()
            size = 0
            for spec in self.specs:
                if spec.is_addressbook:
                    path = srv.make_addressbook(spec.name, spec.displayname)
                else:
                    path = srv.make_calendar(spec.name, spec.displayname, components=("VEVENT",))
                self.collection_paths[spec.name] = path
                size += data.populate_git_collection(srv.data_dir / path.strip("/"), spec, self.seed)
            self.log(f"  xandikos: wrote {sum(s.count for s in self.specs)} items "
                     f"({size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
            secs = self.warm(full=True)
            self.log(f"  xandikos: warmed in {secs:.1f} s")
        finally:
            srv.stop()
            self.server = None

    def start(self) -> None:
        self.server = BenchXandikos(self.workdir).start()
        secs = self.warm()
        self.settle()
        self.log(f"  xandikos: started on port {self.server.port} (warm check {secs:.1f} s)")


SETUPS = {"radicale": RadicaleSetup, "xandikos": XandikosSetup}
