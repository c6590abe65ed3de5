"""Deterministic benchmark items and fast server population.

Items are a pure function of (kind, index, seed): vCard 3.0 contacts and
iCalendar events with CRLF line ends, short lines (no folding) and a few
hundred bytes each, like an ordinary address book and calendar.

Servers are filled by writing their storage directly (Radicale: the
multifilesystem layout; Xandikos: one git commit), not with thousands of PUTs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
from pathlib import Path

CRLF = "\r\n"

_FIRST = ["Ada", "Brian", "Chloe", "Dmitri", "Eun-ji", "Fatima", "Gustav", "Hana", "Ivan",
          "Jamal", "Kirsi", "Luis", "Mei", "Nadia", "Oskar", "Priya", "Quentin", "Rosa",
          "Sven", "Tomoko", "Uma", "Viktor", "Wen", "Yusuf", "Zofia"]
_LAST = ["Lovelace", "Kernighan", "Dubois", "Ivanov", "Kim", "Haddad", "Larsen", "Novak",
         "Petrov", "Okafor", "Virtanen", "Garcia", "Chen", "Rahman", "Berg", "Sharma",
         "Rossi", "Nakamura", "Silva", "Fischer", "Kowalski", "Moreau", "Jensen"]
_ORGS = ["Acme GmbH", "Globex", "Initech", "Umbrella Ltd", "Hooli", "Stark Industries",
         "Wayne Enterprises", "Tyrell Corp", "Soylent", "Cyberdyne"]
_STREETS = ["Main St", "High St", "Station Rd", "Church Ln", "Park Ave", "Mill Rd"]
_CITIES = ["Berlin", "Lyon", "Turku", "Porto", "Leeds", "Kraków", "Bologna", "Aarhus"]
_TOPICS = ["Team meeting", "Dentist", "Lunch with Sam", "Code review", "Gym", "Planning",
           "Project kickoff", "Call with the bank", "Dinner", "Yoga", "1:1", "Retro"]
_WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
          "incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis").split()

BASE = dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.timezone.utc)
STAMP = "20240101T000000Z"


def _rng(kind: str, index: int, seed: int, version: int = 0) -> random.Random:
    return random.Random(f"{seed}:{kind}:{index}:{version}")


def _words(r: random.Random, n: int) -> str:
    return " ".join(r.choice(_WORDS) for _ in range(n))


def contact_uid(index: int, seed: int) -> str:
    return f"bench-{seed}-contact-{index:06d}"


def event_uid(index: int, seed: int) -> str:
    return f"bench-{seed}-event-{index:06d}"


def contact_name(index: int, seed: int) -> str:
    return contact_uid(index, seed) + ".vcf"


def event_name(index: int, seed: int) -> str:
    return event_uid(index, seed) + ".ics"


def make_contact(index: int, seed: int = 1, version: int = 0) -> str:
    """A vCard 3.0; `version` > 0 gives an edited variant (other note, REV)."""
    r = _rng("contact", index, seed)
    note = _words(_rng("contact-note", index, seed, version), 7)
    first, last = r.choice(_FIRST), r.choice(_LAST)
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{contact_uid(index, seed)}",
        f"FN:{first} {last}",
        f"N:{last};{first};;;",
        f"ORG:{r.choice(_ORGS)}",
        f"EMAIL;TYPE=INTERNET:{first.lower()}.{last.lower()}.{index}@example.org",
        f"TEL;TYPE=CELL:+49 170 {r.randrange(10**7):07d}",
        f"ADR;TYPE=HOME:;;{r.randrange(1, 200)} {r.choice(_STREETS)};{r.choice(_CITIES)};;"
        f"{r.randrange(10000, 99999)};",
        f"NOTE:{note}",
        f"REV:{(BASE + dt.timedelta(minutes=version)).strftime('%Y%m%dT%H%M%SZ')}",
        "END:VCARD",
    ]
    return CRLF.join(lines) + CRLF


def make_event(index: int, seed: int = 1, version: int = 0) -> str:
    """A VCALENDAR with one VEVENT; `version` > 0 gives an edited variant."""
    r = _rng("event", index, seed)
    description = _words(_rng("event-description", index, seed, version), 7)
    start = BASE + dt.timedelta(days=index // 4, hours=2 * (index % 4) + r.randrange(2))
    end = start + dt.timedelta(minutes=30 * r.randrange(1, 5))
    fmt = "%Y%m%dT%H%M%SZ"
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//davsyncd//bench//EN",
        "BEGIN:VEVENT",
        f"UID:{event_uid(index, seed)}",
        f"DTSTAMP:{STAMP}",
        f"DTSTART:{start.strftime(fmt)}",
        f"DTEND:{end.strftime(fmt)}",
        f"SUMMARY:{r.choice(_TOPICS)} #{index}",
        f"LOCATION:Room {r.randrange(1, 40)}\\, {r.choice(_CITIES)}",
        f"DESCRIPTION:{description}",
        f"SEQUENCE:{version}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return CRLF.join(lines) + CRLF


# What a collection holds: (name on the server, kind, number of items).
class CollectionSpec:
    def __init__(self, name: str, kind: str, count: int, displayname: str | None = None):
        assert kind in ("contacts", "events")
        self.name, self.kind, self.count = name, kind, count
        self.displayname = displayname or name

    @property
    def is_addressbook(self) -> bool:
        return self.kind == "contacts"

    @property
    def ext(self) -> str:
        return ".vcf" if self.is_addressbook else ".ics"

    def item_name(self, index: int, seed: int) -> str:
        return (contact_name if self.is_addressbook else event_name)(index, seed)

    def item(self, index: int, seed: int, version: int = 0) -> str:
        return (make_contact if self.is_addressbook else make_event)(index, seed, version)

    def __repr__(self) -> str:
        return f"CollectionSpec({self.name!r}, {self.kind!r}, {self.count})"


def write_items(folder: Path, spec: CollectionSpec, seed: int) -> int:
    """Writes the items of `spec` as files into `folder`; returns bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(spec.count):
        data = spec.item(i, seed).encode()
        with open(folder / spec.item_name(i, seed), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def populate_radicale(storage_dir: Path, user: str, specs: list[CollectionSpec], seed: int) -> int:
    """Radicale 3.1.8 multifilesystem layout:
    <storage>/collection-root/<user>/<coll>/{<item files>, .Radicale.props}."""
    root = storage_dir / "collection-root" / user
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for spec in specs:
        folder = root / spec.name
        total += write_items(folder, spec, seed)
        if spec.is_addressbook:
            props = {"tag": "VADDRESSBOOK", "D:displayname": spec.displayname}
        else:
            props = {"tag": "VCALENDAR", "D:displayname": spec.displayname,
                     "C:supported-calendar-component-set": "VEVENT"}
        (folder / ".Radicale.props").write_text(json.dumps(props, sort_keys=True))
    return total


def populate_git_collection(repo: Path, spec: CollectionSpec, seed: int) -> int:
    """Adds the items of `spec` to a Xandikos collection (a git working tree
    with an index) in one commit, with the git command line."""
    total = write_items(repo, spec, seed)
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost",
               GIT_AUTHOR_DATE="2024-01-01T00:00:00Z", GIT_COMMITTER_DATE="2024-01-01T00:00:00Z")
    subprocess.run(["git", "-C", str(repo), "add", "-A", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", f"bench: {spec.count} items"],
                   check=True, env=env)
    return total
