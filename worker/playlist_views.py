"""The `playlists` subcommand's calls and answers: list (every page), show, create.

Each playlist in an answer is checked before it is shown (an id that is a numeric
string, a name; the counts and times as the official client's models type them), so a
hostile answer is an error, never a table of garbage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from typing import TextIO

from worker.api import create_playlist, get_playlist, list_playlists
from worker.paging import ApiCallFailed, Send, pages, payload
from worker.playlists import PLAYLIST_PAGE_SIZE, parse_playlist


@dataclass(frozen=True, slots=True)
class PlaylistView:
    id: int
    name: str
    description: str | None
    session_count: int | None
    created_at: str | None
    updated_at: str | None


def view_of(item: object) -> PlaylistView:
    """A playlist of an answer, checked; ApiCallFailed when it is not the documented JSON."""
    playlist_id, name = parse_playlist(item)
    assert isinstance(item, dict)
    attributes = item["attributes"]
    count = attributes.get("session_count")
    return PlaylistView(
        playlist_id,
        name,
        _text(attributes.get("description")),
        count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None,
        _text(attributes.get("created_at")),
        _text(attributes.get("updated_at")),
    )


def _text(value: object) -> str | None:
    return value[:500] if isinstance(value, str) else None


def _data(answer_payload: object, what: str) -> object:
    data = answer_payload.get("data") if isinstance(answer_payload, dict) else None
    if data is None:
        raise ApiCallFailed(f"{what}: the answer holds no playlist")
    return data


async def listed(send: Send, name: str | None) -> AsyncIterator[PlaylistView]:
    """Every playlist whose name holds `name` (the API's search; all when None)."""

    def page_items(page: object) -> list[PlaylistView]:
        items = _data(page, "listing the playlists")
        if not isinstance(items, list):
            raise ApiCallFailed('listing the playlists: the answer is not {"data": [...]}')
        return [view_of(item) for item in items]

    async for page in pages(
        send,
        lambda number: list_playlists(name, number, PLAYLIST_PAGE_SIZE),
        page_items,
        lambda view: view.id,
        "listing the playlists",
    ):
        for view in page:
            yield view


async def shown(send: Send, playlist_id: int) -> PlaylistView:
    what = f"reading playlist {playlist_id}"
    return view_of(_data(payload(await send(get_playlist(playlist_id)), what), what))


async def created(send: Send, name: str, description: str | None) -> PlaylistView:
    if not name.strip():
        raise ValueError("a playlist name must not be empty or blank")
    what = "creating the playlist"
    return view_of(_data(payload(await send(create_playlist(name, description)), what), what))


def write_ndjson(views: Iterable[PlaylistView], out: TextIO) -> None:
    for view in views:
        out.write(json.dumps(asdict(view), ensure_ascii=False) + "\n")


def write_table(views: Iterable[PlaylistView], out: TextIO) -> None:
    """A table for a person at a terminal (rich, imported for this case only)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "sessions", "description", "updated")
    for view in views:
        table.add_row(
            str(view.id),
            view.name,
            "" if view.session_count is None else str(view.session_count),
            view.description or "",
            view.updated_at or "",
        )
    Console(file=out).print(table)
