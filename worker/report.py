"""The run's account: the contract's report fields, counted from the run's events.

The invariant `rows_read = invalid + skipped + created + already_present + failed +
not_attempted + removed + present + missing` holds by construction: a row is read
exactly when it is counted in one of those results.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.events import Answered, Event, Skipped
from worker.files import check_replaceable, private_dir, write_atomic
from worker.pacer import Pause
from worker.rows import InvalidRow, Outcome


@dataclass
class Report:
    """Counters of a run; a sink of its events (`worker.events`)."""

    invalid: int = 0
    skipped: int = 0
    created: int = 0
    already_present: int = 0
    failed: int = 0
    not_attempted: int = 0
    removed: int = 0
    present: int = 0
    missing: int = 0
    requests: int = 0
    rate_limited: int = 0
    retries: int = 0
    paused_s: float = 0.0
    """Time paused: the pauses announced while running, the pacer's measure of the time
    actually spent paused once finished (a run stopped mid-pause did not wait it out)."""
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    exit_code: int | None = None
    dry_run: bool = False
    """Nothing was sent: the rows that would have been are the `not_attempted`."""
    extra: dict[str, object] = field(default_factory=dict)
    """Blocks beside the counts: the run id, the query's account."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, Outcome):
            name = str(event.result)  # a StrEnum's value, by str's own C method
            setattr(self, name, getattr(self, name) + 1)
        elif isinstance(event, Answered):
            _, rate_limited, _, retry = event
            self.requests += 1
            self.rate_limited += rate_limited
            self.retries += retry
        elif isinstance(event, Skipped):
            self.skipped += len(event.rows)
        elif isinstance(event, InvalidRow):
            self.invalid += 1
        elif isinstance(event, Pause):
            self.paused_s += event.pause_s

    @property
    def rows_done(self) -> int:
        """The rows the run is through with: all with a result but those a stop left
        unsent (in a dry run, which sends nothing, that is every row's result)."""
        return self.rows_read if self.dry_run else self.rows_read - self.not_attempted

    @property
    def rows_read(self) -> int:
        return (
            self.invalid
            + self.skipped
            + self.created
            + self.already_present
            + self.failed
            + self.not_attempted
            + self.removed
            + self.present
            + self.missing
        )

    @property
    def unfinished(self) -> bool:
        """Some rows are not where the operation puts them; in a dry run, which sends
        nothing, some rows could not be sent."""
        if self.dry_run:
            return bool(self.invalid)
        return bool(self.invalid or self.failed or self.not_attempted or self.missing)

    @property
    def elapsed_s(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    def finish(self, exit_code: int) -> None:
        self.finished = time.monotonic()
        self.exit_code = exit_code

    def as_dict(self) -> dict[str, object]:
        """The contract's fields, in the contract's order, then the tool's own."""
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
            "removed": self.removed,
            "present": self.present,
            "missing": self.missing,
            "paused_s": round(self.paused_s, 3),
            "dry_run": self.dry_run,
            **self.extra,
        }


def write_report(report: Mapping[str, object], path: Path) -> None:
    """Whole or not at all, even if we are killed, and never through a planted symlink
    (`worker.files.write_atomic`)."""
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


def prepare_destination(path: Path) -> None:
    """Check, before the run sends anything, that a report can be written at `path`: its
    directory is made (private), and what is there may be replaced. Raises `OSError`
    (`IsADirectoryError` for a directory) or `UnsafeFile`."""
    if path.is_dir():
        raise IsADirectoryError(21, "it is a directory", str(path))
    private_dir(path.parent)
    check_replaceable(path)
    probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    os.unlink(probe)
