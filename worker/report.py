"""The run's account: the contract's report fields, kept as counters by observing the run.

The invariant `rows_read = invalid + skipped + created + already_present + failed +
not_attempted` holds by construction: a row is read exactly when it is counted in one of
those six results.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from worker.rows import InvalidRow, Outcome

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_CANNOT_START = 2
EXIT_ABORTED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


@dataclass
class Report:
    """Counters of a run; an observer of it (see `worker.observe.RunObserver`)."""

    invalid: int = 0
    skipped: int = 0
    created: int = 0
    already_present: int = 0
    failed: int = 0
    not_attempted: int = 0
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    paused_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    exit_code: int | None = None
    dry_run: bool = False
    """Nothing was sent: the rows that would have been are the `not_attempted`."""

    @property
    def rows_read(self) -> int:
        return (
            self.invalid
            + self.skipped
            + self.created
            + self.already_present
            + self.failed
            + self.not_attempted
        )

    @property
    def elapsed_s(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    def rejected(self, row: InvalidRow) -> None:
        self.invalid += 1

    def outcome(self, outcome: Outcome) -> None:
        name = outcome.result.value
        setattr(self, name, getattr(self, name) + 1)

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        self.requests += 1
        if status == 429:
            self.rate_limited += 1
        if retry:
            self.retries += 1

    def paused(self, seconds: float, reason: str) -> None:
        self.paused_s += seconds

    def finish(self, exit_code: int) -> None:
        self.finished = time.monotonic()
        self.exit_code = exit_code

    def exit_status(self) -> int:
        """0 when every row is in its playlist, 1 when some were invalid or failed."""
        if self.invalid or self.failed or self.not_attempted:
            return EXIT_ROWS_FAILED
        return EXIT_OK

    def as_dict(self) -> dict[str, object]:
        """The contract's fields, in the contract's order, plus `paused_s` and `dry_run`."""
        return {
            "rows_read": self.rows_read,
            "invalid": self.invalid,
            "skipped": self.skipped,
            "created": self.created,
            "already_present": self.already_present,
            "failed": self.failed,
            "not_attempted": self.not_attempted,
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "exit_code": self.exit_code,
            "paused_s": round(self.paused_s, 3),
            "dry_run": self.dry_run,
        }

    def write(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a report even if we are killed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.as_dict(), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)


def prepare_destination(path: Path) -> None:
    """Check, before the run sends anything, that `Report.write` can put a report at
    `path`: its directory is made, and a file is created there and removed, as `write`
    will. Raises `OSError` (`IsADirectoryError` for a directory)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
