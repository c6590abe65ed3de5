"""Rows 5 and 6 and the idle half of row 7: davsyncd as the long-running
daemon (benchlib/push.py), on the suite's server and data.

One daemon with WebDAV-Push (push front + distributor) and three accounts
runs, in this order:
  - its start-up syncs, until every account is idle and subscribed;
  - row 7, idle: a window of --idle-window seconds in which nothing talks to
    it: context switches of all its threads, CPU, memory;
  - row 5, push: another client PUTs one contact through the front; the
    time from the PUT's response to the local file holding the change;
  - row 6: 100 local edits of contact files, first with a front that honours
    Push-Dont-Notify, then with one that ignores it; what the daemon asks
    the server after its upload sync.
Then it stops, and a second daemon without push (no front, no
distributor: it polls every --poll-interval seconds) gives row 5's
poll-only contrast.

Results go to ctx.results: "5" {"push": [...], "poll": [...]}, "6"
{"honoured": [...], "ignored": [...]}, "7i" {"davsyncd": [...]}; each entry is
a Run (clients.Run) whose detail holds the evidence. ctx.extra["daemon"]
has the start-up time and the memory after rows 5 and 6.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path

from . import data
from .clients import ClientError, Run
from .floor import FloorClient
from .push import (AccountSpec, DaemonRig, account_path, describe, file_state, is_download, is_light,
                   perf_start, perf_stop, proc_figures, request_kind, sync_segments, wait_file)
from .rows import Context, _versions, marker_line

MAIN = "bench"               # the account rows 5 and 6 use
_REQ_IN_SUMMARY = re.compile(r"(\d+) requests")


def _record(ctx: Context, row: str, name: str, run: Run) -> None:
    ctx.results.setdefault(row, {}).setdefault(name, []).append(asdict(run))


def run_daemon_rows(ctx: Context, root: Path, binary: Path, opts) -> None:
    """opts: idle_window, push_repeat, poll_interval, poll_repeat, edits."""
    specs = ctx.specs
    s = specs[0]                                    # the address book (or the only collection)
    accounts = [AccountSpec(MAIN, [x.name for x in specs])]
    if len(specs) > 1:
        # Two more accounts on the calendar only: rows 5 and 6 change the
        # address book, so their pushes go to the first account alone.
        accounts += [AccountSpec(f"{MAIN}-{k}", [specs[-1].name]) for k in (2, 3)]
    items = sum(x.count for x in specs) + (len(accounts) - 1) * specs[-1].count
    rig = DaemonRig(root / "push", ctx.setup, binary, accounts, push=True, log=ctx.log)
    try:
        t0 = time.monotonic()
        rig.start()
        rig.wait_ready(900)
        startup = time.monotonic() - t0
        ctx.log(f"    daemon with push: {len(accounts)} accounts, {items} items, ready after {startup:.1f} s "
                f"(start-up syncs and subscriptions)")
        ctx.extra.setdefault("daemon", {})["startup"] = {
            "seconds": round(startup, 2), "accounts": [a.collections for a in accounts], "items": items}
        _idle_and_poll(ctx, rig, root, binary, s, opts, len(accounts), items)
        _push_latency(ctx, rig, s, opts.push_repeat)
        for honour in (True, False):
            _self_change(ctx, rig, s, opts.edits, honour)
        after = proc_figures(rig.pid)
        ctx.extra["daemon"]["after_rows"] = {k: after[k] for k in ("vmrss_kb", "vmhwm_kb", "pss_kb", "threads")
                                               if k in after}
    finally:
        rig.stop()


# --- row 7, idle (with row 5's poll-only contrast in the same minute) ---------------

def _idle_and_poll(ctx: Context, rig: DaemonRig, root: Path, binary: Path, s: data.CollectionSpec, opts,
                   n_accounts: int, items: int) -> None:
    """The idle window of the push daemon. Row 5's poll-only contrast runs
    meanwhile, with a daemon, bus and folders of its own, talking to the
    server directly: the idle daemon shares nothing with it but the server
    process, which it does not use while idle, and waits on nothing it
    does (checked: no sync, no request in the window). Its memory is read
    before the second daemon starts (Pss divides shared pages among the
    processes mapping them). The window lasts --idle-window seconds or
    until the contrast is done, whichever is later."""
    mark, seq = rig.mark(), rig.last_seq()
    f0 = proc_figures(rig.pid)
    perf = perf_start(rig.pid)
    t0 = time.monotonic()
    try:
        _poll_latency(ctx, root / "poll", binary, s, opts.poll_interval, opts.poll_repeat)
        rest = opts.idle_window - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)          # the rest of the measurement window
    finally:
        counts = perf_stop(perf)
    elapsed = time.monotonic() - t0
    f1 = proc_figures(rig.pid)
    switches = f1["switches"] - f0["switches"]
    per_min = switches * 60.0 / elapsed
    syncs = len(rig.started(mark))
    reqs = len(rig.daemon_requests(seq))
    detail = {
        "window": round(elapsed, 1), "switches": switches, "per_minute": round(per_min, 2),
        "voluntary": f1["voluntary"] - f0["voluntary"], "threads": f1["threads"],
        "vmrss_kb": f0["vmrss_kb"], "vmrss_end_kb": f1["vmrss_kb"], "vmhwm_kb": f1["vmhwm_kb"],
        "pss_kb": f0.get("pss_kb"), "private_kb": f0.get("private_kb"), "anon_kb": f0.get("anon_kb"),
        "accounts": n_accounts, "items": items, "syncs_in_window": syncs, "requests_in_window": reqs,
        "perf": counts,
    }
    run = Run(wall=elapsed, cpu=f1["cpu"] - f0["cpu"], maxrss_kb=f0["vmrss_kb"], requests=reqs, detail=detail)
    _record(ctx, "7i", "davsyncd", run)
    timers = ""
    if counts:
        timers = f", timers armed {counts['timer:hrtimer_start'] + counts['timer:timer_start']} (perf)"
    ctx.log(f"    row 7 idle: {switches} context switches in {elapsed:.0f} s ({per_min:.1f}/min), "
            f"{f1['threads']} thread(s), VmRSS {f0['vmrss_kb'] / 1024:.1f} MB, "
            f"Pss {(f0.get('pss_kb') or 0) / 1024:.1f} MB, private {(f0.get('private_kb') or 0) / 1024:.1f} MB"
            f"{timers}; {syncs} syncs, {reqs} requests")
    if syncs or reqs:
        ctx.note("7", f"the idle daemon ran {syncs} syncs and {reqs} requests in its idle window")
    # The contrast changed the address book behind the push front's back:
    # bring the push daemon up to date (untimed) before row 5.
    mark = rig.mark()
    rig.bus.call(account_path(MAIN), "io.github.davsyncd.Account1.Sync")
    rig.wait(lambda: rig.finished(mark, MAIN), 300, "the catch-up sync")
    rig.settle(120)


# --- row 5 ---------------------------------------------------------------------------

def _push_latency(ctx: Context, rig: DaemonRig, s: data.CollectionSpec, repeat: int) -> None:
    other = FloorClient(rig.front.port, ctx.setup.user, ctx.setup.password)   # "another client"
    rig.front.lookup_grace = 0.0
    try:
        for i in range(repeat):
            index = (s.count * 3 // 10 + i) % s.count
            path = ctx.setup.collection_paths[s.name] + s.item_name(index, ctx.seed)
            local = rig.folder(MAIN, s.name) / s.item_name(index, ctx.seed)
            before = file_state(local)
            if before is None:
                raise ClientError(f"row 5: {local} missing before the change")
            etag, _ = other.get(path)
            text = s.item(index, ctx.seed, next(_versions))
            marker = marker_line(text)
            rig.settle(60)
            mark, seq, n_push = rig.mark(), rig.last_seq(), len(rig.front.pushes())
            other.put(path, text, etag, s.is_addressbook)
            t_put, t_put_wall = time.perf_counter(), time.time()
            t_file = wait_file(local, before, marker, 120, alive=rig.death)
            latency = t_file - t_put
            rig.settle(120)
            pushes = [p for p in rig.front.pushes()[n_push:] if p.status and p.status < 300]
            reqs = rig.daemon_requests(seq)
            reasons = [list(x.args[1]) for x in rig.started(mark)]
            kinds = [describe(r) for r in reqs]
            push_after = pushes[0].time - t_put_wall if pushes else None
            if not pushes:
                raise ClientError(f"row 5: no push was sent for the change; daemon requests {kinds}")
            if not reasons or reasons[0] != ["push"]:
                ctx.note("5", f"push run {i + 1}: the sync that brought the change had reasons {reasons}")
            run = Run(wall=latency, requests=len(reqs),
                      down=sum(1 for r in reqs if is_download(request_kind(r))),
                      detail={"push_sent_after": round(push_after, 4), "pushes": len(pushes),
                              "syncs": reasons, "requests": kinds})
            _record(ctx, "5", "push", run)
            ctx.log(f"    row 5 push #{i + 1}: {latency:.3f} s (push sent {push_after:.3f} s after the PUT), "
                    f"syncs {reasons}, requests {kinds}")
    finally:
        other.close()


def _poll_latency(ctx: Context, root: Path, binary: Path, s: data.CollectionSpec, interval: int,
                  repeat: int) -> None:
    """The same change with a daemon that only polls (no push front, no
    distributor), sync_interval `interval`: the PUTs are made at evenly
    spread points of the poll cycle ((k + 0.5) / repeat of the interval
    after the previous poll ended), so the median is the expected latency."""
    rig = DaemonRig(root, ctx.setup, binary, [AccountSpec("poll", [s.name], sync_interval=interval)],
                    push=False, log=ctx.log)
    admin = FloorClient(ctx.setup.server.port, ctx.setup.user, ctx.setup.password)
    try:
        t0 = time.monotonic()
        rig.start()
        rig.wait_ready(600)
        acc = rig.account("poll")
        ctx.log(f"    poll-only daemon (sync_interval {interval} s, PushState {acc['PushState']}): "
                f"first sync done after {time.monotonic() - t0:.1f} s")
        if acc["PushState"] != "poll-only":
            ctx.note("5", f"the poll-only daemon reported PushState {acc['PushState']!r}")
        for i in range(repeat):
            phase = (i + 0.5) / repeat
            index = (s.count * 35 // 100 + i) % s.count
            path = ctx.setup.collection_paths[s.name] + s.item_name(index, ctx.seed)
            local = rig.folder("poll", s.name) / s.item_name(index, ctx.seed)
            before = file_state(local)
            etag, _ = admin.get(path)
            text = s.item(index, ctx.seed, next(_versions))
            marker = marker_line(text)
            acc = rig.wait(lambda: (lambda a: a if a["State"] == "idle" and a["LastSync"] else None)(
                rig.account("poll")), 120, "the poll-only daemon to be idle")
            last_end = acc["LastSync"] / 1e6
            mark = rig.mark()
            delay = last_end + phase * interval - time.time()
            if delay > 0:
                time.sleep(delay)        # the chosen point of the poll cycle
            late = -delay if delay < 0 else 0.0
            admin.put(path, text, etag, s.is_addressbook)
            t_put = time.perf_counter()
            t_file = wait_file(local, before, marker, interval * 3 + 120, alive=rig.death)
            latency = t_file - t_put
            fin = rig.wait(lambda: rig.finished(mark), 120, "the poll sync to finish")
            starts = rig.started(mark)
            reasons = [list(x.args[1]) for x in starts]
            summary = fin[0].args[2] if len(fin[0].args) > 2 else ""
            requests = sum(int(m) for m in _REQ_IN_SUMMARY.findall(summary))
            run = Run(wall=latency, requests=requests,
                      detail={"interval": interval, "phase": round(phase, 3), "late": round(late, 3),
                              "expected": round((1 - phase) * interval, 2), "syncs": reasons,
                              "summary": summary})
            _record(ctx, "5", "poll", run)
            ctx.log(f"    row 5 poll #{i + 1}: {latency:.3f} s (PUT at {phase:.2f} of the cycle; "
                    f"syncs {reasons}; {summary})")
    finally:
        admin.close()
        rig.stop()


# --- row 6 ---------------------------------------------------------------------------

def _self_change(ctx: Context, rig: DaemonRig, s: data.CollectionSpec, edits: int, honour: bool) -> None:
    name = "honoured" if honour else "ignored"
    n = min(edits, s.count)
    rig.front.honour_dont_notify = honour
    rig.front.lookup_grace = 0.25
    rig.settle(120)
    subs = {x.url for x in rig.front.subscriptions(ctx.setup.collection_paths[s.name])}
    mark, seq = rig.mark(), rig.last_seq()
    n_push, n_sup = len(rig.front.pushes()), len(rig.front.suppressed())
    log_off = rig.log_size()
    folder = rig.folder(MAIN, s.name)
    base = (s.count * (4 if honour else 6) // 10)
    indices = [(base + k) % s.count for k in range(n)]
    texts = {}
    t0_wall = time.time()
    t0 = time.perf_counter()
    for index in indices:
        path = folder / s.item_name(index, ctx.seed)
        if not path.exists():
            raise ClientError(f"row 6: {path} missing")
        text = s.item(index, ctx.seed, next(_versions))
        texts[index] = text
        tmp = folder / f".{path.name}.bench-tmp"       # as editors do: temporary file, then rename
        with open(tmp, "w", newline="") as f:
            f.write(text)
        tmp.rename(path)
    written = time.perf_counter() - t0

    def puts():
        return [r for r in rig.daemon_requests(seq) if r.method == "PUT" and r.status and r.status < 300]
    rig.wait(lambda: len(puts()) >= n, 600, f"{n} PUTs of the daemon")
    last_put = puts()[-1]
    upload = (last_put.responded or last_put.time) - t0_wall
    waited = rig.quiet(3.0, 180)

    reqs = rig.daemon_requests(seq)
    pushes = [p for p in rig.front.pushes()[n_push:] if p.subscription in subs]
    sent = [p for p in pushes if p.status and p.status < 300]
    suppressed = [x for x in rig.front.suppressed()[n_sup:] if x.subscription in subs]
    reasons = [list(x.args[1]) for x in rig.started(mark)]
    segments, before = sync_segments(rig.log_text(log_off))
    evidence = {"pushes_sent": len(sent), "pushes_failed": len(pushes) - len(sent),
                "suppressed": len(suppressed), "edits_written_s": round(written, 3),
                "quiet_wait_s": round(waited, 1), "syncs": reasons,
                "front_requests": len(reqs),
                "logged_requests": len(before) + sum(len(seg.requests) for seg in segments)}
    # Which sync made which request: the daemon's log (see push.sync_segments);
    # the request kinds come from the front's log, matched in order.
    # The upload syncs are the syncs with PUTs; every other sync after the
    # edits is extra (its requests are counted, whenever it ran).
    ours = [seg for seg in segments if seg.account == MAIN]
    is_upload = [any(r.method == "PUT" for r in seg.requests) for seg in segments]
    if not any(is_upload):
        raise ClientError(f"row 6 ({name}): no sync with PUTs in the daemon's log")
    in_order = before + [r for seg in segments for r in seg.requests]
    matched = len(in_order) == len(reqs) and all(lr.method == fr.method for lr, fr in zip(in_order, reqs))
    if not matched:
        ctx.note("6", f"{name}: the daemon's log ({len(in_order)} requests) and the front's "
                      f"({len(reqs)}) do not match request by request; kinds are the log's methods")
    after, after_kinds, upload_kinds, after_logged = [], [], [], []
    pos = 0
    for seg, upload_seg in [(None, False)] + list(zip(segments, is_upload)):
        logged_reqs = before if seg is None else seg.requests
        front_reqs = reqs[pos:pos + len(logged_reqs)] if matched else [None] * len(logged_reqs)
        pos += len(logged_reqs)
        for lr, fr in zip(logged_reqs, front_reqs):
            kind = request_kind(fr) if fr is not None else lr.method
            if upload_seg:
                upload_kinds.append(kind)
            else:
                after_logged.append(lr)
                after_kinds.append(kind)
                after.append(describe(fr) if fr is not None else f"{lr.method} {lr.path} -> {lr.status}")
    last_upload = max(k for k, seg in enumerate(ours) if any(r.method == "PUT" for r in seg.requests))
    upload_reasons = [seg.reasons for seg, up in zip(segments, is_upload) if up]
    other_syncs = [f"{seg.account}: " + "+".join(seg.reasons) if seg.account != MAIN else "+".join(seg.reasons)
                   for seg, up in zip(segments, is_upload) if not up]
    bytes_after = sum(r.bytes for r in after_logged)
    downloads = sum(1 for k in after_kinds if is_download(k))
    light = sum(1 for k in after_kinds if is_light(k))
    other_in_upload = {}
    for k in upload_kinds:
        if k != "PUT":
            other_in_upload[k] = other_in_upload.get(k, 0) + 1
    evidence.update({
        "upload_syncs": upload_reasons,
        "upload_sync_requests_besides_puts": other_in_upload,
        "after": after, "after_bytes": bytes_after, "light": light,
        "syncs_after_upload": [seg.reasons for seg in ours[last_upload + 1:]],
        "other_syncs": other_syncs,
    })
    n_puts = sum(1 for k in upload_kinds if k == "PUT")
    if n_puts < n:
        ctx.note("6", f"{name}: {n_puts} PUTs in the upload syncs for {n} edits")
    run = Run(wall=upload, requests=len(after), down=downloads, up=len(puts()), detail=evidence)
    _record(ctx, "6", name, run)
    ctx.log(f"    row 6 {name}: {len(puts())} PUTs in {upload:.1f} s; pushes sent to us {len(sent)}, "
            f"suppressed {len(suppressed)}; upload sync(s) {evidence['upload_syncs']} with {other_in_upload} "
            f"besides the PUTs; after it: {len(after)} requests {after}, {downloads} downloads, "
            f"{bytes_after} bytes")
    # Every local edit is on the server now.
    h = FloorClient(ctx.setup.server.port, ctx.setup.user, ctx.setup.password)
    try:
        for index in indices[:: max(1, n // 10)]:
            _, body = h.get(ctx.setup.collection_paths[s.name] + s.item_name(index, ctx.seed))
            if marker_line(texts[index]).encode() not in body.replace(b"\r\n ", b""):
                raise ClientError(f"row 6 ({name}): the local edit of item {index} is not on the server")
    finally:
        h.close()
