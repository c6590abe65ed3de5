"""A real GNOME Keyring (the Secret Service) on a test's private bus.

    ring = Keyring(tmp_path / "keyring", bus).start()   # created and unlocked
    ring.store({"application": "davsyncd", "account": "x"}, "pw")   # secret-tool store
    ring.lookup({"application": "davsyncd", "account": "x"})        # secret-tool lookup
    ring.lock(); ring.locked()                                       # Service.Lock, Collection.Locked
    calls = ring.watch_calls()        # dbus-monitor of every call to the service
    calls.members()                   # ["SearchItems", "OpenSession", ...]

gnome-keyring-daemon runs with `--foreground --components=secrets --unlock`,
reading the keyring password on stdin, with HOME, XDG_DATA_HOME and
XDG_RUNTIME_DIR of its own under `root`, so that the user's keyrings are
never touched. With no keyring yet it creates the "login" keyring with that
password, unlocked, and makes it the default collection (what
`davsyncctl set-password` and `secret-tool store` write to).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Optional

import pytest

from davtest.daemon import wait_until
from davtest.procs import stop_process_group

SERVICE = "org.freedesktop.secrets"
SERVICE_PATH = "/org/freedesktop/secrets"
SERVICE_IFACE = "org.freedesktop.Secret.Service"
COLLECTION_IFACE = "org.freedesktop.Secret.Collection"
START_TIMEOUT = 20.0


class Keyring:
    PASSWORD = "keyring password"

    def __init__(self, root: os.PathLike | str, bus):
        self.root = Path(root)
        self.bus = bus
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.root / "gnome-keyring.log"
        self._monitors: list[CallMonitor] = []

    def env(self) -> dict:
        env = self.bus.env({k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"})
        env.update({"HOME": str(self.root / "home"), "XDG_DATA_HOME": str(self.root / "data"),
                    "XDG_RUNTIME_DIR": str(self.root / "runtime"), "XDG_CONFIG_HOME": str(self.root / "config")})
        for k in ("DISPLAY", "WAYLAND_DISPLAY", "GNOME_KEYRING_CONTROL"):
            env.pop(k, None)  # no prompter can appear on anyone's screen
        return env

    def start(self) -> "Keyring":
        for d in ("home", "data", "config"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "runtime").mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["gnome-keyring-daemon", "--foreground", "--components=secrets", "--unlock"],
                env=self.env(), stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.proc.stdin.write(self.PASSWORD.encode())
        self.proc.stdin.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"gnome-keyring-daemon exited with {self.proc.returncode}:\n{self.log()}")
            if not self.bus.name_has_owner(SERVICE):
                return None
            return self.default_collection() != "/"
        wait_until(ready, START_TIMEOUT, "gnome-keyring-daemon to own org.freedesktop.secrets with a default keyring")
        return self

    def stop(self) -> None:
        for m in self._monitors:
            m.stop()
        if self.proc:
            stop_process_group(self.proc)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------ the service

    def default_collection(self) -> str:
        out = self.bus.gdbus_call(SERVICE, SERVICE_PATH, f"{SERVICE_IFACE}.ReadAlias", "default")
        return out[0]

    def lock(self) -> None:
        self.bus.gdbus_call(SERVICE, SERVICE_PATH, f"{SERVICE_IFACE}.Lock", f"['{self.default_collection()}']")
        assert self.locked()

    def locked(self) -> bool:
        (value,) = self.bus.gdbus_call(SERVICE, self.default_collection(), "org.freedesktop.DBus.Properties.Get",
                                       COLLECTION_IFACE, "Locked")
        return bool(value)

    def _tool(self, *args: str, input: Optional[str] = None) -> subprocess.CompletedProcess:
        return subprocess.run(["secret-tool", *args], env=self.env(), input=input, capture_output=True,
                              text=True, timeout=30)

    def store(self, attributes: dict, secret: str, label: str = "davsyncd") -> None:
        words = [w for kv in attributes.items() for w in kv]
        res = self._tool("store", "--label", label, *words, input=secret)
        assert res.returncode == 0, f"secret-tool store failed: {res.stderr}"

    def lookup(self, attributes: dict) -> Optional[str]:
        """The secret, or None when no item matches (never on a locked keyring:
        secret-tool would prompt)."""
        assert not self.locked()
        words = [w for kv in attributes.items() for w in kv]
        res = self._tool("lookup", *words)
        return res.stdout if res.returncode == 0 else None

    def watch_calls(self) -> "CallMonitor":
        m = CallMonitor(self).start()
        self._monitors.append(m)
        return m


class CallMonitor:
    """Every method call to the Secret Service's interfaces (dbus-monitor
    --profile), to see what a client asked of it, e.g. that nobody called
    Unlock or Prompt."""

    def __init__(self, ring: Keyring):
        self.ring = ring
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "CallMonitor":
        rules = [f"type='method_call',interface='{i}'" for i in
                 (SERVICE_IFACE, COLLECTION_IFACE, "org.freedesktop.Secret.Item", "org.freedesktop.Secret.Prompt")]
        self.proc = subprocess.Popen(["dbus-monitor", "--address", self.ring.bus.address, "--profile", *rules],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        # Subscribed once a call of our own shows up.
        probe = "davtest-probe"
        self.ring.bus.gdbus_call(SERVICE, SERVICE_PATH, f"{SERVICE_IFACE}.SearchItems", f"{{'{probe}': 'x'}}")

        def seen():
            if "SearchItems" in self.members():
                return True
            self.ring.bus.gdbus_call(SERVICE, SERVICE_PATH, f"{SERVICE_IFACE}.SearchItems", f"{{'{probe}': 'x'}}")
            return None
        wait_until(seen, 10, "dbus-monitor to see calls to the Secret Service")
        with self._lock:
            self.lines.clear()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def members(self) -> list[str]:
        """Member names of the calls seen, in order."""
        out = []
        with self._lock:
            for line in self.lines:
                f = line.split("\t")
                if f and f[0] == "mc" and len(f) >= 8:
                    out.append(f[7])
        return out

    def stop(self) -> None:
        if self.proc:
            stop_process_group(self.proc)


@pytest.fixture
def keyring(tmp_path, bus):
    """A created, unlocked GNOME Keyring on the test's private bus (import it
    into a test module to use it)."""
    ring = Keyring(tmp_path / "keyring", bus).start()
    yield ring
    ring.stop()
