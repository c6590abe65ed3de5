"""The hostile-server suite: davsyncd against a server that attacks it.

Each test puts one attack of davtest.hostile.HostileDav (a minimal CalDAV
server otherwise) in front of the real binary, with a second origin
(OtherOrigin) that records anything that reaches it, and asserts the same
five things every time, in check():

  - no crash: a clean exit status (no signal, so no core) or a live daemon;
  - no path outside the data folders: every path that appeared anywhere
    under the test's temporary folder is under the vdir or state folders
    (or the test's own output folder);
  - no credentials to another origin: the other origin saw no Authorization
    header (and, where the attack tries to send us there, nothing at all);
  - bounded memory: peak RSS (ru_maxrss of a --once run, read by GNU time,
    VmHWM of a daemon) under RSS_LIMIT;
  - bounded requests: the hostile server's count under a stated limit;
and a clear error: a phrase of the output, log or LastError on the bus.

`--once` runs where that is enough; the daemon on a private bus where bus
state or a restart matters. With HOSTILE_RSS_LOG=FILE, each check appends
"test peak-RSS-kB" to FILE (the figures in the README come from there).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from davtest.daemon import DaemonEnv
from davtest.distributor import Distributor
from davtest.hostile import HostileDav, OtherOrigin, event
from davtest.procs import stop_process_group
from test_daemon import start_daemon  # noqa: F401  (fixture)

RSS_LIMIT_KB = 100 * 1024
TIME = "/usr/bin/time"  # GNU time (Debian package time)
ONCE_DEADLINE = 120.0   # a deadline for hung runs, not a timing assertion
STOP_DEADLINE = 10.0    # SIGTERM to exit, even with a request stalled


# ------------------------------------------------------------------ helpers


@dataclass
class Run:
    rc: int
    out: str
    err: str
    maxrss_kb: int

    @property
    def text(self) -> str:
        return self.out + self.err


def run_once(env: DaemonEnv, *args, timeout: float = ONCE_DEADLINE, extra_env: Optional[dict] = None) -> Run:
    """Runs davsyncd to completion and returns its exit status (negative:
    killed by that signal), output and peak RSS.

    The peak comes from GNU time (ru_maxrss of a child it forked), not from
    os.wait4 here: exec() keeps the high-water mark of the memory it
    replaces in ru_maxrss, so a child forked from pytest reports pytest's
    own size (50-60 MB) as its peak."""
    runs = env.root / "runs"
    runs.mkdir(exist_ok=True)
    n = len(list(runs.iterdir()))
    out_p, err_p, rss_p = runs / f"{n}.out", runs / f"{n + 1}.err", runs / f"{n + 2}.rss"
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        proc = subprocess.Popen([TIME, "-f", "%x %M", "-o", str(rss_p), str(env.binary), *map(str, args)],
                                env=env.env(extra_env), cwd=env.root, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_process_group(proc, 5)
        raise AssertionError(f"davsyncd {' '.join(map(str, args))} still running after {timeout:g} s:\n"
                             f"{err_p.read_text(errors='replace')[-3000:]}") from None
    report = rss_p.read_text()
    signalled = re.search(r"terminated by signal (\d+)", report)
    status, rss = report.splitlines()[-1].split()
    rc = -int(signalled.group(1)) if signalled else int(status)
    return Run(rc, out_p.read_text(errors="replace"), err_p.read_text(errors="replace"), int(rss))


def snapshot(root: Path) -> set[Path]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(Path(dirpath) / n)
    return out


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


class Hostile:
    """The per-test rig: the other origin, the hostile server(s), the
    daemon's folders, and the common checks."""

    def __init__(self, tmp: Path, env: DaemonEnv, name: str):
        self.tmp = tmp
        self.env = env
        self.name = name
        self.other = OtherOrigin().start()
        self.servers: list[HostileDav] = []
        self.before = snapshot(tmp)
        self.allowed: list[Path] = []

    def server(self, mode: str, **opts) -> HostileDav:
        s = HostileDav(mode, self.other, **opts).start()
        self.servers.append(s)
        return s

    def config(self, *accounts: dict, **top) -> Path:
        p = self.env.write_config(list(accounts), **top)
        self.before = snapshot(self.tmp)
        return p

    def allow(self, path: Path) -> None:
        """A folder of the test's own (a distributor's state)."""
        self.allowed.append(path)

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        self.other.stop()

    # ---- the common assertions

    def check(self, *, rss_kb: int, max_requests: int, nothing_to_other: bool = True,
              run: Optional[Run] = None, alive: Optional[subprocess.Popen] = None) -> None:
        if run is not None:
            assert run.rc >= 0, f"davsyncd killed by signal {-run.rc}:\n{run.err[-3000:]}"
            assert "terminate called" not in run.err and "Sanitizer" not in run.err, run.err[-3000:]
        if alive is not None:
            assert alive.poll() is None, f"the daemon died with {alive.returncode}"
        assert not list(self.env.root.glob("core*")), "a core file"
        allowed = [self.env.data_dir, self.env.state_dir, self.env.root / "runs", *self.allowed]
        new = snapshot(self.tmp) - self.before
        stray = sorted(str(p) for p in new
                       if not any(p == a or a in p.parents for a in allowed) and not p.name.endswith(".log"))
        assert not stray, f"paths outside the data folders: {stray[:20]}"
        assert self.other.authorizations() == [], "credentials sent to another origin"
        if nothing_to_other:
            assert self.other.requests == [], [(r.method, r.path) for r in self.other.requests]
        assert 0 < rss_kb < RSS_LIMIT_KB, f"peak RSS {rss_kb} kB"
        sent = sum(s.count() for s in self.servers)
        assert sent <= max_requests, f"{sent} requests (limit {max_requests})"
        if log := os.environ.get("HOSTILE_RSS_LOG"):
            with open(log, "a") as f:
                f.write(f"{self.name} {rss_kb}\n")


