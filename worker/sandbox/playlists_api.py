"""Datadog's RUM replay playlists API, as the official client models it: the playlists
(create 201, list, get, update, delete 204) and their sessions (add 201/200, list, remove
one 204, remove many 204).

Which playlists exist: with `SandboxConfig.playlists` set, those and the ones created
since; others answer 404. Without it every playlist exists, and one comes into being
(named "playlist ID") the first time a request names it, so a PUT into any id works as
it always has and the playlists listing still shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import islice
from typing import TypeVar

from worker.sandbox.config import PLAYLIST_SESSIONS, PLAYLISTS, SandboxConfig
from worker.sandbox.routing import Call, Reply, Route
from worker.sandbox.store import PlaylistRecord, SessionRecord, Stats, Store
from worker.sandbox.wire import (
    PLAYLIST_TYPE,
    SESSION_LIST_HINT,
    ApiError,
    parse_data_source,
    parse_page_param,
    parse_playlist_body,
    parse_playlist_id,
    parse_session_id,
    parse_session_list,
    parse_ts,
    resource,
)

T = TypeVar("T")

ADD_SESSION = "add_session"
COLLECTION = "/api/v2/rum/replay/playlists"
PLAYLIST = f"{COLLECTION}/{{}}"
SESSIONS = f"{PLAYLIST}/sessions"
SESSION = f"{SESSIONS}/{{}}"

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_NUMBER = 2**31 - 1
SANDBOX_USER = {
    "handle": "sandbox@example.com",
    "id": "1",
    "uuid": "00000000-0000-0000-0000-00000000cafe",
    "name": "Sandbox",
}
"""Who created every playlist (`filter[created_by_uuid]` matches its uuid)."""


class PlaylistsApi:
    def __init__(self, store: Store, stats: Stats, config: Callable[[], SandboxConfig]) -> None:
        self._store = store
        self._stats = stats
        self._config = config
        """The live config: a sandbox reconfigured while serving hands out a new one."""

    def routes(self) -> tuple[Route, ...]:
        sessions, playlists = PLAYLIST_SESSIONS, PLAYLISTS
        return (
            Route.of(ADD_SESSION, "PUT", SESSION, sessions, self.add_session),
            Route.of("remove_session", "DELETE", SESSION, sessions, self.remove_session),
            Route.of("list_sessions", "GET", SESSIONS, sessions, self.list_sessions),
            Route.of("remove_sessions", "DELETE", SESSIONS, sessions, self.remove_sessions),
            Route.of("create_playlist", "POST", COLLECTION, playlists, self.create_playlist),
            Route.of("list_playlists", "GET", COLLECTION, playlists, self.list_playlists),
            Route.of("get_playlist", "GET", PLAYLIST, playlists, self.get_playlist),
            Route.of("update_playlist", "PUT", PLAYLIST, playlists, self.update_playlist),
            Route.of("delete_playlist", "DELETE", PLAYLIST, playlists, self.delete_playlist),
        )

    def seed(self) -> None:
        """The playlists the config says exist at the start."""
        now = self._config().clock()
        for playlist_id in sorted(self._config().playlists or ()):
            self._store.put_record(playlist_id, _named(playlist_id, now))

    # --- sessions ---------------------------------------------------------------------

    async def add_session(self, call: Call) -> Reply:
        playlist_id = parse_playlist_id(call.params[0])
        session_id = parse_session_id(call.params[1])
        ts = parse_ts(call.query.get("ts"))
        data_source = parse_data_source(call.query.get("data_source"))
        self._existing(playlist_id)
        created = self._store.add(playlist_id, session_id, SessionRecord(ts, data_source))
        if not created:
            self._stats.duplicate_puts += 1
        record = self._store.get(playlist_id, session_id)
        assert record is not None
        return Reply.json(201 if created else 200, {"data": resource(session_id, record)})

    async def remove_session(self, call: Call) -> Reply:
        """204 whether or not the playlist held the session, as Datadog answers."""
        playlist_id = self._existing(parse_playlist_id(call.params[0]))
        self._store.remove(playlist_id, [parse_session_id(call.params[1])])
        return Reply(204)

    async def list_sessions(self, call: Call) -> Reply:
        """`{"data": [...]}` with no total and no links: a client stops at a short page."""
        playlist_id = self._existing(parse_playlist_id(call.params[0]))
        sessions = self._store.sessions(playlist_id).items()
        page = [resource(session_id, record) for session_id, record in self._page(call, sessions)]
        return Reply.json(200, {"data": page})

    async def remove_sessions(self, call: Call) -> Reply:
        playlist_id = self._existing(parse_playlist_id(call.params[0]))
        session_ids = parse_session_list(await call.json(SESSION_LIST_HINT))
        most = self._config().faults.max_bulk
        if most is not None and len(session_ids) > most:
            raise ApiError(
                400,
                f"too many sessions: at most {most} sessions per request, not {len(session_ids)}",
            )
        self._store.remove(playlist_id, session_ids)
        return Reply(204)

    # --- playlists --------------------------------------------------------------------

    async def create_playlist(self, call: Call) -> Reply:
        name, description = parse_playlist_body(await call.json("a playlist"))
        playlist_id = self._store.new_id()
        now = self._config().clock()
        self._store.put_record(playlist_id, PlaylistRecord(name, description, now, now))
        return self._playlist_reply(201, playlist_id)

    async def list_playlists(self, call: Call) -> Reply:
        """`filter[query]` matches any part of the name, ignoring case (so a client must
        pick the exact name itself); `filter[created_by_uuid]` the creator exactly."""
        text = (call.query.get("filter[query]") or "").casefold()
        creator = call.query.get("filter[created_by_uuid]")
        found = (
            (playlist_id, record)
            for playlist_id, record in self._store.records()
            if text in record.name.casefold() and creator in (None, SANDBOX_USER["uuid"])
        )
        page = [self._playlist_json(*item) for item in self._page(call, found)]
        return Reply.json(200, {"data": page})

    async def get_playlist(self, call: Call) -> Reply:
        playlist_id = self._existing(parse_playlist_id(call.params[0]))
        return self._playlist_reply(200, playlist_id)

    async def update_playlist(self, call: Call) -> Reply:
        playlist_id = self._existing(parse_playlist_id(call.params[0]))
        name, description = parse_playlist_body(await call.json("a playlist"), playlist_id)
        record = self._store.record(playlist_id)
        assert record is not None
        updated = PlaylistRecord(name, description, record.created_at, self._config().clock())
        self._store.put_record(playlist_id, updated)
        return self._playlist_reply(200, playlist_id)

    async def delete_playlist(self, call: Call) -> Reply:
        """Its sessions go with it. Where every playlist exists, it comes back (empty)
        the next time a request names it."""
        playlist_id = self._existing(parse_playlist_id(call.params[0]))
        self._store.delete_record(playlist_id)
        return Reply(204)

    # --- shared -----------------------------------------------------------------------

    def _existing(self, playlist_id: int) -> int:
        if self._store.record(playlist_id) is None:
            if self._config().playlists is not None:
                raise ApiError(404, f"playlist {playlist_id} not found")
            self._store.put_record(playlist_id, _named(playlist_id, self._config().clock()))
        return playlist_id

    def _page(self, call: Call, items: Iterable[T]) -> list[T]:
        """The page asked for, at most `page_size_cap` long; pages are cut at the size
        actually given, so a client that keeps asking sees every item once."""
        number = parse_page_param(call.query, "page[number]", 0, MAX_PAGE_NUMBER)
        size = parse_page_param(
            call.query, "page[size]", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, minimum=1
        )
        cap = self._config().faults.page_size_cap
        size = size if cap is None else min(size, cap)
        return list(islice(items, number * size, (number + 1) * size))

    def _playlist_reply(self, status: int, playlist_id: int) -> Reply:
        record = self._store.record(playlist_id)
        assert record is not None
        return Reply.json(status, {"data": self._playlist_json(playlist_id, record)})

    def _playlist_json(self, playlist_id: int, record: PlaylistRecord) -> dict[str, object]:
        attributes: dict[str, object] = {
            "name": record.name,
            "session_count": len(self._store.sessions(playlist_id)),
            "created_at": _iso(record.created_at),
            "updated_at": _iso(record.updated_at),
            "created_by": SANDBOX_USER,
        }
        if record.description is not None:
            attributes["description"] = record.description
        return {"id": str(playlist_id), "type": PLAYLIST_TYPE, "attributes": attributes}


def _named(playlist_id: int, now: float) -> PlaylistRecord:
    return PlaylistRecord(f"playlist {playlist_id}", None, now, now)


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
