"""The pipeline's stages in process: a list for a source, a fake send stage.

What matters here is the accounting, not the wire: every row read ends in exactly one
event, however the run stops (the end of the input, a signal, an abort, a broken journal
or input, a crash), and a stop is decided once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from support import TS

from worker.chunks import ThreadedChunks
from worker.deliver import Hand
from worker.events import Event, Skipped
from worker.input import InputError
from worker.journal import JournalError
from worker.pipeline import Pipeline, Settings, SourceFailed
from worker.rows import InvalidRow, Outcome, Result, Row
from worker.stop import Phase, Reason, StopState


def make_rows(n: int) -> list[Row]:
    return [Row(1, f"s{i}", TS + i, "rum", "in.csv", i + 2) for i in range(n)]


class Recorder:
    """A sink that keeps every event; `enough` is set once it holds `expect` of them."""

    def __init__(self, expect: int = 0) -> None:
        self.events: list[Event] = []
        self.enough = asyncio.Event()
        self._expect = expect

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if self._expect and len(self.events) >= self._expect:
            self.enough.set()

    def results(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for event in self.events:
            if isinstance(event, Outcome):
                counts[event.result.value] += 1
            elif isinstance(event, InvalidRow):
                counts["invalid"] += 1
            elif isinstance(event, Skipped):
                counts["skipped"] += len(event.rows)
        return counts

    def accounted(self) -> list[tuple[str, int]]:
        """(source, line) of every row an event accounts for, sorted."""
        places: list[tuple[str, int]] = []
        for event in self.events:
            if isinstance(event, Outcome):
                places.append((event.row.source, event.row.line))
            elif isinstance(event, InvalidRow):
                places.append((event.source, event.line))
            elif isinstance(event, Skipped):
                places += [(row.source, row.line) for row in event.rows]
        return sorted(places)


def once(items: Sequence[Row | InvalidRow]) -> list[tuple[str, int]]:
    return sorted((item.source, item.line) for item in items)


async def created(row: Row, hand: Hand) -> Outcome:
    hand.attempts = 1
    return Outcome(row, Result.CREATED, 201, 1)


def pipeline(
    items: Sequence[Row | InvalidRow] | Iterator[Row | InvalidRow],
    deliver: object = created,
    *,
    admit: object = lambda rows: [True] * len(rows),
    stop: StopState | None = None,
    sink: Recorder | None = None,
    concurrency: int = 4,
    **settings: float,
) -> tuple[Pipeline, StopState, Recorder]:
    stop = stop or StopState()
    sink = sink or Recorder()
    source = ThreadedChunks(iter(items), size=7)
    run = Pipeline(
        source,
        admit=admit,  # type: ignore[arg-type]
        deliver=deliver,  # type: ignore[arg-type]
        sink=sink,
        stop=stop,
        settings=Settings(concurrency=concurrency, queue_size=8, **settings),  # type: ignore[arg-type]
    )
    return run, stop, sink


async def test_every_row_is_sent_once_and_accounted_once() -> None:
    items: list[Row | InvalidRow] = [*make_rows(100), InvalidRow("in.csv", 500, "bad", {})]
    run, stop, sink = pipeline(items)
    await run.run()
    assert stop.reason is None
    assert sink.results() == {"created": 100, "invalid": 1}
    assert sink.accounted() == once(items)


async def test_rows_the_admission_refuses_are_skipped_not_sent() -> None:
    sent: list[Row] = []

    async def deliver(row: Row, hand: Hand) -> Outcome:
        sent.append(row)
        return Outcome(row, Result.CREATED)

    items = make_rows(50)
    run, _, sink = pipeline(items, deliver, admit=lambda rows: [row.line % 2 == 0 for row in rows])
    await run.run()
    assert sink.results() == {"created": 25, "skipped": 25}
    assert all(row.line % 2 == 0 for row in sent)


async def test_a_journal_that_fails_stops_the_run_and_the_rest_is_still_counted() -> None:
    def admit(rows: Sequence[Row]) -> list[bool]:
        if any(row.line >= 30 for row in rows):
            raise JournalError("disk full")
        return [True] * len(rows)

    items = make_rows(200)
    run, stop, sink = pipeline(items, admit=admit)
    await run.run()
    assert stop.reason is Reason.JOURNAL
    assert stop.cause == "disk full"
    counts = sink.results()
    assert counts["created"] <= 28  # lines 2..29 were admitted; the queued ones stay unsent
    assert counts["created"] + counts["not_attempted"] == 200
    assert sink.accounted() == once(items)


def failing_input(rows: list[Row], at: int) -> Iterator[Row]:
    for i, row in enumerate(rows):
        if i == at:
            raise InputError("in.csv: the file became unreadable")
        yield row


async def test_an_input_that_fails_stops_the_run_with_what_was_read_counted() -> None:
    run, stop, sink = pipeline(failing_input(make_rows(100), 40))
    await run.run()
    assert stop.reason is Reason.INPUT
    assert sink.results() == {"created": 40}  # every row read before the failure
    assert len(sink.accounted()) == len(set(sink.accounted()))


@pytest.mark.parametrize("reason", [Reason.SOURCE, Reason.STALLED])
async def test_a_source_that_cannot_go_on_still_sends_what_it_gave(reason: Reason) -> None:
    """A search that failed, or stalled (--max-stall), ends the run for its own reason."""

    def source() -> Iterator[Row]:
        yield from make_rows(20)
        raise SourceFailed("the search timed out three times", reason)

    run, stop, sink = pipeline(source())
    await run.run()
    assert (stop.reason, stop.cause) == (reason, "the search timed out three times")
    assert sink.results() == {"created": 20}


class Gate:
    """A send stage that holds every row until the test opens the gate; `sending` is set
    once `expect` rows are held."""

    def __init__(self, expect: int = 1) -> None:
        self.opened = asyncio.Event()
        self.sending = asyncio.Event()
        self.in_flight = 0
        self._expect = expect

    async def deliver(self, row: Row, hand: Hand) -> Outcome:
        hand.sending = True
        self.in_flight += 1
        if self.in_flight >= self._expect:
            self.sending.set()
        await self.opened.wait()
        hand.sending = False
        return Outcome(row, Result.CREATED, 201, 1)


async def test_a_graceful_stop_lets_requests_in_flight_finish() -> None:
    gate = Gate(expect=3)
    items = make_rows(100)
    run, stop, sink = pipeline(items, gate.deliver, concurrency=3, grace_s=60)
    task = asyncio.create_task(run.run())
    await gate.sending.wait()
    stop.request(Reason.SIGNAL, "SIGTERM")
    gate.opened.set()
    await task
    counts = sink.results()
    assert counts["created"] == 3
    assert counts["not_attempted"] == sum(counts.values()) - 3
    assert len(sink.accounted()) == len(set(sink.accounted()))


async def test_a_second_signal_abandons_requests_in_flight() -> None:
    gate = Gate()
    run, stop, sink = pipeline(make_rows(100), gate.deliver, concurrency=2, grace_s=60)
    task = asyncio.create_task(run.run())
    await gate.sending.wait()
    stop.interrupt("SIGINT")
    stop.interrupt("SIGINT")
    await task
    assert stop.phase is Phase.HALTING
    unsent = [e for e in sink.events if isinstance(e, Outcome)]
    assert {e.result for e in unsent} == {Result.NOT_ATTEMPTED}
    assert any(e.error and "in flight" in e.error for e in unsent)


async def test_an_abort_reads_and_counts_the_rest_of_the_input() -> None:
    async def refuse(row: Row, hand: Hand) -> Outcome:
        stop.request(Reason.KEYS_REFUSED, "HTTP 403")
        return Outcome(row, Result.NOT_ATTEMPTED)

    stop = StopState()
    items = make_rows(500)
    run, _, sink = pipeline(items, refuse, stop=stop)
    await run.run()
    assert stop.reason is Reason.KEYS_REFUSED
    assert sink.accounted() == once(items)
    assert sink.results() == {"not_attempted": 500}


async def test_a_crash_in_a_stage_stops_the_run_and_loses_no_row() -> None:
    async def crash(row: Row, hand: Hand) -> Outcome:
        if row.line == 10:
            raise ValueError("a bug")
        return Outcome(row, Result.CREATED)

    items = make_rows(60)
    run, stop, sink = pipeline(items, crash)
    await run.run()
    assert stop.reason is Reason.FATAL
    assert "a bug" in str(stop.cause)
    assert sink.accounted() == once(items)


async def test_no_progress_for_max_stall_aborts() -> None:
    gate = Gate()  # never opened
    items = make_rows(30)
    run, stop, sink = pipeline(items, gate.deliver, max_stall_s=0.05)
    await run.run()
    assert stop.reason is Reason.STALLED
    assert sink.accounted() == once(items)


def test_the_first_reason_is_kept_and_each_signal_goes_a_phase_further() -> None:
    stop = StopState()
    stop.request(Reason.SYSTEMIC, "5xx")
    stop.request(Reason.SIGNAL, "SIGINT")
    assert (stop.reason, stop.cause, stop.phase) == (Reason.SYSTEMIC, "5xx", Phase.STOPPING)
    stop.interrupt("SIGINT")
    assert stop.phase is Phase.HALTING
    stop.interrupt("SIGINT")
    stop.interrupt("SIGINT")
    assert (stop.reason, stop.phase) == (Reason.SYSTEMIC, Phase.QUITTING)


async def test_a_signal_after_an_abort_ends_the_counting_of_the_rest() -> None:
    def endless() -> Iterator[Row]:
        line = 0
        while True:
            line += 1
            yield Row(1, f"s{line}", TS, "rum", "stdin", line)

    async def refuse(row: Row, hand: Hand) -> Outcome:
        stop.request(Reason.KEYS_REFUSED, "HTTP 403", at_once=True)
        return Outcome(row, Result.NOT_ATTEMPTED)

    stop = StopState()
    sink = Recorder(expect=1000)
    run, _, _ = pipeline(endless(), refuse, stop=stop, sink=sink)
    task = asyncio.create_task(run.run())
    await sink.enough.wait()  # counting the endless rest
    stop.interrupt("SIGINT")
    await task
    assert stop.phase is Phase.QUITTING
    assert len(sink.accounted()) == len(set(sink.accounted()))


@pytest.mark.parametrize("reason", list(Reason))
def test_only_a_signal_an_input_or_a_closed_output_leaves_the_rest_unread(
    reason: Reason,
) -> None:
    expected = reason not in (Reason.SIGNAL, Reason.INPUT, Reason.OUTPUT)
    assert reason.accounts_for_the_rest is expected


async def test_a_sink_that_crashes_stops_the_run_and_the_rest_is_accounted() -> None:
    recorder = Recorder()

    def crashing(event: Event) -> None:
        if isinstance(event, Outcome) and event.row.session_id == "s3":
            raise RuntimeError("sink bug")
        recorder(event)

    items = make_rows(50)
    run, stop, _ = pipeline(items, sink=crashing)  # type: ignore[arg-type]
    await run.run()
    assert stop.reason is Reason.FATAL
    assert "sink bug" in str(stop.cause)
    assert len(recorder.accounted()) == 49  # every row but the one whose event crashed
