"""The bounded queue between the feeder and the workers.

Every admitted row passes through it once, so it does what `asyncio.Queue` would for
this one use at a fraction of the cost: `asyncio.Queue` is written in Python, and a row
put, taken and marked done calls ten of its methods (9.6k instructions a row alone,
against 0.4k for the deque beneath). Here a row costs four short calls when nobody
waits, and a future is made only by whoever must wait.

One feeder puts; any number of workers take. What the pipeline relies on (each held by
`tests/test_handoff.py`):

* first in, first out; never more than `size` rows held: `put` waits for room, which
  it is given once the workers have taken half the rows, not row by row;
* a row put while workers wait wakes one of them, and a worker cancelled as it is woken
  passes the wake on: no row waits while a worker is free;
* `join` returns once every row put has been marked `done`; `drain` takes the rows left
  at a stop, which then count as done.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Handoff(Generic[Item]):
    __slots__ = ("_items", "_joiners", "_low", "_room", "_size", "_takers", "_unfinished")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a hand-off holds one item at least, not {size}")
        self._items: deque[Item] = deque()
        self._size = size
        self._low = size // 2  # the feeder waiting for room is woken at this many items
        self._takers: deque[asyncio.Future[None]] = deque()  # workers waiting for an item
        self._room: asyncio.Future[None] | None = None  # the feeder waiting for room
        self._unfinished = 0  # put, and not yet marked done
        self._joiners: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._size

    def put_nowait(self, item: Item) -> None:
        """Add `item`, which the caller has checked there is room for (`full`)."""
        assert len(self._items) < self._size, "no room: check full() first, or await put()"
        self._items.append(item)
        self._unfinished += 1
        if self._takers:
            self._wake_a_taker()

    async def put(self, item: Item) -> None:
        """Add `item` once there is room."""
        while len(self._items) >= self._size:
            room = self._room = asyncio.get_running_loop().create_future()
            try:
                await room
            finally:
                self._room = None
        self.put_nowait(item)

    def take(self) -> Item | None:
        """The oldest item, or None when there is none (then `wait`)."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._room is not None and len(items) <= self._low:
            self._give_room()
        return item

    async def wait(self) -> None:
        """Until an item has been put: `take` again (another taker may have got it first)."""
        taker = asyncio.get_running_loop().create_future()
        self._takers.append(taker)
        try:
            await taker
        except asyncio.CancelledError:
            if taker.done() and not taker.cancelled() and self._items:
                self._wake_a_taker()  # woken as it was cancelled: the wake is not lost
            raise

    def done(self, count: int = 1) -> None:
        """`count` items taken have been dealt with."""
        self._unfinished -= count
        if not self._unfinished and self._joiners:
            self._release_joiners()

    async def join(self) -> None:
        """Until every item put has been marked done (or drained)."""
        if self._unfinished:
            joiner = asyncio.get_running_loop().create_future()
            self._joiners.append(joiner)
            await joiner

    def drain(self) -> list[Item]:
        """Take every item left; they count as done, and a feeder waiting for room has it."""
        items = list(self._items)
        self._items.clear()
        self.done(len(items))
        self._give_room()
        return items

    def _give_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def _wake_a_taker(self) -> None:
        takers = self._takers
        while takers:
            taker = takers.popleft()
            if not taker.done():
                taker.set_result(None)
                return

    def _release_joiners(self) -> None:
        for joiner in self._joiners:
            if not joiner.done():
                joiner.set_result(None)
        self._joiners.clear()
