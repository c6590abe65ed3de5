"""`davsyncd --config FILE --discover [--json]` against real servers.

Contract (stdout, exit status 0):
{"accounts": [{"id", "principal_url", "calendar_homes": [...],
  "addressbook_homes": [...], "server_advertises_push": false,
  "collections": [{"href": "/alice/work/", "url": "http://...", "id": "work",
     "displayname", "color", "description", "kind": "calendar"|"tasks"|"addressbook",
     "components": [...], "sync_collection": true, "read_only": false,
     "push": {"web_push": false, "vapid_public_key": "", "topic": "",
              "content_update_depth": null, "property_update_depth": null}}]}]}
and the same account's result in $XDG_STATE_HOME/davsyncd/<account>/collections.json.
No "sync_token" or "ctag": discovery does not ask for them (Radicale computes
both from every item); the sync engine reads the token when it syncs.

Discovery only reads, so each server is started and seeded once per module.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from davtest import sampledata
from davtest.daemon import DaemonEnv, account_for, parse_json_stdout
from davtest.servers import OWNER_ONLY_RIGHTS, NS_DAV, Radicale, Xandikos, clark, read_only_rights


# ---------- seeded servers, expected collections ----------

def _seed_common(srv):
    work = srv.make_calendar("work", "Work", "#1E90FF", ("VEVENT",), description="Work things")
    for i in range(3):
        srv.put_item(work, sampledata.filename_event(i, "disc"), sampledata.make_event(i, "disc"))
    return work


@pytest.fixture(scope="module")
def seeded_radicale(tmp_path_factory):
    srv = Radicale(tmp_path_factory.mktemp("radicale")).start()
    work = _seed_common(srv)
    tasks = srv.make_calendar("tasks", "Tasks", "#FF8C00", ("VTODO",))
    srv.put_item(tasks, sampledata.filename_todo(0, "disc"), sampledata.make_todo(0, "disc"))
    contacts = srv.make_addressbook("contacts", "Contacts", description="People")
    for i in range(2):
        srv.put_item(contacts, sampledata.filename_contact(i, "disc"),
                     sampledata.make_contact(i, "disc"))
    srv.expected = {
        work: dict(id="work", kind="calendar", displayname="Work", color="#1E90FF",
                   components={"VEVENT"}, description="Work things"),
        tasks: dict(id="tasks", kind="tasks", displayname="Tasks", color="#FF8C00",
                    components={"VTODO"}),
        contacts: dict(id="contacts", kind="addressbook", displayname="Contacts",
                       components=set(), description="People"),
    }
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def seeded_xandikos(tmp_path_factory):
    srv = Xandikos(tmp_path_factory.mktemp("xandikos")).start()
    work = _seed_common(srv)
    friends = srv.make_addressbook("friends", "Friends")
    srv.put_item(friends, sampledata.filename_contact(0, "disc"),
                 sampledata.make_contact(0, "disc"))
    all_components = {"VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY"}
    # Xandikos 0.2.8 ignores the component set asked for (every calendar
    # takes everything) and cannot store descriptions.
    srv.expected = {
        work: dict(id="work", kind="calendar", displayname="Work", color="#1E90FF",
                   components=all_components),
        friends: dict(id="friends", kind="addressbook", displayname="Friends",
                      components=set()),
        "/alice/calendars/calendar/": dict(id="calendar", kind="calendar",
                                           displayname="calendar", components=all_components),
        "/alice/contacts/addressbook/": dict(id="addressbook", kind="addressbook",
                                             displayname="addressbook", components=set()),
    }
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def radicale_with_rights(tmp_path_factory):
    """Radicale 3.1.8 with a `from_file` rights file: "holidays" is granted
    "rR" (read only), everything else of alice's "rw" as with owner_only.
    Seeded while alice may still write everywhere."""
    srv = Radicale(tmp_path_factory.mktemp("radicale-rights"), rights=OWNER_ONLY_RIGHTS).start()
    work = _seed_common(srv)
    holidays = srv.make_calendar("holidays", "Holidays", "#FF0000", ("VEVENT",))
    srv.put_item(holidays, sampledata.filename_event(9, "hol"), sampledata.make_event(9, "hol"))
    contacts = srv.make_addressbook("contacts", "Contacts")
    srv.set_rights(read_only_rights("holidays"))
    srv.expected = {
        work: dict(id="work", kind="calendar", displayname="Work", color="#1E90FF",
                   components={"VEVENT"}, description="Work things"),
        holidays: dict(id="holidays", kind="calendar", displayname="Holidays", color="#FF0000",
                       components={"VEVENT"}, read_only=True),
        contacts: dict(id="contacts", kind="addressbook", displayname="Contacts", components=set()),
    }
    yield srv
    srv.stop()


# ---------- helpers ----------

def _abs(srv, href_or_url: str) -> str:
    return urllib.parse.urljoin(srv.base_url, href_or_url)


def _discover(env: DaemonEnv, accounts, *extra_args):
    cfg = env.write_config(accounts, path=env.root / "config.json")
    return env.run("--config", cfg, "--discover", *extra_args)


def _discover_json(env: DaemonEnv, accounts) -> dict:
    res = _discover(env, accounts, "--json")
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    doc = parse_json_stdout(res)
    assert isinstance(doc, dict) and isinstance(doc.get("accounts"), list), doc
    assert len(doc["accounts"]) == len(accounts), doc
    return doc


def _check_account(srv, acc: dict, account_id: str) -> None:
    assert acc["id"] == account_id
    assert _abs(srv, acc["principal_url"]) == srv.principal_url
    assert srv.calendar_home_url in [_abs(srv, h) for h in acc["calendar_homes"]], acc
    assert srv.addressbook_home_url in [_abs(srv, h) for h in acc["addressbook_homes"]], acc
    assert acc["server_advertises_push"] is False

    by_href = {}
    for col in acc["collections"]:
        assert col["href"] not in by_href, f"collection listed twice: {col['href']}"
        by_href[col["href"]] = col
    # Exactly the calendars and address books in the homes: no principal,
    # no home, no scheduling inbox/outbox.
    assert set(by_href) == set(srv.expected), sorted(by_href)

    server_view = srv.list_collections()
    for href, exp in srv.expected.items():
        col = by_href[href]
        where = f"collection {href}: {col}"
        assert col["url"] == srv.url(href), where
        assert col["id"] == exp["id"], where
        assert col["kind"] == exp["kind"], where
        assert col["displayname"] == exp["displayname"], where
        if "color" in exp:
            assert isinstance(col["color"], str) and col["color"].upper() == exp["color"], where
        if "description" in exp:
            assert col["description"] == exp["description"], where
        else:
            assert col["description"] == "", where
        assert isinstance(col["components"], list), where
        assert set(col["components"]) == exp["components"], where
        assert col["sync_collection"] is True, where
        assert col["read_only"] is exp.get("read_only", False), where
        assert "sync_token" not in col and "ctag" not in col, where
        assert server_view[href]["kind"] == col["kind"].replace("tasks", "calendar"), where
        push = col["push"]
        assert push["web_push"] is False, where
        assert push["vapid_public_key"] == "" and push["topic"] == "", where
        assert push["content_update_depth"] is None, where
        assert push["property_update_depth"] is None, where


def _check_state_file(env: DaemonEnv, acc: dict) -> None:
    path = env.state_dir / acc["id"] / "collections.json"
    assert path.is_file(), f"missing {path}"
    stored = json.loads(path.read_text())
    cols = stored["collections"] if isinstance(stored, dict) else stored
    assert isinstance(cols, list)
    assert sorted(c["href"] for c in cols) == sorted(c["href"] for c in acc["collections"])
    by_href = {c["href"]: c for c in cols}
    for c in acc["collections"]:
        for key in ("kind", "displayname", "read_only", "url"):
            assert by_href[c["href"]][key] == c[key], (c["href"], key)


# ---------- tests ----------

def test_radicale_from_home_url(seeded_radicale, daemon_env):
    srv = seeded_radicale
    doc = _discover_json(daemon_env, [account_for(srv, "personal", url=srv.home_url)])
    acc = doc["accounts"][0]
    _check_account(srv, acc, "personal")
    _check_state_file(daemon_env, acc)


def test_radicale_from_bare_server_url(seeded_radicale, daemon_env):
    srv = seeded_radicale
    doc = _discover_json(daemon_env, [account_for(srv, "rad", url=srv.base_url)])
    acc = doc["accounts"][0]
    _check_account(srv, acc, "rad")
    _check_state_file(daemon_env, acc)


def test_radicale_from_server_url_without_trailing_slash(seeded_radicale, daemon_env):
    srv = seeded_radicale
    doc = _discover_json(daemon_env, [account_for(srv, "rad", url=srv.base_url.rstrip("/"))])
    _check_account(srv, doc["accounts"][0], "rad")


def test_xandikos_from_bare_server_url(seeded_xandikos, daemon_env):
    srv = seeded_xandikos
    doc = _discover_json(daemon_env, [account_for(srv, "xan", url=srv.base_url)])
    acc = doc["accounts"][0]
    _check_account(srv, acc, "xan")
    _check_state_file(daemon_env, acc)


def test_xandikos_from_principal_url(seeded_xandikos, daemon_env):
    srv = seeded_xandikos
    doc = _discover_json(daemon_env, [account_for(srv, "xan", url=srv.principal_url)])
    acc = doc["accounts"][0]
    _check_account(srv, acc, "xan")
    _check_state_file(daemon_env, acc)


def test_two_accounts_in_config_order(seeded_radicale, seeded_xandikos, daemon_env):
    doc = _discover_json(daemon_env, [
        account_for(seeded_xandikos, "b-xandikos", url=seeded_xandikos.base_url),
        account_for(seeded_radicale, "a-radicale", url=seeded_radicale.base_url),
    ])
    assert [a["id"] for a in doc["accounts"]] == ["b-xandikos", "a-radicale"]
    _check_account(seeded_xandikos, doc["accounts"][0], "b-xandikos")
    _check_account(seeded_radicale, doc["accounts"][1], "a-radicale")
    for acc in doc["accounts"]:
        _check_state_file(daemon_env, acc)


def test_password_command(seeded_radicale, daemon_env):
    srv = seeded_radicale
    secret_file = daemon_env.root / "secret"
    secret_file.write_text(srv.password + "\n")
    doc = _discover_json(daemon_env, [account_for(
        srv, "cmd", url=srv.base_url, password_command=f"cat {secret_file}")])
    _check_account(srv, doc["accounts"][0], "cmd")


def test_human_readable_output(seeded_radicale, daemon_env):
    srv = seeded_radicale
    res = _discover(daemon_env, [account_for(srv, "personal")])
    assert res.returncode == 0, f"exit {res.returncode}\nstderr: {res.stderr}"
    for name in ("Work", "Tasks", "Contacts"):
        assert name in res.stdout, res.stdout
    assert srv.password not in res.stdout + res.stderr


def test_wrong_password_fails_without_leaking_it(seeded_radicale, daemon_env):
    srv = seeded_radicale
    wrong = "wrong-" + srv.password[::-1]
    res = _discover(daemon_env, [account_for(srv, "personal", password=wrong)], "--json")
    assert res.returncode != 0, f"stdout: {res.stdout}\nstderr: {res.stderr}"
    assert re.search(r"authenticat", res.stderr, re.IGNORECASE), res.stderr
    for stream in (res.stdout, res.stderr):
        assert wrong not in stream
        assert srv.password not in stream


def test_radicale_from_a_path_it_refuses(seeded_radicale, daemon_env):
    # Radicale answers 403 for a path outside alice's rights; discovery goes
    # on to /.well-known/caldav, which Radicale redirects to its root.
    srv = seeded_radicale
    doc = _discover_json(daemon_env, [account_for(srv, "rad", url=srv.url("/nobody/here/"))])
    _check_account(srv, doc["accounts"][0], "rad")


def _privileges(srv, collection) -> set[str]:
    ms = srv.propfind(collection, [clark(NS_DAV, "current-user-privilege-set")], depth=0)
    (props,) = ms.values()
    cups = props[clark(NS_DAV, "current-user-privilege-set")]
    return {child.tag for privilege in cups for child in privilege}


def test_radicale_rights_file_makes_a_read_only_calendar(radicale_with_rights, daemon_env):
    srv = radicale_with_rights
    holidays = "/alice/holidays/"
    # What Radicale 3.1.8 really reports: read alone under "rR", and
    # read, all, write, write-properties, write-content under "rw".
    assert _privileges(srv, holidays) == {clark(NS_DAV, "read")}
    assert _privileges(srv, "/alice/work/") == {clark(NS_DAV, p) for p in (
        "read", "all", "write", "write-properties", "write-content")}
    assert _privileges(srv, "/alice/contacts/") >= {clark(NS_DAV, "write")}
    r = srv.request("PUT", srv.item_path(holidays, "new.ics"), body=sampledata.make_event(1, "hol"),
                    headers={"Content-Type": "text/calendar"})
    assert r.status_code == 403, (r.status_code, r.text)   # the server means it

    doc = _discover_json(daemon_env, [account_for(srv, "ro", url=srv.base_url)])
    acc = doc["accounts"][0]
    _check_account(srv, acc, "ro")
    _check_state_file(daemon_env, acc)
    by_id = {c["id"]: c for c in acc["collections"]}
    assert by_id["holidays"]["read_only"] is True
    assert by_id["work"]["read_only"] is False
    assert by_id["contacts"]["read_only"] is False

    res = _discover(daemon_env, [account_for(srv, "ro", url=srv.base_url)])
    assert res.returncode == 0, res.stderr
    lines = {line.split()[1]: line for line in res.stdout.splitlines()
             if line.startswith("  ") and not line.startswith("    ") and len(line.split()) > 2}
    assert lines["Holidays"].endswith(" read-only"), res.stdout
    assert "read-only" not in lines["Work"] and "read-only" not in lines["Contacts"], res.stdout
    assert "sync=sync-collection" in res.stdout


def test_nothing_there_names_every_url_tried(daemon_env, tmp_path):
    # A plain web server (Python's) where a user pasted its URL: it answers
    # PROPFIND with 501 on the URL and on both well-known URIs.
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(tmp_path)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        cfg = daemon_env.write_config([{"id": "web", "url": base, "username": "alice", "password": "pw"}],
                                      path=daemon_env.root / "config.json")
        res = daemon_env.run("--config", cfg, "--discover", "--json")
    finally:
        httpd.shutdown()
        thread.join()
    assert res.returncode != 0, res.stdout
    for url in (base, base + ".well-known/caldav", base + ".well-known/carddav"):
        assert f"{url} (HTTP 501" in res.stderr, res.stderr
    assert "no CalDAV or CardDAV service found" in res.stderr, res.stderr


def test_missing_config_file_is_named(daemon_env, tmp_path):
    missing = tmp_path / "nowhere" / "config.json"
    res = daemon_env.run("--config", missing, "--discover", "--json")
    assert res.returncode != 0, f"stdout: {res.stdout}\nstderr: {res.stderr}"
    assert str(missing) in res.stderr, res.stderr


def test_push_capable_collections_show_push_web_push(seeded_radicale, daemon_env):
    """README: a server that lists `transports` / `topic` on its collections:
    `davsyncd --discover` shows `push=web-push` for them (and push=no for the
    others)."""
    from davtest.pushfront import PushFront
    srv = seeded_radicale
    with PushFront(srv.base_url, push_filter=lambda path: "/tasks/" not in path) as front:
        res = _discover(daemon_env, [account_for(front.server_view(srv), "personal")])
    assert res.returncode == 0, f"exit {res.returncode}\nstderr: {res.stderr}"
    assert "push: server announces webdav-push" in res.stdout, res.stdout
    push = dict(re.findall(r"^\s+id=(\S+) .*\bpush=(\S+)$", res.stdout, re.M))
    assert push.get("tasks") == "no", res.stdout
    others = {k: v for k, v in push.items() if k != "tasks"}
    assert others and set(others.values()) == {"web-push"}, res.stdout
