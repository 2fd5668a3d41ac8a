"""A RUM query to playlists, end to end: the real command as a subprocess against a real
sandbox on loopback, whose generated population says which sessions a query should find
and whose store says which landed, checked server-side."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from support import (
    API_KEY,
    APP_KEY,
    COMMAND_TIMEOUT_S,
    KEYS,
    ROOT,
    TS,
    Finished,
    assert_invariant,
    clean_env,
    finish,
    held,
    keyed_sandbox,
    run_against,
    run_cli,
    start_cli,
    stats,
    write_csv,
)

from worker.journal import BatchPolicy
from worker.query.dates import iso, iso_ms
from worker.query.source import MAX_PAGE_LIMIT, TIMEOUT_RETRIES
from worker.query.spec import QuerySpec
from worker.sandbox import FaultConfig, Sandbox
from worker.sandbox.population import PopulationConfig
from worker.sandbox.query import parse
from worker.sandbox.search_config import SearchConfig, SearchFaults

MakeSandbox = Callable[..., Awaitable[Sandbox]]
QUERY = "@session.type:user OR @usr.email:user1*"
PLAYLIST = 7
CONCURRENCY = 8
MINUTE = 60_000
HOUR = 60 * MINUTE


def population(sessions: int, start_ms: int = TS, interval_ms: int = MINUTE) -> PopulationConfig:
    """Placed at a fixed time, an event a minute unless told: every range below is exact."""
    return PopulationConfig(sessions=sessions, start_ms=start_ms, interval_ms=interval_ms)


async def query_sandbox(
    make_sandbox: MakeSandbox,
    sessions: int,
    search_faults: SearchFaults | None = None,
    *,
    placed: PopulationConfig | None = None,
    **config: object,
) -> Sandbox:
    """A keyed sandbox of `sessions` placed as `population` places them, or as `placed`
    says; `config`: SandboxConfig fields."""
    people = placed or population(sessions)
    search = SearchConfig(population=people, faults=search_faults or SearchFaults())
    return await keyed_sandbox(make_sandbox, search=search, **config)


def expected(sandbox: Sandbox, query: str = QUERY, to_ms: int | None = None) -> set[str]:
    """The sessions the population holds for `query` (wrapped as the tool wraps it)."""
    people = sandbox.search.population
    tree = parse(QuerySpec(query, PLAYLIST, "t").effective_query)
    high = people.index_at(people.end_ms if to_ms is None else to_ms)
    return {
        event.session.id
        for index in range(high)
        if (event := people.event(index)) is not None and tree.matches(event.attributes)
    }


def in_playlist(sandbox: Sandbox, playlist: int = PLAYLIST) -> set[str]:
    return {session for p, session in held(sandbox) if p == playlist}


def whole_range(sandbox: Sandbox) -> list[str]:
    return ["--from", iso(TS), "--to", iso(sandbox.search.population.end_ms)]


def run_args(sandbox: Sandbox, journal: Path, *extra: str) -> list[str]:
    query = ("--query", QUERY, "--playlist", str(PLAYLIST), "--no-progress", *extra)
    return run_against(sandbox, journal, *query, concurrency=CONCURRENCY)


async def run_whole_range(sandbox: Sandbox, tmp_path: Path) -> Finished:
    """A run of QUERY over the whole population, which must end with exactly the
    population's sessions for it in the playlist, checked server-side."""
    args = run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox))
    done = await run_cli(*args, env=KEYS)
    assert done.code == 0, done.stderr
    assert in_playlist(sandbox) == expected(sandbox)
    return done


def query_block(done: Finished) -> dict[str, object]:
    block = done.summary["query"]
    assert isinstance(block, dict)
    return block


