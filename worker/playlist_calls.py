"""The requests the playlist logic sends and what it reads of the answers.

A stand-in, shaped exactly like the shared interface (`worker.api.Request` and its
builders, `worker.answers.Answer`), for a branch where those modules do not exist yet:
on integration this module goes, and its importers take `Request` and the builders from
`worker.api`; `Answer` satisfies `AnswerLike` as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

PLAYLISTS_PATH = "/api/v2/rum/replay/playlists"
SESSION_TYPE = "rum_replay_session"
PLAYLIST_TYPE = "rum_replay_playlist"


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: object = None
    family: str = "playlist_sessions"
    body_cap: int = 64 * 1024
    want_payload: bool = False


class AnswerLike(Protocol):
    """The fields of `worker.answers.Answer` this logic reads."""

    @property
    def status(self) -> int | None: ...

    @property
    def error(self) -> str | None: ...

    @property
    def payload(self) -> object: ...

    @property
    def body_problem(self) -> str | None: ...


Send = Callable[[Request], Awaitable[AnswerLike]]
"""Sends one request (through the pacer and retries) and never raises for what the
network or the server does."""


def list_playlists(query: str | None, page: int, size: int) -> Request:
    params = [("page[number]", str(page)), ("page[size]", str(size))]
    if query is not None:
        params.insert(0, ("filter[query]", query))
    return Request(
        "GET",
        PLAYLISTS_PATH,
        tuple(params),
        family="playlists",
        body_cap=1 << 20,
        want_payload=True,
    )


def create_playlist(name: str, description: str | None) -> Request:
    attributes = (
        {"name": name} if description is None else {"name": name, "description": description}
    )
    body = {"data": {"type": PLAYLIST_TYPE, "attributes": attributes}}
    return Request("POST", PLAYLISTS_PATH, body=body, family="playlists", want_payload=True)


def list_sessions(playlist_id: int, page: int, size: int) -> Request:
    query = (("page[number]", str(page)), ("page[size]", str(size)))
    return Request("GET", _sessions_path(playlist_id), query, body_cap=8 << 20, want_payload=True)


def remove_session(playlist_id: int, session_id: str) -> Request:
    return Request("DELETE", f"{_sessions_path(playlist_id)}/{quote(session_id, safe='')}")


def remove_sessions(playlist_id: int, session_ids: Sequence[str]) -> Request:
    body = {"data": [{"id": session_id, "type": SESSION_TYPE} for session_id in session_ids]}
    return Request("DELETE", _sessions_path(playlist_id), body=body)


def _sessions_path(playlist_id: int) -> str:
    return f"{PLAYLISTS_PATH}/{playlist_id}/sessions"
