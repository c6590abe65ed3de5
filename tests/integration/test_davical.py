"""davsyncd against DAViCal where DAViCal behaves differently from Radicale
and Xandikos (the shared matrix in test_sync.py runs against DAViCal too,
through the `dav_server` fixture; see davtest/davical.py for the quirks).

- Layout: DAViCal serves at /davical/caldav.php/ (Debian's Apache layout);
  discovery from the bare server URL goes through /.well-known/caldav.
- vCards: DAViCal adds REV to a card without one and then answers the PUT
  without an ETag (it only sends one when it stored the bytes it got), so a
  new contact comes back down once, with the REV. A card that has a REV is
  stored as sent and gets its ETag.
- Sync tokens: an unknown token (a bogus one, or one DAViCal pruned: it
  drops tokens once a newer one is over 7 days old) is not refused with
  DAV:valid-sync-token but answered as if no token had been sent: every
  item, and no 404 for what was deleted meanwhile. Nothing is lost, but a
  server deletion behind such a token never reaches the folder (xfail).
- 507: DAViCal ignores DAV:limit and never truncates a sync-collection.
- Home collections: a principal created in DAViCal's admin pages gets
  calendar/, addresses/ and the scheduling inbox/outbox .in/ and .out/,
  which DAViCal reports as ordinary calendars; discovery leaves the latter
  two out because the principal's schedule-inbox-URL/schedule-outbox-URL
  name them (davsyncd synced them as calendars before 0b3f5f3).

- 412: DAViCal's answer to a failed If-Match/If-None-Match names DAV:if-match
  or DAV:if-none-match in an error body: still a conflict (the changed
  etag), not a refusal of the content (davsyncd took it for one between
  eb6e490 and 3979f06; the last two tests pin it down).

The xfail tests are strict: they say what should happen and fail the run
once it does (then drop the marker).
"""

from __future__ import annotations

import json

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for, parse_json_stdout
from davtest.davical import DAViCal, SCRIPT_NAME
from davtest.servers import NS_DAV, clark
from davtest.vdir import (
    assert_same_items, conflict_copies, load_state, local_by_uid, normalized, prop, replace_title,
    run_once, server_by_uid, server_delete, server_put, state_file, title_of, vdir_folder, write_local,
)

# The shared sync matrix's helpers; the same account, folders and UIDs.
from test_sync import (  # noqa: E402
    AB, ACCOUNT, CAL, SEED, ab_dir, assert_in_sync, assert_quiet, cal_dir, config, ct, ev,
)


def seed(srv, events: int = 3, contacts: int = 3) -> tuple[str, str]:
    cal = srv.make_calendar("personal", "Personal", "#1E90FF")
    ab = srv.make_addressbook("contacts", "Contacts")
    for i in range(events):
        srv.put_item(cal, sd.filename_event(i, SEED), sd.make_event(i, SEED))
    for i in range(contacts):
        srv.put_item(ab, sd.filename_contact(i, SEED), sd.make_contact(i, SEED))
    return cal, ab


def with_rev(card: str, rev: str = "20250101T000000Z") -> str:
    return card.replace("END:VCARD", f"REV:{rev}\r\nEND:VCARD")


# ---------- the server itself ----------

def test_layout_and_discovery_from_the_server_url(davical, daemon_env):
    srv = davical
    assert srv.principal_url == f"{srv.base_url}davical/caldav.php/{srv.user}/"
    r = srv.session.request("PROPFIND", srv.url("/.well-known/caldav"), headers={"Depth": "0"},
                            allow_redirects=False, timeout=30)
    assert r.status_code == 301 and r.headers["Location"] == f"{srv.base_url}davical/caldav.php/", \
        (r.status_code, r.headers)
    assert srv.request("PROPFIND", srv.principal_url, depth=0, auth=False).status_code == 401
    cal, ab = seed(srv, events=1, contacts=1)
    cfg = daemon_env.write_config([account_for(srv, ACCOUNT, url=srv.base_url)])

    res = daemon_env.run("--config", cfg, "--discover", "--json")

    assert res.returncode == 0, res.stderr
    (acc,) = parse_json_stdout(res)["accounts"]
    assert acc["principal_url"] == srv.principal_url
    by_href = {c["href"]: c for c in acc["collections"]}
    assert set(by_href) == {cal, ab}, sorted(by_href)
    assert by_href[cal]["kind"] == "calendar" and by_href[cal]["sync_collection"]
    assert by_href[cal]["components"] == ["VEVENT"]
    assert by_href[ab]["kind"] == "addressbook" and by_href[ab]["sync_collection"]
    assert not by_href[cal]["read_only"] and not by_href[ab]["read_only"]


