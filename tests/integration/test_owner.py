"""One owner of the state folder: the daemon holds <state>/lock; `--once`
beside it asks the daemon to sync and prints the daemon's lines, or
refuses with EX_TEMPFAIL (75) naming the daemon; a second daemon refuses.
Real Radicale with the demo data, a private bus.
"""

from __future__ import annotations

from davtest import sampledata as sd
from davtest.vdir import parse_sync_lines
from test_daemon import DEMO, demo, demo_config, start_daemon  # noqa: F401  (fixtures)

EX_TEMPFAIL = 75


def test_once_beside_the_daemon_is_done_by_the_daemon(radicale, daemon_env, bus, demo):
    before = demo.account()["LastSync"]
    radicale.put_item("/alice/personal/", "extra.ics", sd.make_event(42, "owner", summary="from the server"))
    res = daemon_env.run("--config", demo.config, "--once", extra_env={"DBUS_SESSION_BUS_ADDRESS": bus.address})
    assert res.returncode == 0, res.stderr
    lines = parse_sync_lines(res.stdout)
    assert set(lines) == {f"{DEMO}/personal", f"{DEMO}/tasks", f"{DEMO}/contacts"}, res.stdout
    assert lines[f"{DEMO}/personal"].down == 1
    assert f"pid {demo.pid}" in res.stderr and "asking it to sync" in res.stderr
    # The daemon did it (and logged it): a user sync, after the one at start.
    assert demo.account()["LastSync"] > before
    assert "demo/personal: 1 down" in demo.log()


def test_once_without_a_way_to_the_daemon_refuses(radicale, daemon_env, bus, demo):
    for extra in ([], ["--force-delete"]):
        res = daemon_env.run("--config", demo.config, "--once", *extra,
                             extra_env={"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"} if not extra
                             else {"DBUS_SESSION_BUS_ADDRESS": bus.address})
        assert res.returncode == EX_TEMPFAIL, (extra, res.stdout, res.stderr)
        assert f"pid {demo.pid}" in res.stderr, res.stderr
        assert res.stdout == ""


def test_a_second_daemon_on_the_same_state_refuses(radicale, daemon_env, bus, demo):
    res = daemon_env.run("--config", demo.config, extra_env={"DBUS_SESSION_BUS_ADDRESS": bus.address}, timeout=30)
    assert res.returncode == EX_TEMPFAIL, res.stderr
    assert f"another davsyncd (pid {demo.pid})" in res.stderr
    assert demo.proc.poll() is None  # the first one is untouched
    assert bus.name_owner_pid() == demo.pid
