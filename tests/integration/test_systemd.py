"""The systemd user unit and the D-Bus activation file, as built and installed.

The files in the build folder point at the install prefix; the checks that
need a runnable binary use copies rewritten to the build's davsyncd.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from davtest import sampledata
from davtest.daemon import DaemonEnv, account_for, davsyncd_path, wait_until
from davtest.dbus import ACCOUNT, MANAGER, ROOT_PATH, PrivateBus, account_path

BUS_SERVICE = "io.github.davsyncd.service"


@pytest.fixture(scope="module")
def build_dir() -> Path:
    """The meson build folder holding $DAVSYNCD (build/daemon/davsyncd)."""
    return davsyncd_path().parent.parent


@pytest.fixture(scope="module")
def prefix(build_dir) -> dict:
    """prefix, bindir, datadir of the build (meson introspect)."""
    res = subprocess.run(["meson", "introspect", str(build_dir), "--buildoptions"],
                         capture_output=True, text=True, check=True)
    opts = {o["name"]: o["value"] for o in json.loads(res.stdout)}
    return {k: opts[k] for k in ("prefix", "bindir", "datadir")}


def read_ini(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # keys are case-sensitive
    cp.read_string(path.read_text())
    return cp


def unit_with_build_binary(build_dir: Path, dest: Path) -> Path:
    """The built unit, copied to `dest` with ExecStart= the build's binary."""
    text = (build_dir / "systemd" / "davsyncd.service").read_text()
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={davsyncd_path()}", text, flags=re.M)
    assert n == 1, text
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "davsyncd.service"
    path.write_text(text)
    return path


