"""One account in trouble never stops the daemon or the other accounts.

- A callback that throws (injected by the test-only hook
  DAVSYNCD_TEST_THROW_AFTER_SYNC=<account>) puts that account into an error
  state; the daemon stays on the bus and the other account syncs.
- A state folder the daemon cannot write (made immutable with chattr +i,
  which stops root too) gives the account an error naming the path, and
  the sync succeeds again once the folder is writable.

Real Radicale, a private dbus-daemon; waits are conditions with deadlines.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.dbus import ACCOUNT as ACCOUNT_IFACE, account_path
from davtest.vdir import local_by_uid, replace_title, server_by_uid, title_of, vdir_folder, write_local
from test_daemon import INTERVAL, start_daemon  # noqa: F401  (fixture)


def _accounts(server, *ids):
    out = []
    for i, acc in enumerate(ids):
        path = server.make_calendar(f"cal-{acc}", f"Calendar {acc}")
        server.put_item(path, f"e{i}.ics", sd.make_event(i, acc))
        out.append(account_for(server, acc, sync_interval=INTERVAL,
                               collections={"include": [f"cal-{acc}"]}))
    return out


def _sync(bus, d, account: str) -> dict:
    before = d.account(account)["LastSync"]
    bus.call(account_path(account), f"{ACCOUNT_IFACE}.Sync")
    return d.wait(lambda: (a := d.account(account))["LastSync"] > before and a["State"] != "syncing" and a,
                  30, f"a sync of {account}")


def test_an_exception_in_a_callback_stays_with_its_account(radicale, daemon_env, bus, start_daemon, monkeypatch):
    monkeypatch.setenv("DAVSYNCD_TEST_THROW_AFTER_SYNC", "broken")
    d = start_daemon(daemon_env.write_config(_accounts(radicale, "broken", "fine")))
    broken = d.wait(lambda: "injected" in d.account("broken")["LastError"] and d.account("broken"),
                    30, "the injected error on 'broken'")
    assert broken["LastResult"] == "error"
    assert "DAVSYNCD_TEST_THROW_AFTER_SYNC" in broken["LastError"]
    assert d.proc.poll() is None
    # The other account goes on: it synced, and syncs again on request.
    fine = d.wait_synced("fine")
    assert fine["LastResult"] == "ok" and fine["LastError"] == ""
    radicale.put_item("/alice/cal-fine/", "new.ics", sd.make_event(7, "fine", summary="arrives"))
    assert _sync(bus, d, "fine")["LastResult"] == "ok"
    assert "arrives" in {title_of(i.text) for i in local_by_uid(vdir_folder(daemon_env, "fine", "cal-fine")).values()}
    # The bus still answers for every object: two accounts, two collections.
    assert {account_path("broken"), account_path("fine")} <= set(bus.managed_objects())
    assert len(bus.managed_objects()) == 4
    assert "(contained)" in d.log()


@contextlib.contextmanager
def immutable(folder: Path):
    res = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {res.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_state_folder_that_cannot_be_written_is_an_account_error(radicale, daemon_env, bus, start_daemon):
    d = start_daemon(daemon_env.write_config(_accounts(radicale, "stuck", "other")))
    d.wait_synced("stuck")
    d.wait_synced("other")
    folder = vdir_folder(daemon_env, "stuck", "cal-stuck")
    (item,) = local_by_uid(folder).values()
    states = daemon_env.state_dir / "stuck" / "collections"
    with immutable(states):
        write_local(item.path, replace_title(item.text, "edited while the disk said no"))
        stuck = d.wait(lambda: str(states) in (a := d.account("stuck"))["LastError"] and a, 60,
                       "the save failure on 'stuck'")
        assert str(states) in stuck["LastError"], stuck["LastError"]
        assert stuck["State"] == "backoff"
        assert d.proc.poll() is None
        assert _sync(bus, d, "other")["LastResult"] == "ok"
    # Writable again: the next sync finishes the job; the edit was never lost.
    assert _sync(bus, d, "stuck")["LastResult"] == "ok"
    (remote,) = server_by_uid(radicale, "/alice/cal-stuck/").values()
    assert title_of(remote.text) == "edited while the disk said no"
