"""Pacing shared by every worker: as fast as Datadog's rate limit allows, and no faster.

Datadog limits this endpoint per organisation in calendar-aligned fixed windows and says
in every answer where the window stands (`X-RateLimit-Limit`, `-Period`, `-Remaining`,
`-Reset`, `-Name`). The headers, not a local count, are the truth: other runs and other
tools of the organisation spend the same budget. So the pacer

* learns the limit and period from the headers; a token bucket adapted to them paces
  the run while the headers give no `Remaining` to spread;
* estimates what is left of the current window, counting its own requests in flight
  against `Remaining`, and spreads that budget over the window up to a deadline a share of
  the period before its end. The slack lets a process that was held up (a busy machine, a
  slow answer) still spend the whole budget, and keeps requests from straddling the
  boundary. With several clients sharing one limit, each sees `Remaining` fall faster
  than its own sending and slows down, so together they spend the budget by the deadline;
  once one sees another client spending, it never bursts and leaves the last request of
  each window unclaimed, rather than race the others for them;
* holds every worker when the window is spent, until it resets, instead of sending
  requests only to have them refused;
* on a 429 pauses every worker until the reset (the window's end, else `Retry-After`,
  else exponential backoff with full jitter), then lets one request probe before the
  rest follow, so no herd of retries hits the server in the first instant;
* applies the user's `--rate` ceiling on top (an aiolimiter bucket).

Where a window ends comes from the calendar, not from `X-RateLimit-Reset`: Reset is a
whole number of seconds and may be off by one, while the boundary after the moment a
request was sent is exact when clocks agree. Only when Resets keep contradicting our
clock does the pacer fall back to them.

A send that needs no wait, with nobody waiting, goes at once (`try_acquire`). Every
other decision is taken by whichever worker holds `_gate` (a FIFO `asyncio.Lock`), so
waiting workers are released one at a time, in order.
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
from multidict import istr

GUARD_S = 0.03
"""Wait this long past a computed window boundary, for clock granularity and latency."""
END_MARGIN = 0.2
"""Aim to spend a window's budget this share of the period before the window ends."""
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
RESET_TOLERANCE_S = 1.25
"""`X-RateLimit-Reset` is whole seconds and may be off by up to one from the boundary."""
TIMER_RESOLUTION_S = 0.001
"""The event loop's timers (libuv's) count whole milliseconds: a shorter gap between two
sends is no wait at all. Far from the limit the gap is nanoseconds, and each such "wait"
would cost every request a timer and a trip through the gate."""
SKEW_VOTES = 3
"""After this many Resets that contradict our clock, trust Reset instead of the calendar."""


@dataclass(frozen=True, slots=True)
class RateLimitHeaders:
    """What one answer said about the rate limit; any field may be missing or malformed."""

    limit: int | None
    period: float | None
    remaining: int | None
    reset: float | None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    if value.isascii() and value.isdigit():  # what Datadog sends: the cheap path
        return int(value)
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


