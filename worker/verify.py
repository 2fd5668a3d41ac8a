"""`verify`'s send stage: is each row's session in its playlist?

A playlist's listing is read once, the first time a row names it, through the pacer
(`worker.playlist_sessions.collect_session_ids`, `page[number]` from 0), and held as a
`SessionIdSet` (16 bytes a UUID session, one bit more to mark it named): memory grows
with the playlists' sizes, never with the inputs, which stream past. Rows of a playlist
whose listing cannot be read fail, with the reason. The sessions no row named are the
`--extra` ones, read out once the run is over.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from typing import IO

from worker.answers import Answer
from worker.api import Request
from worker.deliver import Hand, Paced, unsent
from worker.events import Ended, Event
from worker.files import open_output_of
from worker.health import RetryPolicy
from worker.input import format_row
from worker.paging import ApiCallFailed
from worker.playlist_sessions import SESSION_PAGE_SIZE, SessionIdSet, collect_session_ids
from worker.rows import Outcome, Result, Row


class _Stopped(Exception):
    """The run stopped before the listing could be read."""


class Verifier:
    """`deliver(row, hand)` for the pipeline: PRESENT or MISSING, nothing changed."""

    def __init__(
        self,
        paced: Paced,
        *,
        policy: RetryPolicy,
        page_size: int = SESSION_PAGE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        self._paced = paced
        self._policy = policy
        self._page_size = page_size
        self._rng = rng or random.Random()
        self._listings: dict[int, asyncio.Task[SessionIdSet]] = {}

    async def deliver(self, row: Row, hand: Hand) -> Outcome:
        listing = self._listings.get(row.playlist_id)
        if listing is None:
            listing = self._listings[row.playlist_id] = asyncio.ensure_future(
                collect_session_ids(self._send, row.playlist_id, self._page_size)
            )
        try:
            held = await asyncio.shield(listing)
        except _Stopped:
            return unsent(hand)
        except ApiCallFailed as exc:
            answer = exc.answer
            status = None if answer is None else answer.status
            return Outcome(row, Result.FAILED, status, error=str(exc))
        return Outcome(row, Result.PRESENT if held.mark(row.session_id) else Result.MISSING)

    async def _send(self, request: Request) -> Answer:
        answer = await self._paced.call(request, self._policy, self._rng)
        if answer is None:
            raise _Stopped
        return answer

    def extra(self) -> Iterator[tuple[int, str]]:
        """(playlist, session) of every session listed that no row named, by playlist."""
        for playlist_id in sorted(self._listings):
            listing = self._listings[playlist_id]
            if listing.done() and not listing.cancelled() and listing.exception() is None:
                for session_id in listing.result().unmarked():
                    yield playlist_id, session_id

    def playlists_read(self) -> int:
        return len(self._listings)

    async def close(self) -> None:
        """Ends listings still being read (a run that stopped)."""
        for listing in self._listings.values():
            listing.cancel()
        await asyncio.gather(*self._listings.values(), return_exceptions=True)


class MissingFile:
    """A sink writing each missing row as a line `run` takes back (`--missing PATH`).

    Raises `OutputError` when the file cannot be opened, before the run."""

    def __init__(self, path: str) -> None:
        self._out: IO[str] = os.fdopen(open_output_of("--missing", path), "w", encoding="utf-8")
        self.written = 0

    def __call__(self, event: Event) -> None:
        if type(event) is Outcome:
            assert isinstance(event, Outcome)
            if event.result is Result.MISSING:
                self._out.write(format_row(event.row))
                self.written += 1
        elif type(event) is Ended:
            self._out.close()


def extra_line(playlist_id: int, session_id: str) -> str:
    """One `--extra` session, as NDJSON `remove` takes (it needs no ts)."""
    return json.dumps({"playlist_id": playlist_id, "session_id": session_id}) + "\n"
