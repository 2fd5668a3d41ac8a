"""What an HTTP answer means: the one place a status, headers and body become an `Answer`.

Every answer is hostile until checked. A status is one `Meaning`; each rate-limit header
is bounded (a proxy's garbage, a `Reset` of a thousand years, a number of 5,000 digits
that `int()` refuses); a redirect is never followed and names only the origin it pointed
to; and every error text is scrubbed of the run's keys (`worker.scrub`) before it can
reach a log line, the journal, the dead-letter file or the report.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import math
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from multidict import istr
from yarl import URL

from worker.jsoncodec import loads as _loads
from worker.records import new_record
from worker.scrub import Scrubber


class Meaning(enum.Enum):
    """What an answer means for the request that caused it."""

    DONE = "done"  # 2xx
    RATE_LIMITED = "rate_limited"  # 429: wait and send again; never the row's failure
    RETRYABLE = "retryable"  # 408, 425, 5xx, no answer, a body over its cap or unreadable
    ROW_FAILED = "row_failed"  # any other 4xx: this item will not succeed as it is
    KEYS_REFUSED = "keys_refused"  # 401, 403: the keys, not the item, are at fault
    FATAL = "fatal"  # the run cannot work as configured: TLS verification, any redirect


class RateLimit(NamedTuple):
    """The `X-RateLimit-*` headers of one answer, each bounded; any may be None.

    A NamedTuple, not a frozen dataclass, as every record made once per request is
    (`Answer`, `worker.api.Request`, `worker.events.Answered`): as immutable, and made in
    a sixth of the time (a frozen dataclass sets each field through `object.__setattr__`:
    about 7 µs a request in all, against a bare HTTP loop's 70)."""

    limit: int | None
    period: float | None
    remaining: int | None
    reset: float | None
    name: str | None = None


class Answer(NamedTuple):
    meaning: Meaning
    status: int | None  # None: no HTTP answer (connection error, timeout)
    latency_ms: float
    error: str | None = None  # human text, already scrubbed of keys; None on success
    rate_limit: RateLimit | None = None
    retry_after_s: float | None = None  # parsed Retry-After, bounded
    maybe_applied: bool = False
    """A retryable failure after the server may have applied the request (a 5xx, a lost
    or unreadable answer): a later 200 may be this attempt's doing."""
    payload: object = None  # the parsed JSON body of a 2xx, when the Request asked for it
    body_problem: str | None = None  # a 2xx whose body was not the documented JSON


MAX_COUNT = 1_000_000_000
"""A `Limit` or `Remaining` above this is no real limit: read as absent."""
MAX_PERIOD_S = 86_400.0
"""Datadog's rate-limit periods are seconds to an hour; one longer than a day is absent."""
MAX_HINT_S = 1e10
"""A `Reset` or `Retry-After` (about 317 years) beyond this is read as this: still an order
to wait very long, which the pacer caps (its `max_pause_s`), never an infinity or an
overflow in the arithmetic of times."""
_MAX_NUMBER_CHARS = 32
"""A header number longer than this is garbage: `int()` of 5,000 digits even raises."""
_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
"""What a limit's name may look like: it becomes a key of the pacer's budgets."""

ERROR_CHARS = 500
"""The error text kept of an answer (Datadog's own errors are a line)."""
_SCRUB_WINDOW = 4096
"""The error text is scrubbed over this much, then cut to ERROR_CHARS: cut first, a key
straddling the cut would leave its first part in clear."""

RETRYABLE_STATUSES = frozenset({408, 425})
KEY_STATUSES = frozenset({401, 403})


def meaning_of(status: int) -> Meaning:
    if 100 <= status < 600:
        return _MEANING_OF[status - 100]
    return _meaning_of(status)


def _meaning_of(status: int) -> Meaning:
    if 200 <= status < 300:
        return Meaning.DONE
    if status == 429:
        return Meaning.RATE_LIMITED
    if 300 <= status < 400:
        return Meaning.FATAL  # never followed: the keys would go along
    if status in KEY_STATUSES:
        return Meaning.KEYS_REFUSED
    if 400 <= status < 500 and status not in RETRYABLE_STATUSES:
        return Meaning.ROW_FAILED
    return Meaning.RETRYABLE  # 408, 425, 5xx and what no server should send (1xx, 6xx)


_MEANING_OF = tuple(_meaning_of(status) for status in range(100, 600))
"""The meaning of every status a server may send, looked up rather than decided: on
Python 3.11 each `Meaning.X` costs a lookup through the enum class's `__getattr__`
hook (about 170 ns), and deciding took up to five of them an answer."""
DONE = Meaning.DONE
RATE_LIMITED = Meaning.RATE_LIMITED
KEYS_REFUSED = Meaning.KEYS_REFUSED
"""The meanings the hot path compares every answer with, as module names for the same
reason (as `worker.rows` does for `Result`)."""


def _number(value: str | None) -> float | None:
    """A finite, non-negative number, or None."""
    if value is None or len(value) > _MAX_NUMBER_CHARS:
        return None
    if value.isascii() and value.isdigit():  # what Datadog sends: the cheap path
        return int(value)
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _count(value: float | None) -> int | None:
    return int(value) if value is not None and value <= MAX_COUNT else None


def _hint(value: float | None) -> float | None:
    return None if value is None else min(float(value), MAX_HINT_S)


# Case-insensitive names made once: aiohttp's headers then skip folding the case of the
# name on every lookup (as `aiohttp.hdrs` does for the standard ones).
_LIMIT = istr("X-RateLimit-Limit")
_PERIOD = istr("X-RateLimit-Period")
_REMAINING = istr("X-RateLimit-Remaining")
_RESET = istr("X-RateLimit-Reset")
_LIMIT_NAME = istr("X-RateLimit-Name")
_RETRY_AFTER = istr("Retry-After")
_LOCATION = istr("Location")


@functools.lru_cache(maxsize=64)
def _limit_name(raw: str) -> str | None:
    """The name if it looks like one: checked once per name, not on every answer (an
    API has a handful; a server sending a new one each time only ever misses)."""
    return raw if _NAME.fullmatch(raw) else None


_STEADY_CAP = 256
"""Raw headers remembered by `parse_rate_limit` at most: a server that sends new values
every time only ever misses, and is forgotten every so many answers."""
_Steady = tuple[int | None, float | None, float | None, str | None]
_steady: dict[tuple[str | None, ...], _Steady] = {}
"""The limit, period, reset and name read from the raw headers of each."""


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """None when the answer carries no `X-RateLimit-*` number at all (a proxy, say).

    Of the five headers only `Remaining` changes from one answer to the next (`Reset`
    each second), so what the other four read as is remembered by their raw strings:
    parsing them cost more than the rest of an answer's reading. The invariant it relies
    on, that each field is read from its own header alone, is held by a test."""
    get = headers.get
    limit, period, remaining, reset = get(_LIMIT), get(_PERIOD), get(_REMAINING), get(_RESET)
    raw_name = get(_LIMIT_NAME)
    if (
        remaining is not None
        and len(remaining) <= 10
        and remaining.isdigit()
        and remaining.isascii()  # "²" is a digit to `isdigit`, and not to `int`
    ):
        steady = _steady.get((limit, period, reset, raw_name))
        if steady is not None:
            left = int(remaining)
            count, period_s, reset_s, name = steady
            return new_record(
                RateLimit, (count, period_s, left if left <= MAX_COUNT else None, reset_s, name)
            )
        rate_limit = _read_rate_limit(limit, period, remaining, reset, raw_name)
        if rate_limit is not None:
            if len(_steady) >= _STEADY_CAP:
                _steady.clear()
            count, period_s, _, reset_s, name = rate_limit
            _steady[limit, period, reset, raw_name] = (count, period_s, reset_s, name)
        return rate_limit
    return _read_rate_limit(limit, period, remaining, reset, raw_name)


def _read_rate_limit(
    limit: str | None,
    period: str | None,
    remaining: str | None,
    reset: str | None,
    raw_name: str | None,
) -> RateLimit | None:
    name = None if raw_name is None else _limit_name(raw_name)
    if limit and period and remaining and reset:
        digits = limit + period + remaining + reset
        # What Datadog sends, checked in one go: short whole numbers, bounded as the slow
        # path below bounds them (40 digits in all keep `int()` cheap).
        if len(digits) <= 40 and digits.isdigit() and digits.isascii():
            count, period_s, left, reset_s = int(limit), int(period), int(remaining), int(reset)
            return new_record(
                RateLimit,
                (
                    count if 0 < count <= MAX_COUNT else None,
                    period_s if 0 < period_s <= MAX_PERIOD_S else None,
                    left if left <= MAX_COUNT else None,
                    reset_s if reset_s <= MAX_HINT_S else MAX_HINT_S,
                    name,
                ),
            )
    numbers = _number(limit), _number(period), _number(remaining), _number(reset)
    if numbers == (None, None, None, None):
        return None
    limit_n, period_n, remaining_n, reset_n = numbers
    return RateLimit(
        limit=_count(limit_n) or None,
        period=period_n if period_n and period_n <= MAX_PERIOD_S else None,
        remaining=_count(remaining_n),
        reset=_hint(reset_n),
        name=name,
    )


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds or as an HTTP date, bounded; None when absent or unreadable."""
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return _hint(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return _hint(max(0.0, when.timestamp() - now()))


def error_text(body: bytes) -> str:
    """Datadog's `{"errors": [...]}` joined, else the start of whatever came back."""
    try:
        parsed = _loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("errors"), list):
        return "; ".join(str(e) for e in parsed["errors"][:20])
    text = body[:_SCRUB_WINDOW].decode("utf-8", "replace").strip()
    return text or "(empty body)"


