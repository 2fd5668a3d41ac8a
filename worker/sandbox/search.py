"""`POST /api/v2/rum/events/search` over the sandbox's generated population.

Answers as Datadog documents it (and as its official client models it): `filter.query`,
`filter.from`/`filter.to` (date math such as `now-15m`, ISO 8601 date-times, epoch
milliseconds; defaults `now-15m` and `now`), `page.limit` (at most 1,000, default 10),
`page.cursor` from the previous answer's `meta.page.after`, `sort` `timestamp` or
`-timestamp` (the default). The search has its own rate limit and `X-RateLimit-Name`.
It is one `Route` of the sandbox's table, so the server does for it what it does for
every API route (keys, the family's budget and headers, the injected faults, the
request log and counters); this module holds only what a search answers.

A cursor carries the resolved time range and the position reached, so the next page
does not move with `now`. One answer reads at most `SCAN_BUDGET` events: a selective
query over a big population then returns a short page that still has a cursor (as
Datadog may), and the event loop is never held for long.

Faults for tests, each counted down per answer: `timeouts` (answer `meta.status:
"timeout"` with half the page and no cursor), `expired_cursors` (refuse the next
requests that carry a cursor with a 400 that names it) and `warnings` (add
`meta.warnings`; the results are complete). Set them, or grow the population, through
`POST /_sandbox/search`; read the search's state with `GET /_sandbox/search`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from aiohttp import web

from worker.sandbox.config import RUM_SEARCH
from worker.sandbox.population import Event, Population
from worker.sandbox.query import Node, QuerySyntaxError, parse
from worker.sandbox.ratelimit import Clock, FixedWindowLimiter, parse_rate_limit
from worker.sandbox.routing import Call, Reply, Route
from worker.sandbox.search_config import SearchConfig, SearchFaults
from worker.sandbox.wire import ApiError, json_bytes

PATH = "/api/v2/rum/events/search"
ROUTE_NAME = "search_events"
"""The route's name in the sandbox's `stats.calls`."""
CONTROL_PATH = "/_sandbox/search"
MAX_PAGE_LIMIT = 1000
DEFAULT_PAGE_LIMIT = 10
SCAN_BUDGET = 200_000
"""Events one answer reads at most before it returns what it found, with a cursor."""

_SORTS = ("timestamp", "-timestamp")
_MATH = re.compile(r"now(?:([+-])([0-9]{1,9})([smhdw]))?")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WHEN_HINT = "use date math such as now-15m, an ISO 8601 date-time, or epoch milliseconds"
_CONTROL_HINT = (
    'send {"grow": N, "rate_limit": "LIMIT/PERIOD", "faults": {"timeouts": N, '
    '"expired_cursors": N, "warnings": N}}, each part optional'
)


@dataclass(slots=True)
class SearchStats:
    """What the search itself did; its requests and refusals are the sandbox's `stats`
    (route `search_events`), as every route's are."""

    pages: int = 0
    """Answers of 200."""
    events: int = 0
    """Events returned, over every page."""
    timeouts: int = 0
    expired_cursors: int = 0
    warnings: int = 0


@dataclass(frozen=True, slots=True)
class _Cursor:
    next_index: int
    low: int
    high: int
    """The resolved range, as event indexes [low, high)."""
    query_hash: str
    sort: str


@dataclass(frozen=True, slots=True)
class _Search:
    query: str
    tree: Node
    sort: str
    limit: int
    low: int
    high: int
    start: int
    """The next event index to read: `low` first (ascending) or `high - 1` (descending)."""


