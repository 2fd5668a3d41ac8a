"""The rows that failed for good, as NDJSON that can be fed straight back as input.

Each line holds the row's own fields (which the reader reads back) and why it failed,
with its source and line (which the reader ignores). A line is written with one system
call as soon as its outcome is known, so a kill -9 loses nothing already reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from worker.events import Ended, Event
from worker.files import UnsafeFile, check_distinct, open_output, unwritable
from worker.rows import Outcome, Result


class DeadLetterError(Exception):
    """The dead-letter file cannot be written; the message says why and what to do."""


class DeadLetter:
    """A sink of the run's events: one NDJSON line per row that failed for good. The
    file is closed at the run's end; one that could not be written whole is said so
    through `warn` (the journal still has every failure)."""

    def __init__(
        self,
        path: Path,
        inputs: Iterable[str] = (),
        *,
        warn: Callable[[str, str], None] = lambda _event, _error: None,
    ) -> None:
        """Start an empty file, so after the run it lists exactly this run's failures.

        Refuses (`DeadLetterError`) a path that is also one of `inputs` (emptying it would
        destroy the very rows this run is retrying), a symlink, or a file that is not a
        plain file of this user's (see `worker.files`)."""
        try:
            others = {f"input #{n}": name for n, name in enumerate(inputs, 1)}
            check_distinct({**others, "--dead-letter": path})
            self._fd: int | None = open_output(path)
        except UnsafeFile as exc:
            raise DeadLetterError(str(exc)) from None
        except OSError as exc:  # said as every output's error is
            raise DeadLetterError(str(unwritable("--dead-letter", path, exc))) from None
        self.path = path
        self._failure: OSError | None = None
        self._warn = warn
        self.written = 0

    def __call__(self, event: Event) -> None:
        if type(event) is Outcome:
            assert isinstance(event, Outcome)
            self.outcome(event)
        elif type(event) is Ended:
            try:
                self.close()
            except DeadLetterError as exc:
                self._warn("dead_letter_incomplete", str(exc))

    def outcome(self, outcome: Outcome) -> None:
        if outcome.result is not Result.FAILED or self._fd is None or self._failure:
            return
        try:
            _write_all(self._fd, _line(outcome).encode())
        except OSError as exc:
            # The run goes on (its journal still records the failure); `close` tells.
            self._failure = exc
            return
        self.written += 1

    def close(self) -> None:
        """Raises `DeadLetterError` (once) if some failed rows could not be written."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise DeadLetterError(
                f"the dead-letter file {self.path} is incomplete after {self.written} rows "
                f"({failure.strerror or failure}); the journal still records "
                "every failure (see the status subcommand), and a rerun retries them"
            )


def _write_all(fd: int, data: bytes) -> None:
    """One system call, as a rule; a short write (a disk filling up) goes on until the disk
    says why it stopped."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _line(outcome: Outcome) -> str:
    row = outcome.row
    if outcome.error:
        reason = outcome.error
    elif outcome.http_status is not None:
        reason = f"HTTP {outcome.http_status}"
    else:
        reason = "failed"
    record = {
        "playlist_id": row.playlist_id,
        "session_id": row.session_id,
        "ts": row.ts,
        "data_source": row.data_source,
        "reason": reason,
        "http_status": outcome.http_status,
        "attempts": outcome.attempts,
        "source": row.source,
        "line": row.line,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"
