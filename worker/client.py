"""The HTTP side of every call: send one `Request`, get back one `Answer`.

The client knows how to reach the API and read its answers safely; it knows nothing of
retries or pacing. What it guarantees for every call, now or later, because every call
goes through `send`:

* no redirect is ever followed (the keys would go along to whatever `Location` names):
  a 3xx is a FATAL answer naming the origin it pointed to;
* no body is read past its request's `body_cap`, compressed or not: bodies are decoded
  here, a chunk at a time with a bounded inflater, so a gzip bomb costs what its cap
  allows and memory stays flat whatever a server sends;
* the route (direct, or the proxy `worker.config.check_transport` chose) is decided
  before the first request, so the keys go over plain http to loopback only;
* no request outlives its `timeout_s` by more than a tick (`Deadlines`), connecting,
  waiting and reading included, however slowly a server trickles its answer;
* every text in an answer is scrubbed of the keys (`worker.answers`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import encode_basic_auth, hdrs
from multidict import CIMultiDict, istr
from yarl import URL

from worker import __version__
from worker.answers import Answer, AnswerReader, Meaning
from worker.api import Request
from worker.config import ConfigError, Credentials, Route
from worker.jsoncodec import dumps as _dumps
from worker.scrub import Scrubber

USER_AGENT = f"rum-playlist-ingest/{__version__} (+aiohttp/{aiohttp.__version__})"
READ_CHUNK = 64 * 1024
"""Bytes read from the connection at a time when the length is not known beforehand."""
ERROR_BODY_CAP = 64 * 1024
"""What is read of an error's body at most, whatever its request's cap: only its start
becomes the error text, and the status alone says what the error means."""
_IDENTITY = frozenset({"", "identity"})
_INFLATED = frozenset({"gzip", "x-gzip", "deflate"})
_AUTO_HEADER = zlib.MAX_WBITS | 32
"""zlib's window bits for a body with either a gzip or a zlib header, detected."""
_CONTENT_ENCODING = istr("Content-Encoding")
_JSON = {"Content-Type": "application/json"}


class _Request(aiohttp.ClientRequest):
    """aiohttp's request, sent as aiohttp sends it, with two of its per-request steps
    done in less (a test holds the headers on the wire to aiohttp's own, in order):

    * a body-less PUT gets no `Content-Type: application/octet-stream` (which aiohttp
      adds to every body-less PUT, POST and PATCH): it goes out as Datadog documents it.
      aiohttp's own way, `skip_auto_headers`, builds a header dict and copies the
      request's headers for every request, which put aiohttp on its slow path; here the
      skip is one dict, made once, that aiohttp consults when it writes the request;
    * the headers are the Host, then the session's and the request's, as aiohttp puts
      them, in two calls to multidict's C code rather than a Python loop over each
      header. aiohttp's defaults (Accept, Accept-Encoding, User-Agent) are added to none:
      the session's headers hold all three (`Client` checks), so aiohttp would add none.
    """

    _SKIP = CIMultiDict({istr("Content-Type"): None})

    def update_headers(self, headers: Any) -> None:
        if not isinstance(headers, CIMultiDict) or hdrs.HOST in headers:
            super().update_headers(headers)  # a Host of the caller's is aiohttp's to place
            return
        host = self.url.host_port_subcomponent
        assert host is not None, "a request's URL is absolute"
        self.headers = CIMultiDict(((hdrs.HOST, host),))
        self.headers.extend(headers)

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = self._SKIP


_AIOHTTP_DEFAULTS = frozenset(name.lower() for name in (*_Request.DEFAULT_HEADERS, hdrs.USER_AGENT))
"""The headers aiohttp adds to a request without them: the session must give each."""


