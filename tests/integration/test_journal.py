"""Journal fields: run by systemd, davsyncd's stderr is the journal's stream
($JOURNAL_STREAM names it) and davsyncd logs natively instead, with
ACCOUNT=, COLLECTION=, PRIORITY= and a MESSAGE_ID= per kind of event, so
that `journalctl --user -u davsyncd ACCOUNT=personal` selects one account.

There is no journald on this machine, so the test starts a real one
(Debian's systemd-journald) in a private mount namespace: a tmpfs on /run
for its sockets (and on /var/log/journal, so that it keeps the journal
in memory). davsyncd runs in that namespace (nsenter), with its stderr
connected to journald's stdout stream the way systemd connects a service's
(the stream header, then $JOURNAL_STREAM set to the socket's device and
inode). journalctl reads the fields back from journald's files.
Needs root (mount namespace); elsewhere the test skips and says why.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from davtest import sampledata
from davtest.daemon import DaemonEnv, account_for, davsyncd_path, wait_until
from davtest.dbus import PrivateBus

JOURNALD = Path("/lib/systemd/systemd-journald")
SYNC_DONE = "e3df0c8ede5742dcbfb5ee4b26b337e6"
CONFLICT = "554dc01f71f74b09bdf434b18a2c29b3"


def journald_unavailable() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root for a private mount namespace"
    for tool in ("unshare", "nsenter", "journalctl"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    if not JOURNALD.is_file():
        return f"no {JOURNALD}"
    return None


class Journald:
    """systemd-journald in a mount namespace of its own."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Journald":
        script = " && ".join([
            "mount -t tmpfs -o mode=755 tmpfs /run",
            "mkdir -p /run/systemd/journal",
            "if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi",
            f"exec {JOURNALD}",
        ])
        log = open(self.workdir / "journald.log", "wb")
        try:
            self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        wait_until(lambda: self.proc.poll() is not None or self.path("run/systemd/journal/stdout").exists(),
                   30, "journald's sockets")
        assert self.proc.poll() is None, (self.workdir / "journald.log").read_text()
        return self

    def path(self, inside: str) -> Path:
        """A path in journald's mount namespace, seen from here."""
        return Path(f"/proc/{self.proc.pid}/root") / inside

    def stream(self, identifier: str) -> socket.socket:
        """A connection to journald's stdout stream, as systemd opens one for
        a service's output (identifier, unit, priority 6, level prefixes on,
        no forwarding)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(self.path("run/systemd/journal/stdout")))
        s.shutdown(socket.SHUT_RD)
        s.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
        return s

    def inside(self) -> list[str]:
        """A command prefix that runs in journald's namespace."""
        return ["nsenter", "-t", str(self.proc.pid), "-m", "--"]

    def entries(self, *matches: str) -> list[dict]:
        res = subprocess.run(["journalctl", "-D", str(self.path("run/log/journal")), "--no-pager", "-o", "json",
                              *matches], capture_output=True, text=True, timeout=60)
        return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def journald(tmp_path):
    why = journald_unavailable()
    if why:
        pytest.skip(f"no journald can be started here: {why}")
    j = Journald(tmp_path)
    try:
        yield j.start()
    finally:
        j.stop()


