"""The one-way fan-out of what happens during a run.

The runner knows nothing of logs, journals, reports or metrics: it tells every observer
the same three things, and each observer keeps its own account. New sinks (a metrics
agent, a progress display) are added by implementing this protocol, not by touching the
runner.
"""

from __future__ import annotations

from typing import Protocol

from worker.rows import InvalidRow, Outcome


class RunObserver(Protocol):
    def rejected(self, row: InvalidRow) -> None:
        """A line of input was rejected by validation and will not be sent."""

    def outcome(self, outcome: Outcome) -> None:
        """A row reached its final result (any `Result` other than INVALID)."""

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        """One HTTP attempt ended: `status` is None for a connection error or timeout;
        `retry` says the attempt repeated an earlier one for the same row."""

    def paused(self, seconds: float, reason: str) -> None:
        """Every worker is held for `seconds` (a 429, a spent rate-limit window, a backoff)."""
