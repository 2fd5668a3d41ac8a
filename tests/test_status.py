"""`status` over real journals: counts per target, the last runs, the common errors."""

from __future__ import annotations

import argparse
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import status
from worker.journal import SqliteJournal
from worker.rows import Outcome, Result, Row

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


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    status.add_arguments(parser)
    return parser.parse_args(argv)


def run_status(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = status.status_command(parse(*argv), out)
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


def test_json_gives_counts_per_target_runs_newest_first_and_common_errors(journal: Path) -> None:
    code, out = run_status("--journal", str(journal), "--json")

    assert code == 0
    summary = json.loads(out)
    assert summary["journal"] == str(journal)
    assert summary["targets"] == [
        {
            "target": SANDBOX,
            "rows": 5,
            "counts": {"created": 1, "already_present": 0, "failed": 3, "not_attempted": 1},
        },
        {
            "target": SITE,
            "rows": 1,
            "counts": {"created": 0, "already_present": 1, "failed": 0, "not_attempted": 0},
        },
    ]
    runs = summary["runs"]
    assert [(r["id"], r["target"], r["exit_code"], r["fresh"]) for r in runs] == [
        (3, SITE, None, True),
        (2, SITE, 0, False),
        (1, SANDBOX, 1, False),
    ]
    assert runs[0]["ended"] is None
    assert runs[0]["report"] is None
    assert runs[2]["report"] == {"created": 5, "exit_code": 1}
    assert runs[2]["info"] == {"inputs": ["a.csv", "b.ndjson"]}
    assert runs[2]["started"] <= runs[2]["ended"]
    assert summary["errors"] == [
        {"target": SANDBOX, "http_status": 404, "error": "playlist 7 not found", "rows": 2},
        {"target": SANDBOX, "http_status": None, "error": "timed out", "rows": 1},
    ]


def test_text_says_the_same_for_a_person(journal: Path) -> None:
    code, out = run_status("--journal", str(journal), "--runs", "2", "--errors", "1")

    assert code == 0
    assert f"journal {journal}" in out
    assert f"  {SANDBOX}  (5 rows)" in out
    assert "    failed                   3" in out
    assert "no end recorded: still running, or killed" in out
    assert "#2 " in out
    assert "#1 " not in out
    assert "created 1  exit_code 0" in out
    assert "       2  HTTP 404  playlist 7 not found" in out
    assert "timed out" not in out


def test_a_journal_with_no_rows_yet(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    record(path, SANDBOX, [], exit_code=0)
    code, out = run_status("--journal", str(path))
    assert code == 0
    assert "no rows recorded yet" in out


def test_the_default_journal_of_a_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUM_PLAYLIST_INGEST_JOURNAL", str(tmp_path / "j.sqlite3"))
    record(tmp_path / "j.shard-1-of-3.sqlite3", SANDBOX, [], exit_code=0)
    code, out = run_status("--shard", "1/3", "--json")
    assert code == 0
    assert json.loads(out)["journal"] == str(tmp_path / "j.shard-1-of-3.sqlite3")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--journal", "{tmp}/absent.sqlite3"), "no journal at .*absent.sqlite3"),
        (("--journal", "{tmp}/junk.sqlite3"), "junk.sqlite3 is damaged"),
        (("--shard", "3/3"), "shard index must be between 0 and 2"),
        (("--shard", "0/2", "--journal", "{tmp}/j"), "--journal or --shard, not both"),
    ],
)
def test_what_cannot_be_read_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    (tmp_path / "junk.sqlite3").write_bytes(b"\x00junk" * 500)
    code, out = run_status(*(a.format(tmp=tmp_path) for a in argv))
    assert code == 2
    assert out == ""
    err = capsys.readouterr().err
    assert err.startswith("rum-playlist-ingest: error: ")
    assert re.search(message, err), err
    assert "Traceback" not in err
