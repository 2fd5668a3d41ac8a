"""The runner in-process, over real HTTP to an in-process sandbox: cases the command
line cannot stage, such as a bug that kills a worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from support import TS

from worker.client import Client, Kind, Reply, classify_status
from worker.config import Credentials, Secret
from worker.journal import NoJournalLedger
from worker.pacer import Pacer
from worker.report import Report
from worker.rows import InvalidRow, Outcome, Row
from worker.runner import Fanout, Health, RetryPolicy, Run, RunSettings, Stop
from worker.sandbox import Sandbox


class Crasher:
    """An observer with a bug: it raises on one row's outcome."""

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id

    def rejected(self, row: InvalidRow) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        if outcome.row.session_id == self._session_id:
            raise RuntimeError("observer bug")

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        pass

    def paused(self, seconds: float, reason: str) -> None:
        pass


async def test_a_worker_that_crashes_stops_the_run_instead_of_stalling(
    make_sandbox: Callable[..., Awaitable[Sandbox]],
) -> None:
    sandbox = await make_sandbox()
    rows = [Row(1, f"s{i}", TS, "rum", "mem", i + 1) for i in range(50)]
    report = Report()
    warnings: list[str] = []
    fanout = Fanout([report, Crasher("s3")])
    async with Client(
        sandbox.base_url,
        Credentials(Secret("k"), Secret("a")),
        concurrency=2,
        timeout_s=5,
    ) as client:
        run = Run(
            iter(rows),
            client=client,
            pacer=Pacer(rate=None, on_pause=fanout.paused),
            ledger=NoJournalLedger(),
            observer=fanout,
            settings=RunSettings(2, RetryPolicy(max_stall_s=3600)),
            warn=lambda event, fields: warnings.append(event),
        )

        stop = await run.execute()

    assert stop is Stop.FATAL
    assert "observer bug" in str(run.cause)
    assert warnings == ["worker_crashed"]
    assert report.rows_read == 50
    assert report.created == len(sandbox.store)
    assert report.not_attempted == 50 - report.created


@pytest.mark.parametrize(
    ("answers", "stops_at"),
    [
        ("FFF", None),  # the window is not full yet
        ("FFFF", 4),
        ("SFFF", 4),  # 3 of 4 failed: the rate is reached
        ("SSFF", None),
        ("FFSSFF", None),  # the window holds S S F F: the first two failures left it
        ("FFSSFFF", 7),  # S F F F
        ("FRRRFFF", 7),  # 429s are neither successes nor failures
        ("BBBBBB", None),  # a row refused (404) is the row's failure, not the run's
        ("FFBF", 4),  # ... and counts in the window as an answer that is no failure
    ],
)
def test_health_aborts_when_the_window_is_mostly_failures(
    answers: str, stops_at: int | None
) -> None:
    """A window of 4 answers with an abort at 75% failures; F a 5xx, S a 201, R a 429,
    B a 404."""
    health = Health(RetryPolicy(failure_window=4, failure_rate_to_abort=0.75))
    kinds = {
        "F": (Kind.RETRYABLE, 503),
        "S": (Kind.ADDED, 201),
        "R": (Kind.RATE_LIMITED, 429),
        "B": (Kind.ROW_FAILED, 404),
    }
    stopped = None
    for number, answer in enumerate(answers, start=1):
        kind, status = kinds[answer]
        if health.record(Reply(kind, status, 1.0)) is Stop.SYSTEMIC:
            stopped = number
            break
    assert stopped == stops_at


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (201, Kind.ADDED),
        (200, Kind.ADDED),
        (400, Kind.ROW_FAILED),
        (404, Kind.ROW_FAILED),
        (401, Kind.KEYS_REFUSED),  # Datadog has answered 401 for a missing application key
        (403, Kind.KEYS_REFUSED),
        (408, Kind.RETRYABLE),
        (425, Kind.RETRYABLE),
        (429, Kind.RATE_LIMITED),
        (500, Kind.RETRYABLE),
        (503, Kind.RETRYABLE),
    ],
)
def test_what_each_status_means_for_the_row(status: int, kind: Kind) -> None:
    assert classify_status(status) is kind
