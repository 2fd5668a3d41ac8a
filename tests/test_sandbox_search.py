"""The sandbox's RUM search must answer like Datadog's, over a population a test can
reason about, or the query source is proven against the wrong thing."""

from __future__ import annotations

import argparse
import bisect
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from sandbox_http import KEYS, FakeClock, assert_ratelimit_headers
from support import MakeSandbox

from worker.sandbox import FaultConfig, Sandbox
from worker.sandbox.cli import add_arguments, config_from_args
from worker.sandbox.population import DEFAULT_SPAN_MS, Population, PopulationConfig
from worker.sandbox.search import PATH
from worker.sandbox.search_config import SearchConfig, SearchFaults

T0 = 1_704_067_200_000
SMALL = PopulationConfig(
    sessions=50, start_ms=T0, interval_ms=1000, events_per_session=4, session_events=2, seed=3
)
Answer = tuple[int, dict[str, Any], CIMultiDictProxy[str]]


async def search(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    body: object,
    headers: dict[str, str] = KEYS,
) -> Answer:
    async with http.post(f"{sandbox.base_url}{PATH}", json=body, headers=headers) as answer:
        return answer.status, await answer.json(), answer.headers


async def control(http: aiohttp.ClientSession, sandbox: Sandbox, body: object) -> dict[str, Any]:
    async with http.post(f"{sandbox.base_url}/_sandbox/search", json=body) as answer:
        assert answer.status == 200, await answer.text()
        result: dict[str, Any] = await answer.json()
        return result


