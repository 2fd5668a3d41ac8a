"""The run: source → admission → bounded queue → workers → events → sinks.

Everything runs in one `asyncio.TaskGroup`: a feeder takes chunks from the source,
admits each row (repeats and the journal's done rows are skipped) and queues it; workers
hand each queued row to the send stage; a watchdog ends a run that makes no progress.
The queue is bounded, so a slow API holds the source back and memory stays flat.

Every row read ends in exactly one event, `InvalidRow` or `Outcome`, whether the run
finishes, aborts or is interrupted: that is what keeps the report's invariant true. A
row is accounted for wherever the stop finds it: read ahead, between source and queue,
queued, or in a worker's hands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.chunks import Chunk, Item
from worker.deliver import Hand, unsent
from worker.events import Sink, Skipped, of_kind
from worker.handoff import Handoff
from worker.input import InputError
from worker.journal import JournalError
from worker.rows import InvalidRow, Outcome, Result, Row
from worker.stop import Phase, Reason, StopState


class SourceFailed(Exception):
    """A source (a search) that cannot go on: the rows it gave are still sent, then the
    run ends for `reason`, saying how far the source got."""

    def __init__(self, message: str, reason: Reason = Reason.SOURCE) -> None:
        super().__init__(message)
        self.reason = reason
        """Why the run ends: the search failed, stalled, or was refused outright."""


class Source(Protocol):
    """Chunks of rows, in order (`worker.chunks.ThreadedChunks` for files and stdin)."""

    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    def read_ahead(self) -> list[Item]:
        """Rows already read but not yet handed out (accounted for at a stop)."""
        ...


Admit = Callable[[Sequence[Row]], Sequence[bool]]
"""Whether to send each of the rows (False: skipped, a repeat or done before), decided
for a chunk at a time so the journal can look them up at once. May raise `JournalError`."""
_UNDECIDED = None
Deliver = Callable[[Row, Hand], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Settings:
    concurrency: int
    grace_s: float = 30.0
    max_stall_s: float = 900.0
    queue_size: int | None = None


class Pipeline:
    """One run over `source`; `await Pipeline(...).run()` returns when every row read
    has its event. Why it stopped early, if it did, is in `stop`."""

    def __init__(
        self,
        source: Source,
        *,
        admit: Admit,
        deliver: Deliver,
        sink: Sink,
        stop: StopState,
        settings: Settings,
    ) -> None:
        self._source = source
        self._admit = admit
        self._deliver = deliver
        self._sink = sink
        self._stop = stop
        self._settings = settings
        size = settings.queue_size or max(2 * settings.concurrency, 256)
        self._queue: Handoff[Row] = Handoff(size)
        self._hands = [Hand() for _ in range(settings.concurrency)]
        # Rows taken from the source but not yet queued, each with whether it was admitted
        # (None: not decided yet): they survive a stop.
        self._pending: deque[tuple[Item, bool | None]] = deque()
        self._finished_at = 0.0  # loop time of the last row that finished
        self._source_failure: SourceFailed | None = None

    async def run(self) -> None:
        stop = self._stop
        try:
            async with asyncio.TaskGroup() as group:
                feeder = group.create_task(self._feed(), name="feeder")
                workers = [
                    group.create_task(self._work(hand), name="worker") for hand in self._hands
                ]
                watchdog = group.create_task(self._watch_stall(), name="watchdog")
                await _until_first(self._drained(feeder), stop.reached(Phase.STOPPING))
                if stop.phase:
                    await self._wind_down(feeder, workers)
                for task in (feeder, watchdog, *workers):
                    task.cancel()
        except* Exception as crashed:  # a bug in a stage: stop, and still account for all
            error = crashed.exceptions[0]
            stop.request(Reason.FATAL, f"internal error: {error!r}", at_once=True)
        finally:
            self._account_unsent()
        if stop.reason is not None and stop.reason.accounts_for_the_rest:
            await _until_first(self._account_the_rest(), stop.reached(Phase.QUITTING))

    async def _drained(self, feeder: asyncio.Task[None]) -> None:
        """The source is exhausted and every queued row has its result."""
        await asyncio.wait([feeder])
        await self._queue.join()
        failure = self._source_failure
        if failure is not None:
            self._stop.request(failure.reason, str(failure))

    async def _wind_down(
        self, feeder: asyncio.Task[None], workers: list[asyncio.Task[None]]
    ) -> None:
        """Stop reading; let requests in flight finish within the grace period."""
        feeder.cancel()
        await asyncio.wait([feeder])
        self._account_queued()
        sending = []
        for hand, worker in zip(self._hands, workers, strict=True):
            if hand.sending:
                sending.append(worker)
            else:
                worker.cancel()  # waiting on the pacer, a backoff or the queue: nothing to lose
        if sending:
            await _until_first(
                asyncio.wait(sending, timeout=self._settings.grace_s),
                self._stop.reached(Phase.HALTING),
            )

    async def _feed(self) -> None:
        pending, queue, sink, admit = self._pending, self._queue, self._sink, self._admit
        try:
            async for chunk in self._source:
                rows = [item for item in chunk if type(item) is Row]
                try:
                    verdicts = iter(admit(rows))
                except JournalError as exc:
                    pending.extend((item, _UNDECIDED) for item in chunk)  # the stop counts them
                    self._stop.request(Reason.JOURNAL, str(exc))
                    return
                skipped: list[Row] = []
                for item in chunk:
                    if type(item) is InvalidRow:
                        pending.append((item, _UNDECIDED))
                    elif next(verdicts):
                        pending.append((item, True))
                    else:
                        skipped.append(item)  # type: ignore[arg-type]
                if skipped:
                    sink(Skipped(skipped))
                while pending:
                    item, _ = pending.popleft()  # admitted, or invalid
                    if type(item) is InvalidRow:
                        sink(item)
                        continue
                    assert isinstance(item, Row)
                    if not queue.full():
                        queue.put_nowait(item)  # no coroutine for the common case
                    else:
                        try:
                            await queue.put(item)
                        except asyncio.CancelledError:
                            sink(Outcome(item, Result.NOT_ATTEMPTED))  # admitted, never queued
                            raise
        except InputError as exc:
            self._stop.request(Reason.INPUT, str(exc))
        except SourceFailed as exc:
            self._source_failure = exc  # what it gave is still sent

    async def _work(self, hand: Hand) -> None:
        queue, deliver, stop = self._queue, self._deliver, self._stop
        sink = of_kind(self._sink, Outcome)  # every row ends in one
        clock = asyncio.get_running_loop().time
        while True:
            row = queue.take()
            if row is None:
                await queue.wait()
                continue
            hand.take(row)
            outcome = await deliver(row, hand)
            hand.row = None
            sink(outcome)
            self._finished_at = clock()
            queue.done()
            if stop.phase:
                return  # winding down: this worker's last row is done

    async def _watch_stall(self) -> None:
        """End a run that has made no progress for `max_stall_s` (a 429 storm, a dead API).
        A deadline, not an event per finished row: this costs nothing on the hot path."""
        loop = asyncio.get_running_loop()
        limit = self._settings.max_stall_s
        self._finished_at = loop.time()
        while True:
            await asyncio.sleep(self._finished_at + limit - loop.time())
            if loop.time() - self._finished_at < limit:
                continue
            busy = any(hand.row is not None for hand in self._hands)
            if busy or self._queue:  # a slow input is no stall
                # Nothing finished in all that time: a --grace for the requests in flight
                # would only make the abort later than the user's --max-stall.
                self._stop.request(Reason.STALLED, f"no row finished in {limit:g} s", at_once=True)
                return
            self._finished_at = loop.time()

    def _account_queued(self) -> None:
        for row in self._queue.drain():
            self._sink(Outcome(row, Result.NOT_ATTEMPTED))

    def _account_unsent(self) -> None:
        self._account_queued()
        self._pending.extend((item, _UNDECIDED) for item in self._source.read_ahead())
        while self._pending:
            self._leave_unsent(*self._pending.popleft())
        for hand in self._hands:
            if hand.row is not None:
                self._sink(unsent(hand))
                hand.row = None

    def _leave_unsent(self, item: Item, admitted: bool | None = _UNDECIDED) -> None:
        """An item read but never queued: counted, never sent. A row the run would have
        skipped (done before, or a repeat) is still skipped, not unsent."""
        if type(item) is InvalidRow:
            self._sink(item)
            return
        assert isinstance(item, Row)
        if admitted is None:
            try:
                admitted = self._admit((item,))[0]
            except JournalError:
                admitted = True  # the journal is why the run stopped: the row was not sent
        self._sink(Outcome(item, Result.NOT_ATTEMPTED) if admitted else Skipped([item]))

    async def _account_the_rest(self) -> None:
        """After an abort, read the rest of the input so every row is accounted for."""
        try:
            async for chunk in self._source:
                for item in chunk:
                    self._leave_unsent(item)
        except (InputError, SourceFailed) as exc:
            self._stop.add_cause(f"then the input: {exc}")


async def _until_first(*waits: Awaitable[object]) -> None:
    """Wait for the first of `waits` to finish, cancel the rest; re-raise its error."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
