"""The HTTP side: the route table, and what every route shares, done the way Datadog
does it: keys, one rate-limit budget per endpoint family with its headers, `{"errors":
[...]}` bodies, and the injected faults.

Routing works on the raw, still percent-encoded path rather than through aiohttp's
router: how that router decodes `%2F` has changed between aiohttp releases, and an id
must be cut out of its own segment first and then decoded exactly once, or `a%2Fb`
would become two segments. The low-level `web.Server` also keeps per-request work small
enough for benchmarks.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Collection, Mapping
from dataclasses import replace
from types import TracebackType

from aiohttp import web

from worker.sandbox import control, search
from worker.sandbox.config import (
    FAMILIES,
    PLAYLIST_SESSIONS,
    PLAYLISTS,
    RUM_SEARCH,
    Family,
    SandboxConfig,
)
from worker.sandbox.faults import Fault, FaultConfig, FaultPlan
from worker.sandbox.hostile import echoed_errors, gzip_bomb, padding
from worker.sandbox.playlists_api import ADD_SESSION, PlaylistsApi
from worker.sandbox.ratelimit import FixedWindowLimiter
from worker.sandbox.routing import Call, Reply, Route
from worker.sandbox.store import LoggedRequest, RequestLog, Stats, Store
from worker.sandbox.wire import ApiError, errors

_SHUTDOWN_TIMEOUT = 2.0
"""Seconds stop() lets in-flight answers finish (hung requests are released at once)."""
_NOT_JSON = b"<html><body><h1>200 OK</h1></body></html>"


class Sandbox:
    """A local stand-in for Datadog's RUM replay playlist API, on a loopback port.

    Everything is in memory and single-threaded on the event loop, so requests from any
    number of clients see one consistent store and one shared budget per family.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.store = Store()
        self.stats = Stats()
        self.requests = RequestLog(maxlen=self.config.request_log_size)
        """Recent API requests, oldest first; always empty in minimal mode."""
        self._log_requests = not self.config.minimal and self.config.request_log_size > 0
        self._limiters = {
            family.key: FixedWindowLimiter(
                *self.config.limit_of(family), family.header_name, self.config.clock
            )
            for family in FAMILIES
        }
        self._faults = FaultPlan(self.config.faults)
        self.search = search.SearchService(
            self.config.search, self._limiters[RUM_SEARCH.key], self.config.clock
        )
        self._playlists = PlaylistsApi(self.store, self.stats, lambda: self.config)
        self._playlists.seed()
        self._routes: tuple[Route, ...] = (*self._playlists.routes(), self.search.route())
        """Every endpoint, first match wins: an endpoint module adds its Routes here."""
        self._runner: web.ServerRunner | None = None
        self._base_url: str | None = None
        self._stopping = asyncio.Event()

    @property
    def base_url(self) -> str:
        """Like `http://127.0.0.1:54321`: what a client's `--base-url` takes."""
        if self._base_url is None:
            raise RuntimeError("the sandbox is not serving: await start() first")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listens on host:port (0: a free port) and returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already serving: stop() it before starting again")
        self._stopping = asyncio.Event()
        runner = web.ServerRunner(
            web.Server(self._handle, access_log=None), shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno,
                f"the sandbox cannot listen on {host}:{port} ({exc.strerror}): "
                "choose another port, or port 0 for any free one",
            ) from exc
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self._base_url = f"http://{shown}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        """Releases hung requests, closes every connection and stops listening."""
        if self._runner is None:
            return
        self._stopping.set()
        runner, self._runner, self._base_url = self._runner, None, None
        await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def reconfigure(
        self,
        *,
        rate_limit: tuple[int, float] | None = None,
        playlists_rate_limit: tuple[int, float] | None = None,
        search_rate_limit: tuple[int, float] | None = None,
        faults: FaultConfig | None = None,
    ) -> None:
        """Changes a family's limit or the faults while serving (see `change`)."""
        limits = {
            PLAYLIST_SESSIONS: rate_limit,
            PLAYLISTS: playlists_rate_limit,
            RUM_SEARCH: search_rate_limit,
        }
        self.change({f: limit for f, limit in limits.items() if limit is not None}, faults)

    def change(
        self, limits: Mapping[Family, tuple[int, float]], faults: FaultConfig | None
    ) -> None:
        """The current window's count is kept; new faults start a fresh random stream
        and revocation count."""
        for family, limit in limits.items():
            self._limiters[family.key].reconfigure(*limit)
        if faults is not None:
            self._faults = FaultPlan(faults)
        now = {family: self._limit(family) for family in FAMILIES}
        self.config = replace(self.config.with_limits(now), faults=self._faults.config)

    def reset(self) -> None:
        """Back to the configured playlists, no sessions and zero counters, with fresh
        windows and a fresh fault stream."""
        self.store.clear()
        self._playlists.seed()
        self.stats.clear()
        self.requests.clear()
        for limiter in self._limiters.values():
            limiter.reset()
        self._faults = FaultPlan(self._faults.config)

    def drop_sessions(
        self,
        playlist_id: int,
        *,
        session_ids: Collection[str] | None = None,
        every: int | None = None,
    ) -> list[str]:
        """Loses sessions server-side, as if Datadog had: those named, or the first and
        every `every`-th after it in the playlist's order. Returns the ids lost."""
        if (session_ids is None) == (every is None):
            raise ValueError("name either the session_ids to drop or every how many, not both")
        if every is not None:
            if isinstance(every, bool) or not isinstance(every, int) or every < 1:
                raise ValueError(f"every must be a whole number, 1 or more, not {every!r}")
            step = every
            return self.store.drop(playlist_id, lambda n, _: n % step != 0)
        wanted = set(session_ids or ())
        return self.store.drop(playlist_id, lambda _, session_id: session_id not in wanted)

    def state(self) -> dict[str, object]:
        """Everything a test may want to check, as JSON-ready data (never the keys)."""
        config = self.config
        return {
            "config": {
                "rate_limit": self._limit_json(PLAYLIST_SESSIONS),
                "rate_limits": {family.key: self._limit_json(family) for family in FAMILIES},
                "playlists": None if config.playlists is None else sorted(config.playlists),
                "keys_required": config.api_key is not None or config.app_key is not None,
                "minimal": config.minimal,
                "faults": config.faults.to_json(),
            },
            "stats": self.stats.to_json(),
            "playlists": [
                {
                    "id": playlist_id,
                    "name": record.name,
                    "description": record.description,
                    "session_count": len(self.store.sessions(playlist_id)),
                }
                for playlist_id, record in self.store.records()
            ],
            "sessions": self.store.to_json(),
            "requests": self.requests.to_json(),
        }

    def _limit(self, family: Family) -> tuple[int, float]:
        limiter = self._limiters[family.key]
        return limiter.limit, limiter.period

    def _limit_json(self, family: Family) -> dict[str, object]:
        limiter = self._limiters[family.key]
        return {"limit": limiter.limit, "period": limiter.period, "name": limiter.name}

    # --- HTTP -------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path == search.CONTROL_PATH:
            return await self.search.control(request)
        if path.startswith(control.PREFIX):
            return await control.handle(self, request, path[len(control.PREFIX) :])
        if self._log_requests:
            self.requests.append(LoggedRequest.of(request))
        segments = tuple(path.split("/"))
        methods = []
        for route in self._routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == request.method:
                return await self._api(request, route, Call(request, params))
            methods.append(route.method)
        if methods:
            allow = ", ".join(dict.fromkeys(methods))
            message = f"{request.method} is not allowed here; use {allow}"
            return await self._error(request, 405, message, {"Allow": allow})
        served = ", ".join(
            dict.fromkeys(route.path.replace("{}", "{id}") for route in self._routes)
        )
        message = f"no such route: {request.method} {path}; the sandbox serves {served}"
        return await self._error(request, 404, message, {})

    async def _api(self, request: web.BaseRequest, route: Route, call: Call) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.calls[route.name] += 1
        is_put = route.name == ADD_SESSION
        if is_put:
            stats.puts += 1
        fault = self._faults.draw(is_put)
        faults = self._faults.config
        delay = self._faults.latency()
        if delay:
            await asyncio.sleep(delay)
        if fault is Fault.HANG:
            stats.hung += 1
            await self._stopping.wait()
            return self._drop(request)
        if fault is Fault.DROP_BEFORE:
            return self._drop(request)
        if fault is Fault.BARE_429:
            wait = faults.retry_after_s
            reply = Reply(
                429,
                b"429 Too Many Requests\n",
                "text/plain",
                {} if wait is None else {"Retry-After": str(wait)},
            )
            return await self._send(request, reply)
        if faults.redirect_to is not None:
            stats.redirected += 1
            location = {"Location": faults.redirect_to}
            return await self._send(
                request, Reply(faults.redirect_status, b"", "text/plain", location)
            )

        revoked = self._faults.revoked()
        if revoked:
            stats.after_revoke += 1
        limiter = self._limiters[route.family.key]
        verdict = limiter.take()
        headers = limiter.headers(self._faults.skew(verdict)) if faults.ratelimit_headers else {}
        if revoked or not self._authorized(request):
            return await self._error(request, 403, "Forbidden", headers)
        if not verdict.allowed:
            return await self._error(request, 429, "Too many requests", headers)
        if fault is Fault.ERROR_BEFORE:
            return await self._server_error(request, headers)
        try:
            reply = await route.handler(call)
        except ApiError as exc:
            return await self._error(request, exc.status, exc.message, headers)
        if fault is Fault.DROP_AFTER:
            return self._drop(request)
        if fault is Fault.ERROR_AFTER:
            return await self._server_error(request, headers)
        if fault is Fault.NON_JSON and reply.body is not None:
            reply = replace(reply, body=_NOT_JSON, content_type="text/html")
        return await self._send(request, replace(reply, headers={**headers, **reply.headers}))

    def _authorized(self, request: web.BaseRequest) -> bool:
        return _key_ok(request.headers.get("DD-API-KEY"), self.config.api_key) and _key_ok(
            request.headers.get("DD-APPLICATION-KEY"), self.config.app_key
        )

    async def _server_error(
        self, request: web.BaseRequest, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        status = self._faults.error_status()
        return await self._error(request, status, "Internal Server Error", headers)

    async def _error(
        self, request: web.BaseRequest, status: int, message: str, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        """`{"errors": [message]}`, with the request's keys echoed when that fault is on."""
        if self._faults.config.echo_keys:
            keys = [request.headers.get(name, "") for name in ("DD-API-KEY", "DD-APPLICATION-KEY")]
            body = echoed_errors([message], [key for key in keys if key])
        else:
            body = errors(message)
        return await self._send(request, Reply(status, body, headers=headers))

    async def _send(self, request: web.BaseRequest, reply: Reply) -> web.StreamResponse:
        """The reply, gzip-bombed or padded to a flood when those faults are on."""
        self.stats.responses[reply.status] += 1
        status, body, headers = reply.status, reply.body, reply.headers
        faults = self._faults.config
        if body is None:
            return web.Response(status=status, headers=headers)
        if faults.gzip_bomb_bytes:
            bomb = gzip_bomb(body, faults.gzip_bomb_bytes)
            headers = {**headers, "Content-Encoding": "gzip"}
            return web.Response(
                status=status, body=bomb, headers=headers, content_type=reply.content_type
            )
        if faults.huge_body_bytes > len(body):
            return await self._flood(request, reply, faults.huge_body_bytes)
        return web.Response(
            status=status, body=body, headers=headers, content_type=reply.content_type
        )

    async def _flood(self, request: web.BaseRequest, reply: Reply, size: int) -> web.StreamResponse:
        """Streams the padded body, so the sandbox itself stays small; a client that
        hangs up on it is the expected ending, not an error."""
        assert reply.body is not None
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_type = reply.content_type
        response.content_length = size
        try:
            await response.prepare(request)
            for chunk in padding(reply.body, size):
                await response.write(chunk)
            await response.write(reply.body)
            await response.write_eof()
        except ConnectionError:
            pass
        return response

    def _drop(self, request: web.BaseRequest) -> web.StreamResponse:
        """Closes the connection without a byte of answer.

        With the transport closed, aiohttp's attempt to send the returned response fails
        with ConnectionResetError, which it takes for a client that left: it sends
        nothing and logs nothing (raising instead would log an error and try a 500).
        """
        self.stats.dropped += 1
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)


def _key_ok(given: str | None, expected: str | None) -> bool:
    if not given:
        return False
    return expected is None or hmac.compare_digest(given.encode(), expected.encode())