class SearchService:
    """The search route, its rate limit, faults and population, for one sandbox."""

    def __init__(
        self, config: SearchConfig, limiter: FixedWindowLimiter, clock: Clock = time.time
    ) -> None:
        self._clock = clock
        population = config.population.placed(int(clock() * 1000))
        self.config = dataclasses.replace(config, population=population)
        self.population = Population(population)
        self.stats = SearchStats()
        self._limiter = limiter  # the sandbox's limit of the search family: read, reconfigured
        self._faults = config.faults
        self._answers = 0

    def grow(self, extra: int) -> None:
        """Adds `extra` sessions after the existing ones; earlier events stay as they were."""
        population = self.population.config.grown(extra, int(self._clock() * 1000))
        self.population = Population(population)
        self.config = dataclasses.replace(self.config, population=population)

    def state(self) -> dict[str, object]:
        population = self.population.config
        return {
            "population": {**dataclasses.asdict(population), "end_ms": self.population.end_ms},
            "rate_limit": {
                "limit": self._limiter.limit,
                "period": self._limiter.period,
                "name": self._limiter.name,
            },
            "faults": dataclasses.asdict(self._faults),
            "stats": dataclasses.asdict(self.stats),
        }

    # --- the API route ----------------------------------------------------------------

    def route(self) -> Route:
        """The search as one of the sandbox's routes: the server checks the keys, spends
        the family's budget and injects its faults, as for every API route."""
        return Route.of(ROUTE_NAME, "POST", PATH, RUM_SEARCH, self.answer)

    async def answer(self, call: Call) -> Reply:
        """One page; raises `ApiError` for a search it refuses."""
        search = self._search_of(await call.json("send a RUM search request"))
        started = time.perf_counter()
        answer = self._page(search)
        meta = answer["meta"]
        assert isinstance(meta, dict)
        meta["elapsed"] = round((time.perf_counter() - started) * 1000)
        self.stats.pages += 1
        return Reply(200, json_bytes(answer))

    def _search_of(self, body: object) -> _Search:
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object with filter, page and sort")
        unknown = sorted(set(body) - {"filter", "page", "sort", "options"})
        if unknown:
            raise ApiError(400, f"unknown field(s) {unknown}: use filter, page, sort, options")
        filter_ = _object(body, "filter")
        page = _object(body, "page")
        query = filter_.get("query", "*")
        if not isinstance(query, str):
            raise ApiError(400, "filter.query must be a string")
        try:
            tree = _parsed(query)
        except QuerySyntaxError as exc:
            raise ApiError(400, str(exc)) from None
        sort = body.get("sort", "-timestamp")
        if sort not in _SORTS:
            raise ApiError(400, f"sort must be 'timestamp' or '-timestamp', not {_clip(str(sort))}")
        limit = page.get("limit", DEFAULT_PAGE_LIMIT)
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE_LIMIT:
            raise ApiError(
                400,
                f"page.limit must be an integer from 1 to {MAX_PAGE_LIMIT}, "
                f"not {_clip(str(limit))}",
            )
        cursor_text = page.get("cursor")
        if cursor_text is None:
            now_ms = int(self._clock() * 1000)
            from_ms = parse_when(filter_.get("from", "now-15m"), "filter.from", now_ms)
            to_ms = parse_when(filter_.get("to", "now"), "filter.to", now_ms)
            if from_ms > to_ms:
                raise ApiError(400, "filter.from is after filter.to: swap them")
            low = self.population.index_at(from_ms)
            high = self.population.index_at(to_ms)
            start = low if sort == "timestamp" else high - 1
            return _Search(query, tree, sort, limit, low, high, start)
        cursor = self._cursor(cursor_text)
        if cursor.query_hash != _hash(query) or cursor.sort != sort:
            raise ApiError(
                400, "page.cursor belongs to another search: send the same filter and sort"
            )
        return _Search(query, tree, sort, limit, cursor.low, cursor.high, cursor.next_index)

    def _cursor(self, text: object) -> _Cursor:
        if not isinstance(text, str):
            raise ApiError(400, "page.cursor must be a string: the meta.page.after of an answer")
        if self._faults.expired_cursors:
            self._faults = dataclasses.replace(
                self._faults, expired_cursors=self._faults.expired_cursors - 1
            )
            self.stats.expired_cursors += 1
            raise ApiError(400, f"page.cursor {_clip(text)} has expired: start the search again")
        try:
            cursor = _Cursor(**json.loads(base64.urlsafe_b64decode(text.encode("ascii"))))
        except (ValueError, TypeError):
            cursor = None
        if cursor is None or not _well_formed(cursor):
            raise ApiError(
                400, f"page.cursor {_clip(text)} is not a cursor this API gave: use meta.page.after"
            )
        return cursor

    def _page(self, search: _Search) -> dict[str, object]:
        events, next_index = self._scan(search)
        meta: dict[str, object] = {"status": "done", "request_id": self._request_id()}
        if self._faults.timeouts:
            self._faults = dataclasses.replace(self._faults, timeouts=self._faults.timeouts - 1)
            self.stats.timeouts += 1
            meta["status"] = "timeout"
            events, next_index = events[: len(events) // 2], None
        if self._faults.warnings:
            self._faults = dataclasses.replace(self._faults, warnings=self._faults.warnings - 1)
            self.stats.warnings += 1
            meta["warnings"] = [
                {
                    "code": "unknown_index",
                    "title": "One or more indexes are missing or invalid",
                    "detail": "the sandbox was asked to warn; the results are complete",
                }
            ]
        if next_index is not None:
            meta["page"] = {
                "after": _encode(
                    _Cursor(next_index, search.low, search.high, _hash(search.query), search.sort)
                )
            }
        self.stats.events += len(events)
        return {"data": [_event_json(event) for event in events], "meta": meta}

    def _scan(self, search: _Search) -> tuple[list[Event], int | None]:
        """The page's events and the index to go on from (None: the search is over)."""
        step = 1 if search.sort == "timestamp" else -1
        index, found = search.start, []
        budget = SCAN_BUDGET
        while search.low <= index < search.high and budget:
            event = self.population.event(index)
            index += step
            budget -= 1
            if event is not None and search.tree.matches(event.attributes):
                found.append(event)
                if len(found) == search.limit:
                    break
        more = search.low <= index < search.high
        return found, index if more else None

    def _request_id(self) -> str:
        self._answers += 1
        return f"sandbox-search-{self._answers}"

    # --- the control route ------------------------------------------------------------

    async def control(self, request: web.BaseRequest) -> web.Response:
        if request.method == "GET":
            return _json(200, self.state())
        if request.method != "POST":
            return _json(405, {"errors": [f"use GET or POST on {CONTROL_PATH}"]})
        try:
            self._configure(await request.read())
        except ValueError as exc:
            return _json(400, {"errors": [str(exc)]})
        return _json(200, self.state())

    def _configure(self, raw: bytes) -> None:
        """Checks the whole change before applying any of it."""
        try:
            body = json.loads(raw)
        except ValueError:
            raise ValueError(f"the body is not JSON: {_CONTROL_HINT}") from None
        if not isinstance(body, dict) or not set(body) <= {"grow", "rate_limit", "faults"}:
            raise ValueError(f"not a search change: {_CONTROL_HINT}")
        grow = body.get("grow", 0)
        if type(grow) is not int or grow < 0:
            raise ValueError(f"grow must be a number of sessions (0 or more); {_CONTROL_HINT}")
        rate_limit = body.get("rate_limit")
        limit = None if rate_limit is None else parse_rate_limit(str(rate_limit))
        faults = body.get("faults")
        if faults is not None and not isinstance(faults, dict):
            raise ValueError(f"faults must be an object; {_CONTROL_HINT}")
        try:
            new_faults = None if faults is None else dataclasses.replace(self._faults, **faults)
        except TypeError:
            known = sorted(SearchFaults.__dataclass_fields__)
            raise ValueError(f"unknown search fault; known: {known}") from None
        self.grow(grow)
        if limit is not None:
            self._limiter.reconfigure(*limit)
        if new_faults is not None:
            self._faults = new_faults


def parse_when(value: object, name: str, now_ms: int) -> int:
    """Milliseconds since the epoch from `now[+-N(s|m|h|d|w)]`, ISO 8601 or digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string: {_WHEN_HINT}")
    text = value.strip()
    if text.isdigit():
        return int(text)
    math = _MATH.fullmatch(text)
    if math:
        sign, amount, unit = math.groups()
        offset = 0 if amount is None else int(amount) * _UNIT_MS[unit]
        return now_ms - offset if sign == "-" else now_ms + offset
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{name} {_clip(text)} is not a time: {_WHEN_HINT}") from None
    if moment.tzinfo is None:
        raise ApiError(400, f"{name} {_clip(text)} has no time zone: end it with Z")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@lru_cache(maxsize=64)
def _parsed(query: str) -> Node:
    return parse(query)


def _object(body: dict[str, object], name: str) -> dict[str, object]:
    value = body.get(name, {})
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be an object")
    return value


def _event_json(event: Event) -> dict[str, object]:
    moment = _EPOCH + timedelta(milliseconds=event.timestamp_ms)
    return {
        "id": f"AQAAAZ{event.index:026d}",
        "type": "rum",
        "attributes": {
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "service": "shop-frontend",
            "tags": ["env:sandbox", "source:browser"],
            "attributes": event.attributes,
        },
    }


def _well_formed(cursor: _Cursor) -> bool:
    numbers = (cursor.next_index, cursor.low, cursor.high)
    return all(type(number) is int for number in numbers) and isinstance(cursor.query_hash, str)


def _encode(cursor: _Cursor) -> str:
    return base64.urlsafe_b64encode(json_bytes(dataclasses.asdict(cursor))).decode("ascii")


def _hash(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def _clip(text: str) -> str:
    return repr(text if len(text) <= 64 else f"{text[:61]}...")


def _json(status: int, value: object) -> web.Response:
    return web.Response(status=status, body=json_bytes(value), content_type="application/json")
