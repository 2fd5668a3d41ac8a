"""The API's calls as plain descriptions: method, path, query, body, and how much to read.

One builder per endpoint, so a path parameter is percent-encoded in one place and every
call states its rate-limit family and the most answer it may read (`body_cap`). The caps
are sized to the largest legitimate answer of each call, measured on answers built from
the official client's models (`datadog_api_client.v2.model`):

* the PUT, the DELETEs, a playlist's own calls: one JSON:API document of a few hundred
  bytes (a session's `session_event` included: ~2.4 KB), so 64 KiB (`SMALL_CAP`);
* a page of a playlist's sessions or of RUM events: one session event per item, ~2.4 KB
  for a realistic session event (replay, views, user, geo, device, context; 2.1 MB for
  1,000 sessions, 2.4 MB for a search page of 1,000 events). Such a page may read
  `EVENT_ALLOWANCE` (16 KiB, ~7x the measured event, for large custom contexts) per item
  asked for, plus `SMALL_CAP` for the envelope: 16.1 MiB for 1,000 events.

A larger answer is not read past its cap (`worker.client`): memory stays flat whatever a
server sends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple
from urllib.parse import quote

from worker.records import new_record
from worker.rows import Row

PLAYLISTS = "/api/v2/rum/replay/playlists"
SEARCH = "/api/v2/rum/events/search"
SMALL_CAP = 64 * 1024
EVENT_ALLOWANCE = 16 * 1024
MAX_PAGE_ITEMS = 1000
"""The search's documented `page.limit` ceiling; a sessions page is capped alike."""

_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")
"""What `quote(..., safe="")` leaves as it is."""


class Request(NamedTuple):
    """One call, as a plain description (a NamedTuple: made once per request, see
    `worker.answers.RateLimit`)."""

    method: str  # "PUT" | "DELETE" | "GET" | "POST" | "PATCH"
    path: str  # percent-encoded path, e.g. "/api/v2/rum/replay/playlists/12/sessions"
    query: str = ""
    """The percent-encoded query string, without its `?` (`query_string`): encoded by the
    builder, as the path is, so a row's URL is two strings joined."""
    body: object = None  # sent as JSON when not None
    family: str = "playlist_sessions"  # "playlist_sessions" | "playlists" | "rum_search"
    body_cap: int = SMALL_CAP  # answer bytes read at most (decompressed)
    want_payload: bool = False  # parse a 2xx body as JSON into Answer.payload


def segment(value: str) -> str:
    """One path segment, percent-encoded with no safe characters, so an id holding `/`,
    `?`, `#` or `%` can never leave its own segment."""
    if value.isascii() and value.replace("-", "").isalnum():  # a number, a name, a UUID
        return value
    if _UNRESERVED.fullmatch(value):  # no character to quote: skip the work
        return value
    return quote(value, safe="")


def query_string(*pairs: tuple[str, str]) -> str:
    """`pairs` as a query string, each key and value percent-encoded with no safe
    characters (`page[size]` goes as `page%5Bsize%5D`, as the official client sends it)."""
    return "&".join([f"{segment(key)}={segment(value)}" for key, value in pairs])


def page_cap(items: int) -> int:
    """The cap for a page of `items` session events (see the module's note)."""
    return SMALL_CAP + EVENT_ALLOWANCE * max(1, min(items, MAX_PAGE_ITEMS))


def add_session(row: Row) -> Request:
    """PUT .../playlists/{pid}/sessions/{sid}?ts=&data_source=: 201 added, 200 present."""
    # What `query_string` would write, in one f-string: `ts` is an int, and its digits
    # and the constant keys need no encoding (a test holds the two to the same string).
    playlist_id, session_id, ts, data_source, _, _ = row  # one unpacking, not four reads
    data_source = segment(data_source)
    query = f"data_source={data_source}" if ts is None else f"ts={ts}&data_source={data_source}"
    path = f"{PLAYLISTS}/{playlist_id}/sessions/{segment(session_id)}"
    return new_record(Request, ("PUT", path, query, None, "playlist_sessions", SMALL_CAP, False))


def remove_session(playlist_id: int, session_id: str) -> Request:
    """DELETE .../playlists/{pid}/sessions/{sid}: 204."""
    return Request("DELETE", f"{PLAYLISTS}/{playlist_id}/sessions/{segment(session_id)}")


def remove_sessions(playlist_id: int, session_ids: Sequence[str]) -> Request:
    """DELETE .../playlists/{pid}/sessions with the ids in the body: 204."""
    body = {"data": [{"id": sid, "type": "rum_replay_session"} for sid in session_ids]}
    return Request("DELETE", f"{PLAYLISTS}/{playlist_id}/sessions", body=body)


def list_sessions(playlist_id: int, page: int, size: int) -> Request:
    """GET .../playlists/{pid}/sessions?page[number]=&page[size]=: `{"data": [...]}`."""
    return Request(
        "GET",
        f"{PLAYLISTS}/{playlist_id}/sessions",
        query_string(("page[number]", str(page)), ("page[size]", str(size))),
        body_cap=page_cap(size),
        want_payload=True,
    )


def search_events(body: Mapping[str, object]) -> Request:
    """POST /api/v2/rum/events/search: one page of events, capped by its `page.limit`."""
    page = body.get("page")
    limit = page.get("limit") if isinstance(page, Mapping) else None
    items = limit if isinstance(limit, int) and not isinstance(limit, bool) else MAX_PAGE_ITEMS
    return Request(
        "POST",
        SEARCH,
        body=dict(body),
        family="rum_search",
        body_cap=page_cap(items),
        want_payload=True,
    )


def list_playlists(query: str | None, page: int, size: int) -> Request:
    """GET /api/v2/rum/replay/playlists?filter[query]=&page[number]=&page[size]=."""
    params: tuple[tuple[str, str], ...] = (("page[number]", str(page)), ("page[size]", str(size)))
    if query is not None:
        params = (("filter[query]", query), *params)
    return Request(
        "GET",
        PLAYLISTS,
        query_string(*params),
        family="playlists",
        # A playlist is a few hundred bytes; a generous 4 KiB each.
        body_cap=SMALL_CAP + 4096 * max(1, min(size, MAX_PAGE_ITEMS)),
        want_payload=True,
    )


def get_playlist(playlist_id: int) -> Request:
    return Request("GET", f"{PLAYLISTS}/{playlist_id}", family="playlists", want_payload=True)


def create_playlist(name: str, description: str | None) -> Request:
    """POST /api/v2/rum/replay/playlists: 201 with the playlist (its id a string)."""
    attributes: dict[str, object] = {"name": name}
    if description is not None:
        attributes["description"] = description
    body = {"data": {"type": "rum_replay_playlist", "attributes": attributes}}
    return Request("POST", PLAYLISTS, body=body, family="playlists", want_payload=True)
