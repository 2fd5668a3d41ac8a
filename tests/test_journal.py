"""The SQLite journal on real files: what a rerun skips, the run lock, damaged files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.journal import BatchPolicy, JournalError, SqliteJournal, default_journal_path
from worker.rows import Outcome, Result, Row
from worker.shard import Shard

SANDBOX = "http://127.0.0.1:8126"
SITE = "https://api.datadoghq.com"


def row(n: int, *, line: int | None = None, data_source: str = "rum") -> Row:
    return Row(
        1000 + n % 3,
        f"session-{n:06d}",
        1_704_067_200_000 + n,
        data_source,
        "in.csv",
        line or n + 2,
    )


def open_journal(
    path: Path, *, target: str = SANDBOX, fresh: bool = False, batch: BatchPolicy | None = None
) -> SqliteJournal:
    return SqliteJournal.open(
        path,
        target=target,
        fresh=fresh,
        run_info={"inputs": ["in.csv"], "options": {"concurrency": 4}},
        batch=batch,
    )


def finish(journal: SqliteJournal, outcomes: list[Outcome], exit_code: int = 0) -> None:
    for outcome in outcomes:
        assert journal.admit(outcome.row)
        journal.outcome(outcome)
    journal.close({"created": len(outcomes), "exit_code": exit_code})


def admitted(journal: SqliteJournal, rows: list[Row]) -> list[int]:
    """The indices of `rows` the journal lets through, in order."""
    return [i for i, r in enumerate(rows) if journal.admit(r)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite3"


@pytest.fixture
def journal(path: Path) -> Iterator[SqliteJournal]:
    opened = open_journal(path)
    yield opened
    opened.close({})


def test_rerun_skips_rows_done_and_retries_the_rest(path: Path) -> None:
    rows = [row(i) for i in range(6)]
    finish(
        open_journal(path),
        [
            Outcome(rows[0], Result.CREATED, 201, 1),
            Outcome(rows[1], Result.ALREADY_PRESENT, 200, 1),
            Outcome(rows[2], Result.FAILED, 404, 1, error="playlist not found"),
            Outcome(rows[3], Result.NOT_ATTEMPTED),
        ],
        exit_code=1,
    )

    rerun = open_journal(path)
    assert admitted(rerun, rows) == [2, 3, 4, 5]
    rerun.close({})


def test_a_row_repeated_in_one_run_is_admitted_once_before_and_after_commit(
    journal: SqliteJournal,
) -> None:
    first, again = row(1), row(1, line=99)
    assert journal.admit(first)
    assert not journal.admit(again)  # in flight
    journal.outcome(Outcome(first, Result.FAILED, 500, 5, error="server error"))
    assert not journal.admit(again)  # answered, not yet committed
    journal.flush()
    assert not journal.admit(again)  # committed: the database remembers it


def test_a_repeat_is_refused_after_its_first_commits_under_an_open_snapshot(path: Path) -> None:
    done, new = row(1), row(2)
    finish(open_journal(path), [Outcome(done, Result.CREATED, 201, 1)])
    journal = open_journal(path)
    assert not journal.admit(done)  # a lookup: it leaves the lookups' snapshot open
    assert journal.admit(new)
    journal.outcome(Outcome(new, Result.CREATED, 201, 1))
    journal.flush()  # committed after that snapshot began, and no longer held in memory
    assert not journal.admit(row(2, line=99))
    journal.close({})


def test_lookups_keep_no_snapshot_while_the_writer_has_work(path: Path) -> None:
    done = row(1)
    finish(open_journal(path), [Outcome(done, Result.CREATED, 201, 1)])
    journal = open_journal(path, batch=BatchPolicy(max_rows=100, max_wait_s=60))
    assert journal.admit(row(2))
    journal.outcome(Outcome(row(2), Result.CREATED, 201, 1))  # not yet committed
    assert not journal.admit(done)  # a lookup
    with sqlite3.connect(path, timeout=0) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0  # no reader keeps the WAL from being reset (and growing)
    journal.close({})


def test_a_row_answered_and_left_unsent_in_one_batch_keeps_its_answer(path: Path) -> None:
    first, second = row(1), row(2)
    journal = open_journal(path)
    assert journal.admit(first)
    assert journal.admit(second)
    # Repeats left unsent as the run stops, in the same batch as the answers, either side.
    journal.outcome(Outcome(row(1, line=98), Result.NOT_ATTEMPTED))
    journal.outcome(Outcome(first, Result.CREATED, 201, 1))
    journal.outcome(Outcome(second, Result.FAILED, 500, 5, error="server error"))
    journal.outcome(Outcome(row(2, line=99), Result.NOT_ATTEMPTED))
    journal.close({})

    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT session_id, result, attempts FROM rows").fetchall()
    assert sorted(kept) == [(first.session_id, "created", 1), (second.session_id, "failed", 5)]


def test_the_same_session_under_another_data_source_is_another_row(
    journal: SqliteJournal,
) -> None:
    assert journal.admit(row(1))
    assert journal.admit(row(1, data_source="product_analytics"))


def test_fresh_resends_rows_done_but_still_sends_each_once(path: Path) -> None:
    rows = [row(i) for i in range(3)]
    finish(open_journal(path), [Outcome(r, Result.CREATED, 201, 1) for r in rows])

    fresh = open_journal(path, fresh=True)
    assert admitted(fresh, rows + rows) == [0, 1, 2]
    fresh.close({})


def test_rows_done_against_another_target_are_sent_again(path: Path) -> None:
    rows = [row(i) for i in range(3)]
    finish(open_journal(path, target=SANDBOX), [Outcome(r, Result.CREATED, 201, 1) for r in rows])

    real = open_journal(path, target=SITE)
    assert admitted(real, rows) == [0, 1, 2]
    real.close({})
    back = open_journal(path, target=SANDBOX)
    assert admitted(back, rows) == []
    back.close({})


def test_a_row_left_unsent_keeps_what_was_known_of_it(path: Path) -> None:
    done, failed = row(1), row(2)
    finish(
        open_journal(path),
        [
            Outcome(done, Result.CREATED, 201, 1),
            Outcome(failed, Result.FAILED, 400, 1, error="bad"),
        ],
    )
    interrupted = open_journal(path, fresh=True)
    finish(
        interrupted, [Outcome(done, Result.NOT_ATTEMPTED), Outcome(failed, Result.NOT_ATTEMPTED)]
    )

    with sqlite3.connect(path) as conn:
        kept = dict(conn.execute("SELECT session_id, result FROM rows").fetchall())
    assert kept == {done.session_id: "created", failed.session_id: "failed"}
    assert admitted(open_journal(path), [done, failed]) == [1]


def test_the_last_answer_wins(path: Path) -> None:
    r = row(1)
    finish(open_journal(path), [Outcome(r, Result.FAILED, 503, 5, error="unavailable")])
    finish(open_journal(path), [Outcome(r, Result.CREATED, 201, 2)])

    with sqlite3.connect(path) as conn:
        record = conn.execute(
            "SELECT result, http_status, attempts, error, ts FROM rows"
        ).fetchall()
    assert record == [("created", 201, 2, None, r.ts)]


def test_skipped_outcomes_change_nothing(path: Path) -> None:
    r = row(1)
    finish(open_journal(path), [Outcome(r, Result.CREATED, 201, 1)])
    again = open_journal(path)
    assert not again.admit(r)
    again.outcome(Outcome(r, Result.SKIPPED))
    again.close({})

    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT result, run_id FROM rows").fetchall() == [("created", 1)]


def test_batches_commit_on_their_own_and_close_commits_the_rest(path: Path) -> None:
    journal = open_journal(path, batch=BatchPolicy(max_rows=3, max_wait_s=60))
    rows = [row(i) for i in range(7)]
    for r in rows:
        assert journal.admit(r)
        journal.outcome(Outcome(r, Result.CREATED, 201, 1))
    # Two full batches need no flush; a reader in another connection sees them (or more).
    reader = sqlite3.connect(path)
    journal.flush()
    assert reader.execute("SELECT count(*) FROM rows").fetchone() == (7,)
    journal.close({})
    reader.close()


def test_each_run_is_recorded_with_its_info_and_report(path: Path) -> None:
    finish(open_journal(path), [Outcome(row(1), Result.CREATED, 201, 1)])
    open_journal(path, target=SITE, fresh=True).close({"created": 0, "exit_code": 3})

    with sqlite3.connect(path) as conn:
        runs = conn.execute(
            "SELECT r.id, t.url, r.fresh, r.pid, r.info, r.report, r.exit_code,"
            " r.ended_at >= r.started_at FROM runs r JOIN targets t ON t.id = r.target_id"
            " ORDER BY r.id"
        ).fetchall()
    info = json.dumps({"inputs": ["in.csv"], "options": {"concurrency": 4}})
    assert runs == [
        (1, SANDBOX, 0, os.getpid(), info, json.dumps({"created": 1, "exit_code": 0}), 0, 1),
        (2, SITE, 1, os.getpid(), info, json.dumps({"created": 0, "exit_code": 3}), 3, 1),
    ]


def test_close_is_idempotent_and_ignores_late_outcomes(path: Path) -> None:
    journal = open_journal(path)
    journal.close({"exit_code": 0})
    journal.outcome(Outcome(row(1), Result.CREATED, 201, 1))
    journal.close({"exit_code": 1})
    journal.flush()

    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM rows").fetchone() == (0,)
        assert conn.execute("SELECT exit_code FROM runs").fetchall() == [(0,)]


def test_the_journal_is_in_wal_mode(journal: SqliteJournal, path: Path) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_second_run_on_the_same_journal_is_refused(journal: SqliteJournal, path: Path) -> None:
    with pytest.raises(JournalError, match=r"in use by another run \(run \d{8}T\d{6}Z-[0-9a-f]{8}, pid \d+, since .*--journal"):
        open_journal(path)


def test_the_lock_is_released_by_close(path: Path) -> None:
    open_journal(path).close({})
    open_journal(path).close({})


def test_the_lock_dies_with_a_killed_process(path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from worker.journal import SqliteJournal;"
            " SqliteJournal.open(Path(sys.argv[1]), target='t', fresh=False, run_info={});"
            " print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(JournalError, match="in use"):
            open_journal(path)
    finally:
        holder.kill()
        holder.wait()
    open_journal(path).close({})


def test_a_file_that_is_not_a_database_is_refused_untouched(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"playlist_id,session_id,ts\n" * 200)
    with pytest.raises(JournalError, match=r"is damaged \(file is not a database\); move it aside"):
        open_journal(path)
    assert path.read_bytes() == b"playlist_id,session_id,ts\n" * 200
    open_journal(path.with_name("other.sqlite3")).close({})  # and the lock was let go


def test_another_sqlite_database_is_refused_untouched(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(JournalError, match="not a rum-playlist-ingest journal"):
        open_journal(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_schema").fetchall() == [("notes",)]


def test_a_journal_of_another_schema_version_is_refused(path: Path) -> None:
    open_journal(path).close({})
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(JournalError, match="schema version 99"):
        open_journal(path)


def test_a_corrupted_page_is_found_at_open(path: Path) -> None:
    finish(open_journal(path), [Outcome(row(i), Result.CREATED, 201, 1) for i in range(3000)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    assert path.stat().st_size > 8 * page_size
    with path.open("r+b") as damaged:
        damaged.seek(5 * page_size)
        damaged.write(b"\xff" * page_size)
    with pytest.raises(JournalError, match="is damaged"):
        open_journal(path)


def test_a_truncated_journal_is_found_at_open(path: Path) -> None:
    finish(open_journal(path), [Outcome(row(i), Result.CREATED, 201, 1) for i in range(3000)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(JournalError, match="is damaged"):
        open_journal(path)


def test_a_journal_whose_folder_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file, not a folder")
    with pytest.raises(
        JournalError, match=r"cannot use the journal at .* \(Not a directory: .*state\)"
    ):
        open_journal(tmp_path / "state" / "journal.sqlite3")


def test_a_journal_that_cannot_be_written_is_refused(path: Path) -> None:
    path.mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(JournalError, match="cannot use the journal at"):
        open_journal(path)


def test_the_default_location_follows_the_environment(tmp_path: Path) -> None:
    home = Path("~").expanduser()
    assert default_journal_path(environ={}) == (
        home / ".local/state/rum-playlist-ingest/journal.sqlite3"
    )
    assert default_journal_path(environ={"XDG_STATE_HOME": "/var/lib/x"}) == Path(
        "/var/lib/x/rum-playlist-ingest/journal.sqlite3"
    )
    explicit = {"XDG_STATE_HOME": "/x", "RUM_PLAYLIST_INGEST_JOURNAL": str(tmp_path / "j.db")}
    assert default_journal_path(environ=explicit) == tmp_path / "j.db"
    assert default_journal_path(Shard(2, 8), environ=explicit) == tmp_path / "j.shard-2-of-8.db"


def test_shards_have_journals_of_their_own(tmp_path: Path) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path)}
    shards = [open_journal(default_journal_path(Shard(k, 2), environ)) for k in range(2)]
    for shard in shards:
        shard.close({})
    assert sorted(p.name for p in (tmp_path / "rum-playlist-ingest").glob("*.sqlite3")) == [
        "journal.shard-0-of-2.sqlite3",
        "journal.shard-1-of-2.sqlite3",
    ]


def test_a_journal_that_stops_taking_writes_stops_the_run_and_lets_go(path: Path) -> None:
    journal = open_journal(path)
    with sqlite3.connect(path) as conn:  # stands in for a full disk
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON rows BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    assert journal.admit(row(1))
    journal.outcome(Outcome(row(1), Result.CREATED, 201, 1))
    with pytest.raises(JournalError, match=r"cannot use the journal at .* \(full\)"):
        journal.flush()
    with pytest.raises(JournalError, match="cannot use the journal"):
        journal.admit(row(2))
    journal.outcome(Outcome(row(2), Result.CREATED, 201, 1))
    with pytest.raises(JournalError, match="cannot use the journal"):
        journal.close({})
    journal.close({})
    open_journal(path.with_name("other.sqlite3")).close({})
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER refuse")
    open_journal(path).close({})  # the lock was let go
