"""Sync on resume from suspend and on network return (issue 14).

davsyncd watches the system bus: logind's PrepareForSleep(false) and
NetworkManager's StateChanged to connected-global (70) each make every
account sync once. Here the system bus is a private dbus-daemon with
python-dbusmock's logind and NetworkManager templates (davtest.systembus),
the session bus another private one, and the accounts point at real Radicale
servers that log every request, so that a sync is counted where it lands:
a sync of an unchanged collection is one REPORT (sync-collection) on it.

"Exactly one" is proved by waiting until every account has finished a sync
and is idle with nothing pending (NextSync is the hourly poll again), and
then counting. "Nothing" is proved by waiting for davsyncd's own log line
saying it saw the event (the line is written in the same callback that
would have asked for the sync) and then seeing no sync pending or started.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from davtest.daemon import DaemonEnv, account_for
from davtest.dbus import account_path
from davtest.servers import Radicale
from davtest.systembus import (NM_STATE_ASLEEP, NM_STATE_CONNECTED_GLOBAL, NM_STATE_CONNECTED_SITE,
                               NM_STATE_DISCONNECTED, SystemBus)
from test_daemon import INTERVAL, SYNC_TIMEOUT, RunningDaemon

ACCOUNTS = ("one", "two")
COLLECTION = "work"


@pytest.fixture
def sysbus(tmp_path):
    sb = SystemBus(tmp_path / "sysbus").start()
    yield sb
    sb.stop()


@pytest.fixture
def servers(tmp_path):
    """One Radicale per account, logging every request, each with one calendar."""
    started = {}
    try:
        for name in ACCOUNTS:
            srv = Radicale(tmp_path / f"radicale-{name}", log_level="info").start()
            started[name] = srv
            srv.make_calendar(COLLECTION, f"Work of {name}")
        yield started
    finally:
        for srv in started.values():
            srv.stop()


class Rig:
    """davsyncd (--debug) with two accounts, its session bus and a monitor."""

    def __init__(self, bus, env: DaemonEnv, servers: dict):
        self.bus = bus
        self.servers = servers
        config = env.write_config([account_for(srv, name, sync_interval=INTERVAL)
                                   for name, srv in servers.items()])
        self.mon = bus.monitor()
        self.daemon = RunningDaemon(bus, env, config, "davsyncd.log", args=("--debug",))
        for name in servers:
            self.daemon.wait_synced(name)
        self.wait_quiet()

    def collection_path(self, name: str) -> str:
        return f"/{self.servers[name].user}/{COLLECTION}/"

    def reports(self) -> dict[str, int]:
        """Syncs each server saw: REPORTs on its collection."""
        return {name: srv.requests_logged("REPORT", self.collection_path(name))
                for name, srv in self.servers.items()}

    def syncs_started(self, name: str, start: int) -> list:
        return self.mon.find(lambda s: s.path == account_path(name) and s.member == "SyncStarted",
                             start)

    def quiet(self, name: str) -> bool:
        """Idle, and the next planned sync is the poll (nothing pending)."""
        a = self.daemon.account(name)
        soon = (time.time() + INTERVAL / 2) * 1e6
        return a["State"] == "idle" and a["NextSync"] > soon

    def wait_quiet(self) -> None:
        for name in self.servers:
            self.daemon.wait(lambda: self.quiet(name), SYNC_TIMEOUT,
                             f"account '{name}' to be idle with nothing pending")

    def wait_log(self, text: str, after: int) -> None:
        self.daemon.wait(lambda: text in self.daemon.log()[after:], SYNC_TIMEOUT,
                         f"'{text}' in davsyncd's log")

    def expect_one_sync_each(self, start: int, before: dict[str, int], reason: str) -> None:
        """Every account starts a sync for `reason`, then settles; each server
        saw exactly one more sync and each account started exactly one."""
        for name in self.servers:
            self.mon.wait_for(lambda s: s.path == account_path(name) and s.member == "SyncFinished",
                              SYNC_TIMEOUT, f"SyncFinished of '{name}'", start)
        self.wait_quiet()
        assert self.reports() == {name: n + 1 for name, n in before.items()}, self.daemon.log()[-3000:]
        for name in self.servers:
            started = self.syncs_started(name, start)
            assert len(started) == 1, [s.raw for s in started]
            assert reason in started[0].args[1], started[0].raw

    def expect_nothing(self, start: int, before: dict[str, int]) -> None:
        """No account has a sync pending or started since `start`."""
        for name in self.servers:
            assert self.quiet(name), self.daemon.account(name)
            assert self.syncs_started(name, start) == []
        assert self.reports() == before


@pytest.fixture
def rig(bus, sysbus, daemon_env, servers):
    daemon_env.system_bus_address = sysbus.address
    sysbus.start_logind()
    sysbus.start_network_manager()
    r = Rig(bus, daemon_env, servers)
    yield r
    r.daemon.stop()


def test_resume_syncs_every_account_once(rig, sysbus):
    # With NetworkManager there, the routing table is not watched too.
    rig.wait_log("system bus: logind, NetworkManager; syncing on resume and network return", 0)
    assert "routing table" not in rig.daemon.log()
    start, before, log_at = rig.mon.mark(), rig.reports(), len(rig.daemon.log())
    sysbus.prepare_for_sleep(True)
    sysbus.prepare_for_sleep(False)
    rig.expect_one_sync_each(start, before, "resume")
    assert "resumed from suspend: syncing 2 account(s)" in rig.daemon.log()[log_at:]


def test_network_return_syncs_every_account_once(rig, sysbus):
    start, before, log_at = rig.mon.mark(), rig.reports(), len(rig.daemon.log())
    sysbus.set_network_state(NM_STATE_DISCONNECTED)
    sysbus.set_network_state(NM_STATE_CONNECTED_GLOBAL)
    rig.expect_one_sync_each(start, before, "network")
    assert "the network is back: syncing 2 account(s)" in rig.daemon.log()[log_at:]


def test_network_flaps_coalesce(rig, sysbus):
    start, before = rig.mon.mark(), rig.reports()
    sysbus.set_network_state(*[NM_STATE_DISCONNECTED, NM_STATE_CONNECTED_GLOBAL] * 3)
    rig.expect_one_sync_each(start, before, "network")


def test_going_to_sleep_alone_syncs_nothing(rig, sysbus):
    start, before, log_at = rig.mon.mark(), rig.reports(), len(rig.daemon.log())
    sysbus.prepare_for_sleep(True)
    rig.wait_log("going to sleep", log_at)
    rig.expect_nothing(start, before)


def test_network_states_short_of_global_sync_nothing(rig, sysbus):
    start, before, log_at = rig.mon.mark(), rig.reports(), len(rig.daemon.log())
    for state in (NM_STATE_DISCONNECTED, NM_STATE_CONNECTED_SITE):
        sysbus.set_network_state(state)
        rig.wait_log(f"NetworkManager state {state}:", log_at)
    rig.expect_nothing(start, before)


def test_resume_without_network_waits_for_it(rig, sysbus):
    """NetworkManager sleeps before a suspend; the resume syncs once the
    network is global again, and only then."""
    sysbus.set_network_state(NM_STATE_ASLEEP)
    sysbus.prepare_for_sleep(True)
    start, before, log_at = rig.mon.mark(), rig.reports(), len(rig.daemon.log())
    sysbus.prepare_for_sleep(False)
    rig.wait_log("resumed from suspend: waiting for the network", log_at)
    rig.expect_nothing(start, before)
    sysbus.set_network_state(NM_STATE_CONNECTED_GLOBAL)
    rig.expect_one_sync_each(start, before, "network")


def test_system_bus_without_either_service(bus, sysbus, daemon_env, servers):
    daemon_env.system_bus_address = sysbus.address
    r = Rig(bus, daemon_env, servers)
    try:
        r.wait_log("neither logind nor NetworkManager on the system bus: no sync on resume", 0)
        log = r.daemon.log()
        assert log.count("no sync on resume") == 1, log
        # The network's return is still seen, in the routing table.
        assert "no NetworkManager: watching the routing table" in log, log
    finally:
        r.daemon.stop()


def test_no_system_bus_at_all(bus, daemon_env, servers):
    """DaemonEnv's default system bus address has no bus behind it."""
    assert not Path(daemon_env.system_bus_address.removeprefix("unix:path=")).exists()
    r = Rig(bus, daemon_env, servers)   # started, and synced every account
    try:
        log = r.daemon.log()
        assert log.count("no system bus") == 1, log
        assert log.count("no sync on resume") == 1, log
        assert "no NetworkManager: watching the routing table" in log, log
        # A user's Sync() still works as ever.
        start, before = r.mon.mark(), r.reports()
        r.bus.call(account_path("one"), "io.github.davsyncd.Account1.Sync")
        r.mon.wait_for(lambda s: s.path == account_path("one") and s.member == "SyncFinished",
                       SYNC_TIMEOUT, "SyncFinished", start)
        r.wait_quiet()
        assert r.reports() == {"one": before["one"] + 1, "two": before["two"]}
    finally:
        r.daemon.stop()