async def every_page(
    http: aiohttp.ClientSession, sandbox: Sandbox, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every page's answer, following meta.page.after until there is none."""
    answers, cursor = [], None
    while True:
        page = {**body.get("page", {}), **({"cursor": cursor} if cursor else {})}
        status, answer, _ = await search(http, sandbox, {**body, "page": page})
        assert status == 200, answer
        answers.append(answer)
        cursor = answer["meta"].get("page", {}).get("after")
        if cursor is None:
            return answers


def session_ids(answers: list[dict[str, Any]]) -> list[str]:
    return [e["attributes"]["attributes"]["session"]["id"] for a in answers for e in a["data"]]


def whole_range() -> dict[str, str]:
    return {"from": str(T0), "to": str(Population(SMALL).end_ms)}


@pytest.fixture
async def small(make_sandbox: MakeSandbox) -> Sandbox:
    return await make_sandbox(search=SearchConfig(population=SMALL))


# --- the population on its own -------------------------------------------------------


def test_a_population_is_a_pure_function_of_its_seed() -> None:
    again = Population(SMALL)
    other = Population(PopulationConfig(sessions=50, seed=4).placed(T0))
    first = Population(SMALL)
    assert [first.session(i) for i in range(50)] == [again.session(i) for i in range(50)]
    assert {first.session(i).id for i in range(50)}.isdisjoint(
        other.session(i).id for i in range(50)
    )
    assert len({first.session(i).id for i in range(50)}) == 50


def test_shares_hold_over_many_sessions() -> None:
    shares = PopulationConfig(sessions=20_000, replay_share=0.3, active_share=0.2)
    population = Population(shares.placed(T0))
    sessions = [population.session(i) for i in range(20_000)]
    assert 0.28 < sum(s.has_replay for s in sessions) / 20_000 < 0.32
    assert 0.18 < sum(s.is_active for s in sessions) / 20_000 < 0.22
    assert {s.type for s in sessions} == {"user", "synthetics", "ci_test"}


@pytest.mark.parametrize("now_after_end_ms", [10**9, 30], ids=["room", "packed"])
def test_growing_keeps_every_existing_event_where_it_was(now_after_end_ms: int) -> None:
    before = Population(SMALL)
    after = Population(SMALL.grown(13, before.end_ms + now_after_end_ms))
    assert after.end_ms > before.end_ms
    for index in range(before.config.slots):
        old = before.event(index)
        if old is not None:
            assert after.event(index) == old
    assert after.session(62).index == 62


@pytest.mark.parametrize("extra", [13, 400])
def test_grown_sessions_never_happen_after_the_moment_of_growing(extra: int) -> None:
    """A sandbox placed as it starts (the last event just before now) that grows an hour
    later: the new events fill that hour, spaced evenly and in order, none in the
    future, and every time still maps to the first event at or after it."""
    placed = PopulationConfig(sessions=50, events_per_session=4).placed(T0)
    before = Population(placed)
    now_ms = before.end_ms + 3_600_000
    after = Population(placed.grown(extra, now_ms))
    times = [after.timestamp_ms(i) for i in range(after.config.slots)]
    assert times == sorted(set(times)), "one event a slot, in time order"
    assert times[: placed.slots] == [before.timestamp_ms(i) for i in range(placed.slots)]
    assert before.end_ms <= times[placed.slots]
    assert after.end_ms <= now_ms
    for ms in [T0 - 1, *times, *(t + 1 for t in times), now_ms + 1]:
        assert after.index_at(ms) == bisect.bisect_left(times, ms), ms
    stays = placed.grown(extra, before.end_ms + 10**12)  # room to spare: spacing as it was
    assert stays.later == ()
    assert Population(stays).end_ms > now_ms


def test_a_time_maps_to_an_event_index_by_arithmetic() -> None:
    population = Population(SMALL)
    assert population.index_at(T0 - 5) == 0
    assert population.index_at(T0) == 0
    assert population.index_at(T0 + 1) == 1
    assert population.index_at(T0 + 1000) == 1
    assert population.index_at(population.end_ms + 10**9) == SMALL.slots


def test_a_population_is_placed_in_the_span_before_the_sandbox_starts() -> None:
    now_ms = 1_800_000_123_456
    placed = Population(PopulationConfig(sessions=1000).placed(now_ms))
    assert now_ms - DEFAULT_SPAN_MS - 60_000 < placed.timestamp_ms(0)
    assert placed.end_ms <= now_ms
    assert placed.timestamp_ms(0) % 60_000 == 0
    assert SMALL.placed(now_ms) == SMALL  # already placed: kept as it is
    with pytest.raises(ValueError, match="placed"):
        Population(PopulationConfig())


# --- the route ------------------------------------------------------------------------


async def test_pages_cover_the_matching_events_once_in_time_order(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    body = {"filter": {"query": "@type:session", **whole_range()}, "page": {"limit": 7}}
    answers = await every_page(http, small, {**body, "sort": "timestamp"})
    assert all(len(a["data"]) <= 7 for a in answers)
    assert len(answers) == 15
    events = [e for a in answers for e in a["data"]]
    stamps = [e["attributes"]["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 100
    assert all(e["type"] == "rum" and stamps[0].endswith("Z") for e in events)
    ids = session_ids(answers)
    population = small.search.population
    assert sorted(ids) == sorted([population.session(i).id for i in range(50)] * 2)
    meta = answers[0]["meta"]
    assert meta["status"] == "done"
    assert isinstance(meta["elapsed"], int)
    assert meta["request_id"]

    newest_first = await every_page(http, small, {**body, "sort": "-timestamp"})
    assert session_ids(newest_first) == ids[::-1]


async def test_the_wrapped_query_finds_exactly_the_playable_sessions(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    query = "(*) @type:session @session.has_replay:true @session.is_active:false"
    answers = await every_page(
        http, small, {"filter": {"query": query, **whole_range()}, "page": {"limit": 1000}}
    )
    population = small.search.population
    playable = {
        s.id for s in (population.session(i) for i in range(50)) if s.has_replay and not s.is_active
    }
    assert 0 < len(playable) < 50
    assert set(session_ids(answers)) == playable


async def test_the_range_is_from_inclusive_to_exclusive(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    window = {"from": str(T0 + 10_000), "to": str(T0 + 20_000)}
    _, answer, _ = await search(
        http, small, {"filter": {"query": "*", **window}, "page": {"limit": 100}}
    )
    stamps = [e["attributes"]["attributes"]["date"] for e in answer["data"]]
    assert sorted(stamps) == list(range(T0 + 10_000, T0 + 20_000, 1000))


async def test_dates_default_to_the_last_15_minutes_and_take_date_math(
    http: aiohttp.ClientSession, make_sandbox: MakeSandbox
) -> None:
    clock = FakeClock(1_800_000_000.0)
    sandbox = await make_sandbox(clock=clock)
    population = sandbox.search.population
    now_ms = 1_800_000_000_000
    assert population.end_ms <= now_ms < population.end_ms + 60_000

    config = population.config
    assert config.start_ms is not None
    assert config.interval_ms is not None
    assert config.later == ()

    def expected(from_ms: int, to_ms: int) -> int:
        return sum(
            1
            for i in range(population.config.slots)
            if from_ms <= config.start_ms + i * config.interval_ms < to_ms
            and population.event(i) is not None
        )

    _, answer, _ = await search(http, sandbox, {"page": {"limit": 1000}})
    assert len(answer["data"]) == expected(now_ms - 900_000, now_ms) > 0
    forms = {"from": "now-2d", "to": "2027-01-14T08:00:00Z"}  # now-1d
    _, answer, _ = await search(http, sandbox, {"filter": forms, "page": {"limit": 1000}})
    assert len(answer["data"]) == expected(now_ms - 2 * 86_400_000, now_ms - 86_400_000) > 10


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"page": {"limit": 1001}}, "page.limit must be an integer from 1 to 1000"),
        ({"page": {"limit": 0}}, "page.limit"),
        ({"page": {"limit": "10"}}, "page.limit"),
        ({"filter": {"query": "@type:session)"}}, "invalid query"),
        ({"filter": {"query": "checkout"}}, "free-text"),
        ({"filter": {"from": "now", "to": "now-1h"}}, "filter.from is after filter.to"),
        ({"filter": {"from": "yesterday"}}, "filter.from 'yesterday' is not a time"),
        ({"filter": {"to": "2024-01-01T00:00:00"}}, "no time zone"),
        ({"sort": "date"}, "sort must be"),
        ({"page": {"cursor": "not-a-cursor"}}, "not a cursor this API gave"),
        ({"page": {"cursor": 7}}, "page.cursor must be a string"),
        ({"filters": {}}, "unknown field"),
        ([], "JSON object"),
    ],
)
async def test_a_bad_search_is_refused_with_400_saying_why(
    http: aiohttp.ClientSession, small: Sandbox, body: object, problem: str
) -> None:
    status, answer, _ = await search(http, small, body)
    assert status == 400
    assert problem in answer["errors"][0]


async def test_a_cursor_belongs_to_its_own_search(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    body = {"filter": {"query": "*", **whole_range()}, "page": {"limit": 5}}
    _, first, _ = await search(http, small, body)
    cursor = first["meta"]["page"]["after"]
    other = {"filter": {"query": "@type:view", **whole_range()}, "page": {"cursor": cursor}}
    status, answer, _ = await search(http, small, other)
    assert status == 400
    assert "another search" in answer["errors"][0]


async def test_the_keys_are_checked_as_for_the_playlists(
    http: aiohttp.ClientSession, make_sandbox: MakeSandbox
) -> None:
    sandbox = await make_sandbox(api_key="right", app_key="right-app")
    status, _, _ = await search(http, sandbox, {}, headers={})
    assert status == 403
    wrong = {"DD-API-KEY": "wrong", "DD-APPLICATION-KEY": "right-app"}
    assert (await search(http, sandbox, {}, headers=wrong))[0] == 403
    right = {"DD-API-KEY": "right", "DD-APPLICATION-KEY": "right-app"}
    assert (await search(http, sandbox, {}, headers=right))[0] == 200


async def test_the_search_has_its_own_rate_limit_and_name(
    http: aiohttp.ClientSession, make_sandbox: MakeSandbox
) -> None:
    sandbox = await make_sandbox(
        rate_limit=(2, 60.0), search_rate_limit=(3, 60.0), search=SearchConfig(population=SMALL)
    )
    for _ in range(3):
        status, _, headers = await search(http, sandbox, {})
        assert status == 200
    assert headers["X-RateLimit-Name"] == "rum_search"
    assert headers["X-RateLimit-Limit"] == "3"
    status, answer, headers = await search(http, sandbox, {})
    assert status == 429
    assert answer == {"errors": ["Too many requests"]}
    assert headers["X-RateLimit-Remaining"] == "0"
    url = f"{sandbox.base_url}/api/v2/rum/replay/playlists/1/sessions/s1?ts=1"
    async with http.put(url, headers=KEYS) as put:
        assert put.status == 201  # the playlists' budget is untouched by the searches
        assert put.headers["X-RateLimit-Name"] != "rum_search"


async def test_only_post_is_served(http: aiohttp.ClientSession, small: Sandbox) -> None:
    async with http.get(f"{small.base_url}{PATH}", headers=KEYS) as answer:
        assert answer.status == 405
        assert answer.headers["Allow"] == "POST"


async def test_the_sandbox_faults_reach_the_search_as_every_api_request(
    http: aiohttp.ClientSession, make_sandbox: MakeSandbox
) -> None:
    """The search goes through the same pipeline as the playlists' routes: a bare 429 of
    a proxy (with `shares_apply_to="all"`), then revoked keys, and it is counted."""
    faults = FaultConfig(bare_429=1.0, shares_apply_to="all")
    sandbox = await make_sandbox(search=SearchConfig(population=SMALL), faults=faults)

    async def answer() -> tuple[int, str, CIMultiDictProxy[str]]:
        url = f"{sandbox.base_url}{PATH}"
        async with http.post(url, json={}, headers=KEYS) as response:
            return response.status, await response.text(), response.headers

    status, text, headers = await answer()
    assert (status, text) == (429, "429 Too Many Requests\n")
    assert_ratelimit_headers(headers, present=False)
    sandbox.reconfigure(faults=FaultConfig(revoke_keys_after=1))
    assert [(await answer())[0] for _ in range(2)] == [200, 403]
    assert sandbox.stats.calls["search_events"] == sandbox.stats.requests == 3
    assert sandbox.stats.after_revoke == 1
    assert sandbox.search.stats.pages == 1


# --- faults and growth, through the control route ---------------------------------------


async def test_an_expired_cursor_is_refused_naming_it(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    body = {"filter": {"query": "*", **whole_range()}, "page": {"limit": 5}}
    _, first, _ = await search(http, small, body)
    cursor = first["meta"]["page"]["after"]
    state = await control(http, small, {"faults": {"expired_cursors": 1}})
    assert state["faults"]["expired_cursors"] == 1
    again = {**body, "page": {"limit": 5, "cursor": cursor}}
    status, answer, _ = await search(http, small, again)
    assert status == 400
    assert "has expired" in answer["errors"][0]
    assert cursor[:20] in answer["errors"][0]
    status, answer, _ = await search(http, small, again)  # the fault is spent
    assert status == 200
    assert len(answer["data"]) == 5


async def test_a_timeout_answers_part_of_the_page_with_no_cursor(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    await control(http, small, {"faults": {"timeouts": 1, "warnings": 1}})
    body = {"filter": {"query": "*", **whole_range()}, "page": {"limit": 10}}
    _, partial, _ = await search(http, small, body)
    assert partial["meta"]["status"] == "timeout"
    assert len(partial["data"]) == 5
    assert "page" not in partial["meta"]
    assert partial["meta"]["warnings"][0]["code"]
    _, full, _ = await search(http, small, body)
    assert full["meta"]["status"] == "done"
    assert "warnings" not in full["meta"]
    assert full["data"][:5] == partial["data"]
    assert len(full["data"]) == 10
    stats = (await control(http, small, {}))["stats"]
    assert stats["timeouts"] == 1
    assert stats["warnings"] == 1
    assert stats["pages"] == 2


async def test_the_population_grows_later_in_time(
    http: aiohttp.ClientSession, small: Sandbox
) -> None:
    everything = {"filter": {"query": "@type:session", "from": "0", "to": "now"}}
    before = session_ids(await every_page(http, small, {**everything, "sort": "timestamp"}))
    state = await control(http, small, {"grow": 30})
    assert state["population"]["sessions"] == 80
    after = session_ids(await every_page(http, small, {**everything, "sort": "timestamp"}))
    old = set(before)
    assert [i for i in after if i in old] == before
    assert len(set(after)) == 80
    assert after[: len(before) - 4] == before[:-4]  # only the last group's holes fill in


@pytest.mark.parametrize(
    "body",
    [{"grow": -1}, {"faults": {"timeout": 1}}, {"faults": {"timeouts": -2}}, {"rate_limit": "x"}],
)
async def test_a_bad_control_change_changes_nothing(
    http: aiohttp.ClientSession, small: Sandbox, body: object
) -> None:
    before = small.search.state()
    async with http.post(f"{small.base_url}/_sandbox/search", json=body) as answer:
        assert answer.status == 400
        assert (await answer.json())["errors"]
    assert small.search.state() == before


def test_the_sandbox_options_set_the_search() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--population",
            "5000",
            "--population-span",
            "1d",
            "--search-rate-limit",
            "10/1",
            "--replay-share",
            "0.5",
            "--events-per-session",
            "3",
            "--session-events",
            "2",
        ]
    )
    sandbox_config = config_from_args(args, env={})
    assert sandbox_config.search_rate_limit == (10, 1.0)
    population = sandbox_config.search.population
    assert population is not None
    assert population.sessions == 5000
    assert population.events_per_session == 3
    assert population.session_events == 2
    assert population.replay_share == 0.5
    assert population.span_ms == 86_400_000
    assert population.start_ms is None  # placed as the sandbox starts
    with pytest.raises(ValueError, match="--population-span"):
        config_from_args(parser.parse_args(["--population-span", "soon"]), env={})
    with pytest.raises(ValueError, match="--session-events: session_events must be"):
        config_from_args(parser.parse_args(["--session-events", "5"]), env={})
    with pytest.raises(ValueError, match="--replay-share: replay_share must be"):
        config_from_args(parser.parse_args(["--replay-share", "2"]), env={})
    with pytest.raises(ValueError, match="--search-rate-limit"):
        config_from_args(parser.parse_args(["--search-rate-limit", "0/1"]), env={})


def test_search_faults_are_counts() -> None:
    with pytest.raises(ValueError, match="timeouts"):
        SearchFaults(timeouts=-1)
