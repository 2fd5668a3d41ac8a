"""What happens during a run, as one closed union of records that every sink reads.

Rows arrive as `InvalidRow` (rejected by validation), `Skipped` (rows of a chunk that
admission skipped) and `Outcome` (a row's final result); every HTTP attempt is an
`Answered`; a hold of every request of one rate limit is a `Pause` (`worker.pacer`);
`Ended` is the last event a sink sees, carrying the run's final account, after which the
sink lets go of what it holds (files, sockets).

A sink is a callable of one event. Sinks never call back into the run, so adding one (a
metrics agent, a progress display) never touches the stages that produce the events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from worker.pacer import Pause
from worker.rows import InvalidRow, Outcome, Row


class Answered(NamedTuple):
    """One HTTP attempt ended. `status` is None for a connection error, a timeout, or a
    request abandoned in flight at a stop; `retry` says it repeated an earlier attempt
    for the same row."""

    status: int | None
    rate_limited: bool
    latency_ms: float
    retry: bool


class Skipped(NamedTuple):
    """Rows of one chunk that admission skipped (done before, or repeats of this run):
    one event for them all, since a rerun skips a million of them, and each would
    otherwise cost an `Outcome` and a trip through every sink."""

    rows: list[Row]


@dataclass(frozen=True, slots=True)
class Ended:
    """The run is over; `report` is its final account (the contract's fields)."""

    report: Mapping[str, object]


Event = InvalidRow | Outcome | Skipped | Answered | Pause | Ended
Sink = Callable[[Event], None]


def fan_out(sinks: Sequence[Sink]) -> Sink:
    """Many sinks as one, called in order (the journal first, so what the logs call done
    is what the journal will keep). One sink needs no loop at all."""
    chain = tuple(sinks)
    if len(chain) == 1:
        return chain[0]

    def every(event: Event) -> None:
        for sink in chain:
            sink(event)

    return every
