"""The search as the pipeline's source: pages of sessions in chunks, each session once,
and the search's position committed only behind the rows it covers.

A session matches the query once per event (a view, an action, the session event
itself): the repeat check here hands each session to the pipeline once, with flat
memory (`worker.journal.RepeatCheck`, on disk), so the report's `rows_read` counts
sessions, not events.

The position a rerun may resume from is one behind which every row handed out has its
outcome in the journal. Rows finish out of order (some wait on retries), so a position
is committed once every chunk up to the one it was taken after has finished.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from worker.chunks import CHUNK, Chunk, Item
from worker.events import Event, Skipped
from worker.journal import RepeatCheck
from worker.pipeline import SourceFailed
from worker.query.source import (
    SOURCE,
    QueryRefused,
    QuerySource,
    SearchFailed,
    SearchKeysRefused,
    SearchStalled,
)
from worker.rows import Outcome, Result, Row
from worker.stop import Reason


@dataclass(slots=True)
class HandedChunk:
    """A chunk handed out: how many of its rows are unfinished, and the search's
    position once it was taken."""

    unfinished: int
    position_ms: int
    held: bool = False
    """A row of it was never sent (the run stopped first): no position at or past this
    chunk is saved in this run, so that the rerun searches the row again."""


class QueryChunks:
    """The pipeline's `Source` over a `QuerySource`: chunks of at most `size` rows."""

    def __init__(self, source: QuerySource, *, size: int = CHUNK) -> None:
        self._source = source
        self._rows: AsyncIterator[Row] | None = None
        self._size = size
        self._seen = RepeatCheck()
        self._failure: SearchFailed | None = None
        self.handed: deque[HandedChunk] = deque()
        self.of_line: dict[int, HandedChunk] = {}
        """The chunk of each row handed out and not finished, by the row's line."""
        self.repeats = 0

    def __aiter__(self) -> QueryChunks:
        return self

    async def __anext__(self) -> Chunk:
        failure, self._failure = self._failure, None  # said once: the search then ends
        if failure is not None:
            raise _source_failed(failure)
        if self._rows is None:
            self._rows = aiter(self._source)
        found: list[Row] = []
        try:
            while len(found) < self._size:
                row = await anext(self._rows)
                if self._seen.admit(row):
                    found.append(row)
                else:
                    self.repeats += 1
        except StopAsyncIteration:
            self._seen.close()
            if not found:
                raise
        except SearchFailed as exc:
            self._seen.close()
            if not found:
                raise _source_failed(exc) from None
            self._failure = exc  # the rows found before it are sent first
        handed = HandedChunk(len(found), self._source.position_ms)
        self.handed.append(handed)
        for row in found:
            self.of_line[row.line] = handed
        return list[Item](found)

    async def aclose(self) -> None:
        """Ends the search where it is (a page fetched ahead is cancelled): for a reader
        that stops early, before the client the search goes through is closed."""
        rows, self._rows = self._rows, None
        if isinstance(rows, AsyncGenerator):
            await rows.aclose()
        self._seen.close()

    def read_ahead(self) -> list[Item]:
        """Rows the search received but did not hand out were never produced."""
        return []


def _source_failed(failure: SearchFailed) -> SourceFailed:
    """The run's end for the search's failure: a first page refused is a query to fix
    (exit 2), refused keys end it as refused keys end any run (exit 3, `the API keeps
    refusing the keys`), a stalled search as rows that never finish do (exit 3, `no
    progress`), any other failure as a failed search (exit 3)."""
    reason = Reason.SOURCE
    if isinstance(failure, SearchKeysRefused):
        reason = Reason.KEYS_REFUSED
    elif isinstance(failure, QueryRefused):
        reason = Reason.QUERY_REFUSED
    elif isinstance(failure, SearchStalled):
        reason = Reason.STALLED
    return SourceFailed(str(failure), reason)


class Checkpoints:
    """A sink that commits the search's position once every row before it has finished.

    A row left not attempted by a stop (or accounted for after an abort) has not
    finished: its chunk holds the position back for the rest of the run, or the rerun
    would resume past it and never send it. A failed row has finished: it is in the
    journal as failed, and in the dead-letter file to retry.

    `save` is the journal's `save_query_position`, which commits the position with the
    outcomes reported before it, never earlier."""

    def __init__(self, chunks: QueryChunks, save: Callable[[int], None]) -> None:
        self._chunks = chunks
        self._save = save

    def __call__(self, event: Event) -> None:
        if isinstance(event, Outcome):
            self._finished(event.row, sent=event.result is not Result.NOT_ATTEMPTED)
        elif isinstance(event, Skipped):
            for row in event.rows:
                self._finished(row, sent=True)  # done before, or a repeat
        else:
            return
        queue = self._chunks.handed
        position = None
        while queue and queue[0].unfinished == 0 and not queue[0].held:
            position = queue.popleft().position_ms
        if position is not None:
            self._save(position)

    def _finished(self, row: Row, *, sent: bool) -> None:
        if row.source != SOURCE:
            return
        handed = self._chunks.of_line.pop(row.line, None)
        if handed is not None:
            handed.unfinished -= 1
            handed.held |= not sent