@pytest.fixture
def rig(request, tmp_path, daemon_env, monkeypatch):
    # meson test sets MALLOC_PERTURB_, which makes glibc fill every block it
    # hands out: the HTTP client's reservation of the whole 64 MiB response
    # cap for a body past 1 MiB (mapped, normally never touched) then counts
    # in full, and the peak RSS no longer says what a user's daemon uses.
    monkeypatch.delenv("MALLOC_PERTURB_", raising=False)
    r = Hostile(tmp_path, daemon_env, request.node.name)
    yield r
    r.stop()


def bus_text(s: str) -> None:
    """What may appear in a string on the bus: no non-characters."""
    assert not re.search("[\ufdd0-\ufdef\ufffe\uffff]", s), repr(s)


# ------------------------------------------------------------------ 1, 11. redirects


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_discovery_redirect_to_another_origin_is_refused(rig, code):
    srv = rig.server(f"redirect-{code}")
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--discover")
    assert run.rc != 0, run.text
    assert f"{srv.base_url}/p/" in run.err and f"{rig.other.base_url}/p/" in run.err, run.err
    assert "refused" in run.err, run.err
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=5)


def test_every_entry_point_redirected_to_another_origin_is_refused(rig):
    # The account URL and both well-known URIs: each is a probe that may
    # lead nowhere, and the error lists every one with where it pointed.
    entries = ("/", "/.well-known/caldav", "/.well-known/carddav")
    srv = rig.server("redirect-307", at=entries)
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--discover")
    assert run.rc != 0, run.text
    for path in entries:
        assert f"{srv.base_url}{path}" in run.err and f"{rig.other.base_url}{path}" in run.err, run.err
    assert "nothing was sent there" in run.err, run.err
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=5)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_discovery_redirect_from_https_to_http_is_refused(rig, tls_cert):
    srv = rig.server("redirect-301", tls=tls_cert)
    srv.opts["target"] = f"http://127.0.0.1:{rig.other.port}/p/"
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account(verify_tls=False))
    run = run_once(rig.env, "--config", cfg, "--discover")
    assert run.rc != 0, run.text
    assert "from https to plain http" in run.err, run.err
    assert f"https://127.0.0.1:{srv.port}/p/" in run.err and f"http://127.0.0.1:{rig.other.port}/p/" in run.err
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=5)


