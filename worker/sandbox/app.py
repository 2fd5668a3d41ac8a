"""The HTTP side: Datadog's playlist-session routes, answered the way Datadog answers.

Routing works on the raw, still percent-encoded path rather than through aiohttp's
router: how that router decodes `%2F` has changed between aiohttp releases, and an id
must be cut out of its own segment first and then decoded exactly once, or `a%2Fb`
would become two segments. The low-level `web.Server` also keeps per-request work small
enough for benchmarks.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from dataclasses import replace
from itertools import islice
from types import TracebackType

from aiohttp import web

from worker.sandbox import control, search
from worker.sandbox.config import SandboxConfig
from worker.sandbox.faults import Fault, FaultConfig, FaultPlan
from worker.sandbox.ratelimit import FixedWindowLimiter
from worker.sandbox.store import LoggedRequest, RequestLog, SessionRecord, Stats, Store
from worker.sandbox.wire import (
    SESSION_LIST_HINT,
    ApiError,
    errors,
    json_bytes,
    parse_data_source,
    parse_page_param,
    parse_playlist_id,
    parse_session_id,
    parse_session_list,
    parse_ts,
    resource,
)

API_PREFIX = "/api/v2/rum/replay/playlists/"

_DEFAULT_PAGE_SIZE = 100
_MAX_PAGE_SIZE = 1000
_MAX_PAGE_NUMBER = 2**31 - 1
_SHUTDOWN_TIMEOUT = 2.0
"""Seconds stop() lets in-flight answers finish (hung requests are released at once)."""
_NOT_JSON = b"<html><body><h1>200 OK</h1></body></html>"


class Sandbox:
    """A local stand-in for Datadog's RUM replay playlist API, on a loopback port.

    Everything is in memory and single-threaded on the event loop, so requests from any
    number of clients see one consistent store and one shared rate-limit budget.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.store = Store()
        self.stats = Stats()
        self.requests = RequestLog(maxlen=self.config.request_log_size)
        """Recent API requests, oldest first; always empty in minimal mode."""
        self._log_requests = not self.config.minimal and self.config.request_log_size > 0
        self._limiter = FixedWindowLimiter(
            *self.config.rate_limit, self.config.rate_limit_name, self.config.clock
        )
        self._faults = FaultPlan(self.config.faults)
        self.search = search.SearchService(self.config.search, self._authorized, self.config.clock)
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
        self, *, rate_limit: tuple[int, float] | None = None, faults: FaultConfig | None = None
    ) -> None:
        """Changes the limit or the faults while serving. The current window's count is
        kept; new faults start a fresh random stream and revocation count."""
        if rate_limit is not None:
            self._limiter.reconfigure(*rate_limit)
        if faults is not None:
            self._faults = FaultPlan(faults)
        self.config = replace(
            self.config,
            rate_limit=(self._limiter.limit, self._limiter.period),
            faults=self._faults.config,
        )

    def reset(self) -> None:
        """Back to an empty store and zero counters, with a fresh window and fault stream."""
        self.store.clear()
        self.stats.clear()
        self.requests.clear()
        self._limiter.reset()
        self._faults = FaultPlan(self._faults.config)

    def state(self) -> dict[str, object]:
        """Everything a test may want to check, as JSON-ready data (never the keys)."""
        config = self.config
        return {
            "config": {
                "rate_limit": {
                    "limit": self._limiter.limit,
                    "period": self._limiter.period,
                    "name": self._limiter.name,
                },
                "playlists": None if config.playlists is None else sorted(config.playlists),
                "keys_required": config.api_key is not None or config.app_key is not None,
                "minimal": config.minimal,
                "faults": config.faults.to_json(),
            },
            "stats": self.stats.to_json(),
            "sessions": self.store.to_json(),
            "requests": self.requests.to_json(),
        }

    # --- HTTP -------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path == search.CONTROL_PATH:
            return await self.search.control(request)
        if path.startswith(control.PREFIX):
            return await control.handle(self, request, path[len(control.PREFIX) :])
        if self._log_requests:
            self.requests.append(LoggedRequest.of(request))
        if path == search.PATH:
            return await self.search.handle(request)
        segments = path[len(API_PREFIX) :].split("/") if path.startswith(API_PREFIX) else []
        if len(segments) not in (2, 3) or segments[1] != "sessions":
            return self._answer(
                404,
                errors(
                    f"no such route: {request.method} {path}; the sandbox serves "
                    f"{API_PREFIX}{{playlist_id}}/sessions[/{{session_id}}]"
                ),
            )
        return await self._api(request, segments)

    async def _api(self, request: web.BaseRequest, segments: list[str]) -> web.StreamResponse:
        self.stats.requests += 1
        item = len(segments) == 3
        fault = Fault.NONE
        if item and request.method == "PUT":
            self.stats.puts += 1
            fault = self._faults.draw()
        delay = self._faults.latency()
        if delay:
            await asyncio.sleep(delay)
        if fault is Fault.HANG:
            self.stats.hung += 1
            await self._stopping.wait()
            return self._drop(request)
        if fault is Fault.DROP_BEFORE:
            return self._drop(request)
        if fault is Fault.BARE_429:
            wait = self._faults.config.retry_after_s
            return self._answer(
                429,
                b"429 Too Many Requests\n",
                None if wait is None else {"Retry-After": str(wait)},
                content_type="text/plain",
            )

        revoked = self._faults.revoked()
        if revoked:
            self.stats.after_revoke += 1
        verdict = self._limiter.take()
        headers = (
            self._limiter.headers(self._faults.skew(verdict))
            if self._faults.config.ratelimit_headers
            else {}
        )
        if revoked or not self._authorized(request):
            return self._answer(403, errors("Forbidden"), headers)
        if not verdict.allowed:
            return self._answer(429, errors("Too many requests"), headers)

        try:
            if item and request.method == "PUT":
                return self._put(request, segments, fault, headers)
            if item and request.method == "DELETE":
                return self._delete_one(segments, headers)
            if not item and request.method == "GET":
                return self._list(request, segments, headers)
            if not item and request.method == "DELETE":
                return await self._delete_many(request, segments, headers)
        except ApiError as exc:
            return self._answer(exc.status, errors(exc.message), headers)
        allow = "PUT, DELETE" if item else "GET, DELETE"
        return self._answer(
            405,
            errors(f"{request.method} is not allowed here; use {allow}"),
            {**headers, "Allow": allow},
        )

    def _put(
        self,
        request: web.BaseRequest,
        segments: list[str],
        fault: Fault,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        playlist_id = parse_playlist_id(segments[0])
        session_id = parse_session_id(segments[2])
        query = request.rel_url.query
        ts = parse_ts(query.get("ts"))
        data_source = parse_data_source(query.get("data_source"))
        self._check_known(playlist_id)
        if fault is Fault.ERROR_BEFORE:
            return self._server_error(headers)

        created = self.store.add(playlist_id, session_id, SessionRecord(ts, data_source))
        if not created:
            self.stats.duplicate_puts += 1
        if fault is Fault.DROP_AFTER:
            return self._drop(request)
        if fault is Fault.ERROR_AFTER:
            return self._server_error(headers)
        status = 201 if created else 200
        if fault is Fault.NON_JSON:
            return self._answer(status, _NOT_JSON, headers, content_type="text/html")
        record = self.store.get(playlist_id, session_id)
        assert record is not None
        return self._answer(status, json_bytes({"data": resource(session_id, record)}), headers)

    def _delete_one(self, segments: list[str], headers: dict[str, str]) -> web.StreamResponse:
        playlist_id = self._check_known(parse_playlist_id(segments[0]))
        session_id = parse_session_id(segments[2])
        if not self.store.remove(playlist_id, [session_id]):
            raise ApiError(404, f"session {session_id!r} is not in playlist {playlist_id}")
        return self._answer(204, None, headers)

    def _list(
        self, request: web.BaseRequest, segments: list[str], headers: dict[str, str]
    ) -> web.StreamResponse:
        playlist_id = self._check_known(parse_playlist_id(segments[0]))
        query = request.rel_url.query
        number = parse_page_param(query, "page[number]", 0, _MAX_PAGE_NUMBER)
        size = parse_page_param(query, "page[size]", _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE, minimum=1)
        sessions = self.store.sessions(playlist_id)
        page = islice(sessions.items(), number * size, (number + 1) * size)
        body = {
            "data": [resource(session_id, record) for session_id, record in page],
            "meta": {"page": {"total_count": len(sessions)}},
        }
        return self._answer(200, json_bytes(body), headers)

    async def _delete_many(
        self, request: web.BaseRequest, segments: list[str], headers: dict[str, str]
    ) -> web.StreamResponse:
        playlist_id = self._check_known(parse_playlist_id(segments[0]))
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, f"the body is not JSON: {SESSION_LIST_HINT}") from None
        self.store.remove(playlist_id, parse_session_list(body))
        return self._answer(204, None, headers)

    def _authorized(self, request: web.BaseRequest) -> bool:
        return _key_ok(request.headers.get("DD-API-KEY"), self.config.api_key) and _key_ok(
            request.headers.get("DD-APPLICATION-KEY"), self.config.app_key
        )

    def _check_known(self, playlist_id: int) -> int:
        known = self.config.playlists
        if known is not None and playlist_id not in known:
            raise ApiError(404, f"playlist {playlist_id} not found")
        return playlist_id

    def _server_error(self, headers: dict[str, str]) -> web.Response:
        status = self._faults.error_status()
        return self._answer(status, errors("Internal Server Error"), headers)

    def _answer(
        self,
        status: int,
        body: bytes | None,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> web.Response:
        self.stats.responses[status] += 1
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers, content_type=content_type)

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
