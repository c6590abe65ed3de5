"""The test harness itself: servers come up, seed data is visible over
WebDAV, servers are isolated from each other and cleaned up, helpers behave."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import pytest

from davtest import sampledata, servers
from davtest.daemon import DaemonEnv, account_for, wait_until, write_config
from davtest.servers import NS_CALDAV, NS_CARDDAV, NS_DAV, Radicale, ServerError, Xandikos, clark


def test_server_answers_options_with_dav_classes(dav_server):
    r = dav_server.request("OPTIONS", "/")
    assert r.status_code == 200
    dav = r.headers.get("DAV", "")
    assert "calendar-access" in dav and "addressbook" in dav
    assert dav_server.base_url == f"http://127.0.0.1:{dav_server.port}/"
    assert dav_server.is_running()


def test_current_user_principal_and_homes(dav_server):
    ms = dav_server.propfind("/", [clark(NS_DAV, "current-user-principal")])
    (props,) = ms.values()
    principal = props[clark(NS_DAV, "current-user-principal")].findtext(clark(NS_DAV, "href"))
    assert dav_server.url(principal) == dav_server.principal_url

    ms = dav_server.propfind(dav_server.principal_url, [
        clark(NS_CALDAV, "calendar-home-set"), clark(NS_CARDDAV, "addressbook-home-set")])
    (props,) = ms.values()
    cal_home = props[clark(NS_CALDAV, "calendar-home-set")].findtext(clark(NS_DAV, "href"))
    ab_home = props[clark(NS_CARDDAV, "addressbook-home-set")].findtext(clark(NS_DAV, "href"))
    assert dav_server.url(cal_home) == dav_server.calendar_home_url
    assert dav_server.url(ab_home) == dav_server.addressbook_home_url


def test_radicale_requires_the_password(radicale):
    assert radicale.request("PROPFIND", radicale.home_url, depth=0, auth=False).status_code == 401
    r = radicale.session.request("PROPFIND", radicale.home_url, headers={"Depth": "0"},
                                 auth=(radicale.user, "wrong-" + radicale.password), timeout=30)
    assert r.status_code == 401
    assert radicale.request("PROPFIND", radicale.home_url, depth=0).status_code == 207
    assert radicale.password not in radicale.log_path.read_text()


def test_xandikos_defaults_exist(xandikos):
    cols = xandikos.list_collections()
    assert cols["/alice/calendars/calendar/"]["kind"] == "calendar"
    assert cols["/alice/contacts/addressbook/"]["kind"] == "addressbook"
    assert set(xandikos.default_collections) <= set(cols)


def test_seed_demo_visible_via_propfind(dav_server):
    paths = sampledata.seed_demo(dav_server)
    cols = dav_server.list_collections()
    personal, tasks, contacts = cols[paths["personal"]], cols[paths["tasks"]], cols[paths["contacts"]]

    assert personal["kind"] == "calendar"
    assert personal["displayname"] == "Personal"
    assert personal["color"].upper() == "#1E90FF"
    assert "VEVENT" in personal["components"]
    assert tasks["displayname"] == "Tasks"
    assert "VTODO" in tasks["components"]
    if dav_server.restricts_components:
        assert personal["components"] == ["VEVENT"]
        assert tasks["components"] == ["VTODO"]
    assert contacts["kind"] == "addressbook"
    assert contacts["displayname"] == "Contacts"
    if dav_server.supports_description:
        assert personal["description"] == "Demo calendar"
        assert contacts["description"] == "Demo contacts"
    for info in (personal, tasks, contacts):
        assert info["sync_token"], info

    assert len(dav_server.list_hrefs(paths["personal"])) == 5
    assert len(dav_server.list_hrefs(paths["tasks"])) == 2
    assert len(dav_server.list_hrefs(paths["contacts"])) == 5
    body, etag = dav_server.get_item(paths["contacts"], sampledata.filename_contact(0, "demo"))
    assert f"UID:{sampledata.uid_contact(0, 'demo')}" in body
    assert etag


def test_item_lifecycle_changes_sync_token(dav_server):
    cal = dav_server.make_calendar("life", "Life", "#00AA00")
    token0 = dav_server.sync_token(cal)
    etag = dav_server.put_item(cal, "e.ics", sampledata.make_event(1))
    assert etag
    token1 = dav_server.sync_token(cal)
    assert token1 and token1 != token0
    assert dav_server.list_items(cal) == {cal + "e.ics": etag}

    with pytest.raises(ServerError, match="412"):   # If-None-Match: * on an existing item
        dav_server.put_item(cal, "e.ics", sampledata.make_event(1))
    with pytest.raises(ServerError, match="412"):   # stale If-Match
        dav_server.put_item(cal, "e.ics", sampledata.make_event(1), etag='"not-the-etag"')

    etag2 = dav_server.put_item(cal, "e.ics", sampledata.make_event(1, summary="Moved"), etag=etag)
    assert etag2 != etag
    assert "SUMMARY:Moved" in dav_server.get_item(cal, "e.ics")[0]
    dav_server.delete_item(cal, "e.ics", etag2)
    assert dav_server.list_hrefs(cal) == []
    # Not "!= token0": Xandikos tokens are git tree ids, so getting back to
    # the same content (an empty collection) gives back the same token.
    assert dav_server.sync_token(cal) != token1


def test_servers_get_different_ports_and_are_isolated(server_factory):
    a = server_factory("radicale")
    b = server_factory("radicale")
    c = server_factory("xandikos")
    assert len({a.port, b.port, c.port}) == 3
    assert a.password != b.password
    a.make_calendar("only-in-a", "A")
    assert "/alice/only-in-a/" in a.list_collections()
    assert "/alice/only-in-a/" not in b.list_collections()
    # b's credentials do not open a.
    r = a.session.request("PROPFIND", a.home_url, headers={"Depth": "0"},
                          auth=(b.user, b.password), timeout=30)
    assert r.status_code == 401


@pytest.mark.parametrize("cls", [Radicale, Xandikos], ids=["radicale", "xandikos"])
def test_process_group_is_gone_after_exit(cls, tmp_path):
    with cls(tmp_path / "srv") as srv:
        pid, port = srv.pid, srv.port
        assert servers.port_is_listening(port)
        assert os.getpgid(pid) == pid
    assert srv.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not servers.port_is_listening(port)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The log file stays for post-mortems.
    assert srv.log_path.exists()


def test_own_workdir_is_removed_by_cleanup():
    srv = Radicale()
    try:
        srv.start()
        workdir = srv.workdir
        assert workdir.is_dir()
    finally:
        srv.cleanup()
    assert not workdir.exists()


def test_start_retries_when_the_port_is_taken(tmp_path, monkeypatch):
    # Something else already listens on the first port handed out.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    ports = iter([taken])
    real = servers.free_port
    monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real())
    try:
        with Radicale(tmp_path / "srv") as srv:
            assert srv.port != taken
            assert srv.request("PROPFIND", srv.home_url, depth=0).status_code == 207
        assert f"port {taken}" in srv.log_path.read_text()
    finally:
        blocker.close()


def test_start_fails_clearly_when_the_server_cannot_start(tmp_path, monkeypatch):
    monkeypatch.setattr(Radicale, "_command",
                        lambda self, port: [servers.PYTHON, "-c", "import sys; sys.exit(3)"])
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="exited with status 3"):
        Radicale(tmp_path / "srv").start()
    assert time.monotonic() - t0 < 25


# ---------- sample data ----------

def _assert_wellformed(text: str, begin: str):
    assert text.endswith("\r\n")
    lines = text.split("\r\n")[:-1]
    assert "\n" not in "".join(lines)
    assert lines[0] == f"BEGIN:{begin}" and lines[-1] == f"END:{begin}"
    assert all(len(line.encode()) <= 75 for line in lines)
    return lines


def test_sample_event_is_valid_and_deterministic():
    ev = sampledata.make_event(3, "x")
    assert ev == sampledata.make_event(3, "x")
    assert ev != sampledata.make_event(4, "x") and ev != sampledata.make_event(3, "y")
    lines = _assert_wellformed(ev, "VCALENDAR")
    for prop in ("VERSION:2.0", "BEGIN:VEVENT", f"UID:{sampledata.uid_event(3, 'x')}",
                 "DTSTAMP:", "DTSTART:", "DTEND:", "SUMMARY:", "END:VEVENT"):
        assert any(line.startswith(prop) for line in lines), prop


def test_sample_todo_and_contact_are_valid():
    todo = _assert_wellformed(sampledata.make_todo(1, "x"), "VCALENDAR")
    assert "BEGIN:VTODO" in todo and f"UID:{sampledata.uid_todo(1, 'x')}" in todo
    card = _assert_wellformed(sampledata.make_contact(2, "x"), "VCARD")
    assert card[1] == "VERSION:3.0"
    for prop in ("UID:", "FN:", "N:", "EMAIL"):
        assert any(line.startswith(prop) for line in card), prop
    names = {sampledata.contact_name(i) for i in range(100)}
    assert len(names) == 100


# ---------- daemon helpers ----------

def test_wait_until_returns_value_and_times_out_clearly():
    t0 = time.monotonic()
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, 5, "three calls") is True
    with pytest.raises(TimeoutError, match=r"waiting for the moon.*ValueError: no"):
        wait_until(lambda: (_ for _ in ()).throw(ValueError("no")), 0.3, "the moon")
    assert time.monotonic() - t0 < 5


def test_config_writing(tmp_path, radicale):
    env = DaemonEnv(tmp_path / "d", binary="/bin/true")
    acc = account_for(radicale, "personal")
    path = env.write_config([acc])
    assert path == tmp_path / "d" / "config" / "davsyncd" / "config.json"
    doc = json.loads(path.read_text())
    assert doc == {"accounts": [{"id": "personal", "url": radicale.home_url,
                                 "username": "alice", "password": radicale.password}]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    acc2 = account_for(radicale, "cmd", password_command="echo hi", url=radicale.base_url)
    assert "password" not in acc2 and acc2["password_command"] == "echo hi"
    other = write_config(tmp_path / "x.json", [acc2], push_distributor="org.example")
    assert json.loads(other.read_text())["push_distributor"] == "org.example"
    e = env.env()
    assert e["XDG_STATE_HOME"] == str(env.state_home) and "DBUS_SESSION_BUS_ADDRESS" not in e
    assert env.run("ignored").returncode == 0


def test_monitor_raises_on_a_signal_it_cannot_parse(tmp_path):
    """A signal line the GVariant parser cannot read fails the wait at once,
    naming the line, instead of turning into a silent timeout."""
    import io
    import threading
    import types

    from davtest.dbus import Monitor

    mon = Monitor.__new__(Monitor)
    mon.bus = types.SimpleNamespace(watchdog=None)
    mon.log_path = tmp_path / "monitor.log"
    mon.signals, mon.lines, mon.parse_errors = [], [], []
    mon._cv = threading.Condition()
    mon.proc = types.SimpleNamespace(stdout=io.StringIO(
        "/io/github/davsyncd: io.github.davsyncd.Manager1.Good ('a', 1)\n"
        "/io/github/davsyncd: io.github.davsyncd.Manager1.Odd (b'bytes', 1)\n"))
    mon._read()
    assert [s.member for s in mon.signals] == ["Good"]
    with pytest.raises(AssertionError, match="cannot parse the signal.*Odd"):
        mon.find(lambda s: True)
    # A timeout would say "timed out ... waiting for", not "cannot parse".
    with pytest.raises(AssertionError, match="cannot parse"):
        mon.wait_for(lambda s: s.member == "Odd", timeout=120)