async def test_a_query_fills_the_playlist_with_exactly_its_sessions_over_many_pages(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 4000)
    want = expected(sandbox)
    done = await run_whole_range(sandbox, tmp_path)

    summary = done.summary
    assert_invariant(summary)
    assert summary["rows_read"] == summary["created"] == len(want)
    block = query_block(done)
    assert block["completed"] is True
    assert block["pages"] == sandbox.search.stats.pages >= -(-len(want) // MAX_PAGE_LIMIT) >= 3
    assert block["query"] == QuerySpec(QUERY, PLAYLIST, "t").effective_query
    (told,) = done.events("query")
    assert "narrowed to completed sessions with a replay" in str(told["detail"])


async def test_a_session_found_by_several_events_is_added_once(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    search = SearchConfig(
        population=PopulationConfig(
            sessions=600, start_ms=TS, interval_ms=MINUTE, events_per_session=6, session_events=3
        )
    )
    sandbox = await keyed_sandbox(make_sandbox, search=search)
    want = expected(sandbox)
    done = await run_whole_range(sandbox, tmp_path)

    assert done.summary["rows_read"] == len(want)
    assert query_block(done)["events"] == 3 * len(want)
    assert stats(sandbox)["puts"] == len(want)


async def test_an_expired_cursor_searches_again_and_finds_the_same_sessions(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 4000, SearchFaults(expired_cursors=2))
    want = expected(sandbox)
    done = await run_whole_range(sandbox, tmp_path)

    assert query_block(done)["restarts"] == sandbox.search.stats.expired_cursors == 2
    assert done.summary["rows_read"] == len(want)
    assert len(done.events("query_cursor_expired")) == 2


async def test_a_timeout_answer_is_asked_again_never_taken_for_complete(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 2000, SearchFaults(timeouts=2, warnings=3))
    done = await run_whole_range(sandbox, tmp_path)

    block = query_block(done)
    # The answers asked again are not taken, their warnings neither: one page warned.
    assert (block["timeouts"], block["warnings"], block["completed"]) == (2, 1, True)
    assert len(done.events("query_page_partial")) == 2
    assert len(done.events("query_warnings")) == 1


async def test_a_search_that_keeps_timing_out_aborts_after_sending_what_it_found(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 6000)
    want = expected(sandbox)
    process = await start_cli(
        *run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox)), env=KEYS
    )
    assert process.stderr is not None
    # Once the first page's rows are being sent, every later answer times out.
    while line := await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT_S):
        if json.loads(line)["event"] == "row":
            break
    async with aiohttp.ClientSession() as http:
        await http.post(f"{sandbox.base_url}/_sandbox/search", json={"faults": {"timeouts": 99}})
    done = await finish(process)

    assert done.code == 3, done.stderr
    summary = done.summary
    assert_invariant(summary)
    block = query_block(done)
    assert block["completed"] is False
    assert "timed out" in str(block["error"])
    assert block["timeouts"] >= TIMEOUT_RETRIES
    assert 0 < summary["rows_read"] < len(want)
    assert in_playlist(sandbox) < want
    (aborted,) = done.events("aborted")
    assert "rerun" in str(aborted["detail"])


async def test_the_search_waits_for_its_own_window_while_the_puts_go_on(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 2400, search_rate_limit=(1, 2.0))
    done = await run_whole_range(sandbox, tmp_path)

    assert done.code == 0, done.stderr
    assert done.summary["rate_limited"] == sandbox.stats.responses[429] == 0
    assert in_playlist(sandbox) == expected(sandbox)
    # Only the search is held. (Whether it waits at all depends on where the calendar
    # window falls against the pages: one that ends while page 1's rows are sent lets
    # page 2 go at once, so a pause is checked only where there is one.)
    pauses = done.events("paused")
    assert {p["family"] for p in pauses} <= {"rum_search"}
    if pauses:
        # While the search waited for its window to fetch page 2, the PUTs of page 1 went on.
        lines = done.stderr.splitlines()
        pause = next(i for i, line in enumerate(lines) if json.loads(line)["event"] == "paused")
        after = [json.loads(line) for line in lines[pause:]]
        assert any(e["event"] == "row" and e["line"] <= MAX_PAGE_LIMIT for e in after)


