"""What real servers refuse: read-only collections, and deletions that need
the user's confirmation.

Real Radicale 3.1.8 with a `[rights]` file (`type = from_file`): the calendar
"holidays" is read-only for alice (permissions `rR`, as a shared calendar or
a subscription would be), the address book "contacts" is hers to write.
Radicale reads the rights file on every request, so a test makes a server
change to the read-only calendar "as its owner" by granting write access
for that one request and taking it back (`RightsFile.writable()`).

The daemon half runs davsyncd on a private bus and uses gdbus and
davsyncctl, as a desktop app and a user would.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.dbus import COLLECTION, DBusCallError, collection_path
from davtest.servers import Radicale
from davtest.vdir import (conflict_copies, local_by_uid, refusal_reason, run_once, server_by_uid,
                          title_of, vdir_folder, write_local)
from test_daemon import INTERVAL, start_daemon  # noqa: F401  (fixture)

ACCOUNT = "ro"
HOLIDAYS = "holidays"
CONTACTS = "contacts"

RULES_WRITABLE = """\
[everything]
user: .+
collection: {user}(/.*)?
permissions: RrWw

[root]
user: .+
collection:
permissions: R
"""

RULES_READ_ONLY = """\
[holidays-read-only]
user: .+
collection: {user}/holidays(/.*)?
permissions: rR

