"""Rows from a blocking iterator, read ahead in one thread and handed to the loop in chunks.

A slow disk or a pipe on standard input then never blocks the event loop. The thread is
a daemon: a read blocked on a quiet standard input must not keep the process alive
after a signal, as the loop's executor would. It reads at most `ahead` chunks ahead of
the consumer, so memory stays flat however large the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Final

from worker.rows import InvalidRow, Row

Item = Row | InvalidRow
Chunk = list[Item]
CHUNK: Final = 256
"""Rows handed over at a time: large enough to amortise the hop between threads."""
_END: Final = None


class ThreadedChunks(AsyncIterator[Chunk]):
    """Iterate once, from one event loop. An exception the iterator raises (an input
    that became unreadable) is raised by the `__anext__` that reaches it."""

    def __init__(self, rows: Iterator[Item], *, size: int = CHUNK, ahead: int = 2) -> None:
        self._rows = rows
        self._size = size
        self._permits = threading.Semaphore(ahead)
        self._handed: asyncio.Queue[Chunk | BaseException | None] | None = None
        self._over = False

    def _start(self) -> asyncio.Queue[Chunk | BaseException | None]:
        loop = asyncio.get_running_loop()
        handed: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()

        def hand(item: Chunk | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
                loop.call_soon_threadsafe(handed.put_nowait, item)

        def read() -> None:
            while True:
                self._permits.acquire()
                chunk: Chunk = []
                try:
                    chunk.extend(itertools.islice(self._rows, self._size))
                except BaseException as exc:  # handed to the loop, as an executor would
                    if chunk:
                        hand(chunk)  # rows read before the error are the run's all the same
                    hand(exc)
                    return
                hand(chunk or _END)
                if not chunk:
                    return

        threading.Thread(target=read, name="input-reader", daemon=True).start()
        return handed

    async def __anext__(self) -> Chunk:
        if self._over:
            raise StopAsyncIteration
        if self._handed is None:
            self._handed = self._start()
        item = await self._handed.get()  # cancelled here, the chunk stays queued
        self._permits.release()
        if isinstance(item, list):
            return item
        self._over = True
        if item is _END:
            raise StopAsyncIteration
        raise item

    def read_ahead(self) -> list[Item]:
        """The rows already handed over but not yet taken: read, so to be accounted for
        when the run stops. Reading may go on afterwards (an abort counts the rest)."""
        rows: list[Item] = []
        handed = self._handed
        while handed is not None and not handed.empty():
            item = handed.get_nowait()
            self._permits.release()
            if isinstance(item, list):
                rows.extend(item)
            else:  # the end, or an error: the next `__anext__` meets it again
                handed.put_nowait(item)
                break
        return rows