# Case-insensitive names made once: aiohttp's headers then skip folding the case of the
# name on every lookup (as `aiohttp.hdrs` does for the standard ones).
_LIMIT = istr("X-RateLimit-Limit")
_PERIOD = istr("X-RateLimit-Period")
_REMAINING = istr("X-RateLimit-Remaining")
_RESET = istr("X-RateLimit-Reset")


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitHeaders | None:
    """None when the answer carries no `X-RateLimit-*` header at all (a proxy, say)."""
    get = headers.get
    limit, period, remaining, reset = get(_LIMIT), get(_PERIOD), get(_REMAINING), get(_RESET)
    if limit and period and remaining and reset:
        digits = limit + period + remaining + reset
        if digits.isdigit() and digits.isascii():  # what Datadog sends, checked in one go
            return RateLimitHeaders(
                int(limit) or None, int(period) or None, int(remaining), int(reset)
            )
    numbers = _number(limit), _number(period), _number(remaining), _number(reset)
    if numbers == (None, None, None, None):
        return None
    limit_n, period_n, remaining_n, reset_n = numbers
    return RateLimitHeaders(
        limit=int(limit_n) if limit_n else None,
        period=period_n if period_n else None,
        remaining=int(remaining_n) if remaining_n is not None else None,
        reset=reset_n,
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


USER_BURST_S = 0.01
"""A --rate bucket holds this much time's worth of requests (one at least)."""


def user_bucket(rate: float) -> AsyncLimiter:
    """`rate` requests per second, nearly evenly spaced.

    Users read --rate as a ceiling on any second of the run. A bucket of a second's
    worth starts empty (aiolimiter's bucket fills as requests are sent), so it lets a
    whole second's worth through at once, then the steady rate: nearly 2R in the first
    second. A bucket of one request would hold every second to R + 1, but the event
    loop's timers fire to the millisecond, late, and a wake-up that comes late with room
    for only one loses the rest of the time it waited: 2,000/s came out at 1,000/s. So
    the bucket holds 10 ms' worth: no second holds more than R + max(1, R / 100)."""
    capacity = max(1.0, rate * USER_BURST_S)
    return AsyncLimiter(capacity, capacity / rate)


@dataclass(frozen=True, slots=True)
class Ticket:
    """Handed out for each request, so its answer can be matched to the window it was
    sent in (`sent_wall`) and to the requests sent after it (`seq`)."""

    seq: int
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
        self._holding = False  # the gate's holder waits for time or an answer: queue behind it
        self._changed = asyncio.Event()
        # What the server has told us.
        self._limit: int | None = None
        self._period: float | None = None
        self._learned_bucket: AsyncLimiter | None = None
        self._window_end: float | None = None
        self._budget: float | None = None
        self._others_now = False  # another client spent from this window's budget
        self._others_before = False  # ... or from the last one: it is likely still there
        # Our own traffic.
        self._seq = 0
        self._window_first_seq = 0  # our first request of the current window
        self._inflight = 0
        self._last_send = -math.inf
        # Pauses and probing.
        self._pause_until = -math.inf
        self._probing = True  # until the first answer says what the limits are
        self._bare_429s = 0
        self._backed_off_at = 0  # our last request when the backoff was last lengthened
        self._skew_votes = 0

    def try_acquire(self) -> Ticket | None:
        """Account for a send that needs no wait, or return None: then `acquire()`.

        Nearly every request of a run goes this way, far from the limit: no gate, no
        coroutine, no bucket. Only while the gate's holder waits (a pause, the spacing, a
        probe's answer), with a `--rate` ceiling, or with headers that give no budget to
        spread (the learned bucket paces then) must a sender queue for the gate. Senders
        queued for the gate while nothing is left to wait for may be passed by: each
        checks the pacing again when its turn comes, so order is all they lose."""
        if self._holding or self._user_bucket is not None:
            return None
        if self._budget is None and self._learned_bucket is not None:
            return None
        delay, reason = self._wait_needed()
        if reason:
            self._on_pause(delay, reason)  # a pause starts: `_wait_needed` says so only once
        return self._sent() if delay <= 0 else None

    async def acquire(self) -> Ticket:
        """Wait until a request may be sent, then account for it as in flight."""
        ticket = self.try_acquire()
        if ticket is not None:
            return ticket
        async with self._gate:
            while True:
                delay, reason = self._wait_needed()
                if delay <= 0:
                    break
                if reason:
                    self._on_pause(delay, reason)
                self._changed.clear()
                self._holding = True
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._changed.wait(), timeout=None if math.isinf(delay) else delay
                        )
                finally:
                    self._holding = False
            if self._learned_bucket is not None and self._budget is None:
                await self._learned_bucket.acquire()
            if self._user_bucket is not None:
                await self._user_bucket.acquire()
            return self._sent()

    def _sent(self) -> Ticket:
        self._seq += 1
        self._inflight += 1
        self._last_send = self._clock()
        if self._budget is not None:
            self._budget -= 1
        return Ticket(self._seq, self._wall())

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
        if self._budget <= (1 if self._shared else 0):
            resume = self._window_end + GUARD_S
            self._pause_until = resume
            return resume - now, "rate-limit window spent; waiting for it to reset"
        span = self._period or (self._window_end - now)
        spacing = max(0.0, self._window_end - END_MARGIN * span - now) / self._budget
        if self._shared and self._limit:
            # Alone, catching up in a burst after a stall is safe; with others it would
            # race them for the same requests, so never faster than the whole budget's pace.
            spacing = max(spacing, (1 - END_MARGIN) * span / self._limit)
        delay = self._last_send + spacing - now
        return (delay if delay >= TIMER_RESOLUTION_S else 0.0), ""

    @property
    def _shared(self) -> bool:
        """Whether another client spends from our budget (seen in this window or the last)."""
        return self._others_now or self._others_before

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
        self._others_before, self._others_now = self._others_now, False
        self._window_first_seq = self._seq + 1

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
        end = None if rate_limit is None else self._learn(ticket, rate_limit, now)
        if status == 429:
            self._rate_limited(ticket, end, retry_after, now)
        elif status in (401, 403):
            self._probing = True  # keys refused: one request at a time until one succeeds
        elif status is not None and status < 500:
            self._bare_429s = 0
            self._probing = False
        # 5xx and no answer teach nothing about the limit: a probe stays a probe.

    def _learn(self, ticket: Ticket, headers: RateLimitHeaders, now: float) -> float | None:
        """Take in one answer's headers; returns when the window it was counted in ends
        (monotonic clock; already past if it ended while the request was in flight)."""
        if headers.limit and headers.period:
            if headers.period != self._period:
                self._window_end = self._budget = None  # windows of another length
            if (headers.limit, headers.period) != (self._limit, self._period):
                self._limit, self._period = headers.limit, headers.period
                self._learned_bucket = AsyncLimiter(headers.limit, headers.period)
        end = self._boundary(ticket, headers, now)
        if end is None or end <= now or headers.remaining is None:
            return end  # a window already over says nothing about the current one
        # Our requests sent after this one may not be in the server's count yet.
        later = self._seq - ticket.seq
        estimate = headers.remaining - later
        slack = self._same_window_slack()
        if self._window_end is None or end > self._window_end + slack:
            self._window_end, self._budget = end, estimate
            self._window_first_seq = ticket.seq
            self._others_before, self._others_now = self._others_now, False
        elif abs(end - self._window_end) <= slack and self._budget is not None:
            self._budget = min(self._budget, estimate)
        else:
            return end
        limit = headers.limit or self._limit
        if limit is not None and ticket.seq >= self._window_first_seq:
            ours = self._seq - self._window_first_seq + 1  # all we sent in it, at most
            self._others_now |= limit - headers.remaining > ours
        return end

    def _boundary(self, ticket: Ticket, headers: RateLimitHeaders, now: float) -> float | None:
        """When the window this answer was counted in ends (monotonic clock), or None
        when the headers cannot tell."""
        period = headers.period or self._period
        if period is not None and self._skew_votes < SKEW_VOTES:
            # Windows are aligned to the calendar: with clocks in sync, the boundary after
            # the send time is exact, which a whole-second Reset is not.
            wall_now = self._wall()
            aligned = (math.floor(ticket.sent_wall / period) + 1) * period
            if wall_now >= aligned:
                return now + (aligned - wall_now)  # over: counted in it or the next
            if headers.reset is None or abs(aligned - wall_now - headers.reset) <= (
                RESET_TOLERANCE_S
            ):
                return now + (aligned - wall_now)
            self._skew_votes += 1  # our clock and the server's disagree
        # By Reset alone: the window had not ended when the server answered, whatever a
        # rounded-down Reset of 0 says, so a 429 can never be taken for a window now over.
        return None if headers.reset is None else now + max(headers.reset, 1.0)

    def _same_window_slack(self) -> float:
        """How far two answers' window ends may differ and still be the same window."""
        if self._skew_votes < SKEW_VOTES or self._period is None:
            return GUARD_S  # exact, from the calendar
        return self._period / 2  # from whole-second Resets, each up to a second off

    def _rate_limited(
        self, ticket: Ticket, end: float | None, retry_after: float | None, now: float
    ) -> None:
        self._probing = True
        if end is not None:
            if end <= now:
                return  # refused in a window that has since ended: the probe may go now
            until, reason = end + GUARD_S, "429: waiting for the rate-limit window to reset"
        elif retry_after is not None:
            until, reason = now + retry_after, "429: waiting Retry-After"
        else:
            if ticket.seq <= self._backed_off_at:
                return  # in flight when the backoff was set: one refusal, not another
            self._backed_off_at = self._seq
            self._bare_429s += 1
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (self._bare_429s - 1))
            until = now + self._rng.uniform(0, ceiling)
            reason = "429 without rate-limit headers: backing off"
        if until > self._pause_until + GUARD_S:  # not the pause already under way
            self._on_pause(until - now, reason)
        self._pause_until = max(self._pause_until, until)
