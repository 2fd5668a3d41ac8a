"""The run: input → rows → bounded queue → workers → outcomes → observers.

The reader runs in a thread and hands rows over in chunks, so a slow disk or a pipe on
standard input never blocks the event loop and memory stays flat. The queue is bounded,
so a slow API holds the reader back. Every row read ends in exactly one `Result`, which
is what keeps the report's invariant true even when a run is aborted or interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from worker.client import Client, Kind, Reply
from worker.input import InputError
from worker.journal import JournalError, Ledger
from worker.observe import RunObserver
from worker.pacer import Pacer
from worker.rows import InvalidRow, Outcome, Result, Row

T = TypeVar("T")

CHUNK = 256
"""Rows handed from the reader thread at a time: large enough to amortise the hop."""


class Stop(enum.Enum):
    """Why a run ended early; `None` means it ran to the end of its input."""

    KEYS_REFUSED = "the API keeps refusing the keys"
    SYSTEMIC = "nearly every request is failing"
    STALLED = "no progress"
    FATAL = "the API cannot be reached as configured"
    SIGNAL = "interrupted"
    INPUT = "the input became unreadable"
    JOURNAL = "the journal cannot be written"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one row, and when a run should give up as a whole."""

    max_attempts: int = 5
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0
    refusals_to_abort: int = 3
    """401/403 answers in a row (429s aside) that end the run: the keys are refused."""
    failure_window: int = 200
    failure_rate_to_abort: float = 0.95
    max_stall_s: float = 900.0

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter, so retries spread out rather than align."""
        return rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (failures - 1)))


@dataclass(slots=True)
class _InHand:
    """What a worker knows of the row in its hands, so a stop can account for it truly.

    One per worker, reused row after row."""

    row: Row | None = None
    attempts: int = 0
    reply: Reply | None = None
    sending: bool = False

    def take(self, row: Row) -> None:
        self.row, self.attempts, self.reply, self.sending = row, 0, None, False


@dataclass(frozen=True, slots=True)
class RunSettings:
    concurrency: int
    policy: RetryPolicy
    grace_s: float = 30.0
    queue_size: int | None = None


class Fanout:
    """Many observers presented as one, in a fixed order (the journal first)."""

    def __init__(self, observers: Sequence[RunObserver]) -> None:
        self._observers = tuple(observers)

    def rejected(self, row: InvalidRow) -> None:
        for observer in self._observers:
            observer.rejected(row)

    def outcome(self, outcome: Outcome) -> None:
        for observer in self._observers:
            observer.outcome(outcome)

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        for observer in self._observers:
            observer.response(status, latency_ms, retry=retry)

    def paused(self, seconds: float, reason: str) -> None:
        for observer in self._observers:
            observer.paused(seconds, reason)


class Health:
    """Watches for failures that are the run's, not a row's: refused keys, a dead API.

    A row the API refuses (a 4xx such as 404 for a playlist that does not exist) is the
    row's failure, and shows the API at work: it does not count towards a systemic
    abort. Otherwise a rerun that resends only the rows still failing, all of them for
    the same bad data, would abort every time (exit 3) and leave them unaccounted for.
    Keys valid for another site or organisation are refused (401/403), not 404."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._refusals = 0
        self._recent: deque[bool] = deque(maxlen=policy.failure_window)
        self._failures = 0

    def record(self, reply: Reply) -> Stop | None:
        kind = reply.kind
        if kind is Kind.FATAL:
            return Stop.FATAL
        if kind is Kind.RATE_LIMITED:
            return None
        if kind is Kind.KEYS_REFUSED:
            self._refusals += 1
            if self._refusals >= self._policy.refusals_to_abort:
                return Stop.KEYS_REFUSED
        else:
            self._refusals = 0
        failed = kind is Kind.RETRYABLE or kind is Kind.KEYS_REFUSED
        recent = self._recent
        if self._failures and len(recent) == recent.maxlen:
            self._failures -= recent[0]  # the oldest leaves the window as this one enters
        recent.append(failed)
        if not failed:
            return None  # a success never brings the run nearer an abort
        self._failures += 1
        window = self._policy.failure_window
        if len(recent) == window and self._failures >= window * self._policy.failure_rate_to_abort:
            return Stop.SYSTEMIC
        return None


