"""Chunks handed from the reader's thread to the loop: a cancelled wait loses nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from worker.chunks import ThreadedChunks
from worker.rows import Row

ROW = Row(1, "s1", 1_704_067_200_000, "rum", "in.csv", 2)


def never(released: threading.Event) -> Iterator[Row]:
    """An input whose next row never comes (a quiet pipe), until the test ends."""
    released.wait()
    yield from ()


@pytest.mark.parametrize("turns", range(6))
async def test_a_consumer_cancelled_as_a_chunk_arrives_is_cancelled_and_the_chunk_stays(
    turns: int,
) -> None:
    # The pipeline stops its feeder by cancelling it: a wait that swallowed the cancel
    # (asyncio.wait_for on Python 3.11 returns the result when it is there by the time the
    # cancel lands) would keep feeding a run that is stopping, and hang it on a full
    # queue. Whatever turn of the loop the cancel lands on, the consumer must end
    # cancelled and the chunk must still be there for the stop to account for.
    released = threading.Event()
    chunks = ThreadedChunks(never(released))
    consumer = asyncio.create_task(chunks.__anext__())
    await asyncio.sleep(0.01)  # waiting for a chunk, past its first turn
    handed = chunks._handed
    assert handed is not None
    handed.put_nowait([ROW])
    for _ in range(turns):
        await asyncio.sleep(0)
    cancelled = consumer.cancel()
    try:
        got = await consumer
    except asyncio.CancelledError:
        got = None
    finally:
        released.set()
    if cancelled:
        assert got is None, "the cancel was swallowed: the consumer took the chunk"
        assert chunks.read_ahead() == [ROW]
    else:  # it had taken the chunk before the cancel came: nothing to cancel
        assert got == [ROW]
