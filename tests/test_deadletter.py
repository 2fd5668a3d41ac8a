"""The dead-letter file: what it holds, and that the reader takes it back as input."""

from __future__ import annotations

import json
import resource
import signal
from pathlib import Path

import pytest

from worker.deadletter import DeadLetter, DeadLetterError
from worker.input import ReaderOptions, open_inputs
from worker.rows import InvalidRow, Outcome, Result, Row

TS = 1_704_067_200_000


def row(n: int, data_source: str = "rum") -> Row:
    return Row(
        2000 + n, f"9f{n:06d}-0000-4000-8000-000000000000", TS + n, data_source, "in.csv", n + 2
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_only_rows_that_failed_for_good_are_written_each_at_once(tmp_path: Path) -> None:
    path = tmp_path / "dead.ndjson"
    dead = DeadLetter(path)
    dead(InvalidRow("in.csv", 9, "ts is not a number", {"ts": "x"}))
    for result in (Result.CREATED, Result.ALREADY_PRESENT, Result.SKIPPED, Result.NOT_ATTEMPTED):
        dead.outcome(Outcome(row(0), result, 201))
    dead.outcome(Outcome(row(1), Result.FAILED, 404, 1, 12.5, "playlist 2001 not found"))
    dead.outcome(Outcome(row(2, "product_analytics"), Result.FAILED, 503, 5))
    dead.outcome(Outcome(row(3), Result.FAILED, None, 5, error="timed out after 30 s"))

    # Readable before close: a kill -9 now would lose nothing already reported.
    assert lines(path) == [
        {
            "playlist_id": 2001,
            "session_id": row(1).session_id,
            "ts": TS + 1,
            "data_source": "rum",
            "reason": "playlist 2001 not found",
            "http_status": 404,
            "attempts": 1,
            "source": "in.csv",
            "line": 3,
        },
        {
            "playlist_id": 2002,
            "session_id": row(2).session_id,
            "ts": TS + 2,
            "data_source": "product_analytics",
            "reason": "HTTP 503",
            "http_status": 503,
            "attempts": 5,
            "source": "in.csv",
            "line": 4,
        },
        {
            "playlist_id": 2003,
            "session_id": row(3).session_id,
            "ts": TS + 3,
            "data_source": "rum",
            "reason": "timed out after 30 s",
            "http_status": None,
            "attempts": 5,
            "source": "in.csv",
            "line": 5,
        },
    ]
    assert dead.written == 3
    dead.close()
    dead.close()


def test_the_file_read_back_as_input_gives_exactly_the_failed_rows(tmp_path: Path) -> None:
    path = tmp_path / "dead.ndjson"
    dead = DeadLetter(path)
    failed = [row(n, "product_analytics" if n % 2 else "rum") for n in range(5)]
    for r in failed:
        dead.outcome(Outcome(r, Result.FAILED, 500, 5, error='said "no", twice'))
    dead.close()

    with open_inputs([str(path)], ReaderOptions(default_data_source="rum")) as stream:
        again = list(stream)
    assert all(isinstance(r, Row) for r in again)
    assert [(r.key, r.ts) for r in again if isinstance(r, Row)] == [(r.key, r.ts) for r in failed]


def test_each_run_starts_the_file_anew(tmp_path: Path) -> None:
    path = tmp_path / "dead.ndjson"
    path.write_text('{"stale": true}\n')
    DeadLetter(path).close()
    assert path.read_text() == ""


def test_the_file_may_not_also_be_an_input(tmp_path: Path) -> None:
    path = tmp_path / "dead.ndjson"
    path.write_text('{"playlist_id": 1, "session_id": "s", "ts": 1}\n')
    with pytest.raises(
        DeadLetterError, match=r"input #3 .*/\./dead.ndjson and --dead-letter .* are one file"
    ):
        DeadLetter(path, inputs=["-", str(tmp_path / "other.csv"), f"{tmp_path}/./dead.ndjson"])
    assert path.read_text().startswith('{"playlist_id"')


def test_a_path_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file, not a folder")
    with pytest.raises(
        DeadLetterError,
        match=r"^--dead-letter .*: cannot write there \(Not a dir.*\); name a file in a writable",
    ):
        DeadLetter(tmp_path / "out" / "dead.ndjson")


def test_parent_folders_are_made(tmp_path: Path) -> None:
    path = tmp_path / "out" / "today" / "dead.ndjson"
    DeadLetter(path).close()
    assert path.exists()


def test_a_full_disk_does_not_stop_the_run_but_close_reports_it(tmp_path: Path) -> None:
    """A file size limit stands in for a full disk: each write past it fails with EFBIG."""
    dead = DeadLetter(tmp_path / "dead.ndjson")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    quiet = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, limit[1]))
    try:
        dead.outcome(Outcome(row(1), Result.FAILED, 500, 5))
        dead.outcome(Outcome(row(2), Result.FAILED, 500, 5))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, quiet)
    with pytest.raises(DeadLetterError, match=r"incomplete after 0 rows \(File too large"):
        dead.close()
    dead.close()
