"""Markdown table and PNG chart from the raw results (results JSON)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from . import report_account
from .stats import Summary, fmt_num, pairwise, summarize

CLIENTS = ["davsyncd", "vdirsyncer", "floor"]

# Targets of the issues: (row, kind, threshold). kind "speedup": vdirsyncer ÷ davsyncd
# at least threshold; "floor": davsyncd ÷ floor at most threshold; "floor+discovery":
# the same with each side's discovery added (davsyncd --discover, the floor's
# Depth-1 PROPFIND of the home).
TARGETS = {
    "1": [("speedup", 20.0), ("floor+discovery", 1.3)],
    "2": [("speedup", 50.0), ("floor", 1.1)],
    "3": [("floor", 1.3)],
}
CPU_TARGET = 1.0      # seconds of client CPU for the first sync of 15 000 items
IDLE_RSS_TARGET = 10.0   # MB: idle RSS of the long-running daemon
SELF_CHANGE_LIGHT = 3    # row 6, ignoring server: at most this many light requests (and no download)
MAIN_ROWS = ("1", "2", "3", "4")


def walls(runs):
    return [r["wall"] if r else None for r in runs or []]


def field_of(runs, key):
    return [r[key] if r else None for r in runs or []]


def s_fmt(s: Summary | None, unit="s") -> str:
    return s.fmt(unit) if s else "—"


def ratio_fmt(s: Summary | None) -> str:
    if not s:
        return "—"
    if s.n == 1:
        return f"{fmt_num(s.median)}× (1 pair)"
    return f"{fmt_num(s.median)}× ({fmt_num(s.lo)}–{fmt_num(s.hi)})"


def with_discovery(runs, key: str) -> list:
    """Wall times plus the discovery recorded beside them (row 1: davsyncd's
    untimed --discover, the floor's home PROPFIND); None where not recorded."""
    out = []
    for r in runs or []:
        extra = (r or {}).get("detail", {}).get(key)
        out.append(r["wall"] + extra if r and extra is not None else None)
    return out


def row_stats(row: dict) -> dict:
    d, v, f = (row.get(c) for c in CLIENTS)
    return {
        "davsyncd": summarize(walls(d)), "vdirsyncer": summarize(walls(v)), "floor": summarize(walls(f)),
        "d/f": pairwise(walls(d), walls(f)), "v/d": pairwise(walls(v), walls(d)),
        "d/f+disc": pairwise(with_discovery(d, "discover_seconds"), with_discovery(f, "discovery")),
        "req": summarize(field_of(d, "requests")), "freq": summarize(field_of(f, "requests")),
    }


def target_check(row_id: str, st: dict) -> tuple[str, list[bool]]:
    parts, oks = [], []
    for kind, thr in TARGETS.get(row_id, []):
        if kind == "speedup":
            s = st["v/d"]
            ok = s is not None and s.median >= thr
            parts.append(f"≥ {thr:g}× faster than vdirsyncer: " + (f"**{'met' if ok else 'missed'}** ({fmt_num(s.median)}×)" if s else "not measured"))
        else:
            s = st["d/f+disc"] if kind == "floor+discovery" else st["d/f"]
            ok = s is not None and s.median <= thr
            what = "discovery included, " if kind == "floor+discovery" else ""
            parts.append(f"{what}within {thr:g}× of the floor: " + (f"**{'met' if ok else 'missed'}** ({fmt_num(s.median)}×)" if s else "not measured"))
        if s is not None:
            oks.append(ok)
    return "; ".join(parts) if parts else "—", oks


def suite_title(suite: dict) -> str:
    items = " + ".join(f"{sp['count']:,} {sp['kind']}".replace(",", " ") for sp in suite["specs"])
    return f"{suite['server_label']}, {items}"


def main_table(suite: dict, rows_meta: list[dict], meta: dict | None = None) -> str:
    out = io.StringIO()
    out.write("| Row | davsyncd | vdirsyncer | floor | davsyncd ÷ floor | vdirsyncer ÷ davsyncd | requests davsyncd / floor | Targets |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    for rm in rows_meta:
        rid = rm["id"]
        if rm.get("pending"):
            out.write(f"| {rid}. {rm['title']} | not measured yet: {rm['pending']} | | | | | | |\n")
            continue
        if rm.get("daemon"):
            out.write(daemon_row(suite, rm, meta or {}))
            continue
        row = suite["rows"].get(rid)
        if not row:
            continue
        st = row_stats(row)
        tgt, _ = target_check(rid, st)
        req = (fmt_num(st["req"].median, 0) if st["req"] else "—") + " / " + \
            (fmt_num(st["freq"].median, 0) if st["freq"] else "—")
        out.write(f"| {rid}. {rm['title']} | {s_fmt(st['davsyncd'])} | {s_fmt(st['vdirsyncer'])} | "
                  f"{s_fmt(st['floor'])} | {ratio_fmt(st['d/f'])} | {ratio_fmt(st['v/d'])} | {req} | {tgt} |\n")
    return out.getvalue()


# --- rows 5, 6 and 7 (idle): the long-running daemon ---------------------------------

def _runs(suite: dict, rid: str, name: str) -> list:
    return [r for r in (suite["rows"].get(rid, {}).get(name) or []) if r]


def self_change_check(run: dict, honoured: bool) -> tuple[str, bool]:
    """Row 6's targets: no extra request with an honouring server; with an
    ignoring one at most SELF_CHANGE_LIGHT light requests and no download."""
    extra, down, light = run["requests"], run["down"], run["detail"].get("light", 0)
    if honoured:
        ok = extra == 0
        return f"zero extra requests: **{'met' if ok else 'missed'}** ({extra})", ok
    ok = down == 0 and extra == light and light <= SELF_CHANGE_LIGHT
    return (f"≤ {SELF_CHANGE_LIGHT} light requests and no download: **{'met' if ok else 'missed'}** "
            f"({light} light, {extra - light} other, {down} downloads)"), ok


def idle_check(run: dict) -> tuple[str, bool]:
    mb = run["maxrss_kb"] / 1024
    ok = mb < IDLE_RSS_TARGET
    return f"idle RSS < {IDLE_RSS_TARGET:g} MB: **{'met' if ok else 'missed'}** ({fmt_num(mb)} MB)", ok


def _not_here(suite: dict, meta: dict) -> str:
    servers = meta.get("push_servers")
    if servers is not None and suite["server"] not in servers:
        return "measured on " + (", ".join(s.capitalize() for s in servers) or "no server") + " only (--push-servers)"
    return "not measured (the run failed before it)"


def daemon_row(suite: dict, rm: dict, meta: dict) -> str:
    rid, title = rm["id"], rm["title"]
    if rid == "5":
        push, poll = _runs(suite, "5", "push"), _runs(suite, "5", "poll")
        if not push and not poll:
            return f"| {rid}. {title} | {_not_here(suite, meta)} | | | | | | |\n"
        ps = summarize(walls(push))
        req = summarize(field_of(push, "requests"))
        contrast = "—"
        if poll:
            interval = poll[0]["detail"]["interval"]
            contrast = f"poll-only contrast (every {interval} s): {s_fmt(summarize(walls(poll)))}"
        return (f"| {rid}. {title} | {s_fmt(ps)} by push | — (no push) | — | — | — | "
                f"{fmt_num(req.median, 0) if req else '—'} / — | no target set; {contrast} |\n")
    if rid == "6":
        hon, ign = _runs(suite, "6", "honoured"), _runs(suite, "6", "ignored")
        if not hon and not ign:
            return f"| {rid}. {title} | {_not_here(suite, meta)} | | | | | | |\n"
        cells, tg = [], []
        for runs, honoured, label in ((hon, True, "honouring"), (ign, False, "ignoring")):
            if not runs:
                continue
            r = runs[-1]
            cells.append(f"{label} server: {r['requests']} extra requests, {r['down']} downloads")
            t, _ = self_change_check(r, honoured)
            tg.append(f"{label}: {t}")
        n_edits = (hon or ign)[-1]["up"]
        return (f"| {rid}. {title} | {'; '.join(cells)} (after uploading {n_edits} local edits) | — | — | — | — | "
                f"— | {'; '.join(tg)} |\n")
    return ""


def daemon_details(suite: dict) -> str:
    """Rows 5 and 6 in detail, with the evidence."""
    push, poll = _runs(suite, "5", "push"), _runs(suite, "5", "poll")
    hon, ign = _runs(suite, "6", "honoured"), _runs(suite, "6", "ignored")
    if not (push or poll or hon or ign):
        return ""
    out = io.StringIO()
    out.write("Rows 5 and 6 in detail (davsyncd as a daemon; WebDAV-Push through the tests' push front "
              "and UnifiedPush distributor, see bench/README.md):\n\n")
    out.write("| Row | Measured | Result | Evidence |\n|---|---|---|---|\n")
    if push:
        sent = summarize([r["detail"].get("push_sent_after") for r in push])
        own = summarize([r["wall"] - r["detail"]["push_sent_after"] for r in push
                         if r["detail"].get("push_sent_after") is not None])
        kinds = _common([", ".join(k.split(" /")[0] for k in r["detail"]["requests"]) for r in push])
        syncs = _common([_syncs(r["detail"]["syncs"]) for r in push])
        out.write(f"| 5. Push latency, push | another client's PUT through the front returned → the local "
                  f"file holds the change (checked every 5 ms) | {s_fmt(summarize(walls(push)))} | "
                  f"the front sent the push {s_fmt(sent)} after the PUT (most of it: its sync-token lookup, "
                  f"a Depth-0 PROPFIND the server answers from every item); from there to the file "
                  f"{s_fmt(own)}; daemon requests per change: {kinds}; syncs: {syncs} |\n")
    if poll:
        d = poll[0]["detail"]
        phases = ", ".join(fmt_num(r["detail"]["phase"]) for r in poll)
        syncs = _common([_syncs(r["detail"]["syncs"]) for r in poll])
        reqs = _common([str(r["requests"]) for r in poll])
        late = max(r["detail"].get("late", 0) for r in poll)
        out.write(f"| 5. Push latency, poll only (sync_interval {d['interval']} s) | the same change, daemon "
                  f"without push (no front, no distributor) | {s_fmt(summarize(walls(poll)))} | PUTs at "
                  f"{phases} of the poll cycle after a poll ended, so the expected latency is "
                  f"(1 − phase) × {d['interval']} s plus one sync, about half the interval in the median; "
                  f"syncs: {syncs}; {reqs} requests per poll"
                  + (f"; a PUT was up to {fmt_num(late)} s late for its phase" if late > 0.05 else "") + " |\n")
    for runs, honoured, label in ((hon, True, "honours"), (ign, False, "ignores")):
        if not runs:
            continue
        r = runs[-1]
        d = r["detail"]
        t, _ = self_change_check(r, honoured)
        besides = ", ".join(f"{v} {k}" for k, v in d.get("upload_sync_requests_besides_puts", {}).items()) or "nothing"
        after = "; ".join(d.get("after", [])) or "none"
        out.write(f"| 6. Self-change cost, server {label} Push-Dont-Notify | {r['up']} local edits (temporary "
                  f"file + rename), uploaded; then every request of the daemon's syncs without PUTs | "
                  f"{r['requests']} requests, {r['down']} downloads, {d.get('after_bytes', 0)} bytes | "
                  f"pushes sent to us {d['pushes_sent']}, suppressed {d['suppressed']}; upload "
                  f"{fmt_num(r['wall'])} s in {_syncs(d['upload_syncs'])} with {besides} besides the PUTs; "
                  f"other syncs: {_other_syncs(d)}, their requests: {after}; {t} |\n")
    return out.getvalue() + "\n"


def _syncs(reasons: list) -> str:
    """[['push'], ['local-change', 'push']] -> '2 syncs (push; local-change+push)'."""
    if not reasons:
        return "no sync"
    return (f"{len(reasons)} sync{'s' if len(reasons) != 1 else ''} ("
            + "; ".join("+".join(r) or "?" for r in reasons) + ")")


def _other_syncs(d: dict) -> str:
    """Row 6: the syncs without PUTs (older results: those after the upload)."""
    if "other_syncs" in d:
        o = d["other_syncs"]
        return f"{len(o)} ({'; '.join(o)})" if o else "none"
    return _syncs(d.get("syncs_after_upload", []))


def _common(values: list[str]) -> str:
    """'x' when all equal, else 'x (2), y (1)'."""
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if len(counts) == 1:
        return values[0] if values else "—"
    return ", ".join(f"{k} ({v}×)" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def idle_line(suite: dict, meta: dict) -> str:
    runs = _runs(suite, "7i", "davsyncd")
    if not runs:
        return f"| davsyncd daemon, idle | {_not_here(suite, meta)} | | |\n"
    r = runs[-1]
    d = r["detail"]
    t, _ = idle_check(r)
    perf = d.get("perf")
    timers = ""
    if perf:
        armed = perf.get("timer:hrtimer_start", 0) + perf.get("timer:timer_start", 0)
        timers = f"; timers armed by it: {armed} (perf)"
    mem = (f"VmRSS {fmt_num(r['maxrss_kb'] / 1024)} MB; Pss {fmt_num((d.get('pss_kb') or 0) / 1024)} MB, "
           f"private {fmt_num((d.get('private_kb') or 0) / 1024)} MB; {d['threads']} thread(s)")
    items = f"{d['items']:,}".replace(",", " ")
    return (f"| davsyncd daemon, idle: {d['accounts']} accounts, {items} items, push active "
            f"| {fmt_num(r['cpu'], 2)} s in {fmt_num(d['window'])} s; wake-ups {d['per_minute']:.1f}/min "
            f"({d['switches']} context switches of all threads{timers}) | {mem} | {t} |\n")


def runs_summary(suite: dict) -> str:
    counts: dict = {}
    for rid, row in suite["rows"].items():
        if rid not in MAIN_ROWS:
            continue
        for c, runs in row.items():
            counts.setdefault(c, set()).add(sum(1 for r in runs if r))
    parts = []
    for c in CLIENTS:
        if c in counts:
            lo, hi = min(counts[c]), max(counts[c])
            parts.append(f"{c} {lo}" if lo == hi else f"{c} {lo}–{hi}")
    return ", ".join(parts)


def floor_choices(suite: dict) -> str:
    runs = suite["rows"].get("1", {}).get("floor") or []
    detail = (runs[0] or {}).get("detail", {}) if runs else {}
    first = detail.get("candidates")
    if not first:
        return ""
    out = "; ".join(f"{coll} {c['used']} (" + ", ".join(f"{k} {fmt_num(v)} s" for k, v in sorted(c.items())
                                                if k != "used") + ")"
                    for coll, c in first.items())
    left = detail.get("incomplete") or {}
    if left:
        out += "; left out as incomplete: " + ", ".join(f"{k} (brought {n} bodies)" for k, n in left.items())
    return out


def resource_table(suite: dict, meta: dict | None = None) -> str:
    row = suite["rows"].get("1")
    if not row:
        return ""
    out = io.StringIO()
    out.write("| Client | CPU user+sys | memory | Target |\n|---|---|---|---|\n")
    total = sum(sp["count"] for sp in suite["specs"])
    for c in ("davsyncd", "vdirsyncer"):
        runs = row.get(c)
        if not runs:
            continue
        cpu = summarize(field_of(runs, "cpu"))
        rss = summarize([x / 1024 if x else None for x in field_of(runs, "maxrss_kb")])
        tgt = "—"
        if c == "davsyncd" and cpu:
            if total == 15000:
                ok = cpu.median < CPU_TARGET
                tgt = f"< {CPU_TARGET:g} s for 15 000 items: **{'met' if ok else 'missed'}** ({fmt_num(cpu.median)} s)"
            else:
                tgt = f"(the target, < {CPU_TARGET:g} s, is for 15 000 items; this run has {total})"
        out.write(f"| {c}, first sync (row 1) | {s_fmt(cpu)} | peak RSS {s_fmt(rss, 'MB')} | {tgt} |\n")
    out.write(idle_line(suite, meta or {}))
    return out.getvalue()


def _main_vdirsyncer(main: list[dict], rid: str) -> str:
    """vdirsyncer's figure in the main Radicale table, for a scale point that
    reuses it (skip_note "main")."""
    for m in main:
        if m["server"] == "radicale":
            st = summarize(walls(m["rows"].get(rid, {}).get("vdirsyncer")))
            if st:
                items = " + ".join(f"{sp['count']:,} {sp['kind']}".replace(",", " ") for sp in m["specs"])
                return f"{s_fmt(st)}, main table ({items})"
    return "left out (see note)"


def scaling_table(suites: list[dict], main: list[dict] = ()) -> str:
    out = io.StringIO()
    out.write("| Items | Row | davsyncd | vdirsyncer | floor | davsyncd ÷ floor | davsyncd ÷ floor, discovery "
              "included | vdirsyncer ÷ davsyncd | davsyncd CPU | davsyncd peak RSS |\n")
    out.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for suite in sorted(suites, key=lambda s: s["scale"]):
        for rid, title in (("1", "first sync"), ("3", "one server change")):
            row = suite["rows"].get(rid)
            if not row:
                continue
            st = row_stats(row)
            v = s_fmt(st["vdirsyncer"]) if st["vdirsyncer"] else (suite.get("skip_note", {}).get(rid) or "—")
            if v == "main":
                v = _main_vdirsyncer(main, rid)
            cpu = summarize(field_of(row.get("davsyncd"), "cpu"))
            rss = summarize([x / 1024 if x else None for x in field_of(row.get("davsyncd"), "maxrss_kb")])
            out.write(f"| {suite['scale']:,} | {title} | {s_fmt(st['davsyncd'])} | {v} | {s_fmt(st['floor'])} | "
                      f"{ratio_fmt(st['d/f'])} | {ratio_fmt(st['d/f+disc']) if rid == '1' else '—'} | "
                      f"{ratio_fmt(st['v/d'])} | {s_fmt(cpu)} | "
                      f"{fmt_num(rss.median) + ' MB' if rss else '—'} |\n".replace(",", " ", 1))
    return out.getvalue()


def markdown(results: dict) -> str:
    meta = dict(results["meta"])
    meta["push_servers"] = results.get("push_servers")
    rows_meta = results["rows"]
    out = io.StringIO()
    out.write(f"### Benchmark results ({meta['date']})\n\n")
    out.write(f"`{meta['command']}` — {meta['machine']}; {meta['duration']:.0f} s in all. "
              f"Load average before/after: {meta['load_before']} / {meta['load_after']}.\n\n")
    out.write(f"Versions: {meta['versions']}.\n\n")
    out.write("Times are wall-clock seconds, median of the repeats with min–max in brackets; "
              "ratios are taken repeat by repeat (same server, same data, same minute) and then "
              "their median. The floor is the bare HTTP request sequence (requests only, see "
              "bench/README.md).\n\n")
    for suite in results["suites"]:
        if suite.get("scale") is not None or suite.get("section"):
            continue
        out.write(f"#### {suite_title(suite)}\n\n")
        out.write(f"Runs per row: {runs_summary(suite)}.\n\n")
        out.write(main_table(suite, rows_meta, meta))
        out.write("\n")
        out.write(daemon_details(suite))
        fc = floor_choices(suite)
        if fc:
            out.write(f"Row 1's floor: per collection, the faster of (A) PROPFIND of the token + query with "
                      f"data and (B) sync-collection with data, as measured in the first repeat: {fc}.\n\n")
        rt = resource_table(suite, meta)
        if rt:
            out.write("Row 7, resource use: the one-shot client of row 1, and the long-running daemon when "
                      "idle (after its start-up syncs; CPU and context switches over the window):\n\n" + rt + "\n")
        for rid, notes in sorted(suite.get("notes", {}).items()):
            for n in notes:
                out.write(f"- Row {rid}: {n}\n")
        if suite.get("notes"):
            out.write("\n")
    scale = [s for s in results["suites"] if s.get("scale") is not None]
    if scale:
        out.write(f"#### Row 8, scaling ({scale[0]['server_label']}, one address book)\n\n")
        out.write(scaling_table(scale, [x for x in results["suites"] if x.get("scale") is None
                                        and not x.get("section")]))
        out.write("\n")
        out.write(report_account.scale_targets(scale))
        fcs = [(s["scale"], floor_choices(s)) for s in sorted(scale, key=lambda s: s["scale"])]
        if any(fc for _, fc in fcs):
            out.write("Row 1's floor sequence (A: PROPFIND + query, B: sync-collection with data), first repeat: " +
                      "; ".join(f"{n}: {fc}" for n, fc in fcs if fc) + ".\n\n")
        for s in scale:
            for rid, notes in sorted(s.get("notes", {}).items()):
                for n in notes:
                    out.write(f"- {s['scale']} items, row {rid}: {n}\n")
        out.write("\n")
    out.write(report_account.account_section(results["suites"]))
    out.write(f"![benchmark chart]({meta.get('chart_name', 'latest.png')})\n")
    return out.getvalue()


def write_csv(results: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["suite", "row", "client", "repeat", "wall_s", "cpu_s", "maxrss_kb", "requests", "down", "up"])
        for suite in results["suites"]:
            for rid, row in suite["rows"].items():
                for client, runs in row.items():
                    for i, r in enumerate(runs or []):
                        if r:
                            w.writerow([suite["id"], rid, client, i + 1, f"{r['wall']:.4f}", f"{r['cpu']:.3f}",
                                        r["maxrss_kb"], r["requests"], r["down"], r["up"]])


def chart(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"davsyncd": "#1f77b4", "vdirsyncer": "#d62728", "floor": "#7f7f7f"}
    main = [s for s in results["suites"] if s.get("scale") is None and not s.get("section")]
    scale = sorted((s for s in results["suites"] if s.get("scale") is not None), key=lambda s: s["scale"])
    ncols = len(main) + (1 if scale else 0)
    daemon = [m for m in main if any(m["rows"].get(r) for r in ("5", "6", "7i"))]
    width = max(ncols, 3 if daemon else 1)
    fig = plt.figure(figsize=(5.2 * width, 4.6 * (2 if daemon else 1)))
    grid = fig.add_gridspec(2 if daemon else 1, width)
    axes = [[fig.add_subplot(grid[0, k]) for k in range(ncols)]]
    titles = {r["id"]: r["title"] for r in results["rows"]}
    for ax, suite in zip(axes[0], main):
        rids = [r for r in ("1", "2", "3", "4") if r in suite["rows"]]
        present = [c for c in CLIENTS if any(suite["rows"][r].get(c) for r in rids)]
        width = 0.8 / max(1, len(present))
        for k, c in enumerate(present):
            xs, ys, lo, hi = [], [], [], []
            for j, rid in enumerate(rids):
                s = summarize(walls(suite["rows"][rid].get(c)))
                if not s:
                    continue
                xs.append(j + (k - (len(present) - 1) / 2) * width)
                ys.append(s.median)
                lo.append(s.median - s.lo)
                hi.append(s.hi - s.median)
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=c, color=colors[c])
        ax.set_yscale("log")
        ax.set_xticks(range(len(rids)))
        ax.set_xticklabels([f"{r}. {titles[r]}".replace("One item changed on the server", "One server change")
                            .replace("One local edit uploaded", "One local edit") for r in rids],
                           rotation=15, fontsize=8)
        ax.set_ylabel("seconds (log)")
        ax.set_title(suite_title(suite), fontsize=9)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if scale:
        ax = axes[0][-1]
        for c in CLIENTS:
            for rid, style in (("1", "-o"), ("3", "--s")):
                pts = [(s["scale"], summarize(walls(s["rows"].get(rid, {}).get(c)))) for s in scale]
                pts = [(n, st) for n, st in pts if st]
                if pts:
                    ax.plot([n for n, _ in pts], [st.median for _, st in pts], style, color=colors[c],
                            label=f"{c}, {'first sync' if rid == '1' else 'one change'}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("items in the address book")
        ax.set_ylabel("seconds (log)")
        ax.set_title(f"8. Scaling ({scale[0]['server_label']})", fontsize=9)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=7)
    if daemon:
        _daemon_panels(daemon[0], [fig.add_subplot(grid[1, k]) for k in range(3)])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _daemon_panels(suite: dict, axes) -> None:
    """Row 5 (latency by push and by poll), row 6 (requests after the
    upload, against the targets), row 7 idle (memory against the target)."""
    import matplotlib.ticker
    ax = axes[0]
    groups = [("push", "#1f77b4"), ("poll", "#ff7f0e")]
    labels = []
    for k, (name, color) in enumerate(groups):
        runs = _runs(suite, "5", name)
        if not runs:
            continue
        ys = walls(runs)
        st = summarize(ys)
        label = "push" if name == "push" else f"poll only\n(every {runs[0]['detail']['interval']} s)"
        labels.append((k, label))
        ax.bar(k, st.median, 0.6, color=color, alpha=0.5)
        ax.plot([k] * len(ys), ys, "o", color=color)
        ax.annotate(f"{fmt_num(st.median)} s", (k, st.median), textcoords="offset points", xytext=(0, 4),
                    ha="center", fontsize=8)
    ax.set_xticks([k for k, _ in labels])
    ax.set_xticklabels([lab for _, lab in labels], fontsize=8)
    ax.set_yscale("log")
    lows = [min(walls(_runs(suite, "5", n)) or [1]) for n, _ in groups if _runs(suite, "5", n)]
    if lows:
        ax.set_ylim(bottom=min(lows) / 4)
    fmt = matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel("seconds, PUT returned → local file (log)")
    ax.set_title(f"5. Push latency ({suite_title(suite)})", fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)

    ax = axes[1]
    xs, names = [], []
    for k, (name, honoured, label) in enumerate((("honoured", True, "server honours\nPush-Dont-Notify"),
                                                 ("ignored", False, "server ignores it"))):
        runs = _runs(suite, "6", name)
        if not runs:
            continue
        r = runs[-1]
        light = r["detail"].get("light", 0)
        other = r["requests"] - light - r["down"]
        ax.bar(k, light, 0.6, color="#2ca02c", label="light (sync-collection, Depth-0 PROPFIND)" if k else None)
        ax.bar(k, max(0, other), 0.6, bottom=light, color="#9467bd", label="other" if k else None)
        ax.bar(k, r["down"], 0.6, bottom=light + max(0, other), color="#d62728", label="downloads" if k else None)
        limit = 0 if honoured else SELF_CHANGE_LIGHT
        ok = self_change_check(r, honoured)[1]
        ax.hlines(limit, k - 0.4, k + 0.4, colors="black", linestyles="dashed")
        ax.annotate(f"{r['requests']} ({'met' if ok else 'missed'}; target ≤ {limit})", (k, max(limit, r["requests"])),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
        xs.append(k)
        names.append(label + f"\n{r['detail']['pushes_sent']} pushes to us")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, max(4, ax.get_ylim()[1] * 1.2))
    ax.set_ylabel(f"requests after the upload of {(_runs(suite, '6', 'honoured') or _runs(suite, '6', 'ignored') or [{'up': '?'}])[-1]['up']} edits")
    ax.set_title("6. Self-change cost (dashed: target)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[2]
    runs = _runs(suite, "7i", "davsyncd")
    if runs:
        r = runs[-1]
        d = r["detail"]
        vals = [("VmRSS", r["maxrss_kb"] / 1024), ("Pss", (d.get("pss_kb") or 0) / 1024),
                ("private", (d.get("private_kb") or 0) / 1024)]
        ax.bar(range(3), [v for _, v in vals], 0.6, color="#1f77b4")
        for k, (_, v) in enumerate(vals):
            ax.annotate(f"{fmt_num(v)} MB", (k, v), textcoords="offset points", xytext=(0, 4), ha="center",
                        fontsize=8)
        ax.axhline(IDLE_RSS_TARGET, color="black", linestyle="dashed")
        ax.set_xticks(range(3))
        ax.set_xticklabels([n for n, _ in vals], fontsize=8)
        ax.set_ylabel("MB")
        ok = idle_check(r)[1]
        ax.set_title(f"7. Idle daemon, {d['accounts']} accounts: RSS target < {IDLE_RSS_TARGET:g} MB "
                     f"{'met' if ok else 'missed'};\nwake-ups {d['per_minute']:.1f}/min "
                     f"({d['switches']} context switches in {fmt_num(d['window'])} s)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.set_axis_off()
