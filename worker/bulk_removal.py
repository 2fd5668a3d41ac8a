"""Removing sessions from a playlist in as few requests as the server allows.

Datadog documents no maximum for a bulk removal, so the batch size is found: start at
`DEFAULT_BATCH_SIZE`, halve it when the server refuses a batch as too large (a 413, or a
400 whose error names a size or a limit), down to 1, where each session goes by its own
`DELETE .../sessions/{session_id}`; the size that worked is kept for the rest of the run
(one `BatchSizer` per run). A 400 that names sessions of the batch fails those rows
alone and the rest is sent again. The API answers 204 whether or not a session was in
the playlist, so a removal says "not there any more", not "was there".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from worker.answers import Answer, Meaning
from worker.api import remove_session, remove_sessions
from worker.paging import Send

DEFAULT_BATCH_SIZE = 100
"""Sessions per bulk removal at the start: 100 ids make a body of about 6 KB."""

_SIZE_WORDS = re.compile(
    r"\b(size|limit|at most|maximum|max|exceed\w*|too (many|large|big|long))\b", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Removal:
    """One row's outcome: `answer` is the final answer of the request that carried it."""

    session_id: str
    answer: Answer

    @property
    def removed(self) -> bool:
        return self.answer.meaning is Meaning.DONE


class BatchSizer:
    """The bulk-removal size for a run: it only ever shrinks."""

    def __init__(self, size: int = DEFAULT_BATCH_SIZE) -> None:
        if size < 1:
            raise ValueError(f"the batch size must be 1 or more, not {size}")
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def refused_as_too_large(self, answer: Answer, sent: int) -> bool:
        """True, with the size at most half of what was sent, when `answer` refuses a
        batch of `sent` sessions for its size; False for any other answer. Halved from
        what was sent, not from the current size: batches in flight together, all sent
        at the old size, are refused together, and each refusal says the same thing."""
        if sent <= 1 or not _too_large(answer):
            return False
        self._size = max(1, min(self._size, sent // 2))
        return True


async def remove_in_batches(
    send: Send, playlist_id: int, session_ids: Sequence[str], sizer: BatchSizer
) -> list[Removal]:
    """Removes the sessions (repeats are the caller's to drop), one Removal per id."""
    outcomes: list[Removal] = []
    pending = list(session_ids)
    start = 0
    while start < len(pending):
        if sizer.size == 1:
            session_id = pending[start]
            outcomes.append(
                Removal(session_id, await send(remove_session(playlist_id, session_id)))
            )
            start += 1
            continue
        batch = pending[start : start + sizer.size]
        answer = await send(remove_sessions(playlist_id, batch))
        named = _named(answer, batch)
        if named and len(named) < len(batch):
            outcomes += [Removal(session_id, answer) for session_id in batch if session_id in named]
            pending[start : start + len(batch)] = [s for s in batch if s not in named]
        elif not named and sizer.refused_as_too_large(answer, len(batch)):
            continue
        else:
            outcomes += [Removal(session_id, answer) for session_id in batch]
            start += len(batch)
    return outcomes


def _too_large(answer: Answer) -> bool:
    if answer.status == 413:
        return True
    return answer.status == 400 and bool(_SIZE_WORDS.search(answer.error or ""))


def _named(answer: Answer, batch: Sequence[str]) -> set[str]:
    """The batch's sessions a 400's error names, each as a whole word."""
    if answer.status != 400 or not answer.error:
        return set()
    text = answer.error
    return {
        session_id
        for session_id in set(batch)
        if re.search(rf"(?<![\w-]){re.escape(session_id)}(?![\w-])", text)
    }
