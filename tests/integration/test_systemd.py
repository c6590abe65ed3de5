"""The systemd user unit and the D-Bus activation file, as built and installed.

The files in the build folder point at the install prefix; the checks that
need a runnable binary use copies rewritten to the build's davsyncd.

The last section runs the installed unit under a real per-user systemd
manager (`systemd --user` for an unprivileged uid). A container where
systemd is not PID 1 cannot give one a login session, so the test makes
what user@.service and PID 1 would have made: a private mount namespace
with /run, /run/user/UID and /home/user, and a cgroup delegated to the
uid. It needs root and runs only where the host is not booted with
systemd (there it would meddle with the host's cgroups); elsewhere those
tests skip and say why.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

import pytest

from davtest.ports import UnusedServer
from davtest import sampledata
from davtest.daemon import DaemonEnv, account_for, davsyncd_path, wait_until, write_config
from davtest.dbus import ACCOUNT, MANAGER, ROOT_PATH, PrivateBus, account_path

BUS_SERVICE = "io.github.davsyncd.service"
SANDBOX_DROPIN = "davsyncd-sandbox.conf"
EX_CONFIG = 78

# Hardening that works in any per-user manager: prctl, seccomp, umask,
# rlimits, keyrings. Every one is in the unit itself.
UNIT_HARDENING = {
    "UMask": "0077",
    "LimitCORE": "0",
    "NoNewPrivileges": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "RestrictRealtime": "yes",
    "RestrictNamespaces": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "KeyringMode": "private",
}
# Settings that need a mount namespace (or, for the capability bounding set,
# privileges): in a user manager they need PrivateUsers=yes, which needs
# unprivileged user namespaces. Only the opt-in drop-in has them.
NEEDS_USER_NAMESPACE = {
    "PrivateUsers", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
    "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
    "ProtectClock", "ProtectHostname", "ProtectProc", "ProcSubset", "PrivateIPC", "PrivateMounts",
    "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths",
    "CapabilityBoundingSet", "AmbientCapabilities",
}


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


def unit_with_build_binary(build_dir: Path, dest: Path, source: Optional[Path] = None) -> Path:
    """The built unit (or `source`, an installed one), copied to `dest` with
    ExecStart= the build's binary."""
    text = (source or build_dir / "systemd" / "davsyncd.service").read_text()
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={davsyncd_path()}", text, flags=re.M)
    assert n == 1, text
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "davsyncd.service"
    path.write_text(text)
    return path


