"""The run's events as log lines: one per row that was sent or rejected, one per pause.

Rows skipped because they were done before (or repeat an earlier row) are counted and
summarised in one line at the end: a rerun of a million done rows would otherwise spend
most of its time writing a million lines that say nothing new.

`quiet` (a live progress display is showing the counts) leaves out the lines for rows
that went well and for pauses; failures and invalid rows are still logged.
"""

from __future__ import annotations

import functools

from structlog.typing import FilteringBoundLogger

from worker.events import Ended, Event, Skipped
from worker.logs import RunLogger
from worker.pacer import Pause
from worker.rows import InvalidRow, Outcome

WARNINGS_SHOWN = 20
"""Warning lines of one kind (failed rows, invalid rows) a person is shown on a terminal."""
_WHERE = {
    "row": "rows that failed; --dead-letter FILE keeps each one, and the journal records them",
    "invalid_row": "invalid rows; `validate` lists every one",
}


class LogSink:
    KINDS = (Outcome, Skipped, InvalidRow, Pause, Ended)
    """What it logs or counts: every kind of event but the attempts (`Answered`)."""

    def __init__(
        self,
        log: FilteringBoundLogger,
        *,
        quiet: bool = False,
        warnings_shown: int | None = None,
        journal: bool = True,
    ) -> None:
        assert isinstance(log, RunLogger), "LogSink takes a logger from logs.configure()"
        self._log = log
        # A row that went well is logged as it is rendered, at the end of the loop's turn.
        self._row_info = log.deferred("info", row_fields)
        self._row_warning = functools.partial(log.emit, "warning")
        self._quiet = quiet
        self._skipped = 0
        self._cap = warnings_shown
        self._warned: dict[str, int] = {}  # warning lines of each event, shown or not
        # Why rows were skipped: without a journal, only as repeats within the run.
        self._skipped_because = (
            "done in an earlier run (the journal) or repeated within this run"
            if journal
            else "repeated within this run"
        )

    def _shown(self, event: str) -> bool:
        """Whether a warning line of `event` is written. A person reads these on a
        terminal: past `warnings_shown` of one event they are only counted, and said
        once at the end (logs for machines keep every line: `warnings_shown` None)."""
        if self._cap is None:
            return True
        seen = self._warned[event] = self._warned.get(event, 0) + 1
        if seen == self._cap + 1:
            self._log.warning(
                "not_shown",
                kind=event,
                detail=f"further {event} lines are counted, not shown: the summary says how many",
            )
        return seen <= self._cap

    def __call__(self, event: Event) -> None:
        if isinstance(event, Outcome):
            self._outcome(event)
        elif isinstance(event, Skipped):
            self._skipped += len(event.rows)
        elif isinstance(event, InvalidRow):
            if self._shown("invalid_row"):
                self._log.warning(
                    "invalid_row", source=event.source, line=event.line, reason=event.reason
                )
        elif isinstance(event, Pause):
            if not self._quiet:
                fields: dict[str, object] = {
                    "seconds": round(event.pause_s, 3),
                    "reason": event.reason,
                    "family": event.family,
                }
                if event.asked_s != event.pause_s:
                    fields["asked_s"] = round(event.asked_s, 3)
                self._log.info("paused", **fields)
        elif isinstance(event, Ended):
            self._ended()

    def _ended(self) -> None:
        if self._skipped:
            self._log.info(
                "skipped",
                rows=self._skipped,
                detail=self._skipped_because,
            )
        cap = self._cap
        for event, seen in self._warned.items():
            if cap is not None and seen > cap:
                self._log.warning("not_shown", kind=event, lines=seen - cap, detail=_WHERE[event])

    def _outcome(self, outcome: Outcome) -> None:
        if outcome.error:
            if self._shown("row"):
                self._row_warning(row_fields(outcome))
        elif not self._quiet:
            self._row_info(outcome)


def row_fields(outcome: Outcome) -> dict[str, object]:
    """A row's line, as the fields of its event."""
    # Unpacked: a NamedTuple's field read by name is a descriptor call.
    row, result, status, attempts, latency_ms, error, note = outcome
    playlist_id, session_id, _, data_source, source, line = row
    # "event" in the literal, not added later: a dict built with eleven keys has room
    # for the level and timestamp the processor adds; one built with ten grows.
    event = {
        "event": "row",
        "result": result,  # a str enum: serialised as its value
        "playlist_id": playlist_id,
        "session_id": session_id,
        "data_source": data_source,
        "status": status,
        "attempts": attempts,
        # Two decimals of a time (never negative) at half the cost of `round(x, 2)`,
        # which rounds an exact tie (0.125) to even where this rounds it up.
        "latency_ms": int(latency_ms * 100.0 + 0.5) / 100,
        "source": source,
        "line": line,
        "error": error,
    }
    if note:
        event["note"] = note
    return event