def test_redirect_loop_is_cut_short(rig):
    srv = rig.server("redirect-loop")
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--discover")
    assert run.rc != 0, run.text
    assert "redirects" in run.err, run.err
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=12)


# ------------------------------------------------------------------ 2, 17. hostile names, invalid UTF-8


BAD_NAME = "Bad\ufdd0Na\ufffeme".encode() + b"\xff\xc3(end"


def test_non_characters_and_invalid_utf8_in_names_reach_the_bus_as_replacement_characters(
        rig, bus, start_daemon):
    srv = rig.server("hostile-names")
    srv.add_collection("work", BAD_NAME, description=b"Desc\xef\xb7\x90\xfe", items=2)
    cfg = rig.config(srv.account())
    for restart in range(2):   # the second start reads the cached collections
        d = start_daemon(cfg)
        d.wait_synced("test")
        name = d.collection("work", "test")["DisplayName"]
        bus_text(name)
        assert name.startswith("Bad\ufffdNa\ufffdme") and "end" in name, (restart, name)
        assert d.account("test")["LastResult"] == "ok"
        hwm = vm_hwm_kb(d.pid)
        rig.check(alive=d.proc, rss_kb=hwm, max_requests=20 * (restart + 1))
        assert d.stop() == 0, d.log()[-2000:]
    assert (rig.env.data_dir / "test" / "work").is_dir()


def test_a_five_megabyte_display_name_costs_the_name_not_the_account(rig):
    srv = rig.server("hostile-names")
    srv.add_collection("long", b"N" * (5 << 20), description=b"D" * (1 << 20), items=1)
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    disc = run_once(rig.env, "--config", cfg, "--discover", "--json")
    assert disc.rc == 0, disc.text[-3000:]
    names = {x["id"]: x.get("displayname") for a in json.loads(disc.out)["accounts"] for x in a["collections"]}
    assert names == {"long": "", "work": "Work"} or names == {"long": None, "work": "Work"}, names
    assert "text of <D:displayname> is longer than 4096 bytes; left out" in disc.err, disc.err
    run = run_once(rig.env, "--config", cfg, "--once")
    assert run.rc == 0, run.text[-3000:]
    assert len(list((rig.env.data_dir / "test" / "long").glob("*.ics"))) == 1
    rig.check(run=run, rss_kb=max(disc.maxrss_kb, run.maxrss_kb), max_requests=20)


def test_invalid_utf8_everywhere(rig):
    srv = rig.server("bad-utf8")
    c = srv.add_collection("work", b"Name\xc3\x28\xff")
    c.description = b"\xed\xa0\x80surrogate"
    for i, raw in enumerate([b"caf\xe9", b"\xff\xfe", b"ok\xc3\x28", b"\xf4\x90\x80\x80"]):
        srv.add_item(c, c.path.encode() + b"item-" + raw + b".ics",
                     event(b"uid-" + raw, b"Summary \xff " + raw), etag=b'"etag-\xfe' + raw + b'"')
    orig_token = c.token
    c.token = lambda: orig_token() + b"\xff\xfe"
    cfg = rig.config(srv.account())
    disc = run_once(rig.env, "--config", cfg, "--discover", "--json")
    assert disc.rc == 0, disc.text
    names = [x.get("displayname") for a in json.loads(disc.out)["accounts"] for x in a["collections"]]
    assert names and all("\ufffd" in n for n in names), names
    rss = disc.maxrss_kb
    for _ in range(2):
        run = run_once(rig.env, "--config", cfg, "--once")
        assert run.rc >= 0 and "test/" in run.out, run.text
        rss = max(rss, run.maxrss_kb)
    assert srv.count("DELETE") == 0 and srv.count("PUT") == 0
    rig.check(run=run, rss_kb=rss, max_requests=40)


# ------------------------------------------------------------------ 3, 16. oversized answers


def test_gzip_bomb_is_refused_with_bounded_memory(rig):
    srv = rig.server("gzip-bomb")
    srv.add_collection("work", "Work", items=2)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--once")
    assert run.rc != 0, run.text
    assert "once decompressed; refused" in run.text, run.text
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=12)