def test_system_bus_going_away_leaves_the_daemon_running(rig, sysbus):
    """The system bus ends (dbus-daemon stopped): davsyncd stays up, serves
    the session bus, and falls back to the routing table for the network."""
    sysbus.stop()
    rig.wait_log("lost the system bus", 0)
    rig.wait_log("no NetworkManager: watching the routing table", 0)
    start, before = rig.mon.mark(), rig.reports()
    rig.bus.call(account_path("two"), "io.github.davsyncd.Account1.Sync")
    rig.mon.wait_for(lambda s: s.path == account_path("two") and s.member == "SyncFinished",
                     SYNC_TIMEOUT, "SyncFinished", start)
    rig.wait_quiet()
    assert rig.reports() == {"one": before["one"], "two": before["two"] + 1}


def test_resume_syncs_anyway_when_the_network_stays_short_of_global(rig, sysbus):
    """A LAN-only server may be reachable at connected-site: after 30 s
    without connected-global the resume syncs anyway, once."""
    sysbus.set_network_state(NM_STATE_ASLEEP)
    sysbus.prepare_for_sleep(True)
    start, before, log_at = rig.mon.mark(), rig.reports(), len(rig.daemon.log())
    sysbus.prepare_for_sleep(False)
    sysbus.set_network_state(NM_STATE_CONNECTED_SITE)
    rig.daemon.wait(lambda: "within 30 s of the resume" in rig.daemon.log()[log_at:], 60,
                    "the resume to stop waiting for the network")
    rig.expect_one_sync_each(start, before, "resume")
