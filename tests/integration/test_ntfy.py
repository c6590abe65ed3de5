"""The built-in push receiver end to end: davsyncd as its own UnifiedPush
distributor on an ntfy server (davtest.ntfy), with no distributor on the
bus unless a test says so.

    other client --PUT--> PushFront --> Radicale
                             | Web Push (RFC 8291) POST /<topic>?up=1
                             v
                         ntfy double --GET /<topics>/json stream--> davsyncd --sync--> vdir

The rig is test_push.py's (real Radicale behind the WebDAV-Push front, a
private bus, the daemon); only the configuration gains "push_service" (top
level), through NtfyEnv below. The ntfy double fails the test that sent it
anything outside ntfy's documented API (fixture `ntfy`).

  a  a change by another client arrives through the stream (reason "push")
  b  a dropped stream comes back with since= and gets what was sent meanwhile
  c  our own edits carry Push-Dont-Notify: nothing is published
  d  a distributor on the bus wins without push_service; push_service wins over it
  e  the topic file is 0600 and the topic appears in no log and on no bus property
plus: a reload moves an account from the distributor to ntfy and back.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Optional

import pytest

from davtest import sampledata
from davtest.daemon import DaemonEnv
from davtest.ntfy import NtfyServer
from davtest.vdir import atomic_write
from davtest.daemon import account_for
from test_push import (ACC, INTERVAL, WAIT, Rig, assert_dont_notify_on_our_writes,  # noqa: F401
                       active_rig, local_by_uid, make_rig, reasons_of)

KEEPALIVE = 1.0   # seconds: the double's keepalive, so that a test sees several


class NtfyEnv(DaemonEnv):
    """DaemonEnv whose config carries a top-level push_service (when set)."""

    push_service: Optional[str] = None

    def write_config(self, accounts, path=None, **top):
        if self.push_service is not None:
            top.setdefault("push_service", self.push_service)
        return super().write_config(accounts, path, **top)


@pytest.fixture
def ntfy():
    server = NtfyServer(keepalive=KEEPALIVE).start()
    yield server
    server.stop()
    bad = server.violations()
    if bad:
        pytest.fail("the daemon used the ntfy API wrongly:\n  " + "\n  ".join(bad))


@pytest.fixture
def daemon_env(tmp_path, davsyncd, ntfy) -> NtfyEnv:
    env = NtfyEnv(tmp_path / "daemon", binary=davsyncd)
    env.push_service = ntfy.origin
    return env


def ntfy_endpoint_of(rig: Rig, ntfy: NtfyServer) -> str:
    sub = rig.subscription()
    assert sub.push_resource.startswith(ntfy.origin + "/up"), sub.push_resource
    assert sub.push_resource.endswith("?up=1"), sub.push_resource
    return sub.push_resource


def topic_of(endpoint: str) -> str:
    return endpoint.split("?", 1)[0].rsplit("/", 1)[1]


def wait_streamed(rig: Rig, ntfy: NtfyServer) -> None:
    """The daemon holds its stream (an open one carrying the topic)."""
    topic = topic_of(ntfy_endpoint_of(rig, ntfy))
    rig.wait(lambda: any(topic in s.topics for s in ntfy.open_streams()), WAIT,
             "the daemon's ntfy stream to be open")


# ------------------------------------------------------------------ a


def test_change_by_other_client_arrives_through_the_builtin_receiver(make_rig, ntfy):
    rig = active_rig(make_rig, distributor=False)
    assert rig.account()["PushTransport"] == f"ntfy:{ntfy.origin}"
    endpoint = ntfy_endpoint_of(rig, ntfy)
    topic = topic_of(endpoint)
    wait_streamed(rig, ntfy)
    # One connection for the service, carrying the topic, from davsyncd.
    (stream,) = ntfy.open_streams()
    assert stream.topics == [topic] and stream.user_agent.startswith("davsyncd/")

    mark = rig.mark()
    uid = rig.put_as_other(1, summary="Pushed through ntfy")
    rig.wait_local_uids([uid])
    rig.settle()
    assert "SUMMARY:Pushed through ntfy" in local_by_uid(rig.local)[uid][1]
    reasons = [reasons_of(s) for s in rig.started(mark)]
    assert reasons and reasons[0] == ["push"], reasons

    # The front's RFC 8291 body went through ntfy base64-encoded, and the
    # stream delivered it.
    (msg,) = ntfy.messages(topic)
    assert msg.encoding == "base64"
    assert msg.id in stream.delivered
    status = rig.ctl("status")
    assert status.returncode == 0, status.stderr
    assert f"push via ntfy:{ntfy.origin}" in status.stdout, status.stdout
    # Idle: the stream stayed the same one, kept alive by the server.
    rig.wait(lambda: stream.keepalives >= 2, WAIT, "two keepalives on the stream")
    assert [s.seq for s in ntfy.open_streams()] == [stream.seq]


# ------------------------------------------------------------------ b


def test_dropped_stream_reconnects_and_gets_what_was_sent_meanwhile(make_rig, ntfy):
    rig = active_rig(make_rig, distributor=False)
    topic = topic_of(ntfy_endpoint_of(rig, ntfy))
    wait_streamed(rig, ntfy)
    # One message first, so that the resume names it (since=<id>).
    first = rig.put_as_other(1)
    rig.wait_local_uids([first])
    rig.settle()
    (m1,) = ntfy.messages(topic)

    # The network goes: the stream is cut and the server refuses new ones.
    n = len(ntfy.streams())
    ntfy.refuse_streams = True
    ntfy.drop_streams()
    rig.wait(lambda: any(s.status == 503 for s in ntfy.streams()[n:]), WAIT,
             "the daemon to try to reconnect")
    # A change while no stream is open: ntfy keeps the message.
    second = rig.put_as_other(2)
    rig.wait(lambda: len(ntfy.messages(topic)) == 2, WAIT, "the push to reach ntfy")
    m2 = ntfy.messages(topic)[1]
    assert m2.open_streams == 0
    assert not any(s.status == 200 and s.seq > n for s in ntfy.streams())

    ntfy.refuse_streams = False
    rig.wait_local_uids([second])
    resumed = [s for s in ntfy.streams()[n:] if s.status == 200]
    assert resumed, ntfy.streams()
    assert resumed[0].since == m1.id, (resumed[0].since, m1.id)
    assert m2.id in resumed[0].delivered
    assert m1.id not in resumed[0].delivered   # nothing twice
    assert rig.account()["PushTransport"] == f"ntfy:{ntfy.origin}"


# ------------------------------------------------------------------ c


def test_own_edits_publish_nothing(make_rig, ntfy):
    rig = active_rig(make_rig, distributor=False)
    topic = topic_of(ntfy_endpoint_of(rig, ntfy))
    wait_streamed(rig, ntfy)
    sub = rig.subscription()
    seq = rig.last_seq()
    atomic_write(rig.local / "local-1.ics", sampledata.make_event(7, "local"))
    uid = sampledata.uid_event(7, "local")
    rig.wait(lambda: any(uid in body for body in
                         (rig.radicale.get_item(rig.cal, n)[0]
                          for n in (h.rsplit("/", 1)[1] for h in rig.radicale.list_items(rig.cal)))),
             60, "the server to hold the local event")
    rig.settle()
    assert ntfy.messages(topic) == [], ntfy.messages(topic)
    assert [s for s in rig.front.suppressed() if s.subscription == sub.url]
    assert_dont_notify_on_our_writes(rig, seq, expect_writes=1)


# ------------------------------------------------------------------ d


def test_a_distributor_on_the_bus_wins_without_push_service(make_rig, ntfy, daemon_env):
    daemon_env.push_service = None
    rig = active_rig(make_rig, distributor=True)
    assert rig.account()["PushTransport"] == f"unifiedpush:{rig.dist.name}"
    assert rig.subscription().push_resource == rig.dist.endpoint_for(rig.token)
    assert ntfy.streams() == []


def test_push_service_wins_over_a_distributor(make_rig, ntfy):
    rig = make_rig(distributor=True)

    def active():
        a = rig.account()
        subs = rig.front.subscriptions(rig.cal)
        return (a["PushState"] == "active" and len(subs) == 1
                and subs[0].push_resource.startswith(ntfy.origin + "/"))
    rig.wait(active, WAIT, "push to become active through ntfy")
    rig.settle()
    assert rig.account()["PushTransport"] == f"ntfy:{ntfy.origin}"
    assert rig.dist.registrations() == []
    mark = rig.mark()
    uid = rig.put_as_other(3)
    rig.wait_local_uids([uid])
    rig.settle()
    assert [reasons_of(s) for s in rig.started(mark)][0] == ["push"]
    assert rig.dist.forwarded_count() == 0


# ------------------------------------------------------------------ e


def test_topic_is_kept_secret(make_rig, ntfy, daemon_env):
    rig = active_rig(make_rig, distributor=False)
    topic = topic_of(ntfy_endpoint_of(rig, ntfy))
    (topic_file,) = list(daemon_env.state_dir.rglob("ntfy-topic.json"))
    assert stat.S_IMODE(topic_file.stat().st_mode) == 0o600
    doc = json.loads(topic_file.read_text())
    assert doc == {"service": ntfy.origin, "topic": topic}
    assert re.fullmatch(r"up[A-Za-z0-9]{12}", topic)

    uid = rig.put_as_other(4)
    rig.wait_local_uids([uid])
    rig.settle()
    log = rig.log()
    assert ntfy.origin in log           # the origin is logged ...
    assert topic not in log             # ... the topic never (debug logging is on)
    status = rig.ctl("--json", "status")
    assert status.returncode == 0 and topic not in status.stdout

    # A restart keeps the topic: the server's subscription stays valid.
    DaemonEnv.stop(rig.proc)
    assert json.loads(topic_file.read_text())["topic"] == topic


def test_reload_moves_the_account_from_the_distributor_to_ntfy_and_back(make_rig, ntfy, daemon_env):
    daemon_env.push_service = None
    rig = active_rig(make_rig, distributor=True)
    assert rig.account()["PushTransport"] == f"unifiedpush:{rig.dist.name}"
    old = rig.subscription()

    daemon_env.push_service = ntfy.origin
    daemon_env.write_config([account_for(rig.view, ACC, sync_interval=INTERVAL)])
    res = rig.ctl("reload")
    assert res.returncode == 0, res.stderr

    def on_ntfy():
        subs = rig.front.subscriptions(rig.cal)
        return (rig.account()["PushTransport"] == f"ntfy:{ntfy.origin}"
                and rig.account()["PushState"] == "active" and len(subs) == 1
                and subs[0].push_resource.startswith(ntfy.origin + "/"))
    rig.wait(on_ntfy, WAIT, "the account to move to ntfy")
    rig.settle()
    # The distributor registration was given back, the old subscription deleted.
    assert rig.dist.registrations() == []
    assert rig.subscription().url != old.url
    uid = rig.put_as_other(5)
    rig.wait_local_uids([uid])
    wait_streamed(rig, ntfy)

    # And back: the stream closes (no account uses the service any more).
    daemon_env.push_service = None
    daemon_env.write_config([account_for(rig.view, ACC, sync_interval=INTERVAL)])
    assert rig.ctl("reload").returncode == 0
    rig.wait(lambda: rig.account()["PushTransport"] == f"unifiedpush:{rig.dist.name}"
             and not ntfy.open_streams(), WAIT, "the account to move back to the distributor")
