"""The pipeline's queue (`worker.handoff`), in process: each guarantee its docstring
gives, with the waits driven by events and `asyncio.sleep(0)`, never by time."""

from __future__ import annotations

import asyncio

import pytest

from worker.handoff import Handoff


async def settle() -> None:
    """Let every task that can run do so."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_first_in_first_out_and_bounded() -> None:
    async def main() -> None:
        queue: Handoff[int] = Handoff(4)
        for item in range(4):
            assert not queue.full()
            queue.put_nowait(item)
        assert queue.full()
        assert len(queue) == 4
        put = asyncio.create_task(queue.put(4))
        await settle()
        assert not put.done()
        assert len(queue) == 4
        assert [queue.take(), queue.take()] == [0, 1]  # down to half: room is given
        await settle()
        assert put.done()
        assert len(queue) == 3
        assert [queue.take(), queue.take(), queue.take(), queue.take()] == [2, 3, 4, None]

    asyncio.run(main())


def test_room_is_given_at_half_not_per_item() -> None:
    async def main() -> None:
        queue: Handoff[int] = Handoff(8)
        for item in range(8):
            queue.put_nowait(item)
        put = asyncio.create_task(queue.put(8))
        await settle()
        for _ in range(3):
            queue.take()
            await settle()
            assert not put.done()  # 7, 6, 5 left: more than half
        queue.take()
        await settle()
        assert put.done()  # 4 left: half

    asyncio.run(main())


def test_a_row_put_wakes_one_waiting_worker() -> None:
    async def main() -> None:
        queue: Handoff[int] = Handoff(4)
        taken: list[tuple[int, int]] = []

        async def worker(number: int) -> None:
            while True:
                item = queue.take()
                if item is None:
                    await queue.wait()
                    continue
                taken.append((number, item))
                queue.done()

        workers = [asyncio.create_task(worker(n)) for n in range(3)]
        await settle()
        queue.put_nowait(10)
        await settle()
        assert [item for _, item in taken] == [10]
        queue.put_nowait(11)
        queue.put_nowait(12)
        await settle()
        assert sorted(item for _, item in taken) == [10, 11, 12]
        await asyncio.wait_for(queue.join(), 1)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    asyncio.run(main())


def test_a_worker_cancelled_as_it_is_woken_passes_the_wake_on() -> None:
    async def main() -> None:
        queue: Handoff[int] = Handoff(4)
        first = asyncio.create_task(queue.wait())
        second = asyncio.create_task(queue.wait())
        await settle()
        queue.put_nowait(1)  # wakes the first...
        first.cancel()  # ...which is cancelled before it runs
        await settle()
        assert first.cancelled()
        assert second.done()
        assert not second.cancelled()
        assert queue.take() == 1

    asyncio.run(main())


def test_join_waits_for_every_item_to_be_done_or_drained() -> None:
    async def main() -> None:
        queue: Handoff[str] = Handoff(4)
        await queue.join()  # nothing put: at once
        for item in "abc":
            queue.put_nowait(item)
        joined = asyncio.create_task(queue.join())
        assert queue.take() == "a"
        queue.done()
        await settle()
        assert not joined.done()
        assert queue.drain() == ["b", "c"]  # a stop accounts for them
        await settle()
        assert joined.done()
        assert len(queue) == 0

    asyncio.run(main())


def test_a_drain_gives_a_feeder_waiting_for_room_its_room() -> None:
    async def main() -> None:
        queue: Handoff[int] = Handoff(2)
        queue.put_nowait(1)
        queue.put_nowait(2)
        put = asyncio.create_task(queue.put(3))
        await settle()
        assert not put.done()
        assert queue.drain() == [1, 2]
        await settle()
        assert put.done()
        assert queue.take() == 3

    asyncio.run(main())


def test_a_put_with_no_room_is_refused() -> None:
    queue: Handoff[int] = Handoff(1)
    queue.put_nowait(1)
    with pytest.raises(AssertionError, match="no room"):
        queue.put_nowait(2)


def test_a_hand_off_holds_one_item_at_least() -> None:
    with pytest.raises(ValueError, match="one item at least"):
        Handoff(0)