async def test_a_429_on_the_search_pauses_the_search_and_never_the_puts(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 2400, search_rate_limit=(1, 3600.0))
    want = expected(sandbox)
    async with aiohttp.ClientSession() as http:  # spend the search's budget
        answer = await http.post(
            f"{sandbox.base_url}/api/v2/rum/events/search",
            json={"filter": {"query": "*"}},
            headers={"DD-API-KEY": KEYS["DD_API_KEY"], "DD-APPLICATION-KEY": KEYS["DD_APP_KEY"]},
        )
        assert answer.status == 200
    args = run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox), "--max-pause", "0.2")
    process = await start_cli(*args, env=KEYS)
    assert process.stderr is not None
    # The run's first search is refused: once it pauses for it, the window opens.
    while line := await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT_S):
        if json.loads(line)["event"] == "paused":
            assert json.loads(line)["family"] == "rum_search"
            break
    sandbox.reconfigure(search_rate_limit=(100_000, 1.0))
    done = await finish(process)

    assert done.code == 0, done.stderr
    assert in_playlist(sandbox) == want
    assert done.summary["rate_limited"] == sandbox.stats.responses[429] >= 1
    assert stats(sandbox)["puts"] == len(want)  # no PUT was refused and sent again
    assert {p["family"] for p in done.events("paused")} <= {"rum_search"}


async def test_a_429_on_the_puts_never_pauses_the_search(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 2400, rate_limit=(250, 1.0))
    done = await run_whole_range(sandbox, tmp_path)

    pauses = done.events("paused")
    assert pauses, done.stderr[-2000:]
    assert {p["family"] for p in pauses} == {"playlist_sessions"}
    assert sandbox.stats.calls["search_events"] == sandbox.search.stats.pages  # none refused
    assert query_block(done)["pages"] == sandbox.search.stats.pages


STALL = ("--max-stall", "1")
"""A short --max-stall, for the searches that never get a page."""


def stalled_as_rows_stall(done: Finished) -> dict[str, object]:
    """A search stalled ends as a run whose rows stall: exit 3, `aborted` saying no
    progress and naming --max-stall, the `query` block incomplete; that block."""
    assert done.code == 3, done.stderr[-3000:]
    (aborted,) = done.events("aborted")
    assert aborted["reason"] == "no progress"
    assert "--max-stall" in str(aborted["cause"])
    block = query_block(done)
    assert block["completed"] is False
    assert aborted["cause"] == block["error"]  # said once
    return block


@pytest.mark.timeout(60)  # a guard: without the fix the run waits on the 429s for ever
@pytest.mark.parametrize("command", ["run", "sessions"])
async def test_a_search_answered_only_by_bare_429s_ends_at_max_stall(
    make_sandbox: MakeSandbox, tmp_path: Path, command: str
) -> None:
    """A proxy's bare 429 spends no attempt, so a search answered by nothing else would
    be asked again for ever; --max-stall ends it as it ends rows that never finish."""
    every_429 = FaultConfig(bare_429=1.0, shares_apply_to="all")
    sandbox = await query_sandbox(make_sandbox, 100, faults=every_429)
    if command == "run":
        args = run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox), *STALL)
    else:
        args = ["sessions", "--query", QUERY, *whole_range(sandbox), *STALL,
                "--base-url", sandbox.base_url, "--log-format", "json"]  # fmt: skip
    done = await run_cli(*args, env=KEYS)

    block = stalled_as_rows_stall(done)
    assert block["pages"] == 0
    summary = done.summary
    assert summary["rate_limited"] == summary["requests"] == sandbox.stats.responses[429] >= 1
    assert summary["rows_read" if command == "run" else "rows_written"] == 0
    assert sandbox.stats.puts == 0


