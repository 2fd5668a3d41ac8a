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

All of the above is one `Budget`, and there is one budget per limit, by the name its
answers carry (`X-RateLimit-Name`): the search and the playlists are limited apart, so a
429 on one never holds the other. A family of calls (`worker.api.Request.family`) draws
on a provisional budget of its own until its first answer names its limit; from then on
on that limit's budget, shared with every family whose answers carry the same name.

No single pause is longer than `max_pause_s`: a `Reset` of 999999 s or a `Retry-After`
of a date in 2100 is a broken or hostile hint, and a `Reset` beyond the period the server
announced cannot be true of a fixed window. Obeyed, one would hold the run until
`--max-stall` aborts it. Capped, the pause ends with one probe: a hint that was true
costs one more 429 per `max_pause_s`, never a herd.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from math import floor
from typing import NamedTuple

from aiolimiter import AsyncLimiter

from worker.answers import KEYS_REFUSED, RATE_LIMITED, Answer, RateLimit
from worker.records import new_record

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
DEFAULT_MAX_PAUSE_S = 300.0
"""The longest single pause (`--max-pause`). Datadog's periods are seconds to a minute
for these endpoints, so five minutes covers several whole periods of any real limit; an
hourly limit that is truly spent costs one probe per five minutes, and `--max-stall`
(15 minutes) still ends a run that makes no progress at all."""


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
class Pause:
    """A pause of every request of one limit, as announced when it starts."""

    asked_s: float  # what the server's hint (or the backoff drawn) asked for
    pause_s: float  # what is waited: `asked_s`, capped at `max_pause_s`
    reason: str
    family: str  # the family of the request whose answer (or wait) started it


class Ticket(NamedTuple):
    """Handed out for each request, so its answer can be matched to the budget and
    window it was sent in (`sent_wall`) and to the requests sent after it (`seq`). One
    per request: a NamedTuple, as `worker.answers.RateLimit` says why."""

    seq: int
    sent_wall: float
    family: str
    budget: Budget


