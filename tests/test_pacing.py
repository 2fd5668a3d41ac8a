"""Pacing against what real rate limits do: the real command, a real sandbox, no mocks.

Each end-to-end case checks on the server's side that every row landed, and that the
report's counts agree with what the server answered. None asserts a duration: how close
the pacing comes to the limit is measured by `bench/ratelimit.py`. Where a bound on 429s
is asserted, a client that ignored the headers would draw several times as many. The
cases a server cannot stage (Retry-After as a date, the exact backoff) drive the Pacer
directly with an injected clock.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import aiohttp
import pytest
from sandbox_http import FakeClock
from support import (
    KEYS,
    Finished,
    MakeSandbox,
    assert_invariant,
    finish,
    held,
    keys_of,
    rows,
    start_cli,
    write_csv,
)

from worker.answers import (
    Answer,
    RateLimit,
    meaning_of,
    parse_rate_limit,
    parse_retry_after,
)
from worker.pacer import DEFAULT_MAX_PAUSE_S, GUARD_S, Pacer, Pause
from worker.sandbox import FaultConfig, Sandbox


@dataclass(frozen=True)
class Paced:
    done: Finished
    report: dict[str, int]

    def pauses(self, cause: str) -> list[dict[str, object]]:
        return [e for e in self.done.events("paused") if cause in str(e["reason"])]


async def run_at_once(
    sandbox: Sandbox, tmp_path: Path, shares: Sequence[list[dict[str, object]]], *options: str
) -> list[Paced]:
    """One run of the real command per share of the rows, all at once on one sandbox."""
    started = []
    for i, share in enumerate(shares):
        path = write_csv(tmp_path / f"in-{i}.csv", share)
        report = tmp_path / f"report-{i}.json"
        args = ("run", str(path), "--base-url", sandbox.base_url, "--no-journal")
        process = await start_cli(*args, "--report", str(report), *options, env=KEYS)
        started.append((process, report))
    runs = []
    for process, report in started:
        done = await finish(process)
        runs.append(Paced(done, json.loads(report.read_text())))
    return runs


async def run_paced(
    sandbox: Sandbox, tmp_path: Path, items: list[dict[str, object]], *options: str
) -> Paced:
    (run,) = await run_at_once(sandbox, tmp_path, [items], *options)
    return run


def assert_every_row_landed(
    sandbox: Sandbox, items: list[dict[str, object]], runs: Sequence[Paced], others_429: int = 0
) -> None:
    """Every row is held, no 429 became a failure, and the reports match the server."""
    assert held(sandbox) == keys_of(items)
    for run in runs:
        report = run.report
        assert run.done.code == 0, run.done.stderr[-3000:]
        assert_invariant(report)
        assert report["failed"] == report["not_attempted"] == 0
        assert report["requests"] == report["created"] + report["rate_limited"]
        assert report["retries"] == 0, "a resend after a 429 is no retry: it spent no attempt"
        assert run.done.summary["rate_limited"] == report["rate_limited"]
    assert sum(r.report["requests"] for r in runs) == sandbox.stats.puts
    limited = sum(r.report["rate_limited"] for r in runs)
    assert limited + others_429 == sandbox.stats.responses[429]


async def test_concurrency_far_above_the_limit(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(rate_limit=(10, 1))
    items = rows(30)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "64")

    assert_every_row_landed(sandbox, items, [run])
    assert run.report["rate_limited"] <= 2, "64 at once against 10 a window draws dozens"


async def test_two_runs_share_one_budget(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(rate_limit=(20, 1))
    items = rows(60)

    runs = await run_at_once(sandbox, tmp_path, [items[::2], items[1::2]], "--concurrency", "16")

    assert_every_row_landed(sandbox, items, runs)
    assert sandbox.stats.responses[429] <= 3


@pytest.fixture
async def hammer() -> AsyncIterator[Callable[[Sandbox, float], Awaitable[None]]]:
    """`await hammer(sandbox, per_second)`: another tool spending the same budget with
    GETs at a steady rate, heedless of the headers, until the test ends."""
    tasks: list[asyncio.Task[None]] = []

    async def start(sandbox: Sandbox, per_second: float) -> None:
        async def spend(http: aiohttp.ClientSession) -> None:
            url = f"{sandbox.base_url}/api/v2/rum/replay/playlists/1001/sessions"
            while True:
                async with http.get(url, headers={"DD-API-KEY": "k", "DD-APPLICATION-KEY": "k"}):
                    pass
                await asyncio.sleep(1 / per_second)

        async def run() -> None:
            async with aiohttp.ClientSession() as http:
                await spend(http)

        tasks.append(asyncio.create_task(run()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_another_tool_spending_the_same_budget(
    make_sandbox: MakeSandbox,
    tmp_path: Path,
    hammer: Callable[[Sandbox, float], Awaitable[None]],
) -> None:
    sandbox = await make_sandbox(rate_limit=(20, 1))
    items = rows(30)
    await hammer(sandbox, 8)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "16")

    others_429 = sandbox.stats.responses[429] - run.report["rate_limited"]
    assert_every_row_landed(sandbox, items, [run], others_429=others_429)
    assert run.report["rate_limited"] <= 3


async def landed_count(sandbox: Sandbox, count: int) -> None:
    """Returns once the sandbox holds `count` sessions (it has no hook to wait on)."""
    while len(sandbox.store) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("new_limit", [(5, 1.0), (10, 2.0)], ids=["lower", "longer-period"])
async def test_a_limit_that_changes_mid_run(
    make_sandbox: MakeSandbox, tmp_path: Path, new_limit: tuple[int, float]
) -> None:
    sandbox = await make_sandbox(rate_limit=(20, 1))
    items = rows(25)

    running = asyncio.create_task(run_paced(sandbox, tmp_path, items, "--concurrency", "16"))
    await asyncio.wait_for(landed_count(sandbox, 10), timeout=30)
    sandbox.reconfigure(rate_limit=new_limit)
    run = await running

    assert_every_row_landed(sandbox, items, [run])
    # What was in flight when the limit fell may be refused; after that the new limit
    # is known, and no later window is overrun.
    assert len(run.pauses("429")) <= 1, "the new limit was learned, not fought"


@pytest.mark.parametrize(
    ("retry_after_s", "cause", "seconds"),
    [
        (None, "429 without rate-limit headers: backing off", (0.0, 60.0)),
        (1, "429: waiting Retry-After", (1.0, 1.0)),  # the second asked for, not a guess
    ],
)
async def test_a_proxys_429s_are_waited_out(
    make_sandbox: MakeSandbox,
    tmp_path: Path,
    retry_after_s: int | None,
    cause: str,
    seconds: tuple[float, float],
) -> None:
    """A proxy's 429 (plain text, no rate-limit headers): with no Retry-After every worker
    backs off; with one, every worker waits what it says. No row fails either way."""
    faults = FaultConfig(bare_429=0.2, retry_after_s=retry_after_s, seed=11)
    sandbox = await make_sandbox(faults=faults)
    items = rows(16)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "4")

    assert_every_row_landed(sandbox, items, [run])
    assert run.report["rate_limited"] > 0
    pauses = run.done.events("paused")
    assert pauses
    assert {str(p["reason"]) for p in pauses} == {cause}
    low, high = seconds
    assert all(low <= float(str(p["seconds"])) <= high for p in pauses)


async def test_a_proxy_that_strips_the_headers(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(rate_limit=(10, 1), faults=FaultConfig(ratelimit_headers=False))
    items = rows(25)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "8")

    assert_every_row_landed(sandbox, items, [run])
    assert run.report["rate_limited"] > 0, "nothing to learn the limit from but the 429s"
    assert run.pauses("without rate-limit headers")


async def test_a_reset_off_by_up_to_a_second(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(rate_limit=(10, 1), faults=FaultConfig(reset_skew_s=1.0))
    items = rows(30)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "16")

    assert_every_row_landed(sandbox, items, [run])
    assert run.report["rate_limited"] <= 2


async def test_a_limit_that_never_lifts_ends_only_by_max_stall(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(bare_429=1.0))
    items = rows(6)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "4", "--max-stall", "1")

    assert run.done.code == 3
    report = run.report
    assert_invariant(report)
    assert (report["not_attempted"], report["failed"], report["created"]) == (6, 0, 0)
    assert report["rate_limited"] == report["requests"] == sandbox.stats.responses[429] > 0
    assert held(sandbox) == set()
    (aborted,) = run.done.events("aborted")
    assert aborted["reason"] == "no progress"


async def test_rate_is_a_ceiling_on_every_second(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    """--rate R: no second of the run, counted from any request, holds more than R plus
    10 ms' worth, one request at this rate (a bucket of a second's worth would let nearly
    2R through in the first)."""
    sandbox = await make_sandbox()  # a limit that never binds: only --rate paces
    items = rows(16)

    run = await run_paced(sandbox, tmp_path, items, "--concurrency", "16", "--rate", "10")

    assert_every_row_landed(sandbox, items, [run])
    arrivals = sorted(request.at for request in sandbox.requests)
    assert len(arrivals) == 16
    busiest = max(bisect.bisect_left(arrivals, at + 1.0) - i for i, at in enumerate(arrivals))
    assert busiest <= 10 + 1, arrivals


# --- the parts on their own ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "X-RateLimit-Limit": "100",
                "X-RateLimit-Period": "2",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "1",
                "X-RateLimit-Name": "rum",
            },
            RateLimit(100, 2.0, 0, 1.0, "rum"),
        ),
        ({"X-RateLimit-Remaining": "7"}, RateLimit(None, None, 7, None)),
        (
            {"X-RateLimit-Limit": "lots", "X-RateLimit-Period": "-2", "X-RateLimit-Reset": "nan"},
            None,
        ),
        (
            {"X-RateLimit-Limit": "0", "X-RateLimit-Reset": "3"},
            RateLimit(None, None, None, 3.0),
        ),
        ({"Retry-After": "3"}, None),
        ({}, None),
    ],
    ids=["all", "remaining-only", "garbage", "zero-limit", "retry-after-only", "none"],
)
def test_parse_rate_limit_headers(headers: dict[str, str], expected: RateLimit | None) -> None:
    assert parse_rate_limit(headers) == expected


NOW = 1_800_000_000.0


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + seconds_from_now, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        (http_date(30), 30.0),
        (http_date(-30), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),  # no zone: cannot be placed in time
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=lambda: NOW) == expected


PUTS = "playlist_sessions"
SEARCH = "rum_search"


@dataclass
class Harness:
    pacer: Pacer
    clock: FakeClock
    notices: list[Pause]

    @property
    def pauses(self) -> list[tuple[float, str]]:
        return [(notice.pause_s, notice.reason) for notice in self.notices]


@pytest.fixture
def harness() -> Harness:
    """A Pacer on a fake clock (one for both monotonic and wall time), recording pauses."""
    clock = FakeClock(NOW + 0.25)
    notices: list[Pause] = []
    pacer = Pacer(
        rate=None,
        on_pause=notices.append,
        clock=clock,
        wall=clock,
        rng=random.Random(3),
    )
    return Harness(pacer, clock, notices)


def limit_headers(
    remaining: int, reset: float, limit: int = 10, name: str | None = None
) -> RateLimit:
    return RateLimit(limit, 1.0, remaining, reset, name)


def answer(
    status: int, rate_limit: RateLimit | None = None, retry_after: float | None = None
) -> Answer:
    return Answer(meaning_of(status), status, 1.0, rate_limit=rate_limit, retry_after_s=retry_after)


async def test_a_retry_after_date_pauses_everyone_until_then(harness: Harness) -> None:
    ticket = await harness.pacer.acquire(PUTS)
    retry_after = parse_retry_after(http_date(30), now=harness.clock)
    harness.pacer.settle(ticket, answer(429, None, retry_after))

    assert harness.pauses == [(pytest.approx(29.75), "429: waiting Retry-After")]


async def test_bare_429s_back_off_exponentially_with_jitter(harness: Harness) -> None:
    ceilings = []
    for status in (429, 429, 429, 201, 429):
        ticket = await harness.pacer.acquire(PUTS)
        harness.pacer.settle(ticket, answer(status))
        if status == 429:
            seconds, reason = harness.pauses[-1]
            assert reason == "429 without rate-limit headers: backing off"
            ceilings.append(seconds)
            harness.clock.now += seconds  # the pause is over
    assert 0 <= ceilings[0] <= 1
    assert 0 <= ceilings[1] <= 2
    assert 0 <= ceilings[2] <= 4
    assert 0 <= ceilings[3] <= 1, "a success starts the backoff afresh"


async def test_bare_429s_to_requests_sent_together_are_one_refusal(harness: Harness) -> None:
    pacer = harness.pacer
    pacer.settle(await pacer.acquire(PUTS), answer(201))  # the probe: no limits to learn
    burst = [await pacer.acquire(PUTS) for _ in range(8)]

    for ticket in burst:
        pacer.settle(ticket, answer(429))

    ((seconds, _),) = harness.pauses
    assert 0 <= seconds <= 1, "the backoff did not grow with each request of the burst"


async def test_after_a_429_one_probe_goes_before_the_rest(harness: Harness) -> None:
    pacer, clock = harness.pacer, harness.clock
    ticket = await pacer.acquire(PUTS)
    pacer.settle(ticket, answer(429, limit_headers(0, 1)))
    assert [reason for _, reason in harness.pauses] == [
        "429: waiting for the rate-limit window to reset"
    ]
    clock.now = NOW + 1 + GUARD_S  # the next window

    probe = await pacer.acquire(PUTS)
    follower = asyncio.create_task(pacer.acquire(PUTS))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not follower.done(), "held until the probe's answer"

    clock.now += 0.5  # past the spacing the window's budget asks for
    pacer.settle(probe, answer(201, limit_headers(9, 1)))
    await asyncio.wait_for(follower, timeout=5)


async def test_a_429_with_headers_waits_for_the_calendar_boundary(harness: Harness) -> None:
    ticket = await harness.pacer.acquire(PUTS)
    harness.pacer.settle(ticket, answer(429, limit_headers(0, reset=0)))  # Reset rounded down

    ((seconds, reason),) = harness.pauses
    assert seconds == pytest.approx(0.75 + GUARD_S)
    assert reason == "429: waiting for the rate-limit window to reset"


async def test_a_429_from_a_window_already_over_costs_no_pause(harness: Harness) -> None:
    harness.clock.now = NOW + 0.99
    ticket = await harness.pacer.acquire(PUTS)
    harness.clock.now = NOW + 1.01  # answered after the boundary

    harness.pacer.settle(ticket, answer(429, limit_headers(0, reset=1)))

    assert harness.pauses == []
    await asyncio.wait_for(harness.pacer.acquire(PUTS), timeout=5)  # the probe goes at once


# --- bounds on pauses, the time actually paused, one budget per limit -------------------


def far_reset(remaining: int = 0, reset: float = 999_999, name: str | None = None) -> RateLimit:
    """Headers with no period, so nothing but the pause cap bounds the Reset."""
    return RateLimit(None, None, remaining, reset, name)


@pytest.mark.parametrize(
    ("rate_limit", "retry_after", "asked"),
    [
        (far_reset(), None, 999_999),
        (None, 86_400.0, 86_400),
        (
            None,
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now=lambda: NOW),
            datetime(2100, 1, 1, tzinfo=UTC).timestamp() - NOW,
        ),
    ],
    ids=["reset-999999", "retry-after-a-day", "retry-after-2100"],
)
async def test_a_pause_is_capped_and_says_what_was_asked(
    harness: Harness, rate_limit: RateLimit | None, retry_after: float | None, asked: float
) -> None:
    ticket = await harness.pacer.acquire(PUTS)
    harness.pacer.settle(ticket, answer(429, rate_limit, retry_after))

    (notice,) = harness.notices
    assert notice.asked_s == pytest.approx(asked, abs=1)
    assert notice.pause_s == DEFAULT_MAX_PAUSE_S
    assert notice.family == PUTS
    harness.clock.now += DEFAULT_MAX_PAUSE_S
    probe = await asyncio.wait_for(harness.pacer.acquire(PUTS), timeout=5)  # then one probe
    assert probe.seq == 2


async def test_a_reset_beyond_the_announced_period_is_not_believed(harness: Harness) -> None:
    ticket = await harness.pacer.acquire(PUTS)
    harness.pacer.settle(ticket, answer(429, limit_headers(0, reset=999_999)))  # period 1 s

    ((seconds, _),) = harness.pauses
    assert seconds <= 2 + GUARD_S


async def test_a_spent_window_that_ends_too_far_away_is_waited_at_most_the_cap(
    harness: Harness,
) -> None:
    pacer = harness.pacer
    pacer.settle(await pacer.acquire(PUTS), answer(201, far_reset(remaining=0)))

    assert pacer.try_acquire(PUTS) is None
    (notice,) = harness.notices
    assert (notice.asked_s, notice.pause_s) == (pytest.approx(999_999 + GUARD_S), 300.0)
    assert notice.reason == "rate-limit window spent; waiting for it to reset"
    harness.clock.now += DEFAULT_MAX_PAUSE_S
    assert pacer.try_acquire(PUTS) is not None, "the pause is over: a probe goes"
    assert pacer.try_acquire(PUTS) is None, "and only the probe, until it is answered"


async def test_paused_s_is_the_time_actually_spent_paused(harness: Harness) -> None:
    pacer, clock = harness.pacer, harness.clock
    pacer.settle(await pacer.acquire(PUTS), answer(429, None, 60.0))

    clock.now += 3  # the run stops 3 s into a pause of 60
    assert pacer.paused_s == pytest.approx(3)
    clock.now += 100
    assert pacer.paused_s == pytest.approx(60)

    pacer.settle(await pacer.acquire(PUTS), answer(429, None, 1e308))  # bounded, then capped
    clock.now += 10_000
    assert pacer.paused_s == pytest.approx(60 + DEFAULT_MAX_PAUSE_S)


async def test_overlapping_pauses_of_two_limits_count_once(harness: Harness) -> None:
    pacer, clock = harness.pacer, harness.clock
    puts, search = await pacer.acquire(PUTS), await pacer.acquire(SEARCH)
    pacer.settle(puts, answer(429, None, 10.0))
    clock.now += 5
    pacer.settle(search, answer(429, None, 10.0))  # from 5 s to 15 s

    clock.now += 100
    assert pacer.paused_s == pytest.approx(15)


def named(name: str, remaining: int = 1000) -> RateLimit:
    """Far from the limit: no spacing to wait for (which the fake clock would never end)."""
    return limit_headers(remaining, reset=1, limit=1000, name=name)


async def test_a_429_on_one_limit_never_holds_another(harness: Harness) -> None:
    pacer = harness.pacer
    pacer.settle(await pacer.acquire(PUTS), answer(201, named("playlists")))
    pacer.settle(await pacer.acquire(SEARCH), answer(201, named("rum-search")))

    pacer.settle(await pacer.acquire(SEARCH), answer(429, named("rum-search", 0)))

    assert [notice.family for notice in harness.notices] == [SEARCH]
    assert pacer.try_acquire(SEARCH) is None, "the search waits for its window"
    assert pacer.try_acquire(PUTS) is not None, "the PUTs go on"


async def test_families_whose_answers_name_one_limit_share_its_budget(harness: Harness) -> None:
    pacer = harness.pacer
    pacer.settle(await pacer.acquire(PUTS), answer(201, named("playlists")))
    pacer.settle(await pacer.acquire("playlists"), answer(201, named("playlists")))

    pacer.settle(await pacer.acquire(PUTS), answer(429, named("playlists", 0)))

    assert pacer.try_acquire("playlists") is None, "one limit, one pause"


async def test_a_family_waiting_when_its_limit_is_named_moves_to_that_budget(
    harness: Harness,
) -> None:
    pacer = harness.pacer
    pacer.settle(await pacer.acquire(PUTS), answer(201, named("playlists")))
    probe = await pacer.acquire("playlists")  # its own provisional budget: one probe at once
    waiting = asyncio.create_task(pacer.acquire("playlists"))
    await asyncio.sleep(0)
    assert not waiting.done()

    pacer.settle(probe, answer(201, named("playlists")))
    ticket = await asyncio.wait_for(waiting, timeout=5)

    assert ticket.budget is (await pacer.acquire(PUTS)).budget


async def test_progress_counts_a_pause_as_it_passes_not_whole_when_it_starts(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """A pause is announced with its length when it starts; the progress events' time
    paused counts it as it passes (the pacer's measure), so it never runs ahead of the
    time elapsed (found by a new-user review: 24.5 s paused at 5 s)."""
    period = 4
    sandbox = await make_sandbox(rate_limit=(3, period))
    # Just after a window's start (the windows follow the calendar: no event to wait
    # on), another tool spends it: the run's first answer is a 429 and a pause of most
    # of the window, announced whole at once.
    await asyncio.sleep(period - time.time() % period + 0.05)
    async with aiohttp.ClientSession() as http:
        url = f"{sandbox.base_url}/api/v2/rum/replay/playlists/1001/sessions"
        for _ in range(3):
            async with http.get(url, headers={"DD-API-KEY": "k", "DD-APPLICATION-KEY": "k"}):
                pass
    items = rows(3)

    run = await run_paced(sandbox, tmp_path, items, "--progress-interval", "0.2")

    assert_every_row_landed(sandbox, items, [run], others_429=0)
    assert run.report["rate_limited"] >= 1
    progress = run.done.events("progress")
    paused = [float(str(event["paused_s"])) for event in progress]
    assert max(paused) > 0.5, progress
    for event in progress:
        assert float(str(event["paused_s"])) <= float(str(event["elapsed_s"])) + 0.1, event