def verify(unit: Path, tmp_path: Path, user: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C.UTF-8", SYSTEMD_PAGER="cat", SYSTEMD_LOG_COLOR="0")
    cmd = ["systemd-analyze", "verify"]
    if not user:
        return subprocess.run(cmd + [str(unit)], capture_output=True, text=True, env=env, timeout=60)
    # A short runtime folder: other packages' user sockets (gpg-agent's) live
    # under it, and a socket path past 108 bytes makes systemd-analyze complain
    # about them with our temp path in the message.
    with tempfile.TemporaryDirectory(prefix="dsd-rt-") as runtime:
        os.chmod(runtime, 0o700)
        env["XDG_RUNTIME_DIR"] = runtime
        return subprocess.run(cmd + ["--user", str(unit)], capture_output=True, text=True, env=env, timeout=60)


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
    # Type=dbus alone would drop the daemon's STATUS= lines.
    assert svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == f"{prefix['prefix']}/{prefix['bindir']}/davsyncd"
    assert "-HUP" in svc["ExecReload"] and "$MAINPID" in svc["ExecReload"]
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"] == str(EX_CONFIG)
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


@pytest.fixture(scope="module")
def installed(build_dir, prefix, tmp_path_factory) -> dict:
    """`meson install --destdir` of the build, once: dest, root (dest +
    prefix), bindir, datadir, unit (the installed user unit) and dropin."""
    work = tmp_path_factory.mktemp("install")
    dest = work / "dest"
    # Not `meson install -C build`: other tests run from that shared folder
    # meanwhile, and meson install writes into it (meson-logs/install-log.txt).
    # A folder of our own holds a copy of the install plan and links to the
    # build's outputs, which are only read.
    own = work / "build"
    (own / "meson-private").mkdir(parents=True)
    (own / "meson-logs").mkdir()
    shutil.copy2(build_dir / "meson-private" / "install.dat", own / "meson-private")
    for entry in build_dir.iterdir():
        if entry.name not in ("meson-private", "meson-logs"):
            (own / entry.name).symlink_to(entry)
    res = subprocess.run(["meson", "install", "-C", str(own), "--no-rebuild",
                          "--destdir", str(dest)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    root = dest / prefix["prefix"].lstrip("/")
    units = sorted(p for p in root.rglob("davsyncd.service")
                   if p.parent.name == "user" and p.parent.parent.name == "systemd")
    datadir = root / prefix["datadir"]
    return {"dest": dest, "root": root, "bindir": root / prefix["bindir"], "datadir": datadir,
            "units": units, "unit": units[0] if units else None,
            "dropin": datadir / "doc" / "davsyncd" / SANDBOX_DROPIN}


def test_meson_install_places_every_file(installed):
    dest, root = installed["dest"], installed["root"]
    bindir, datadir = installed["bindir"], installed["datadir"]
    for name in ("davsyncd", "davsyncctl"):
        exe = bindir / name
        assert exe.is_file() and os.access(exe, os.X_OK), exe

    # The user unit: lib/systemd/user under the prefix (or where systemd's
    # pkg-config file says, still under the prefix).
    units = [p.relative_to(root) for p in installed["units"]]
    assert units, sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert Path("lib/systemd/user/davsyncd.service") in units, units
    installed_unit = read_ini(installed["unit"])
    exec_start = installed_unit["Service"]["ExecStart"]
    assert (dest / exec_start.lstrip("/")).is_file(), exec_start
    # The opt-in sandbox, next to the README the unit's Documentation= names.
    assert installed["dropin"].is_file()
    assert (installed["dropin"].parent / "README.md").is_file()

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
        # cmdline, not exe: davsyncd is not dumpable, so only root may read its exe link.
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert Path(argv0).resolve() == davsyncd_path().resolve()
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


# ------------------------------------------------------------------ hardening


def test_installed_unit_is_hardened_without_user_namespaces(installed):
    """The unit starts in any per-user manager: every setting works without
    a user namespace (systemd 252 refuses mount-namespace settings in a
    user unit unless PrivateUsers=yes, and Ubuntu restricts those)."""
    unit = read_ini(installed["unit"])
    svc = unit["Service"]
    for key, value in UNIT_HARDENING.items():
        assert svc.get(key) == value, (key, svc.get(key))
    assert svc["NotifyAccess"] == "main"
    assert svc["RestartPreventExitStatus"] == str(EX_CONFIG)
    assert "@system-service" in installed["unit"].read_text()
    assert "SystemCallErrorNumber=EPERM" in installed["unit"].read_text()
    assert not NEEDS_USER_NAMESPACE & set(svc), sorted(NEEDS_USER_NAMESPACE & set(svc))


def test_sandbox_dropin_keeps_the_home_folder_writable(installed):
    dropin = read_ini(installed["dropin"])
    svc = dropin["Service"]
    assert svc["PrivateUsers"] == "yes"  # what makes the rest work in a user manager
    for key in ("PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname"):
        assert svc.get(key) == "yes", key
    assert svc["CapabilityBoundingSet"] == ""
    # $HOME (data, state, config, any local_root under it) stays writable.
    assert "ProtectHome" not in svc
    assert svc["ProtectSystem"] in ("yes", "full") or "%h" in svc.get("ReadWritePaths", "")


@pytest.mark.parametrize("user", [False, True], ids=["system-manager", "user-manager"])
def test_unit_with_the_sandbox_dropin_passes_verify(installed, tmp_path, user):
    unit = unit_with_build_binary(None, tmp_path / "unit", source=installed["unit"])
    (unit.parent / "davsyncd.service.d").mkdir()
    shutil.copy(installed["dropin"], unit.parent / "davsyncd.service.d" / SANDBOX_DROPIN)
    res = verify(unit, tmp_path, user)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not about(res, "davsyncd"), res.stdout + res.stderr


def exposure(unit: Path) -> Optional[float]:
    """systemd-analyze's overall exposure for a unit file (--offline), or
    None when this systemd-analyze cannot analyse a file."""
    env = dict(os.environ, LC_ALL="C.UTF-8", SYSTEMD_PAGER="cat", SYSTEMD_LOG_COLOR="0")
    res = subprocess.run(["systemd-analyze", "security", "--no-pager", "--offline=true", str(unit)],
                         capture_output=True, text=True, env=env, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", res.stdout)
    if res.returncode != 0 and "offline" in res.stderr:
        return None
    assert m, res.stdout + res.stderr
    return float(m.group(1))


def test_security_exposure(installed, tmp_path):
    """The figures in the README (systemd 252). The analyser rates the unit
    as if it ran as root with every capability; in a user manager it runs
    as the user with none."""
    unit = unit_with_build_binary(None, tmp_path / "unit", source=installed["unit"])
    plain = exposure(unit)
    if plain is None:
        pytest.skip("systemd-analyze security has no --offline here (systemd < 250)")
    (unit.parent / "davsyncd.service.d").mkdir()
    shutil.copy(installed["dropin"], unit.parent / "davsyncd.service.d" / SANDBOX_DROPIN)
    sandboxed = exposure(unit)
    assert plain <= 6.2, plain
    assert sandboxed <= 2.1, sandboxed


# ------------------------------------------------------------------ exit status


@pytest.mark.parametrize("mode", [[], ["--once"], ["--discover"]], ids=["daemon", "once", "discover"])
@pytest.mark.parametrize("problem", ["missing", "invalid", "unknown-account"])
def test_configuration_error_exits_78(tmp_path, mode, problem):
    """EX_CONFIG, which the unit's RestartPreventExitStatus= knows: a restart
    cannot mend a configuration."""
    env = DaemonEnv(tmp_path / "daemon")
    cfg = env.config_path
    args = []
    with UnusedServer() as server:
        if problem == "invalid":
            cfg = env.write_config([{"id": "p", "url": server.url, "username": "a",
                                     "password_command": "true", "pasword": "x"}])
        elif problem == "unknown-account":
            cfg = env.write_config([{"id": "p", "url": server.url, "username": "a",
                                     "password_command": "true"}])
            args = ["--account", "nosuch"]
        res = env.run("--config", cfg, *args, *mode, timeout=60)
        assert res.returncode == EX_CONFIG, (res.returncode, res.stderr)
        assert str(cfg) in res.stderr, res.stderr
        # Neither the bus nor the server was needed to tell.
        assert "session bus" not in res.stderr, res.stderr
        assert server.connections() == 0


def test_help_documents_the_exit_status():
    res = subprocess.run([str(davsyncd_path()), "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    assert re.search(r"^\s*78\s.*configuration", res.stdout, re.M), res.stdout


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def unprivileged_root(prefix: str) -> Path:
    """A fresh folder that the nobody user can reach and own (pytest's own
    temporary folders are 0700, root's)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    return root


def test_the_daemon_is_not_dumpable():
    """It holds passwords: no core file, no ptrace or /proc/PID/mem by the
    user's other processes. The files in /proc/PID of a process that is not
    dumpable belong to root whoever runs it, so it runs as an unprivileged
    user here."""
    run_as = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        run_as = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    root = unprivileged_root("davsyncd-dumpable-")
    try:
        env = DaemonEnv(root)
        # password_command keeps it busy long enough to look at it.
        cfg = env.write_config([{"id": "p", "url": "http://127.0.0.1:9/", "username": "a",
                                 "password_command": "sleep 60; echo pw"}])
        if run_as:
            subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(root)], check=True)
        log = open(root / "davsyncd.log", "wb")
        proc = subprocess.Popen(run_as + [str(davsyncd_path()), "--config", str(cfg), "--once"],
                                env=env.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        try:
            wait_until(lambda: _children(proc.pid), 30, "davsyncd to start password_command")
            assert _uid(proc.pid) != 0
            assert os.stat(f"/proc/{proc.pid}/environ").st_uid == 0, "davsyncd is dumpable"
            # Its password_command is an ordinary process again after exec.
            child = _children(proc.pid)[0]
            assert os.stat(f"/proc/{child}/environ").st_uid == _uid(proc.pid)
        finally:
            DaemonEnv.stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ a real user manager


def _cgroup_hierarchies() -> list[Path]:
    """The folders of this process's cgroup in the hierarchies a user
    manager uses: the unified (cgroup2) one and, on hybrid hosts, the named
    name=systemd one."""
    mounts = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        point, (fstype, *rest) = pre.split()[4], post.split()
        if fstype == "cgroup2":
            mounts["0::"] = point
        elif fstype == "cgroup" and "name=systemd" in rest[-1].split(","):
            mounts["name=systemd"] = point
    out = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        key = "0::" if hid == "0" and not controllers else controllers
        if key in mounts:
            out.append(Path(mounts[key] + path))
    return out


def user_manager_unavailable() -> Optional[str]:
    """Why a per-user manager cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root to set up what PID 1 would (mount namespace, delegated cgroup)"
    if Path("/run/systemd/system").exists():
        return "the host runs systemd: its own user@.service is the place for this test"
    for tool in ("unshare", "setpriv", "systemctl", "systemd-analyze"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not Path("/lib/systemd/systemd").is_file():
        return "no /lib/systemd/systemd"
    if not Path("/usr/lib/systemd/user/dbus.socket").is_file():
        return "no user bus socket unit (Debian package dbus-user-session)"
    cgroups = _cgroup_hierarchies()
    if not cgroups or not all(os.access(c, os.W_OK) for c in cgroups):
        return "no writable cgroup hierarchy to delegate"
    exe = davsyncd_path()
    for parent in [exe] + list(exe.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            return f"{parent} is not reachable by other users (the manager runs as nobody)"
    return None


class UserManager:
    """`systemd --user` for the nobody user, as a login would start it.

    In a private mount namespace: a tmpfs on /run holding
    /run/systemd/system (systemd's "booted" mark), /run/systemd/unit-root
    (which PID 1 creates) and /run/user/UID (the runtime folder); /home/user
    is `home`. Its cgroup is a fresh folder, owned by the uid, under this
    process's own one: a manager must never run in a cgroup root, where it
    would take over every process of the machine.
    """

    def __init__(self, root: Path):
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        self.root = root
        self.home = root / "home"          # /home/user inside
        self.runtime = root / "runtime"    # /run/user/UID inside
        self.cgroups: list[Path] = []
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "UserManager":
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        for p in (self.home, self.runtime):
            os.chown(p, self.uid, self.gid)
        name = f"davsyncd-test-{os.getpid()}-{self.root.name}"
        for parent in _cgroup_hierarchies():
            d = parent / name
            d.mkdir()
            self.cgroups.append(d)
            for f in [d, *d.iterdir()]:
                os.chown(f, self.uid, self.gid)
        inside = {"HOME": "/home/user", "XDG_RUNTIME_DIR": f"/run/user/{self.uid}",
                  "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        script = " && ".join([
            "mount -t tmpfs -o mode=755 tmpfs /run",
            "mkdir -p /run/systemd/system /run/systemd/unit-root /run/user/%d" % self.uid,
            "chmod 700 /run/systemd/unit-root",
            f"mount --bind {self.runtime} /run/user/{self.uid}",
            "mount -t tmpfs -o mode=755 tmpfs /home", "mkdir /home/user",
            f"mount --bind {self.home} /home/user",
            *[f"echo $$ > {d}/cgroup.procs" for d in self.cgroups],
            f"exec setpriv --reuid={self.uid} --regid={self.gid} --clear-groups env -i "
            + " ".join(f"{k}={v}" for k, v in inside.items()) + " /lib/systemd/systemd --user",
        ])
        with open(self.root / "manager.log", "wb") as log:
            self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.proc.poll() is not None or (self.runtime / "systemd" / "private").exists(),
                   30, "the user manager's private socket")
        assert self.proc.poll() is None, (self.root / "manager.log").read_text()
        return self

    def run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A command as the user, talking to this manager."""
        return subprocess.run(["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                               "env", f"XDG_RUNTIME_DIR={self.runtime}", "SYSTEMD_PAGER=cat",
                               "SYSTEMD_LOG_COLOR=0", "LC_ALL=C.UTF-8", *cmd],
                              capture_output=True, text=True, timeout=timeout)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--user", "--no-pager", *args)

    def show(self, unit: str, *props: str) -> dict:
        res = self.systemctl("show", unit, "-p", ",".join(props))
        return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)

    def own(self) -> None:
        subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(self.home)], check=True)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.systemctl("exit")
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left in its cgroups (a unit that ignored SIGTERM), then the folders.
        for top in self.cgroups:
            for procs in top.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
        if self.proc:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for top in self.cgroups:
            folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]
            for folder in folders:
                wait_until(lambda: _rmdir(folder), 10, f"{folder} to empty")


def _rmdir(folder: Path) -> bool:
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


@pytest.fixture
def user_manager():
    why = user_manager_unavailable()
    if why:
        pytest.skip(f"no per-user systemd manager here: {why}")
    root = unprivileged_root("davsyncd-user-manager-")
    manager = UserManager(root)
    try:
        yield manager.start()
    finally:
        manager.stop()
        shutil.rmtree(root, ignore_errors=True)


def install_unit(manager: UserManager, installed: dict, *, sandbox: bool) -> None:
    """The installed unit (ExecStart= the build's binary) in the user's unit
    folder; its output goes to ~/davsyncd.log (no journald here)."""
    units = manager.home / ".config" / "systemd" / "user"
    unit_with_build_binary(None, units, source=installed["unit"])
    dropins = units / "davsyncd.service.d"
    dropins.mkdir()
    (dropins / "10-test-log.conf").write_text(
        "[Service]\nStandardOutput=append:/home/user/davsyncd.log\nStandardError=inherit\n")
    if sandbox:
        shutil.copy(installed["dropin"], dropins / SANDBOX_DROPIN)
        # PrivateTmp= hides /tmp and /var/tmp from the service, and the build
        # (CI's clone) may well live there: run a copy of the binary from $HOME.
        bindir = manager.home / "bin"
        bindir.mkdir(exist_ok=True)
        shutil.copy(davsyncd_path(), bindir / "davsyncd")
        os.chmod(bindir / "davsyncd", 0o755)
        unit = units / "davsyncd.service"
        unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/home/user/bin/davsyncd", unit.read_text(), flags=re.M))


def manager_config(manager: UserManager, server) -> None:
    """The default config path, a local_root elsewhere in $HOME, and the
    password from password_command (run inside the unit's sandbox)."""
    write_config(manager.home / ".config" / "davsyncd" / "config.json",
                 [account_for(server, "demo", local_root="~/Sync/demo", sync_interval=3600,
                              password_command=f"printf '%s\\n' '{server.password}'")])


def daemon_log(manager: UserManager) -> str:
    log = manager.home / "davsyncd.log"
    return log.read_text() if log.exists() else "(no log)"


def main_pid(manager: UserManager) -> int:
    return int(manager.show("davsyncd.service", "MainPID")["MainPID"])


def status_fields(pid: int) -> dict:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


def check_runs_and_syncs(manager: UserManager, radicale) -> int:
    """Starts the unit; returns its main pid once the account is synced."""
    res = manager.systemctl("start", "davsyncd.service")
    assert res.returncode == 0, res.stderr + daemon_log(manager)
    props = manager.show("davsyncd.service", "ActiveState", "SubState", "StatusText")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    # STATUS= reaches systemd (NotifyAccess=main).
    assert props["StatusText"].startswith("1 account(s)"), props
    # The data (local_root in $HOME) and the state are written.
    personal = manager.home / "Sync" / "demo" / "personal"
    wait_until(lambda: len(list(personal.glob("*.ics"))) == 5, 30,  # seed_demo: 5 events
               "the first sync under the unit: " + daemon_log(manager))
    state = manager.home / ".local" / "state" / "davsyncd" / "demo" / "collections"
    wait_until(lambda: (state / "personal.json").is_file(), 30, "the state file")
    # UMask=0077: nothing the daemon writes is readable by others.
    for path in [personal, *personal.iterdir(), state / "personal.json"]:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    return main_pid(manager)


def test_user_manager_runs_the_installed_unit(user_manager, installed, radicale):
    sampledata.seed_demo(radicale)
    install_unit(user_manager, installed, sandbox=False)
    manager_config(user_manager, radicale)
    user_manager.own()
    assert user_manager.systemctl("daemon-reload").returncode == 0

    pid = check_runs_and_syncs(user_manager, radicale)
    status = status_fields(pid)
    assert status["Uid"].split()[0] == str(user_manager.uid)
    assert status["Umask"] == "0077"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"        # filter mode: the syscall, address-family, W^X filters
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.M), limits
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0   # PR_SET_DUMPABLE 0

    # `systemctl --user reload` re-reads the configuration.
    assert user_manager.systemctl("reload", "davsyncd.service").returncode == 0
    wait_until(lambda: "configuration reloaded" in daemon_log(user_manager), 15, "the reload")
    assert main_pid(user_manager) == pid

    # The analyser, on the running manager (the figure in the README).
    res = user_manager.run("systemd-analyze", "security", "--user", "--no-pager", "davsyncd.service")
    m = re.search(r"Overall exposure level for davsyncd.service: ([\d.]+)", res.stdout)
    assert m and float(m.group(1)) <= 6.2, res.stdout + res.stderr

    assert user_manager.systemctl("stop", "davsyncd.service").returncode == 0
    props = user_manager.show("davsyncd.service", "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props


def test_user_manager_does_not_restart_on_a_configuration_error(user_manager, installed):
    install_unit(user_manager, installed, sandbox=False)
    config = user_manager.home / ".config" / "davsyncd" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text('{"accounts": [{"id": "demo", "url": "https://dav.example.org/", "pasword": "x"}]}\n')
    user_manager.own()
    assert user_manager.systemctl("daemon-reload").returncode == 0

    res = user_manager.systemctl("start", "davsyncd.service")
    assert res.returncode != 0
    props = user_manager.show("davsyncd.service", "ActiveState", "SubState", "Result", "ExecMainStatus",
                              "NRestarts")
    # "failed" at once, not "auto-restart" (Restart=on-failure would retry every 10 s).
    assert props == {"ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
                     "ExecMainStatus": str(EX_CONFIG), "NRestarts": "0"}, props
    assert "pasword" in daemon_log(user_manager)


def test_user_manager_runs_the_unit_with_the_sandbox_dropin(user_manager, installed, radicale):
    sampledata.seed_demo(radicale)
    install_unit(user_manager, installed, sandbox=True)
    manager_config(user_manager, radicale)
    user_manager.own()
    assert user_manager.systemctl("daemon-reload").returncode == 0

    pid = check_runs_and_syncs(user_manager, radicale)
    status = status_fields(pid)
    assert status["CapBnd"] == "0000000000000000"
    mounts = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    def mount_at(point):
        return [m for m in mounts if m.split()[4] == point]
    # A private /tmp, a /dev of basic devices, a read-only /usr; $HOME as it is.
    assert any("systemd-private-" in m.split()[3] for m in mount_at("/tmp")), mount_at("/tmp")
    assert any(" - tmpfs " in m for m in mount_at("/dev")), mount_at("/dev")
    assert any(m.split()[5].startswith("ro") for m in mount_at("/usr")), mount_at("/usr")
    assert not any(m.split()[4].startswith("/home") and m.split()[5].startswith("ro") for m in mounts)
