"""Deterministic sample items: iCalendar events and todos, vCard 3.0 contacts.

Every function is a pure function of its arguments: the same (index, seed,
base date) gives byte-identical output. Lines end in CRLF and stay under 75
octets, so no folding is needed. Each maker returns the item text; uid_* and
filename_* give the matching UID and a safe file name (UID + extension).
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

CRLF = "\r\n"
PRODID = "-//davsyncd//davtest//EN"

# A fixed reference time so that default output never depends on the clock.
BASE = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.timezone.utc)
DTSTAMP = "20240101T000000Z"

_FIRST = ["Ada", "Brian", "Chloe", "Dmitri", "Eun-ji", "Fatima", "Gustav", "Hana",
          "Ivan", "Jamal", "Kirsi", "Luis", "Mei", "Nadia", "Oskar", "Priya"]
_LAST = ["Lovelace", "Kernighan", "Dubois", "Ivanov", "Kim", "Haddad", "Larsen",
         "Novak", "Petrov", "Okafor", "Virtanen", "Garcia", "Chen", "Rahman",
         "Berg", "Sharma"]
_TOPICS = ["Team meeting", "Dentist", "Lunch with Sam", "Code review", "Gym",
           "Project kickoff", "Call with the bank", "Dinner", "Planning", "Yoga"]
_TODOS = ["Buy milk", "File tax return", "Water the plants", "Renew passport",
          "Book train tickets", "Fix the bike"]


def _fmt(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _ical_escape(s: str) -> str:
    return (s.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\n", "\\n"))


def _lines(lines: list[str]) -> str:
    for line in lines:
        assert len(line.encode("utf-8")) <= 75, f"line too long for sample data: {line!r}"
    return CRLF.join(lines) + CRLF


def uid_event(index: int, seed: str = "s") -> str:
    return f"davtest-{seed}-event-{index}@davsyncd.test"


def uid_todo(index: int, seed: str = "s") -> str:
    return f"davtest-{seed}-todo-{index}@davsyncd.test"


def uid_contact(index: int, seed: str = "s") -> str:
    return f"davtest-{seed}-contact-{index}@davsyncd.test"


def filename_event(index: int, seed: str = "s") -> str:
    return uid_event(index, seed) + ".ics"


def filename_todo(index: int, seed: str = "s") -> str:
    return uid_todo(index, seed) + ".ics"


def filename_contact(index: int, seed: str = "s") -> str:
    return uid_contact(index, seed) + ".vcf"


def make_event(index: int, seed: str = "s", *, start: Optional[dt.datetime] = None,
               duration: dt.timedelta = dt.timedelta(hours=1), summary: Optional[str] = None,
               uid: Optional[str] = None, description: Optional[str] = None,
               sequence: int = 0) -> str:
    """A VCALENDAR with one VEVENT. Default start: BASE + index days (+ index % 8 hours)."""
    if start is None:
        start = BASE + dt.timedelta(days=index, hours=index % 8)
    summary = summary if summary is not None else f"{_TOPICS[index % len(_TOPICS)]} #{index}"
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "BEGIN:VEVENT",
        f"UID:{uid or uid_event(index, seed)}",
        f"DTSTAMP:{DTSTAMP}",
        f"DTSTART:{_fmt(start)}",
        f"DTEND:{_fmt(start + duration)}",
        f"SUMMARY:{_ical_escape(summary)}",
    ]
    if description is not None:
        lines.append(f"DESCRIPTION:{_ical_escape(description)}")
    if sequence:
        lines.append(f"SEQUENCE:{sequence}")
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return _lines(lines)


def make_todo(index: int, seed: str = "s", *, due: Optional[dt.datetime] = None,
              summary: Optional[str] = None, uid: Optional[str] = None,
              completed: bool = False) -> str:
    """A VCALENDAR with one VTODO. Default due: BASE + index + 1 days."""
    if due is None:
        due = BASE + dt.timedelta(days=index + 1)
    summary = summary if summary is not None else _TODOS[index % len(_TODOS)]
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "BEGIN:VTODO",
        f"UID:{uid or uid_todo(index, seed)}",
        f"DTSTAMP:{DTSTAMP}",
        f"DUE:{_fmt(due)}",
        f"SUMMARY:{_ical_escape(summary)}",
        "STATUS:COMPLETED" if completed else "STATUS:NEEDS-ACTION",
        "END:VTODO",
        "END:VCALENDAR",
    ]
    return _lines(lines)


def contact_name(index: int) -> tuple[str, str]:
    """(given, family) for contact `index`; distinct for index < 256."""
    return _FIRST[index % len(_FIRST)], _LAST[(index // len(_FIRST) + index) % len(_LAST)]


def make_contact(index: int, seed: str = "s", *, uid: Optional[str] = None,
                 given: Optional[str] = None, family: Optional[str] = None,
                 email: Optional[str] = None) -> str:
    """A vCard 3.0 with UID, FN, N, EMAIL and TEL."""
    g, f = contact_name(index)
    given = given if given is not None else g
    family = family if family is not None else f
    local = f"{given}.{family}".lower().replace(" ", "").replace("-", "")
    email = email or f"{local}.{index}@example.org"
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid or uid_contact(index, seed)}",
        f"FN:{given} {family}",
        f"N:{family};{given};;;",
        f"EMAIL;TYPE=INTERNET:{email}",
        f"TEL;TYPE=CELL:+1-555-{index % 10000:04d}",
        "END:VCARD",
    ]
    return _lines(lines)


def seed_demo(server, today: Optional[dt.date] = None) -> dict[str, str]:
    """Seeds a server with what the demo shows:

    - "Personal" calendar (personal, #1E90FF, VEVENT) with 5 events in the
      coming week (one per day from tomorrow, times in UTC),
    - "Tasks" task list (tasks, #FF8C00, VTODO) with 2 todos,
    - "Contacts" address book (contacts) with 5 contacts.

    Returns {"personal": path, "tasks": path, "contacts": path}.
    """
    if today is None:
        today = dt.datetime.now(dt.timezone.utc).date()
    personal = server.make_calendar("personal", "Personal", "#1E90FF", ("VEVENT",),
                                    description="Demo calendar")
    tasks = server.make_calendar("tasks", "Tasks", "#FF8C00", ("VTODO",),
                                 description="Demo task list")
    contacts = server.make_addressbook("contacts", "Contacts", description="Demo contacts")
    for i in range(5):
        day = today + dt.timedelta(days=i + 1)
        start = dt.datetime(day.year, day.month, day.day, 9 + 2 * i, 0, tzinfo=dt.timezone.utc)
        server.put_item(personal, filename_event(i, "demo"), make_event(i, "demo", start=start))
    for i in range(2):
        day = today + dt.timedelta(days=2 * i + 2)
        due = dt.datetime(day.year, day.month, day.day, 17, 0, tzinfo=dt.timezone.utc)
        server.put_item(tasks, filename_todo(i, "demo"), make_todo(i, "demo", due=due))
    for i in range(5):
        server.put_item(contacts, filename_contact(i, "demo"), make_contact(i, "demo"))
    return {"personal": personal, "tasks": tasks, "contacts": contacts}
