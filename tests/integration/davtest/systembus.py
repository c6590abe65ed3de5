"""A private system bus with python-dbusmock's logind and NetworkManager.

    sysbus = SystemBus(tmp_path / "sysbus").start()
    sysbus.start_logind()                       # org.freedesktop.login1 (dbusmock template)
    sysbus.start_network_manager()              # org.freedesktop.NetworkManager, State 70
    env = daemon_env.env({"DBUS_SYSTEM_BUS_ADDRESS": sysbus.address})
    sysbus.prepare_for_sleep(False)             # logind: "resumed"
    sysbus.set_network_state(NM_STATE_CONNECTED_GLOBAL)
    sysbus.stop()

The bus is a davtest.dbus.PrivateBus (a dbus-daemon of our own); only its
role differs: the daemon under test gets its address as
DBUS_SYSTEM_BUS_ADDRESS. The mocks are the Debian package python3-dbusmock
(its templates follow the real services' interfaces), run with
/usr/bin/python3 in their own process groups.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import dbus

from davtest.daemon import wait_until
from davtest.dbus import PrivateBus
from davtest.procs import stop_process_group

PYTHON = "/usr/bin/python3"

LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER = "org.freedesktop.login1.Manager"
NETWORK_MANAGER = "org.freedesktop.NetworkManager"
NETWORK_MANAGER_PATH = "/org/freedesktop/NetworkManager"
MOCK = "org.freedesktop.DBus.Mock"

# NMState (NetworkManager's nm-dbus-interface.h)
NM_STATE_ASLEEP = 10
NM_STATE_DISCONNECTED = 20
NM_STATE_CONNECTING = 40
NM_STATE_CONNECTED_LOCAL = 50
NM_STATE_CONNECTED_SITE = 60
NM_STATE_CONNECTED_GLOBAL = 70

START_TIMEOUT = 20.0


class SystemBus:
    def __init__(self, workdir: os.PathLike | str):
        self.workdir = Path(workdir)
        self.bus = PrivateBus(self.workdir)
        self.mocks: dict[str, subprocess.Popen] = {}

    @property
    def address(self) -> str:
        return self.bus.address

    def start(self) -> "SystemBus":
        self.bus.start()
        return self

    def _start_mock(self, template: str, name: str) -> subprocess.Popen:
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = self.bus.address
        log = open(self.workdir / f"mock-{template}.log", "ab")
        try:
            proc = subprocess.Popen([PYTHON, "-m", "dbusmock", "--system", "--template", template],
                                    env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.mocks[template] = proc

        def up():
            if proc.poll() is not None:
                raise AssertionError(f"dbusmock {template} exited with {proc.returncode}: "
                                     + (self.workdir / f"mock-{template}.log").read_text())
            return self.bus.name_has_owner(name)
        wait_until(up, START_TIMEOUT, f"dbusmock {template} to own {name}")
        return proc

    def start_logind(self) -> None:
        self._start_mock("logind", LOGIND)

    def start_network_manager(self) -> None:
        self._start_mock("networkmanager", NETWORK_MANAGER)

    def prepare_for_sleep(self, going_to_sleep: bool) -> None:
        """logind's PrepareForSleep signal, from logind's connection."""
        self.bus.gdbus_call(LOGIND, LOGIND_PATH, f"{MOCK}.EmitSignal", LOGIND_MANAGER,
                            "PrepareForSleep", "b", f"[<{'true' if going_to_sleep else 'false'}>]")

    def set_network_state(self, *states: int) -> None:
        """NetworkManager's State property and StateChanged signal (the
        template's SetGlobalConnectionState does both), once per state, in
        order. Several states go out from one connection within
        milliseconds, as a flapping network sends them."""
        conn = dbus.bus.BusConnection(self.bus.address)
        try:
            nm = conn.get_object(NETWORK_MANAGER, NETWORK_MANAGER_PATH, introspect=False)
            for state in states:
                nm.SetGlobalConnectionState(dbus.UInt32(state), dbus_interface=MOCK, timeout=30)
        finally:
            conn.close()

    def stop(self) -> None:
        for proc in self.mocks.values():
            stop_process_group(proc, 5)
        self.mocks.clear()
        self.bus.stop()

    def __enter__(self) -> "SystemBus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["SystemBus", "NM_STATE_ASLEEP", "NM_STATE_DISCONNECTED",
           "NM_STATE_CONNECTING", "NM_STATE_CONNECTED_LOCAL", "NM_STATE_CONNECTED_SITE",
           "NM_STATE_CONNECTED_GLOBAL"]
