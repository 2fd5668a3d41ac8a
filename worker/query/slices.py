"""`--shard K/N` with `--query`: which moments of a search's range are shard K's.

Time is cut into hour-long slices on UTC hour boundaries, and the slice of hour `h`
(counted from the epoch) is shard `h mod N`'s. Like a file row's shard, which its key
decides, a moment's shard is decided by the moment alone, not by the range a run took:
shards that resolved `now` minutes apart, or whose `--from last` each took from its own
journal, still never search one moment twice, and a moment a shard has not reached yet
is searched by that shard's next `--from last` run. N equal parts of each run's range
(what `--shard` did first) need every shard to see the same range, which shards with
their own clocks and journals do not: hours fell to no shard, and others to two.

Two rules keep the ends of a sharded range in step (`check_sharded`, before anything is
sent): the start is a fixed time or `last`, never date math; an end that is date math
needs `--from last`, whose next run starts where each shard ended. Besides, a shard takes
`now` as the start of its hour (`slice_start`), so shards started within one hour take
the very same range.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from worker.query.dates import (
    DEFAULT_TO,
    FROM_LAST,
    DateError,
    TimeRange,
    iso,
    parse_when,
    relative,
)
from worker.shard import Shard

SLICE_MS = 3_600_000
"""One hour. A night's range (a day and the `--from last` margin) is about 29 slices, so
a few dozen shards all have work, and each slice costs one search (a request at least)."""


def slice_start(ms: int) -> int:
    """The start of the slice `ms` lies in: the `now` a shard resolves date math with."""
    return ms // SLICE_MS * SLICE_MS


@dataclass(frozen=True, slots=True)
class Slices:
    """The parts of `span` that are `shard`'s, oldest first: each of its hours that meets
    the span, clipped to it."""

    span: TimeRange
    shard: Shard

    def _hours(self) -> range:
        first = self.span.from_ms // SLICE_MS
        last = (self.span.to_ms - 1) // SLICE_MS
        count = self.shard.count
        return range(first + (self.shard.index - first) % count, last + 1, count)

    def __iter__(self) -> Iterator[TimeRange]:
        if self.shard.count == 1:  # every hour is this shard's: one search, not one an hour
            yield self.span
            return
        span = self.span
        for hour in self._hours():
            start = hour * SLICE_MS
            yield TimeRange(max(span.from_ms, start), min(span.to_ms, start + SLICE_MS))

    def __len__(self) -> int:
        return 1 if self.shard.count == 1 else len(self._hours())

    def to_json(self) -> dict[str, object]:
        """What the start event and the report say of them: how many, the first and the
        last (`FROM/TO`, ISO 8601 intervals)."""
        first = last = None
        for piece in self:
            first = first or piece
            last = piece
        return {"count": len(self), "first": _interval(first), "last": _interval(last)}


def _interval(piece: TimeRange | None) -> str | None:
    return None if piece is None else f"{iso(piece.from_ms)}/{iso(piece.to_ms)}"


def check_sharded(from_text: str, to_text: str, first_from: str | None, now_ms: int) -> None:
    """Refuses a sharded range whose ends shards started apart would resolve apart for
    good: a moment between two shards' ends would then be searched by neither. Raises
    `DateError` saying what to give instead (with the fixed time the value means now)."""
    last = from_text.strip() == FROM_LAST
    option, start = ("--first-from", first_from) if last else ("--from", from_text)
    if start is not None and relative(start):
        raise DateError(
            f"{option} {start.strip()} with --shard: each shard would resolve it at its own "
            "start, and shards started apart would begin the range at different moments, "
            f"leaving what lies between to no shard; give a fixed time, e.g. {option} "
            f"{_fixed(start, option, now_ms)}"
        )
    if not last and relative(to_text):
        default = " (the default)" if to_text.strip() == DEFAULT_TO else ""
        raise DateError(
            f"--to {to_text.strip()}{default} with --shard and a fixed --from: shards started "
            "apart would end the range at different moments, and no later run would search "
            f"what lies between; give a fixed --to, e.g. --to {_fixed(to_text, '--to', now_ms)}, "
            "or run nightly with --from last, whose next run starts where each shard ended"
        )


def _fixed(text: str, option: str, now_ms: int) -> str:
    """The fixed time `text` means now, as a shard would resolve it."""
    return iso(parse_when(text, option, slice_start(now_ms)))
