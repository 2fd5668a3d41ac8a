"""Rows from a RUM search: pages through `POST /api/v2/rum/events/search` and hands out
one `Row` per session event, oldest first.

- Sorted by ascending timestamp, so a position ("every event before this moment has been
  handed over") means something, and a resume or an expired cursor can start a new
  search from it instead of from the beginning.
- A shard's search (`--shard K/N`) covers only its slices of the range
  (`worker.query.slices`): one search (cursor chain) each, in time order.
- At most one page is fetched ahead, and only once the consumer starts on the current
  page: memory holds two pages at most, however many sessions the query finds.
- An answer with `meta.status` other than `done` may be partial, so it is never taken:
  the same request is sent again, up to `TIMEOUT_RETRIES` times in a row, after which the
  search fails. `meta.warnings` are logged and counted.
- A 401/403 (the keys refused) ends the search as `SearchKeysRefused`, on any page: no
  rerun gets further until the keys are fixed.
- A 400 to a request that carried a cursor is taken for an expired cursor: a new search
  starts at the last timestamp received (inclusive; repeats at that moment are dropped),
  up to `CURSOR_RESTARTS` times from one same moment.
- Repeats within a page (and at a page boundary) are dropped here; repeats further apart
  are the caller's to drop (its on-disk repeat check), as keeping every session id seen
  would make memory grow with the result.

A search that cannot go on raises `SearchFailed` after every row already received has
been handed out; `summary` says how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from structlog.typing import FilteringBoundLogger

from worker.query.dates import TimeRange, iso, iso_ms
from worker.query.spec import QuerySpec
from worker.rows import DEFAULT_DATA_SOURCE, Row
from worker.validation import FieldError, parse_session_id

MAX_PAGE_LIMIT = 1000
"""The API's largest `page.limit`."""
TIMEOUT_RETRIES = 3
"""Times one page is asked for again after a `meta.status: timeout` answer."""
CURSOR_RESTARTS = 3
"""Searches started again from one same moment after an expired cursor, before the
search gives up (a new search that gets past that moment resets the count)."""
SOURCE = "query"
"""The rows' `source`: their `line` is the event's ordinal in this run's search."""

_BOUNDARY_CAP = 10_000
"""Session ids kept for the latest timestamp at most: a bound even if every event of an
answer claimed the same millisecond (a repeat past it reaches the caller's check)."""

SEARCH_KEYS_ADVICE = (
    "check DD_API_KEY / DD_APP_KEY, the site (--site), and that the application key may "
    "read RUM events (the rum_apps_read permission)"
)
"""What refused keys call for when a search was refused (`SearchKeysRefused`): no rerun
gets further until they are fixed."""

SearchBody = Mapping[str, object]
"""The JSON body of one `POST /api/v2/rum/events/search`."""


class MeaningLike(Protocol):
    """`worker.answers.Meaning`: only its value (`"done"`, `"row_failed"`, ...) is read."""

    @property
    def value(self) -> str: ...