@pytest.mark.timeout(60)
async def test_a_search_stalled_after_a_page_sends_it_and_the_rerun_sends_the_rest(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """The first page is answered, every later search is refused (one search an hour):
    the rows found are sent, the position stays behind them, and the rerun finds the rest."""
    sandbox = await query_sandbox(make_sandbox, 2400, search_rate_limit=(1, 3600.0))
    want = expected(sandbox)
    args = run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox), *STALL)
    stalled = await run_cli(*args, env=KEYS)

    block = stalled_as_rows_stall(stalled)
    summary = stalled.summary
    assert_invariant(summary)
    assert block["pages"] == 1
    assert 0 < summary["created"] == summary["rows_read"] == len(in_playlist(sandbox)) < len(want)

    sandbox.reconfigure(search_rate_limit=(100_000, 1.0))
    again = await run_cli(*args, env=KEYS)

    assert again.code == 0, again.stderr
    assert "resumed_from" in again.events("start")[0]
    assert in_playlist(sandbox) == want
    assert stats(sandbox)["puts"] == len(want) + stats(sandbox)["duplicate_puts"]


async def signal_once_answered(
    process: asyncio.subprocess.Process, rows: int, signum: signal.Signals
) -> None:
    """Send `signum` to a running run once its log has `rows` row lines."""
    assert process.stderr is not None
    stderr = process.stderr

    async def watch() -> None:
        seen = 0
        while line := await stderr.readline():
            seen += json.loads(line)["event"] == "row"
            if seen >= rows:
                process.send_signal(signum)
                return
        raise AssertionError(f"the run ended before {rows} rows were answered")

    await asyncio.wait_for(watch(), COMMAND_TIMEOUT_S)


