"""`--from` / `--to`: Datadog's date math, ISO 8601 date-times or epoch milliseconds.

A range is resolved to milliseconds once, at the start of a run, and those numbers are
what the search is sent: `now` must not move between the first page and the last, nor
between a run and its resume, and the journal keeps numbers, not `now-7d`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FROM_LAST = "last"
"""`--from last`: the caller resolves it from the journal with `start_after`."""
DEFAULT_FROM = "now-15m"
DEFAULT_TO = "now"
LAST_MARGIN_MS = (4 * 60 + 30) * 60_000
"""How far before the previous run's end `--from last` starts: 4 h 30 min. A session lasts
at most 4 hours and ends after 15 minutes idle (4 h 15 min), so a session still active
when the previous run searched has completed within that; 15 more minutes cover events
that reach the index late. The repeats this causes are dropped by the journal."""

_MATH = re.compile(r"now(?:\s*([+-])\s*([0-9]{1,9})\s*(ms|s|m|h|d|w))?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last moment an ISO date-time can write."""
_FORMS = (
    "write date math such as now, now-15m, now-4h or now-7d, an ISO 8601 date-time "
    "such as 2024-05-01T00:00:00Z, or milliseconds since the epoch"
)


class DateError(ValueError):
    """A `--from`/`--to` that cannot be used; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """[from_ms, to_ms): what the search is asked for, in epoch milliseconds."""

    from_ms: int
    to_ms: int

    def __post_init__(self) -> None:
        if self.from_ms >= self.to_ms:
            raise DateError(
                f"the range is empty: from {iso(self.from_ms)} is not before to "
                f"{iso(self.to_ms)}; give a --from earlier than --to"
            )


def parse_when(text: str, option: str, now_ms: int) -> int:
    """Epoch milliseconds for one `--from`/`--to` value."""
    value = text.strip()
    if value.isdigit():
        ms = int(value)
    elif match := _MATH.fullmatch(value):
        sign, amount, unit = match.groups()
        offset = 0 if amount is None else int(amount) * _UNIT_MS[unit]
        ms = now_ms - offset if sign == "-" else now_ms + offset
    else:
        ms = _iso_ms(value, option)
    if not 0 <= ms <= _MAX_MS:
        raise DateError(f"{option} {text!r} is out of range: {_FORMS}")
    return ms


def relative(text: str) -> bool:
    """Whether a WHEN is date math: each process resolves it against its own clock."""
    return _MATH.fullmatch(text.strip()) is not None


def resolve(from_text: str, to_text: str, now_ms: int) -> TimeRange:
    """The range for `--from`/`--to` (already resolved from `last` by the caller)."""
    if from_text.strip() == FROM_LAST:
        raise DateError("--from last needs the journal's previous run: resolve it with start_after")
    from_ms = parse_when(from_text, "--from", now_ms)
    to_ms = parse_when(to_text, "--to", now_ms)
    if from_ms >= to_ms:
        raise DateError(
            f"--from {from_text!r} ({iso(from_ms)}) is not before --to {to_text!r} "
            f"({iso(to_ms)}): swap them, or widen the range"
        )
    return TimeRange(from_ms, to_ms)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The range a run searches, and why: the start event says both."""

    time_range: TimeRange
    why: str


def resolve_last(
    to_text: str,
    now_ms: int,
    previous_to_ms: int | None,
    first_from: str | None,
    *,
    fixed_example: bool = False,
) -> Resolved:
    """`--from last`: from the previous completed search's end less the margin, or, on a
    first run (no previous one in the journal), from `first_from` (`--first-from`).
    `fixed_example`: the refusal of a first run suggests a fixed `--first-from` (a shard
    refuses a relative one), seven days before `now_ms`."""
    to_ms = parse_when(to_text, "--to", now_ms)
    if previous_to_ms is not None:
        from_ms = start_after(previous_to_ms)
        why = (
            f"--from last: the previous completed search ended at {iso(previous_to_ms)}; "
            f"starting {LAST_MARGIN_MS // 60_000} minutes earlier for sessions active then"
        )
    elif first_from is not None:
        from_ms = parse_when(first_from, "--first-from", now_ms)
        why = f"--from last: no previous completed search of this query; --first-from {first_from}"
    else:
        example = iso(now_ms - 7 * 86_400_000) if fixed_example else "now-7d"
        raise DateError(
            "--from last: the journal holds no completed search of this query, playlist and "
            f"target; give --first-from WHEN for the first run (e.g. --first-from {example})"
        )
    if from_ms >= to_ms:
        raise DateError(
            f"--from last resolves to {iso(from_ms)}, not before --to {to_text!r} "
            f"({iso(to_ms)}): nothing new to search yet"
        )
    return Resolved(TimeRange(from_ms, to_ms), why)


def start_after(previous_to_ms: int, margin_ms: int = LAST_MARGIN_MS) -> int:
    """Where `--from last` starts: the previous completed search's `to`, less the margin
    for sessions still active then (see LAST_MARGIN_MS)."""
    if margin_ms < LAST_MARGIN_MS:
        raise DateError(
            f"a --from last margin of {margin_ms} ms is shorter than {LAST_MARGIN_MS} ms: "
            "sessions still active at the previous run's end would be missed"
        )
    return max(0, previous_to_ms - margin_ms)


def iso(ms: int) -> str:
    """`ms` as `2024-05-01T00:00:00.000Z`: how ranges are shown and how events are dated."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms(text: str) -> int | None:
    """Epoch milliseconds of an ISO 8601 date-time with a zone; None if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _iso_ms(value: str, option: str) -> int:
    ms = iso_ms(value)
    if ms is not None:
        return ms
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise DateError(f"{option} {value!r} is not a time: {_FORMS}") from None
    raise DateError(
        f"{option} {value!r} has no time zone: add Z for UTC (e.g. {value}Z) or an offset "
        "such as +02:00"
    )
