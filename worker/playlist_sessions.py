"""A playlist's sessions as the API lists them, and a compact set of them for `verify`.

`verify` holds one playlist's whole listing while it streams the inputs past it, so the
set costs 16 bytes a session for UUID-shaped ids (Datadog's RUM session ids), 16 more
only while it sorts them once, and one bit a session to mark those the inputs named
(for `--extra`); any other id is kept as a string (about 60 bytes plus its length).
"""

from __future__ import annotations

import bisect
import heapq
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence

from worker.api import list_sessions
from worker.paging import ApiCallFailed, Send, pages

SESSION_PAGE_SIZE = 100
"""Sessions asked per page: Datadog documents no maximum, and each item carries the
session's raw RUM event, so a modest page keeps each answer's body small."""

SESSION_TYPE = "rum_replay_session"
_RECORD = 16
_SORT_CHUNK = 1 << 16
"""Records sorted at once while freezing: bounds the transient Python objects."""


async def session_ids(
    send: Send, playlist_id: int, page_size: int = SESSION_PAGE_SIZE
) -> AsyncIterator[str]:
    """Every session id of the playlist, in the API's order, one page at a time."""
    listing = pages(
        send,
        lambda number: list_sessions(playlist_id, number, page_size),
        _ids,
        lambda session_id: session_id,
        f"listing playlist {playlist_id}'s sessions",
    )
    async for page in listing:
        for session_id in page:
            yield session_id


async def collect_session_ids(
    send: Send, playlist_id: int, page_size: int = SESSION_PAGE_SIZE
) -> SessionIdSet:
    held = SessionIdSet()
    async for session_id in session_ids(send, playlist_id, page_size):
        held.add(session_id)
    held.freeze()
    return held


def _ids(page: object) -> list[str]:
    items = page.get("data") if isinstance(page, dict) else None
    if isinstance(items, list) and all(
        isinstance(item, dict)
        and item.get("type") == SESSION_TYPE
        and isinstance(item.get("id"), str)
        and item["id"]
        for item in items
    ):
        return [item["id"] for item in items]
    raise ApiCallFailed(
        'the listing of sessions is not the documented JSON: {"data": [{"id": ..., '
        f'"type": "{SESSION_TYPE}"}}, ...]}}'
    )


class SessionIdSet:
    """Session ids, added once, then frozen for lookups and marks."""

    def __init__(self) -> None:
        self._records = bytearray()
        """16-byte UUIDs: unsorted while adding, sorted and unique once frozen."""
        self._others: set[str] = set()
        self._marks = bytearray()
        self._marked_others: set[str] = set()
        self._frozen = False

    def add(self, session_id: str) -> None:
        if self._frozen:
            raise RuntimeError("the set is frozen: add every id before the first lookup")
        packed = _packed(session_id)
        if packed is None:
            self._others.add(session_id)
        else:
            self._records += packed

    def freeze(self) -> None:
        """Sorts the UUIDs (each chunk in place, then one merge of the chunks) and drops
        repeats: a server may list a session twice across pages."""
        if self._frozen:
            return
        raw = self._records
        count = len(raw) // _RECORD
        bounds = [
            (start, min(start + _SORT_CHUNK, count)) for start in range(0, count, _SORT_CHUNK)
        ]
        for start, end in bounds:
            raw[start * _RECORD : end * _RECORD] = b"".join(sorted(_run(raw, start, end)))
        merged = bytearray()
        last = None
        for record in heapq.merge(*(_run(raw, start, end) for start, end in bounds)):
            if record != last:
                merged += record
                last = record
        self._records = merged
        self._marks = bytearray((len(merged) // _RECORD + 7) // 8)
        self._frozen = True

    def __len__(self) -> int:
        self.freeze()
        return len(self._records) // _RECORD + len(self._others)

    def __contains__(self, session_id: object) -> bool:
        return isinstance(session_id, str) and self._find(session_id) is not None

    def mark(self, session_id: str) -> bool:
        """Whether the set holds the id; if so, marks it as named by an input."""
        found = self._find(session_id)
        if found is None:
            return False
        if isinstance(found, str):
            self._marked_others.add(found)
        else:
            self._marks[found >> 3] |= 1 << (found & 7)
        return True

    def unmarked(self) -> Iterator[str]:
        """The ids no `mark` named: sessions in the playlist that no input names."""
        self.freeze()
        for n in range(len(self._records) // _RECORD):
            if not self._marks[n >> 3] & (1 << (n & 7)):
                yield str(uuid.UUID(bytes=_slice(self._records, n)))
        yield from sorted(self._others - self._marked_others)

    def _find(self, session_id: str) -> int | str | None:
        """The record's index, or the id itself for ids kept as strings."""
        self.freeze()
        packed = _packed(session_id)
        if packed is None:
            return session_id if session_id in self._others else None
        records = _Records(self._records)
        index = bisect.bisect_left(records, packed)
        return index if index < len(records) and records[index] == packed else None


class _Records(Sequence[bytes]):
    """A bytearray of 16-byte records, seen as a sequence for bisect."""

    def __init__(self, raw: bytearray) -> None:
        self._raw = raw

    def __len__(self) -> int:
        return len(self._raw) // _RECORD

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        return _slice(self._raw, index)


def _run(raw: bytearray, start: int, end: int) -> Iterator[bytes]:
    for index in range(start, end):
        yield _slice(raw, index)


def _slice(raw: bytearray, index: int) -> bytes:
    return bytes(raw[index * _RECORD : (index + 1) * _RECORD])


def _packed(session_id: str) -> bytes | None:
    """16 bytes for an id in UUID's canonical form (so unpacking gives it back exactly),
    None for any other."""
    if len(session_id) != 36:
        return None
    try:
        parsed = uuid.UUID(session_id)
    except ValueError:
        return None
    return parsed.bytes if str(parsed) == session_id else None
