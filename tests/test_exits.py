"""The exit status is one pure function of how the run ended: the contract's table."""

from __future__ import annotations

import signal

import pytest

from worker.exits import Ending, exit_status
from worker.stop import Reason


@pytest.mark.parametrize(
    ("ending", "code"),
    [
        (Ending(None), 0),
        (Ending(None, unfinished_rows=True), 1),
        (Ending(None, report_lost=True), 1),
        (Ending(Reason.INPUT), 2),
        (Ending(Reason.JOURNAL, unfinished_rows=True), 2),
        (Ending(Reason.QUERY_REFUSED), 2),
        (Ending(Reason.KEYS_REFUSED), 3),
        (Ending(Reason.SYSTEMIC), 3),
        (Ending(Reason.STALLED), 3),
        (Ending(Reason.FATAL), 3),
        (Ending(Reason.SOURCE), 3),
        (Ending(Reason.SIGNAL, signal.SIGHUP), 129),
        (Ending(Reason.SIGNAL, signal.SIGINT, unfinished_rows=True), 130),
        (Ending(Reason.SIGNAL, signal.SIGTERM, report_lost=True), 143),
        (Ending(Reason.OUTPUT), 141),
    ],
)
def test_exit_status(ending: Ending, code: int) -> None:
    assert exit_status(ending) == code