def origin_of(location: str | None, base: URL) -> str:
    """Where a redirect pointed: scheme, host and port only (a path or query may hold
    anything, the keys included); a relative `Location` is on the base URL's origin."""
    if location is None:
        return "nowhere (no Location header)"
    try:
        target = base.join(URL(location))
        origin = f"{target.scheme}://{target.host}:{target.port}"
    except (ValueError, TypeError):
        return "an unreadable Location"
    return origin[:200]


class BodyCheck:
    """The success bodies whose payload no caller wants, checked together at the end of
    the event loop's turn rather than each as it came: a body a run only checks (every
    PUT's) then costs its JSON parse in a batch, with the parser's code and data in the
    caches, not between two requests. Their answers carry no `body_problem`; the first
    body that is not the documented JSON is told to `odd` once (its status and the
    problem, scrubbed), and no body is checked after it."""

    __slots__ = ("_bodies", "_odd", "_scrub", "_told")

    def __init__(self, odd: Callable[[int, str], None], scrub: Callable[[str], str]) -> None:
        self._odd = odd
        self._scrub = scrub
        self._bodies: list[tuple[int, bytes]] = []
        self._told = False

    def add(self, status: int, body: bytes) -> None:
        if self._told:
            return
        bodies = self._bodies
        bodies.append((status, body))
        if len(bodies) == 1:
            asyncio.get_running_loop().call_soon(self.check)

    def check(self) -> None:
        """Check the bodies added since the last check."""
        bodies, self._bodies = self._bodies, []
        for status, body in bodies:
            _, problem = _payload(status, body, False)
            if problem is not None:
                self._told = True  # and no body is added after it
                self._odd(status, self._scrub(problem))
                return