@pytest.fixture
def davical_home(tmp_path):
    """DAViCal whose alice was made as in its admin pages: calendar/,
    addresses/ and the scheduling inbox .in/ and outbox .out/ (which
    DAViCal reports as plain calendars, resourcetype collection+calendar;
    the principal names them in schedule-inbox-URL/schedule-outbox-URL)."""
    srv = DAViCal(tmp_path / "davical-home", home_collections=True).start()
    yield srv
    srv.stop()


def test_home_calendar_and_address_book_of_an_admin_made_principal_sync(davical_home, daemon_env):
    srv = davical_home
    base = f"{SCRIPT_NAME}/{srv.user}/"
    homes = set(srv.list_collections())
    assert homes == {base + n for n in ("calendar/", "addresses/", ".in/", ".out/")}, homes
    srv.put_item(f"{base}calendar/", "a.ics", sd.make_event(1, SEED))
    srv.put_item(f"{base}addresses/", "a.vcf", with_rev(sd.make_contact(1, SEED)))
    cfg = daemon_env.write_config([account_for(srv, ACCOUNT, url=srv.base_url)])

    lines = run_once(daemon_env, cfg)

    assert lines[f"{ACCOUNT}/calendar"].down == 1 and lines[f"{ACCOUNT}/addresses"].down == 1
    assert set(local_by_uid(vdir_folder(daemon_env, ACCOUNT, "calendar"))) == {ev(1)}
    assert set(local_by_uid(vdir_folder(daemon_env, ACCOUNT, "addresses"))) == {ct(1)}
    assert set(lines) == {f"{ACCOUNT}/calendar", f"{ACCOUNT}/addresses"}, sorted(lines)
    assert_quiet(run_once(daemon_env, cfg))


def test_scheduling_inbox_and_outbox_are_not_synced_as_calendars(davical_home, daemon_env):
    """DAViCal types .in/ and .out/ as plain calendars; the principal's
    CALDAV:schedule-inbox-URL and schedule-outbox-URL (RFC 6638 §2.1-2.2)
    name them, and discovery leaves them out (davsyncd synced them as
    calendars "in" and "out" before 0b3f5f3)."""
    cfg = daemon_env.write_config([account_for(davical_home, ACCOUNT, url=davical_home.base_url)])

    lines = run_once(daemon_env, cfg)

    assert set(lines) == {f"{ACCOUNT}/calendar", f"{ACCOUNT}/addresses"}, sorted(lines)


def test_sync_collection_ignores_dav_limit_and_never_answers_507(davical):
    cal = davical.make_calendar("big", "Big")
    for i in range(5):
        davical.put_item(cal, sd.filename_event(i, SEED), sd.make_event(i, SEED))
    r = davical.request("REPORT", cal, body=(
        '<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
        '<D:sync-token/><D:sync-level>1</D:sync-level><D:limit><D:nresults>2</D:nresults></D:limit>'
        '<D:prop><D:getetag/></D:prop></D:sync-collection>'))
    assert r.status_code == 207 and "507" not in r.text, r.text
    assert r.text.count("<getetag>") == 5


# ---------- vCards: REV added by the server ----------

def test_new_contact_without_rev_comes_back_once_with_the_servers_rev(davical, daemon_env):
    """test_sync.py's local create/edit/delete for DAViCal: the new card
    without REV is stored with one and its PUT has no ETag, so it is
    downloaded once (1 down); nothing else differs."""
    srv = davical
    cal, ab = seed(srv, events=3, contacts=3)
    cfg = config(daemon_env, srv)
    run_once(daemon_env, cfg)
    folder = cal_dir(daemon_env)
    local = local_by_uid(folder)
    contacts = local_by_uid(ab_dir(daemon_env))

    created = sd.make_event(20, SEED, summary="local new event – café ✓")
    write_local(folder / "local-new.ics", created)
    write_local(local[ev(0)].path, replace_title(local[ev(0)].text, "local edit 0"))
    local[ev(1)].path.unlink()
    new_contact = sd.make_contact(20, SEED, given="Local", family="New")
    assert prop(new_contact, "REV") is None
    write_local(ab_dir(daemon_env) / "local-new.vcf", new_contact)
    assert prop(contacts[ct(0)].text, "REV"), "DAViCal stores cards with a REV"
    write_local(contacts[ct(0)].path, replace_title(contacts[ct(0)].text, "Local Edit"))
    contacts[ct(1)].path.unlink()

    lines = run_once(daemon_env, cfg)

    assert (lines[CAL].up, lines[CAL].deleted_server, lines[CAL].down, lines[CAL].conflicts) == \
        (2, 1, 0, 0), lines[CAL].text
    assert (lines[AB].up, lines[AB].deleted_server, lines[AB].down, lines[AB].deleted_here,
            lines[AB].conflicts) == (2, 1, 1, 0, 0), lines[AB].text
    remote_ab = server_by_uid(srv, ab)
    assert set(remote_ab) == {ct(0), ct(2), ct(20)}
    assert title_of(remote_ab[ct(0)].text) == "Local Edit"
    rev = prop(remote_ab[ct(20)].text, "REV")
    assert rev, remote_ab[ct(20)].text
    local_new = (ab_dir(daemon_env) / "local-new.vcf").read_text()
    assert prop(local_new, "REV") == rev, "the server's version did not come back"
    assert normalized(local_new.replace(f"REV:{rev}\n", "")) == normalized(new_contact)
    assert title_of(server_by_uid(srv, cal)[ev(20)].text) == "local new event – café ✓"
    assert_in_sync(daemon_env, srv, cal, ab, "after local changes")
    assert not conflict_copies(daemon_env, ACCOUNT, "contacts")
    assert_quiet(run_once(daemon_env, cfg))