async def test_a_run_killed_mid_search_resumes_with_no_repeats_and_fewer_pages(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 12000)
    want = expected(sandbox)
    args = run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox))
    fresh = await run_cli(
        "sessions",
        "--query",
        QUERY,
        *whole_range(sandbox),
        "--base-url",
        sandbox.base_url,
        "-o",
        str(tmp_path / "all.ndjson"),
        env=KEYS,
    )
    fresh_pages = sandbox.search.stats.pages
    assert fresh.code == 0
    assert fresh_pages >= 4
    process = await start_cli(*args, env=KEYS)
    # Half way: far enough that a position is committed behind whole pages, however the
    # journal's batches lag on a loaded machine, and still mid-search.
    await signal_once_answered(process, len(want) // 2, signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    assert sandbox.search.stats.pages - fresh_pages < fresh_pages  # killed mid-search

    again = await run_cli(*args, env=KEYS)

    assert again.code == 0, again.stderr
    assert in_playlist(sandbox) == want
    (start,) = again.events("start")
    assert "resumed_from" in start
    assert query_block(again)["pages"] < fresh_pages
    assert stats(sandbox)["duplicate_puts"] <= CONCURRENCY + BatchPolicy().max_rows
    assert stats(sandbox)["puts"] == len(want) + stats(sandbox)["duplicate_puts"]


async def test_a_run_stopped_mid_search_leaves_no_row_unsent_after_its_rerun(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """SIGTERM leaves the rows handed out but not sent as not attempted: the position
    saved must stay before them, or the rerun resumes past them and never sends them."""
    sandbox = await query_sandbox(make_sandbox, 12000)
    want = expected(sandbox)
    args = run_args(sandbox, tmp_path / "j.sqlite3", *whole_range(sandbox))
    process = await start_cli(*args, env=KEYS)
    await signal_once_answered(process, len(want) // 3, signal.SIGTERM)
    await process.communicate()
    assert process.returncode == 128 + signal.SIGTERM
    assert in_playlist(sandbox) < want  # stopped with rows left

    again = await run_cli(*args, env=KEYS)

    assert again.code == 0, again.stderr
    assert in_playlist(sandbox) == want
    assert stats(sandbox)["puts"] == len(want) + stats(sandbox)["duplicate_puts"]


async def test_sessions_writes_rows_that_run_takes_back(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 1500)
    want = expected(sandbox)
    out = tmp_path / "found.ndjson"
    target = ["--base-url", sandbox.base_url, "--log-format", "json"]
    found = await run_cli(
        "sessions", "--query", QUERY, *whole_range(sandbox), *target, "-o", str(out), env=KEYS
    )

    assert found.code == 0, found.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["session_id"] for line in lines} == want
    assert len(lines) == len(want)
    assert all("playlist_id" not in line for line in lines)  # `run --playlist` names it
    assert stats(sandbox)["puts"] == 0
    assert found.summary["rows_written"] == len(want)
    assert query_block(found)["completed"] is True

    sent = await run_cli(
        "run", str(out), "--playlist", "9", *target, "--no-journal", "--no-progress", env=KEYS
    )

    assert sent.code == 0, sent.stderr
    assert in_playlist(sandbox, 9) == want


async def test_sessions_to_standard_output_names_the_playlist_and_ends_quietly_when_closed(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 3000)
    command = shlex.join(
        [
            sys.executable,
            "-m",
            "worker",
            "sessions",
            "--query",
            QUERY,
            *whole_range(sandbox),
            "--playlist",
            "5",
            "--base-url",
            sandbox.base_url,
            "--log-format",
            "json",
        ]
    )
    err = tmp_path / "err"
    script = f'{command} 2>{shlex.quote(str(err))} | head -n 1; exit "${{PIPESTATUS[0]}}"'
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=ROOT, env=clean_env(KEYS), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)

    assert process.returncode == 141, err.read_text()
    (first,) = [json.loads(line) for line in out.decode().splitlines()]
    assert first["playlist_id"] == 5
    assert first["session_id"] in expected(sandbox)
    assert "Traceback" not in err.read_text(), err.read_text()[-3000:]


async def test_nightly_runs_from_last_add_each_new_session_once(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 800)
    journal = tmp_path / "j.sqlite3"
    first_end = sandbox.search.population.end_ms
    nightly = ["--from", "last", "--first-from", iso(TS)]
    first = await run_cli(*run_args(sandbox, journal, *nightly, "--to", iso(first_end)), env=KEYS)
    sandbox.search.grow(800)
    second_end = sandbox.search.population.end_ms
    # What tonight's run would search, seen first with `sessions` (which moves nothing).
    preview = await run_cli(
        "sessions", "--query", QUERY, *nightly, "--to", iso(second_end), "--playlist",
        str(PLAYLIST), "--journal", str(journal), "--base-url", sandbox.base_url,
        "--log-format", "json", env=KEYS,
    )  # fmt: skip
    second = await run_cli(*run_args(sandbox, journal, *nightly, "--to", iso(second_end)), env=KEYS)

    assert (first.code, preview.code, second.code) == (0, 0, 0), second.stderr
    assert preview.summary["rows_written"] == second.summary["rows_read"]
    assert preview.events("start")[0]["from"] == second.events("start")[0]["from"]
    old, everything = expected(sandbox, to_ms=first_end), expected(sandbox)
    assert in_playlist(sandbox) == everything
    assert first.summary["created"] == len(old)
    assert second.summary["created"] == len(everything - old)
    assert second.summary["skipped"] > 0, (
        second.summary,
        second.events("start"),
        first.events("start"),
    )
    assert stats(sandbox)["duplicate_puts"] == 0
    (start,) = second.events("start")
    assert "previous completed search ended" in str(start["why"])
    assert start["from"] == iso(first_end - (4 * 60 + 30) * MINUTE)


async def test_shards_started_apart_add_every_session_once_night_after_night(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """Two shards of one nightly query, each started once the other has finished (so each
    takes its own `now`), on two nights a day apart (`--to now-24h`, then `--to now`):
    every session lands once. Each shard used to split the range as its own clock and
    journal saw it, so the second night's shards started where each one's own slice of
    the first night had ended: hours fell to no shard, and others to both."""
    this_hour = int(time.time() * 1000) // HOUR * HOUR
    first_from = this_hour - 48 * HOUR
    # 46 hours of sessions, an event every 2 minutes, ending 2 hours before this hour.
    placed = population(344, start_ms=first_from, interval_ms=2 * MINUTE)
    sandbox = await query_sandbox(make_sandbox, placed.sessions, placed=placed)
    want = expected(sandbox)
    nightly = ["--from", "last", "--first-from", iso(first_from)]

    async def night(to: str, order: tuple[int, int]) -> list[Finished]:
        """The shards run one after the other, in `order`; their runs by shard."""
        runs: dict[int, Finished] = {}
        for k in order:
            journal = tmp_path / f"shard-{k}.sqlite3"
            args = run_args(sandbox, journal, *nightly, "--to", to, "--shard", f"{k}/2")
            runs[k] = await run_cli(*args, env=KEYS)
            assert runs[k].code == 0, runs[k].stderr
        return [runs[k] for k in sorted(runs)]

    def ends(runs: list[Finished]) -> list[int]:
        return [iso_ms(str(run.events("start")[0]["to"])) or 0 for run in runs]

    first = ends(await night("now-24h", (0, 1)))
    landed = in_playlist(sandbox)
    # Up to the earlier end every session is in; past it, only those of a later end.
    assert expected(sandbox, to_ms=min(first)) <= landed <= expected(sandbox, to_ms=max(first))
    second = await night("now", (1, 0))

    assert in_playlist(sandbox) == want
    assert stats(sandbox)["puts"] == len(want)  # no session sent twice, by either shard
    for k, run in enumerate(second):  # each says which range and which slices it took
        (start,) = run.events("start")
        block = query_block(run)
        assert (start["from"], start["to"], start["slices"]) == (
            block["from"], block["to"], block["slices"],
        )  # fmt: skip
        assert f"shard {k}/2 searches the hours of it numbered {k} mod 2" in str(start["why"])
        assert "previous completed search ended" in str(start["why"])


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--query", "  ", "--playlist", "1"], "the query is empty"),
        (["--query", "*", "--from", "yesterday", "--playlist", "1"], "is not a time"),
        (["--query", "*", "--from", "now", "--to", "now-1d", "--playlist", "1"], "is not before"),
        (["--query", "*", "--playlist", "1", "IN"], "not both"),
        (["--query", "*"], "--query needs --playlist"),
        (
            ["--query", "*", "--from", "last", "--playlist", "1", "--no-journal"],
            "needs the journal",
        ),
        (["--query", "*", "--first-from", "now-1d", "--playlist", "1"], "goes with --from last"),
        (["--from", "now-1d", "IN"], "--from goes with --query"),
    ],
)
async def test_bad_query_input_exits_2_having_sent_nothing(
    make_sandbox: MakeSandbox, tmp_path: Path, args: list[str], problem: str
) -> None:
    sandbox = await query_sandbox(make_sandbox, 100)
    path = str(write_csv(tmp_path / "in.csv", []))
    argv = [path if arg == "IN" else arg for arg in args]
    target = ["--base-url", sandbox.base_url, "--log-format", "json", "--no-progress"]
    done = await run_cli("run", *argv, *target, env=KEYS)

    assert done.code == 2, done.stderr
    (event,) = done.events("cannot_start")
    assert problem in str(event["error"])
    assert stats(sandbox)["requests"] == 0


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--from", "now-2d", "--to", "now-1d"], "--from now-2d with --shard"),
        (["--from", iso(TS)], "--to now (the default) with --shard"),
        (["--from", "last", "--first-from", "now-7d"], "--first-from now-7d with --shard"),
    ],
)
async def test_a_sharded_query_whose_shards_could_disagree_exits_2_having_sent_nothing(
    make_sandbox: MakeSandbox, tmp_path: Path, args: list[str], problem: str
) -> None:
    sandbox = await query_sandbox(make_sandbox, 100)
    sharded = [*run_args(sandbox, tmp_path / "j.sqlite3", *args), "--shard", "0/2"]
    done = await run_cli(*sharded, env=KEYS)

    assert done.code == 2, done.stderr
    (event,) = done.events("cannot_start")
    assert problem in str(event["error"])
    assert "give a fixed" in str(event["error"])
    assert stats(sandbox)["requests"] == 0  # the search is counted there too
    assert not (tmp_path / "j.sqlite3").exists()


