"""Never losing track, end to end: real runs killed with SIGKILL and rerun, reruns that
skip, repeats, the run lock, a damaged journal and the dead-letter round trip, all against
a real sandbox on loopback that says which rows landed and how many PUTs repeated one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    API_KEY,
    APP_KEY,
    COMMAND_TIMEOUT_S,
    KEYS,
    MakeSandbox,
    assert_invariant,
    held,
    keyed_sandbox,
    keys_of,
    rows,
    run_against,
    run_cli,
    start_cli,
    stats,
    write_csv,
    write_ndjson,
)

from worker.journal import BatchPolicy
from worker.sandbox import FaultConfig, Sandbox

CONCURRENCY = 8
SENT = ("created", "already_present", "failed")


def run_args(
    sandbox: Sandbox, journal: Path, *inputs: str | Path, extra: tuple[str, ...] = ()
) -> list[str]:
    return run_against(sandbox, journal, *map(str, inputs), *extra, concurrency=CONCURRENCY)


async def kill_after(args: list[str], answered: int) -> None:
    """Start a run and SIGKILL it once it has logged `answered` rows sent and answered
    (0: as soon as it has started), wherever it is then: sending, committing, closing."""
    process = await start_cli(*args, env=KEYS)
    assert process.stderr is not None
    seen = 0

    async def watch() -> None:
        nonlocal seen
        while line := await process.stderr.readline():  # type: ignore[union-attr]
            event = json.loads(line)
            seen += event["event"] == "row" and event["result"] in SENT
            if (event["event"] == "start" and answered == 0) or (answered and seen >= answered):
                process.send_signal(signal.SIGKILL)
                return
        raise AssertionError(f"the run ended before {answered} rows were answered")

    await asyncio.wait_for(watch(), COMMAND_TIMEOUT_S)
    assert await process.wait() == -signal.SIGKILL


def done_in(journal: Path) -> int:
    """The rows `journal` holds as done, read as another process would."""
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as conn:
        query = "SELECT count(*) FROM rows WHERE result IN ('created', 'already_present')"
        return int(conn.execute(query).fetchone()[0])


async def kill_once_committed(args: list[str], journal: Path) -> None:
    """Start a run and SIGKILL it at the first log line after its journal holds more done
    rows than before it started: just after a commit, with the rest of the run still to
    come (or, had the run ended meanwhile, as it ended)."""
    before = done_in(journal)
    process = await start_cli(*args, env=KEYS)
    assert process.stderr is not None

    async def watch() -> None:
        while await process.stderr.readline():  # type: ignore[union-attr]
            if done_in(journal) > before:
                process.send_signal(signal.SIGKILL)
                return
        raise AssertionError("the run ended with nothing more committed")

    await asyncio.wait_for(watch(), COMMAND_TIMEOUT_S)
    assert await process.wait() in (-signal.SIGKILL, 0)


async def test_runs_killed_at_any_point_resume_until_every_row_lands(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(2000, playlists=(1001, 1002, 1003))
    path = write_csv(tmp_path / "in.csv", items)
    args = run_args(sandbox, tmp_path / "journal.sqlite3", path)
    journal = tmp_path / "journal.sqlite3"
    # At its start, after its first answer, midway, once every row is answered (as it
    # commits its last batch and closes), and just after a commit; each rerun goes on
    # from what the last one committed.
    points = (0, 1, 700, 2000)
    for answered in points:
        await kill_after(args, min(answered, len(items) - len(held(sandbox))))
    await kill_once_committed(args, journal)
    committed = done_in(journal)
    puts_before = stats(sandbox)["puts"]

    done = await run_cli(*args, env=KEYS)

    assert done.code == 0, done.stderr
    assert held(sandbox) == keys_of(items)
    # Each kill may cost a resend of what was in flight and of the uncommitted batches.
    bound = (len(points) + 1) * (CONCURRENCY + 2 * BatchPolicy().max_rows)
    assert stats(sandbox)["duplicate_puts"] <= bound
    assert stats(sandbox)["puts"] == len(items) + stats(sandbox)["duplicate_puts"]
    # The last run skips exactly what was committed and sends exactly the rest.
    assert committed > 0
    assert done.summary["skipped"] == committed
    assert stats(sandbox)["puts"] - puts_before == len(items) - committed
    assert_invariant(done.summary)


async def test_a_rerun_skips_what_is_done_using_the_default_journal(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(60)
    path = write_csv(tmp_path / "in.csv", items)
    env = {**KEYS, "XDG_STATE_HOME": str(tmp_path / "state")}
    args = ["run", str(path), "--base-url", sandbox.base_url, "--log-format", "json"]

    first = await run_cli(*args, env=env)
    again = await run_cli(*args, env=env)
    fresh = await run_cli(*args, "--fresh", env=env)

    assert (first.code, again.code, fresh.code) == (0, 0, 0), first.stderr
    assert (tmp_path / "state/rum-playlist-ingest/journal.sqlite3").is_file()
    assert first.summary["created"] == 60
    assert again.summary["skipped"] == 60
    assert again.summary["requests"] == 0
    assert again.events("row") == []  # skipped rows are summarised, not one line each
    assert [e["rows"] for e in again.events("skipped")] == [60]
    assert fresh.summary["already_present"] == 60
    assert stats(sandbox)["puts"] == 120


async def test_no_journal_keeps_nothing(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    path = write_csv(tmp_path / "in.csv", rows(10))
    env = {**KEYS, "XDG_STATE_HOME": str(tmp_path / "state")}
    args = [
        "run",
        str(path),
        "--base-url",
        sandbox.base_url,
        "--no-journal",
        "--log-format",
        "json",
    ]

    first = await run_cli(*args, env=env)
    again = await run_cli(*args, env=env)

    assert (first.code, again.code) == (0, 0)
    assert again.summary["already_present"] == 10
    assert not (tmp_path / "state").exists()


async def test_a_rerun_retries_exactly_the_rows_that_failed(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(error_before=0.3, seed=5))
    items = rows(200)
    path = write_csv(tmp_path / "in.csv", items)
    journal = tmp_path / "journal.sqlite3"
    args = run_args(sandbox, journal, path, extra=("--max-attempts", "1"))

    first = await run_cli(*args, env=KEYS)
    sandbox.reconfigure(faults=FaultConfig())
    puts_before = stats(sandbox)["puts"]
    second = await run_cli(*args, env=KEYS)
    status = await run_cli("status", "--journal", str(journal), "--json")

    assert (first.code, second.code) == (1, 0)
    failed = int(first.summary["failed"])  # type: ignore[call-overload]
    assert 0 < failed < 200
    assert second.summary["created"] == failed
    assert second.summary["skipped"] == 200 - failed
    assert stats(sandbox)["puts"] - puts_before == failed
    assert held(sandbox) == keys_of(items)
    summary = json.loads(status.stdout)
    assert summary["targets"][0]["counts"]["created"] == 200
    assert [run["exit_code"] for run in summary["runs"]] == [0, 1]


async def test_a_row_repeated_in_the_input_is_sent_once(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(50)
    repeats = [{**item, "ts": int(item["ts"]) + 1} for item in items[:20]]  # type: ignore[call-overload]
    path = write_csv(tmp_path / "in.csv", items + repeats + items[:5])

    done = await run_cli(*run_args(sandbox, tmp_path / "journal.sqlite3", path), env=KEYS)

    assert done.code == 0, done.stderr
    assert done.summary["created"] == 50
    assert done.summary["skipped"] == 25
    assert stats(sandbox)["puts"] == 50
    assert stats(sandbox)["duplicate_puts"] == 0


def alias_by_folder_symlink(journal: Path) -> Path:
    (journal.parent / "alias").symlink_to(journal.parent)
    return journal.parent / "alias" / journal.name


def alias_by_hard_link(journal: Path) -> Path:
    alias = journal.with_name("alias.sqlite3")
    os.link(journal, alias)
    return alias


@pytest.mark.parametrize(
    ("alias", "refusal"),
    [
        (lambda journal: journal, r"is in use by another run \(run \S+, pid \d+, since "),
        (alias_by_folder_symlink, r"is in use by another run \(run \S+, pid \d+, since "),
        (alias_by_hard_link, "is in use by another run"),
    ],
    ids=["same path", "symlinked folder", "hard link"],
)
async def test_a_second_run_on_the_same_journal_is_refused(
    make_sandbox: MakeSandbox,
    tmp_path: Path,
    alias: Callable[[Path], Path],
    refusal: str,
) -> None:
    """By the journal file's identity: any other name for it is refused while a run holds
    it (the path string alone let a second run send 2,000 duplicates)."""
    sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(hang=1.0))
    journal = tmp_path / "journal.sqlite3"
    first_input = write_csv(tmp_path / "first.csv", rows(5))
    second_input = write_csv(tmp_path / "second.csv", rows(5, start=100))
    first = await start_cli(*run_args(sandbox, journal, first_input), env=KEYS)
    try:
        assert first.stderr is not None
        while json.loads(await first.stderr.readline())["event"] != "start":
            pass
        second = await run_cli(*run_args(sandbox, alias(journal), second_input), env=KEYS)
    finally:
        first.kill()
        await first.wait()

    assert second.code == 2
    assert re.search(refusal, second.stderr), second.stderr
    assert "Traceback" not in second.stderr
    requests: list[dict[str, str]] = sandbox.state()["requests"]  # type: ignore[assignment]
    sent = {r["raw_path"].rsplit("/", 1)[1] for r in requests}
    assert sent.isdisjoint(str(item["session_id"]) for item in rows(5, start=100))


async def test_a_damaged_journal_stops_the_run_before_anything_is_sent(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    path = write_csv(tmp_path / "in.csv", rows(5))
    journal = tmp_path / "journal.sqlite3"
    journal.write_bytes(b"\x00\x01 not a database " * 300)

    done = await run_cli(*run_args(sandbox, journal, path), env=KEYS)

    assert done.code == 2
    assert "is damaged" in done.stderr
    assert "move it aside" in done.stderr
    assert "Traceback" not in done.stderr
    assert stats(sandbox)["requests"] == 0


async def test_the_dead_letter_file_fed_back_retries_exactly_those_rows(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(error_before=0.25, seed=9))
    items = rows(120)
    path = write_ndjson(tmp_path / "in.ndjson", items)
    dead, dead_again = tmp_path / "dead.ndjson", tmp_path / "dead-again.ndjson"
    journal = tmp_path / "journal.sqlite3"
    extra = ("--max-attempts", "1", "--dead-letter", str(dead))

    first = await run_cli(*run_args(sandbox, journal, path, extra=extra), env=KEYS)
    sandbox.reconfigure(faults=FaultConfig())
    puts_before = stats(sandbox)["puts"]
    retry = await run_cli(
        "run",
        str(dead),
        "--base-url",
        sandbox.base_url,
        "--no-journal",
        "--dead-letter",
        str(dead_again),
        "--log-format",
        "json",
        env=KEYS,
    )

    assert first.code == 1
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(lines) == first.summary["failed"] > 0
    failed = {
        (e["playlist_id"], e["session_id"], e["line"])
        for e in first.events("row")
        if e["result"] == "failed"
    }
    assert {(d["playlist_id"], d["session_id"], d["line"]) for d in lines} == failed
    for line in lines:
        assert line["source"] == str(path)
        assert line["attempts"] == 1
        assert line["http_status"] >= 500
        assert line["reason"]
    assert retry.code == 0, retry.stderr
    assert retry.summary["created"] == len(lines)
    assert stats(sandbox)["puts"] - puts_before == len(lines)
    assert held(sandbox) == keys_of(items)
    assert dead_again.read_text() == ""
    for written in (dead, journal):
        assert API_KEY.encode() not in written.read_bytes()
        assert APP_KEY.encode() not in written.read_bytes()
