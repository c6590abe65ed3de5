"""`davsyncd --config CFG --once`: the two-way sync engine against real servers.

Every test checks both sides: the server through the davtest helpers (one
REPORT query per collection, compared per UID) and the vdir folders, sync
state and conflicts folder on disk. Item contents are compared semantically
(davtest.vdir.normalized): both servers re-serialise what they store.

Account "demo" with a calendar "personal" (Personal, #1E90FF) and an address
book "contacts" (Contacts); most tests restrict the account to these two so
that Xandikos's default collections stay out of the way.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.vdir import (
    assert_same_items, conflict_copies, conflicts_dir, files_matching, kill_group, load_state, local_by_uid,
    local_files, normalized, poll, replace_title, run_once, server_by_uid, server_delete,
    server_put, set_property, state_file, title_of, uid_of, vdir_folder, without_uid, write_local,
)

ACCOUNT = "demo"
CAL = f"{ACCOUNT}/personal"
AB = f"{ACCOUNT}/contacts"
SEED = "sync"


# ---------- setup helpers ----------

def seed(srv, events: int = 3, contacts: int = 2) -> tuple[str, str]:
    cal = srv.make_calendar("personal", "Personal", "#1E90FF")
    ab = srv.make_addressbook("contacts", "Contacts")
    for i in range(events):
        srv.put_item(cal, sd.filename_event(i, SEED), sd.make_event(i, SEED))
    for i in range(contacts):
        srv.put_item(ab, sd.filename_contact(i, SEED), sd.make_contact(i, SEED))
    return cal, ab


def config(env, srv, only_seeded: bool = True, **extra):
    if only_seeded:
        extra.setdefault("collections", {"include": ["personal", "contacts"]})
    return env.write_config([account_for(srv, ACCOUNT, **extra)])


def cal_dir(env):
    return vdir_folder(env, ACCOUNT, "personal")


def ab_dir(env):
    return vdir_folder(env, ACCOUNT, "contacts")


def ev(i: int) -> str:
    return sd.uid_event(i, SEED)


def ct(i: int) -> str:
    return sd.uid_contact(i, SEED)


def assert_in_sync(env, srv, cal, ab, context=""):
    assert_same_items(local_by_uid(cal_dir(env)), server_by_uid(srv, cal), context + " (calendar)")
    assert_same_items(local_by_uid(ab_dir(env)), server_by_uid(srv, ab), context + " (contacts)")


def assert_quiet(lines):
    """A sync that found nothing to do: nothing moved, one request per collection."""
    for line in lines.values():
        assert (line.transfers, line.conflicts, line.requests, line.refused) == (0, 0, 1, None), \
            f"expected a no-change sync: {line.text}"


# ---------- first sync ----------

UNSAFE_UIDS = {"weird.ics": "a/b@c", "escape.ics": "../../../escaped", "dot.ics": ".hidden-uid"}
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+@-]+\.(ics|vcf)$")


def test_first_sync_downloads_everything(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=4, contacts=3)
    for name, uid in UNSAFE_UIDS.items():
        dav_server.put_item(cal, name, sd.make_event(50, SEED, uid=uid, summary=f"unsafe {name}"))
    cfg = config(daemon_env, dav_server, only_seeded=False)

    lines = run_once(daemon_env, cfg)

    assert (lines[CAL].down, lines[CAL].up, lines[CAL].conflicts) == (4 + len(UNSAFE_UIDS), 0, 0), lines[CAL].text
    assert (lines[AB].down, lines[AB].up) == (3, 0), lines[AB].text
    assert_in_sync(daemon_env, dav_server, cal, ab, "after the first sync")
    local = local_by_uid(cal_dir(daemon_env))
    assert set(local) == {ev(i) for i in range(4)} | set(UNSAFE_UIDS.values())
    assert set(local_by_uid(ab_dir(daemon_env))) == {ct(i) for i in range(3)}
    # Only item files and metadata in the folders (no temporary files, no state).
    for folder, suffix, meta in ((cal_dir(daemon_env), ".ics", {"displayname", "color"}),
                                 (ab_dir(daemon_env), ".vcf", {"displayname"})):
        items = set(local_files(folder))
        assert all(n.endswith(suffix) for n in items), sorted(items)
        others = {p.name for p in folder.iterdir()} - items
        assert others == meta, f"unexpected files in {folder}: {sorted(others)}"

    # Collection metadata for khal/khard.
    assert (cal_dir(daemon_env) / "displayname").read_text().strip() == "Personal"
    assert (cal_dir(daemon_env) / "color").read_text().strip().upper() == "#1E90FF"
    assert (ab_dir(daemon_env) / "displayname").read_text().strip() == "Contacts"
    # Every collection of the account got a line and a folder (Xandikos has
    # a default calendar and address book too).
    expected_labels = {CAL, AB} | ({f"{ACCOUNT}/calendar", f"{ACCOUNT}/addressbook"}
                                   if dav_server.name == "xandikos" else set())
    assert set(lines) == expected_labels
    for label in expected_labels:
        folder = vdir_folder(daemon_env, ACCOUNT, label.split("/", 1)[1])
        assert folder.is_dir(), folder
        assert (folder / "displayname").is_file(), f"no displayname in {folder}"

    # The state knows every file, under the decoded href.
    st = load_state(daemon_env, ACCOUNT, "personal")
    assert st["token"], "no sync token stored"
    assert len(st["items"]) == 4 + len(UNSAFE_UIDS)
    for key, entry in st["items"].items():
        assert {"href", "etag", "file", "hash", "mtime_ns", "size"} <= set(entry), entry
        assert entry["etag"] and entry["size"] == (cal_dir(daemon_env) / entry["file"]).stat().st_size
    assert state_file(daemon_env, ACCOUNT, "personal").stat().st_mode & 0o077 == 0, \
        "the state file is readable by others"
    files = set(local_files(cal_dir(daemon_env)))
    assert {v["file"] for v in st["items"].values()} == files
    server_hrefs = set(dav_server.list_items(cal))
    assert set(st["items"]) == server_hrefs


def test_file_names_from_safe_uids(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=3, contacts=2)
    plain = "plain-uid_1.2+3"
    dav_server.put_item(cal, "plain.ics", sd.make_event(40, SEED, uid=plain))
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)

    # UIDs made of safe characters (letters, digits, "_.+-@") name the files,
    # whatever the server called the item.
    local = local_by_uid(cal_dir(daemon_env))
    assert local[plain].name == plain + ".ics"
    wrong = {u: it.name for u, it in local.items() if it.name != u + ".ics"}
    assert not wrong, f"file names not taken from safe UIDs: {wrong}"
    contacts = local_by_uid(ab_dir(daemon_env))
    wrong = {u: it.name for u, it in contacts.items() if it.name != u + ".vcf"}
    assert not wrong, f"file names not taken from safe UIDs: {wrong}"


def test_unsafe_uids_get_safe_names_inside_the_folder(dav_server, daemon_env):
    cal, _ = seed(dav_server, events=1, contacts=0)
    for name, uid in UNSAFE_UIDS.items():
        dav_server.put_item(cal, name, sd.make_event(60, SEED, uid=uid, summary=f"unsafe {name}"))
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)

    folder = cal_dir(daemon_env).resolve()
    local = local_by_uid(folder)
    for uid in UNSAFE_UIDS.values():
        assert uid in local, f"item with UID {uid!r} not downloaded: {sorted(local)}"
        item = local[uid]
        assert SAFE_NAME.match(item.name) and not item.name.startswith("."), item.name
        assert item.path.resolve().parent == folder
        assert uid not in item.name and "/" not in item.name
        assert title_of(item.text).startswith("unsafe ")
    # Nothing was written anywhere else: every item file under the daemon's
    # root and the server's folder's parent is in the vdir folder.
    strays = [p for p in files_matching(daemon_env.root) if p.resolve().parent != folder]
    assert not strays, f"item files outside {folder}: {strays}"
    assert not list(daemon_env.root.parent.glob("escaped*")), "a file escaped the vdir folder"
    assert not list(daemon_env.data_dir.rglob("escaped*")), "a file named after the UID was written"


# ---------- remote changes ----------

def test_remote_create_edit_delete_arrive(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=3, contacts=3)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    remote_cal = server_by_uid(dav_server, cal)
    remote_ab = server_by_uid(dav_server, ab)

    dav_server.put_item(cal, "remote-new.ics", sd.make_event(10, SEED, summary="remote new event – Zürich ☕"))
    server_put(dav_server, remote_cal[ev(0)], replace_title(remote_cal[ev(0)].text, "remote edit 0"))
    server_delete(dav_server, remote_cal[ev(1)])
    dav_server.put_item(ab, "remote-new.vcf", sd.make_contact(10, SEED, given="Remote", family="New"))
    server_put(dav_server, remote_ab[ct(0)], replace_title(remote_ab[ct(0)].text, "Remote Edit"))
    server_delete(dav_server, remote_ab[ct(1)])
    deleted_file = local_by_uid(cal_dir(daemon_env))[ev(1)].path

    lines = run_once(daemon_env, cfg)

    for label in (CAL, AB):
        line = lines[label]
        assert (line.down, line.up, line.deleted_here, line.deleted_server, line.conflicts) == \
            (2, 0, 1, 0, 0), line.text
    local = local_by_uid(cal_dir(daemon_env))
    assert set(local) == {ev(0), ev(2), ev(10)}
    assert title_of(local[ev(0)].text) == "remote edit 0"
    assert title_of(local[ev(10)].text) == "remote new event – Zürich ☕"
    assert not deleted_file.exists()
    contacts = local_by_uid(ab_dir(daemon_env))
    assert set(contacts) == {ct(0), ct(2), ct(10)}
    assert title_of(contacts[ct(0)].text) == "Remote Edit"
    assert title_of(contacts[ct(10)].text) == "Remote New"
    assert_in_sync(daemon_env, dav_server, cal, ab, "after remote changes")
    assert_quiet(run_once(daemon_env, cfg))


# ---------- local changes ----------

def test_local_create_edit_delete_are_pushed(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=3, contacts=3)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    folder = cal_dir(daemon_env)
    local = local_by_uid(folder)
    contacts = local_by_uid(ab_dir(daemon_env))

    created = sd.make_event(20, SEED, summary="local new event – café ✓")
    write_local(folder / "local-new.ics", created)
    no_uid = without_uid(sd.make_event(21, SEED, summary="local event without uid"))
    assert uid_of(no_uid) is None
    write_local(folder / "no-uid.ics", no_uid)
    write_local(local[ev(0)].path, replace_title(local[ev(0)].text, "local edit 0"))
    local[ev(1)].path.unlink()
    new_contact = sd.make_contact(20, SEED, given="Local", family="New")
    write_local(ab_dir(daemon_env) / "local-new.vcf", new_contact)
    write_local(contacts[ct(0)].path, replace_title(contacts[ct(0)].text, "Local Edit"))
    contacts[ct(1)].path.unlink()

    lines = run_once(daemon_env, cfg)

    assert (lines[CAL].up, lines[CAL].deleted_server, lines[CAL].down, lines[CAL].deleted_here,
            lines[CAL].conflicts) == (3, 1, 0, 0, 0), lines[CAL].text
    assert (lines[AB].up, lines[AB].deleted_server, lines[AB].down, lines[AB].deleted_here,
            lines[AB].conflicts) == (2, 1, 0, 0, 0), lines[AB].text
    remote = server_by_uid(dav_server, cal)
    assert normalized(remote[ev(20)].text) == normalized(created)
    assert title_of(remote[ev(20)].text) == "local new event – café ✓"
    assert title_of(remote[ev(0)].text) == "local edit 0"
    assert ev(1) not in remote
    # The file without UID got one, locally and on the server, and kept the rest.
    fixed = (folder / "no-uid.ics").read_text()
    new_uid = uid_of(fixed)
    assert new_uid, f"no UID added to the local file:\n{fixed}"
    assert normalized(without_uid(fixed)) == normalized(no_uid)
    assert new_uid in remote, f"no server item with the added UID {new_uid!r}: {sorted(remote)}"
    assert normalized(remote[new_uid].text) == normalized(fixed)
    remote_ab = server_by_uid(dav_server, ab)
    assert normalized(remote_ab[ct(20)].text) == normalized(new_contact)
    assert title_of(remote_ab[ct(0)].text) == "Local Edit"
    assert ct(1) not in remote_ab
    assert set(remote) == {ev(0), ev(2), ev(20), new_uid}
    assert set(remote_ab) == {ct(0), ct(2), ct(20)}
    assert_in_sync(daemon_env, dav_server, cal, ab, "after local changes")
    assert_quiet(run_once(daemon_env, cfg))


# ---------- no change ----------

def test_no_change_sync_is_one_request_per_collection(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=3, contacts=2)
    cfg = config(daemon_env, dav_server, only_seeded=False)
    first = run_once(daemon_env, cfg)
    second = run_once(daemon_env, cfg)
    assert set(second) == set(first) and len(second) >= 2
    assert_quiet(second)
    # Touching a file (new mtime, same content) is not a change either.
    item = local_by_uid(cal_dir(daemon_env))[ev(0)]
    st = item.path.stat()
    os.utime(item.path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert_quiet(run_once(daemon_env, cfg))
    assert_in_sync(daemon_env, dav_server, cal, ab)


# ---------- conflicts ----------

def make_conflict(srv, env, cal, local_title, server_title, local_lm=None, server_lm=None):
    """Edits event 0 on both sides after a first sync; returns its file path."""
    item = local_by_uid(cal_dir(env))[ev(0)]
    remote = server_by_uid(srv, cal)[ev(0)]
    server_text = replace_title(remote.text, server_title)
    local_text = replace_title(item.text, local_title)
    if server_lm:
        server_text = set_property(server_text, "LAST-MODIFIED", server_lm)
    if local_lm:
        local_text = set_property(local_text, "LAST-MODIFIED", local_lm)
    server_put(srv, remote, server_text)
    write_local(item.path, local_text)
    return item.path


def check_conflict_outcome(srv, env, cfg, cal, ab, path, lines, winner, loser, loser_side):
    line = lines[CAL]
    assert line.conflicts == 1, line.text
    assert line.refused is None
    local = local_by_uid(cal_dir(env))
    remote = server_by_uid(srv, cal)
    assert local[ev(0)].path == path, "the conflicting item moved to another file"
    assert title_of(local[ev(0)].text) == winner, f"local copy: {local[ev(0)].text}"
    assert title_of(remote[ev(0)].text) == winner, f"server copy: {remote[ev(0)].text}"
    copies = conflict_copies(env, ACCOUNT, "personal")
    assert len(copies) == 1, [c.path.name for c in copies]
    (copy,) = copies
    assert copy.side == loser_side and copy.file == path.name, copy.path.name
    assert title_of(copy.text) == loser, copy.text
    assert uid_of(copy.text) == ev(0)
    stamp = dt.datetime.strptime(copy.stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - stamp).total_seconds()) < 600, copy.stamp
    # The losing copy is nowhere else: not in the vdir folder, not on the server.
    assert all(title_of(i.text) != loser for i in local.values())
    assert all(title_of(i.text) != loser for i in remote.values())
    assert_in_sync(env, srv, cal, ab, "after the conflict")
    assert_quiet(run_once(env, cfg))
    assert len(conflict_copies(env, ACCOUNT, "personal")) == 1


def test_conflict_server_wins_by_default(dav_server, daemon_env):
    cal, ab = seed(dav_server)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    path = make_conflict(dav_server, daemon_env, cal, "local side edit", "server side edit")
    lines = run_once(daemon_env, cfg)
    check_conflict_outcome(dav_server, daemon_env, cfg, cal, ab, path, lines,
                           winner="server side edit", loser="local side edit", loser_side="local")


def test_conflict_local_wins(dav_server, daemon_env):
    cal, ab = seed(dav_server)
    cfg = config(daemon_env, dav_server, conflict_policy="local-wins")
    run_once(daemon_env, cfg)
    path = make_conflict(dav_server, daemon_env, cal, "local side edit", "server side edit")
    lines = run_once(daemon_env, cfg)
    check_conflict_outcome(dav_server, daemon_env, cfg, cal, ab, path, lines,
                           winner="local side edit", loser="server side edit", loser_side="server")


@pytest.mark.parametrize("newer", ["local", "server"])
def test_conflict_newest(dav_server, daemon_env, newer):
    cal, ab = seed(dav_server)
    cfg = config(daemon_env, dav_server, conflict_policy="newest")
    run_once(daemon_env, cfg)
    later, earlier = "20300102T030405Z", "20250101T000000Z"
    path = make_conflict(dav_server, daemon_env, cal, "local side edit", "server side edit",
                         local_lm=later if newer == "local" else earlier,
                         server_lm=later if newer == "server" else earlier)
    lines = run_once(daemon_env, cfg)
    if newer == "local":
        check_conflict_outcome(dav_server, daemon_env, cfg, cal, ab, path, lines,
                               winner="local side edit", loser="server side edit", loser_side="server")
    else:
        check_conflict_outcome(dav_server, daemon_env, cfg, cal, ab, path, lines,
                               winner="server side edit", loser="local side edit", loser_side="local")


def test_conflict_copy_never_replaces_an_earlier_one(dav_server, daemon_env):
    """Two conflicts on one file within the same second (frequent syncs) must
    both keep their losing version. Earlier copies are laid out for every
    second the coming sync can run in, so the outcome does not depend on timing."""
    cal, ab = seed(dav_server)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    path = make_conflict(dav_server, daemon_env, cal, "local side edit", "server side edit")
    cdir = conflicts_dir(daemon_env, ACCOUNT, "personal")
    cdir.mkdir(parents=True, exist_ok=True)
    start = dt.datetime.now(dt.timezone.utc)
    window = 120
    earlier = {}
    for s in range(-2, window + 1):
        stamp = (start + dt.timedelta(seconds=s)).strftime("%Y%m%dT%H%M%SZ")
        p = cdir / f"{stamp}-local-{path.name}"
        earlier[p] = f"earlier conflict copy {stamp}\n"
        p.write_text(earlier[p])

    lines = run_once(daemon_env, cfg)

    assert (dt.datetime.now(dt.timezone.utc) - start).total_seconds() < window, \
        "the sync ran past the prepared window; nothing was tested"
    assert lines[CAL].conflicts == 1, lines[CAL].text
    replaced = [p.name for p, text in earlier.items() if not p.exists() or p.read_text() != text]
    assert not replaced, f"earlier conflict copies were replaced: {replaced}"
    new = [c for c in conflict_copies(daemon_env, ACCOUNT, "personal") if c.path not in earlier]
    assert [title_of(c.text) for c in new] == ["local side edit"], [c.path.name for c in new]


# ---------- deletion against edit ----------

def test_local_delete_vs_server_edit_keeps_the_edit(dav_server, daemon_env):
    cal, ab = seed(dav_server)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    local_by_uid(cal_dir(daemon_env))[ev(0)].path.unlink()
    remote = server_by_uid(dav_server, cal)[ev(0)]
    server_put(dav_server, remote, replace_title(remote.text, "server edit wins over delete"))

    lines = run_once(daemon_env, cfg)

    assert lines[CAL].deleted_server == 0 and lines[CAL].refused is None, lines[CAL].text
    local = local_by_uid(cal_dir(daemon_env))
    assert ev(0) in local, "the server's edit was not restored locally"
    assert title_of(local[ev(0)].text) == "server edit wins over delete"
    remote = server_by_uid(dav_server, cal)
    assert ev(0) in remote, "the edited item was deleted on the server"
    assert title_of(remote[ev(0)].text) == "server edit wins over delete"
    assert_in_sync(daemon_env, dav_server, cal, ab)
    assert_quiet(run_once(daemon_env, cfg))


def test_local_edit_vs_server_delete_keeps_the_edit(dav_server, daemon_env):
    cal, ab = seed(dav_server)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    item = local_by_uid(cal_dir(daemon_env))[ev(0)]
    edited = replace_title(item.text, "local edit wins over delete")
    write_local(item.path, edited)
    server_delete(dav_server, server_by_uid(dav_server, cal)[ev(0)])

    lines = run_once(daemon_env, cfg)

    assert lines[CAL].deleted_here == 0 and lines[CAL].refused is None, lines[CAL].text
    assert item.path.exists(), "the locally edited file was deleted"
    assert item.path.read_bytes().decode() == edited
    remote = server_by_uid(dav_server, cal)
    assert ev(0) in remote, "the local edit was not re-created on the server"
    assert normalized(remote[ev(0)].text) == normalized(edited)
    assert_in_sync(daemon_env, dav_server, cal, ab)
    assert_quiet(run_once(daemon_env, cfg))


# ---------- invalid sync token ----------

# Xandikos 0.2.8 answers an unknown token with a bare 500 (a KeyError on the
# git object) instead of 403 DAV:valid-sync-token; the daemon treats a 500 on
# a stored token as an invalid token and recovers with a full listing.


@pytest.mark.parametrize("kind,how", [
    ("radicale", "cache-deleted"),
    ("radicale", "bogus-token"),
    ("xandikos", "bogus-token"),
])
def test_invalid_sync_token_recovers_without_losing_anything(server_factory, daemon_env, kind, how):
    srv = server_factory(kind)
    cal, ab = seed(srv, events=3)
    cfg = config(daemon_env, srv)
    run_once(daemon_env, cfg)
    old_token = load_state(daemon_env, ACCOUNT, "personal")["token"]
    assert old_token

    # A change on each side.
    remote = server_by_uid(srv, cal)
    srv.put_item(cal, "remote-new.ics", sd.make_event(30, SEED, summary="remote new after token"))
    server_put(srv, remote[ev(0)], replace_title(remote[ev(0)].text, "remote edit after token"))
    item = local_by_uid(cal_dir(daemon_env))[ev(1)]
    write_local(item.path, replace_title(item.text, "local edit after token"))

    if how == "cache-deleted":
        caches = [p for p in srv.storage_dir.rglob("sync-token")
                  if p.is_dir() and p.parent.name == ".Radicale.cache"]
        assert caches, f"no .Radicale.cache/sync-token folder under {srv.storage_dir}"
        for p in caches:
            shutil.rmtree(p)
    else:
        path = state_file(daemon_env, ACCOUNT, "personal")
        st = json.loads(path.read_text())
        # Well-formed for the server but unknown to it.
        st["token"] = ("http://radicale.org/ns/sync/" + "0" * 64) if kind == "radicale" else "0" * 40
        path.write_text(json.dumps(st))
    # The server really rejects the token now.
    bad_token = load_state(daemon_env, ACCOUNT, "personal")["token"]
    r = srv.request("REPORT", cal, body=(
        '<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
        f'<D:sync-token>{bad_token}</D:sync-token><D:sync-level>1</D:sync-level>'
        '<D:prop><D:getetag/></D:prop></D:sync-collection>'))
    assert r.status_code != 207, f"{kind} still accepts the token; the test invalidated nothing"

    lines = run_once(daemon_env, cfg)

    line = lines[CAL]
    assert line.refused is None and line.conflicts == 0, line.text
    local = local_by_uid(cal_dir(daemon_env))
    remote = server_by_uid(srv, cal)
    assert set(local) == {ev(0), ev(1), ev(2), ev(30)}
    assert title_of(local[ev(30)].text) == "remote new after token"
    assert title_of(local[ev(0)].text) == "remote edit after token"
    assert title_of(remote[ev(1)].text) == "local edit after token"
    assert title_of(local[ev(1)].text) == "local edit after token"
    assert_in_sync(daemon_env, srv, cal, ab, "after recovering from an invalid token")
    assert not conflict_copies(daemon_env, ACCOUNT, "personal")
    new_token = load_state(daemon_env, ACCOUNT, "personal")["token"]
    assert new_token not in (old_token, bad_token)
    assert_quiet(run_once(daemon_env, cfg))


# ---------- mass deletion ----------

def test_local_mass_deletion_is_refused_until_forced(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=3, contacts=2)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    before = server_by_uid(dav_server, cal)
    for path in cal_dir(daemon_env).glob("*.ics"):
        path.unlink()

    lines = run_once(daemon_env, cfg, expect_status=1)

    assert lines[CAL].refused, f"no REFUSED: {lines[CAL].text}"
    assert lines[CAL].deleted_server == 0
    assert lines[AB].refused is None, lines[AB].text
    after = server_by_uid(dav_server, cal)
    assert set(after) == set(before) and len(after) == 3, "the server lost items"
    assert all(normalized(after[u].text) == normalized(before[u].text) for u in before)
    assert not local_files(cal_dir(daemon_env)), "the refused sync re-downloaded the items"

    lines = run_once(daemon_env, cfg, "--force-delete")

    assert lines[CAL].refused is None and lines[CAL].deleted_server == 3, lines[CAL].text
    assert server_by_uid(dav_server, cal) == {}
    assert not local_files(cal_dir(daemon_env))
    assert len(server_by_uid(dav_server, ab)) == 2, "the address book was touched"
    assert_in_sync(daemon_env, dav_server, cal, ab)
    assert_quiet(run_once(daemon_env, cfg))


def test_server_mass_deletion_is_refused_until_forced(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=3, contacts=2)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    before = local_files(cal_dir(daemon_env))
    assert len(before) == 3
    for item in server_by_uid(dav_server, cal).values():
        server_delete(dav_server, item)

    for attempt in range(2):   # and it stays refused without confirmation
        lines = run_once(daemon_env, cfg, expect_status=1)
        assert lines[CAL].refused, f"attempt {attempt}: no REFUSED: {lines[CAL].text}"
        assert lines[CAL].deleted_here == 0
        assert lines[AB].refused is None, lines[AB].text
        assert local_files(cal_dir(daemon_env)) == before, "local files were deleted or changed"
        assert server_by_uid(dav_server, cal) == {}, "the refused sync uploaded the items again"

    lines = run_once(daemon_env, cfg, "--force-delete")

    assert lines[CAL].refused is None and lines[CAL].deleted_here == 3, lines[CAL].text
    assert local_files(cal_dir(daemon_env)) == {}
    assert len(local_files(ab_dir(daemon_env))) == 2
    assert_in_sync(daemon_env, dav_server, cal, ab)
    assert_quiet(run_once(daemon_env, cfg))


# ---------- crash safety ----------

def put_many(srv, cal, start, count):
    for i in range(start, start + count):
        srv.put_item(cal, sd.filename_event(i, SEED), sd.make_event(i, SEED))


# first-sync: ~300 items in one calendar-query; incremental: new items fetched
# by sync-collection + calendar-multiget in batches of 20 (multiget_batch).
@pytest.mark.parametrize("phase,items", [("first-sync", 300), ("incremental", 100)])
def test_sigkill_while_downloading_leaves_no_duplicates(dav_server, daemon_env, phase, items):
    cal, ab = seed(dav_server, events=0, contacts=1)
    cfg = config(daemon_env, dav_server, multiget_batch=20)
    base = 0
    if phase == "incremental":
        put_many(dav_server, cal, 0, 2)
        run_once(daemon_env, cfg)
        base = 2
    put_many(dav_server, cal, base, items)
    total = base + items
    folder = cal_dir(daemon_env)
    known = set(local_files(folder))

    proc = daemon_env.start("--config", cfg, "--once")
    try:
        poll(lambda: proc.poll() is not None or any(
                 p.suffix == ".ics" and p.name not in known for p in folder.glob("*.ics")),
             timeout=60, what="davsyncd writing its first file")
    finally:
        status = kill_group(proc)
    written = len(local_files(folder)) - len(known)
    assert status == -9, (f"davsyncd finished (status {status}) before it could be killed "
                          f"({written} files written); the test did not interrupt anything")
    assert 0 < written, "killed before any file was written"

    lines = run_once(daemon_env, cfg)

    assert lines[CAL].up == 0 and lines[CAL].deleted_server == 0, lines[CAL].text
    local = local_by_uid(folder)          # raises on two files with one UID
    remote = server_by_uid(dav_server, cal)   # raises on two items with one UID
    assert len(local_files(folder)) == total, \
        f"{len(local_files(folder))} local files for {total} server items ({written} before the kill)"
    assert len(remote) == total and len(dav_server.list_items(cal)) == total, "server item count changed"
    assert_same_items(local, remote, "after the interrupted sync")
    assert len(load_state(daemon_env, ACCOUNT, "personal")["items"]) == total
    assert_quiet(run_once(daemon_env, cfg))


# ---------- invalid local files ----------

def test_invalid_local_file_is_skipped_not_uploaded(dav_server, daemon_env):
    cal, ab = seed(dav_server, events=2, contacts=2)
    cfg = config(daemon_env, dav_server)
    run_once(daemon_env, cfg)
    before_cal = server_by_uid(dav_server, cal)
    before_ab = server_by_uid(dav_server, ab)
    garbage = "this is not iCalendar at all\nBEGIN:NOTHING\n"
    write_local(cal_dir(daemon_env) / "garbage.ics", garbage)
    write_local(ab_dir(daemon_env) / "garbage.vcf", "not a vCard either\n")

    for attempt in range(2):   # skipped again, not forgotten or deleted
        lines = run_once(daemon_env, cfg)
        for label in (CAL, AB):
            line = lines[label]
            assert "skipped" in line.text and line.skipped == 1, f"attempt {attempt}: {line.text}"
            assert (line.up, line.deleted_server, line.deleted_here) == (0, 0, 0), line.text
        assert set(dav_server.list_items(cal)) == {i.href for i in before_cal.values()}
        assert set(dav_server.list_items(ab)) == {i.href for i in before_ab.values()}
        assert (cal_dir(daemon_env) / "garbage.ics").read_bytes().decode() == garbage
    # The valid items are still in sync.
    assert_same_items(local_by_uid(cal_dir(daemon_env), ignore={"garbage.ics"}),
                      server_by_uid(dav_server, cal))
    assert_same_items(local_by_uid(ab_dir(daemon_env), ignore={"garbage.vcf"}),
                      server_by_uid(dav_server, ab))
