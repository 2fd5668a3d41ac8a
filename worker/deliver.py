"""The send stage: one row through the pacer and the client until it has a result.

A row is attempted until its operation succeeds, fails for good, or the run stops. A 429
is never the row's failure: the pacer holds every worker of its family, then the row is
sent again. Every attempt is an `Answered` event; the row's end is the `Outcome` the
caller hands on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from worker.answers import DONE, RATE_LIMITED, Answer, Meaning
from worker.api import Request
from worker.events import Answered, Sink, of_kind
from worker.health import Health, RetryPolicy
from worker.operation import RowOperation
from worker.pacer import Pacer
from worker.records import new_record
from worker.rows import CREATED, FAILED, Outcome, Result, Row
from worker.stop import Reason, StopState

Send = Callable[[Request], Awaitable[Answer]]


@dataclass(slots=True)
class Hand:
    """What a worker knows of the row in its hands, so a stop can account for it truly.
    One per worker, reused row after row."""

    row: Row | None = None
    attempts: int = 0
    answer: Answer | None = None
    sending: bool = False

    def take(self, row: Row) -> None:
        self.row, self.attempts, self.answer, self.sending = row, 0, None, False


def unsent(hand: Hand) -> Outcome:
    """The row in `hand`, which the run stopped before finishing: not attempted, with
    what was known of it."""
    assert hand.row is not None
    answer = hand.answer
    if hand.sending:
        # Abandoned by a second signal, at the end of --grace, or at a stall.
        error: str | None = "in flight when the run stopped; it may have been applied"
    elif answer is not None:
        error = f"the run stopped before the row succeeded; last answer: {answer.error}"
    else:
        error = None
    return Outcome(
        hand.row,
        Result.NOT_ATTEMPTED,
        answer.status if answer else None,
        hand.attempts,
        answer.latency_ms if answer else 0.0,
        error,
    )


class Paced:
    """Attempts of requests through the pacer, each told to the sinks as an `Answered`.

    Shared by the send stage (one row's attempts) and by the calls that are no row's (a
    page of a search, of a playlist's listing), so every request of a run is paced under
    its family and counted once."""

    def __init__(self, send: Send, *, pacer: Pacer, stop: StopState, sink: Sink) -> None:
        self._send = send
        self._pacer = pacer
        self._stop = stop
        self._answered = of_kind(sink, Answered)

    async def attempt(self, request: Request, hand: Hand) -> Answer | None:
        """One attempt, once the pacer lets it go; None if the run stopped meanwhile
        (nothing was sent). `hand` says, while it is under way, that it is in flight."""
        pacer, family = self._pacer, request.family
        ticket = pacer.try_acquire(family)  # far from the limit: at once, no coroutine
        if ticket is None:
            ticket = await pacer.acquire(family)
        if self._stop.phase:
            pacer.settle(ticket, None)  # nothing sent
            return None
        hand.sending = True
        started = time.perf_counter()
        try:
            answer = await self._send(request)
        except asyncio.CancelledError:
            # Abandoned at a stop, perhaps after the server had it: a request all the same.
            pacer.settle(ticket, None)
            hand.attempts += 1
            latency_ms = (time.perf_counter() - started) * 1000
            self._answered(Answered(None, False, latency_ms, hand.attempts > 1))
            raise
        hand.sending = False
        pacer.settle(ticket, answer)
        hand.attempts += 1
        hand.answer = answer
        self._answered(
            new_record(
                Answered,
                (
                    answer.status,
                    answer.meaning is RATE_LIMITED,
                    answer.latency_ms,
                    hand.attempts > 1,
                ),
            )
        )
        return answer

    async def call(
        self, request: Request, policy: RetryPolicy, rng: random.Random
    ) -> Answer | None:
        """A request that is no row's, sent again after a 429 or a retryable failure until
        it gets another answer or its attempts are spent; None if the run stopped."""
        hand = Hand()
        failures = 0
        while True:
            answer = await self.attempt(request, hand)
            if answer is None or answer.meaning is Meaning.RATE_LIMITED:
                if answer is None:
                    return None
                hand.attempts -= 1  # a 429 spends no attempt
                continue
            if answer.meaning is not Meaning.RETRYABLE:
                return answer
            failures += 1
            if failures >= policy.max_attempts:
                return answer
            await asyncio.sleep(policy.backoff(failures, rng))


class Sender:
    """Performs `operation` on rows, each attempt through `paced`."""

    def __init__(
        self,
        operation: RowOperation,
        paced: Paced,
        *,
        policy: RetryPolicy,
        stop: StopState,
        rng: random.Random | None = None,
    ) -> None:
        self._operation = operation
        self._paced = paced
        self._policy = policy
        self._health = Health(policy)
        self._stop = stop
        self._rng = rng or random.Random()

    async def deliver(self, row: Row, hand: Hand) -> Outcome:
        """Attempt `row` until it has a result; a stop may cancel any wait but a send."""
        operation, attempt, stop = self._operation, self._paced.attempt, self._stop
        request = operation.request(row)
        failures = 0
        lost: str | None = None  # an earlier answer lost after the server may have applied it
        while True:
            answer = await attempt(request, hand)
            if answer is None:
                return unsent(hand)
            reason = self._health.record(answer)
            if reason is not None:
                stop.request(reason, answer.error)
            meaning = answer.meaning
            if meaning is DONE:
                return self._final(row, operation.result(answer), answer, hand.attempts, lost)
            if meaning is RATE_LIMITED:
                hand.attempts -= 1  # a 429 spends no attempt (of --max-attempts)
                continue  # the pacer holds every worker; a 429 is never a row's failure
            if meaning is Meaning.FATAL:
                return unsent(hand)  # the run cannot work as configured
            if meaning is Meaning.ROW_FAILED:
                return self._final(row, FAILED, answer, hand.attempts)
            # Retryable, or refused: a refusal is the keys' failure, not the row's. Refused
            # keys soon stop the run (Health), leaving the row not attempted; if other rows
            # get through meanwhile, this one fails once its attempts are spent.
            failures += 1
            if failures >= self._policy.max_attempts:
                # `lost` speaks of earlier attempts only: this one's answer is the error.
                return self._final(row, FAILED, answer, hand.attempts, lost)
            if answer.maybe_applied:
                lost = answer.error
            await asyncio.sleep(self._policy.backoff(failures, self._rng))

    @staticmethod
    def _final(
        row: Row, result: Result, answer: Answer, attempts: int, lost: str | None = None
    ) -> Outcome:
        """A 201 is this attempt's own doing; any other result after a lost answer says
        so, since the lost attempt may have been applied."""
        note = None
        if lost is not None and result is not CREATED:
            note = f"an earlier attempt's answer was lost ({lost}): it may have been applied"
        error = answer.error if result is FAILED else None
        return new_record(
            Outcome, (row, result, answer.status, attempts, answer.latency_ms, error, note)
        )


class Preview:
    """The dry run's send stage: each request a real run would send now, printed to
    `out`, and nothing sent; the row counts as not attempted. Output closed by its
    reader (`--dry-run | head`) ends the run quietly (`Reason.OUTPUT`)."""

    def __init__(
        self, operation: RowOperation, base_url: str, out: TextIO, stop: StopState
    ) -> None:
        self._operation = operation
        self._base_url = base_url
        self._out = out
        self._stop = stop

    async def deliver(self, row: Row, hand: Hand) -> Outcome:
        request = self._operation.request(row)
        query = f"?{request.query}" if request.query else ""
        try:
            self._out.write(f"{request.method} {self._base_url}{request.path}{query}\n")
        except BrokenPipeError:
            silence_output(self._out)
            self._stop.request(Reason.OUTPUT, "standard output was closed", at_once=True)
        return Outcome(row, Result.NOT_ATTEMPTED)


def silence_output(out: TextIO) -> None:
    """Point a closed output at /dev/null, so that flushing it at exit raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, out.fileno())
    os.close(devnull)
