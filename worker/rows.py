"""The records that flow through a run: input rows, rejected rows and row outcomes.

Data flows one way: the reader yields `Row` or `InvalidRow`; workers turn each `Row`
into an `Outcome`; the journal, the logs, the report and the dead-letter file consume
outcomes. Every record carries its source and line so any line of output can be traced
back to the input that caused it.

`Row` and `Outcome`, made once per row, are NamedTuples rather than frozen dataclasses:
as immutable, and made several times faster (a frozen dataclass sets each field through
`object.__setattr__`), which a rerun of a million done rows feels. The rarer records
(`InvalidRow`) stay frozen dataclasses.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

DATA_SOURCES = ("rum", "product_analytics")
DEFAULT_DATA_SOURCE = "rum"

RowKey = tuple[int, str, str]
"""(playlist_id, session_id, data_source): what makes a row the same row across runs."""


class Row(NamedTuple):
    """One valid row, ready to send. `data_source` is already resolved to a concrete value."""

    playlist_id: int
    session_id: str
    ts: int | None
    """Milliseconds since the epoch; None only for operations that need no time (remove,
    verify): the reader requires it for `run`."""
    data_source: str
    source: str
    line: int

    @property
    def key(self) -> RowKey:
        return row_key(self)


row_key: Callable[[Row], RowKey] = operator.itemgetter(0, 1, 3)
"""`Row.key` with no Python frame: admission takes the keys of every row of a chunk
(`map(row_key, rows)`), a million of them in a rerun."""


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A line of input that cannot be sent; `reason` says what is wrong and how to fix it.

    `fields` holds whatever could be read of the original row (possibly nothing), so the
    dead-letter file can echo it back.
    """

    source: str
    line: int
    reason: str
    fields: dict[str, object]


class Result(enum.StrEnum):
    """What finally happened to a row. The values are the report's field names."""

    INVALID = "invalid"
    SKIPPED = "skipped"
    CREATED = "created"
    ALREADY_PRESENT = "already_present"
    FAILED = "failed"
    NOT_ATTEMPTED = "not_attempted"
    REMOVED = "removed"
    """Removed from its playlist (204, whether or not it was there): no longer done."""
    PRESENT = "present"
    """`verify`: the playlist lists the row's session."""
    MISSING = "missing"
    """`verify`: the playlist does not list the row's session."""

    @property
    def done(self) -> bool:
        """The session is in its playlist: a rerun has nothing left to do for this row."""
        return self in (Result.CREATED, Result.ALREADY_PRESENT)


CREATED, ALREADY_PRESENT, FAILED, SKIPPED = (
    Result.CREATED,
    Result.ALREADY_PRESENT,
    Result.FAILED,
    Result.SKIPPED,
)
"""The results the hot path compares every row with, as module names: on Python 3.11
each `Result.X` is looked up through `EnumType.__getattr__`'s hook, about 170 ns
against 20 for a module name (`worker.answers` does the same for `Meaning`)."""


class Outcome(NamedTuple):
    """The final account of one row in this run."""

    row: Row
    result: Result
    http_status: int | None = None
    attempts: int = 0
    latency_ms: float = 0.0
    error: str | None = None
    note: str | None = None
    """Worth knowing about a row that did not fail (an earlier attempt's answer was lost)."""
