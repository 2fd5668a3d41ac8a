"""Datadog's rate limit: one budget per fixed, wall-clock-aligned window.

Datadog's windows are calendar aligned, not sliding, and the budget belongs to the
organisation, not to a connection: so the limiter is one object per server that every
client draws on, and a window is `floor(now / period)` of the wall clock. The clock is
injectable so tests can cross a window boundary without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`"100/2"` -> `(100, 2.0)`: 100 requests per 2-second window."""
    limit_text, sep, period_text = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError
        limit, period = int(limit_text), float(period_text)
    except ValueError:
        raise ValueError(
            f"rate limit {text!r} is not LIMIT/PERIOD: write e.g. 100/2 "
            "for 100 requests per 2-second window"
        ) from None
    check_rate_limit(limit, period)
    return limit, period


def check_rate_limit(limit: int, period: float) -> None:
    if limit < 1:
        raise ValueError(f"rate limit must allow at least 1 request per window, not {limit}")
    if not (math.isfinite(period) and period > 0):
        raise ValueError(f"rate limit period must be a positive number of seconds, not {period}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request's draw on the budget, and what the headers report about it."""

    allowed: bool
    remaining: int
    reset: int
    """Whole seconds until the window ends, rounded up (never 0: the window is not over)."""
    left: float
    """Seconds until the window ends, exactly: what `reset` rounds."""


class FixedWindowLimiter:
    """Counts requests in the current window; past `limit`, requests are refused."""

    def __init__(self, limit: int, period: float, name: str, clock: Clock = time.time) -> None:
        check_rate_limit(limit, period)
        self.limit = limit
        self.period = float(period)
        self.name = name
        self._clock = clock
        self._window: int | None = None
        self._used = 0

    def reconfigure(self, limit: int, period: float) -> None:
        """Takes effect at once; requests already counted in this window stay counted
        unless the period changes, which changes what a window is."""
        check_rate_limit(limit, period)
        if period != self.period:
            self._window = None
        self.limit, self.period = limit, float(period)

    def reset(self) -> None:
        self._window = None

    def take(self) -> Verdict:
        now = self._clock()
        window = math.floor(now / self.period)
        if window != self._window:
            self._window, self._used = window, 0
        allowed = self._used < self.limit
        if allowed:
            self._used += 1
        left = (window + 1) * self.period - now
        return Verdict(allowed, max(0, self.limit - self._used), max(1, math.ceil(left)), left)

    def headers(self, verdict: Verdict) -> dict[str, str]:
        """The five headers Datadog puts on every rate-limited response."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Period": _seconds(self.period),
            "X-RateLimit-Remaining": str(verdict.remaining),
            "X-RateLimit-Reset": str(verdict.reset),
            "X-RateLimit-Name": self.name,
        }


def _seconds(period: float) -> str:
    return str(int(period)) if period.is_integer() else str(period)
