"""The clients under test, each with its own folders and sync state.

Every client run is a child process timed from spawn to exit (wall clock),
with its resource use from wait4(): user+sys CPU seconds and peak RSS of the
process (and any children it waited for).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import data


@dataclass
class Run:
    """One timed client run."""
    wall: float                      # seconds
    cpu: float = 0.0                 # user+sys seconds of the client process
    maxrss_kb: int = 0               # its peak RSS
    requests: int | None = None      # HTTP requests, when the client reports them
    down: int | None = None
    up: int | None = None
    detail: dict = field(default_factory=dict)


class ClientError(RuntimeError):
    pass


GNU_TIME = "/usr/bin/time"


def run_timed(cmd: list[str], env: dict, stdin: str | None = None, check: bool = True) -> tuple[Run, str, str]:
    """Runs cmd to completion; returns (Run with wall, cpu and rss, stdout, stderr).

    CPU and peak RSS come from GNU time when it is installed: the rusage that
    wait4() gives for a child started from this process counts the RSS the
    forked Python had before the exec (Linux keeps the high-water mark
    across exec), so every client would show this process's 50-60 MB."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp, tempfile.NamedTemporaryFile(mode="r") as usage:
        if stdin is not None:
            inp.write(stdin.encode())
            inp.seek(0)
        wrapped = [GNU_TIME, "-q", "-f", "%U %S %M", "-o", usage.name, *cmd] if os.access(GNU_TIME, os.X_OK) else cmd
        # Dirty pages of earlier runs are written back now, not during this one.
        os.sync()
        t0 = time.perf_counter()
        p = subprocess.Popen(wrapped, env=env, stdin=inp if stdin is not None else subprocess.DEVNULL,
                             stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        so, se = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        cpu, maxrss = ru.ru_utime + ru.ru_stime, ru.ru_maxrss
        if wrapped is not cmd:
            fields = usage.read().split()
            if len(fields) >= 3:
                cpu, maxrss = float(fields[0]) + float(fields[1]), int(fields[2])
    if check and p.returncode != 0:
        raise ClientError(f"{' '.join(cmd)} exited with {p.returncode}\nstdout:\n{so[-3000:]}\nstderr:\n{se[-3000:]}")
    return Run(wall=wall, cpu=cpu, maxrss_kb=maxrss), so, se


class Client:
    """A sync client with its own folders: first_sync() from nothing, sync()
    from its current state. `name` is the column label."""

    name = "?"

    def __init__(self, root: Path, setup, specs: list[data.CollectionSpec]):
        self.base = Path(root)
        self.root = self.base / "run0"
        self.setup = setup
        self.specs = specs
        self.runs = 0

    def new_root(self) -> None:
        """A fresh folder for a first sync. Earlier ones are never deleted
        during the benchmark: creating thousands of files soon after deleting
        thousands costs ext4 several times more system time (measured: 1 ms
        instead of 0.13 ms per created file), which would be charged to
        whichever client runs next. bench.py removes everything at the end."""
        self.runs += 1
        self.root = self.base / f"run{self.runs}"
        while self.root.exists():
            self.runs += 1
            self.root = self.base / f"run{self.runs}"

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def local_file(self, spec: data.CollectionSpec, index: int, seed: int) -> Path:
        """The local file holding item `index` of `spec` (after a sync)."""
        raise NotImplementedError


# --- davsyncd ---------------------------------------------------------------------

_SUMMARY_RE = re.compile(r"^(?P<label>\S+): (?P<down>\d+) down, (?P<up>\d+) up, .*?(?P<req>\d+) requests, "
                         r"(?P<secs>[\d.]+) s", re.M)


class Davsyncd(Client):
    name = "davsyncd"

    def __init__(self, root: Path, setup, specs, binary: Path):
        super().__init__(root, setup, specs)
        self.binary = Path(binary)
        self.config = self.root / "config.json"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(HOME=str(self.root / "home"), XDG_CONFIG_HOME=str(self.root / "config"),
                   XDG_STATE_HOME=str(self.root / "state"), XDG_DATA_HOME=str(self.root / "data"),
                   XDG_CACHE_HOME=str(self.root / "cache"), XDG_RUNTIME_DIR=str(self.root / "run"))
        env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        return env

    def reset(self) -> None:
        """Fresh folders and a fresh configuration; discovery (untimed)."""
        self.fresh_config()
        run, so, se = run_timed([str(self.binary), "--config", str(self.config), "--discover"], self._env())
        found = sum(1 for s in self.specs if f"/{s.name}/" in so)
        if found != len(self.specs):
            raise ClientError(f"davsyncd --discover did not list every collection:\n{so}\n{se}")
        self.discover_seconds = run.wall

    def fresh_config(self) -> None:
        """Fresh XDG folders and a configuration with this client's collections."""
        self.new_root()
        self.config = self.root / "config.json"
        for d in ("home", "config", "state", "data", "cache", "run"):
            (self.root / d).mkdir(parents=True, mode=0o700)
        account = {"id": "bench", "url": self.setup.home_url, "username": self.setup.user,
                   "password": self.setup.password,
                   "collections": {"include": [s.name for s in self.specs]}}
        self.config.write_text(json.dumps({"accounts": [account]}, indent=2))

    def first_sync(self) -> Run:
        self.reset()
        run = self.sync()
        # The untimed --discover before it, for the "discovery included" ratio.
        run.detail["discover_seconds"] = self.discover_seconds
        return run

    def sync(self) -> Run:
        run, so, se = run_timed([str(self.binary), "--config", str(self.config), "--once"], self._env())
        lines = list(_SUMMARY_RE.finditer(so))
        if len(lines) != len(self.specs) or "FAILED" in so:
            raise ClientError(f"davsyncd --once: unexpected output:\n{so}\n{se[-2000:]}")
        run.requests = sum(int(m["req"]) for m in lines)
        run.down = sum(int(m["down"]) for m in lines)
        run.up = sum(int(m["up"]) for m in lines)
        run.detail = {"summary": so.strip()}
        return run

    def folder(self, spec: data.CollectionSpec) -> Path:
        return self.root / "data" / "davsyncd" / "bench" / spec.name

    def local_file(self, spec, index, seed) -> Path:
        return self.folder(spec) / spec.item_name(index, seed)

    def count(self, spec) -> int:
        return sum(1 for p in self.folder(spec).iterdir() if p.name.endswith(spec.ext))


# --- vdirsyncer -------------------------------------------------------------------

class Vdirsyncer(Client):
    name = "vdirsyncer"

    def __init__(self, root: Path, setup, specs, binary: str = "/usr/bin/vdirsyncer"):
        super().__init__(root, setup, specs)
        self.binary = binary
        self.config = self.root / "config"

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(HOME=str(self.root / "home"), XDG_CONFIG_HOME=str(self.root / "home" / ".config"))
        return env

    def reset(self) -> None:
        self.new_root()
        self.config = self.root / "config"
        (self.root / "home").mkdir(parents=True)
        lines = ["[general]", f'status_path = "{self.root / "status"}"', ""]
        for s in self.specs:
            remote_type = "carddav" if s.is_addressbook else "caldav"
            # The account's home URL and the collection's name, as a user would
            # configure it. The local collection folder exists already, so
            # discover asks no question.
            (self.root / "vdir" / s.name / s.name).mkdir(parents=True)
            lines += [
                f"[pair p_{s.name}]", f'a = "r_{s.name}"', f'b = "l_{s.name}"', f'collections = ["{s.name}"]',
                'conflict_resolution = "a wins"', "",
                f"[storage r_{s.name}]", f'type = "{remote_type}"', f'url = "{self.setup.home_url}"',
                f'username = "{self.setup.user}"', f'password = "{self.setup.password}"', "",
                f"[storage l_{s.name}]", 'type = "filesystem"', f'path = "{self.root / "vdir" / s.name}"',
                f'fileext = "{s.ext}"', "",
            ]
        self.config.write_text("\n".join(lines))
        run, so, se = run_timed([self.binary, "-c", str(self.config), "discover"], self._env(), stdin="y\n" * 10)
        self.discover_seconds = run.wall

    def first_sync(self) -> Run:
        self.reset()
        return self.sync()

    def sync(self) -> Run:
        run, so, se = run_timed([self.binary, "-c", str(self.config), "sync"], self._env())
        if "error" in se.lower() and "warning" not in se.lower():
            raise ClientError(f"vdirsyncer sync reported errors:\n{se[-3000:]}")
        run.detail = {"stderr_tail": se[-500:]}
        return run

    def folder(self, spec) -> Path:
        return self.root / "vdir" / spec.name / spec.name

    def local_file(self, spec, index, seed) -> Path:
        # vdirsyncer names files after the server href's last segment.
        return self.folder(spec) / spec.item_name(index, seed)

    def count(self, spec) -> int:
        return sum(1 for p in self.folder(spec).iterdir() if p.name.endswith(spec.ext))
