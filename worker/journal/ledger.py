"""What a run needs of a journal: the gate that admits a row, and the record of how it
ended. The run's sinks hand it the outcomes (`worker.ingest`); admission asks it first."""

from __future__ import annotations

from typing import Protocol

from worker.rows import Outcome, Row


class Ledger(Protocol):
    def admit(self, row: Row) -> bool:
        """True if the row should be sent; False if it was done in an earlier run or
        already appeared in this one (the run then counts it as skipped)."""
        ...

    def outcome(self, outcome: Outcome) -> None:
        """Record a row's final result."""
        ...

    def close(self, report: dict[str, object]) -> None:
        """Flush everything and record the run's report; safe to call more than once."""
        ...
