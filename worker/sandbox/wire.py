"""What Datadog accepts and sends on this API: parameter rules and JSON bodies.

The rules are written out here rather than imported from the client (`worker.rows`):
the sandbox stands for Datadog, so a mistake in the client's rules must show up as a
failed request, not be shared by both sides and pass unnoticed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from urllib.parse import unquote, unquote_to_bytes

from worker.sandbox.store import SessionRecord

SESSION_TYPE = "rum_replay_session"
PLAYLIST_TYPE = "rum_replay_playlist"
DATA_SOURCES = ("rum", "product_analytics")
"""Documented values of `data_source`; the first is the default."""
SESSION_LIST_HINT = (
    f'the body must be {{"data": [{{"id": "<session id>", "type": "{SESSION_TYPE}"}}]}}'
)
PLAYLIST_HINT = (
    f'the body must be {{"data": {{"type": "{PLAYLIST_TYPE}", '
    '"attributes": {"name": "<name>", "description": "<optional text>"}}}'
)
MAX_NAME_LENGTH = 256
"""Longest playlist name or description the sandbox takes (Datadog documents none)."""

_INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_SIGNED_DIGITS = re.compile(r"-?[0-9]{1,19}")


class ApiError(Exception):
    """A request the API refuses: answered `{"errors": [message]}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_playlist_id(segment: str) -> int:
    text = unquote(segment)
    if _DIGITS.fullmatch(text) and 0 < int(text) <= _INT64_MAX:
        return int(text)
    raise ApiError(400, f"playlist_id must be a positive 64-bit integer, not {_clip(text)!r}")


def parse_session_id(segment: str) -> str:
    """Decodes the path segment exactly once: `a%252F` is the id `a%2F`."""
    try:
        session_id = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(
            400, "session_id is not valid UTF-8 once percent-decoded: encode it as UTF-8"
        ) from None
    if not session_id:
        raise ApiError(400, "session_id must not be empty")
    return session_id


def parse_ts(text: str | None) -> int:
    if text is None:
        raise ApiError(
            400, "ts is required: the server-side timestamp in milliseconds, e.g. ts=1704067200000"
        )
    if _SIGNED_DIGITS.fullmatch(text) and abs(int(text)) <= _INT64_MAX:
        return int(text)
    raise ApiError(400, f"ts must be an integer number of milliseconds, not {_clip(text)!r}")


def parse_data_source(text: str | None) -> str:
    if text is None:
        return DATA_SOURCES[0]
    if text in DATA_SOURCES:
        return text
    raise ApiError(400, f"data_source must be 'rum' or 'product_analytics', not {_clip(text)!r}")


def parse_page_param(
    query: Mapping[str, str], name: str, default: int, maximum: int, minimum: int = 0
) -> int:
    text = query.get(name)
    if text is None:
        return default
    if _DIGITS.fullmatch(text) and minimum <= int(text) <= maximum:
        return int(text)
    raise ApiError(
        400, f"{name} must be an integer from {minimum} to {maximum}, not {_clip(text)!r}"
    )


def parse_session_list(body: object) -> list[str]:
    """The session ids of a bulk-delete body."""
    items = body.get("data") if isinstance(body, dict) else None
    if isinstance(items, list) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and entry.get("type") == SESSION_TYPE
        for entry in items
    ):
        return [entry["id"] for entry in items]
    raise ApiError(400, SESSION_LIST_HINT)


def parse_playlist_body(body: object, playlist_id: int | None = None) -> tuple[str, str | None]:
    """The (name, description) of a create or update body; an id in it, when given,
    must be the playlist's own."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or data.get("type") != PLAYLIST_TYPE:
        raise ApiError(400, PLAYLIST_HINT)
    if "id" in data and (playlist_id is None or data["id"] != str(playlist_id)):
        raise ApiError(400, f"the body's data.id {data['id']!r} is not this playlist's id")
    attributes = data.get("attributes")
    name = attributes.get("name") if isinstance(attributes, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, f"attributes.name must be a non-empty string: {PLAYLIST_HINT}")
    description = attributes.get("description") if isinstance(attributes, dict) else None
    if description is not None and not isinstance(description, str):
        raise ApiError(400, "attributes.description must be a string when given")
    for field_name, text in (("name", name), ("description", description or "")):
        if len(text) > MAX_NAME_LENGTH:
            raise ApiError(
                400, f"attributes.{field_name} is longer than {MAX_NAME_LENGTH} characters"
            )
    return name, description


def resource(session_id: str, record: SessionRecord) -> dict[str, object]:
    """A session as the API shows it (`session_event` is synthetic: Datadog's holds the
    raw RUM event, which the sandbox does not have)."""
    return {
        "id": session_id,
        "type": SESSION_TYPE,
        "attributes": {
            "session_event": {"timestamp": record.ts, "data_source": record.data_source},
            "track": record.data_source,
        },
    }


def json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def errors(message: str) -> bytes:
    return json_bytes({"errors": [message]})


def _clip(text: str) -> str:
    """Long enough to recognise, short enough that a huge parameter cannot flood a log."""
    return text if len(text) <= 64 else f"{text[:61]}..."
