"""Markdown table and PNG chart from the raw results (results JSON)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .stats import Summary, fmt_num, pairwise, summarize

CLIENTS = ["davsyncd", "vdirsyncer", "floor"]

# Targets of the issue: (row, kind, threshold). kind "speedup": vdirsyncer ÷ davsyncd
# at least threshold; "floor": davsyncd ÷ floor at most threshold.
TARGETS = {
    "1": [("speedup", 20.0), ("floor", 1.5)],
    "2": [("speedup", 50.0), ("floor", 1.2)],
    "3": [("floor", 1.3)],
}
CPU_TARGET = 1.0      # seconds of client CPU for the first sync of 15 000 items


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


def row_stats(row: dict) -> dict:
    d, v, f = (row.get(c) for c in CLIENTS)
    return {
        "davsyncd": summarize(walls(d)), "vdirsyncer": summarize(walls(v)), "floor": summarize(walls(f)),
        "d/f": pairwise(walls(d), walls(f)), "v/d": pairwise(walls(v), walls(d)),
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
            s = st["d/f"]
            ok = s is not None and s.median <= thr
            parts.append(f"within {thr:g}× of the floor: " + (f"**{'met' if ok else 'missed'}** ({fmt_num(s.median)}×)" if s else "not measured"))
        if s is not None:
            oks.append(ok)
    return "; ".join(parts) if parts else "—", oks


def suite_title(suite: dict) -> str:
    items = " + ".join(f"{sp['count']:,} {sp['kind']}".replace(",", " ") for sp in suite["specs"])
    return f"{suite['server_label']}, {items}"


def main_table(suite: dict, rows_meta: list[dict]) -> str:
    out = io.StringIO()
    out.write("| Row | davsyncd | vdirsyncer | floor | davsyncd ÷ floor | vdirsyncer ÷ davsyncd | requests davsyncd / floor | Targets |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    for rm in rows_meta:
        rid = rm["id"]
        if rm.get("pending"):
            out.write(f"| {rid}. {rm['title']} | not measured yet: {rm['pending']} | | | | | | |\n")
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


def runs_summary(suite: dict) -> str:
    counts: dict = {}
    for rid, row in suite["rows"].items():
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
    first = (runs[0] or {}).get("detail", {}).get("candidates") if runs else None
    if not first:
        return ""
    return "; ".join(f"{coll} {c['used']} (" + ", ".join(f"{k} {fmt_num(v)} s" for k, v in sorted(c.items())
                                                   if k != "used") + ")"
                     for coll, c in first.items())


def resource_table(suite: dict) -> str:
    row = suite["rows"].get("1")
    if not row:
        return ""
    out = io.StringIO()
    out.write("| Client (row 1, first sync) | CPU user+sys | peak RSS | Target |\n|---|---|---|---|\n")
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
        out.write(f"| {c} | {s_fmt(cpu)} | {s_fmt(rss, 'MB')} | {tgt} |\n")
    out.write("| idle RSS, wake-ups | not measured yet: need the long-running daemon | | |\n")
    return out.getvalue()


def scaling_table(suites: list[dict]) -> str:
    out = io.StringIO()
    out.write("| Items | Row | davsyncd | vdirsyncer | floor | davsyncd ÷ floor | vdirsyncer ÷ davsyncd "
              "| davsyncd CPU | davsyncd peak RSS |\n")
    out.write("|---|---|---|---|---|---|---|---|---|\n")
    for suite in sorted(suites, key=lambda s: s["scale"]):
        for rid, title in (("1", "first sync"), ("3", "one server change")):
            row = suite["rows"].get(rid)
            if not row:
                continue
            st = row_stats(row)
            v = s_fmt(st["vdirsyncer"]) if st["vdirsyncer"] else (suite.get("skip_note", {}).get(rid) or "—")
            cpu = summarize(field_of(row.get("davsyncd"), "cpu"))
            rss = summarize([x / 1024 if x else None for x in field_of(row.get("davsyncd"), "maxrss_kb")])
            out.write(f"| {suite['scale']:,} | {title} | {s_fmt(st['davsyncd'])} | {v} | {s_fmt(st['floor'])} | "
                      f"{ratio_fmt(st['d/f'])} | {ratio_fmt(st['v/d'])} | {s_fmt(cpu)} | "
                      f"{fmt_num(rss.median) + ' MB' if rss else '—'} |\n".replace(",", " ", 1))
    return out.getvalue()


def markdown(results: dict) -> str:
    meta = results["meta"]
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
        if suite.get("scale") is not None:
            continue
        out.write(f"#### {suite_title(suite)}\n\n")
        out.write(f"Runs per row: {runs_summary(suite)}.\n\n")
        out.write(main_table(suite, rows_meta))
        out.write("\n")
        fc = floor_choices(suite)
        if fc:
            out.write(f"Row 1's floor: per collection, the faster of (A) PROPFIND of the token + query with "
                      f"data and (B) sync-collection with data, as measured in the first repeat: {fc}.\n\n")
        rt = resource_table(suite)
        if rt:
            out.write("Row 7, resource use of the client in row 1:\n\n" + rt + "\n")
        for rid, notes in sorted(suite.get("notes", {}).items()):
            for n in notes:
                out.write(f"- Row {rid}: {n}\n")
        if suite.get("notes"):
            out.write("\n")
    scale = [s for s in results["suites"] if s.get("scale") is not None]
    if scale:
        out.write(f"#### Row 8, scaling ({scale[0]['server_label']}, one address book)\n\n")
        out.write(scaling_table(scale))
        out.write("\n")
        fcs = [(s["scale"], floor_choices(s)) for s in sorted(scale, key=lambda s: s["scale"])]
        if any(fc for _, fc in fcs):
            out.write("Row 1's floor sequence (A: PROPFIND + query, B: sync-collection with data), first repeat: " +
                      "; ".join(f"{n}: {fc}" for n, fc in fcs if fc) + ".\n\n")
        for s in scale:
            for rid, notes in sorted(s.get("notes", {}).items()):
                for n in notes:
                    out.write(f"- {s['scale']} items, row {rid}: {n}\n")
        out.write("\n")
    out.write(f"![benchmark chart]({meta.get('chart_name', 'latest.png')})\n")
    return out.getvalue()


def write_csv(results: dict, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["suite", "row", "client", "repeat", "wall_s", "cpu_s", "maxrss_kb", "requests", "down", "up"])
        for suite in results["suites"]:
            for rid, row in suite["rows"].items():
                for client, runs in row.items():
                    for i, r in enumerate(runs):
                        if r:
                            w.writerow([suite["id"], rid, client, i + 1, f"{r['wall']:.4f}", f"{r['cpu']:.3f}",
                                        r["maxrss_kb"], r["requests"], r["down"], r["up"]])


def chart(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"davsyncd": "#1f77b4", "vdirsyncer": "#d62728", "floor": "#7f7f7f"}
    main = [s for s in results["suites"] if s.get("scale") is None]
    scale = sorted((s for s in results["suites"] if s.get("scale") is not None), key=lambda s: s["scale"])
    ncols = len(main) + (1 if scale else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.6), squeeze=False)
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
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
