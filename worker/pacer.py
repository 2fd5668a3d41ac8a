"""Pacing shared by every worker: as fast as Datadog's rate limit allows, and no faster.

Datadog limits this endpoint per organisation in calendar-aligned fixed windows and says
in every answer where the window stands (`X-RateLimit-Limit`, `-Period`, `-Remaining`,
`-Reset`, `-Name`). The headers, not a local count, are the truth: other runs and other
tools of the organisation spend the same budget. So the pacer

* learns the limit and period from the headers and adapts a token bucket to them;
* estimates what is left of the current window, counting its own requests in flight
  against `Remaining`, and spreads that budget over the time the window has left. With
  several clients sharing one limit, each sees `Remaining` fall faster than its own
  sending and slows down, so together they spend the budget just as the window ends;
* holds every worker when the window is spent, until it resets, instead of sending
  requests only to have them refused;
* on a 429 pauses every worker until the reset (`X-RateLimit-Reset`, else `Retry-After`,
  else exponential backoff with full jitter), then lets one request probe before the
  rest follow, so no herd of retries hits the server in the first instant;
* applies the user's `--rate` ceiling on top (an aiolimiter bucket).

All decisions are taken by whichever worker holds `_gate` (a FIFO `asyncio.Lock`), so
workers are released one at a time in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from aiolimiter import AsyncLimiter

GUARD_S = 0.03
"""Wait this long past a computed window boundary, for clock granularity and latency."""
END_MARGIN = 0.08
"""Spread a window's budget over all but this share of its remaining time."""
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RESET_TOLERANCE_S = 1.25
"""`X-RateLimit-Reset` is whole seconds and may be off by up to one from the boundary."""
SKEW_VOTES = 3
"""After this many Resets that contradict our clock, trust Reset instead of the calendar."""


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What one answer said about the rate limit; any field may be missing or malformed."""

    limit: int | None
    period: float | None
    remaining: int | None
    reset: float | None
    name: str | None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitHeaders | None:
    """None when the answer carries no `X-RateLimit-*` header at all (a proxy, say)."""
    limit = _number(headers.get("X-RateLimit-Limit"))
    period = _number(headers.get("X-RateLimit-Period"))
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    reset = _number(headers.get("X-RateLimit-Reset"))
    name = headers.get("X-RateLimit-Name")
    if limit is None and period is None and remaining is None and reset is None:
        return None
    return RateLimitHeaders(
        limit=int(limit) if limit else None,
        period=period if period else None,
        remaining=int(remaining) if remaining is not None else None,
        reset=reset,
        name=name,
    )


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds or as an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


def user_bucket(rate: float) -> AsyncLimiter:
    """`rate` requests per second, with bursts of at most one second's worth."""
    return AsyncLimiter(rate, 1.0) if rate >= 1 else AsyncLimiter(1, 1.0 / rate)


@dataclass(frozen=True, slots=True)
class Ticket:
    """Handed out for each request, so its answer can be matched to the window it was sent in."""

    seq: int
    window_end: float | None
    sent_at: float
    sent_wall: float


