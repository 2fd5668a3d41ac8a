"""What the runner needs of a journal: whether to send a row, and to hear how it ended."""

from __future__ import annotations

from typing import Protocol

from worker.rows import InvalidRow, Outcome, Row


class Ledger(Protocol):
    def admit(self, row: Row) -> bool:
        """True if the row should be sent; False if it was done in an earlier run or
        already appeared in this one (the runner then counts it as skipped)."""

    def rejected(self, row: InvalidRow) -> None: ...

    def outcome(self, outcome: Outcome) -> None: ...

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None: ...

    def paused(self, seconds: float, reason: str) -> None: ...

    def close(self, report: dict[str, object]) -> None:
        """Flush everything and record the run's report; safe to call more than once."""
