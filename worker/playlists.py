"""A playlist by the name a team knows it by: `--playlist-name`.

Datadog's `filter[query]` is a search, not an exact match (it may return "Backfill 2"
for "Backfill"), so every page of its results is read and the exact name picked here.
"""

from __future__ import annotations

import re

from worker.api import create_playlist, list_playlists
from worker.paging import ApiCallFailed, Send, pages, payload

PLAYLIST_PAGE_SIZE = 100
"""Playlists per page while resolving a name: one page for any sensible search."""

PLAYLIST_TYPE = "rum_replay_playlist"
_ID = re.compile(r"[1-9][0-9]{0,18}")


class PlaylistNotFound(Exception):
    """No playlist has the exact name: exit 2, unless creating it was asked."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no playlist is named {name!r} (names are matched exactly, case included): "
            "check the name with `playlists list --name`, or add --create-playlist"
        )


class PlaylistAmbiguous(Exception):
    """Several playlists have the exact name: exit 2, naming them."""

    def __init__(self, name: str, ids: list[int]) -> None:
        shown = ", ".join(map(str, ids))
        super().__init__(
            f"{len(ids)} playlists are named {name!r} (ids {shown}): "
            "choose one with --playlist ID, or rename the others"
        )
        self.ids = ids


async def resolve_playlist(
    send: Send, name: str, *, create: bool = False, description: str | None = None
) -> int:
    """The id of the one playlist named exactly `name`; with `create`, a new playlist's
    when there is none. Raises PlaylistNotFound, PlaylistAmbiguous or ApiCallFailed."""
    if not name.strip():
        raise ValueError("a playlist name must not be empty or blank")
    matches: list[int] = []
    listing = pages(
        send,
        lambda number: list_playlists(name, number, PLAYLIST_PAGE_SIZE),
        _playlists,
        lambda item: item[0],
        "listing the playlists",
    )
    async for page in listing:
        matches += [playlist_id for playlist_id, found in page if found == name]
    if len(matches) > 1:
        raise PlaylistAmbiguous(name, sorted(set(matches)))
    if matches:
        return matches[0]
    if not create:
        raise PlaylistNotFound(name)
    created = payload(await send(create_playlist(name, description)), "creating the playlist")
    data = created.get("data") if isinstance(created, dict) else None
    if not isinstance(data, dict):
        raise ApiCallFailed("creating the playlist: the answer holds no playlist")
    return parse_playlist(data)[0]


def _playlists(page: object) -> list[tuple[int, str]]:
    """(id, name) of each playlist of a listing page."""
    items = page.get("data") if isinstance(page, dict) else None
    if not isinstance(items, list):
        raise ApiCallFailed('listing the playlists: the answer is not {"data": [...]}')
    return [parse_playlist(item) for item in items]


def parse_playlist(item: object) -> tuple[int, str]:
    """(id, name) of a playlist of an answer; ApiCallFailed when it is not as documented."""
    if isinstance(item, dict):
        raw_id, attributes = item.get("id"), item.get("attributes")
        name = attributes.get("name") if isinstance(attributes, dict) else None
        if (
            item.get("type") == PLAYLIST_TYPE
            and isinstance(raw_id, str)
            and _ID.fullmatch(raw_id)
            and isinstance(name, str)
        ):
            return int(raw_id), name
    raise ApiCallFailed(
        "the server's playlist is not the documented JSON "
        f'(a "{PLAYLIST_TYPE}" with a numeric string id and a name)'
    )
