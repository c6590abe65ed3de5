"""The synced folders work with the real vdir readers: khal and khard (Debian).

Each program gets a temporary config file and private HOME/XDG folders. khal
finds the calendar through `type = discover`, so its calendar name comes
from the `displayname` file davsyncd writes. Items created or removed with
the programs go back to the server on the next `--once`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.vdir import (
    assert_same_items, local_by_uid, replace_title, run_once, server_by_uid, server_put,
    title_of, vdir_folder,
)

ACCOUNT = "demo"
SEED = "readers"
EVENT_TITLES = ["Reader standup", "Reader dentist", "Reader dinner"]

pytestmark = pytest.mark.skipif(not (shutil.which("khal") and shutil.which("khard")),
                                reason="khal and khard (Debian packages) are needed")


def now_hour() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)


def seed(srv) -> tuple[str, str]:
    """3 events in the coming days, one long past; 3 contacts."""
    cal = srv.make_calendar("personal", "Personal", "#1E90FF")
    ab = srv.make_addressbook("contacts", "Contacts")
    start = now_hour()
    for i, title in enumerate(EVENT_TITLES):
        srv.put_item(cal, sd.filename_event(i, SEED),
                     sd.make_event(i, SEED, start=start + dt.timedelta(days=i + 1), summary=title))
    srv.put_item(cal, sd.filename_event(9, SEED),
                 sd.make_event(9, SEED, start=start - dt.timedelta(days=400), summary="Reader long ago"))
    for i in range(3):
        srv.put_item(ab, sd.filename_contact(i, SEED), sd.make_contact(i, SEED))
    return cal, ab


class Reader:
    """Runs khal/khard with a private config and private HOME/XDG folders."""

    def __init__(self, root: Path, data_root: Path):
        self.root = root
        for d in ("home", "config", "data", "cache"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.khal_conf = root / "khal.conf"
        self.khal_conf.write_text(f"""\
[calendars]
[[synced]]
path = {data_root / "personal"}
type = discover

[locale]
local_timezone = UTC
default_timezone = UTC
timeformat = %H:%M
dateformat = %Y-%m-%d
longdateformat = %Y-%m-%d
datetimeformat = %Y-%m-%d %H:%M
longdatetimeformat = %Y-%m-%d %H:%M

[sqlite]
path = {root / "khal.db"}
""")
        self.khard_conf = root / "khard.conf"
        self.khard_conf.write_text(f"""\
[addressbooks]
[[contacts]]
path = {data_root / "contacts"}

[general]
debug = no
default_action = list
editor = /bin/false
merge_editor = /bin/false