class AnswerLike(Protocol):
    """The fields of `worker.answers.Answer` the source reads."""

    @property
    def meaning(self) -> MeaningLike: ...
    @property
    def status(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def payload(self) -> object: ...


Send = Callable[[SearchBody], Awaitable[AnswerLike]]
"""Sends one search (through the pacer and its retries) and returns its answer."""


class SearchFailed(Exception):
    """The search cannot go on: the rows already handed out stand, the rest were not found."""


class SearchStalled(SearchFailed):
    """No page came for `--max-stall` seconds (only 429s, which spend no attempt, or no
    answer at all): the search ends as rows that never finish end a run."""


class QueryRefused(SearchFailed):
    """The API refused the very first page (a 4xx): the query or its range is wrong, and
    running again would fail the same way. Nothing was found, so nothing is lost."""


class SearchKeysRefused(SearchFailed):
    """The API refused the keys (401/403) on a page, the first or a later one: no rerun
    goes on until the keys, the site or the application key's permissions are fixed."""


@dataclass(frozen=True, slots=True)
class QuerySummary:
    """The report's `query` block."""

    query: str
    """The effective query sent."""
    from_ms: int
    to_ms: int
    pages: int
    """Answers taken (a timeout answer retried is not one)."""
    events: int
    """Events received in those pages."""
    sessions: int
    """Rows handed out."""
    repeats: int
    """Events dropped here as a repeat within a page or at a page boundary."""
    malformed: int
    """Events skipped for lack of a usable session id or timestamp."""
    timeouts: int
    warnings: int
    restarts: int
    """Searches started again after an expired cursor."""
    position_ms: int
    """Every session before this moment has been handed out: where a resume starts."""
    completed: bool
    error: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "query": self.query,
            "from": iso(self.from_ms),
            "to": iso(self.to_ms),
            "pages": self.pages,
            "events": self.events,
            "sessions": self.sessions,
            "repeats": self.repeats,
            "malformed": self.malformed,
            "timeouts": self.timeouts,
            "warnings": self.warnings,
            "restarts": self.restarts,
            "position": iso(self.position_ms),
            "completed": self.completed,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class _Event:
    session_id: str
    ts: int
    ordinal: int = 0
    """The event's place in this run's search (1, 2, ...): the row's `line`."""


@dataclass(frozen=True, slots=True)
class _Page:
    events: tuple[_Event, ...]
    after: str | None
    done: bool
    warnings: int
    malformed: int


class QuerySource:
    """`async for row in QuerySource(...)`: the search's sessions as rows, once."""

    def __init__(
        self,
        send: Send,
        spec: QuerySpec,
        time_range: TimeRange,
        *,
        slices: Iterable[TimeRange] | None = None,
        data_source: str = DEFAULT_DATA_SOURCE,
        start_ms: int | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
        timeout_retries: int = TIMEOUT_RETRIES,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        """`slices`: the parts of the range to search, in order (a shard's, which may be
        none); None: the whole range. `start_ms`: a saved position to resume from
        (inside the range)."""
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be from 1 to {MAX_PAGE_LIMIT}, not {page_limit}")
        if timeout_retries < 0:
            raise ValueError(f"timeout_retries must be 0 or more, not {timeout_retries}")
        self._send = send
        self._spec = spec
        self._range = time_range
        self._data_source = data_source
        self._page_limit = page_limit
        self._timeout_retries = timeout_retries
        self._log = log or structlog.get_logger()
        first = time_range.from_ms if start_ms is None else max(time_range.from_ms, start_ms)
        self._position = first
        parts = (time_range,) if slices is None else slices
        self._slices = (part for part in parts if part.to_ms > first)
        self._slice = next(self._slices, None)
        """The slice being searched; None: none is left."""
        self._search_from = first if self._slice is None else max(first, self._slice.from_ms)
        """Where the current search (cursor chain) started."""
        self._cursor: str | None = None
        self._received_ms = self._search_from
        """The last timestamp received: where a search starts again after an expiry."""
        self._restarted_at: int | None = None
        self._stuck = 0
        self._boundary: set[str] = set()
        """Sessions received at `_received_ms`: repeats if a new search sends them again."""
        self._pages = self._events = self._sessions = self._repeats = self._malformed = 0
        self._timeouts = self._warnings = self._restarts = 0
        self._completed = False
        self._error: str | None = None
        self._started = False

    @property
    def position_ms(self) -> int:
        """Every session before this moment has been handed out (the journal commits it
        once the rows handed out are done)."""
        return self._position

    @property
    def summary(self) -> QuerySummary:
        return QuerySummary(
            query=self._spec.effective_query,
            from_ms=self._range.from_ms,
            to_ms=self._range.to_ms,
            pages=self._pages,
            events=self._events,
            sessions=self._sessions,
            repeats=self._repeats,
            malformed=self._malformed,
            timeouts=self._timeouts,
            warnings=self._warnings,
            restarts=self._restarts,
            position_ms=self._position,
            completed=self._completed,
            error=self._error,
        )

    def __aiter__(self) -> AsyncIterator[Row]:
        if self._started:
            raise RuntimeError("a QuerySource is read once: make another for another search")
        self._started = True
        return self._rows()

    async def _rows(self) -> AsyncIterator[Row]:
        if self._slice is None:
            self._finish()
            return
        pending: asyncio.Task[_Page] | None = asyncio.create_task(self._fetch())
        try:
            while pending is not None:
                try:
                    page = await pending
                except SearchFailed as exc:
                    self._error = str(exc)
                    raise
                # Taking the page moved the search on, to the next slice after a slice's last.
                pending = None if self._slice is None else asyncio.create_task(self._fetch())
                for event in page.events:
                    self._sessions += 1
                    self._position = max(self._position, event.ts)
                    yield Row(
                        playlist_id=self._spec.playlist_id,
                        session_id=event.session_id,
                        ts=event.ts,
                        data_source=self._data_source,
                        source=SOURCE,
                        line=event.ordinal,
                    )
            self._finish()
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, SearchFailed):
                    await pending

    def _finish(self) -> None:
        self._completed = True
        self._position = self._range.to_ms

    def _body(self) -> dict[str, object]:
        assert self._slice is not None, "no search is left to send"
        page: dict[str, object] = {"limit": self._page_limit}
        if self._cursor is not None:
            page["cursor"] = self._cursor
        return {
            "filter": {
                "query": self._spec.effective_query,
                "from": str(self._search_from),
                "to": str(self._slice.to_ms),
            },
            "page": page,
            "sort": "timestamp",
        }

    async def _fetch(self) -> _Page:
        """The next page, retried or restarted as the module says; raises SearchFailed."""
        timeouts = 0
        while True:
            answer = await self._send(self._body())
            if answer.meaning.value != "done":
                if answer.status == 400 and self._cursor is not None and self._may_restart():
                    self._restart(answer)
                    continue
                if answer.meaning.value == "keys_refused":
                    raise SearchKeysRefused(
                        f"the API refused the keys for the search (HTTP {answer.status}): "
                        f"{answer.error or answer.meaning.value}"
                    )
                if self._pages == 0 and answer.meaning.value == "row_failed":
                    raise QueryRefused(
                        f"{answer.error or f'HTTP {answer.status}'}; the query (as sent, "
                        "wrapped: see the `query` event) or its range was refused: fix it "
                        "(docs/query.md)"
                    )
                raise SearchFailed(_failure(answer))
            page = _parse_page(answer.payload)
            if not page.done:
                if timeouts < self._timeout_retries:
                    timeouts += 1
                    self._timeouts += 1
                    self._log.warning(
                        "query_page_partial",
                        detail="the search answered meta.status timeout: asking again",
                        attempt=timeouts,
                        of=self._timeout_retries,
                    )
                    continue
                raise SearchFailed(
                    f"the search timed out {timeouts + 1} times on the same page "
                    f"(after {iso(self._received_ms)}): narrow the query or the range, "
                    "or run again later to resume from there"
                )
            return self._take(page)

    def _may_restart(self) -> bool:
        """False once CURSOR_RESTARTS searches in a row started at the same moment: the
        cursor expires faster than the search gets past it."""
        if self._received_ms != self._restarted_at:
            self._restarted_at, self._stuck = self._received_ms, 0
            return True
        self._stuck += 1
        return self._stuck < CURSOR_RESTARTS

    def _restart(self, answer: AnswerLike) -> None:
        self._restarts += 1
        self._log.warning(
            "query_cursor_expired",
            detail="the search refused its cursor: searching again from the last event received",
            since=iso(self._received_ms),
            error=answer.error,
        )
        self._cursor = None
        self._search_from = self._received_ms

    def _take(self, page: _Page) -> _Page:
        """Counts the page, drops its repeats and moves the cursor on (to the next slice
        after the last page of one)."""
        if page.after is not None and page.after == self._cursor:
            raise SearchFailed(
                "the search answered with the cursor it was sent: it would never end"
            )
        self._pages += 1
        self._malformed += page.malformed
        if page.warnings:
            self._warnings += page.warnings
            self._log.warning(
                "query_warnings",
                detail="the search warned that its results may be partial",
                warnings=page.warnings,
                page=self._pages,
            )
        kept: list[_Event] = []
        in_page: set[str] = set()
        for event in page.events:
            self._events += 1
            if event.ts > self._received_ms:
                self._received_ms, self._boundary = event.ts, set()
            at_boundary = event.ts == self._received_ms
            repeat = event.session_id in in_page or (
                at_boundary and event.session_id in self._boundary
            )
            in_page.add(event.session_id)
            if at_boundary and len(self._boundary) < _BOUNDARY_CAP:
                self._boundary.add(event.session_id)
            if repeat:
                self._repeats += 1
            else:
                kept.append(_Event(event.session_id, event.ts, self._events))
        self._cursor = page.after
        if page.after is None:
            self._next_slice()
        return _Page(tuple(kept), page.after, True, page.warnings, page.malformed)

    def _next_slice(self) -> None:
        """Moves the search to the next slice, if one is left. An expired cursor then
        restarts inside it, never in the time between two slices (another shard's)."""
        self._slice = next(self._slices, None)
        if self._slice is not None:
            self._search_from = self._received_ms = self._slice.from_ms
            self._boundary = set()


def _failure(answer: AnswerLike) -> str:
    status = "no answer" if answer.status is None else f"HTTP {answer.status}"
    return f"the search failed ({status}): {answer.error or answer.meaning.value}"


def _parse_page(payload: object) -> _Page:
    """The documented answer, checked: raises SearchFailed for a body that is not it."""
    data = payload.get("data") if isinstance(payload, dict) else None
    meta = payload.get("meta", {}) if isinstance(payload, dict) else None
    if not isinstance(data, list) or not isinstance(meta, dict):
        raise SearchFailed(
            "the search answered with a body that is not a RUM events list "
            "(no data array or meta object): check --base-url/--site"
        )
    page_meta = meta.get("page", {})
    after = page_meta.get("after") if isinstance(page_meta, dict) else None
    warnings = meta.get("warnings") or []
    events: list[_Event] = []
    for item in data:
        event = _event(item)
        if event is not None:
            events.append(event)
    return _Page(
        events=tuple(events),
        after=after if isinstance(after, str) and after else None,
        done=meta.get("status", "done") == "done",
        warnings=len(warnings) if isinstance(warnings, list) else 1,
        malformed=len(data) - len(events),
    )


def _event(item: object) -> _Event | None:
    """The session id and timestamp of one event, or None if it lacks either."""
    outer = item.get("attributes") if isinstance(item, dict) else None
    if not isinstance(outer, dict):
        return None
    inner = outer.get("attributes")
    session = inner.get("session") if isinstance(inner, dict) else None
    timestamp = outer.get("timestamp")
    if not isinstance(session, dict) or not isinstance(timestamp, str):
        return None
    ts = iso_ms(timestamp)
    try:
        session_id = parse_session_id(session.get("id"))
    except FieldError:
        return None
    return None if ts is None else _Event(session_id, ts)
