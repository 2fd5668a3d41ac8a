"""Rows from a blocking iterator, read in one thread and handed to the loop in chunks.

A slow disk or a pipe on standard input then never blocks the event loop. The thread is
a daemon: a read blocked on a quiet standard input must not keep the process alive
after a signal, as the loop's executor would. It reads at most `ahead` chunks ahead of
the consumer, so memory stays flat however large the input.

Rows the thread has read but not yet handed over, a chunk still filling, are never lost:
a consumer that has waited `TRICKLE_S` for a full chunk takes what there is (a trickle
on standard input is sent as it comes), and a stop takes them to account for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Final

from worker.rows import InvalidRow, Row

Item = Row | InvalidRow
Chunk = list[Item]
CHUNK: Final = 256
"""Rows handed over at a time: large enough to amortise the hop between threads."""
TRICKLE_S: Final = 0.05
"""How long a consumer with nothing to do waits for a chunk to fill before it takes the
rows read so far."""
_END: Final = None


class ThreadedChunks:
    """An async iterator of chunks; iterate once, from one event loop. An exception the
    rows raise (an input that became unreadable) is raised by the `__anext__` that
    reaches it, after the rows read before it."""

    def __init__(self, rows: Iterator[Item], *, size: int = CHUNK, ahead: int = 2) -> None:
        self._rows = rows
        self._size = size
        self._permits = threading.Semaphore(ahead)
        self._lock = threading.Lock()
        self._filling: Chunk = []  # guarded by _lock: swapped whole when handed over
        self._handed: asyncio.Queue[Chunk | BaseException | None] | None = None
        self._over = False

    def _start(self) -> asyncio.Queue[Chunk | BaseException | None]:
        loop = asyncio.get_running_loop()
        handed: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()

        def hand(item: Chunk | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(handed.put_nowait, item)

        def read() -> None:
            lock, size = self._lock, self._size
            end: BaseException | None = None
            try:
                for item in self._rows:
                    with lock:
                        filling = self._filling
                        filling.append(item)
                        full = len(filling) >= size
                        if full:
                            self._filling = []
                    if full:
                        hand(filling)
                        self._permits.acquire()
            except BaseException as exc:  # handed to the loop, as an executor would
                end = exc
            rest = self._take_filling()
            if rest:
                hand(rest)
            hand(end)

        threading.Thread(target=read, name="input-reader", daemon=True).start()
        return handed

    def _take_filling(self) -> Chunk:
        with self._lock:
            rows, self._filling = self._filling, []
        return rows

    def __aiter__(self) -> ThreadedChunks:
        return self

    async def __anext__(self) -> Chunk:
        if self._over:
            raise StopAsyncIteration
        if self._handed is None:
            self._handed = self._start()
        handed = self._handed
        while handed.empty():
            try:
                # Cancelled here, nothing is lost: a chunk stays queued. Not `wait_for`:
                # on Python 3.11 it returns a chunk that came as the cancel did, so the
                # cancel is lost and a stopping run goes on being fed (and hangs, its
                # queue full, the workers gone).
                async with asyncio.timeout(TRICKLE_S):
                    item = await handed.get()
            except TimeoutError:
                rows = self._take_filling()
                if rows:
                    return rows
                continue
            return self._taken(item)
        # A chunk is ready: take it, but let the loop run first (signals, progress, the
        # workers), or a consumer that never waits would starve them all.
        await asyncio.sleep(0)
        return self._taken(handed.get_nowait())

    def _taken(self, item: Chunk | BaseException | None) -> Chunk:
        if isinstance(item, list):
            self._permits.release()
            return item
        self._over = True
        if item is _END:
            raise StopAsyncIteration
        raise item

    def read_ahead(self) -> list[Item]:
        """The rows read but not yet taken: to be accounted for when the run stops.
        Reading may go on afterwards (an abort counts the rest)."""
        rows: list[Item] = []
        handed = self._handed
        while handed is not None and not handed.empty():
            item = handed.get_nowait()
            if not isinstance(item, list):  # the end, or an error: met again by __anext__
                handed.put_nowait(item)
                break
            self._permits.release()
            rows.extend(item)
        rows.extend(self._take_filling())
        return rows