def journal_stream_env(sock: socket.socket) -> dict:
    st = os.fstat(sock.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_events_carry_account_collection_and_message_id(journald, radicale, tmp_path):
    cal = radicale.make_calendar("cal", "Cal")
    name = sampledata.filename_event(1)
    radicale.put_item(cal, name, sampledata.make_event(1))
    env = DaemonEnv(tmp_path / "env")
    config = env.write_config([account_for(radicale, "personal", sync_interval=3600)])
    stream = journald.stream("davsyncd")
    with PrivateBus(tmp_path / "bus") as bus, open(tmp_path / "stdout.log", "wb") as out:
        proc = subprocess.Popen(journald.inside() + [str(davsyncd_path()), "--config", str(config)],
                                env=env.env({"DBUS_SESSION_BUS_ADDRESS": bus.address, **journal_stream_env(stream)}),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=stream.fileno(),
                                start_new_session=True)
        try:
            def entries(*m):
                assert proc.poll() is None, f"davsyncd exited with {proc.returncode}"
                return journald.entries("ACCOUNT=personal", *m)

            # The first sync: one "sync done" entry for the collection.
            done = wait_until(lambda: entries(f"MESSAGE_ID={SYNC_DONE}"), 60, "the first sync's entry")
            e = done[0]
            assert e["ACCOUNT"] == "personal" and e["COLLECTION"] == "cal", e
            assert e["PRIORITY"] == "6"
            assert e["MESSAGE"].startswith("personal/cal: 1 down"), e
            assert e["_TRANSPORT"] == "journal"          # sent natively, not through the stream
            assert e["SYSLOG_IDENTIFIER"] == "davsyncd"

            # A conflict: the server's copy changes, then the local file
            # (whose folder event starts the sync that finds both changed).
            local = env.data_dir / "personal" / "cal" / name
            etag = radicale.get_item(cal, name)[1]
            radicale.put_item(cal, name, sampledata.make_event(1, summary="server edit"), etag=etag)
            local.write_text(sampledata.make_event(1, summary="local edit"))
            conflict = wait_until(lambda: entries(f"MESSAGE_ID={CONFLICT}"), 60, "the conflict's entry")
            e = conflict[0]
            assert e["COLLECTION"] == "cal" and e["PRIORITY"] == "4", e
            assert name in e["MESSAGE"]
            # Lines without a context go to the journal too, in order, with a
            # priority but no ACCOUNT= (startup lines name no account).
            all_lines = journald.entries("_PID=" + str(proc.pid))
            assert all(x["_TRANSPORT"] == "journal" for x in all_lines), all_lines
            assert any("ACCOUNT" not in x for x in all_lines)
        finally:
            DaemonEnv.stop(proc)
            stream.close()


def test_without_journal_stream_the_lines_stay_on_stderr(journald, tmp_path):
    """Only a stderr that is the stream $JOURNAL_STREAM names counts: the
    same stream without the variable, or the variable with another stderr,
    keeps today's "<N>text" lines."""
    env = DaemonEnv(tmp_path / "env")
    config = env.write_config([{"id": "personal", "url": "https://dav.example.org/", "username": ""}])

    def run(identifier: str, *, with_variable: bool) -> None:
        stream = journald.stream(identifier)
        extra = journal_stream_env(stream) if with_variable else {}
        res = subprocess.run(journald.inside() + [str(davsyncd_path()), "--config", str(config), "--once",
                                                  "--account", "nosuch"],
                             env=env.env(extra), stdin=subprocess.DEVNULL, capture_output=False,
                             stdout=subprocess.DEVNULL, stderr=stream.fileno(), timeout=60)
        stream.close()
        assert res.returncode == 78

    run("davsyncd-stream", with_variable=False)
    run("davsyncd-native", with_variable=True)
    stream_lines = wait_until(lambda: journald.entries("SYSLOG_IDENTIFIER=davsyncd-stream"), 30, "the stream entry")
    assert stream_lines[0]["_TRANSPORT"] == "stdout"
    assert stream_lines[0]["PRIORITY"] == "3"            # the <3> prefix, parsed by journald
    assert "no account 'nosuch'" in stream_lines[0]["MESSAGE"]
    native = wait_until(lambda: journald.entries("_TRANSPORT=journal", "PRIORITY=3"), 30, "the native entry")
    assert any("no account 'nosuch'" in e["MESSAGE"] for e in native)

    # The variable set, but stderr elsewhere (a pipe): stderr, today's format.
    other = journald.stream("davsyncd-other")
    res = subprocess.run(journald.inside() + [str(davsyncd_path()), "--config", str(config), "--once",
                                              "--account", "nosuch"],
                         env=env.env(journal_stream_env(other)), capture_output=True, text=True, timeout=60)
    other.close()
    assert res.returncode == 78
    assert res.stderr.startswith("<3>no account 'nosuch'"), res.stderr