class UrlMaker:
    """Each request's URL under one base URL: what `URL(base_url + path + "?" + query,
    encoded=True)` makes (a test holds the two equal), for a tenth of its cost.

    Every row's URL is new. yarl parses a URL string and files it in an LRU cache that a
    new URL only ever misses (about 3.6 us a request); `URL.build` of parts already
    encoded files them in one too, keyed by all nine parts (1.3 us), and then aiohttp
    asks each new URL for its host and port, which yarl splits out of the authority again
    for every one. Here the URL is made as yarl makes one from parts (its five fields and
    a property cache), with the properties that depend on the base alone (scheme, host,
    port, user) already in its cache, worked out once from the base: yarl's own values.

    That reaches into yarl's internals, so the maker checks, once, that what it makes is
    in equality and in every property the URL `URL.build` makes (`_same_as_built`); with
    a yarl where it is not, it makes each URL by `URL.build` (a test says which is used)."""

    __slots__ = ("_authority", "_base_cache", "_prefix", "_scheme")

    def __init__(self, base_url: str) -> None:
        base = URL(base_url, encoded=True)
        self._scheme, self._authority = base.scheme, base.raw_authority
        self._prefix = "" if base.raw_path == "/" else base.raw_path
        self._base_cache: dict[str, object] | None = None
        try:
            self._base_cache = {name: getattr(base, name) for name in _OF_THE_BASE}
            if not _same_as_built(self):
                self._base_cache = None
        except (AttributeError, TypeError, ValueError):
            self._base_cache = None

    @property
    def reuses_base(self) -> bool:
        """Whether URLs are made with the base's properties already worked out."""
        return self._base_cache is not None

    def build(self, request: Request) -> URL:
        """The URL made by yarl's public `URL.build`."""
        return URL.build(
            scheme=self._scheme,
            authority=self._authority,
            path=self._prefix + request.path,
            query_string=request.query,
            encoded=True,
        )

    def __call__(self, request: Request) -> URL:
        base_cache = self._base_cache
        if base_cache is None:
            return self.build(request)
        url = _new_url(URL)
        url._scheme = self._scheme
        url._netloc = self._authority
        url._path = self._prefix + request.path
        url._query = request.query
        url._fragment = ""
        url._cache = base_cache.copy()  # type: ignore[assignment]  # yarl's TypedDict
        return url


_new_url = object.__new__
_OF_THE_BASE = (
    "scheme",
    "raw_user",
    "raw_password",
    "raw_host",
    "explicit_port",
    "port",
    "host_port_subcomponent",
    "raw_fragment",
)
"""The properties of a URL that aiohttp reads for every request and that depend on its
scheme and authority alone (and on its fragment, which a request's URL never has). Eight,
so the cache, with the one of its own aiohttp adds (`raw_path_qs`), stays in a dict of
the smallest size that holds them; the others yarl works out as it would anyway."""
_COMPARED = (
    *_OF_THE_BASE,
    "user",
    "password",
    "host",
    "host_subcomponent",
    "fragment",
    "raw_authority",
    "authority",
    "raw_path",
    "path",
    "raw_query_string",
    "query_string",
    "raw_path_qs",
    "path_qs",
    "absolute",
)


def _same_as_built(maker: UrlMaker) -> bool:
    """Whether `maker` makes, for a request with a path and a query, the URL `URL.build`
    makes of the same parts, in equality and in every property aiohttp may read."""
    probe = Request("PUT", "/api/v2/rum/replay/playlists/1/sessions/a-1", "ts=1")
    made, built = maker(probe), maker.build(probe)
    return (
        made == built
        and hash(made) == hash(built)
        and str(made) == str(built)
        and made.origin() == built.origin()
        and all(getattr(made, name) == getattr(built, name) for name in _COMPARED)
    )