@pytest.mark.parametrize(
    ("args", "problem", "env"),
    [
        (["sessions", "--query", ""], "the query is empty", KEYS),
        (["sessions", "--from", "now-1d"], "sessions needs --query", KEYS),
        (["sessions", "--query", "*", "--from", "last"], "needs --playlist", KEYS),
        (["sessions", "--query", "*", "--to", "1e9"], "is not a time", KEYS),
        (["sessions", "--query", "*"], "DD_API_KEY", {}),
        (["run", "--query", "*", "--playlist", "1", "--dry-run"], "DD_API_KEY", {}),
    ],
)
async def test_bad_sessions_input_and_a_keyless_search_exit_2_having_sent_nothing(
    make_sandbox: MakeSandbox, args: list[str], problem: str, env: dict[str, str]
) -> None:
    sandbox = await query_sandbox(make_sandbox, 100)
    target = ["--base-url", sandbox.base_url, "--log-format", "json"]
    done = await run_cli(*args, *target, env=env)

    assert done.code == 2, done.stderr
    (event,) = done.events("cannot_start")
    assert problem in str(event["error"])
    assert stats(sandbox)["requests"] == 0


async def test_sessions_output_may_not_be_the_journal(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await query_sandbox(make_sandbox, 100)
    journal = tmp_path / "j.sqlite3"
    args = ["sessions", "--query", "*", "--from", "last", "--first-from", "now-1d"]
    done = await run_cli(
        *args,
        "--playlist",
        "1",
        "--journal",
        str(journal),
        "-o",
        str(journal),
        "--base-url",
        sandbox.base_url,
        "--log-format",
        "json",
        env=KEYS,
    )

    assert done.code == 2, done.stderr
    assert "one file" in done.stderr
    assert stats(sandbox)["requests"] == 0


@pytest.mark.parametrize("command", ["run", "sessions"])
async def test_a_query_the_api_refuses_exits_2_not_3(
    make_sandbox: MakeSandbox, tmp_path: Path, command: str
) -> None:
    """A 400 on the very first page is a query to fix, not a search to resume: exit 2,
    saying the API refused the search, with the API's reason (scrubbed: the error body
    echoes the keys), and nothing sent to the playlist."""
    sandbox = await query_sandbox(make_sandbox, 100, faults=FaultConfig(echo_keys=True))
    target = ["--base-url", sandbox.base_url, "--log-format", "json"]
    extra = ["--journal", str(tmp_path / "j.sqlite3"), "--no-progress"] if command == "run" else []
    done = await run_cli(
        command, "--query", "@session.id:[1 TO 5]", *whole_range(sandbox), "--playlist",
        str(PLAYLIST), *target, *extra, env=KEYS,
    )  # fmt: skip

    assert done.code == 2, done.stderr
    if command == "run":  # it stops, saying the API refused the search, and why
        (event,) = done.events("aborted")
        assert event["reason"] == "the search was refused by the API"
        error = str(event["cause"])
        assert "fix the query or its range" in str(event["detail"])
    else:  # `sessions` cannot start
        (event,) = done.events("cannot_start")
        error = str(event["error"])
    assert error.startswith("HTTP 400: invalid query"), error
    assert "ranges and comparisons are not supported" in error
    assert "echo" in error  # the body echoed the keys: they are what was scrubbed
    assert API_KEY not in done.stderr
    assert APP_KEY not in done.stderr
    assert "Traceback" not in done.stderr
    assert in_playlist(sandbox) == set()


WRONG_KEYS = {
    "DD_API_KEY": "wrong-api-key-a1b2c3d4e5f6",
    "DD_APP_KEY": "wrong-app-key-f6e5d4c3b2a1",
}


def assert_keys_refused(done: Finished, *, reruns: str) -> dict[str, object]:
    """Exit 3 for the keys, as refused keys end any run, with advice a rerun alone cannot
    follow: the keys, the site and the application key's RUM read permission. No key
    the tool was given appears in what it prints."""
    assert done.code == 3, done.stderr
    (event,) = done.events("aborted")
    assert event["reason"] == "the API keeps refusing the keys"
    assert "refused the keys for the search (HTTP 403)" in str(event["cause"]), event
    detail = str(event["detail"])
    for named in ("DD_API_KEY", "DD_APP_KEY", "--site", "rum_apps_read", reruns):
        assert named in detail, detail
    assert "search again" not in detail
    assert "the same command" not in detail
    for key in (*WRONG_KEYS.values(), API_KEY, APP_KEY):
        assert key not in done.stderr
        assert key not in done.stdout
    assert "Traceback" not in done.stderr
    block = query_block(done)
    assert block["completed"] is False
    return block


@pytest.mark.parametrize("command", ["run", "sessions"])
async def test_a_search_whose_keys_are_refused_exits_3_naming_the_keys_not_a_rerun(
    make_sandbox: MakeSandbox, tmp_path: Path, command: str
) -> None:
    """Wrong keys on the very first page are no query to fix (exit 2) nor a search to
    resume as it is: the run ends as refused keys end it on the playlist calls. Once the
    keys are right, the same run finds and sends every session."""
    sandbox = await query_sandbox(make_sandbox, 100, faults=FaultConfig(echo_keys=True))
    journal = tmp_path / "j.sqlite3"
    if command == "run":
        args = run_args(sandbox, journal, *whole_range(sandbox))
    else:
        args = ["sessions", "--query", QUERY, *whole_range(sandbox), "--playlist",
                str(PLAYLIST), "--base-url", sandbox.base_url, "--log-format", "json"]  # fmt: skip
    done = await run_cli(*args, env=WRONG_KEYS)

    block = assert_keys_refused(done, reruns="rerun to resume" if command == "run" else "run again")
    assert block["pages"] == 0
    assert in_playlist(sandbox) == set()
    assert stats(sandbox)["puts"] == 0
    if command == "run":
        assert done.summary["rows_read"] == 0
        again = await run_cli(*args, env=KEYS)
        assert again.code == 0, again.stderr
        assert in_playlist(sandbox) == expected(sandbox)
    else:
        assert done.stdout == ""


async def test_sessions_whose_keys_are_revoked_mid_search_writes_what_it_found_then_exits_3(
    make_sandbox: MakeSandbox,
) -> None:
    """Keys refused on a later page: the sessions of the pages before are written first,
    then the search ends for the keys, not as a search a rerun would carry on."""
    sandbox = await query_sandbox(
        make_sandbox, 2500, faults=FaultConfig(revoke_keys_after=1, echo_keys=True)
    )
    done = await run_cli(
        "sessions", "--query", QUERY, *whole_range(sandbox), "--base-url", sandbox.base_url,
        "--log-format", "json", env=KEYS,
    )  # fmt: skip

    block = assert_keys_refused(done, reruns="run again")
    assert block["pages"] == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert 0 < len(lines) == done.summary["rows_written"]
    assert {line["session_id"] for line in lines} < expected(sandbox)