class Pacer:
    """One pacing state for the run. `acquire()` before each request, `settle()` after."""

    def __init__(
        self,
        *,
        rate: float | None,
        on_pause: Callable[[float, str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._user_bucket = user_bucket(rate) if rate else None
        self._on_pause = on_pause
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._gate = asyncio.Lock()
        self._changed = asyncio.Event()
        # What the server has told us.
        self._limit: int | None = None
        self._period: float | None = None
        self._learned_bucket: AsyncLimiter | None = None
        self._window_end: float | None = None
        self._budget: float | None = None
        # Our own traffic.
        self._seq = 0
        self._inflight = 0
        self._last_send = -math.inf
        # Pauses and probing.
        self._pause_until = -math.inf
        self._probing = True  # until the first answer says what the limits are
        self._bare_429s = 0
        self._skew_votes = 0

    @property
    def limit(self) -> tuple[int, float] | None:
        """The learned (limit, period), once an answer has carried them."""
        if self._limit is None or self._period is None:
            return None
        return (self._limit, self._period)

    async def acquire(self) -> Ticket:
        """Wait until a request may be sent, then account for it as in flight."""
        async with self._gate:
            while True:
                delay, reason = self._wait_needed()
                if delay <= 0:
                    break
                if reason:
                    self._on_pause(delay, reason)
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait(), timeout=None if math.isinf(delay) else delay
                    )
            if self._learned_bucket is not None:
                await self._learned_bucket.acquire()
            if self._user_bucket is not None:
                await self._user_bucket.acquire()
            now = self._clock()
            self._seq += 1
            self._inflight += 1
            self._last_send = now
            if self._budget is not None:
                self._budget -= 1
            return Ticket(self._seq, self._window_end, now, self._wall())

    def _wait_needed(self) -> tuple[float, str]:
        """Seconds to wait before the next send, and a reason worth logging (or "")."""
        now = self._clock()
        if now < self._pause_until:
            return self._pause_until - now, ""
        if self._probing and self._inflight > 0:
            return math.inf, ""  # woken by the probe's answer
        self._roll_window(now)
        if self._window_end is None or self._budget is None:
            return 0.0, ""
        if self._budget <= 0:
            resume = self._window_end + GUARD_S
            self._pause_until = resume
            return resume - now, "rate-limit window spent; waiting for it to reset"
        usable = max(0.0, (self._window_end - now) * (1 - END_MARGIN))
        spacing = usable / self._budget
        return self._last_send + spacing - now, ""

    def _roll_window(self, now: float) -> None:
        """Past the window's end, start the next one with the whole learned limit."""
        if self._window_end is None or now < self._window_end:
            return
        if self._period is None:
            self._window_end = self._budget = None
            return
        periods = math.floor((now - self._window_end) / self._period) + 1
        self._window_end += periods * self._period
        self._budget = self._limit

    def settle(
        self,
        ticket: Ticket,
        status: int | None,
        rate_limit: RateLimitHeaders | None,
        retry_after: float | None,
    ) -> None:
        """Learn from one answer (`status` None: no answer at all)."""
        now = self._clock()
        self._inflight -= 1
        self._changed.set()
        if rate_limit is not None:
            self._learn(ticket, rate_limit, now)
        if status == 429:
            self._rate_limited(rate_limit, retry_after, now)
        elif status in (401, 403):
            self._probing = True  # keys refused: one request at a time until one succeeds
        elif status is not None:
            self._bare_429s = 0
            if status < 400 or rate_limit is None:
                self._probing = False

    def _learn(self, ticket: Ticket, headers: RateLimitHeaders, now: float) -> None:
        if headers.limit and headers.period:
            if (headers.limit, headers.period) != (self._limit, self._period):
                self._limit, self._period = headers.limit, headers.period
                self._learned_bucket = AsyncLimiter(headers.limit, headers.period)
        end = self._boundary(ticket, headers, now)
        if end is None or headers.remaining is None:
            return
        # Our requests sent after this one may not be in the server's count yet.
        estimate = headers.remaining - (self._seq - ticket.seq)
        if self._window_end is None or end > self._window_end + GUARD_S:
            self._window_end, self._budget = end, estimate
        elif abs(end - self._window_end) <= GUARD_S and self._budget is not None:
            self._budget = min(self._budget, estimate)

    def _boundary(self, ticket: Ticket, headers: RateLimitHeaders, now: float) -> float | None:
        """When the window this answer was counted in ends (monotonic clock), or None
        when that cannot be told (the request was in flight across a boundary)."""
        period = headers.period or self._period
        if period is None:
            return None if headers.reset is None else now + headers.reset
        wall_now = self._wall()
        if self._skew_votes < SKEW_VOTES:
            # Windows are aligned to the calendar: with clocks in sync, the boundary after
            # the send time is exact, which a whole-second Reset is not.
            aligned = (math.floor(ticket.sent_wall / period) + 1) * period
            if wall_now >= aligned:
                return None  # counted before or after the boundary: cannot tell which
            if headers.reset is None or abs(aligned - wall_now - headers.reset) <= (
                RESET_TOLERANCE_S
            ):
                return now + (aligned - wall_now)
            self._skew_votes += 1  # our clock and the server's disagree
        return None if headers.reset is None else now + headers.reset

    def _rate_limited(
        self, headers: RateLimitHeaders | None, retry_after: float | None, now: float
    ) -> None:
        if self._window_end is not None and self._window_end > now and headers is not None:
            until, reason = self._window_end + GUARD_S, "429: waiting for the window to reset"
            self._budget = 0
        elif headers is not None and headers.reset is not None:
            until, reason = now + headers.reset + GUARD_S, "429: waiting X-RateLimit-Reset"
        elif retry_after is not None:
            until, reason = now + retry_after, "429: waiting Retry-After"
        else:
            self._bare_429s += 1
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self._bare_429s - 1))
            until = now + self._rng.uniform(0, ceiling)
            reason = "429 without rate-limit headers: backing off"
        self._probing = True
        if until > self._pause_until:
            self._pause_until = until
            self._on_pause(until - now, reason)
