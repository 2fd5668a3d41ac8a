"""One HTTP attempt to add a session to a playlist, and what its answer means.

The client knows the endpoint's shape and how to read Datadog's answers; it knows
nothing of retries or pacing. Each attempt becomes a `Reply` whose `kind` tells the
worker what to do next.
"""

from __future__ import annotations

import contextlib
import enum
import re
import ssl
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from worker import __version__
from worker.config import ConfigError, Credentials
from worker.pacer import RateLimitHeaders, parse_rate_limit_headers, parse_retry_after
from worker.rows import Row

try:  # optional speed-up (the `fast` extra)
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    from json import loads as _loads  # type: ignore[assignment]

USER_AGENT = f"rum-playlist-ingest/{__version__} (+aiohttp/{aiohttp.__version__})"
PATH = "/api/v2/rum/replay/playlists/{playlist_id}/sessions/{session_id}"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
KEY_STATUSES = frozenset({401, 403})


class Kind(enum.Enum):
    """What an answer means for the row that caused it."""

    ADDED = "added"  # 201 or 200: the session is in the playlist
    RATE_LIMITED = "rate_limited"  # 429: wait, then send again; never the row's failure
    RETRYABLE = "retryable"  # 408, 425, 5xx, connection errors, timeouts
    ROW_FAILED = "row_failed"  # any other 4xx: this row will not succeed as it is
    KEYS_REFUSED = "keys_refused"  # 401, 403: the keys, not the row, are at fault
    FATAL = "fatal"  # the run cannot work at all (TLS verification failed)


@dataclass(frozen=True, slots=True)
class Reply:
    kind: Kind
    status: int | None
    latency_ms: float
    error: str | None = None
    rate_limit: RateLimitHeaders | None = None
    retry_after: float | None = None
    body_problem: str | None = None  # a 2xx whose body was not the documented JSON
    maybe_applied: bool = False
    """A retryable failure after the request may have reached the API (a 5xx, a dropped
    connection, a timeout): a later 200 may be this attempt's doing."""


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")
"""What `quote(..., safe="")` leaves as it is."""


def session_url(base_url: str, row: Row) -> URL:
    """Each path parameter percent-encoded with no safe characters, so an id holding
    `/`, `?`, `#` or `%` can never leave its own path segment."""
    session_id = row.session_id
    if not _UNRESERVED.fullmatch(session_id):  # a UUID needs no quoting: skip the work
        session_id = quote(session_id, safe="")
    path = PATH.format(playlist_id=row.playlist_id, session_id=session_id)
    # data_source is one of two validated identifiers: nothing to quote.
    return URL(f"{base_url}{path}?ts={row.ts}&data_source={row.data_source}", encoded=True)


def classify_status(status: int) -> Kind:
    if 200 <= status < 300:
        return Kind.ADDED
    if status == 429:
        return Kind.RATE_LIMITED
    if status in RETRYABLE_STATUSES or status >= 500:
        return Kind.RETRYABLE
    if status in KEY_STATUSES:
        return Kind.KEYS_REFUSED
    return Kind.ROW_FAILED


def error_text(body: bytes) -> str:
    """Datadog's `{"errors": [...]}` joined, else the start of whatever came back."""
    try:
        parsed = _loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("errors"), list):
        return "; ".join(str(e) for e in parsed["errors"])[:500]
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "(empty body)"


def _body_problem(body: bytes) -> str | None:
    try:
        parsed = _loads(body)
    except ValueError:
        return f"body is not JSON: {body[:80]!r}"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), dict):
        return f"body has no 'data' object: {body[:80]!r}"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the server"
    detail = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"[:300]


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


class Client:
    """One `aiohttp.ClientSession` for the whole run, with the keys in its headers.

    Certificates are always verified; proxies come from HTTPS_PROXY / HTTP_PROXY /
    NO_PROXY, as users of other HTTP tools expect. Every request goes to one host, so the
    proxy is looked up once (`trust_env=True` would look it up, and read ~/.netrc, in a
    thread for every request: most of the client's CPU).
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        concurrency: int,
        timeout_s: float,
        tls: ssl.SSLContext | bool = True,
    ) -> None:
        self._base_url = base_url
        self._headers = {
            "DD-API-KEY": credentials.api_key.reveal(),
            "DD-APPLICATION-KEY": credentials.app_key.reveal(),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        # `total` bounds everything, connecting and a server that never answers included.
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10.0))
        self._concurrency = concurrency
        self._ssl = tls
        self._session: aiohttp.ClientSession | None = None
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=self._concurrency, ttl_dns_cache=300, ssl=self._ssl)
        with contextlib.suppress(LookupError):  # no proxy for this host
            self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self._base_url))
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            skip_auto_headers=("Content-Type",),
        )
        # aiohttp silently resends an idempotent request once when a kept-alive connection
        # drops. The runner retries with backoff and counts every attempt; a hidden resend
        # would make `requests` untrue and hide an answer lost after the PUT was applied.
        self._session._retry_connection = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def add(self, row: Row) -> Reply:
        """Send one PUT; never raises for what the network or the server does."""
        assert self._session is not None, "use the client as an async context manager"
        started = time.perf_counter()
        try:
            async with self._session.put(
                session_url(self._base_url, row), proxy=self._proxy, proxy_auth=self._proxy_auth
            ) as resp:
                body = await resp.read()
                status = resp.status
                headers = resp.headers
        except aiohttp.ClientConnectorCertificateError as exc:
            return Reply(
                Kind.FATAL,
                None,
                (time.perf_counter() - started) * 1000,
                f"TLS certificate verification failed ({exc.certificate_error}); "
                "if a corporate proxy re-signs traffic, pass its CA with --ca-bundle",
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Reply(
                Kind.RETRYABLE,
                None,
                (time.perf_counter() - started) * 1000,
                _describe(exc),
                # Refused, unresolvable, TLS: never connected, so nothing was sent.
                maybe_applied=not isinstance(exc, aiohttp.ClientConnectorError),
            )
        latency_ms = (time.perf_counter() - started) * 1000
        kind = classify_status(status)
        rate_limit = parse_rate_limit_headers(headers)
        if kind is Kind.ADDED:
            return Reply(
                kind, status, latency_ms, rate_limit=rate_limit, body_problem=_body_problem(body)
            )
        return Reply(
            kind,
            status,
            latency_ms,
            error=f"HTTP {status}: {error_text(body)}",
            rate_limit=rate_limit,
            retry_after=parse_retry_after(headers.get("Retry-After")),
            maybe_applied=status >= 500,
        )