def test_cards_with_rev_are_stored_as_sent(davical, daemon_env):
    srv = davical
    cal, ab = seed(srv, events=1, contacts=3)
    cfg = config(daemon_env, srv)
    run_once(daemon_env, cfg)
    contacts = local_by_uid(ab_dir(daemon_env))
    new_contact = with_rev(sd.make_contact(21, SEED, given="Has", family="Rev"))
    write_local(ab_dir(daemon_env) / "with-rev.vcf", new_contact)
    write_local(contacts[ct(0)].path, replace_title(contacts[ct(0)].text, "Edited With Rev"))
    contacts[ct(1)].path.unlink()

    lines = run_once(daemon_env, cfg)

    assert (lines[AB].up, lines[AB].deleted_server, lines[AB].down, lines[AB].conflicts) == \
        (2, 1, 0, 0), lines[AB].text
    remote = server_by_uid(srv, ab)
    assert remote[ct(21)].text.replace("\r\n", "\n") == new_contact.replace("\r\n", "\n")
    st = load_state(daemon_env, ACCOUNT, "contacts")
    assert all(e["etag"] for e in st["items"].values()), st["items"]
    assert_in_sync(daemon_env, srv, cal, ab)
    assert_quiet(run_once(daemon_env, cfg))


# ---------- unknown sync tokens ----------

def _token_number(token: str) -> int:
    assert token.startswith("data:,"), token
    return int(token.split(",", 1)[1])


def _invalidate(srv, daemon_env, how: str) -> str:
    """Makes the stored token of 'personal' unknown to DAViCal; returns it."""
    path = state_file(daemon_env, ACCOUNT, "personal")
    st = json.loads(path.read_text())
    if how == "pruned":
        # What DAViCal's new_sync_token() does to a token once a newer
        # token of the collection is more than 7 days old.
        srv.sql(f"DELETE FROM sync_tokens WHERE sync_token = {_token_number(st['token'])}")
    else:
        st["token"] = "data:,987654321"
        path.write_text(json.dumps(st))
    token = st["token"]
    known = srv.sql(f"SELECT count(*) FROM sync_tokens WHERE sync_token = {_token_number(token)}")
    assert known.strip() == "0", "the token is still known; the test invalidated nothing"
    return token


@pytest.mark.parametrize("how", ["pruned", "bogus-token"])
def test_unknown_sync_token_recovers_without_losing_anything(davical, daemon_env, how):
    """test_sync.py's invalid-token test for DAViCal: the server does not
    refuse the token (it lists everything instead), and nothing is lost."""
    srv = davical
    cal, ab = seed(srv, events=3)
    cfg = config(daemon_env, srv)
    run_once(daemon_env, cfg)
    old_token = load_state(daemon_env, ACCOUNT, "personal")["token"]
    remote = server_by_uid(srv, cal)
    srv.put_item(cal, "remote-new.ics", sd.make_event(30, SEED, summary="remote new after token"))
    server_put(srv, remote[ev(0)], replace_title(remote[ev(0)].text, "remote edit after token"))
    item = local_by_uid(cal_dir(daemon_env))[ev(1)]
    write_local(item.path, replace_title(item.text, "local edit after token"))
    bad_token = _invalidate(srv, daemon_env, how)
    r = srv.request("REPORT", cal, body=(
        '<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
        f'<D:sync-token>{bad_token}</D:sync-token><D:sync-level>1</D:sync-level>'
        '<D:prop><D:getetag/></D:prop></D:sync-collection>'))
    assert r.status_code == 207 and r.text.count("<getetag>") == 4, \
        "DAViCal no longer answers an unknown token with a full listing: update davtest/davical.py"

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
    assert_in_sync(daemon_env, srv, cal, ab, "after an unknown token")
    assert not conflict_copies(daemon_env, ACCOUNT, "personal")
    new_token = load_state(daemon_env, ACCOUNT, "personal")["token"]
    assert new_token not in (old_token, bad_token)
    assert_quiet(run_once(daemon_env, cfg))


