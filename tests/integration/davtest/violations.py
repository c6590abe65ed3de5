"""Every spec violation a test double records fails the test that caused it.

The push front and the distributor double call track() when they are made;
conftest.py's autouse fixture calls begin() before each test and, after
every other fixture is torn down, unread() to fail the test with whatever
the doubles of that test recorded and nobody took. A test that provokes a
violation on purpose takes it with the double's take_violations(), which
also clears it.
"""

from __future__ import annotations

import threading
from typing import Protocol


class RecordsViolations(Protocol):
    def take_violations(self) -> list[str]: ...


_lock = threading.Lock()
_doubles: list[RecordsViolations] = []


def track(double: RecordsViolations) -> None:
    with _lock:
        _doubles.append(double)


def begin() -> None:
    with _lock:
        _doubles.clear()


def unread() -> list[str]:
    """The violations no one took, each prefixed with its double's class."""
    with _lock:
        doubles = list(_doubles)
        _doubles.clear()
    out = []
    for d in doubles:
        try:
            found = d.take_violations()
        except Exception as e:  # noqa: BLE001 - reported as a violation itself
            found = [f"could not read its violations: {type(e).__name__}: {e}"]
        out += [f"{type(d).__name__}: {v}" for v in found]
    return out
