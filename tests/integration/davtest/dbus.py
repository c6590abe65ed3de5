"""A private session bus for tests, and D-Bus clients that are not davsyncd's own.

    bus = PrivateBus(tmp_path / "bus").start()      # dbus-daemon --nofork --print-address
    env = bus.env(daemon_env.env())                 # DBUS_SESSION_BUS_ADDRESS set
    out = bus.gdbus_call(DEST, ROOT, "io.github.davsyncd.Manager1.SyncAll")
    objs = bus.managed_objects()                    # parsed GetManagedObjects (gdbus)
    ver = bus.busctl_get(ROOT, MANAGER, "Version")  # busctl --user --json=short
    mon = bus.monitor()                             # gdbus monitor in the background
    mon.wait_for(lambda s: s.member == "SyncFinished", what="SyncFinished")
    bus.stop()

The bus has its own configuration file (no service directories unless asked
for, so nothing is activated by accident, and no access to the user's session
bus): the tests never touch the desktop's session. Its socket lives in a short folder under /tmp,
since the socket path must fit in sun_path (108 bytes) and pytest's tmp
folders may be long.

gdbus prints GVariant text; `parse_gvariant` turns it into Python values
(object paths and strings become str, integers int, variants their value).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from davtest.daemon import wait_until
from davtest.procs import stop_process_group

BUS_NAME = "io.github.davsyncd"
ROOT_PATH = "/io/github/davsyncd"
MANAGER = "io.github.davsyncd.Manager1"
ACCOUNT = "io.github.davsyncd.Account1"
COLLECTION = "io.github.davsyncd.Collection1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"

START_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:dir={sockdir}</listen>
{servicedirs}  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def path_element(ident: str) -> str:
    """Object path element for an id, as the daemon encodes it (see Account1.xml)."""
    out = []
    for b in ident.encode("utf-8"):
        c = chr(b)
        if c.isascii() and (c.isalnum()):
            out.append(c)
        else:
            out.append("_%02x" % b)
    return "".join(out) or "_"


def account_path(account_id: str) -> str:
    return f"{ROOT_PATH}/account/{path_element(account_id)}"


def collection_path(account_id: str, folder: str) -> str:
    return f"{account_path(account_id)}/collection/{path_element(folder)}"


class DBusCallError(AssertionError):
    """A D-Bus client command failed; `.name` is the D-Bus error name when known."""

    def __init__(self, cmd: list[str], res: subprocess.CompletedProcess):
        self.cmd = cmd
        self.returncode = res.returncode
        self.stdout = res.stdout
        self.stderr = res.stderr
        m = re.search(r"GDBus\.Error:([A-Za-z0-9_.]+):\s*(.*)", res.stderr, re.S)
        self.name = m.group(1) if m else None
        self.message = m.group(2).strip() if m else res.stderr.strip()
        super().__init__(f"{' '.join(cmd)} exited with {res.returncode}: "
                         f"{res.stderr.strip() or res.stdout.strip()}")


# ---------------------------------------------------------------- GVariant text


class _GVariantParser:
    """Parser for the GVariant text format that gdbus prints (enough of it)."""

    _TYPE_WORDS = {"byte", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                   "handle", "double", "boolean", "string", "objectpath", "signature"}

    def __init__(self, text: str):
        self.s = text
        self.i = 0

    def error(self, msg: str) -> ValueError:
        return ValueError(f"{msg} at offset {self.i} in GVariant text {self.s[:300]!r}")

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i].isspace():
            self.i += 1

    def peek(self) -> str:
        self.ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected {ch!r}")
        self.i += 1

    def parse(self) -> Any:
        v = self.value()
        self.ws()
        if self.i != len(self.s):
            raise self.error("trailing text")
        return v

    def items_until(self, close: str) -> list:
        """Comma-separated values after an opening bracket, up to `close`."""
        self.i += 1
        items = []
        while self.peek() != close:
            items.append(self.value())
            if self.peek() == ",":
                self.i += 1
        self.i += 1
        return items

    def value(self) -> Any:
        c = self.peek()
        if c == "@":  # type annotation: @as [], @a{sv} {}
            self.i += 1
            depth = 0
            while self.i < len(self.s):
                ch = self.s[self.i]
                if ch in "({":
                    depth += 1
                elif ch in ")}":
                    depth -= 1
                elif ch.isspace() and depth <= 0:
                    break
                self.i += 1
            return self.value()
        if c == "(":
            return tuple(self.items_until(")"))
        if c == "[":
            return self.items_until("]")
        if c == "{":
            self.i += 1
            d = {}
            while self.peek() != "}":
                k = self.value()
                self.expect(":")
                d[k] = self.value()
                if self.peek() == ",":
                    self.i += 1
            self.i += 1
            return d
        if c == "<":
            self.i += 1
            v = self.value()
            self.expect(">")
            return v
        if c in "'\"":
            return self.string()
        m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(self.s, self.i)
        if m:
            word = m.group(0)
            self.i = m.end()
            if word in self._TYPE_WORDS:
                return self.value()
            if word == "true":
                return True
            if word == "false":
                return False
            if word == "nothing":
                return None
            if word == "just":
                return self.value()
            raise self.error(f"unknown word {word!r}")
        m = re.compile(r"[-+]?(0x[0-9a-fA-F]+|[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?)").match(
            self.s, self.i)
        if m:
            self.i = m.end()
            t = m.group(0)
            if "x" in t:
                return int(t, 16)
            return float(t) if any(ch in t for ch in ".eE") else int(t)
        raise self.error("unexpected character")

    def string(self) -> str:
        quote = self.s[self.i]
        self.i += 1
        out = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "\\":
                nxt = self.s[self.i + 1]
                simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"',
                          "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
                if nxt in simple:
                    out.append(simple[nxt])
                    self.i += 2
                elif nxt == "u":
                    out.append(chr(int(self.s[self.i + 2:self.i + 6], 16)))
                    self.i += 6
                elif nxt == "U":
                    out.append(chr(int(self.s[self.i + 2:self.i + 10], 16)))
                    self.i += 10
                else:
                    out.append(nxt)
                    self.i += 2
                continue
            if ch == quote:
                self.i += 1
                return "".join(out)
            out.append(ch)
            self.i += 1
        raise self.error("unterminated string")


def parse_gvariant(text: str) -> Any:
    """Python value of GVariant text as printed by gdbus."""
    return _GVariantParser(text.strip()).parse()


# ---------------------------------------------------------------- signals


@dataclass
class Signal:
    path: str
    interface: str
    member: str
    args: tuple
    raw: str = field(repr=False, default="")


# "/path: iface.Member (args)" as printed by `gdbus monitor`
_MONITOR_LINE = re.compile(r"^(/[^:]*): ([A-Za-z0-9_.]+)\.([A-Za-z0-9_]+) (\(.*\))\s*$")


class Monitor:
    """`gdbus monitor --session --dest io.github.davsyncd` running in the
    background; every signal it prints is parsed into a Signal."""

    def __init__(self, bus: "PrivateBus", dest: str = BUS_NAME):
        self.bus = bus
        self.log_path = bus.workdir / f"monitor-{time.monotonic_ns()}.log"
        self.signals: list[Signal] = []
        self.lines: list[str] = []
        # Signal lines parse_gvariant could not read, with the error: any
        # makes find() and wait_for() fail at once, so a parser gap shows as
        # itself, never as a wait that times out.
        self.parse_errors: list[str] = []
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(
            ["gdbus", "monitor", "--session", "--dest", dest],
            env=bus.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                line = line.rstrip("\n")
                sig = None
                m = _MONITOR_LINE.match(line)
                error = None
                if m:
                    try:
                        sig = Signal(m.group(1), m.group(2), m.group(3),
                                     parse_gvariant(m.group(4)), line)
                    except (ValueError, IndexError) as e:
                        error = f"cannot parse the signal {line!r}: {e}"
                with self._cv:
                    if error is not None:
                        self.parse_errors.append(error)
                    self.lines.append(line)
                    if sig is not None:
                        self.signals.append(sig)
                    self._cv.notify_all()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Monitor":
        """gdbus monitor has added its match rules once it printed its banner.

        With the name already owned it prints "The name ... is owned by ..."
        after subscribing; without an owner, "... does not have an owner".
        """
        wait_until(lambda: any("is owned by" in l or "does not have an owner" in l
                               for l in self.lines),
                   timeout, "gdbus monitor to subscribe")
        return self

    def check_parsed(self) -> None:
        """Raises AssertionError if gdbus printed a signal we could not parse."""
        with self._cv:
            if self.parse_errors:
                raise AssertionError("gdbus monitor: " + "; ".join(self.parse_errors))

    def find(self, pred: Callable[[Signal], bool], start: int = 0) -> list[Signal]:
        self.check_parsed()
        with self._cv:
            return [s for s in self.signals[start:] if pred(s)]

    def wait_for(self, pred: Callable[[Signal], bool], timeout: float = 30.0,
                 what: str = "signal", start: int = 0) -> Signal:
        """The first signal (from index `start`) matching `pred`."""
        def first():
            with self._cv:
                if self.parse_errors:
                    return True     # ends the wait; check_parsed() raises below
            return (self.find(pred, start) or [None])[0]
        found = wait_alive(self.bus, first, timeout, what,
                           lambda: "signals seen:\n" + "\n".join(
                               s.raw for s in self.signals[start:][-40:]))
        self.check_parsed()
        return found

    def mark(self) -> int:
        """Index to pass as `start` to see only signals from now on."""
        with self._cv:
            return len(self.signals)

    def stop(self) -> None:
        stop_process_group(self.proc, 5)
        self._reader.join(timeout=5)


def wait_alive(bus: "PrivateBus", predicate: Callable[[], Any], timeout: float, what: str,
               context: Optional[Callable[[], str]] = None) -> Any:
    """wait_until, but fails at once when `bus.watchdog()` (set by whoever
    started the service under test) reports that it died."""
    died: list[str] = []

    def check():
        v = predicate()
        if v:
            return v
        if bus.watchdog is not None:
            msg = bus.watchdog()
            if msg:
                died.append(msg)
                return True
        return v
    try:
        v = wait_until(check, timeout, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}" + (f"; {context()}" if context else "")) from None
    if died:
        raise AssertionError(f"while waiting for {what}: {died[0]}")
    return v


# ---------------------------------------------------------------- the bus


class PrivateBus:
    """A dbus-daemon of our own, reachable through `address`."""

    def __init__(self, workdir: os.PathLike | str, *,
                 service_dirs: Iterable[os.PathLike | str] = (),
                 daemon_env: Optional[dict] = None):
        """service_dirs: folders of D-Bus activation files (none by default,
        so nothing is activated); daemon_env: the dbus-daemon's environment,
        which activated services inherit (default os.environ)."""
        self.workdir = Path(workdir)
        self.service_dirs = [Path(d).absolute() for d in service_dirs]
        self.daemon_env = daemon_env
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "bus.conf"
        self.log_path = self.workdir / "dbus-daemon.log"
        self.sockdir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None
        self._monitors: list[Monitor] = []
        # Returns a message when the service under test died, else None;
        # waits on this bus fail at once then (see wait_alive).
        self.watchdog: Optional[Callable[[], Optional[str]]] = None

    def start(self) -> "PrivateBus":
        self.sockdir = tempfile.mkdtemp(prefix="davtest-bus-")
        dirs = "".join(f"  <servicedir>{d}</servicedir>\n" for d in self.service_dirs)
        self.config_path.write_text(_CONFIG.format(sockdir=self.sockdir, servicedirs=dirs))
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["dbus-daemon", "--config-file", str(self.config_path), "--nofork",
                 "--print-address=1", "--nopidfile"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, env=self.daemon_env)
        finally:
            log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"dbus-daemon did not print its address "
                                   f"(log {self.log_path}: {self.log_tail()})")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    continue
                line += chunk
        self.address = line.decode().strip()
        return self

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        for m in self._monitors:
            m.stop()
        self._monitors.clear()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)
            self.sockdir = None

    def __enter__(self) -> "PrivateBus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, base: Optional[dict] = None) -> dict:
        """`base` (default os.environ) with DBUS_SESSION_BUS_ADDRESS set to this bus."""
        env = dict(os.environ if base is None else base)
        env["DBUS_SESSION_BUS_ADDRESS"] = self.address
        env.setdefault("LC_ALL", "C.UTF-8")
        return env

    # ------------------------------------------------ plain runs

    def run(self, cmd: list[str], timeout: float = CALL_TIMEOUT, check: bool = True,
            env: Optional[dict] = None) -> subprocess.CompletedProcess:
        try:
            res = subprocess.run(cmd, env=env or self.env(), capture_output=True, text=True,
                                 timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{' '.join(cmd)} did not finish within {timeout:g} s "
                                 f"(stdout {e.stdout!r}, stderr {e.stderr!r})") from None
        if check and res.returncode != 0:
            raise DBusCallError(cmd, res)
        return res

    # ------------------------------------------------ gdbus

    def gdbus_call(self, dest: str, path: str, method: str, *args: str,
                   timeout: float = CALL_TIMEOUT) -> Any:
        """`gdbus call` ("iface.Method"); the parsed reply tuple. Raises
        DBusCallError (with .name) when the call fails."""
        cmd = ["gdbus", "call", "--session", "--dest", dest, "--object-path", path,
               "--method", method, "--timeout", str(int(timeout))] + list(args)
        res = self.run(cmd, timeout=timeout + 5)
        return parse_gvariant(res.stdout)

    def call(self, path: str, method: str, *args: str, timeout: float = CALL_TIMEOUT) -> Any:
        """gdbus_call on davsyncd."""
        return self.gdbus_call(BUS_NAME, path, method, *args, timeout=timeout)

    def managed_objects(self) -> dict[str, dict[str, dict[str, Any]]]:
        """GetManagedObjects of davsyncd through gdbus: {path: {iface: {prop: value}}}."""
        (objs,) = self.call(ROOT_PATH, f"{OBJECT_MANAGER}.GetManagedObjects")
        return objs

    def get_property(self, path: str, interface: str, name: str) -> Any:
        (value,) = self.call(path, f"{PROPERTIES}.Get", interface, name)
        return value

    def get_all(self, path: str, interface: str) -> dict[str, Any]:
        (value,) = self.call(path, f"{PROPERTIES}.GetAll", interface)
        return value

    def name_has_owner(self, name: str = BUS_NAME) -> bool:
        (owned,) = self.gdbus_call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                   "org.freedesktop.DBus.NameHasOwner", name)
        return bool(owned)

    def name_owner_pid(self, name: str = BUS_NAME) -> int:
        (pid,) = self.gdbus_call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus.GetConnectionUnixProcessID", name)
        return int(pid)

    def monitor(self, dest: str = BUS_NAME) -> Monitor:
        """A running `gdbus monitor` (stopped with the bus), subscribed on return."""
        m = Monitor(self, dest)
        self._monitors.append(m)
        return m.wait_ready()

    # ------------------------------------------------ busctl

    def busctl(self, *args: str, check: bool = True,
               timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
        """`busctl --user ARGS` with this bus as the session bus."""
        return self.run(["busctl", "--user", "--no-pager", *args], timeout=timeout, check=check)

    def busctl_json(self, *args: str, timeout: float = CALL_TIMEOUT) -> Any:
        """`busctl --user --json=short ARGS`, parsed ({"type": ..., "data": ...})."""
        res = self.busctl("--json=short", *args, timeout=timeout)
        try:
            return json.loads(res.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"busctl printed no JSON ({e}): {res.stdout!r}") from None

    def busctl_get(self, path: str, interface: str, name: str, dest: str = BUS_NAME) -> Any:
        """A property's value read with `busctl get-property`."""
        return self.busctl_json("get-property", dest, path, interface, name)["data"]
