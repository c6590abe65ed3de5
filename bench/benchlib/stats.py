"""Medians with min–max, and ratios computed pair by pair (same repeat)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass
class Summary:
    median: float
    lo: float
    hi: float
    n: int

    def fmt(self, unit: str = "s", digits: int | None = None) -> str:
        def f(x: float) -> str:
            return fmt_num(x, digits)
        if self.n == 1:
            return f"{f(self.median)} {unit}".strip() + " (1 run)"
        return f"{f(self.median)} {unit}".strip() + f" ({f(self.lo)}–{f(self.hi)})"


def fmt_num(x: float, digits: int | None = None) -> str:
    if digits is not None:
        return f"{x:.{digits}f}"
    ax = abs(x)
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    if ax >= 0.01:
        return f"{x:.3f}"
    return f"{x:.4f}"


def summarize(values: list[float]) -> Summary | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Summary(statistics.median(vals), min(vals), max(vals), len(vals))


def pairwise(num: list[float | None], den: list[float | None]) -> Summary | None:
    """Ratios num[i] / den[i] for every repeat i where both exist."""
    ratios = [a / b for a, b in zip(num, den) if a is not None and b is not None and b > 0]
    return summarize(ratios)
