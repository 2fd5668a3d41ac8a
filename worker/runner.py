"""The run: input → rows → bounded queue → workers → outcomes → observers.

The reader runs in a thread and hands rows over in chunks, so a slow disk or a pipe on
standard input never blocks the event loop and memory stays flat. The queue is bounded,
so a slow API holds the reader back. Every row read ends in exactly one `Result`, which
is what keeps the report's invariant true even when a run is aborted or interrupted.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from worker.client import Client, Kind, Reply
from worker.journal import Ledger
from worker.observe import RunObserver
from worker.pacer import Pacer
from worker.reader import InputError
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one row, and when a run should give up as a whole."""

    max_attempts: int = 5
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0
    auth_failures_to_abort: int = 3
    failure_window: int = 200
    failure_rate_to_abort: float = 0.95
    max_stall_s: float = 900.0

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter, so retries spread out rather than align."""
        return rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (failures - 1)))


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
    """Watches for failures that are the run's, not a row's: refused keys, a dead API."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._auth_refusals = 0
        self._recent: deque[bool] = deque(maxlen=policy.failure_window)
        self._failures = 0

    def record(self, reply: Reply) -> Stop | None:
        if reply.kind is Kind.FATAL:
            return Stop.FATAL
        if reply.kind is Kind.RATE_LIMITED:
            return None
        if reply.kind is Kind.KEYS_REFUSED:
            self._auth_refusals += 1
            if self._auth_refusals >= self._policy.auth_failures_to_abort:
                return Stop.KEYS_REFUSED
        else:
            self._auth_refusals = 0
        failed = reply.kind is not Kind.ADDED
        if len(self._recent) == self._recent.maxlen:
            self._failures -= self._recent[0]
        self._recent.append(failed)
        self._failures += failed
        window = self._policy.failure_window
        if (
            len(self._recent) == window
            and self._failures >= window * self._policy.failure_rate_to_abort
        ):
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
        owns: Callable[[Row | InvalidRow], bool] = lambda _: True,
        warn: Callable[[str, dict[str, object]], None] = lambda _e, _kw: None,
        rng: random.Random | None = None,
    ) -> None:
        self._rows = rows
        self._client = client
        self._pacer = pacer
        self._ledger = ledger
        self._observer = observer
        self._settings = settings
        self._owns = owns
        self._warn = warn
        self._rng = rng or random.Random()
        self._health = Health(settings.policy)
        size = settings.queue_size or max(2 * settings.concurrency, CHUNK)
        self._queue: asyncio.Queue[Row] = asyncio.Queue(maxsize=size)
        self._stop: Stop | None = None
        self._stopped = asyncio.Event()
        self._hurry = asyncio.Event()
        self._progress = asyncio.Event()
        self._body_warned = False
        self._in_hand: set[Row] = set()
        self._waiting: set[asyncio.Task[None]] = set()
        self._input_error: str | None = None

    @property
    def stop_reason(self) -> Stop | None:
        return self._stop

    @property
    def input_error(self) -> str | None:
        """Why the input became unreadable mid-run (with `Stop.INPUT`)."""
        return self._input_error

    def hurry(self) -> None:
        """Stop at once: requests in flight are abandoned and counted as not attempted."""
        self.request_stop(Stop.SIGNAL)
        self._hurry.set()

    def request_stop(self, reason: Stop) -> None:
        """Stop taking new rows; the first reason given is the one reported."""
        if self._stop is None:
            self._stop = reason
        self._stopped.set()

    async def execute(self) -> Stop | None:
        workers = [asyncio.create_task(self._worker()) for _ in range(self._settings.concurrency)]
        reader = asyncio.create_task(self._read())
        watchdog = asyncio.create_task(self._watch_stall())
        try:
            done_reading = await self._first(reader, self._stopped)
            if done_reading:
                await self._first(asyncio.create_task(self._queue.join()), self._stopped)
            if self._stop is not None:
                await self._wind_down(reader, workers)
        finally:
            for task in (reader, watchdog, *workers):
                task.cancel()
            await asyncio.gather(reader, watchdog, *workers, return_exceptions=True)
            self._account_unsent()
        if self._stop not in (None, Stop.SIGNAL, Stop.INPUT):
            # An abort still gives a full account: what was never sent is not attempted.
            await self._drain_input()
        return self._stop

    async def _first(self, task: asyncio.Task[None], event: asyncio.Event) -> bool:
        """Wait for `task` or `event`; True if the task finished first."""
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            task.result()
            return True
        return False

    async def _wind_down(
        self, reader: asyncio.Task[None], workers: list[asyncio.Task[None]]
    ) -> None:
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
        for row in tuple(self._in_hand):
            self._observer.outcome(
                Outcome(row, Result.NOT_ATTEMPTED, error="interrupted in flight")
            )
        self._in_hand.clear()

    def _take(self) -> list[Row | InvalidRow]:
        return list(itertools.islice(self._rows, CHUNK))

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, self._take)
            except InputError as exc:
                self._input_error = str(exc)
                self.request_stop(Stop.INPUT)
                return
            if not chunk:
                return
            for item in chunk:
                if not self._owns(item):
                    continue
                if isinstance(item, InvalidRow):
                    self._observer.rejected(item)
                elif not self._ledger.admit(item):
                    self._observer.outcome(Outcome(item, Result.SKIPPED))
                else:
                    await self._queue.put(item)

    async def _drain_input(self) -> None:
        """After an abort, read the rest of the input so every row is accounted for."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, self._take)
            except InputError as exc:
                self._input_error = str(exc)
                return
            if not chunk:
                return
            for item in chunk:
                if not self._owns(item):
                    continue
                if isinstance(item, InvalidRow):
                    self._observer.rejected(item)
                else:
                    self._observer.outcome(Outcome(item, Result.NOT_ATTEMPTED))

    async def _watch_stall(self) -> None:
        """End a run that has made no progress for `max_stall_s` (a 429 storm, a dead API)."""
        while True:
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), self._settings.policy.max_stall_s)
            except TimeoutError:
                if self._in_hand or not self._queue.empty():  # a slow input is no stall
                    self.request_stop(Stop.STALLED)
                    return

    async def _worker(self) -> None:
        while True:
            row = await self._queue.get()
            self._in_hand.add(row)
            try:
                if self._stop is None:
                    outcome = await self._send(row)
                else:
                    outcome = Outcome(row, Result.NOT_ATTEMPTED)
                self._in_hand.discard(row)
                self._observer.outcome(outcome)
                self._progress.set()
            finally:
                self._queue.task_done()

    async def _send(self, row: Row) -> Outcome:
        """Attempt one row until it is added, fails for good, or the run stops."""
        attempts = failures = 0
        reply: Reply | None = None
        while True:
            if self._stop is not None and reply is not None:
                return Outcome(
                    row,
                    Result.NOT_ATTEMPTED,
                    reply.status,
                    attempts,
                    reply.latency_ms,
                    f"run stopped before the row succeeded; last answer: {reply.error}",
                )
            ticket = await self._interruptible(self._pacer.acquire())
            try:
                reply = await self._client.add(row)
            finally:
                status = reply.status if reply is not None else None
                self._pacer.settle(
                    ticket,
                    status,
                    reply.rate_limit if reply is not None else None,
                    reply.retry_after if reply is not None else None,
                )
            attempts += 1
            self._observer.response(reply.status, reply.latency_ms, retry=attempts > 1)
            stop = self._health.record(reply)
            if stop is not None:
                self.request_stop(stop)
            if reply.kind is Kind.ADDED:
                self._check_body(reply)
                result = Result.CREATED if reply.status == 201 else Result.ALREADY_PRESENT
                return self._final(row, result, reply, attempts)
            if reply.kind is Kind.RATE_LIMITED:
                continue  # the pacer holds every worker; a 429 is never a row's failure
            if reply.kind is not Kind.RETRYABLE:
                return self._final(row, Result.FAILED, reply, attempts)
            failures += 1
            if failures >= self._settings.policy.max_attempts:
                return self._final(row, Result.FAILED, reply, attempts)
            await self._interruptible(
                asyncio.sleep(self._settings.policy.backoff(failures, self._rng))
            )

    async def _interruptible(self, waiting: Awaitable[T]) -> T:
        """Await something that sends nothing, so that a stop may cancel it at once."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)  # type: ignore[arg-type]
        try:
            return await waiting
        finally:
            self._waiting.discard(task)  # type: ignore[arg-type]

    def _final(self, row: Row, result: Result, reply: Reply | None, attempts: int) -> Outcome:
        if reply is None:
            return Outcome(row, result, attempts=attempts)
        error = None if result.done else reply.error
        return Outcome(row, result, reply.status, attempts, reply.latency_ms, error)

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
