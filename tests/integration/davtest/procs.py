"""Stopping the helper processes the tests start (servers, daemons, buses,
distributors): each runs in its own process group, so that nothing it
started outlives it."""

from __future__ import annotations

import os
import signal
import subprocess


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
