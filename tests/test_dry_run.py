"""`run --dry-run`: what a real run would send now, and nothing sent or written.

Against a real sandbox, so that "nothing sent" is the server's own count, and with a
real journal written by a real run, so that "what a run would skip" is the run's own.
"""

from __future__ import annotations

import json
from pathlib import Path

from support import (
    KEYS,
    Finished,
    MakeSandbox,
    assert_invariant,
    into_a_pipe_read_once,
    keyed_sandbox,
    rows,
    run_cli,
    write_csv,
)

from worker.sandbox import Sandbox


async def dry_run(
    sandbox: Sandbox, path: Path, *options: str
) -> tuple[Finished, dict[str, object]]:
    report = path.with_name("dry-report.json")
    done = await run_cli(
        "run", str(path), "--base-url", sandbox.base_url, "--dry-run",
        "--report", str(report), *options, env=KEYS,
    )  # fmt: skip
    return done, json.loads(report.read_text())


def puts(done: Finished) -> list[str]:
    return [line for line in done.stdout.splitlines() if line.startswith("PUT ")]


async def test_prints_one_put_per_row_a_run_would_send_and_sends_nothing(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(5)
    path = write_csv(tmp_path / "in.csv", [*items, *items[:2]])  # two rows repeated

    done, report = await dry_run(sandbox, path, "--no-journal")

    assert done.code == 0, done.stderr
    assert len(puts(done)) == 5
    assert all(f"/sessions/{item['session_id']}?ts=" in "".join(puts(done)) for item in items)
    assert (report["rows_read"], report["skipped"], report["not_attempted"]) == (7, 2, 5)
    assert report["dry_run"] is True
    assert report["requests"] == 0
    (start,) = done.events("start")
    assert start["dry_run"] is True
    assert done.summary["dry_run"] is True
    assert sandbox.stats.requests == 0


async def test_rows_the_journal_holds_as_done_are_skipped_unless_fresh(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    journal = tmp_path / "journal.sqlite3"
    done_before = write_csv(tmp_path / "first.csv", rows(3))
    first = await run_cli(
        "run", str(done_before), "--base-url", sandbox.base_url, "--journal", str(journal), env=KEYS
    )
    assert first.code == 0, first.stderr
    journal_bytes = journal.read_bytes()
    path = write_csv(tmp_path / "all.csv", rows(5))  # the same 3 rows, then 2 new ones

    done, report = await dry_run(sandbox, path, "--journal", str(journal))
    fresh, fresh_report = await dry_run(sandbox, path, "--journal", str(journal), "--fresh")
    elsewhere, elsewhere_report = await dry_run(
        sandbox, path, "--journal", str(journal), "--base-url", sandbox.base_url + "/other"
    )

    assert done.code == fresh.code == elsewhere.code == 0
    assert (len(puts(done)), report["skipped"], report["not_attempted"]) == (2, 3, 2)
    assert (len(puts(fresh)), fresh_report["skipped"]) == (5, 0)
    # The journal is kept per target: another base URL has done nothing yet.
    assert (len(puts(elsewhere)), elsewhere_report["skipped"]) == (5, 0)
    assert sandbox.stats.requests == 3  # the first, real run's only
    assert journal.read_bytes() == journal_bytes  # read, never written
    (skipped,) = done.events("skipped")  # said as the journal's doing, not a repeat's
    assert skipped["detail"] == "done in an earlier run (the journal) or repeated within this run"


async def test_invalid_rows_are_reported_with_their_line_and_exit_1(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = [*rows(2), {"playlist_id": "x", "session_id": "s", "ts": 1}]
    path = write_csv(tmp_path / "in.csv", items)

    done, report = await dry_run(sandbox, path, "--no-journal")

    assert done.code == 1
    assert (report["invalid"], report["not_attempted"], report["exit_code"]) == (1, 2, 1)
    (invalid,) = done.events("invalid_row")
    assert (invalid["source"], invalid["line"]) == (str(path), 4)
    assert len(puts(done)) == 2
    assert sandbox.stats.requests == 0


async def test_an_unreadable_journal_exits_2(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    journal = tmp_path / "journal.sqlite3"
    journal.write_bytes(b"not a journal at all" * 100)
    path = write_csv(tmp_path / "in.csv", rows(2))

    done = await run_cli(
        "run", str(path), "--base-url", sandbox.base_url, "--dry-run",
        "--journal", str(journal), env=KEYS,
    )  # fmt: skip

    assert done.code == 2
    (problem,) = done.events("cannot_start")
    assert str(journal) in str(problem["error"])
    assert puts(done) == []


async def test_a_dry_run_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`--dry-run | head -1`: the reader of standard output goes after one line; the run
    ends at once, with no traceback, exit 141 (as for SIGPIPE) and a true report."""
    path = write_csv(tmp_path / "in.csv", rows(5000))
    report = tmp_path / "report.json"
    piped = await into_a_pipe_read_once(
        "run", str(path), "--dry-run", "--no-journal", "--base-url", "https://api.datadoghq.com",
        "--report", str(report), env=KEYS,
    )  # fmt: skip

    assert piped.stdout.startswith("PUT https://api.datadoghq.com/")
    assert piped.code == 141, piped.stderr
    assert "Traceback" not in piped.stderr
    written = json.loads(report.read_text())
    assert_invariant(written)
    assert written["rows_read"] <= 5000
    assert written["exit_code"] == 141
