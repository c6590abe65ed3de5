#!/usr/bin/python3
"""davsyncd benchmark: davsyncd vs vdirsyncer vs the server floor on real
Radicale and Xandikos servers with generated data. Entry point: bench/run.

Writes bench/results/latest.{md,png,json,csv} (or quick.* with --quick).
Methodology: bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from benchlib import data, report  # noqa: E402
from benchlib.account_rows import many_collections_specs, row_many_collections, row_rediscovery  # noqa: E402
from benchlib.clients import Davsyncd, Vdirsyncer  # noqa: E402
from benchlib.daemon_rows import run_daemon_rows  # noqa: E402
from benchlib.rows import ROWS, Context, Floor, row_first_sync, row_one_change  # noqa: E402
from benchlib.servers import SETUPS  # noqa: E402

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f} s] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contacts", type=int, default=10000, help="contacts in the address book (default 10000)")
    p.add_argument("--events", type=int, default=5000, help="events in the calendar (default 5000)")
    p.add_argument("--repeat", type=int, default=3, help="repeats per row and client (default 3)")
    p.add_argument("--vdirsyncer-repeat", type=int, default=2,
                   help="repeats for vdirsyncer, which takes minutes (default 2)")
    p.add_argument("--slow-run", type=float, default=30.0,
                   help="a client whose first run in a row takes longer than this many seconds "
                        "runs only once in that row (default 30)")
    p.add_argument("--vdirsyncer-rows", default="1,2",
                   help="rows in which vdirsyncer takes part (default 1,2: the rows with a vdirsyncer target; "
                        "its row 3 costs the same listing as row 2, a minute at the default sizes)")
    p.add_argument("--servers", default="radicale,xandikos",
                   help="servers for rows 1-4 and 7 (default radicale,xandikos)")
    p.add_argument("--vdirsyncer-servers", default="radicale",
                   help="servers on which vdirsyncer runs too (default radicale)")
    p.add_argument("--scale", default="1000,10000,50000,100000",
                   help="address-book sizes for row 8 (Radicale); '' skips row 8 (default 1000,10000,50000,100000)")
    p.add_argument("--scale-100k", action=argparse.BooleanOptionalAction, default=True,
                   help="row 8's 100 000-item point, run once and last (default on; --no-scale-100k drops it "
                        "and saves 4-7 minutes: Radicale's caches for 100 000 items and one run of each client)")
    p.add_argument("--collections", type=int, default=20,
                   help="row 9: calendars in the many-collections account (default 20; 0 skips row 9)")
    p.add_argument("--collection-events", type=int, default=500,
                   help="row 9: events per calendar (default 500)")
    p.add_argument("--rediscover-repeat", type=int, default=5,
                   help="row 10: repeats of each rediscovery measurement (default 5; 0 skips row 10)")
    p.add_argument("--large-scale-repeat", type=int, default=1,
                   help="repeats at the row 8 sizes above --contacts (default 1: a second repeat at "
                        "50 000 items costs about 50 s)")
    p.add_argument("--vdirsyncer-scale-limit", type=int, default=1000,
                   help="row 8 leaves vdirsyncer out above this many items (default 1000; its figures at "
                        "the main size are in the main table)")
    p.add_argument("--push-servers", default="radicale",
                   help="servers for rows 5, 6 and the idle half of row 7, which run davsyncd as a daemon "
                        "with WebDAV-Push; '' skips them (default radicale)")
    p.add_argument("--idle-window", type=float, default=60.0,
                   help="row 7: seconds of the idle measurement (default 60)")
    p.add_argument("--push-repeat", type=int, default=3, help="row 5: changes pushed (default 3)")
    p.add_argument("--poll-interval", type=int, default=15,
                   help="row 5's poll-only contrast: the daemon's sync_interval in seconds (default 15)")
    p.add_argument("--poll-repeat", type=int, default=3,
                   help="row 5's poll-only contrast: changes (default 3)")
    p.add_argument("--edits", type=int, default=100, help="row 6: local edits in the burst (default 100)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small sizes, 2 repeats; writes results/quick.* instead of latest.*")
    p.add_argument("--seed", type=int, default=1, help="data seed (default 1)")
    p.add_argument("--binary", default=str(REPO / "build-bench" / "daemon" / "davsyncd"),
                   help="davsyncd binary (default build-bench/daemon/davsyncd, a release build)")
    p.add_argument("--workdir", help="scratch folder (default: a new folder under /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--out", default=str(HERE / "results"), help="results folder (default bench/results)")
    a = p.parse_args(argv)
    if a.quick:
        # Small sizes for a smoke run; options given explicitly still win.
        explicit = set(x.split("=")[0] for x in (argv if argv is not None else sys.argv[1:]))
        quick = {"contacts": 400, "events": 200, "repeat": 2, "vdirsyncer_repeat": 1, "scale": "200,1000",
                 "vdirsyncer_scale_limit": 200, "idle_window": 10.0, "push_repeat": 2, "poll_interval": 5,
                 "poll_repeat": 2, "collection_events": 20, "rediscover_repeat": 3}
        for name, value in quick.items():
            if "--" + name.replace("_", "-") not in explicit:
                setattr(a, name, value)
    a.scale_sizes = [int(x) for x in a.scale.split(",") if x.strip()]
    if not a.scale_100k:
        a.scale_sizes = [n for n in a.scale_sizes if n != 100000]
    a.server_list = [s for s in a.servers.split(",") if s]
    a.vdirsyncer_rows = {r.strip() for r in a.vdirsyncer_rows.split(",") if r.strip()}
    a.vdirsyncer_server_list = [s for s in a.vdirsyncer_servers.split(",") if s]
    a.push_server_list = [s for s in a.push_servers.split(",") if s]
    for s in a.server_list:
        if s not in SETUPS:
            p.error(f"unknown server {s!r} (known: {', '.join(SETUPS)})")
    return a


# --- environment -------------------------------------------------------------------

def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def dpkg_version(pkg: str) -> str:
    return sh(f"dpkg-query -W -f='${{Version}}' {pkg}") or "?"


def machine() -> str:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
            f"{sh('. /etc/os-release && echo $PRETTY_NAME')}, Linux {platform.release()}")


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def davsyncd_version(binary: str) -> str:
    commit = sh(f"git -C {shlex.quote(str(REPO))} rev-parse --short HEAD")
    dirty = sh(f"git -C {shlex.quote(str(REPO))} status --porcelain --untracked-files=no -- daemon")
    v = sh(f"{shlex.quote(binary)} --version").splitlines()
    return f"{v[0] if v else 'davsyncd'} (commit {commit}{', with uncommitted changes' if dirty else ''})"


# --- suites ------------------------------------------------------------------------

def make_clients(a, setup, specs, root: Path, with_vdirsyncer: bool) -> dict:
    # The floor goes first in the first repeat (it writes no files); the
    # order then rotates.
    clients = {"floor": Floor(setup, specs),
               "davsyncd": Davsyncd(root / "davsyncd", setup, specs, Path(a.binary))}
    if with_vdirsyncer:
        clients["vdirsyncer"] = Vdirsyncer(root / "vdirsyncer", setup, specs)
    return clients


def suite_record(sid: str, setup, specs, ctx: Context, label: str, scale=None, skip_note=None) -> dict:
    return {
        "id": sid, "server": setup.kind, "server_label": label, "scale": scale,
        "specs": [{"name": s.name, "kind": s.kind, "count": s.count} for s in specs],
        "repeat": ctx.repeat,
        "slow_repeat": {k: v for k, v in ctx.slow_repeat.items() if v < ctx.repeat and k in ctx.clients},
        "rows": ctx.results, "notes": ctx.notes, "skip_note": skip_note or {},
        "extra": ctx.extra,
    }


def make_context(a, setup, specs, clients, repeat=None, vdirsyncer_rows=None) -> Context:
    return Context(setup, specs, a.seed, clients, repeat or a.repeat, {"vdirsyncer": a.vdirsyncer_repeat}, log,
                   slow_run=a.slow_run, only_rows={"vdirsyncer": vdirsyncer_rows or a.vdirsyncer_rows})


def run_scale_suite(a, setup, specs, root: Path, label: str, n: int, suites: list) -> None:
    """Rows 1 and 3 on one address book of n items."""
    with_v = "radicale" in a.vdirsyncer_server_list and n <= a.vdirsyncer_scale_limit
    clients = make_clients(a, setup, specs, root, with_vdirsyncer=with_v)
    # Row 8 is rows 1 and 3; vdirsyncer takes part in both where it runs at all.
    ctx = make_context(a, setup, specs, clients, repeat=a.large_scale_repeat if n > a.contacts else None,
                       vdirsyncer_rows={"1", "3"})
    skip = {}
    if not with_v and "radicale" in a.vdirsyncer_server_list:
        for rid in ("1", "3"):
            skip[rid] = "left out (see note)"
        why = f"vdirsyncer left out at {n} items (--vdirsyncer-scale-limit {a.vdirsyncer_scale_limit}): "
        if n > 10000:
            why += ("its Depth-1 PROPFIND listing costs Radicale time that grows faster than linearly "
                    "(about a minute at 10 000 contacts), so one run would take longer than the whole benchmark")
        elif n == a.contacts and "radicale" in a.server_list:
            skip["1"] = "main"     # the report shows the main table's figure
            why += ("a run takes about a minute; its first sync of this address book (with the calendar) "
                    "is in the main table")
        else:
            why += "a run takes about a minute at 10 000 contacts"
        ctx.note("1", why)
    # Recorded first: the record shares ctx's dicts, so a failure keeps what was measured.
    suites.append(suite_record(f"scale-{n}", setup, specs, ctx, label, scale=n, skip_note=skip))
    try:
        row_first_sync(ctx, "1")
        row_one_change(ctx, "3")
    finally:
        clients["floor"].close()


def account_suite(sid: str, setup, specs, label: str, repeat: int) -> dict:
    """The record of rows 9 and 10 (benchlib/account_rows.py): the account
    as a whole, reported in a section of its own."""
    return {
        "id": sid, "server": setup.kind, "server_label": label, "scale": None, "section": "account",
        "specs": [{"name": s.name, "kind": s.kind, "count": s.count} for s in specs],
        "repeat": repeat, "slow_repeat": {}, "rows": {}, "notes": {}, "skip_note": {}, "extra": {},
    }


def run_many_collections(a, root: Path, label: str, suites: list) -> None:
    """Row 9 on a fresh Radicale with one account of many calendars."""
    specs = many_collections_specs(a.collections, a.collection_events)
    log(f"Row 9: {a.collections} calendars of {a.collection_events} events ({label}, a fresh server)")
    setup = SETUPS["radicale"](root / "server", specs, a.seed, log)
    setup.prepare()
    setup.start()
    try:
        suite = account_suite("collections", setup, specs, label, a.repeat)
        suites.append(suite)
        row_many_collections(setup, specs, root, Path(a.binary), a.repeat, log, suite)
    finally:
        setup.stop()


def results_of(a, argv, started, load_before, versions, stem, suites) -> dict:
    return {
        "meta": {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "command": "bench/run " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine(), "versions": versions,
            "load_before": load_before, "load_after": loadavg(),
            "duration": time.monotonic() - T0,
            "chart_name": f"{stem}.png",
            "sizes": {"contacts": a.contacts, "events": a.events, "scale": a.scale_sizes},
        },
        "rows": [{"id": r.id, "title": r.title, "pending": r.pending, "daemon": r.daemon} for r in ROWS],
        "push_servers": a.push_server_list,
        "options": {"idle_window": a.idle_window, "push_repeat": a.push_repeat, "poll_interval": a.poll_interval,
                    "poll_repeat": a.poll_repeat, "edits": a.edits, "large_scale_repeat": a.large_scale_repeat,
                    "collections": a.collections, "collection_events": a.collection_events,
                    "rediscover_repeat": a.rediscover_repeat},
        "suites": suites,
    }


def main(argv=None) -> int:
    a = parse_args(argv)
    if not Path(a.binary).is_file():
        print(f"bench: no davsyncd binary at {a.binary} (bench/run builds it)", file=sys.stderr)
        return 2
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="davsyncd-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if a.quick else "latest"
    started = dt.datetime.now(dt.timezone.utc)
    load_before = loadavg()
    versions = (f"{davsyncd_version(a.binary)}, vdirsyncer {dpkg_version('vdirsyncer')}, "
                f"Radicale {dpkg_version('radicale')}, Xandikos {dpkg_version('xandikos')}, "
                f"Python {platform.python_version()}")
    log(f"davsyncd benchmark: {a.contacts} contacts + {a.events} events, {a.repeat} repeats; work folder {work}")
    log(f"  {versions}")

    labels = {"radicale": f"Radicale {dpkg_version('radicale').split('-')[0]}",
              "xandikos": f"Xandikos {dpkg_version('xandikos').split('-')[0]}"}
    suites = []
    main_specs = [data.CollectionSpec("contacts", "contacts", a.contacts, "Contacts"),
                  data.CollectionSpec("events", "events", a.events, "Events")]
    main_specs = [s for s in main_specs if s.count > 0]
    try:
        for server in a.server_list:
            log(f"{labels[server]}: rows 1-4, 7 on {' + '.join(f'{s.count} {s.kind}' for s in main_specs)}")
            setup = SETUPS[server](work / server / "server", main_specs, a.seed, log)
            setup.prepare()
            setup.start()
            try:
                clients = make_clients(a, setup, main_specs, work / server, server in a.vdirsyncer_server_list)
                ctx = make_context(a, setup, main_specs, clients)
                suites.append(suite_record(server, setup, main_specs, ctx, labels[server]))
                try:
                    for row in ROWS:
                        if row.fn:
                            log(f"  row {row.id}: {row.title}")
                            row.fn(ctx, row.id)
                    if server == "radicale" and a.rediscover_repeat > 0:
                        log("  row 10: rediscovery of the account's collections")
                        suite = account_suite("rediscovery", setup, main_specs, labels[server], a.rediscover_repeat)
                        suites.append(suite)
                        row_rediscovery(setup, main_specs, work / server / "rediscovery", Path(a.binary),
                                        a.rediscover_repeat, log, suite)
                    if server in a.push_server_list:
                        log("  rows 5, 6 and 7 (idle): davsyncd as a daemon, with WebDAV-Push and poll-only")
                        run_daemon_rows(ctx, work / server / "daemon", Path(a.binary), a)
                finally:
                    clients["floor"].close()
                # Row 8's point at the main address-book size reuses this server and its data.
                if server == "radicale" and a.contacts in a.scale_sizes:
                    log(f"  row 8: {a.contacts} items (the address book above, on the same server)")
                    spec = [main_specs[0]]
                    run_scale_suite(a, setup, spec, work / "scale" / str(a.contacts), labels[server],
                                    a.contacts, suites)
            finally:
                setup.stop()
        if a.collections > 0:
            run_many_collections(a, work / "collections", labels["radicale"], suites)
        for n in a.scale_sizes:
            if "radicale" in a.server_list and n == a.contacts:
                continue
            log(f"Row 8: {n} items ({labels['radicale']}, a fresh server with one address book)")
            specs = [data.CollectionSpec("contacts", "contacts", n, "Contacts")]
            setup = SETUPS["radicale"](work / "scale" / str(n) / "server", specs, a.seed, log)
            setup.prepare()
            setup.start()
            try:
                run_scale_suite(a, setup, specs, work / "scale" / str(n), labels["radicale"], n, suites)
            finally:
                setup.stop()
    except BaseException as e:
        # Keep what was measured, for diagnosis; latest.* stays as it was.
        failed = results_of(a, argv, started, load_before, versions, stem, suites)
        failed["error"] = f"{type(e).__name__}: {e}"
        (out / f"{stem}-failed.json").write_text(json.dumps(failed, indent=1) + "\n")
        log(f"FAILED: {type(e).__name__}: {e}; partial figures in {out / stem}-failed.json")
        raise
    finally:
        if not a.keep:
            # Hundreds of thousands of files: removed in the background (nothing
            # is deleted while the benchmark runs, see clients.Client.new_root).
            subprocess.Popen(["rm", "-rf", "--one-file-system", str(work)], start_new_session=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log(f"removing {work} in the background")
        else:
            log(f"kept {work}")

    results = results_of(a, argv, started, load_before, versions, stem, suites)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    report.write_csv(results, out / f"{stem}.csv")
    md = report.markdown(results)
    (out / f"{stem}.md").write_text(md)
    try:
        report.chart(results, out / f"{stem}.png")
    except ImportError:
        log("matplotlib is missing: no chart (apt-get install python3-matplotlib)")
    log(f"wrote {out / stem}.md, .png, .json, .csv")
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
