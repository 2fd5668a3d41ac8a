"""The sandbox's route table: what an endpoint module hands the server.

An endpoint is a `Route`: a method, a path pattern, the rate-limit `Family` it draws on
and an async handler from `Call` to `Reply`. The server does everything that is the
same for every endpoint (the request log, keys, the family's rate limit and headers,
faults, the answer's body dressing), so a handler holds only its endpoint's logic and
raises `ApiError` for what it refuses. Adding an endpoint is adding a Route to the table.

Patterns match the raw, still percent-encoded path, one segment per `{}`: an id is cut
out of its own segment first and decoded exactly once by its handler.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import MultiDictProxy

from worker.sandbox.config import Family
from worker.sandbox.wire import ApiError, json_bytes

PARAM = "{}"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes | None = None
    """None: no body (a 204)."""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: object) -> Reply:
        return cls(status, json_bytes(value))


@dataclass(frozen=True, slots=True)
class Call:
    request: web.BaseRequest
    params: tuple[str, ...]
    """The raw path segments the pattern's `{}` matched, in order."""

    @property
    def query(self) -> MultiDictProxy[str]:
        return self.request.rel_url.query

    async def json(self, hint: str) -> object:
        """The body as JSON; a 400 saying `hint` when it is not."""
        try:
            return json.loads(await self.request.read())
        except ValueError:
            raise ApiError(400, f"the body is not JSON: {hint}") from None


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    """What the sandbox counts the route's calls by (`stats.calls`)."""
    method: str
    pattern: tuple[str, ...]
    family: Family
    handler: Handler

    @classmethod
    def of(cls, name: str, method: str, path: str, family: Family, handler: Handler) -> Route:
        """`path` like `/api/v2/rum/replay/playlists/{}/sessions`."""
        return cls(name, method, tuple(path.split("/")), family, handler)

    def match(self, segments: tuple[str, ...]) -> tuple[str, ...] | None:
        """The parameters, if the path fits the pattern (whatever the method)."""
        if len(segments) != len(self.pattern):
            return None
        params = []
        for pattern, segment in zip(self.pattern, segments, strict=True):
            if pattern == PARAM:
                params.append(segment)
            elif pattern != segment:
                return None
        return tuple(params)

    @property
    def path(self) -> str:
        return "/".join(self.pattern)
