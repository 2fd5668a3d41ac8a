"""Rates and durations as a person reads them, the same in the live display and the summary.

A run is paced anywhere from a few rows a second (a low `--rate`, a small limit) to
thousands (a rerun skipping done rows), and lasts seconds or days: the figures keep
three significant digits or so at every scale, never `0 rows/s` or `1:45:31`.
"""

from __future__ import annotations

import math


def rate(per_s: float, unit: str = "rows") -> str:
    """`0.25 rows/s`, `3.2 rows/s`, `850 rows/s`, `12.4k rows/s`, `1.2M rows/s`."""
    return f"{_number(per_s)} {unit}/s"


def _number(value: float) -> str:
    if not math.isfinite(value) or value < 0:
        return "?"
    if value >= 999_500:
        return _scaled(value / 1_000_000, "M")
    if value >= 9_995:
        return _scaled(value / 1_000, "k")
    if value >= 999.5:
        return f"{value:,.0f}"
    if value >= 9.95:
        return f"{value:.0f}"
    if value >= 0.995 or value == 0:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _scaled(value: float, suffix: str) -> str:
    return f"{value:.1f}{suffix}" if value < 99.95 else f"{value:,.0f}{suffix}"


def duration(seconds: float) -> str:
    """`0.4s`, `12s`, `4m 10s`, `2h 05m`, `3d 04h`: the two largest units, none below
    a tenth of a second (which only a short run's total time needs)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"