class PausedTime:
    """The wall-clock time during which at least one pause was under way, up to now: a
    run stopped 3 s into a pause of 60 s was paused 3 s. Pauses start in time order, so
    each one either overlaps the last (which it then extends) or starts after it."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._closed = 0.0
        self._start = math.inf
        self._end = -math.inf

    def add(self, start: float, end: float) -> None:
        if start <= self._end:
            self._end = max(self._end, end)
            return
        if self._end > self._start:
            self._closed += self._end - self._start
        self._start, self._end = start, end

    @property
    def seconds(self) -> float:
        if self._end <= self._start:
            return self._closed
        return self._closed + max(0.0, min(self._clock(), self._end) - self._start)


class Budget:
    """The pacing state of one rate limit: the window algorithm of the module's note."""

    def __init__(
        self,
        name: str | None,
        *,
        user_bucket: AsyncLimiter | None,
        on_pause: Callable[[Pause], None],
        paused: PausedTime,
        max_pause_s: float,
        clock: Callable[[], float],
        wall: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.name = name  # None: provisional, until an answer names the limit
        self._user_bucket = user_bucket
        self._on_pause = on_pause
        self._paused = paused
        self._max_pause_s = max_pause_s
        self._clock = clock
        self._wall = wall
        self._rng = rng
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

    def try_acquire(self, family: str) -> Ticket | None:
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
        now = self._clock()
        return self._sent(family, now) if self._wait_needed(family, now) <= 0 else None

    async def acquire(self, family: str) -> Ticket:
        """Wait until a request may be sent, then account for it as in flight."""
        ticket = self.try_acquire(family)
        if ticket is not None:
            return ticket
        async with self._gate:
            while True:
                delay = self._wait_needed(family, self._clock())
                if delay <= 0:
                    break
                self._changed.clear()
                self._holding = True
                try:
                    # `asyncio.timeout`, not `wait_for`, which on Python 3.11 can swallow
                    # a stop's cancel that lands as the event is set (`worker.chunks`).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if math.isinf(delay) else delay):
                            await self._changed.wait()
                finally:
                    self._holding = False
            if self._learned_bucket is not None and self._budget is None:
                await self._learned_bucket.acquire()
            if self._user_bucket is not None:
                await self._user_bucket.acquire()
            return self._sent(family, self._clock())

    def _sent(self, family: str, now: float) -> Ticket:
        """`now`: the monotonic time the request goes (the caller has just read it)."""
        self._seq += 1
        self._inflight += 1
        self._last_send = now
        if self._budget is not None:
            self._budget -= 1
        return new_record(Ticket, (self._seq, self._wall(), family, self))

    def _wait_needed(self, family: str, now: float) -> float:
        """Seconds to wait before the next send at `now`; a pause that starts here is
        announced."""
        if now < self._pause_until:
            return self._pause_until - now
        if self._probing and self._inflight > 0:
            return math.inf  # woken by the probe's answer
        window_end = self._window_end
        if window_end is not None and now >= window_end:
            self._roll_window(now, window_end)
            window_end = self._window_end
        budget = self._budget
        if window_end is None or budget is None:
            return 0.0
        shared = self._others_now or self._others_before
        if budget <= (1 if shared else 0):
            until = self._pause(
                now,
                window_end + GUARD_S,
                family,
                "rate-limit window spent; waiting for it to reset",
            )
            return until - now
        span = self._period or (window_end - now)
        # Past the deadline the spacing is negative, and so is the delay: no wait.
        spacing = (window_end - END_MARGIN * span - now) / budget
        if shared and self._limit:
            # Alone, catching up in a burst after a stall is safe; with others it would
            # race them for the same requests, so never faster than the whole budget's pace.
            spacing = max(spacing, (1 - END_MARGIN) * span / self._limit)
        delay = self._last_send + spacing - now
        if delay < TIMER_RESOLUTION_S:
            return 0.0  # far from the limit: no wait, and no more arithmetic
        delay = min(delay, self._max_pause_s)
        return delay if delay >= TIMER_RESOLUTION_S else 0.0

    def _pause(self, now: float, until: float, family: str, reason: str) -> float:
        """Hold every send until `until`, capped at `max_pause_s` from now, and announce it
        unless it is the pause already under way; returns when the pause ends.

        A capped pause forgets the window it was waiting out: its end was not credible,
        and the probe that follows the pause learns the limit afresh."""
        asked = until - now
        if asked > self._max_pause_s:
            until = now + self._max_pause_s
            self._window_end = self._budget = None
            self._probing = True
        if until > self._pause_until + GUARD_S:
            self._on_pause(Pause(asked, until - now, reason, family))
        self._paused.add(now, until)
        self._pause_until = max(self._pause_until, until)
        return self._pause_until

    def _roll_window(self, now: float, ended: float) -> None:
        """`now` is past the window's end, `ended`: start the next one with the whole
        learned limit."""
        if self._period is None:
            self._window_end = self._budget = None
            return
        periods = math.floor((now - ended) / self._period) + 1
        self._window_end = ended + periods * self._period
        self._budget = self._limit
        self._others_before, self._others_now = self._others_now, False
        self._window_first_seq = self._seq + 1

    def settle(self, ticket: Ticket, answer: Answer | None) -> None:
        """Learn from one answer (None: nothing sent, or no HTTP answer at all)."""
        now = self._clock()
        self._inflight -= 1
        if self._holding:  # only the gate's holder waits for it, and clears it first
            self._changed.set()
        if answer is None:
            return  # no answer teaches nothing about the limit: a probe stays a probe
        rate_limit = answer.rate_limit
        end = None if rate_limit is None else self._learn(ticket, rate_limit, now)
        meaning, status = answer.meaning, answer.status
        if meaning is RATE_LIMITED:
            self._rate_limited(ticket, end, answer.retry_after_s, now)
        elif meaning is KEYS_REFUSED:
            self._probing = True  # keys refused: one request at a time until one succeeds
        elif status is not None and status < 500:
            self._bare_429s = 0
            self._probing = False
        # 5xx and no answer teach nothing about the limit: a probe stays a probe.

    def _learn(self, ticket: Ticket, headers: RateLimit, now: float) -> float | None:
        """Take in one answer's headers; returns when the window it was counted in ends
        (monotonic clock; already past if it ended while the request was in flight)."""
        limit, period, remaining, reset, _ = headers
        if limit and period and (limit != self._limit or period != self._period):
            if period != self._period:
                self._window_end = self._budget = None  # windows of another length
            self._limit, self._period = limit, period
            self._learned_bucket = AsyncLimiter(limit, period)
        seq = ticket.seq
        end = self._boundary(ticket.sent_wall, period or self._period, reset, now)
        if end is None or end <= now or remaining is None:
            return end  # a window already over says nothing about the current one
        # Our requests sent after this one may not be in the server's count yet.
        estimate = remaining - (self._seq - seq)
        # How far two answers' window ends may differ and still be the same window:
        # exact from the calendar; from whole-second Resets, each up to a second off.
        known = self._period
        slack = GUARD_S if self._skew_votes < SKEW_VOTES or known is None else known / 2
        window_end = self._window_end
        if window_end is None or end > window_end + slack:
            self._window_end, self._budget = end, estimate
            self._window_first_seq = seq
            self._others_before, self._others_now = self._others_now, False
        elif abs(end - window_end) <= slack and self._budget is not None:
            self._budget = min(self._budget, estimate)
        else:
            return end
        limit = limit or self._limit
        if limit is not None and seq >= self._window_first_seq:
            ours = self._seq - self._window_first_seq + 1  # all we sent in it, at most
            self._others_now |= limit - remaining > ours
        return end

    def _boundary(
        self, sent_wall: float, period: float | None, reset: float | None, now: float
    ) -> float | None:
        """When the window that a request sent at `sent_wall` (wall clock) was counted in
        ends (monotonic clock), or None when the headers cannot tell."""
        if period is not None and self._skew_votes < SKEW_VOTES:
            # Windows are aligned to the calendar: with clocks in sync, the boundary after
            # the send time is exact, which a whole-second Reset is not. A window over is
            # so whatever Reset says: the request was counted in it or the next.
            until = (floor(sent_wall / period) + 1) * period - self._wall()
            if until <= 0.0 or reset is None or abs(until - reset) <= RESET_TOLERANCE_S:
                return now + until
            self._skew_votes += 1  # our clock and the server's disagree
        # By Reset alone: the window had not ended when the server answered, whatever a
        # rounded-down Reset of 0 says, so a 429 can never be taken for a window now over.
        # A fixed window never ends more than a period away: a longer Reset is not true.
        if reset is None:
            return None
        if period is not None:
            reset = min(reset, period + 1.0)
        return now + max(reset, 1.0)

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
        self._pause(now, until, ticket.family, reason)


class Pacer:
    """The run's pacing: `acquire(family)` before each request, `settle()` after, with
    one `Budget` per rate limit (see the module's note)."""

    def __init__(
        self,
        *,
        rate: float | None,
        on_pause: Callable[[Pause], None],
        max_pause_s: float = DEFAULT_MAX_PAUSE_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._user_bucket = user_bucket(rate) if rate else None  # one ceiling for the run
        self._on_pause = on_pause
        self._max_pause_s = max_pause_s
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._paused = PausedTime(clock)
        self._families: dict[str, Budget] = {}
        self._names: dict[str, Budget] = {}

    @property
    def paused_s(self) -> float:
        """Wall-clock seconds some limit's requests were actually held by a pause."""
        return self._paused.seconds

    def _budget(self, name: str | None) -> Budget:
        return Budget(
            name,
            user_bucket=self._user_bucket,
            on_pause=self._on_pause,
            paused=self._paused,
            max_pause_s=self._max_pause_s,
            clock=self._clock,
            wall=self._wall,
            rng=self._rng,
        )

    def _of(self, family: str) -> Budget:
        budget = self._families.get(family)
        if budget is None:
            budget = self._families[family] = self._budget(None)
        return budget

    def try_acquire(self, family: str) -> Ticket | None:
        """A ticket for a send that needs no wait, or None: then `acquire(family)`."""
        budget = self._families.get(family) or self._of(family)
        return budget.try_acquire(family)

    async def acquire(self, family: str) -> Ticket:
        """Wait until a request of `family` may be sent, then account for it in flight."""
        while True:
            budget = self._of(family)
            ticket = await budget.acquire(family)
            if self._families[family] is budget:
                return ticket
            budget.settle(ticket, None)  # the family joined its limit's budget meanwhile

    def settle(self, ticket: Ticket, answer: Answer | None) -> None:
        """Learn from one answer (None: nothing was sent, or no answer came)."""
        budget = ticket.budget
        budget.settle(ticket, answer)
        rate_limit = None if answer is None else answer.rate_limit
        name = None if rate_limit is None else rate_limit.name
        if name is None or budget.name == name:
            return
        named = self._names.get(name)
        if named is None:
            # The family's first answer names its limit: its budget becomes that limit's.
            named = budget if budget.name is None else self._budget(name)
            named.name = name
            self._names[name] = named
        self._families[ticket.family] = named
