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
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from worker.sandbox.config import SandboxConfig
from worker.sandbox.faults import Fault, FaultConfig, FaultPlan
from worker.sandbox.ratelimit import FixedWindowLimiter, parse_rate_limit
from worker.sandbox.store import LoggedRequest, RequestLog, SessionRecord, Stats, Store

API_PREFIX = "/api/v2/rum/replay/playlists/"
CONTROL_PREFIX = "/_sandbox/"
SESSION_TYPE = "rum_replay_session"
DATA_SOURCES = ("rum", "product_analytics")

_INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_SIGNED_DIGITS = re.compile(r"-?[0-9]{1,19}")
_DEFAULT_PAGE_SIZE = 100
_MAX_PAGE_SIZE = 1000
_SHUTDOWN_TIMEOUT = 2.0
"""Seconds stop() lets in-flight answers finish (hung requests are released at once)."""

_CONFIG_HINT = (
    'send {"rate_limit": "LIMIT/PERIOD", "faults": {<FaultConfig fields>}}, either part optional'
)
_NOT_JSON = b"<html><body><h1>200 OK</h1></body></html>"


class _ApiError(Exception):
    """A request the API refuses: becomes `{"errors": [message]}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
        if path.startswith(CONTROL_PREFIX):
            return await self._control(request, path[len(CONTROL_PREFIX) :])
        if self._log_requests:
            self.requests.append(LoggedRequest.of(request))
        segments = path[len(API_PREFIX) :].split("/") if path.startswith(API_PREFIX) else []
        if len(segments) not in (2, 3) or segments[1] != "sessions":
            return self._answer(
                404,
                _errors(
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
            return self._answer(429, _errors("Too many requests"))

        revoked = self._faults.revoked()
        if revoked:
            self.stats.after_revoke += 1
        verdict = self._limiter.take()
        headers = self._limiter.headers(verdict) if self._faults.config.ratelimit_headers else {}
        if revoked or not self._authorized(request):
            return self._answer(403, _errors("Forbidden"), headers)
        if not verdict.allowed:
            return self._answer(429, _errors("Too many requests"), headers)

        try:
            if item and request.method == "PUT":
                return self._put(request, segments, fault, headers)
            if item and request.method == "DELETE":
                return self._delete_one(segments, headers)
            if not item and request.method == "GET":
                return self._list(request, segments, headers)
            if not item and request.method == "DELETE":
                return await self._delete_many(request, segments, headers)
        except _ApiError as exc:
            return self._answer(exc.status, _errors(exc.message), headers)
        allow = "PUT, DELETE" if item else "GET, DELETE"
        return self._answer(
            405,
            _errors(f"{request.method} is not allowed here; use {allow}"),
            {**headers, "Allow": allow},
        )

    def _put(
        self,
        request: web.BaseRequest,
        segments: list[str],
        fault: Fault,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        playlist_id = _playlist_id(segments[0])
        session_id = _session_id(segments[2])
        query = request.rel_url.query
        ts = _ts(query.get("ts"))
        data_source = query.get("data_source", DATA_SOURCES[0])
        if data_source not in DATA_SOURCES:
            raise _ApiError(
                400, f"data_source must be 'rum' or 'product_analytics', not {data_source!r}"
            )
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
        return self._answer(status, _json({"data": _resource(session_id, record)}), headers)

    def _delete_one(self, segments: list[str], headers: dict[str, str]) -> web.StreamResponse:
        playlist_id = self._check_known(_playlist_id(segments[0]))
        session_id = _session_id(segments[2])
        if not self.store.remove(playlist_id, [session_id]):
            raise _ApiError(404, f"session {session_id!r} is not in playlist {playlist_id}")
        return self._answer(204, None, headers)

    def _list(
        self, request: web.BaseRequest, segments: list[str], headers: dict[str, str]
    ) -> web.StreamResponse:
        playlist_id = self._check_known(_playlist_id(segments[0]))
        query = request.rel_url.query
        number = _page_param(query, "page[number]", 0, _INT64_MAX)
        size = _page_param(query, "page[size]", _DEFAULT_PAGE_SIZE, _MAX_PAGE_SIZE, minimum=1)
        sessions = list(self.store.sessions(playlist_id).items())
        page = sessions[number * size : (number + 1) * size]
        body = {
            "data": [_resource(session_id, record) for session_id, record in page],
            "meta": {"page": {"total_count": len(sessions)}},
        }
        return self._answer(200, _json(body), headers)

    async def _delete_many(
        self, request: web.BaseRequest, segments: list[str], headers: dict[str, str]
    ) -> web.StreamResponse:
        playlist_id = self._check_known(_playlist_id(segments[0]))
        hint = f'the body must be {{"data": [{{"id": "<session id>", "type": "{SESSION_TYPE}"}}]}}'
        try:
            body = await request.json()
        except ValueError:
            raise _ApiError(400, f"the body is not JSON: {hint}") from None
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(
            isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and entry.get("type") == SESSION_TYPE
            for entry in items
        ):
            raise _ApiError(400, hint)
        self.store.remove(playlist_id, [entry["id"] for entry in items])
        return self._answer(204, None, headers)

    def _authorized(self, request: web.BaseRequest) -> bool:
        return _key_ok(request.headers.get("DD-API-KEY"), self.config.api_key) and _key_ok(
            request.headers.get("DD-APPLICATION-KEY"), self.config.app_key
        )

    def _check_known(self, playlist_id: int) -> int:
        known = self.config.playlists
        if known is not None and playlist_id not in known:
            raise _ApiError(404, f"playlist {playlist_id} not found")
        return playlist_id

    def _server_error(self, headers: dict[str, str]) -> web.Response:
        status = self._faults.error_status()
        return self._answer(status, _errors("Internal Server Error"), headers)

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

    async def _control(self, request: web.BaseRequest, action: str) -> web.Response:
        """The test control plane: not rate-limited, counted or logged."""
        route = (request.method, action)
        if route == ("GET", "state"):
            return _json_response(200, self.state())
        if route == ("POST", "reset"):
            self.reset()
            return web.Response(status=204)
        if route == ("POST", "config"):
            try:
                body = json.loads(await request.read())
            except ValueError:
                return _json_response(400, {"errors": [f"the body is not JSON: {_CONFIG_HINT}"]})
            try:
                self._configure_from_json(body)
            except ValueError as exc:
                return _json_response(400, {"errors": [str(exc)]})
            return _json_response(200, self.state()["config"])
        return _json_response(
            404,
            {
                "errors": [
                    f"no such control route: {request.method} {CONTROL_PREFIX}{action}; "
                    "use GET state, POST config or POST reset"
                ]
            },
        )

    def _configure_from_json(self, body: object) -> None:
        hint = _CONFIG_HINT
        if not isinstance(body, dict) or not set(body) <= {"rate_limit", "faults"}:
            raise ValueError(f"not a config change: {hint}")
        rate_limit = body.get("rate_limit")
        faults = body.get("faults")
        if rate_limit is not None and not isinstance(rate_limit, str):
            raise ValueError(f"rate_limit must be a string like 100/2; {hint}")
        if faults is not None and not isinstance(faults, dict):
            raise ValueError(f"faults must be an object; {hint}")
        self.reconfigure(
            rate_limit=None if rate_limit is None else parse_rate_limit(rate_limit),
            faults=None if faults is None else self._faults.config.updated(faults),
        )


def _key_ok(given: str | None, expected: str | None) -> bool:
    if not given:
        return False
    return expected is None or hmac.compare_digest(given.encode(), expected.encode())


def _playlist_id(raw: str) -> int:
    text = unquote(raw)
    if _DIGITS.fullmatch(text) and 0 < int(text) <= _INT64_MAX:
        return int(text)
    raise _ApiError(400, f"playlist_id must be a positive 64-bit integer, not {_clip(text)!r}")


def _session_id(raw: str) -> str:
    """Decodes the segment exactly once: `a%252F` stays `a%2F`."""
    try:
        session_id = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise _ApiError(
            400, "session_id is not valid UTF-8 once percent-decoded: encode it as UTF-8"
        ) from None
    if not session_id:
        raise _ApiError(400, "session_id must not be empty")
    return session_id


def _ts(text: str | None) -> int:
    if text is None:
        raise _ApiError(
            400, "ts is required: the server-side timestamp in milliseconds, e.g. ts=1704067200000"
        )
    if _SIGNED_DIGITS.fullmatch(text) and abs(int(text)) <= _INT64_MAX:
        return int(text)
    raise _ApiError(400, f"ts must be an integer number of milliseconds, not {_clip(text)!r}")


def _page_param(
    query: Mapping[str, str], name: str, default: int, maximum: int, minimum: int = 0
) -> int:
    text = query.get(name)
    if text is None:
        return default
    if _DIGITS.fullmatch(text) and minimum <= int(text) <= maximum:
        return int(text)
    raise _ApiError(
        400, f"{name} must be an integer from {minimum} to {maximum}, not {_clip(text)!r}"
    )


def _clip(text: str) -> str:
    return text if len(text) <= 64 else f"{text[:61]}..."


def _resource(session_id: str, record: SessionRecord) -> dict[str, object]:
    return {
        "id": session_id,
        "type": SESSION_TYPE,
        "attributes": {
            "session_event": {"timestamp": record.ts, "data_source": record.data_source},
            "track": record.data_source,
        },
    }


def _errors(message: str) -> bytes:
    return _json({"errors": [message]})


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json_response(status: int, value: object) -> web.Response:
    return web.Response(status=status, body=_json(value), content_type="application/json")