class Deadlines:
    """The whole-request time bound, kept by one periodic check instead of a timer per
    request. aiohttp's own (`ClientTimeout(total=...)`, which the bare loop pays too)
    arms and disarms a timer and a context for each request, and its read timeout a timer
    for each answer: 16k instructions and about 13 us a request (`bench/README.md`,
    2026-12-04). Here a request in flight is one entry of a dict; every `tick` seconds the
    entries past their deadline have their tasks cancelled, and `Client.send` turns that
    cancel into a timed-out answer. A request so ends between `timeout_s` and
    `timeout_s + tick` after it started (a tick: a quarter of `timeout_s`, between 10 ms
    and a second).

    A cancel of the task for any other reason (a stop) is never taken for a deadline:
    `expired` says True only when the deadline's cancel is the only one under way, as
    `asyncio.timeout` decides."""

    __slots__ = ("_due", "_expired", "_handle", "_loop", "tick", "timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # Never more often than a hundred times a second, however short the timeout.
        self.tick = min(1.0, max(0.01, timeout_s / 4))
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(self.tick, self._ticked)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def begin(self, task: asyncio.Task[object]) -> None:
        """`task` starts a request now (loop time)."""
        assert self._loop is not None, "start() the deadlines first"
        self._due[task] = self._loop.time() + self.timeout_s

    def end(self, task: asyncio.Task[object]) -> None:
        del self._due[task]
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether the cancel `task` is handling is its deadline's, and the only one."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def check(self, now: float) -> None:
        """Cancel the requests whose deadline is past at `now`, each once."""
        expired = self._expired
        for task, due in self._due.items():
            if due <= now and task not in expired:
                expired.add(task)
                task.cancel()

    def _ticked(self) -> None:
        assert self._loop is not None
        self.check(self._loop.time())
        self._handle = self._loop.call_later(self.tick, self._ticked)


def _too_large(cap: int) -> str:
    return f"answer larger than {cap} bytes, not read (see worker.api for the caps)"


async def _read_raw(content: aiohttp.StreamReader, cap: int) -> tuple[bytes, bool]:
    """At most `cap` bytes of a body of unknown length, and whether that was all of it."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await content.read(min(READ_CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(chunks), True
        total += len(chunk)
        if total > cap:
            chunks.append(chunk[: len(chunk) - (total - cap)])
            return b"".join(chunks), False
        chunks.append(chunk)


async def _inflate(content: aiohttp.StreamReader, cap: int) -> tuple[bytes, str | None]:
    """A gzip or deflate body (gzip members one after another too) inflated to at most
    `cap` bytes, with what went wrong.

    Both sides are bounded: the inflater never produces more than is still allowed
    (`max_length`), and no more compressed bytes are taken than a body of `cap` bytes
    could need (deflate never grows data by more than a fraction of a percent), so
    neither a bomb nor an endless stream of empty blocks holds more than a chunk."""
    inflater = zlib.decompressobj(_AUTO_HEADER)
    wire_cap = cap + cap // 100 + 1024
    parts: list[bytes] = []
    produced = wire = 0
    pending = b""
    while True:
        if not pending:
            pending = await content.read(READ_CHUNK)
            if not pending:
                if inflater.eof:
                    return b"".join(parts), None
                return b"".join(parts), "the compressed answer ended before its end"
            wire += len(pending)
            if wire > wire_cap:
                return b"".join(parts), _too_large(cap)
        if inflater.eof:
            inflater = zlib.decompressobj(_AUTO_HEADER)  # the next gzip member
        try:
            part = inflater.decompress(pending, cap + 1 - produced)
        except zlib.error as exc:
            return b"".join(parts), f"the compressed answer cannot be read ({exc})"
        produced += len(part)
        if produced > cap:  # `max_length` reached: more was there
            return b"".join(parts), _too_large(cap)
        parts.append(part)
        pending = inflater.unused_data if inflater.eof else b""


async def _read_length(content: aiohttp.StreamReader, length: int) -> bytes:
    """A body of `length` bytes (its Content-Length), read as `ClientResponse.read()`
    reads it, to its end: in one read when it came in with the headers, as a few hundred
    bytes do. `read()` reads until a read finds nothing more, a second trip through the
    stream's reader for every answer."""
    body = await content.read(length)
    if len(body) < length:
        body += await content.read()  # the rest, as it comes; a broken connection raises
    return body


async def read_body(
    response: aiohttp.ClientResponse, cap: int, *, start_will_do: bool = False
) -> tuple[bytes, str | None]:
    """The body, decoded, with why it is not all there (None: it is). `start_will_do`:
    the first `cap` bytes are of use even if there are more (an error's text).

    The common answer, a few hundred bytes with a Content-Length, is read in one call
    (`_read_length`): aiohttp's parser reads exactly that many bytes, no more."""
    raw_encoding = response.headers.get(_CONTENT_ENCODING)
    encoding = "" if raw_encoding is None else raw_encoding.strip().lower()
    if encoding in _IDENTITY:
        length = response.content_length
        if length is not None and length <= cap:
            return await _read_length(response.content, length), None
        if length is not None and not start_will_do:
            return b"", _too_large(cap)
        body, whole = await _read_raw(response.content, cap)
        return body, None if whole else _too_large(cap)
    if encoding in _INFLATED:
        return await _inflate(response.content, cap)
    return b"", f"an answer in an encoding that was not asked for ({encoding[:40]!r})"


def tls_context(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """Verify against the system's CAs (True), or against `ca_bundle` alone: behind a
    corporate proxy that re-signs TLS, its CA is the one to trust. Checked before the
    run starts, so a bad path exits 2 rather than failing every request."""
    if ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--ca-bundle {ca_bundle}: cannot load it as PEM CA certificates ({exc})"
        ) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    detail = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"


class Client:
    """One `aiohttp.ClientSession` for the whole run, with the keys in its headers.

    Certificates are always verified. The route (`worker.config.check_transport`) says
    whether a proxy carries the requests; the environment is not read again per request
    (`trust_env` would, and read ~/.netrc, in a thread for every request: most of the
    client's CPU)."""

    def __init__(
        self,
        route: Route,
        credentials: Credentials,
        *,
        concurrency: int,
        timeout_s: float,
        tls: ssl.SSLContext | bool = True,
        odd_body: Callable[[int, str], None] | None = None,
    ) -> None:
        """`odd_body`: told, once, of a success body that is not the documented JSON,
        for the answers whose payload no caller wants (`worker.answers.BodyCheck`)."""
        self._url = UrlMaker(route.base_url)
        self._headers = {
            "DD-API-KEY": credentials.api_key.reveal(),
            "DD-APPLICATION-KEY": credentials.app_key.reveal(),
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",  # what `read_body` decodes, and no more
            "User-Agent": USER_AGENT,
        }
        assert _AIOHTTP_DEFAULTS.issubset(name.lower() for name in self._headers), "see _Request"
        secrets = list(credentials.secrets())
        # What every request passes, made once: aiohttp packs and unpacks each keyword on
        # every call, so a request with no body through no proxy passes one keyword only.
        # (Typed loosely: aiohttp's own TypedDict of request options is private.)
        route_options: dict[str, Any] = {"allow_redirects": False}
        request_headers: dict[str, str] = {}  # on each request itself
        if route.proxy is not None:
            proxy = URL(route.proxy)
            proxy_headers: dict[str, str] | None = None  # for an https target's CONNECT
            if proxy.user is not None:
                # The proxy's password, and the header that carries it, are secrets too.
                auth = {"Proxy-Authorization": encode_basic_auth(proxy.user, proxy.password or "")}
                secrets += (proxy.password or "", auth["Proxy-Authorization"][len("Basic ") :])
                if URL(route.base_url).scheme == "https":
                    proxy_headers = auth
                else:  # a plain-http proxy reads it from the request it forwards
                    request_headers = auth
            route_options |= {"proxy": proxy.with_user(None), "proxy_headers": proxy_headers}
        self._bodiless = route_options | ({"headers": request_headers} if request_headers else {})
        self._with_body = {**route_options, "headers": {**_JSON, **request_headers}}
        self._reader = AnswerReader(Scrubber(secrets), route.base_url, odd_body)
        # The whole request is bounded by `Deadlines`; aiohttp bounds only connecting.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 10.0))
        self.deadlines = Deadlines(timeout_s)
        self._concurrency = concurrency
        self._ssl = tls
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300, ssl=self._ssl)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            request_class=_Request,
            auto_decompress=False,  # `read_body` inflates, within the cap
        )
        # aiohttp silently resends an idempotent request once when a kept-alive connection
        # drops. The runner retries with backoff and counts every attempt; a hidden resend
        # would make `requests` untrue and hide an answer lost after the PUT was applied.
        self._session._retry_connection = False
        self.deadlines.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deadlines.stop()
        if self._session is not None:
            await self._session.close()

    async def send(self, request: Request) -> Answer:
        """Send one request; never raises for what the network or the server does."""
        assert self._session is not None, "use the client as an async context manager"
        started = time.perf_counter()
        body = request.body
        url = self._url(request)
        deadlines = self.deadlines
        task = asyncio.current_task()
        assert task is not None, "a request is sent from a task"
        deadlines.begin(task)
        try:
            # Awaited, not entered with `async with`: its two context managers would add
            # four coroutines to every request and do no more than `release` or `close`.
            if body is None:
                resp = await self._session.request(request.method, url, **self._bodiless)
            else:
                resp = await self._session.request(
                    request.method, url, data=_dumps(body), **self._with_body
                )
            problem: str | None = "not read"
            try:
                status = resp.status
                if 200 <= status < 300:
                    content, problem = await read_body(resp, request.body_cap)
                else:
                    cap = min(ERROR_BODY_CAP, request.body_cap)
                    content, problem = await read_body(resp, cap, start_will_do=True)
            finally:
                if problem is None:
                    resp.release()  # read whole: the connection goes back to the pool
                else:
                    resp.close()  # the rest is never read: the connection cannot be reused
        except aiohttp.ClientConnectorCertificateError as exc:
            return self._reader.none(
                f"TLS certificate verification failed ({exc.certificate_error}); "
                "if a corporate proxy re-signs traffic, pass its CA with --ca-bundle",
                (time.perf_counter() - started) * 1000,
                meaning=Meaning.FATAL,
                maybe_applied=False,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            return self._reader.none(
                _describe(exc),
                (time.perf_counter() - started) * 1000,
                meaning=Meaning.RETRYABLE,
                # Refused, unresolvable, TLS: never connected, so nothing was sent.
                maybe_applied=not isinstance(exc, aiohttp.ClientConnectorError),
            )
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                raise  # a stop
            return self._reader.none(
                _describe(TimeoutError()),
                (time.perf_counter() - started) * 1000,
                meaning=Meaning.RETRYABLE,
                maybe_applied=True,  # it may have been sent, and applied
            )
        finally:
            deadlines.end(task)
        latency_ms = (time.perf_counter() - started) * 1000.0  # float by float: the fast op
        if problem is not None and 200 <= status < 300:
            return self._reader.unreadable(status, resp.headers, latency_ms, problem)
        return self._reader.http(status, resp.headers, content, latency_ms, request.want_payload)
