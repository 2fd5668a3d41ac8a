"""The send stage of `remove` and `undo`: rows gathered into bulk removals per playlist.

Each worker hands its row to its playlist's open batch and awaits the batch's result.
The first row of a batch leads it: it waits until the batch is full (the worker whose
row fills it wakes it) or `flush_s` passes with no fill (the input has run dry, or every
other worker waits on another playlist's batch), then sends it through the pacer with
`worker.bulk_removal.remove_in_batches`. While a request of the batch is in flight every
member's `Hand` says so, so a stop waits for it (within --grace) and, if it must abandon
it, says of every row that it may have been removed. The run's workers must be more
than the batch size, or a batch could never fill (`concurrency_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

from worker.answers import Answer, Meaning
from worker.api import Request
from worker.bulk_removal import BatchSizer, Removal, remove_in_batches
from worker.deliver import Hand, Paced, Send, unsent
from worker.events import Sink
from worker.health import Health, RetryPolicy
from worker.pacer import Pacer
from worker.rows import Outcome, Result, Row
from worker.stop import StopState

DEFAULT_FLUSH_S = 0.05
"""How long a batch that is not full waits for more rows: short beside a request, long
beside the time a worker takes to hand over its next row."""


def concurrency_for(batch_size: int, concurrency: int) -> int:
    """Workers enough for batches to fill: two batches' members, so one batch fills while
    another is in flight, or two playlists' rows interleave. A worker waiting in a batch
    is a coroutine, not a connection: requests in flight stay within --concurrency (the
    client's pool). Rows of more playlists interleaved go in partial batches, flushed
    after `DEFAULT_FLUSH_S`: more requests, the same result."""
    return max(2 * batch_size, concurrency)


class _Stopped(Exception):
    """The run stopped before a request of the batch could go."""


@dataclass(slots=True)
class _Batch:
    playlist_id: int
    members: list[tuple[Row, Hand]] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    result: asyncio.Future[dict[int, Outcome]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class BatchRemover:
    """`deliver(row, hand)` for the pipeline: the row's session removed, in a batch."""

    def __init__(
        self,
        *,
        send: Send,
        pacer: Pacer,
        sink: Sink,
        sizer: BatchSizer,
        policy: RetryPolicy,
        stop: StopState,
        flush_s: float = DEFAULT_FLUSH_S,
        rng: random.Random | None = None,
    ) -> None:
        self._send = send
        self._pacer = pacer
        self._sink = sink
        self._sizer = sizer
        self._policy = policy
        self._health = Health(policy)
        self._stop = stop
        self._flush_s = flush_s
        self._rng = rng or random.Random()
        self._open: dict[int, _Batch] = {}

    async def deliver(self, row: Row, hand: Hand) -> Outcome:
        batch = self._open.get(row.playlist_id)
        if batch is None:
            batch = self._open[row.playlist_id] = _Batch(row.playlist_id)
            batch.members.append((row, hand))
            return await self._lead(batch)
        index = len(batch.members)
        batch.members.append((row, hand))
        if len(batch.members) >= self._sizer.size:
            batch.full.set()
        outcomes = await asyncio.shield(batch.result)
        return outcomes[index]

    async def _lead(self, batch: _Batch) -> Outcome:
        """Wait for the batch to fill (or the flush), close it, send it, hand out results.
        Cancelled (a stop), the batch ends with it: its members are the stop's to count."""
        try:
            with contextlib.suppress(TimeoutError):  # not wait_for: see worker.chunks
                async with asyncio.timeout(self._flush_s):
                    await batch.full.wait()
            self._close(batch)
            outcomes = await self._removed(batch)
        except BaseException:
            self._close(batch)
            batch.result.cancel()
            raise
        batch.result.set_result(outcomes)
        return outcomes[0]

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.playlist_id) is batch:
            del self._open[batch.playlist_id]

    async def _removed(self, batch: _Batch) -> dict[int, Outcome]:
        members = batch.members
        by_session: dict[str, list[int]] = {}
        for index, (row, _hand) in enumerate(members):
            by_session.setdefault(row.session_id, []).append(index)
        hands = [hand for _row, hand in members]
        tried = [0]  # attempts of the batch's requests, retries included; a 429 is none

        async def marked(request: Request) -> Answer:
            tried[0] += 1
            for each in hands:
                each.sending = True
            try:
                answer = await self._send(request)
            finally:
                for each in hands:
                    each.sending = False
            tried[0] -= answer.meaning is Meaning.RATE_LIMITED  # it spends no attempt
            return answer

        paced = Paced(marked, pacer=self._pacer, stop=self._stop, sink=self._sink)

        async def final(request: Request) -> Answer:
            answer = await paced.call(request, self._policy, self._rng)
            if answer is None:
                raise _Stopped
            reason = self._health.record(answer)
            if reason is not None:
                self._stop.request(reason, answer.error)
            for each in hands:
                each.attempts, each.answer = tried[0], answer
            return answer

        try:
            removals = await remove_in_batches(
                final, batch.playlist_id, list(by_session), self._sizer
            )
        except _Stopped:
            return {index: unsent(hand) for index, hand in enumerate(hands)}
        outcomes: dict[int, Outcome] = {}
        for removal in removals:
            for index in by_session[removal.session_id]:
                outcomes[index] = _outcome(members[index][0], removal, tried[0])
        return outcomes


def _outcome(row: Row, removal: Removal, attempts: int) -> Outcome:
    answer = removal.answer
    if removal.removed:
        return Outcome(row, Result.REMOVED, answer.status, attempts, answer.latency_ms)
    if answer.meaning in (Meaning.FATAL, Meaning.KEYS_REFUSED):
        # The run's failure, not the row's: the stop that follows leaves it to a rerun.
        return Outcome(
            row, Result.NOT_ATTEMPTED, answer.status, attempts, answer.latency_ms, answer.error
        )
    return Outcome(row, Result.FAILED, answer.status, attempts, answer.latency_ms, answer.error)
