"""What the sandbox holds and what it has seen: the playlists and their sessions, the
counters and a bounded log of requests. Tests read these to check what a client really did,
not just what it reported."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields

from aiohttp import web


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as its playlist holds it: from the first PUT that added it."""

    ts: int
    data_source: str


@dataclass(frozen=True, slots=True)
class PlaylistRecord:
    name: str
    description: str | None
    created_at: float
    updated_at: float
    """Wall-clock seconds."""


class Store:
    """Playlists, and sessions per playlist in the order they were added.

    Sessions are kept apart from the playlist records so that a sandbox where every
    playlist exists can hold sessions of playlists nobody created.
    """

    def __init__(self) -> None:
        self._playlists: dict[int, dict[str, SessionRecord]] = {}
        self._records: dict[int, PlaylistRecord] = {}
        self._last_id = 0

    def add(self, playlist_id: int, session_id: str, record: SessionRecord) -> bool:
        """True if the session is new to the playlist; a repeat keeps the first record."""
        sessions = self._playlists.setdefault(playlist_id, {})
        if session_id in sessions:
            return False
        sessions[session_id] = record
        return True

    def get(self, playlist_id: int, session_id: str) -> SessionRecord | None:
        return self._playlists.get(playlist_id, {}).get(session_id)

    def sessions(self, playlist_id: int) -> Mapping[str, SessionRecord]:
        return self._playlists.get(playlist_id, {})

    def remove(self, playlist_id: int, session_ids: Iterable[str]) -> int:
        """Removes what is held of `session_ids`; returns how many were held."""
        sessions = self._playlists.get(playlist_id, {})
        return sum(sessions.pop(session_id, None) is not None for session_id in session_ids)

    def drop(self, playlist_id: int, keep: Callable[[int, str], bool]) -> list[str]:
        """Takes out the sessions (position, id) that `keep` refuses, as a server that
        lost them would; returns their ids."""
        sessions = self._playlists.get(playlist_id, {})
        gone = [sid for n, sid in enumerate(sessions) if not keep(n, sid)]
        for session_id in gone:
            del sessions[session_id]
        return gone

    def playlist_ids(self) -> list[int]:
        """The playlists that hold sessions."""
        return sorted(playlist for playlist, sessions in self._playlists.items() if sessions)

    def record(self, playlist_id: int) -> PlaylistRecord | None:
        return self._records.get(playlist_id)

    def records(self) -> list[tuple[int, PlaylistRecord]]:
        """Every playlist, by id."""
        return sorted(self._records.items())

    def put_record(self, playlist_id: int, record: PlaylistRecord) -> None:
        self._records[playlist_id] = record
        self._last_id = max(self._last_id, playlist_id)

    def new_id(self) -> int:
        """An id no playlist has had since the last clear()."""
        self._last_id += 1
        return self._last_id

    def delete_record(self, playlist_id: int) -> bool:
        """Deletes the playlist and its sessions; False if there was no such playlist."""
        self._playlists.pop(playlist_id, None)
        return self._records.pop(playlist_id, None) is not None

    def clear(self) -> None:
        self._playlists.clear()
        self._records.clear()
        self._last_id = 0

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._playlists.values())

    def to_json(self) -> dict[str, list[dict[str, object]]]:
        return {
            str(playlist): [
                {"session_id": session_id, **asdict(record)}
                for session_id, record in self._playlists[playlist].items()
            ]
            for playlist in self.playlist_ids()
        }


@dataclass(slots=True)
class Stats:
    """What the sandbox was asked and answered (the /_sandbox control routes aside)."""

    requests: int = 0
    """Requests to the API's routes, whatever became of them."""
    calls: Counter[str] = field(default_factory=Counter)
    """Requests by route name (`add_session`, `list_playlists`, ...)."""
    puts: int = 0
    duplicate_puts: int = 0
    """PUTs applied for a (playlist, session) already held: a client's wasted retries."""
    after_revoke: int = 0
    """Requests received after the keys were revoked: a client that does not stop."""
    dropped: int = 0
    """Connections closed without an answer: drop faults, and hangs once the server stops."""
    hung: int = 0
    redirected: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    """Answers sent, by status, unknown routes included."""

    def clear(self) -> None:
        self.requests = self.puts = self.duplicate_puts = 0
        self.after_revoke = self.dropped = self.hung = self.redirected = 0
        self.calls.clear()
        self.responses.clear()

    def to_json(self) -> dict[str, object]:
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "responses"},
            "calls": dict(sorted(self.calls.items())),
            "responses": {str(status): count for status, count in sorted(self.responses.items())},
        }


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """What a test may check about a request: never the key values."""

    method: str
    raw_path: str
    query_string: str
    header_names: tuple[str, ...]
    user_agent: str | None
    accept: str | None
    at: float
    """When it arrived, in `time.monotonic()` seconds: for checking a client's pace."""

    @classmethod
    def of(cls, request: web.BaseRequest) -> LoggedRequest:
        headers = request.headers
        return cls(
            at=time.monotonic(),
            method=request.method,
            raw_path=request.rel_url.raw_path,
            query_string=request.rel_url.raw_query_string,
            header_names=tuple(headers.keys()),
            user_agent=headers.get("User-Agent"),
            accept=headers.get("Accept"),
        )


class RequestLog(deque[LoggedRequest]):
    """The most recent requests, oldest first; older ones fall off."""

    def to_json(self) -> list[dict[str, object]]:
        return [asdict(entry) for entry in self]