class Run:
    """One run over a stream of rows; `await Run(...).execute()` returns why it stopped."""

    def __init__(
        self,
        rows: Iterator[Row | InvalidRow],
        *,
        client: Client,
        pacer: Pacer,
        ledger: Ledger,
        observer: RunObserver,
        settings: RunSettings,
        warn: Callable[[str, dict[str, object]], None] = lambda _e, _kw: None,
        rng: random.Random | None = None,
    ) -> None:
        self._rows = rows
        self._client = client
        self._pacer = pacer
        self._ledger = ledger
        self._observer = observer
        self._settings = settings
        self._warn = warn
        self._rng = rng or random.Random()
        self._health = Health(settings.policy)
        size = settings.queue_size or max(2 * settings.concurrency, CHUNK)
        self._queue: asyncio.Queue[Row] = asyncio.Queue(maxsize=size)
        self._stop: Stop | None = None
        self._stopped = asyncio.Event()
        self._hurry = asyncio.Event()
        self._finished_at = 0.0  # loop time of the last row that finished
        self._body_warned = False
        self._hands = [_InHand() for _ in range(settings.concurrency)]
        self._waiting: set[asyncio.Task[None]] = set()
        # Rows taken from the input but not yet queued, and a chunk being read: both
        # survive a stop, so every row read is accounted for.
        self._pending: deque[Row | InvalidRow] = deque()
        self._taking: asyncio.Future[list[Row | InvalidRow]] | None = None
        self._cause: str | None = None

    @property
    def cause(self) -> str | None:
        """What made the run stop early: the answer or input error behind the `Stop`."""
        return self._cause

    def hurry(self) -> None:
        """Stop at once: requests in flight are abandoned and counted as not attempted."""
        self.request_stop(Stop.SIGNAL)
        self._hurry.set()

    def request_stop(self, reason: Stop, cause: str | None = None) -> None:
        """Stop taking new rows; the first reason given is the one reported."""
        if self._stop is None:
            self._stop, self._cause = reason, cause
        self._stopped.set()

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        """A worker that dies of a bug must stop the run, not leave it to stall."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self._warn(
            "worker_crashed", {"error": repr(error), "note": "this is a bug; please report it"}
        )
        self.request_stop(Stop.FATAL, f"internal error: {error!r}")

    async def execute(self) -> Stop | None:
        workers = [asyncio.create_task(self._worker(hand)) for hand in self._hands]
        for worker in workers:
            worker.add_done_callback(self._worker_ended)
        reader = asyncio.create_task(self._read())
        watchdog = asyncio.create_task(self._watch_stall())
        try:
            done_reading = await self._first(reader, self._stopped)
            if done_reading:
                await self._first(asyncio.create_task(self._queue.join()), self._stopped)
            if self._stop is not None:
                await self._wind_down(reader)
        finally:
            for task in (reader, watchdog, *workers):
                task.cancel()
            await asyncio.gather(reader, watchdog, *workers, return_exceptions=True)
            self._account_unsent()
        if self._stop not in (None, Stop.SIGNAL, Stop.INPUT, Stop.JOURNAL):
            # An abort still gives a full account: what was never sent is not attempted.
            await self._drain_input()
        return self._stop

    async def _first(self, task: asyncio.Future[Any], event: asyncio.Event) -> bool:
        """Wait for `task` or `event`; True if the task finished first (its exception,
        if any, is raised)."""
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()
            return True
        return False

    async def _wind_down(self, reader: asyncio.Task[None]) -> None:
        """Let requests in flight finish within the grace period; the rest are not attempted."""
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        self._account_queued()
        for task in tuple(self._waiting):
            task.cancel()  # waiting on the pacer or a backoff: nothing in flight to lose
        joined = asyncio.create_task(self._queue.join())
        hurried = asyncio.create_task(self._hurry.wait())
        await asyncio.wait(
            {joined, hurried}, timeout=self._settings.grace_s, return_when=asyncio.FIRST_COMPLETED
        )
        joined.cancel()
        hurried.cancel()

    def _account_queued(self) -> None:
        while not self._queue.empty():
            row = self._queue.get_nowait()
            self._observer.outcome(Outcome(row, Result.NOT_ATTEMPTED))
            self._queue.task_done()

    def _account_unsent(self) -> None:
        self._account_queued()
        while self._pending:
            self._leave_unsent(self._pending.popleft())
        for hand in self._hands:
            if hand.row is not None:
                self._observer.outcome(self._unsent(hand.row, hand))
                hand.row = None

    def _leave_unsent(self, item: Row | InvalidRow) -> None:
        """Account for an item read but never queued: counted, never sent. A row the run
        would have skipped (done before, or a repeat) is still skipped, not unsent."""
        if isinstance(item, InvalidRow):
            self._observer.rejected(item)
            return
        try:
            unsent = self._ledger.admit(item)
        except JournalError:
            unsent = True  # the journal is why the run stopped: the row was not sent
        self._observer.outcome(Outcome(item, Result.NOT_ATTEMPTED if unsent else Result.SKIPPED))

    def _start_taking(self) -> asyncio.Future[list[Row | InvalidRow]]:
        """Read the next chunk in a daemon thread: a read blocked on a quiet standard input
        must not keep the process alive after a signal, as the loop's executor would."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Row | InvalidRow]] = loop.create_future()

        def take() -> None:
            try:
                chunk = list(itertools.islice(self._rows, CHUNK))
            except BaseException as exc:  # handed to the awaiting task, as an executor would
                settle = functools.partial(future.set_exception, exc)
            else:
                settle = functools.partial(future.set_result, chunk)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(settle)

        threading.Thread(target=take, name="input-reader", daemon=True).start()
        return future

    async def _next_chunk(self) -> list[Row | InvalidRow]:
        """The next chunk from the input. A stop that cancels the wait leaves the chunk in
        `_taking` for `_drain_input`, so no row read is lost and the input is never read
        by two threads at once."""
        if self._taking is None:
            self._taking = self._start_taking()
        chunk = await asyncio.shield(self._taking)
        self._taking = None
        return chunk

    async def _read(self) -> None:
        while True:
            if not self._pending:
                try:
                    chunk = await self._next_chunk()
                except InputError as exc:
                    self.request_stop(Stop.INPUT, str(exc))
                    return
                if not chunk:
                    return
                self._pending.extend(chunk)
            item = self._pending.popleft()
            if isinstance(item, InvalidRow):
                self._observer.rejected(item)
                continue
            try:
                admitted = self._ledger.admit(item)
            except JournalError as exc:
                self._pending.appendleft(item)  # not sent: the stop accounts for it
                self.request_stop(Stop.JOURNAL, str(exc))
                return
            if not admitted:
                self._observer.outcome(Outcome(item, Result.SKIPPED))
            else:
                if not self._queue.full():
                    self._queue.put_nowait(item)  # no coroutine for the common case
                    continue
                try:
                    await self._queue.put(item)
                except asyncio.CancelledError:
                    # Admitted, never queued: not attempted (`_leave_unsent` would ask the
                    # ledger again, which now knows it, and call it skipped).
                    self._observer.outcome(Outcome(item, Result.NOT_ATTEMPTED))
                    raise

    async def _drain_input(self) -> None:
        """After an abort, read the rest of the input so every row is accounted for. A
        second signal cuts this short (a quiet standard input may never end)."""
        while True:
            reading = asyncio.ensure_future(self._next_chunk())
            try:
                if not await self._first(reading, self._hurry):
                    reading.cancel()
                    return
            except InputError as exc:
                self._cause = "; ".join(filter(None, (self._cause, f"then the input: {exc}")))
                return
            chunk = reading.result()
            if not chunk:
                return
            for item in chunk:
                self._leave_unsent(item)

    async def _watch_stall(self) -> None:
        """End a run that has made no progress for `max_stall_s` (a 429 storm, a dead API)."""
        # A deadline, not an event per finished row: this costs nothing on the hot path.
        loop = asyncio.get_running_loop()
        limit = self._settings.policy.max_stall_s
        self._finished_at = loop.time()
        while True:
            await asyncio.sleep(self._finished_at + limit - loop.time())
            if loop.time() - self._finished_at < limit:
                continue
            busy = any(hand.row is not None for hand in self._hands)
            if busy or not self._queue.empty():  # a slow input is no stall
                self.request_stop(Stop.STALLED, f"no row finished in {limit:g} s")
                # Nothing finished in all that time: a --grace for the requests in flight
                # would only make the abort later than the user's --max-stall.
                self._hurry.set()
                return
            self._finished_at = loop.time()

    async def _worker(self, hand: _InHand) -> None:
        queue, clock = self._queue, asyncio.get_running_loop().time
        while True:
            row = await queue.get()
            hand.take(row)
            try:
                outcome = await self._send(row, hand)
                hand.row = None
                self._observer.outcome(outcome)
                self._finished_at = clock()
            finally:
                queue.task_done()

    async def _send(self, row: Row, state: _InHand) -> Outcome:
        """Attempt one row until it is added, fails for good, or the run stops."""
        failures = 0
        lost: str | None = None  # an earlier answer lost after the server may have applied it
        while True:
            ticket = self._pacer.try_acquire()  # far from the limit: at once, no coroutine
            if ticket is None:
                ticket = await self._interruptible(self._pacer.acquire())
            if self._stop is not None:
                self._pacer.settle(ticket, None, None, None)  # nothing sent
                return self._unsent(row, state)
            reply: Reply | None = None
            state.sending = True
            started = time.perf_counter()
            try:
                reply = await self._client.add(row)
            except asyncio.CancelledError:
                # Abandoned at a stop, perhaps after the server had it: a request all the same.
                state.attempts += 1
                latency_ms = (time.perf_counter() - started) * 1000
                self._observer.response(None, latency_ms, retry=state.attempts > 1)
                raise
            finally:
                self._pacer.settle(
                    ticket,
                    reply.status if reply is not None else None,
                    reply.rate_limit if reply is not None else None,
                    reply.retry_after if reply is not None else None,
                )
            state.sending = False
            state.attempts += 1
            state.reply = reply
            self._observer.response(reply.status, reply.latency_ms, retry=state.attempts > 1)
            stop = self._health.record(reply)
            if stop is not None:
                self.request_stop(stop, reply.error)
            if reply.kind is Kind.ADDED:
                self._check_body(reply)
                if reply.status == 201:
                    return self._final(row, Result.CREATED, reply, state.attempts)
                return self._final(row, Result.ALREADY_PRESENT, reply, state.attempts, lost)
            if reply.kind is Kind.RATE_LIMITED:
                continue  # the pacer holds every worker; a 429 is never a row's failure
            if reply.kind is Kind.FATAL:
                return self._unsent(row, state)  # nothing reached the API
            if reply.kind is Kind.ROW_FAILED:
                return self._final(row, Result.FAILED, reply, state.attempts)
            # Retryable, or refused: a refusal is the keys' failure, not the row's. Refused
            # keys soon stop the run (Health), leaving the row not attempted; if other rows
            # get through meanwhile, this one fails once its attempts are spent.
            if reply.maybe_applied:
                lost = reply.error
            failures += 1
            if failures >= self._settings.policy.max_attempts:
                return self._final(row, Result.FAILED, reply, state.attempts, lost)
            await self._interruptible(
                asyncio.sleep(self._settings.policy.backoff(failures, self._rng))
            )

    async def _interruptible(self, waiting: Awaitable[T]) -> T:
        """Await something that sends nothing, so that a stop may cancel it at once."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            return await waiting
        finally:
            self._waiting.discard(task)

    def _final(
        self, row: Row, result: Result, reply: Reply, attempts: int, lost: str | None = None
    ) -> Outcome:
        error = None if result.done else reply.error
        note = None
        if lost is not None:
            note = f"an earlier attempt's answer was lost ({lost}): it may have added the session"
        return Outcome(row, result, reply.status, attempts, reply.latency_ms, error, note)

    def _unsent(self, row: Row, state: _InHand) -> Outcome:
        """A row the run stopped before finishing: not attempted, with what was known."""
        reply = state.reply
        if state.sending:
            # Abandoned by a second signal, at the end of --grace, or at a stall.
            error: str | None = "in flight when the run stopped; it may have been added"
        elif reply is not None:
            error = f"the run stopped before the row succeeded; last answer: {reply.error}"
        else:
            error = None
        return Outcome(
            row,
            Result.NOT_ATTEMPTED,
            reply.status if reply else None,
            state.attempts,
            reply.latency_ms if reply else 0.0,
            error,
        )

    def _check_body(self, reply: Reply) -> None:
        if reply.body_problem and not self._body_warned:
            self._body_warned = True
            self._warn(
                "unexpected_success_body",
                {
                    "status": reply.status,
                    "detail": reply.body_problem,
                    "note": "the session was added; further such answers are counted, not logged",
                },
            )
