"""The test control plane under /_sandbox/: read the state, change the limits or the
faults mid-run, lose sessions server-side, start afresh. It needs no key and is neither
rate-limited, counted nor logged, so inspecting a sandbox never changes what a test
measures."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Protocol

from aiohttp import web

from worker.sandbox.config import FAMILIES, Family, SandboxConfig
from worker.sandbox.faults import FaultConfig
from worker.sandbox.ratelimit import parse_rate_limit
from worker.sandbox.wire import json_bytes

PREFIX = "/_sandbox/"

_LIMIT_FIELDS = tuple(family.config_field for family in FAMILIES)
_CONFIG_HINT = (
    'send {"rate_limit": "LIMIT/PERIOD", "playlists_rate_limit": "LIMIT/PERIOD", '
    '"search_rate_limit": "LIMIT/PERIOD", "faults": {<FaultConfig fields>}}, each part optional'
)
_DROP_HINT = (
    'send {"playlist_id": ID, "session_ids": ["<id>", ...]} or {"playlist_id": ID, "every": N}'
)


class Controlled(Protocol):
    """What the control plane needs of a sandbox (the server implements it)."""

    @property
    def config(self) -> SandboxConfig: ...

    def state(self) -> dict[str, object]: ...

    def reset(self) -> None: ...

    def change(
        self, limits: Mapping[Family, tuple[int, float]], faults: FaultConfig | None
    ) -> None: ...

    def drop_sessions(
        self,
        playlist_id: int,
        *,
        session_ids: Collection[str] | None = None,
        every: int | None = None,
    ) -> list[str]: ...


async def handle(sandbox: Controlled, request: web.BaseRequest, action: str) -> web.Response:
    route = (request.method, action)
    if route == ("GET", "state"):
        return _json(200, sandbox.state())
    if route == ("POST", "reset"):
        sandbox.reset()
        return web.Response(status=204)
    try:
        if route == ("POST", "config"):
            _configure(sandbox, await request.read())
            config = sandbox.state()["config"]
            return _json(200, config)
        if route == ("POST", "drop_sessions"):
            return _json(200, {"dropped": _drop(sandbox, await request.read())})
    except ValueError as exc:
        return _json(400, {"errors": [str(exc)]})
    message = (
        f"no such control route: {request.method} {PREFIX}{action}; "
        "use GET state, POST config, POST drop_sessions or POST reset"
    )
    return _json(404, {"errors": [message]})


def _configure(sandbox: Controlled, raw: bytes) -> None:
    """Checks the whole change before applying any of it."""
    body = _object(raw, _CONFIG_HINT)
    if not set(body) <= {*_LIMIT_FIELDS, "faults"}:
        raise ValueError(f"not a config change: {_CONFIG_HINT}")
    limits: dict[Family, tuple[int, float]] = {}
    for family in FAMILIES:
        text = body.get(family.config_field)
        if text is None:
            continue
        if not isinstance(text, str):
            raise ValueError(f"{family.config_field} must be a string like 100/2; {_CONFIG_HINT}")
        limits[family] = parse_rate_limit(text)
    faults = body.get("faults")
    if faults is not None and not isinstance(faults, dict):
        raise ValueError(f"faults must be an object; {_CONFIG_HINT}")
    sandbox.change(limits, None if faults is None else sandbox.config.faults.updated(faults))


def _drop(sandbox: Controlled, raw: bytes) -> list[str]:
    body = _object(raw, _DROP_HINT)
    playlist_id, session_ids, every = (
        body.get("playlist_id"),
        body.get("session_ids"),
        body.get("every"),
    )
    if not set(body) <= {"playlist_id", "session_ids", "every"} or not (
        isinstance(playlist_id, int) and not isinstance(playlist_id, bool)
    ):
        raise ValueError(f"not a drop: {_DROP_HINT}")
    if session_ids is not None and not (
        isinstance(session_ids, list) and all(isinstance(sid, str) for sid in session_ids)
    ):
        raise ValueError(f"session_ids must be a list of strings: {_DROP_HINT}")
    if every is not None and not isinstance(every, int):
        raise ValueError(f"every must be a whole number: {_DROP_HINT}")
    return sandbox.drop_sessions(playlist_id, session_ids=session_ids, every=every)


def _object(raw: bytes, hint: str) -> dict[str, object]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError(f"the body is not JSON: {hint}") from None
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object: {hint}")
    return body


def _json(status: int, value: object) -> web.Response:
    return web.Response(status=status, body=json_bytes(value), content_type="application/json")
