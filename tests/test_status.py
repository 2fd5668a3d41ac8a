"""`status` over real journals: counts per target, the last runs, the common errors."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    KEYS,
    MakeSandbox,
    keyed_sandbox,
    rows,
    run_against,
    run_cli,
    start_cli,
    write_csv,
)

from worker import status
from worker.cli import main
from worker.journal import SqliteJournal
from worker.rows import Outcome, Result, Row
from worker.shard import Shard

SANDBOX = "http://127.0.0.1:8126"
SITE = "https://api.datadoghq.com"


def row(n: int) -> Row:
    return Row(7, f"session-{n}", 1_704_067_200_000, "rum", "in.csv", n + 2)


def record(path: Path, target: str, outcomes: list[Outcome], exit_code: int) -> None:
    journal = SqliteJournal.open(
        path, target=target, fresh=False, run_info={"inputs": ["a.csv", "b.ndjson"]}
    )
    for outcome in outcomes:
        assert journal.admit(outcome.row)
        journal.outcome(outcome)
    journal.close({"created": len(outcomes), "exit_code": exit_code})


def run_status(
    journal: Path | None = None,
    shard: Shard | None = None,
    *,
    runs: int = 5,
    errors: int = 5,
    as_json: bool = False,
) -> tuple[int, str]:
    out = io.StringIO()
    code = status.status_command(journal, shard, runs=runs, errors=errors, as_json=as_json, out=out)
    return code, out.getvalue()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "journal.sqlite3"
    missing = "playlist 7 not found"
    record(
        path,
        SANDBOX,
        [
            Outcome(row(1), Result.CREATED, 201, 1),
            Outcome(row(2), Result.FAILED, 404, 1, error=missing),
            Outcome(row(3), Result.FAILED, 404, 1, error=missing),
            Outcome(row(4), Result.FAILED, None, 5, error="timed out"),
            Outcome(row(5), Result.NOT_ATTEMPTED),
        ],
        exit_code=1,
    )
    record(path, SITE, [Outcome(row(1), Result.ALREADY_PRESENT, 200, 1)], exit_code=0)
    # A run under way, holding the journal: status reads it all the same.
    running = SqliteJournal.open(path, target=SITE, fresh=True, run_info={})
    yield path
    running.close({})


RUN_ID = r"\d{8}T\d{6}Z-[0-9a-f]{8}"


def test_json_gives_counts_per_target_runs_newest_first_and_common_errors(journal: Path) -> None:
    code, out = run_status(journal, as_json=True)

    assert code == 0
    summary = json.loads(out)
    assert summary["journal"] == str(journal)
    zero = {"created": 0, "already_present": 0, "removed": 0, "failed": 0, "not_attempted": 0}
    assert summary["targets"] == [
        {
            "target": SANDBOX,
            "rows": 5,
            "counts": {**zero, "created": 1, "failed": 3, "not_attempted": 1},
        },
        {"target": SITE, "rows": 1, "counts": {**zero, "already_present": 1}},
    ]
    runs = summary["runs"]
    assert [(r["operation"], r["target"], r["exit_code"], r["fresh"]) for r in runs] == [
        ("run", SITE, None, True),
        ("run", SITE, 0, False),
        ("run", SANDBOX, 1, False),
    ]
    assert all(re.fullmatch(RUN_ID, r["run_id"]) for r in runs)
    assert len({r["run_id"] for r in runs}) == 3
    assert runs[0]["ended"] is None
    assert runs[0]["report"] is None
    assert runs[2]["report"] == {"created": 5, "exit_code": 1}
    assert runs[2]["inputs"] == ["a.csv", "b.ndjson"]
    assert runs[2]["info"] == {"inputs": ["a.csv", "b.ndjson"]}
    assert runs[2]["started"] <= runs[2]["ended"]
    assert summary["errors"] == [
        {"target": SANDBOX, "http_status": 404, "error": "playlist 7 not found", "rows": 2},
        {"target": SANDBOX, "http_status": None, "error": "timed out", "rows": 1},
    ]


def test_text_says_the_same_for_a_person(journal: Path) -> None:
    code, out = run_status(journal, runs=2, errors=1)

    assert code == 0
    assert f"journal {journal}" in out
    assert f"  {SANDBOX}  (5 rows)" in out
    assert "    failed                   3" in out
    assert "no end recorded: still running, or killed" in out
    assert len(re.findall(rf"^  {RUN_ID}  run  {SITE}", out, re.MULTILINE)) == 2
    assert f"run  {SANDBOX}" not in out  # the third run back
    assert "  --fresh" in out
    assert "inputs: a.csv b.ndjson" in out
    assert "created 1  exit_code 0" in out
    assert "       2  HTTP 404  playlist 7 not found" in out
    assert "timed out" not in out


def test_a_runs_report_reads_as_the_report_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    SqliteJournal.open(path, target=SANDBOX, fresh=False, run_info={}).close(
        {"created": 0, "dry_run": False, "error": None}
    )

    code, out = run_status(path)

    assert code == 0
    assert "created 0  dry_run false  error null" in out


def test_anything_shaped_like_a_key_is_masked(tmp_path: Path) -> None:
    """A journal of an earlier version may hold keys a server echoed in an error."""
    path = tmp_path / "journal.sqlite3"
    api_key, app_key = "0123456789abcdef" * 2, "fedcba9876543210ABCD" * 2
    journal = SqliteJournal.open(
        path, target=SANDBOX, fresh=False, run_info={"inputs": [f"{api_key}.csv"]}
    )
    journal.admit(row(1))
    journal.outcome(Outcome(row(1), Result.FAILED, 403, 1, error=f"bad key {app_key}"))
    journal.close({"note": f"key={api_key}"})

    for as_json in (False, True):
        code, out = run_status(path, as_json=as_json)
        assert code == 0
        assert api_key not in out
        assert app_key not in out
        assert out.count("[redacted]") == (4 if as_json else 3)  # JSON: inputs twice


def test_a_journal_with_no_rows_yet(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    record(path, SANDBOX, [], exit_code=0)
    code, out = run_status(path)
    assert code == 0
    assert "no rows recorded yet" in out


def test_the_default_journal_of_a_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUM_PLAYLIST_INGEST_JOURNAL", str(tmp_path / "j.sqlite3"))
    record(tmp_path / "j.shard-1-of-3.sqlite3", SANDBOX, [], exit_code=0)
    code, out = run_status(shard=Shard(1, 3), as_json=True)
    assert code == 0
    assert json.loads(out)["journal"] == str(tmp_path / "j.shard-1-of-3.sqlite3")


@pytest.mark.parametrize(
    ("journal", "shard", "message"),
    [
        ("absent.sqlite3", None, "no journal at .*absent.sqlite3"),
        ("junk.sqlite3", None, "junk.sqlite3 is damaged"),
        ("j", Shard(0, 2), "--journal or --shard, not both"),
    ],
)
def test_what_cannot_be_read_is_a_clear_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    journal: str,
    shard: Shard | None,
    message: str,
) -> None:
    (tmp_path / "junk.sqlite3").write_bytes(b"\x00junk" * 500)
    code, out = run_status(tmp_path / journal, shard)
    assert code == 2
    assert out == ""
    err = capsys.readouterr().err
    assert err.startswith("rum-playlist-ingest: error: ")
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_the_command_line_says_what_is_wrong_with_a_shard(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:  # the option parser's error, with the usage
        main(["status", "--shard", "3/3"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rum-playlist-ingest status")
    assert "status: error: argument --shard: shard index must be between 0 and 2" in err


@pytest.mark.parametrize("command", [["status"], ["undo", "--last"]])
def test_the_advice_for_a_file_that_is_no_journal_names_only_options_the_command_takes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """The advice a run gets ends with `--no-journal`, which these commands would refuse."""
    junk = tmp_path / "junk.sqlite3"
    junk.write_text("junk\n")
    with pytest.raises(SystemExit):
        main([command[0], "--help"])
    takes = set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))

    assert main([*command, "--journal", str(junk)]) == 2

    err = capsys.readouterr().err
    assert "junk.sqlite3 is damaged" in err
    advised = set(re.findall(r"--[a-z][a-z-]*", err))
    assert "--journal" in advised
    assert advised <= takes, advised - takes


async def test_a_query_runs_block_reads_as_the_report_writes_it(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """The report's `query` block is a JSON object in the run's line, not a Python dict."""
    sandbox = await keyed_sandbox(make_sandbox)
    path = tmp_path / "journal.sqlite3"
    query = ["--query", "@session.type:user", "--playlist", "7", "--from", "now-1h"]
    done = await run_cli(*run_against(sandbox, path, *query, concurrency=4), env=KEYS)
    assert done.code == 0, done.stderr

    code, out = run_status(path)

    assert code == 0
    block = json.loads(out.split("  query ", 1)[1].split("\n", 1)[0])
    assert block == done.summary["query"]
    assert "{'" not in out


async def test_a_run_killed_before_a_later_run_began_is_said_to_be_stopped(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """No end recorded, and a later run has held the journal since: it is not running."""
    sandbox = await keyed_sandbox(make_sandbox)
    path = tmp_path / "journal.sqlite3"
    args = run_against(sandbox, path, "-", "--format", "csv", concurrency=4)
    waiting = await start_cli(*args, env=KEYS, stdin=b"")
    assert waiting.stdin is not None
    assert waiting.stderr is not None
    # More than the 100 rows the reader looks ahead at before the run starts, and no end:
    # the run waits for more.
    waiting.stdin.write(write_csv(tmp_path / "head.csv", rows(150)).read_bytes())
    line = b""
    while b'"event":"start"' not in line:  # the run is in the journal
        line = await waiting.stderr.readline()
        assert line, "the run ended before it started"
    waiting.kill()
    await waiting.wait()
    later_input = str(write_csv(tmp_path / "in.csv", rows(1)))
    later = await run_cli(*run_against(sandbox, path, later_input, concurrency=4), env=KEYS)
    assert later.code == 0, later.stderr

    code, out = run_status(path)

    assert code == 0
    newest, killed = re.findall(r"^      \S+ -> (.*)$", out, re.MULTILINE)
    assert not newest.startswith("no end recorded")
    assert killed == "no end recorded: stopped without ending (killed); a later run began after it"
    assert "still running" not in out
