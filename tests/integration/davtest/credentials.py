"""An account's credentials on a running davsyncd (test_daemon.RunningDaemon)
against a server that checks them (every DavServer has a user and password;
Radicale checks them with htpasswd): seed the server, then wait for the
password to be refused or to work.
"""

from __future__ import annotations

from davtest import sampledata as sd

SYNC_TIMEOUT = 30.0


def seed(server) -> None:
    """One calendar with one event, so that a sync that works writes a file."""
    server.put_item(server.make_calendar("cal", "Cal"), "e.ics", sd.make_event(1, "pw"))


def wait_refused(d, account: str) -> dict:
    """Account1 properties once the account waits for its credentials."""
    return d.wait(lambda: (a := d.account(account))["State"] == "auth-failed" and a, SYNC_TIMEOUT,
                  f"account '{account}' to wait for its credentials")


def wait_synced_ok(d, account: str, after: int) -> dict:
    """Account1 properties once a sync that ended after `after` (LastSync, µs) succeeded."""
    return d.wait(lambda: (a := d.account(account))["LastSync"] > after and a["LastResult"] == "ok" and a,
                  SYNC_TIMEOUT, f"a successful sync of account '{account}'")