def test_ten_gigabyte_content_length_is_refused_without_allocating(rig):
    srv = rig.server("huge-length")
    srv.add_collection("work", "Work", items=2)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--once")
    assert run.rc != 0, run.text
    assert "as received; refused" in run.text, run.text
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=12)


# ------------------------------------------------------------------ 4. runaway 507


@pytest.mark.parametrize("fresh", [False, True], ids=["same-items", "one-new-item-a-page"])
def test_runaway_507_paging_is_bounded_and_falls_back_to_a_listing(rig, fresh):
    srv = rig.server("runaway-507", fresh=fresh, armed=False)
    srv.add_collection("work", "Work", items=3)
    cfg = rig.config(srv.account())
    first = run_once(rig.env, "--config", cfg, "--once")
    assert first.rc == 0, first.text
    srv.opts["armed"] = True
    def sync_reports():
        return sum(1 for r in srv.requests_of("REPORT") if b"sync-collection" in r.body[:300])
    before = sync_reports()
    run = run_once(rig.env, "--config", cfg, "--once")
    reports = sync_reports() - before
    # The engine's cap: 100 pages + 1 per 10 known items.
    assert reports <= 101, reports
    assert "listing the collection instead" in run.err, run.err
    assert run.rc == 0, run.text
    assert len(list((rig.env.data_dir / "test" / "work").glob("*.ics"))) == 3
    assert srv.count("DELETE") == 0
    rig.check(run=run, rss_kb=max(first.maxrss_kb, run.maxrss_kb), max_requests=230)


# ------------------------------------------------------------------ 5. push Location on another origin


def test_push_registration_location_on_another_origin_is_refused(rig, bus, start_daemon, tmp_path):
    srv = rig.server("push-location")
    srv.add_collection("work", "Work", items=2)
    rig.allow(tmp_path / "dist")
    dist = Distributor(bus.address, tmp_path / "dist").start()
    try:
        cfg = rig.config(srv.account())
        d = start_daemon(cfg)
        d.wait_synced("test")
        d.wait(lambda: srv.count("POST") >= 1, 30, "the push registration")
        d.wait(lambda: "another origin" in d.log(), 30, "the refusal in the log")
        assert f"registration URL {rig.other.base_url}/subscriptions/evil-1 is on another origin" in d.log()
        assert d.collection("work", "test")["PushSubscription"] == ""
        assert d.account("test")["PushState"] == "failed"
        # A new endpoint is where a kept registration would be deleted (the
        # old one first, then a new POST).
        posts = srv.count("POST")
        dist.change_endpoint(dist.wait_registered()["token"])
        d.wait(lambda: srv.count("POST") > posts, 30, "the registration of the new endpoint")
        hwm = vm_hwm_kb(d.pid)
        # So are a reload and a stop.
        assert d.ctl("reload").returncode == 0
        d.wait_synced("test")
        rig.check(alive=d.proc, rss_kb=hwm, max_requests=40)
        assert d.stop() == 0, d.log()[-2000:]
        assert rig.other.count("DELETE") == 0 and rig.other.requests == []
        kept = [p for p in rig.env.state_dir.rglob("*")
                if p.is_file() and rig.other.base_url.encode() in p.read_bytes()]
        assert not kept, f"the other origin's URL kept in {kept}"
    finally:
        dist.stop()


# ------------------------------------------------------------------ 6. quadratic input


def test_unmatched_end_lines_and_namespace_floods_finish(rig):
    srv = rig.server("quadratic", ns_attrs=50_000)
    c = srv.add_collection("work", "Work", items=1)
    body = event(b"quadratic").replace(b"END:VEVENT", b"END:X\r\n" * 60_000 + b"END:VEVENT")
    srv.add_item(c, b"q.ics", body)
    cfg = rig.config(srv.account())
    disc = run_once(rig.env, "--config", cfg, "--discover")
    run = run_once(rig.env, "--config", cfg, "--once")
    # The home listing's flood of attributes is refused before any work
    # per attribute, with the limit named.
    assert disc.rc == 1 and run.rc == 1, disc.text + run.text
    for r in (disc, run):
        assert f"{srv.base_url}/cal/: XML document refused: an element with more than 128 attributes" in r.err, r.err
    rig.check(run=run, rss_kb=max(disc.maxrss_kb, run.maxrss_kb), max_requests=20)


