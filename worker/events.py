"""What happens during a run, as one closed union of records that every sink reads.

Rows arrive as `InvalidRow` (rejected by validation), `Skipped` (rows of a chunk that
admission skipped) and `Outcome` (a row's final result); every HTTP attempt is an
`Answered`; a hold of every request of one rate limit is a `Pause` (`worker.pacer`);
`Ended` is the last event a sink sees, carrying the run's final account, after which the
sink lets go of what it holds (files, sockets).

A sink is a callable of one event; one that reads only some kinds says so (`reading`),
and is then never called for the others. Sinks never call back into the run, so adding
one (a metrics agent, a progress display) never touches the stages that produce the
events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, get_args

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
KINDS: tuple[type, ...] = get_args(Event)


@dataclass(frozen=True, slots=True)
class Reading:
    """A sink with the kinds of event it reads. `fan_out` hands it those alone: every
    attempt is an `Answered` that the journal and the logs never read, and each would
    otherwise cost them a call to find that out. Called itself, it filters likewise."""

    kinds: frozenset[type]
    sink: Sink

    def __call__(self, event: Event) -> None:
        if type(event) in self.kinds:
            self.sink(event)


def reading(*kinds: type, sink: Sink) -> Reading:
    return Reading(frozenset(kinds), sink)


class FanOut:
    """Many sinks as one: each event goes to the sinks that read its kind, in the order
    they were given (the journal first, so what the logs call done is what the journal
    will keep). The sinks of each kind are looked up once, not decided per event."""

    __slots__ = ("_of_kind", "members")

    def __init__(self, members: Sequence[Sink]) -> None:
        self.members = tuple(members)
        self._of_kind = {
            kind: tuple(
                member.sink if isinstance(member, Reading) else member
                for member in self.members
                if not isinstance(member, Reading) or kind in member.kinds
            )
            for kind in KINDS
        }

    def __call__(self, event: Event) -> None:
        for sink in self._of_kind.get(type(event), self.members):
            sink(event)

    def of(self, kind: type) -> tuple[Sink, ...]:
        """The sinks events of `kind` go to, in order."""
        return self._of_kind.get(kind, self.members)


class _Each:
    """Sinks called in turn, with no question of kind: the sinks of one kind."""

    __slots__ = ("_sinks",)

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self._sinks = tuple(sinks)

    def __call__(self, event: Event) -> None:
        for sink in self._sinks:
            sink(event)


def of_kind(sink: Sink, kind: type) -> Sink:
    """What `sink` does with events of `kind`, as the one callable a stage that makes
    them (an attempt's `Answered`, a row's `Outcome`) calls for each: the sinks that
    read that kind, found once here rather than by the fan-out at every event, and a
    single one called directly. Events of any other kind must not be given to it."""
    if isinstance(sink, FanOut):
        sinks = sink.of(kind)
    elif isinstance(sink, Reading):
        sinks = (sink.sink,) if kind in sink.kinds else ()
    else:
        sinks = (sink,)
    return sinks[0] if len(sinks) == 1 else _Each(sinks)


def fan_out(sinks: Sequence[Sink]) -> Sink:
    """Many sinks as one (a `FanOut`; a fan-out among them is taken apart, so its sinks
    are called in the same order with no extra hop). One sink needs no fan-out: a
    `Reading` filters when called itself."""
    members: list[Sink] = []
    for sink in sinks:
        members.extend(sink.members if isinstance(sink, FanOut) else (sink,))
    return members[0] if len(members) == 1 else FanOut(members)
