"""Running davsyncd in tests: config files, private XDG folders, polling.

    env = DaemonEnv(tmp_path)                       # private XDG_* and HOME
    cfg = env.write_config([account_for(srv, "personal")])
    res = env.run("--config", cfg, "--discover", "--json")   # CompletedProcess
    env.state_dir / "personal" / "collections.json"

The binary comes from $DAVSYNCD (meson sets it), else build/daemon/davsyncd
in the source tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from davtest.procs import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BINARY = REPO_ROOT / "build" / "daemon" / "davsyncd"
RUN_TIMEOUT = 120.0


def davsyncd_path() -> Path:
    """Path of the davsyncd binary ($DAVSYNCD or build/daemon/davsyncd)."""
    p = Path(os.environ.get("DAVSYNCD") or DEFAULT_BINARY).absolute()
    if not p.is_file() or not os.access(p, os.X_OK):
        raise FileNotFoundError(
            f"davsyncd binary not found at {p}: build it (ninja -C build) or set DAVSYNCD")
    return p


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.05) -> Any:
    """Polls `predicate` until it returns a truthy value, which is returned.

    Raises TimeoutError naming `what` after `timeout` seconds (measured with a
    monotonic clock). An exception from the predicate counts as "not yet"; the
    last one is included in the error message. The poll interval starts at
    `interval` and grows to at most 0.5 s.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    delay = interval
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:g} s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {type(last_exc).__name__}: {last_exc})"
            raise TimeoutError(msg) from last_exc
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)


def account_for(server, account_id: str = "test", *, url: Optional[str] = None,
                username: Optional[str] = None, password: Optional[str] = None,
                password_command: Optional[str] = None, **extra) -> dict:
    """A config account for a davtest server.

    url defaults to the server's home URL; password to the server's password
    unless password_command is given. Extra keys (local_root, sync_interval,
    collections, ...) are copied as they are.
    """
    acc = {
        "id": account_id,
        "url": url if url is not None else server.home_url,
        "username": username if username is not None else server.user,
    }
    if password_command is not None:
        acc["password_command"] = password_command
    else:
        acc["password"] = password if password is not None else server.password
    acc.update(extra)
    return acc


def write_config(path: os.PathLike | str, accounts: Iterable[dict], **top: Any) -> Path:
    """Writes {"accounts": [...], **top} as JSON (mode 0600); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"accounts": list(accounts)}
    doc.update(top)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    os.chmod(path, 0o600)
    return path


class DaemonEnv:
    """Private XDG folders (and HOME) under `root` for running davsyncd.

    config_home/state_home/data_home are the XDG_* values; config_path,
    state_dir and data_dir are the daemon's own files inside them.
    """

    def __init__(self, root: os.PathLike | str, binary: Optional[os.PathLike | str] = None):
        self.root = Path(root)
        self.home = self.root / "home"
        self.config_home = self.root / "config"
        self.state_home = self.root / "state"
        self.data_home = self.root / "data"
        self.runtime_dir = self.root / "runtime"
        for d in (self.home, self.config_home, self.state_home, self.data_home):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._binary = Path(binary).absolute() if binary else None
        # The system bus davsyncd watches for resume and network return: by
        # default an address where nothing listens, so that no test hears the
        # host's logind or NetworkManager (tests of it set a private one).
        self.system_bus_address = f"unix:path={self.root.absolute() / 'no-system-bus'}"

    @property
    def binary(self) -> Path:
        return self._binary or davsyncd_path()

    @property
    def config_path(self) -> Path:
        return self.config_home / "davsyncd" / "config.json"

    @property
    def state_dir(self) -> Path:
        return self.state_home / "davsyncd"

    @property
    def data_dir(self) -> Path:
        return self.data_home / "davsyncd"

    def write_config(self, accounts: Iterable[dict], path: Optional[os.PathLike | str] = None,
                     **top: Any) -> Path:
        """Writes the config (default: the XDG location) and returns its path."""
        return write_config(path or self.config_path, accounts, **top)

    def env(self, extra: Optional[dict] = None) -> dict:
        env = dict(os.environ)
        # Never reach the user's session bus or settings by accident.
        for k in ("DBUS_SESSION_BUS_ADDRESS", "XDG_CONFIG_DIRS", "XDG_DATA_DIRS",
                  "XDG_CACHE_HOME"):
            env.pop(k, None)
        env.update({
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_STATE_HOME": str(self.state_home),
            "XDG_DATA_HOME": str(self.data_home),
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "LC_ALL": "C.UTF-8",
            "DBUS_SYSTEM_BUS_ADDRESS": self.system_bus_address,
        })
        env.update(extra or {})
        return env

    def run(self, *args: os.PathLike | str, timeout: float = RUN_TIMEOUT,
            extra_env: Optional[dict] = None, check: bool = False,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Runs davsyncd with `args`; text stdout/stderr captured."""
        cmd = [str(self.binary)] + [str(a) for a in args]
        try:
            return subprocess.run(cmd, env=self.env(extra_env), cwd=self.root, input=input,
                                  capture_output=True, text=True, timeout=timeout,
                                  check=check)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"{' '.join(cmd)} did not finish within {timeout:g} s\n"
                f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None

    def start(self, *args: os.PathLike | str, extra_env: Optional[dict] = None,
              log_name: str = "davsyncd.log") -> subprocess.Popen:
        """Starts davsyncd in the background (own process group); stdout and
        stderr go to root/log_name. Stop it with stop()."""
        log = open(self.root / log_name, "ab")
        try:
            return subprocess.Popen([str(self.binary)] + [str(a) for a in args],
                                    env=self.env(extra_env), cwd=self.root,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    @staticmethod
    def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit status."""
        return stop_process_group(proc, timeout)


def run_daemon(args: Iterable[os.PathLike | str], root: os.PathLike | str,
               timeout: float = RUN_TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """One-shot: DaemonEnv(root).run(*args)."""
    return DaemonEnv(root).run(*args, timeout=timeout, **kw)


def parse_json_stdout(res: subprocess.CompletedProcess) -> Any:
    """stdout as one JSON document, with a readable error when it is not."""
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(
            f"stdout is not one JSON document ({e}); exit status {res.returncode}\n"
            f"stdout: {res.stdout[:4000]!r}\nstderr: {res.stderr[:4000]!r}") from None
