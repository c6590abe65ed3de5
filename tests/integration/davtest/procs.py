"""Stopping the helper processes the tests start (servers, daemons, buses,
distributors): each runs in its own process group, so that nothing it
started outlives it. And what /proc says about a running process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM to the group, wait up to `timeout`, then SIGKILL; returns the
    leader's exit status."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return proc.returncode


def proc_figures(pid: int) -> dict:
    """Context switches (voluntary + nonvoluntary, summed over every thread),
    threads, VmRSS, Rss/Pss/Private of smaps_rollup (kB) and CPU seconds."""
    switches = voluntary = 0
    threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:
            continue
        threads += 1
        v = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        n = int(re.search(r"^nonvoluntary_ctxt_switches:\s*(\d+)", status, re.M).group(1))
        switches += v + n
        voluntary += v
    status = Path(f"/proc/{pid}/status").read_text()
    out = {"switches": switches, "voluntary": voluntary, "threads": threads,
           "vmrss_kb": int(re.search(r"^VmRSS:\s*(\d+) kB", status, re.M).group(1)),
           "vmhwm_kb": int(re.search(r"^VmHWM:\s*(\d+) kB", status, re.M).group(1))}
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        fields = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M)}
        out.update(rss_kb=fields.get("Rss", 0), pss_kb=fields.get("Pss", 0),
                   private_kb=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
                   anon_kb=fields.get("Anonymous", 0))
    except (OSError, ValueError):
        pass
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    out["cpu"] = (int(rest[11]) + int(rest[12])) / tick     # utime + stime
    return out