@pytest.mark.xfail(strict=True, reason=(
    "DAViCal answers an unknown sync token with a full listing instead of DAV:valid-sync-token "
    "(RFC 6578 §3.2), so a deletion made while the token was unknown is never reported and "
    "davsyncd cannot tell the answer from a delta"))
def test_server_deletion_behind_an_unknown_token_reaches_the_folder(davical, daemon_env):
    srv = davical
    cal, ab = seed(srv, events=3)
    cfg = config(daemon_env, srv)
    run_once(daemon_env, cfg)
    server_delete(srv, server_by_uid(srv, cal)[ev(2)])
    _invalidate(srv, daemon_env, "pruned")

    run_once(daemon_env, cfg)

    assert ev(2) not in local_by_uid(cal_dir(daemon_env)), \
        "the item deleted on the server is still in the folder"


def test_principal_answers_with_a_principal(davical):
    ms = davical.propfind(davical.principal_url, [clark(NS_DAV, "resourcetype")])
    (props,) = ms.values()
    assert props[clark(NS_DAV, "resourcetype")].find(clark(NS_DAV, "principal")) is not None


# ---------- DAViCal's 412 answers name DAV:if-match / DAV:if-none-match ----------
# DAViCal answers a failed If-Match or If-None-Match with 412 and a body
# <error xmlns="DAV:"><if-match/>Existing resource ETag of "..." does not
# match "..."</error> (or <if-none-match/>). That is the ordinary "the
# server copy changed" (a conflict), not a refusal of the content.

def test_conflict_on_a_412_naming_if_match_keeps_both_versions(davical, daemon_env):
    srv = davical
    cal, ab = seed(srv, events=2, contacts=1)
    cfg = config(daemon_env, srv, conflict_policy="local-wins")
    run_once(daemon_env, cfg)
    item = local_by_uid(cal_dir(daemon_env))[ev(0)]
    remote = server_by_uid(srv, cal)[ev(0)]
    server_put(srv, remote, replace_title(remote.text, "server side edit"))
    write_local(item.path, replace_title(item.text, "local side edit"))
    r = srv.request("PUT", remote.href, body=item.text, headers={
        "Content-Type": "text/calendar; charset=utf-8", "If-Match": remote.etag})
    assert r.status_code == 412 and "<if-match/>" in r.text, (r.status_code, r.text)

    lines = run_once(daemon_env, cfg)

    assert (lines[CAL].conflicts, lines[CAL].refused_items) == (1, 0), lines[CAL].text
    assert title_of(server_by_uid(srv, cal)[ev(0)].text) == "local side edit"
    assert title_of(local_by_uid(cal_dir(daemon_env))[ev(0)].text) == "local side edit"
    (copy,) = conflict_copies(daemon_env, ACCOUNT, "personal")
    assert copy.side == "server" and title_of(copy.text) == "server side edit"
    assert_in_sync(daemon_env, srv, cal, ab)
    assert_quiet(run_once(daemon_env, cfg))


def test_new_file_whose_upload_answer_was_lost_is_adopted(davical, daemon_env):
    """The item is already on the server under the name davsyncd uses (an
    earlier upload whose answer never arrived): If-None-Match: * gets 412
    naming DAV:if-none-match, and the same UID there means it is ours."""
    srv = davical
    cal, ab = seed(srv, events=1, contacts=1)
    cfg = config(daemon_env, srv)
    run_once(daemon_env, cfg)
    text = sd.make_event(40, SEED, summary="uploaded, answer lost")
    name = sd.filename_event(40, SEED)
    write_local(cal_dir(daemon_env) / name, text)
    srv.put_item(cal, name, text)
    r = srv.request("PUT", srv.item_path(cal, name), body=text, headers={
        "Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"})
    assert r.status_code == 412 and "<if-none-match/>" in r.text, (r.status_code, r.text)

    lines = run_once(daemon_env, cfg)

    assert lines[CAL].refused_items == 0 and lines[CAL].conflicts == 0, lines[CAL].text
    local = local_by_uid(cal_dir(daemon_env))    # raises on two files with one UID
    assert local[ev(40)].name == name
    assert len(srv.list_items(cal)) == 2
    assert_in_sync(daemon_env, srv, cal, ab)
    assert not conflict_copies(daemon_env, ACCOUNT, "personal")
    assert_quiet(run_once(daemon_env, cfg))
