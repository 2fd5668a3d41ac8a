"""The query source: date forms, the wrapped query, and the paging search that turns
RUM events into rows, in process with a fake `send` and over loopback to the sandbox."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sandbox_http import KEYS
from structlog.testing import capture_logs

from worker.events import Skipped
from worker.query.dates import (
    LAST_MARGIN_MS,
    DateError,
    TimeRange,
    iso,
    parse_when,
    resolve,
    resolve_last,
    start_after,
)
from worker.query.slices import SLICE_MS, Slices
from worker.query.source import (
    CURSOR_RESTARTS,
    QueryRefused,
    QuerySource,
    SearchBody,
    SearchFailed,
)
from worker.query.spec import QueryError, QuerySpec
from worker.query.stage import Checkpoints, HandedChunk, QueryChunks
from worker.rows import Outcome, Result, Row
from worker.sandbox import Sandbox
from worker.sandbox.population import Population, PopulationConfig
from worker.sandbox.search import PATH
from worker.sandbox.search_config import SearchConfig
from worker.shard import Shard

NOW = 1_800_000_000_000
T0 = 1_704_067_200_000
SPEC = QuerySpec("@application.id:abc", playlist_id=7, target="https://api.datadoghq.com")


# --- dates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-15m", NOW - 900_000),
        ("now-4h", NOW - 4 * 3_600_000),
        ("now-7d", NOW - 7 * 86_400_000),
        ("now - 2w", NOW - 14 * 86_400_000),
        ("now+30s", NOW + 30_000),
        ("now-500ms", NOW - 500),
        ("1704067200000", T0),
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01T01:00:00.250+01:00", T0 + 250),
        (" 2024-01-01T00:00Z ", T0),
    ],
)
def test_a_when_takes_datadogs_forms(text: str, expected: int) -> None:
    assert parse_when(text, "--from", NOW) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yesterday", "is not a time"),
        ("now-7", "is not a time"),
        ("now-7y", "is not a time"),
        ("2024-01-01T00:00:00", "no time zone: add Z"),
        ("2024-13-01T00:00:00Z", "is not a time"),
        ("99999999999999999", "out of range"),
        ("", "is not a time"),
    ],
)
def test_a_bad_when_says_what_to_write(text: str, problem: str) -> None:
    with pytest.raises(DateError, match="--to") as caught:
        parse_when(text, "--to", NOW)
    assert problem in str(caught.value)
    assert "now-15m" in str(caught.value) or "time zone" in str(caught.value)


def test_a_range_must_run_forward() -> None:
    assert resolve("now-1h", "now", NOW) == TimeRange(NOW - 3_600_000, NOW)
    with pytest.raises(DateError, match="is not before --to"):
        resolve("now", "now-1h", NOW)
    with pytest.raises(DateError, match="is not before --to"):
        resolve("now", "now", NOW)
    with pytest.raises(DateError, match="start_after"):
        resolve("last", "now", NOW)
    with pytest.raises(DateError, match="empty"):
        TimeRange(5, 5)


def test_from_last_starts_a_margin_before_the_previous_end() -> None:
    assert LAST_MARGIN_MS >= (4 * 60 + 15) * 60_000
    assert start_after(NOW) == NOW - LAST_MARGIN_MS
    assert start_after(NOW, margin_ms=LAST_MARGIN_MS * 2) == NOW - 2 * LAST_MARGIN_MS
    with pytest.raises(DateError, match="would be missed"):
        start_after(NOW, margin_ms=60_000)


def test_from_last_takes_the_journal_or_an_explicit_first_start() -> None:
    previous = NOW - 86_400_000
    nightly = resolve_last("now", NOW, previous, first_from="now-30d")
    assert nightly.time_range == TimeRange(previous - LAST_MARGIN_MS, NOW)
    assert "previous completed search ended" in nightly.why
    first = resolve_last("now", NOW, None, first_from="now-7d")
    assert first.time_range == TimeRange(NOW - 7 * 86_400_000, NOW)
    assert "--first-from now-7d" in first.why
    with pytest.raises(DateError, match="give --first-from"):
        resolve_last("now", NOW, None, first_from=None)
    with pytest.raises(DateError, match="nothing new"):
        resolve_last("now-1d", NOW, NOW, first_from=None)


def test_iso_shows_milliseconds_in_utc() -> None:
    assert iso(T0 + 5) == "2024-01-01T00:00:00.005Z"


# --- the spec -------------------------------------------------------------------------


def test_the_query_is_wrapped_unless_any_session() -> None:
    assert SPEC.effective_query == (
        "(@application.id:abc) @type:session @session.has_replay:true @session.is_active:false"
    )
    loose = QuerySpec(" @a:b OR @c:d ", playlist_id=7, target="t", any_session=True)
    assert loose.effective_query == "@a:b OR @c:d"


def test_an_empty_query_is_refused() -> None:
    with pytest.raises(QueryError, match="the query is empty"):
        QuerySpec("  ", playlist_id=7, target="t")


def test_the_key_names_query_playlist_and_target() -> None:
    same = QuerySpec(" @application.id:abc", playlist_id=7, target="https://api.datadoghq.com")
    assert same.key == SPEC.key
    assert SPEC.key.startswith("query:")
    others = [
        QuerySpec("@application.id:abd", playlist_id=7, target=SPEC.target),
        QuerySpec(SPEC.query, playlist_id=8, target=SPEC.target),
        QuerySpec(SPEC.query, playlist_id=7, target="https://api.datadoghq.eu"),
        QuerySpec(SPEC.query, playlist_id=7, target=SPEC.target, any_session=True),
    ]
    assert len({SPEC.key, *(spec.key for spec in others)}) == 5


# --- the source, in process -------------------------------------------------------------


class Meaning(enum.Enum):
    DONE = "done"
    RATE_LIMITED = "rate_limited"
    RETRYABLE = "retryable"
    ROW_FAILED = "row_failed"
    KEYS_REFUSED = "keys_refused"


@dataclass(frozen=True, slots=True)
class Answer:
    """The fields of worker.answers.Answer the source reads."""

    meaning: Meaning
    status: int | None
    error: str | None = None
    payload: object = None


def event(session_id: str, ts: int) -> dict[str, object]:
    return {
        "id": f"e{ts}",
        "type": "rum",
        "attributes": {
            "timestamp": iso(ts),
            "attributes": {"session": {"id": session_id}, "type": "session"},
        },
    }


def page(events: list[tuple[str, int]], after: str | None = None, **meta: object) -> Answer:
    body_meta: dict[str, object] = {"status": "done", **meta}
    if after is not None:
        body_meta["page"] = {"after": after}
    data = [event(s, ts) for s, ts in events]
    return Answer(Meaning.DONE, 200, payload={"data": data, "meta": body_meta})


class FakeSearch:
    """Serves `events` (sorted by time) in pages, as the API would, unless an answer is
    queued in `script`; records every body it was sent."""

    def __init__(self, events: list[tuple[str, int]]) -> None:
        self.events = events
        self.bodies: list[Mapping[str, Any]] = []
        self.script: dict[int, Answer] = {}
        """Call number (0-based) -> the answer to give instead."""
        self.expire_cursors = False
        """Refuse every request that carries a cursor, as expired."""

    async def __call__(self, body: SearchBody) -> Answer:
        self.bodies.append(body)
        scripted = self.script.get(len(self.bodies) - 1)
        if scripted is not None:
            return scripted
        query: Any = body
        if self.expire_cursors and "cursor" in query["page"]:
            return Answer(Meaning.ROW_FAILED, 400, "page.cursor has expired")
        start = int(query["page"].get("cursor", 0))
        low, high = int(query["filter"]["from"]), int(query["filter"]["to"])
        chosen = [(i, e) for i, e in enumerate(self.events) if low <= e[1] < high and i >= start]
        taken = chosen[: query["page"]["limit"]]
        more = len(chosen) > len(taken)
        return page([e for _, e in taken], str(taken[-1][0] + 1) if more else None)


def spread(n: int, step: int = 10) -> list[tuple[str, int]]:
    return [(f"s{i}", T0 + i * step) for i in range(n)]


RANGE = TimeRange(T0, T0 + 10**9)


async def collect(source: QuerySource) -> list[Row]:
    return [row async for row in source]


async def drain(source: QuerySource, into: list[Row]) -> None:
    """Like collect, but keeps what was handed out when the search fails."""
    async for row in source:
        into.append(row)


async def test_rows_come_page_by_page_with_their_event_time() -> None:
    fake = FakeSearch(spread(25))
    source = QuerySource(fake, SPEC, RANGE, page_limit=10, data_source="product_analytics")
    rows = await collect(source)
    assert [r.session_id for r in rows] == [f"s{i}" for i in range(25)]
    assert rows[3] == Row(7, "s3", T0 + 30, "product_analytics", "query", 4)
    assert len(fake.bodies) == 3
    first = fake.bodies[0]
    assert first["filter"] == {
        "query": SPEC.effective_query,
        "from": str(RANGE.from_ms),
        "to": str(RANGE.to_ms),
    }
    assert first["sort"] == "timestamp"
    assert first["page"] == {"limit": 10}
    assert fake.bodies[1]["page"] == {"limit": 10, "cursor": "10"}
    summary = source.summary
    assert (summary.pages, summary.events, summary.sessions) == (3, 25, 25)
    assert summary.completed
    assert summary.position_ms == RANGE.to_ms
    assert summary.to_json()["completed"] is True


async def test_repeats_within_a_page_and_at_its_boundary_are_dropped() -> None:
    events = [("a", T0), ("b", T0 + 1), ("a", T0 + 2), ("c", T0 + 3), ("c", T0 + 3)]
    events += [("c", T0 + 3), ("d", T0 + 4), ("a", T0 + 5)]
    source = QuerySource(FakeSearch(events), SPEC, RANGE, page_limit=5)
    rows = await collect(source)
    # "a" again in the second page is the caller's to drop: memory must stay flat
    assert [r.session_id for r in rows] == ["a", "b", "c", "d", "a"]
    assert [r.line for r in rows] == [1, 2, 4, 7, 8]
    assert source.summary.repeats == 3


async def test_pages_are_fetched_only_as_the_consumer_pulls() -> None:
    fake = FakeSearch(spread(100))
    source = QuerySource(fake, SPEC, RANGE, page_limit=10)
    rows = aiter(source)
    await anext(rows)
    await anext(rows)
    assert len(fake.bodies) <= 2  # the page in hand, and at most one ahead
    taken = 2
    async for _ in rows:
        taken += 1
        if taken == 15:
            break
    await rows.aclose()  # type: ignore[attr-defined]
    assert len(fake.bodies) <= 3
    assert not source.summary.completed
    assert source.position_ms == T0 + 14 * 10


async def test_a_resume_starts_at_the_saved_position() -> None:
    fake = FakeSearch(spread(30))
    source = QuerySource(fake, SPEC, RANGE, start_ms=T0 + 200, page_limit=100)
    rows = await collect(source)
    assert fake.bodies[0]["filter"]["from"] == str(T0 + 200)
    assert rows[0].session_id == "s20"
    assert len(rows) == 10
    before_range = QuerySource(FakeSearch(spread(3)), SPEC, RANGE, start_ms=0)
    assert len(await collect(before_range)) == 3
    after_range = QuerySource(FakeSearch(spread(3)), SPEC, RANGE, start_ms=RANGE.to_ms)
    assert await collect(after_range) == []
    assert after_range.summary.completed


async def test_a_timeout_is_asked_again_then_the_search_fails() -> None:
    fake = FakeSearch(spread(30))
    timeout = page([("s0", T0)], status="timeout")
    fake.script = {1: timeout, 2: timeout}
    source = QuerySource(fake, SPEC, RANGE, page_limit=10, timeout_retries=2)
    with capture_logs() as logs:
        rows = await collect(source)
    assert len(rows) == 30
    assert fake.bodies[1] == fake.bodies[2] == fake.bodies[3]  # the same cursor each time
    assert source.summary.timeouts == 2
    assert [log["event"] for log in logs] == ["query_page_partial"] * 2

    failing = FakeSearch(spread(30))
    failing.script = {n: timeout for n in range(1, 10)}
    source = QuerySource(failing, SPEC, RANGE, page_limit=10, timeout_retries=2)
    handed: list[Row] = []
    with pytest.raises(SearchFailed, match="timed out 3 times"):
        await drain(source, handed)
    assert len(handed) == 10  # what was found is handed out before the failure
    summary = source.summary
    assert not summary.completed
    assert summary.error is not None
    assert "timed out" in summary.error
    assert summary.position_ms == T0 + 90


async def test_warnings_are_counted_and_logged() -> None:
    fake = FakeSearch(spread(5))
    fake.script = {0: page(spread(5), warnings=[{"code": "x"}, {"code": "y"}])}
    source = QuerySource(fake, SPEC, RANGE)
    with capture_logs() as logs:
        assert len(await collect(source)) == 5
    assert source.summary.warnings == 2
    assert logs[0]["event"] == "query_warnings"


async def test_an_expired_cursor_searches_again_from_the_last_event_received() -> None:
    events = [*spread(10), ("late", T0 + 90), *[(f"t{i}", T0 + 100 + i) for i in range(5)]]
    fake = FakeSearch(events)
    fake.script = {1: Answer(Meaning.ROW_FAILED, 400, "page.cursor 'x' has expired")}
    source = QuerySource(fake, SPEC, RANGE, page_limit=10)
    with capture_logs() as logs:
        rows = await collect(source)
    assert fake.bodies[2]["filter"]["from"] == str(T0 + 90)
    assert "cursor" not in fake.bodies[2]["page"]
    ids = [r.session_id for r in rows]
    assert ids == [f"s{i}" for i in range(10)] + ["late"] + [f"t{i}" for i in range(5)]
    assert source.summary.restarts == 1
    assert logs[0]["event"] == "query_cursor_expired"


# A shard's search: T0 is on an hour, so HOURS holds nine whole slices.
HOURS = TimeRange(T0 + 1, T0 + 9 * SLICE_MS - 1)
THIRD = Slices(HOURS, Shard(1, 3))
"""Hours 1, 4 and 7 of HOURS."""
EVERY_10_MIN = spread(9 * 6, step=600_000)


def in_slices(events: list[tuple[str, int]], slices: Slices) -> list[str]:
    return [s for s, ts in events if any(p.from_ms <= ts < p.to_ms for p in slices)]


async def test_a_shards_search_asks_for_its_slices_alone_and_hands_out_their_sessions() -> None:
    fake = FakeSearch(EVERY_10_MIN)
    source = QuerySource(fake, SPEC, HOURS, slices=THIRD, page_limit=4)
    rows: list[Row] = []
    async for row in source:
        rows.append(row)
        # The position's promise: every session of the slices before it is handed out.
        before = {s for s, ts in EVERY_10_MIN if ts < source.position_ms}
        assert set(in_slices(EVERY_10_MIN, THIRD)) & before <= {r.session_id for r in rows}

    assert [r.session_id for r in rows] == in_slices(EVERY_10_MIN, THIRD)
    asked = {(int(b["filter"]["from"]), int(b["filter"]["to"])) for b in fake.bodies}
    assert asked == {(p.from_ms, p.to_ms) for p in THIRD}
    assert source.summary.completed
    assert (source.summary.from_ms, source.summary.to_ms) == (HOURS.from_ms, HOURS.to_ms)
    assert source.position_ms == HOURS.to_ms


async def test_a_shards_search_resumes_inside_its_slice_or_at_the_next_one() -> None:
    inside = FakeSearch(EVERY_10_MIN)
    middle = T0 + 4 * SLICE_MS + 25 * 60_000
    rows = await collect(QuerySource(inside, SPEC, HOURS, slices=THIRD, start_ms=middle))
    assert inside.bodies[0]["filter"]["from"] == str(middle)
    assert rows[0].ts == T0 + 4 * SLICE_MS + 30 * 60_000

    between = FakeSearch(EVERY_10_MIN)
    gap = T0 + 2 * SLICE_MS + 1  # another shard's hour
    await collect(QuerySource(between, SPEC, HOURS, slices=THIRD, start_ms=gap))
    assert between.bodies[0]["filter"]["from"] == str(T0 + 4 * SLICE_MS)


async def test_a_shard_with_no_slice_in_its_range_asks_nothing() -> None:
    fake = FakeSearch(EVERY_10_MIN)
    nothing = Slices(TimeRange(T0, T0 + 60_000), Shard(1, 2))
    source = QuerySource(fake, SPEC, nothing.span, slices=nothing)
    assert await collect(source) == []
    assert fake.bodies == []
    assert source.summary.completed


async def test_an_expired_cursor_searches_again_inside_the_slice_never_between() -> None:
    """The next slice's first answer is empty but has a cursor, which then expires: the
    new search starts at that slice's start, not at the last event of the one before
    (whose hours after it are other shards')."""
    fake = FakeSearch(EVERY_10_MIN)  # the first slice's six events come in one answer
    fake.script = {1: page([], after="0"), 2: Answer(Meaning.ROW_FAILED, 400, "expired")}
    rows = await collect(QuerySource(fake, SPEC, HOURS, slices=THIRD, page_limit=10))

    assert fake.bodies[3]["filter"]["from"] == str(T0 + 4 * SLICE_MS)
    assert "cursor" not in fake.bodies[3]["page"]
    assert [r.session_id for r in rows] == in_slices(EVERY_10_MIN, THIRD)


async def test_a_search_that_cannot_go_on_fails_with_the_servers_reason() -> None:
    fake = FakeSearch(spread(5))
    fake.script = {0: Answer(Meaning.ROW_FAILED, 400, "HTTP 400: invalid query at character 3")}
    with pytest.raises(QueryRefused, match=r"^HTTP 400: invalid query at character 3; the query"):
        await collect(QuerySource(fake, SPEC, RANGE))
    refused = FakeSearch(spread(5))
    refused.script = {0: Answer(Meaning.KEYS_REFUSED, 403, "Forbidden")}
    with pytest.raises(SearchFailed, match="403"):
        await collect(QuerySource(refused, SPEC, RANGE))
    lost = FakeSearch(spread(5))
    lost.script = {0: Answer(Meaning.RETRYABLE, None, None)}
    with pytest.raises(SearchFailed, match="no answer"):
        await collect(QuerySource(lost, SPEC, RANGE))


async def test_a_search_that_cannot_get_past_an_expiring_cursor_ends() -> None:
    fake = FakeSearch([(f"s{i}", T0) for i in range(15)])  # more than a page at one moment
    fake.expire_cursors = True
    source = QuerySource(fake, SPEC, RANGE, page_limit=10)
    with pytest.raises(SearchFailed, match="expired"):
        await collect(source)
    assert source.summary.restarts == CURSOR_RESTARTS
    assert len({r["filter"]["from"] for r in fake.bodies}) == 1  # stuck at T0
    assert source.summary.sessions == 10

    lost = FakeSearch(spread(30))
    lost.script = {1: Answer(Meaning.ROW_FAILED, 400, "expired")}
    lost.script[2] = Answer(Meaning.ROW_FAILED, 400, "bad request")
    with pytest.raises(SearchFailed, match="bad request"):  # no cursor: not an expiry
        await collect(QuerySource(lost, SPEC, RANGE, page_limit=10))


async def test_a_cursor_that_never_moves_ends_the_search() -> None:
    fake = FakeSearch([])
    fake.script = {n: page(spread(3), after="same") for n in range(5)}
    with pytest.raises(SearchFailed, match="never end"):
        await collect(QuerySource(fake, SPEC, RANGE))
    assert len(fake.bodies) == 2


@pytest.mark.parametrize(
    "payload",
    [None, [], {"data": {}}, {"data": [], "meta": []}, "<html>"],
)
async def test_an_answer_that_is_not_an_events_list_fails_the_search(payload: object) -> None:
    fake = FakeSearch([])
    fake.script = {0: Answer(Meaning.DONE, 200, payload=payload)}
    with pytest.raises(SearchFailed, match="not a RUM events list"):
        await collect(QuerySource(fake, SPEC, RANGE))


async def test_events_without_a_usable_session_or_time_are_skipped_and_counted() -> None:
    good = event("ok", T0)
    bad: list[object] = [
        None,
        {"attributes": None},
        {"attributes": {"timestamp": iso(T0), "attributes": {"session": {"id": ""}}}},
        {"attributes": {"timestamp": iso(T0), "attributes": {"session": {"id": 5}}}},
        {"attributes": {"timestamp": "soon", "attributes": {"session": {"id": "x"}}}},
        {"attributes": {"timestamp": 5, "attributes": {"session": {"id": "x"}}}},
    ]
    fake = FakeSearch([])
    fake.script = {0: Answer(Meaning.DONE, 200, payload={"data": [*bad, good], "meta": {}})}
    source = QuerySource(fake, SPEC, RANGE)
    rows = await collect(source)
    assert [r.session_id for r in rows] == ["ok"]
    assert source.summary.malformed == 6


def test_the_options_are_checked() -> None:
    fake = FakeSearch([])
    with pytest.raises(ValueError, match="page_limit"):
        QuerySource(fake, SPEC, RANGE, page_limit=1001)
    with pytest.raises(ValueError, match="timeout_retries"):
        QuerySource(fake, SPEC, RANGE, timeout_retries=-1)


async def test_a_source_is_read_once() -> None:
    source = QuerySource(FakeSearch(spread(2)), SPEC, RANGE)
    await collect(source)
    with pytest.raises(RuntimeError, match="read once"):
        aiter(source)


# --- the source over loopback, against the sandbox -------------------------------------

POPULATION = PopulationConfig(
    sessions=300, start_ms=T0, interval_ms=1000, events_per_session=4, session_events=2, seed=9
)
WHOLE = TimeRange(T0, Population(POPULATION).end_ms)
Send = Callable[[SearchBody], Any]


@pytest.fixture
async def population_sandbox(make_sandbox: Callable[..., Any]) -> Sandbox:
    sandbox: Sandbox = await make_sandbox(search=SearchConfig(population=POPULATION))
    return sandbox


@pytest.fixture
async def send(population_sandbox: Sandbox, http: aiohttp.ClientSession) -> AsyncIterator[Send]:
    """A minimal stand-in for the pipeline's send: one POST, its status as a Meaning."""

    async def post(body: SearchBody) -> Answer:
        url = f"{population_sandbox.base_url}{PATH}"
        async with http.post(url, json=body, headers=KEYS) as answer:
            payload = await answer.json()
            if answer.status == 200:
                return Answer(Meaning.DONE, 200, payload=payload)
            meaning = Meaning.RATE_LIMITED if answer.status == 429 else Meaning.ROW_FAILED
            return Answer(meaning, answer.status, error=payload["errors"][0])

    return post


def playable(sandbox: Sandbox) -> set[str]:
    """The sessions a playlist can take, from the population's own attributes."""
    population = sandbox.search.population
    sessions = (population.session(i) for i in range(population.config.sessions))
    return {s.id for s in sessions if s.has_replay and not s.is_active}


STAR = QuerySpec("*", playlist_id=7, target="sandbox")


async def test_the_query_finds_exactly_the_populations_sessions(
    population_sandbox: Sandbox, send: Send
) -> None:
    source = QuerySource(send, STAR, WHOLE, page_limit=25)
    rows = await collect(source)
    expected = playable(population_sandbox)
    assert {r.session_id for r in rows} == expected
    summary = source.summary
    assert summary.events == 2 * len(expected)  # two session events each
    assert len(rows) + summary.repeats == summary.events
    assert len(expected) < len(rows)  # some repeats fall on another page: the caller's
    assert [r.ts for r in rows] == sorted(r.ts for r in rows)
    assert source.summary.pages > 10
    assert source.summary.completed

    narrow = QuerySpec("@session.type:synthetics", playlist_id=7, target="sandbox")
    population = population_sandbox.search.population
    synthetic = {
        population.session(i).id
        for i in range(POPULATION.sessions)
        if population.session(i).type == "synthetics"
        and population.session(i).has_replay
        and not population.session(i).is_active
    }
    found = {r.session_id for r in await collect(QuerySource(send, narrow, WHOLE))}
    assert found == synthetic


async def test_over_the_sandbox_faults_change_nothing_found(
    population_sandbox: Sandbox, send: Send, http: aiohttp.ClientSession
) -> None:
    faults = {"expired_cursors": 2, "timeouts": 2, "warnings": 3}
    url = f"{population_sandbox.base_url}/_sandbox/search"
    async with http.post(url, json={"faults": faults}) as answer:
        assert answer.status == 200
    source = QuerySource(send, STAR, WHOLE, page_limit=40)
    rows = await collect(source)
    assert {r.session_id for r in rows} == playable(population_sandbox)
    summary = source.summary
    # the first three answers warn; two of them time out and are not taken
    assert (summary.restarts, summary.timeouts, summary.warnings) == (2, 2, 1)
    assert summary.completed


async def test_a_stopped_search_resumes_from_its_position_with_fewer_pages(
    population_sandbox: Sandbox, send: Send
) -> None:
    first = QuerySource(send, STAR, WHOLE, page_limit=20)
    handed: list[Row] = []
    async for row in first:
        handed.append(row)
        if len(handed) == 100:
            break
    position = first.position_ms
    assert all(row.ts <= position for row in handed)
    second = QuerySource(send, STAR, WHOLE, page_limit=20, start_ms=position)
    rest = await collect(second)
    assert {r.session_id for r in handed + rest} == playable(population_sandbox)
    full = QuerySource(send, STAR, WHOLE, page_limit=20)
    await collect(full)
    assert second.summary.pages < full.summary.pages


def test_a_row_never_sent_holds_the_search_position_back_for_the_rest_of_the_run() -> None:
    """A stop leaves rows not attempted (and an abort accounts for the rest so): no
    position at or past their chunk is saved, or the rerun would resume past them and
    never send them. Rows before them still move it."""
    chunks = QueryChunks.__new__(QueryChunks)  # the bookkeeping alone, no search
    chunks.handed, chunks.of_line = deque(), {}
    saved: list[int] = []
    sink = Checkpoints(chunks, saved.append)
    rows = [Row(1, f"s{n}", n, "rum", "query", n) for n in range(1, 7)]
    for part, position in ((rows[0:2], 100), (rows[2:4], 200), (rows[4:6], 300)):
        handed = HandedChunk(len(part), position)
        chunks.handed.append(handed)
        chunks.of_line.update({row.line: handed for row in part})

    for row in rows[:2]:
        sink(Outcome(row, Result.CREATED))
    assert saved == [100]
    sink(Outcome(rows[2], Result.CREATED))
    sink(Outcome(rows[3], Result.NOT_ATTEMPTED))
    for row in rows[4:]:
        sink(Outcome(row, Result.CREATED))
    assert saved == [100]  # never 200 or 300: the rerun searches from 100 again


def test_a_search_position_is_saved_once_every_row_before_it_has_finished() -> None:
    """`Checkpoints`: rows finish out of order; the position taken after a chunk is saved
    only when that chunk and every one before it have finished, skipped rows included."""
    chunks = QueryChunks.__new__(QueryChunks)  # the bookkeeping alone, no search
    chunks.handed, chunks.of_line = deque(), {}
    saved: list[int] = []
    sink = Checkpoints(chunks, saved.append)
    first = [Row(1, f"s{n}", n, "rum", "query", n) for n in (1, 2)]
    second = [Row(1, f"s{n}", n, "rum", "query", n) for n in (3, 4)]
    for rows, position in ((first, 100), (second, 200)):
        handed = HandedChunk(len(rows), position)
        chunks.handed.append(handed)
        chunks.of_line.update({row.line: handed for row in rows})

    sink(Outcome(second[0], Result.CREATED))
    sink(Skipped([second[1]]))
    assert saved == []  # the first chunk is still under way
    sink(Outcome(first[1], Result.CREATED))
    assert saved == []
    sink(Outcome(first[0], Result.FAILED))
    assert saved == [200]  # both chunks are done: the newest position at once
