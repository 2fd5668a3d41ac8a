"""The test control plane under /_sandbox/: read the state, change the limit or the
faults mid-run, start afresh. It needs no key and is neither rate-limited, counted nor
logged, so inspecting a sandbox never changes what a test measures."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from worker.sandbox.ratelimit import parse_rate_limit
from worker.sandbox.wire import json_bytes

if TYPE_CHECKING:
    from worker.sandbox.app import Sandbox

PREFIX = "/_sandbox/"

_CONFIG_HINT = (
    'send {"rate_limit": "LIMIT/PERIOD", "faults": {<FaultConfig fields>}}, either part optional'
)


async def handle(sandbox: Sandbox, request: web.BaseRequest, action: str) -> web.Response:
    route = (request.method, action)
    if route == ("GET", "state"):
        return _json(200, sandbox.state())
    if route == ("POST", "reset"):
        sandbox.reset()
        return web.Response(status=204)
    if route == ("POST", "config"):
        try:
            _configure(sandbox, await request.read())
        except ValueError as exc:
            return _json(400, {"errors": [str(exc)]})
        return _json(200, sandbox.state()["config"])
    message = (
        f"no such control route: {request.method} {PREFIX}{action}; "
        "use GET state, POST config or POST reset"
    )
    return _json(404, {"errors": [message]})


def _configure(sandbox: Sandbox, raw: bytes) -> None:
    """Checks the whole change before applying any of it."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ValueError(f"the body is not JSON: {_CONFIG_HINT}") from None
    if not isinstance(body, dict) or not set(body) <= {"rate_limit", "faults"}:
        raise ValueError(f"not a config change: {_CONFIG_HINT}")
    rate_limit = body.get("rate_limit")
    faults = body.get("faults")
    if rate_limit is not None and not isinstance(rate_limit, str):
        raise ValueError(f"rate_limit must be a string like 100/2; {_CONFIG_HINT}")
    if faults is not None and not isinstance(faults, dict):
        raise ValueError(f"faults must be an object; {_CONFIG_HINT}")
    sandbox.reconfigure(
        rate_limit=None if rate_limit is None else parse_rate_limit(rate_limit),
        faults=None if faults is None else sandbox.config.faults.updated(faults),
    )


def _json(status: int, value: object) -> web.Response:
    return web.Response(status=status, body=json_bytes(value), content_type="application/json")