def test_namespace_declarations_on_every_response_finish(rig):
    srv = rig.server("quadratic", ns_each=120)
    srv.add_collection("work", "Work", items=3000)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--once")
    # Read in full (each element stays under the attribute limit) or refused
    # with the limit named: either way, within the deadline.
    if run.rc == 0:
        assert len(list((rig.env.data_dir / "test" / "work").glob("*.ics"))) == 3000
    else:
        assert "XML document refused" in run.err, run.text
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=10)


def test_unmatched_end_lines_in_an_item_finish(rig):
    srv = rig.server("normal")
    c = srv.add_collection("work", "Work", items=1)
    body = event(b"quadratic").replace(b"END:VEVENT", b"END:X\r\n" * 60_000 + b"END:VEVENT")
    srv.add_item(c, b"q.ics", body)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--once")
    assert run.rc == 0, run.text
    run2 = run_once(rig.env, "--config", cfg, "--once")
    assert run2.rc == 0, run2.text
    assert len(list((rig.env.data_dir / "test" / "work").glob("*.ics"))) == 2
    rig.check(run=run2, rss_kb=max(run.maxrss_kb, run2.maxrss_kb), max_requests=20)


# ------------------------------------------------------------------ 7. case


def test_names_differing_only_in_case_stay_distinct(rig):
    srv = rig.server("normal")
    for name in ("Work", "work"):
        c = srv.add_collection(name, name)
        for fname, uid in ((b"A.ics", b"Case"), (b"a.ics", b"case")):
            srv.add_item(c, fname, event(uid, name.encode() + b" " + uid))
    cfg = rig.config(srv.account())
    rss = 0
    for _ in range(3):
        run = run_once(rig.env, "--config", cfg, "--once")
        assert run.rc == 0, run.text
        rss = max(rss, run.maxrss_kb)
    folders = [p for p in (rig.env.data_dir / "test").iterdir() if p.is_dir()]
    assert len(folders) == 2, folders
    for f in folders:
        items = list(f.glob("*.ics"))
        assert len(items) == 2, items
        assert {p.read_bytes().count(b"UID:") for p in items} == {1}
    assert srv.count("DELETE") == 0 and srv.count("PUT") == 0
    # A local edit of one of the four goes to its own href, and only there.
    target = next(p for f in folders for p in f.glob("*.ics")
                  if re.search(rb"^UID:Case\r?$", p.read_bytes(), re.M) and b"SUMMARY:work Case" in p.read_bytes())
    target.write_bytes(target.read_bytes().replace(b"SUMMARY:work Case", b"SUMMARY:edited"))
    run = run_once(rig.env, "--config", cfg, "--once")
    assert run.rc == 0, run.text
    assert [r.path for r in srv.requests_of("PUT")] == ["/cal/work/A.ics"]
    assert srv.collections["work"].items[0].body.count(b"SUMMARY:edited") == 1
    assert all(b"edited" not in it.body for n in ("Work",) for it in srv.collections[n].items)
    assert srv.count("DELETE") == 0
    rig.check(run=run, rss_kb=max(rss, run.maxrss_kb), max_requests=40)


# ------------------------------------------------------------------ 8. traversal


