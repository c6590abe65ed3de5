#!/usr/bin/python3
"""Push through davsyncd's built-in ntfy receiver beside the UnifiedPush
distributor path, and what an idle ntfy stream costs.

    /usr/bin/python3 bench/ntfy_push.py [--repeat 5] [--idle 60] [--keepalive 45]
                                        [--davsyncd build/daemon/davsyncd]

The same rig as tests/integration/test_push.py (its Rig: a real Radicale
behind the tests' WebDAV-Push front, a private bus, davsyncd with one
calendar of 3 events), twice:

  distributor  a UnifiedPush distributor on the bus (davtest.distributor)
  ntfy         no distributor; "push_service" names the ntfy double
               (davtest.ntfy, keepalive every --keepalive seconds, ntfy's
               default 45 s)

Per transport:
  latency  another client PUTs a new event through the front; from the PUT's
           response to the file in the vdir folder (polled every 5 ms),
           --repeat times, the daemon settled in between. Most of it is the
           front learning the new sync-token from Radicale and the daemon's
           sync; the transport's own share is the difference between rows.
  idle     --idle seconds with nothing happening after settling: context
           switches of all the daemon's threads (/proc/PID/task/*/status,
           voluntary + nonvoluntary; a wake-up of a sleeping thread is a
           switch) scaled to a minute, and for ntfy the stream's payload
           bytes (what the double wrote: keepalive lines and chunk framing
           excluded) scaled to an hour.

Writes bench/results/ntfy.md and ntfy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from davtest.dbus import PrivateBus  # noqa: E402
from davtest.ntfy import NtfyServer  # noqa: E402
from davtest.servers import SERVERS  # noqa: E402
from test_ntfy import NtfyEnv  # noqa: E402
from test_push import Rig  # noqa: E402


def switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def run_transport(kind: str, root: Path, binary: Path, args) -> dict:
    root.mkdir(parents=True)
    radicale = SERVERS["radicale"](root / "radicale").start()
    bus = PrivateBus(root / "bus").start()
    ntfy = NtfyServer(keepalive=args.keepalive).start()
    env = NtfyEnv(root / "daemon", binary=binary)
    env.push_service = ntfy.origin if kind == "ntfy" else None
    rig = None
    try:
        rig = Rig(root, radicale, env, bus, distributor=(kind == "distributor"), items=3)
        rig.wait_push_active(60)
        rig.settle()
        transport = rig.account()["PushTransport"]
        latencies = []
        for i in range(args.repeat):
            uid = rig.put_as_other(1000 + i)
            t0 = time.monotonic()
            t1 = rig.wait_local_uids([uid], timeout=60, interval=0.005)
            latencies.append(t1 - t0)
            rig.settle()
        streams_before = len(ntfy.streams())
        open_streams = ntfy.open_streams()
        sent0 = sum(s.bytes_sent for s in open_streams)
        ka0 = sum(s.keepalives for s in open_streams)
        sw0 = switches(rig.proc.pid)
        t0 = time.monotonic()
        time.sleep(args.idle)          # the measurement window itself
        dt = time.monotonic() - t0
        sw1 = switches(rig.proc.pid)
        open_streams = ntfy.open_streams()
        sent1 = sum(s.bytes_sent for s in open_streams)
        ka1 = sum(s.keepalives for s in open_streams)
        assert len(ntfy.streams()) == streams_before, "the stream reconnected during the idle window"
        return {
            "transport": transport,
            "latency_s": latencies,
            "latency_median_s": statistics.median(latencies),
            "idle_window_s": dt,
            "idle_wakeups_per_min": (sw1 - sw0) * 60.0 / dt,
            "keepalives_in_window": ka1 - ka0,
            "stream_bytes_per_hour": (sent1 - sent0) * 3600.0 / dt if kind == "ntfy" else 0.0,
            "streams": len(ntfy.streams()),
        }
    finally:
        if rig is not None:
            rig.stop()
        ntfy.stop()
        bus.stop()
        radicale.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--keepalive", type=float, default=45.0)
    ap.add_argument("--davsyncd", type=Path, default=REPO / "build" / "daemon" / "davsyncd")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    binary = args.davsyncd.resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="davsyncd-bench-ntfy-") as tmp:
        for kind in ("distributor", "ntfy"):
            results[kind] = run_transport(kind, Path(tmp) / kind, binary, args)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeat": args.repeat,
            "idle_s": args.idle, "keepalive_s": args.keepalive, "cpus": os.cpu_count()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ntfy.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [f"# Push through the built-in ntfy receiver ({meta['date']})", "",
             f"{args.repeat} pushes per transport, idle window {args.idle:g} s, "
             f"ntfy keepalive {args.keepalive:g} s, {meta['cpus']} CPUs.", "",
             "| transport | push latency median (min–max) | idle wake-ups/min | stream bytes/hour |",
             "|---|---|---|---|"]
    for kind, r in results.items():
        lat = r["latency_s"]
        lines.append(f"| {r['transport']} | {r['latency_median_s'] * 1000:.0f} ms "
                     f"({min(lat) * 1000:.0f}–{max(lat) * 1000:.0f}) | "
                     f"{r['idle_wakeups_per_min']:.1f} | "
                     f"{r['stream_bytes_per_hour']:.0f} ({r['keepalives_in_window']} keepalives in the window) |"
                     if kind == "ntfy" else
                     f"| {r['transport']} | {r['latency_median_s'] * 1000:.0f} ms "
                     f"({min(lat) * 1000:.0f}–{max(lat) * 1000:.0f}) | "
                     f"{r['idle_wakeups_per_min']:.1f} | — |")
    (args.out / "ntfy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
