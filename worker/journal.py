"""What the run has already done, so reruns skip finished rows and repeats are sent once.

`Ledger` is what the runner needs; `MemoryLedger` keeps it for one run only
(`--no-journal`). The persistent SQLite journal implements the same protocol.
"""

from __future__ import annotations

from typing import Protocol

from worker.rows import InvalidRow, Outcome, Row, RowKey


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


class MemoryLedger:
    """Within-run de-duplication only: memory grows with the number of distinct rows."""

    def __init__(self) -> None:
        self._seen: set[RowKey] = set()

    def admit(self, row: Row) -> bool:
        key = row.key
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def rejected(self, row: InvalidRow) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        pass

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        pass

    def paused(self, seconds: float, reason: str) -> None:
        pass

    def close(self, report: dict[str, object]) -> None:
        pass