def test_traversal_hrefs_and_weird_uids_stay_inside_the_folders(rig):
    srv = rig.server("traversal")
    c = srv.add_collection("work", "Work")
    hrefs = [b"/cal/work/../../x.ics", b"/cal/work/%2e%2e%2f%2e%2e%2fy.ics", b"/cal/work/..%2F..%2Fz.ics",
             rig.other.base_url.encode() + b"/cal/work/abs.ics", b"/", b"/cal/work/", b"/cal/work/" + b"L" * 5000 + b".ics",
             b"/cal/work/%00nul.ics", b"/cal/work/.hidden.ics", b"/cal/work/sub/dir.ics"]
    uids = [b"../../../escape", b"a/b/c", b"..", b".", b".hidden", b"ctl\x01in\x7fside", b"\x1b[31m", b"U" * 10_240,
            b"/etc/passwd", b"back\\slash"]
    for i, (href, uid) in enumerate(zip(hrefs, uids)):
        srv.add_item(c, href, event(uid, b"traversal %d" % i), etag=b'"t%d"' % i)
    for i, uid in enumerate(uids):
        srv.add_item(c, b"ok-%d.ics" % i, event(uid + b"-2", b"weird uid %d" % i), etag=b'"u%d"' % i)
    cfg = rig.config(srv.account())
    rss = 0
    for _ in range(2):
        run = run_once(rig.env, "--config", cfg, "--once")
        assert run.rc >= 0, run.text
        rss = max(rss, run.maxrss_kb)
    folder = rig.env.data_dir / "test" / "work"
    assert len(list(folder.glob("*.ics"))) >= len(uids), sorted(os.listdir(folder))
    assert "ignoring href outside the collection" in run.err and "on another origin" in run.err, run.err
    assert srv.count("DELETE") == 0
    rig.check(run=run, rss_kb=rss, max_requests=40)


def test_a_nul_in_an_answer_is_malformed_xml(rig):
    srv = rig.server("traversal")
    c = srv.add_collection("work", "Work", items=1)
    srv.add_item(c, b"nul.ics", event(b"nul\x00uid"))
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--once")
    assert run.rc != 0 and "malformed XML: NUL byte" in run.err, run.text
    assert not list((rig.env.data_dir / "test" / "work").glob("*.ics"))
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=10)


# ------------------------------------------------------------------ 9. XXE, billion laughs


def test_external_entities_and_billion_laughs_are_not_expanded(rig):
    srv = rig.server("xxe")
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--discover", "--json")
    assert "root:" not in run.text and "lollollol" not in run.text, run.text[:3000]
    # No entity is even parsed: the DOCTYPE itself is refused.
    assert run.rc == 1 and "/cal/: malformed XML: DOCTYPE declarations are not allowed" in run.err, run.text
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=10)


# ------------------------------------------------------------------ 10. slowloris


@pytest.mark.parametrize("mode", ["trickle", "mute"])
def test_sigterm_stops_the_daemon_during_a_stalled_answer(rig, bus, start_daemon, mode):
    srv = rig.server(mode)
    srv.add_collection("work", "Work", items=2)
    cfg = rig.config(srv.account())
    d = start_daemon(cfg)
    d.wait(lambda: srv.count("REPORT") >= 1, 30, "the stalled calendar-query")
    assert d.account("test")["State"] == "syncing"
    hwm = vm_hwm_kb(d.pid)
    rig.check(alive=d.proc, rss_kb=hwm, max_requests=10)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(STOP_DEADLINE) == 0


def test_trickling_and_mute_answers_fail_the_sync_with_a_timeout(rig, tmp_path):
    # Two --once runs side by side (each in its own folders: one run holds
    # the state lock): one server trickles its answer a byte a second, the
    # other never answers. The low-speed limit ends both after its 60 s window.
    runs: dict[str, Run] = {}
    envs = {"trickle": rig.env, "mute": DaemonEnv(tmp_path / "daemon-mute", binary=rig.env.binary)}
    rig.allow(envs["mute"].data_dir)
    rig.allow(envs["mute"].state_dir)
    rig.allow(envs["mute"].root / "runs")
    cfgs = {}
    for mode, env in envs.items():
        s = rig.server(mode)
        s.add_collection("work", "Work", items=2)
        cfgs[mode] = env.write_config([s.account()])
    rig.before = snapshot(tmp_path)

    def one(mode):
        runs[mode] = run_once(envs[mode], "--config", cfgs[mode], "--once", timeout=200)
    threads = [threading.Thread(target=one, args=(m,)) for m in envs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mode, run in runs.items():
        assert run.rc != 0, run.text
        assert re.search(r"test/work: FAILED: .*(too slow|timed? ?out)", run.out, re.I), (mode, run.text)
        rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=20)
    assert len(runs) == 2