[contact table]
display = formatted_name
sort = last_name
""")

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        env.update(HOME=str(self.root / "home"), XDG_CONFIG_HOME=str(self.root / "config"),
                   XDG_DATA_HOME=str(self.root / "data"), XDG_CACHE_HOME=str(self.root / "cache"),
                   TZ="UTC", LC_ALL="C.UTF-8", EDITOR="/bin/false", VISUAL="/bin/false")
        return env

    def run(self, program: str, *args: str, input: str | None = None) -> str:
        conf = self.khal_conf if program == "khal" else self.khard_conf
        cmd = [program, "-c", str(conf), *args]
        res = subprocess.run(cmd, env=self.env(), input=input, capture_output=True, text=True,
                             timeout=60, stdin=None if input is not None else subprocess.DEVNULL)
        assert res.returncode == 0, (f"{' '.join(cmd)}: exit status {res.returncode}\n"
                                     f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
        return res.stdout

    def khal_titles(self) -> list[str]:
        out = self.run("khal", "list", "--format", "{title}|{calendar}", "--day-format", "",
                       "today", "30d")
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        assert all(len(r) == 2 and r[1] == "Personal" for r in rows), out
        return sorted(r[0] for r in rows)

    def khard_names(self) -> list[str]:
        out = self.run("khard", "list", "--parsable")
        # uid <TAB> name <TAB> address book
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        assert all(len(r) == 3 and r[2] == "contacts" for r in rows), out
        return sorted(r[1] for r in rows)


@pytest.fixture
def synced(dav_server, daemon_env, tmp_path):
    cal, ab = seed(dav_server)
    cfg = daemon_env.write_config([account_for(
        dav_server, ACCOUNT, collections={"include": ["personal", "contacts"]})])
    run_once(daemon_env, cfg)
    reader = Reader(tmp_path / "readers", daemon_env.data_dir / ACCOUNT)
    return dict(srv=dav_server, env=daemon_env, cfg=cfg, cal=cal, ab=ab, reader=reader)


def test_khal_lists_the_synced_events(synced):
    reader, srv, env = synced["reader"], synced["srv"], synced["env"]
    assert reader.run("khal", "printcalendars").split() == ["Personal"], \
        "khal does not name the calendar after its displayname file"
    assert reader.khal_titles() == sorted(EVENT_TITLES)
    found = reader.run("khal", "search", "Reader")
    for title in EVENT_TITLES + ["Reader long ago"]:
        assert title in found, f"khal search misses {title!r}:\n{found}"

    # A server edit reaches khal after the next sync.
    item = server_by_uid(srv, synced["cal"])[sd.uid_event(1, SEED)]
    server_put(srv, item, replace_title(item.text, "Reader dentist moved"))
    run_once(env, synced["cfg"])
    assert reader.khal_titles() == sorted(["Reader standup", "Reader dentist moved", "Reader dinner"])


def test_event_made_with_khal_goes_to_the_server(synced):
    reader, srv, env = synced["reader"], synced["srv"], synced["env"]
    day = (now_hour() + dt.timedelta(days=5)).strftime("%Y-%m-%d")
    reader.run("khal", "new", "-a", "Personal", day, "10:00", "11:00", "Made with khal")
    assert "Made with khal" in reader.khal_titles()

    lines = run_once(env, synced["cfg"])

    assert lines[f"{ACCOUNT}/personal"].up == 1, lines[f"{ACCOUNT}/personal"].text
    remote = server_by_uid(srv, synced["cal"])
    made = [u for u, it in remote.items() if title_of(it.text) == "Made with khal"]
    assert len(made) == 1, f"server titles: {[title_of(i.text) for i in remote.values()]}"
    local = local_by_uid(vdir_folder(env, ACCOUNT, "personal"))
    assert_same_items(local, remote)
    assert reader.khal_titles() == sorted(EVENT_TITLES + ["Made with khal"])


def test_khard_lists_the_synced_contacts(synced):
    reader, srv, env = synced["reader"], synced["srv"], synced["env"]
    names = [" ".join(sd.contact_name(i)) for i in range(3)]
    assert reader.khard_names() == sorted(names)
    emails = reader.run("khard", "email", "--parsable")
    for i, name in enumerate(names):
        given, family = sd.contact_name(i)
        address = f"{given}.{family}".lower().replace("-", "") + f".{i}@example.org"
        assert f"{address}\t{name}\t" in emails, f"khard email misses {address}:\n{emails}"

    item = server_by_uid(srv, synced["ab"])[sd.uid_contact(0, SEED)]
    server_put(srv, item, replace_title(item.text, "Augusta Ada King"))
    run_once(env, synced["cfg"])
    assert reader.khard_names() == sorted(["Augusta Ada King"] + names[1:])


def test_contacts_made_and_removed_with_khard_go_to_the_server(synced):
    reader, srv, env = synced["reader"], synced["srv"], synced["env"]
    reader.run("khard", "new", "-a", "contacts",
               input="First name : Grace\nLast name : Hopper\nEmail :\n    work : grace@example.org\n")
    removed = " ".join(sd.contact_name(1))
    reader.run("khard", "remove", "-a", "contacts", "--force", removed)
    assert "Grace Hopper" in reader.khard_names() and removed not in reader.khard_names()

    lines = run_once(env, synced["cfg"])

    line = lines[f"{ACCOUNT}/contacts"]
    assert (line.up, line.deleted_server) == (1, 1), line.text
    remote = server_by_uid(srv, synced["ab"])
    titles = sorted(title_of(i.text) for i in remote.values())
    assert titles == sorted(["Grace Hopper", " ".join(sd.contact_name(0)), " ".join(sd.contact_name(2))])
    assert_same_items(local_by_uid(vdir_folder(env, ACCOUNT, "contacts")), remote)
