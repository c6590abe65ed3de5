"""Servers that do not answer, or answer "come back in 31 years": the daemon
stays responsive, stops promptly, and keeps its schedule sane.

A tiny server of the test's own stands in for the misbehaving one (a real
server cannot be made to stall on demand); a real Radicale is the healthy
second account. Private bus; waits are conditions with deadlines.
"""

from __future__ import annotations

import socket
import threading
from typing import Optional

import pytest

from davtest import sampledata as sd
from davtest.daemon import account_for
from davtest.dbus import ACCOUNT as ACCOUNT_IFACE, account_path
from davtest.vdir import local_by_uid, vdir_folder
from test_daemon import INTERVAL, start_daemon  # noqa: F401  (fixture)

SIX_HOURS_US = 6 * 3600 * 1_000_000


class TinyServer:
    """Accepts HTTP connections on 127.0.0.1 and answers each request with
    `reply` (raw bytes), or never answers when `reply` is None. Counts
    requests; stop() closes everything."""

    def __init__(self, reply: Optional[bytes]):
        self.reply = reply
        self.requests = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/"

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(buf) < length and not self._stop.is_set():
                    try:
                        buf += conn.recv(65536)
                    except socket.timeout:
                        continue
                buf = buf[length:]
                self.requests += 1
                if self.reply is not None:
                    conn.sendall(self.reply)

    def stop(self) -> None:
        self._stop.set()
        for c in self._conns:
            c.close()
        self._sock.close()
        self._thread.join(5)


def _healthy(radicale):
    path = radicale.make_calendar("ok", "OK")
    radicale.put_item(path, "a.ics", sd.make_event(1, "ok"))
    return account_for(radicale, "healthy", sync_interval=INTERVAL)


def test_a_stalled_request_does_not_hold_up_the_daemon(radicale, daemon_env, bus, start_daemon):
    stall = TinyServer(reply=None)
    try:
        stuck = {"id": "stuck", "url": stall.url, "username": "", "sync_interval": INTERVAL}
        d = start_daemon(daemon_env.write_config([stuck, _healthy(radicale)]))
        d.wait(lambda: stall.requests >= 1, 30, "the stalled request")
        # Meanwhile: the healthy account syncs, on request too, and the bus answers.
        d.wait_synced("healthy")
        radicale.put_item("/alice/ok/", "b.ics", sd.make_event(2, "ok"))
        before = d.account("healthy")["LastSync"]
        bus.call(account_path("healthy"), f"{ACCOUNT_IFACE}.Sync")
        d.wait_synced("healthy", after=before)
        assert len(local_by_uid(vdir_folder(daemon_env, "healthy", "ok"))) == 2
        assert d.account("stuck")["State"] == "syncing"
        assert len(bus.managed_objects()) >= 2
        # SIGTERM while the request still stalls: gone within the deadline
        # (a request notices the stop within a second).
        d.signal(15)
        assert d.wait_exit(10) == 0
    finally:
        stall.stop()


def test_an_absurd_retry_after_is_clamped(radicale, daemon_env, bus, start_daemon):
    busy = TinyServer(reply=b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 999999999\r\n"
                            b"Content-Length: 0\r\n\r\n")
    try:
        busy_acc = {"id": "busy", "url": busy.url, "username": "", "sync_interval": INTERVAL}
        d = start_daemon(daemon_env.write_config([busy_acc]))
        a = d.wait(lambda: (x := d.account("busy"))["State"] == "backoff" and x, 30, "the 503")
        assert "503" in a["LastError"]
        # NextSync and LastSync are both the daemon's own clock: no wall-clock comparison with the test.
        delay = a["NextSync"] - a["LastSync"]
        assert 0 < delay <= SIX_HOURS_US + 60_000_000, delay
        assert delay >= 5 * 60 * 60 * 1_000_000 - 60_000_000, delay  # it was honoured, up to the clamp
    finally:
        busy.stop()


@pytest.mark.parametrize("status,retry_after,want_s", [(429, "120", 120), (503, "1", 5)],
                         ids=["429-honoured", "503-raised-to-5s"])
def test_retry_after_reaches_the_scheduler(daemon_env, bus, start_daemon, status, retry_after,
                                           want_s):
    """README: a failed sync is retried after "the Retry-After of a 429 or
    503, kept between 5 s and 6 h": the server's value, end to end."""
    reason = {429: b"Too Many Requests", 503: b"Service Unavailable"}[status]
    busy = TinyServer(reply=b"HTTP/1.1 %d %s\r\nRetry-After: %s\r\nContent-Length: 0\r\n\r\n"
                      % (status, reason, retry_after.encode()))
    try:
        acc = {"id": "busy", "url": busy.url, "username": "", "sync_interval": INTERVAL}
        d = start_daemon(daemon_env.write_config([acc]))
        a = d.wait(lambda: (x := d.account("busy"))["State"] == "backoff" and x, 30,
                   f"the {status}")
        assert str(status) in a["LastError"], a
        # Both times are the daemon's own; the retry is planned when the sync
        # ends, exactly Retry-After later (no jitter on a server's value).
        delay_s = (a["NextSync"] - a["LastSync"]) / 1e6
        assert abs(delay_s - want_s) < 2, (delay_s, a)
    finally:
        busy.stop()
