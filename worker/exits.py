"""The process's exit status: the contract's codes, and the one function that picks one.

Scripts and cron jobs branch on these codes (`cli-contract.md`), so each means one thing
wherever the tool ends.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from worker.stop import Reason

EXIT_OK = 0
"""Every row is where the operation puts it."""
EXIT_ROWS_FAILED = 1
"""The run finished, but some rows were invalid, failed for good, or were left unsent."""
EXIT_CANNOT_START = 2
"""Bad options, missing keys, an unreadable input or journal, a query the API refuses."""
EXIT_ABORTED = 3
"""The API keeps refusing the keys, failures are systemic, no progress, a redirect or
an untrusted certificate, or a search that could not go on (docs/report.md#aborts-exit-3)."""
EXIT_OUTPUT_CLOSED = 141
"""Standard output was closed by its reader (`--dry-run | head`), as for SIGPIPE."""


def signal_exit(signum: int) -> int:
    """128 + the signal's number, as a shell reports a process ended by it: 129 SIGHUP,
    130 SIGINT, 143 SIGTERM."""
    return 128 + signal.Signals(signum)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a run ended, as far as its exit status is concerned."""

    reason: Reason | None
    signum: int | None = None
    unfinished_rows: bool = False
    """Some rows were invalid, failed for good, or were not attempted."""
    report_lost: bool = False
    """A report was asked for and could not be written."""


def exit_status(ending: Ending) -> int:
    reason = ending.reason
    if reason is Reason.SIGNAL:
        assert ending.signum is not None
        return signal_exit(ending.signum)
    if reason is Reason.OUTPUT:
        return EXIT_OUTPUT_CLOSED
    if reason in (Reason.INPUT, Reason.JOURNAL, Reason.QUERY_REFUSED):
        return EXIT_CANNOT_START
    if reason is not None:
        return EXIT_ABORTED
    if ending.unfinished_rows or ending.report_lost:
        return EXIT_ROWS_FAILED
    return EXIT_OK