def verify(unit: Path, tmp_path: Path, user: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C.UTF-8", SYSTEMD_PAGER="cat", SYSTEMD_LOG_COLOR="0")
    cmd = ["systemd-analyze", "verify"]
    if user:
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        cmd.append("--user")
    return subprocess.run(cmd + [str(unit)], capture_output=True, text=True, env=env,
                          timeout=60)


def about(res: subprocess.CompletedProcess, name: str) -> list[str]:
    """Lines of systemd-analyze's output that concern `name`."""
    return [l for l in (res.stdout + res.stderr).splitlines() if name in l]


# ------------------------------------------------------------------ the unit


@pytest.mark.parametrize("user", [False, True], ids=["system-manager", "user-manager"])
def test_unit_passes_systemd_analyze_verify(build_dir, tmp_path, user):
    unit = unit_with_build_binary(build_dir, tmp_path / "unit")
    res = verify(unit, tmp_path, user)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not about(res, "davsyncd"), res.stdout + res.stderr


def test_verify_would_catch_a_broken_unit(build_dir, tmp_path):
    """The check above means something: a typo and a missing binary are reported."""
    unit = unit_with_build_binary(build_dir, tmp_path / "unit")
    text = unit.read_text().replace("RestartSec=", "RestartSecs=")
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={tmp_path}/no-such-davsyncd", text, flags=re.M)
    unit.write_text(text)
    res = verify(unit, tmp_path, user=True)
    out = res.stdout + res.stderr
    assert "RestartSecs" in out, out
    assert "no-such-davsyncd" in out, out


def test_unit_settings(build_dir, prefix):
    unit = read_ini(build_dir / "systemd" / "davsyncd.service")
    svc = unit["Service"]
    assert svc["Type"] == "dbus"
    assert svc["BusName"] == "io.github.davsyncd"
    assert svc["ExecStart"] == f"{prefix['prefix']}/{prefix['bindir']}/davsyncd"
    assert "-HUP" in svc["ExecReload"] and "$MAINPID" in svc["ExecReload"]
    assert unit["Install"]["WantedBy"] == "default.target"


def test_activation_file(build_dir, prefix):
    act = read_ini(build_dir / "dbus" / BUS_SERVICE)
    sec = act["D-BUS Service"]
    assert sec["Name"] == "io.github.davsyncd"
    assert sec["SystemdService"] == "davsyncd.service"
    assert sec["Exec"] == f"{prefix['prefix']}/{prefix['bindir']}/davsyncd"
    # Same program as the unit starts.
    unit = read_ini(build_dir / "systemd" / "davsyncd.service")
    assert unit["Service"]["ExecStart"] == sec["Exec"]


# ------------------------------------------------------------------ installing


def test_meson_install_places_every_file(build_dir, prefix, tmp_path):
    dest = tmp_path / "dest"
    res = subprocess.run(["meson", "install", "-C", str(build_dir), "--no-rebuild",
                          "--destdir", str(dest)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    root = dest / prefix["prefix"].lstrip("/")
    bindir = root / prefix["bindir"]
    datadir = root / prefix["datadir"]
    for name in ("davsyncd", "davsyncctl"):
        exe = bindir / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe

    # The user unit: lib/systemd/user under the prefix (or where systemd's
    # pkg-config file says, still under the prefix).
    units = sorted(p.relative_to(root) for p in root.rglob("davsyncd.service")
                   if p.parent.name == "user" and p.parent.parent.name == "systemd")
    assert units, sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert Path("lib/systemd/user/davsyncd.service") in units, units
    installed_unit = read_ini(root / units[0])
    exec_start = installed_unit["Service"]["ExecStart"]
    assert (dest / exec_start.lstrip("/")).is_file(), exec_start

    act_path = datadir / "dbus-1" / "services" / BUS_SERVICE
    assert act_path.is_file()
    act = read_ini(act_path)["D-BUS Service"]
    assert act["Name"] == "io.github.davsyncd"
    assert act["SystemdService"] == "davsyncd.service"
    assert (dest / act["Exec"].lstrip("/")).is_file(), act["Exec"]

    for iface in ("Manager1", "Account1", "Collection1"):
        xml = datadir / "dbus-1" / "interfaces" / f"io.github.davsyncd.{iface}.xml"
        assert xml.is_file(), xml
        repo_copy = Path(__file__).resolve().parents[2] / "dbus" / xml.name
        assert xml.read_text() == repo_copy.read_text()


# ------------------------------------------------------------------ activation


def test_dbus_activation_starts_the_daemon(build_dir, radicale, tmp_path):
    """A call to io.github.davsyncd on a bus that knows the activation file
    (Exec rewritten to the build's binary) starts davsyncd, which answers."""
    sampledata.seed_demo(radicale)
    env = DaemonEnv(tmp_path / "daemon", binary=davsyncd_path())
    cfg = env.write_config([account_for(radicale, "demo", sync_interval=3600)])
    services = tmp_path / "services"
    services.mkdir()
    text = (build_dir / "dbus" / BUS_SERVICE).read_text()
    text, n = re.subn(r"^Exec=\S+", f"Exec={davsyncd_path()} --config {cfg}", text, flags=re.M)
    assert n == 1
    (services / BUS_SERVICE).write_text(text)

    bus = PrivateBus(tmp_path / "bus", service_dirs=[services], daemon_env=env.env()).start()
    pid = None
    try:
        assert not bus.name_has_owner()
        # davsyncctl talks to a daemon it has never seen: the bus starts it.
        ctl = davsyncd_path().parent / "davsyncctl"
        res = subprocess.run([str(ctl), "--json", "status"], capture_output=True, text=True,
                             env=env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address}), timeout=60)
        assert res.returncode == 0, res.stderr + "\n" + bus.log_tail()
        doc = json.loads(res.stdout)
        assert doc["manager"]["ConfigPath"] == str(cfg)
        assert [a["Id"] for a in doc["accounts"]] == ["demo"]
        pid = bus.name_owner_pid()
        assert Path(f"/proc/{pid}/exe").resolve() == davsyncd_path().resolve()
        assert bus.busctl_get(ROOT_PATH, MANAGER, "Accounts") == [account_path("demo")]
        # It runs as a real daemon: it syncs the account in its own folders.
        wait_until(lambda: bus.get_property(account_path("demo"), ACCOUNT, "LastResult") == "ok",
                   30, "the activated daemon's first sync")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not bus.name_has_owner(), 15, "davsyncd to leave the bus")
        wait_until(lambda: not Path(f"/proc/{pid}").exists()
                   or "zombie" in Path(f"/proc/{pid}/status").read_text(), 15,
                   "davsyncd to exit")
        assert "stopping" in bus.log_path.read_text()
        pid = None
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        bus.stop()