class AnswerReader:
    """Turns what came back (or did not) into an `Answer`, scrubbing every text it keeps.

    `base_url` places a relative redirect; `scrubber` knows the run's keys; `odd_body`,
    when given, is told of a success body that is not the documented JSON, for the
    answers whose payload no caller wants (`BodyCheck`), which then carry no
    `body_problem` of their own."""

    __slots__ = ("_base", "_bodies", "_scrubber")

    def __init__(
        self,
        scrubber: Scrubber,
        base_url: str,
        odd_body: Callable[[int, str], None] | None = None,
    ) -> None:
        self._scrubber = scrubber
        self._base = URL(base_url)
        self._bodies = None if odd_body is None else BodyCheck(odd_body, self.scrubbed)

    def scrubbed(self, text: str) -> str:
        return self._scrubber.text(text[:_SCRUB_WINDOW])[:ERROR_CHARS]

    def http(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        latency_ms: float,
        want_payload: bool = False,
    ) -> Answer:
        """An answer whose whole body (within its cap) was read. (`want_payload` may be
        given by place: the client does, once an answer, as a call with a keyword is
        slower.)"""
        meaning = meaning_of(status)
        rate_limit = parse_rate_limit(headers)
        if meaning is DONE:
            bodies = self._bodies
            if bodies is not None and not want_payload:
                bodies.add(status, body)
                return new_record(
                    Answer, (meaning, status, latency_ms, None, rate_limit, None, False, None, None)
                )
            payload, problem = _payload(status, body, want_payload)
            body_problem = None if problem is None else self.scrubbed(problem)
            return new_record(
                Answer,
                (meaning, status, latency_ms, None, rate_limit, None, False, payload, body_problem),
            )
        if meaning is Meaning.FATAL:  # a redirect
            error = (
                f"HTTP {status}: a redirect to {origin_of(headers.get(_LOCATION), self._base)}, "
                "not followed (the keys would go along); the tool talks to the API "
                "itself only: check --base-url and HTTPS_PROXY / HTTP_PROXY"
            )
        else:
            error = f"HTTP {status}: {error_text(body)}"
        return Answer(
            meaning,
            status,
            latency_ms,
            error=self.scrubbed(error),
            rate_limit=rate_limit,
            retry_after_s=parse_retry_after(headers.get(_RETRY_AFTER)),
            maybe_applied=status >= 500,
        )

    def unreadable(
        self, status: int, headers: Mapping[str, str], latency_ms: float, problem: str
    ) -> Answer:
        """An answer whose body could not be read whole (over its cap, a bad encoding):
        retried, as an answer lost; a 2xx means the request may have been applied."""
        meaning = meaning_of(status)
        if meaning in (Meaning.DONE, Meaning.ROW_FAILED, Meaning.KEYS_REFUSED):
            meaning = Meaning.RETRYABLE
        return Answer(
            meaning,
            status,
            latency_ms,
            error=self.scrubbed(f"HTTP {status}: {problem}"),
            rate_limit=parse_rate_limit(headers),
            retry_after_s=parse_retry_after(headers.get(_RETRY_AFTER)),
            maybe_applied=status < 300 or status >= 500,
        )

    def none(
        self, error: str, latency_ms: float, *, meaning: Meaning, maybe_applied: bool
    ) -> Answer:
        """No HTTP answer at all: a connection error, a timeout, TLS."""
        return Answer(
            meaning, None, latency_ms, error=self.scrubbed(error), maybe_applied=maybe_applied
        )


_DATA_KINDS = (dict, list)
"""A tuple, made once: `dict | list` builds a union at each answer, and checks slower."""


def _payload(status: int, body: bytes, want_payload: bool) -> tuple[object, str | None]:
    """The parsed body when asked for, and what is wrong with it, if anything.

    Datadog's v2 answers are JSON:API documents, `{"data": ...}`, or no body at all for
    a 204; the caller of a payload checks the rest of its shape."""
    if not body and status == 204:
        return None, None
    try:
        parsed = _loads(body)
    except ValueError:
        return None, f"body is not JSON: {body[:80]!r}"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), _DATA_KINDS):
        return (parsed if want_payload else None), f"body has no 'data': {body[:80]!r}"
    return (parsed if want_payload else None), None
