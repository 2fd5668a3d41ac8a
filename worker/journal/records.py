"""What the journal tells of its runs, and how a run is named."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass

from worker.rows import RowKey


class Operation(enum.StrEnum):
    """What a run did to its rows; what counts as done depends on it."""

    RUN = "run"
    REMOVE = "remove"
    UNDO = "undo"


def new_run_id(now: float | None = None) -> str:
    """`YYYYMMDDTHHMMSSZ-` and 8 random hex digits: sorts by start time, and two runs that
    start in the same second on other machines or shards still differ (one chance in four
    billion for each pair that could collide)."""
    started = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y%m%dT%H%M%SZ", started) + "-" + secrets.token_hex(4)


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the journal recorded it. `info` and `report` are as the run gave them,
    with anything shaped like a key masked."""

    run_id: str
    target: str
    operation: str
    shard: str | None
    started_at: float
    ended_at: float | None
    """None: still running, or killed."""
    exit_code: int | None
    fresh: bool
    pid: int
    inputs: tuple[str, ...]
    info: dict[str, object]
    report: dict[str, object] | None
    """The run's final report (its counts), None until it ended."""


@dataclass(frozen=True, slots=True)
class CreatedRow:
    """A session a run added to its playlist, for undo to take back."""

    key: RowKey
    ts: int | None
    maybe: bool
    """Answered already present after an attempt whose answer was lost: that attempt may
    have added it (it is then this run's), or it was there before the run."""
    added_later: bool
    """A later run in this journal (for the same target) also added it."""
    removed: bool
    """Its last outcome in the journal is a removal: there is nothing left to take back."""


@dataclass(frozen=True, slots=True)
class QueryKey:
    """What a query's search position belongs to, beside the journal's target: the
    effective query (as sent, after the tool wrapped it) and the playlist."""

    query: str
    playlist_id: int


def done_results(operation: Operation) -> tuple[str, ...]:
    """The recorded results a rerun of `operation` skips: a session added, for a run; a
    session removed, for remove and undo. A removed row is no longer done for a run."""
    if operation is Operation.RUN:
        return ("created", "already_present")
    return ("removed",)