# ------------------------------------------------------------------ 12. 401 loop


# Digest included: a server that answers every Digest response with a new
# challenge is a refused password, not a transport failure retried for ever.
@pytest.mark.parametrize("scheme", ["Basic", "Digest"])
def test_always_401_ends_in_auth_failed_without_a_retry_storm(rig, bus, start_daemon, scheme):
    srv = rig.server("auth-loop", auth_scheme=scheme)
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    d = start_daemon(cfg)
    a = d.wait(lambda: (x := d.account("test"))["State"] == "auth-failed" and x, 30, "auth-failed")
    assert "401" in a["LastError"] or "authentication" in a["LastError"], a["LastError"]
    # No retry of its own: nothing is planned until the user acts.
    assert a["NextSync"] == 0, a
    rig.check(alive=d.proc, rss_kb=vm_hwm_kb(d.pid), max_requests=12)


# ------------------------------------------------------------------ 13. absurd Retry-After

SIX_HOURS_US = 6 * 3600 * 1_000_000


@pytest.mark.parametrize("value", ["1000000000000", "Fri, 31 Dec 9999 23:59:59 GMT", "-5", "garbage\x7f",
                                   "99999999999999999999999999"])
def test_absurd_retry_after_is_clamped(rig, bus, start_daemon, value):
    srv = rig.server("retry-after", retry_after=value)
    cfg = rig.config(srv.account())
    d = start_daemon(cfg)
    a = d.wait(lambda: (x := d.account("test"))["State"] == "backoff" and x, 30, "the backoff")
    assert "503" in a["LastError"], a["LastError"]
    delay = a["NextSync"] - a["LastSync"]
    assert 5_000_000 - 1_000_000 <= delay <= SIX_HOURS_US + 60_000_000, delay
    rig.check(alive=d.proc, rss_kb=vm_hwm_kb(d.pid), max_requests=6)


# ------------------------------------------------------------------ 14. not HTTP


@pytest.mark.parametrize("garbage", [
    b"HTTP/1.1 abc Whatever\r\n\r\n",
    b"HTTP/1.1 207 Multi-Status\r\nContent-Type: appl",
    b"SSH-2.0-OpenSSH_9.2\r\n" + bytes(range(256)) * 64,
    b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 500\r\n\r\n<?xml",
    b"HTTP/1.1 207 Multi-Status\r\n" + b"X-Flood: " + b"a" * 300_000 + b"\r\n\r\n",
], ids=["bad-status", "truncated-headers", "not-http", "truncated-body", "endless-header"])
def test_garbage_answers_fail_cleanly(rig, garbage):
    srv = rig.server("garbage", garbage=garbage)
    srv.add_collection("work", "Work", items=1)
    cfg = rig.config(srv.account())
    run = run_once(rig.env, "--config", cfg, "--discover")
    assert run.rc != 0, run.text
    assert f"{srv.base_url}/p/" in run.err, run.err
    rig.check(run=run, rss_kb=run.maxrss_kb, max_requests=6)


# ------------------------------------------------------------------ 15. everything vanishes


def test_a_collection_that_empties_is_held_by_the_deletion_guard(rig):
    srv = rig.server("vanish")
    srv.add_collection("work", "Work", items=20)
    cfg = rig.config(srv.account())
    first = run_once(rig.env, "--config", cfg, "--once")
    assert first.rc == 0, first.text
    folder = rig.env.data_dir / "test" / "work"
    assert len(list(folder.glob("*.ics"))) == 20
    srv.vanish()
    run = run_once(rig.env, "--config", cfg, "--once")
    assert "deletion refused" in run.err, run.text
    assert len(list(folder.glob("*.ics"))) == 20
    run2 = run_once(rig.env, "--config", cfg, "--once")
    assert len(list(folder.glob("*.ics"))) == 20
    assert srv.count("DELETE") == 0 and srv.count("PUT") == 0
    rig.check(run=run2, rss_kb=max(first.maxrss_kb, run.maxrss_kb, run2.maxrss_kb), max_requests=20)