""" + RULES_WRITABLE


class RightsFile:
    """The Radicale rights file, switched between the two rule sets."""

    def __init__(self, path: Path):
        self.path = path
        self.read_only()

    def read_only(self) -> None:
        self.path.write_text(RULES_READ_ONLY)

    @contextlib.contextmanager
    def writable(self):
        self.path.write_text(RULES_WRITABLE)
        try:
            yield
        finally:
            self.read_only()


class RadicaleWithRights(Radicale):
    """Radicale whose [rights] come from RightsFile (read per request)."""

    def _prepare(self, port: int) -> None:
        super()._prepare(port)
        self.rights = RightsFile(self.workdir / "rights")
        text = self.config_path.read_text()
        assert "type = owner_only" in text
        self.config_path.write_text(
            text.replace("type = owner_only", f"type = from_file\nfile = {self.rights.path}"))


@pytest.fixture
def server(tmp_path):
    srv = RadicaleWithRights(tmp_path / "radicale").start()
    with srv.rights.writable():
        srv.make_calendar(HOLIDAYS, "Holidays", "#FF0000")
        srv.make_addressbook(CONTACTS, "Contacts")
        for i in range(3):
            srv.put_item(f"/alice/{HOLIDAYS}/", f"h{i}.ics", event(f"h{i}", f"holiday {i}"))
        for i in range(20):
            srv.put_item(f"/alice/{CONTACTS}/", f"c{i}.vcf", sd.make_contact(i, uid=f"c{i}"))
    yield srv
    srv.stop()


def event(uid: str, summary: str) -> str:
    return sd.make_event(0, uid=uid, summary=summary)


def _by_title(items) -> dict[str, str]:
    return {uid: title_of(item.text) for uid, item in items.items()}


def test_read_only_calendar_keeps_local_changes_aside_and_still_pulls(server, daemon_env):
    cfg = daemon_env.write_config([account_for(server, ACCOUNT)])
    discovered = daemon_env.run("--config", cfg, "--discover", "--json", check=True)
    assert '"read_only": true' in discovered.stdout, discovered.stdout
    run_once(daemon_env, cfg)
    cal = vdir_folder(daemon_env, ACCOUNT, HOLIDAYS)
    local = local_by_uid(cal)

    # Here: an edit, a new event and a deletion in the read-only calendar,
    # and an edit in the writable address book. There: the owner edits h2.
    write_local(local["h0"].path, local["h0"].text.replace("holiday 0", "my edit"))
    write_local(cal / "mine.ics", event("mine", "my new event"))
    local["h1"].path.unlink()
    cards = local_by_uid(vdir_folder(daemon_env, ACCOUNT, CONTACTS))
    write_local(cards["c0"].path, cards["c0"].text.replace(f"FN:{title_of(cards['c0'].text)}", "FN:Renamed"))
    with server.rights.writable():
        item = server_by_uid(server, f"/alice/{HOLIDAYS}/")["h2"]
        server.put_item(f"/alice/{HOLIDAYS}/", item.filename, event("h2", "moved by the owner"),
                        etag=item.etag, create=False)

    lines = run_once(daemon_env, cfg)
    line = lines[f"{ACCOUNT}/{HOLIDAYS}"]
    assert line.refused_items == 3 and line.up == 0 and line.deleted_server == 0, line.text

    # The server's calendar is as its owner left it; the vdir mirrors it.
    remote = server_by_uid(server, f"/alice/{HOLIDAYS}/")
    assert _by_title(remote) == {"h0": "holiday 0", "h1": "holiday 1", "h2": "moved by the owner"}
    assert _by_title(local_by_uid(cal)) == _by_title(remote)
    # Every local change is in the conflicts folder, with the reason.
    copies = {c.file: c for c in conflict_copies(daemon_env, ACCOUNT, HOLIDAYS)}
    assert set(copies) == {local["h0"].path.name, "mine.ics"}, copies
    assert "my edit" in copies[local["h0"].path.name].text
    assert "my new event" in copies["mine.ics"].text
    for c in copies.values():
        assert c.side == "local"
        assert "read-only" in (refusal_reason(c) or ""), c.path
    # The writable address book went up in the same run.
    assert title_of(server_by_uid(server, f"/alice/{CONTACTS}/")["c0"].text) == "Renamed"

    # A second sync is clean: one request per collection, nothing refused.
    again = run_once(daemon_env, cfg)
    for label, l in again.items():
        assert (l.transfers, l.conflicts, l.refused_items, l.requests) == (0, 0, 0, 1), l.text
    assert len(conflict_copies(daemon_env, ACCOUNT, HOLIDAYS)) == 2


def test_write_refused_with_403_in_a_collection_that_claimed_to_be_writable(server, daemon_env):
    """The discovery cache says writable; the server says 403 on the PUT."""
    cfg = daemon_env.write_config([account_for(server, ACCOUNT)])
    with server.rights.writable():
        run_once(daemon_env, cfg)  # discovered while writable
    cal = vdir_folder(daemon_env, ACCOUNT, HOLIDAYS)
    local = local_by_uid(cal)
    write_local(local["h0"].path, local["h0"].text.replace("holiday 0", "my edit"))
    lines = run_once(daemon_env, cfg)
    line = lines[f"{ACCOUNT}/{HOLIDAYS}"]
    assert line.refused_items == 1 and line.up == 0, line.text
    assert title_of(local_by_uid(cal)["h0"].text) == "holiday 0"
    (copy,) = conflict_copies(daemon_env, ACCOUNT, HOLIDAYS)
    assert "my edit" in copy.text and "HTTP 403" in refusal_reason(copy)
    assert run_once(daemon_env, cfg)[f"{ACCOUNT}/{HOLIDAYS}"].requests == 1


def test_daemon_shows_read_only_and_confirms_a_refused_deletion(server, daemon_env, bus, start_daemon):
    d = start_daemon(daemon_env.write_config([account_for(server, ACCOUNT, sync_interval=INTERVAL)]))
    first = d.wait_synced(ACCOUNT)
    assert d.collection(HOLIDAYS, ACCOUNT)["ReadOnly"] is True
    assert d.collection(CONTACTS, ACCOUNT)["ReadOnly"] is False

    # 12 of 20 contacts deleted here: more than 10 and more than half.
    cards = vdir_folder(daemon_env, ACCOUNT, CONTACTS)
    for item in list(local_by_uid(cards).values())[:12]:
        item.path.unlink()
    refused = d.wait(lambda: d.collection(CONTACTS, ACCOUNT)["DeletionRefused"], 60,
                     "the deletion guard to refuse")
    assert "12 of 20" in refused, refused
    assert len(server_by_uid(server, f"/alice/{CONTACTS}/")) == 20
    assert d.account(ACCOUNT)["LastResult"] == "ok"  # the account is not in backoff for it
    assert "deletion refused" in d.ctl("status").stdout

    # Confirmed through D-Bus, as any app would.
    bus.call(collection_path(ACCOUNT, CONTACTS), f"{COLLECTION}.ConfirmDeletion")
    d.wait(lambda: d.collection(CONTACTS, ACCOUNT)["DeletionRefused"] == "", 60, "the deletion to be applied")
    d.wait(lambda: len(server_by_uid(server, f"/alice/{CONTACTS}/")) == 8, 30, "8 contacts left on the server")
    with pytest.raises(DBusCallError) as nothing:
        bus.call(collection_path(ACCOUNT, CONTACTS), f"{COLLECTION}.ConfirmDeletion")
    assert "NothingToConfirm" in str(nothing.value)

    # The server loses 6 of the 8 (more than half, but not more than 10): applied.
    remote = server_by_uid(server, f"/alice/{CONTACTS}/")
    for item in list(remote.values())[:6]:
        server.delete_item(f"/alice/{CONTACTS}/", item.filename)
    before = d.account(ACCOUNT)["LastSync"]
    bus.call(collection_path(ACCOUNT, CONTACTS), f"{COLLECTION}.Sync")
    d.wait_synced(ACCOUNT, after=before)
    assert len(local_by_uid(cards)) == 2
    assert d.collection(CONTACTS, ACCOUNT)["DeletionRefused"] == ""
    assert first  # the first sync happened before any of this


def test_davsyncctl_confirm_delete(server, daemon_env, bus, start_daemon):
    d = start_daemon(daemon_env.write_config([account_for(server, ACCOUNT, sync_interval=INTERVAL)]))
    d.wait_synced(ACCOUNT)
    # The server empties the address book: all 20 gone is always asked about.
    for item in server_by_uid(server, f"/alice/{CONTACTS}/").values():
        server.delete_item(f"/alice/{CONTACTS}/", item.filename)
    before = d.account(ACCOUNT)["LastSync"]
    bus.call(collection_path(ACCOUNT, CONTACTS), f"{COLLECTION}.Sync")
    d.wait_synced(ACCOUNT, after=before)
    cards = vdir_folder(daemon_env, ACCOUNT, CONTACTS)
    assert len(local_by_uid(cards)) == 20
    assert "the server deleted 20 of 20" in d.collection(CONTACTS, ACCOUNT)["DeletionRefused"]

    res = d.ctl("confirm-delete", f"{ACCOUNT}/{CONTACTS}")
    assert res.returncode == 0, res.stderr
    d.wait(lambda: not local_by_uid(cards), 60, "the local address book to be emptied")
    d.wait(lambda: d.collection(CONTACTS, ACCOUNT)["DeletionRefused"] == "", 30, "DeletionRefused to clear")
    res = d.ctl("confirm-delete", f"{ACCOUNT}/{CONTACTS}")
    assert res.returncode != 0 and "no refused deletion" in res.stderr, (res.stdout, res.stderr)
    res = d.ctl("confirm-delete", "nope")
    assert res.returncode == 2 and "ACCOUNT/COLLECTION" in res.stderr


def test_a_failing_collection_still_shows_its_local_items(server, daemon_env, bus, start_daemon):
    cfg = daemon_env.write_config([account_for(server, ACCOUNT, sync_interval=INTERVAL)])
    d = start_daemon(cfg)
    d.wait_synced(ACCOUNT)
    assert d.collection(HOLIDAYS, ACCOUNT)["ItemCount"] == 3
    d.stop()
    server.stop()  # every sync now fails before it reaches a collection
    d = start_daemon(cfg)
    d.wait(lambda: d.account(ACCOUNT)["State"] == "backoff", 30, "the failed sync")
    assert d.collection(HOLIDAYS, ACCOUNT)["ItemCount"] == 3
    assert d.collection(CONTACTS, ACCOUNT)["ItemCount"] == 20
