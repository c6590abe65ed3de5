"""Report parts for row 8's memory and discovery targets and for rows 9
(many collections) and 10 (rediscovery), benchlib/account_rows.py."""

from __future__ import annotations

import io

from .stats import fmt_num, pairwise, summarize

FIRST_SYNC_FLOOR = 1.3        # first sync, discovery included, at most this × the floor (10 000 and 50 000)
FIRST_SYNC_SIZES = (10000, 50000)
RSS_TARGET_MB = 30.0          # peak RSS of the first sync at RSS_TARGET_SIZE
RSS_TARGET_SIZE = 50000
RSS_FLAT = 1.25               # "flat": every larger size within this × the 10 000 figure
REDISCOVERY_TARGET_MS = 50.0


def _walls(runs):
    return [r["wall"] if r else None for r in runs or []]


def _rss_mb(runs):
    return summarize([r["maxrss_kb"] / 1024 if r and r.get("maxrss_kb") else None for r in runs or []])


def _verdict(ok: bool) -> str:
    return f"**{'met' if ok else 'missed'}**"


def _n(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def scale_targets(scale: list[dict]) -> str:
    """Row 8 against its targets: first sync with discovery ≤ 1.3× the floor
    at 10 000 and 50 000; peak RSS ≤ 30 MB at 50 000 and flat from 10 000
    to 100 000."""
    from .report import row_stats
    by_n = {s["scale"]: s for s in scale}
    lines = []
    for n in FIRST_SYNC_SIZES:
        row = by_n.get(n, {}).get("rows", {}).get("1")
        st = row_stats(row)["d/f+disc"] if row else None
        if st:
            lines.append(f"first sync at {_n(n)}, discovery included, within {FIRST_SYNC_FLOOR:g}× of the floor: "
                         f"{_verdict(st.median <= FIRST_SYNC_FLOOR)} ({fmt_num(st.median)}×)")
    rss = {n: _rss_mb(s["rows"].get("1", {}).get("davsyncd")) for n, s in by_n.items()}
    if rss.get(RSS_TARGET_SIZE):
        mb = rss[RSS_TARGET_SIZE].median
        lines.append(f"first-sync peak RSS at {_n(RSS_TARGET_SIZE)} ≤ {RSS_TARGET_MB:g} MB: "
                     f"{_verdict(mb <= RSS_TARGET_MB)} ({fmt_num(mb)} MB)")
    base = rss.get(10000)
    larger = [n for n in sorted(rss) if n > 10000 and rss[n]]
    if base and larger:
        worst = max(rss[n].median / base.median for n in larger)
        figures = ", ".join(f"{_n(n)}: {fmt_num(rss[n].median)} MB" for n in [10000] + larger)
        lines.append(f"peak RSS flat from 10 000 to {_n(larger[-1])} (each within {RSS_FLAT:g}× of the 10 000 "
                     f"figure): {_verdict(worst <= RSS_FLAT)} ({figures}; at most {fmt_num(worst)}×)")
    if not lines:
        return ""
    return "Row 8's targets: " + "; ".join(lines) + ".\n\n"


def account_section(suites: list[dict]) -> str:
    many = [s for s in suites if s.get("section") == "account" and s["id"] == "collections"]
    redisc = [s for s in suites if s.get("section") == "account" and s["id"] == "rediscovery"]
    out = io.StringIO()
    for s in many:
        out.write(_many_collections(s))
    for s in redisc:
        out.write(_rediscovery(s))
    return out.getvalue()


def _many_collections(suite: dict) -> str:
    row = suite["rows"].get("9")
    if not row:
        return ""
    d, f = row.get("davsyncd"), row.get("floor")
    specs = suite["specs"]
    per = specs[0]["count"] if specs else 0
    sd, sf, ratio = summarize(_walls(d)), summarize(_walls(f)), pairwise(_walls(d), _walls(f))
    req_d = summarize([r["requests"] if r else None for r in d or []])
    req_f = summarize([r["requests"] if r else None for r in f or []])
    cpu = summarize([r["cpu"] if r else None for r in d or []])
    rss = _rss_mb(d)
    out = io.StringIO()
    out.write(f"#### Row 9, many collections ({suite['server_label']}, one account with {len(specs)} calendars of "
              f"{_n(per)} events)\n\n")
    out.write("First sync of the whole account, discovery included: `davsyncd --once` with fresh folders and no "
              "discovery cache (it discovers the account itself) against the floor's one Depth-1 PROPFIND of the "
              "home plus, per calendar, a Depth-0 PROPFIND of the sync-token and a calendar-query with data. davsyncd's "
              "request count is its sync summaries' (its discovery requests are not in them).\n\n")
    out.write("| Client | wall | requests | CPU user+sys | peak RSS |\n|---|---|---|---|---|\n")
    if sd:
        out.write(f"| davsyncd | {sd.fmt()} | {fmt_num(req_d.median, 0) if req_d else '—'} | "
                  f"{cpu.fmt() if cpu else '—'} | {rss.fmt('MB') if rss else '—'} |\n")
    if sf:
        out.write(f"| floor | {sf.fmt()} | {fmt_num(req_f.median, 0) if req_f else '—'} | — | — |\n")
    if ratio:
        ok = ratio.median <= FIRST_SYNC_FLOOR
        spread = f"{fmt_num(ratio.lo)}–{fmt_num(ratio.hi)}" if ratio.n > 1 else "1 pair"
        out.write(f"\ndavsyncd ÷ floor: {fmt_num(ratio.median)}× ({spread}); the first-sync target "
                  f"(discovery included, within {FIRST_SYNC_FLOOR:g}× of the floor): {_verdict(ok)}.\n")
    return out.getvalue() + "\n"


def _rediscovery(suite: dict) -> str:
    row = suite["rows"].get("10")
    if not row:
        return ""
    items = " + ".join(f"{_n(sp['count'])} {sp['kind']}" for sp in suite["specs"])
    homes = suite.get("extra", {}).get("homes", [])
    out = io.StringIO()
    out.write(f"#### Row 10, rediscovery ({suite['server_label']}, {items} in {len(suite['specs'])} collections, "
              f"{len(homes)} home{'s' if len(homes) != 1 else ''})\n\n")
    out.write("What the daemon pays to re-learn the collection list (`dav::rediscover_homes`: one Depth-1 PROPFIND "
              "per known home asking only the discovery properties, no sync-token or getctag). Target "
              f"≤ {REDISCOVERY_TARGET_MS:g} ms.\n\n")
    out.write("| Measured | time | requests | Target |\n|---|---|---|---|\n")

    def ms(runs):
        return summarize([r["wall"] * 1000 if r else None for r in runs or []])

    floor, daemon, disc = row.get("floor"), row.get("daemon"), row.get("discover")
    for runs, label, targeted in (
            (floor, "the request sequence: http.client replaying davsyncd's PROPFIND body to each home "
                    "(warm keep-alive connection)", True),
            (daemon, "in the daemon: the home PROPFINDs of `davsyncd --once` with its discovery cache aged "
                     "past 6 h (its DAVSYNCD_DEBUG log, whole ms, new connection)", True),
            (disc, "`davsyncd --discover`: a whole process, full discovery with the principal lookup", False)):
        st = ms(runs)
        if not st:
            continue
        req = summarize([r["requests"] if r else None for r in runs])
        tgt = "—"
        if targeted:
            tgt = f"≤ {REDISCOVERY_TARGET_MS:g} ms: {_verdict(st.median <= REDISCOVERY_TARGET_MS)}"
        out.write(f"| {label} | {st.fmt('ms')} | {fmt_num(req.median, 0) if req else '—'} | {tgt} |\n")
    return out.getvalue() + "\n"
