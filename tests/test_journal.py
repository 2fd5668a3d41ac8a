"""The SQLite journal on real files: what a rerun skips, the run lock, damaged files."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.journal import (
    BatchPolicy,
    JournalError,
    NoJournalLedger,
    Operation,
    QueryKey,
    RepeatCheck,
    SqliteJournal,
    default_journal_path,
    new_run_id,
    reading,
)
from worker.journal.recorder import _PIECE
from worker.presenting import done_rows
from worker.rows import DATA_SOURCES, Outcome, Result, Row, RowKey
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


def test_a_batch_of_several_statement_pieces_is_written_whole(path: Path) -> None:
    # The writer binds a batch `_PIECE` rows to a statement: two full pieces and a part.
    count = 2 * _PIECE + 7
    journal = open_journal(path, batch=BatchPolicy(max_rows=count, max_wait_s=60))
    rows = [row(i) for i in range(count)]
    for i, r in enumerate(rows):
        assert journal.admit(r)
        result = Result.CREATED if i % 2 else Result.ALREADY_PRESENT
        journal.outcome(Outcome(r, result, 201 if i % 2 else 200, 1))
    journal.close({})

    reader = sqlite3.connect(path)
    recorded = reader.execute("SELECT session_id, result FROM rows").fetchall()
    created = reader.execute("SELECT session_id FROM run_rows WHERE result = 'created'").fetchall()
    reader.close()
    assert sorted(recorded) == sorted(
        (r.session_id, "created" if i % 2 else "already_present") for i, r in enumerate(rows)
    )
    assert sorted(created) == sorted((r.session_id,) for r in rows[1::2])
    rerun = open_journal(path)
    assert rerun.admit_all(rows) == [False] * count  # all done
    rerun.close({})


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
    holder = r"\(run \d{8}T\d{6}Z-[0-9a-f]{8}, pid \d+, since .*--journal"
    with pytest.raises(JournalError, match=rf"in use by another run {holder}"):
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


def test_a_relative_xdg_state_home_is_ignored() -> None:
    home = Path("~").expanduser()
    assert default_journal_path(environ={"XDG_STATE_HOME": "relative/state"}) == (
        home / ".local/state/rum-playlist-ingest/journal.sqlite3"
    )


# --- runs, and what each created ---------------------------------------------------------


def created_keys(path: Path, run_id: str) -> list[tuple[RowKey, bool, bool, bool]]:
    with reading(path) as history:
        return [(c.key, c.maybe, c.added_later, c.removed) for c in history.created_by(run_id)]


def test_each_run_gets_an_id_of_its_own_and_a_record(path: Path) -> None:
    first = open_journal(path)
    first.close({"created": 0, "exit_code": 0})
    second = SqliteJournal.open(
        path,
        target=SITE,
        fresh=False,
        run_info={"inputs": ["a.csv", "b.csv"]},
        operation=Operation.REMOVE,
        shard=Shard(1, 4),
    )
    second.close({"removed": 2, "exit_code": 0})

    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", first.run_id)
    assert first.run_id != second.run_id
    with reading(path) as history:
        runs = history.runs()
        assert [r.run_id for r in runs] == [second.run_id, first.run_id]
        assert history.run(first.run_id) == runs[1]
        assert history.run("20990101T000000Z-00000000") is None
        assert history.last_run(SANDBOX) == runs[1]
        assert history.last_run(SITE) is None  # a remove is not a run to undo
        assert history.last_run(SITE, Operation.REMOVE) == runs[0]
    removal = runs[0]
    assert (removal.target, removal.operation, removal.shard) == (SITE, "remove", "1/4")
    assert removal.inputs == ("a.csv", "b.csv")
    assert removal.report == {"removed": 2, "exit_code": 0}
    assert removal.exit_code == 0
    assert removal.ended_at is not None
    assert removal.started_at <= removal.ended_at


def test_run_ids_differ_within_one_second() -> None:
    ids = {new_run_id(1_700_000_000.0) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("20231114T221320Z-") for i in ids)


def test_what_a_run_created_survives_later_and_fresh_runs(path: Path) -> None:
    rows = [row(i) for i in range(4)]
    first = open_journal(path)
    finish(
        first,
        [
            Outcome(rows[0], Result.CREATED, 201, 1),
            Outcome(rows[1], Result.ALREADY_PRESENT, 200, 1),
            Outcome(rows[2], Result.FAILED, 404, 1),
            Outcome(rows[3], Result.CREATED, 201, 1),
        ],
    )
    # A later run sees the same sessions already there, and fails one: none of it is its own.
    fresh = open_journal(path, fresh=True)
    finish(
        fresh,
        [
            Outcome(rows[0], Result.ALREADY_PRESENT, 200, 1),
            Outcome(rows[3], Result.FAILED, 503, 5, error="unavailable"),
        ],
    )

    assert created_keys(path, first.run_id) == [
        (rows[0].key, False, False, False),
        (rows[3].key, False, False, False),
    ]
    assert created_keys(path, fresh.run_id) == []


def test_an_answer_lost_before_already_present_is_kept_as_maybe_created(path: Path) -> None:
    lost, plain = row(1), row(2)
    journal = open_journal(path)
    note = "an earlier attempt's answer was lost (timed out): it may have added the session"
    finish(
        journal,
        [
            Outcome(lost, Result.ALREADY_PRESENT, 200, 2, note=note),
            Outcome(plain, Result.ALREADY_PRESENT, 200, 1),
        ],
    )
    assert created_keys(path, journal.run_id) == [(lost.key, True, False, False)]


def test_a_removed_row_is_no_longer_done_and_a_later_run_that_adds_it_is_known(
    path: Path,
) -> None:
    r, other = row(1), row(2)
    first = open_journal(path)
    finish(first, [Outcome(r, Result.CREATED, 201, 1), Outcome(other, Result.CREATED, 201, 1)])

    remove = SqliteJournal.open(
        path, target=SANDBOX, fresh=False, run_info={}, operation=Operation.REMOVE
    )
    assert admitted(remove, [r]) == [0]  # a run's done is not a removal's done
    remove.outcome(Outcome(r, Result.REMOVED, 204, 1))
    remove.close({})
    assert created_keys(path, first.run_id) == [
        (r.key, False, False, True),
        (other.key, False, False, False),
    ]

    again = open_journal(path)
    assert admitted(again, [r, other]) == [0]  # removed, so added again; the other is done
    again.outcome(Outcome(r, Result.CREATED, 201, 1))
    again.close({})
    assert created_keys(path, first.run_id)[0] == (r.key, False, True, False)
    with reading(path) as history:
        assert history.added_later(first.run_id, r.key)
        assert not history.added_later(first.run_id, other.key)
        assert not history.added_later(again.run_id, r.key)
        assert list(history.removed_by(remove.run_id)) == [r.key]


def test_undoing_twice_sends_nothing_the_second_time(path: Path) -> None:
    rows = [row(i) for i in range(3)]
    run = open_journal(path)
    finish(run, [Outcome(r, Result.CREATED, 201, 1) for r in rows])

    def undo() -> list[int]:
        journal = SqliteJournal.open(
            path,
            target=SANDBOX,
            fresh=False,
            run_info={"undoes": run.run_id},
            operation=Operation.UNDO,
        )
        with reading(path) as history:
            todo = [c for c in history.created_by(run.run_id) if not c.removed]
        sent = admitted(journal, [Row(*c.key[:2], c.ts, c.key[2], "journal", 0) for c in todo])
        for i in sent:
            journal.outcome(Outcome(rows[i], Result.REMOVED, 204, 1))
        journal.close({})
        return sent

    assert undo() == [0, 1, 2]
    assert undo() == []


# --- an older journal ---------------------------------------------------------------------

SCHEMA_V1 = """
CREATE TABLE targets (id INTEGER PRIMARY KEY, url TEXT NOT NULL UNIQUE);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, target_id INTEGER NOT NULL REFERENCES targets(id),
    started_at REAL NOT NULL, ended_at REAL, fresh INTEGER NOT NULL, pid INTEGER NOT NULL,
    info TEXT NOT NULL, report TEXT, exit_code INTEGER
);
CREATE TABLE rows (
    target_id INTEGER NOT NULL, playlist_id INTEGER NOT NULL, session_id TEXT NOT NULL,
    data_source TEXT NOT NULL, result TEXT NOT NULL, ts INTEGER NOT NULL,
    http_status INTEGER, attempts INTEGER NOT NULL, error TEXT, updated_at REAL NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (target_id, playlist_id, session_id, data_source)
) WITHOUT ROWID;
"""


def write_v1_journal(path: Path, rows: list[tuple[Row, str]]) -> None:
    """A journal as version 1 of the tool wrote it (its schema, as it was)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(
            f"BEGIN; {SCHEMA_V1} PRAGMA application_id = 1380993354;"
            " PRAGMA user_version = 1; COMMIT;"
        )
        with conn:
            conn.execute(f"INSERT INTO targets (url) VALUES ('{SANDBOX}')")
            conn.execute(
                "INSERT INTO runs (target_id, started_at, ended_at, fresh, pid, info, report,"
                " exit_code) VALUES (1, 1700000000.0, 1700000060.0, 0, 42, ?, ?, 0)",
                (json.dumps({"inputs": ["old.csv"]}), json.dumps({"created": 1})),
            )
            conn.executemany(
                "INSERT INTO rows VALUES (1, ?, ?, ?, ?, ?, 201, 1, NULL, 1700000001.0, 1)",
                [(*r.key, result, r.ts) for r, result in rows],
            )


def test_a_journal_of_version_1_is_upgraded_in_place_and_keeps_its_done_rows(path: Path) -> None:
    done, present, failed = row(1), row(2), row(3)
    write_v1_journal(path, [(done, "created"), (present, "already_present"), (failed, "failed")])

    journal = open_journal(path)
    assert admitted(journal, [done, present, failed, row(4)]) == [2, 3]
    journal.close({})

    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    with reading(path) as history:
        old, new = history.runs()[::-1]
        assert old.run_id == "20231114T221320Z-v11"
        assert (old.inputs, old.report, old.operation) == (("old.csv",), {"created": 1}, "run")
        assert new.run_id == journal.run_id
        # Version 1 knew only the last result: a row created is credited to its run.
        assert [c.key for c in history.created_by(old.run_id)] == [done.key]


def test_a_reader_upgrades_a_journal_of_version_1_too(path: Path) -> None:
    write_v1_journal(path, [(row(1), "created")])
    with reading(path) as history:
        assert [r.run_id for r in history.runs()] == ["20231114T221320Z-v11"]
        assert history.done(SANDBOX)(row(1).key)


def test_an_upgrade_that_fails_leaves_the_old_journal_as_it_was(path: Path) -> None:
    write_v1_journal(path, [(row(1), "created")])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE run_rows (x)")  # makes the upgrade fail halfway
    before = sqlite3.connect(path).execute("SELECT * FROM rows").fetchall()
    with pytest.raises(JournalError, match="cannot use the journal"):
        open_journal(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert conn.execute("SELECT * FROM rows").fetchall() == before
        assert "run_id" not in {c[1] for c in conn.execute("PRAGMA table_info(runs)")}


# --- where a query got to -----------------------------------------------------------------


def test_a_query_position_is_committed_with_the_outcomes_before_it(path: Path) -> None:
    key = QueryKey("(@usr.email:*@example.com) @type:session", 1000)
    journal = open_journal(path, batch=BatchPolicy(max_rows=1000, max_wait_s=60))
    assert journal.query_position(key) is None
    assert journal.admit(row(0))
    journal.outcome(Outcome(row(0), Result.CREATED, 201, 1))
    journal.save_query_position(key, 1_704_067_200_000)
    journal.flush()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM rows").fetchone() == (1,)
    assert journal.query_position(key) == 1_704_067_200_000
    assert journal.completed_to(key) is None
    journal.save_completed_to(key, 1_704_070_000_000)
    journal.save_query_position(key, 1_704_069_000_000)
    journal.close({})

    with reading(path) as history:
        assert history.query_position(SANDBOX, key) == 1_704_069_000_000
        assert history.completed_to(SANDBOX, key) == 1_704_070_000_000
        assert history.completed_to(SITE, key) is None
        assert history.completed_to(SANDBOX, QueryKey(key.query, 1001)) is None
    rerun = open_journal(path)
    assert rerun.completed_to(key) == 1_704_070_000_000
    rerun.close({})


def test_a_query_position_is_never_ahead_of_the_outcomes_it_covers(path: Path) -> None:
    """A batch is cut at the mark: the position commits with exactly what came before it."""
    key = QueryKey("@type:session", 7)
    journal = open_journal(path, batch=BatchPolicy(max_rows=1000, max_wait_s=60))
    with contextlib.closing(sqlite3.connect(path)) as conn:  # a full disk, after 3 rows
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON rows WHEN NEW.session_id > 'session-000002'"
            " BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
    for i in range(3):
        assert journal.admit(row(i))
        journal.outcome(Outcome(row(i), Result.CREATED, 201, 1))
    journal.save_query_position(key, 3)
    assert journal.admit(row(3))
    journal.outcome(Outcome(row(3), Result.CREATED, 201, 1))
    journal.save_query_position(key, 4)
    with pytest.raises(JournalError, match="full"):
        journal.close({})
    with reading(path) as history:
        assert history.query_position(SANDBOX, key) == 3


# --- the repeat check without a journal ---------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 40), st.sampled_from(DATA_SOURCES))))
def test_the_flat_repeat_check_admits_exactly_the_first_of_each_key(
    keys: list[tuple[int, int, str]],
) -> None:
    check = RepeatCheck()
    seen: set[RowKey] = set()
    try:
        for playlist, session, source in keys:
            r = Row(playlist, f"s{session}", None, source, "in.csv", 2)
            assert check.admit(r) == (r.key not in seen)
            seen.add(r.key)
    finally:
        check.close()


def test_the_repeat_check_keeps_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path))
    check = NoJournalLedger()
    assert check.admit_all([row(i) for i in range(20_000)]) == [True] * 20_000  # > its cache
    assert check.admit_all([row(7, line=99)]) == [False]
    assert list(tmp_path.iterdir()) == []  # created, then unlinked at once
    check.close({})


def test_a_removal_needs_no_time_and_is_not_sent_twice(path: Path) -> None:
    untimed = Row(1000, "session-never-added", None, "rum", "ids.csv", 2)
    for expected in ([0], []):
        journal = SqliteJournal.open(
            path, target=SANDBOX, fresh=False, run_info={}, operation=Operation.REMOVE
        )
        assert admitted(journal, [untimed]) == expected
        if expected:
            journal.outcome(Outcome(untimed, Result.REMOVED, 204, 1))
        journal.close({})
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT result, ts FROM rows").fetchall() == [("removed", None)]


@pytest.mark.parametrize("fresh", [False, True])
def test_a_chunk_is_admitted_as_its_rows_one_by_one_would_be(path: Path, fresh: bool) -> None:
    """`admit_all` looks a chunk up in one query: the verdicts must be those of one
    `admit` per row, repeats within the chunk, done, failed and new rows mixed."""
    done, failed = [row(n) for n in range(0, 40)], [row(n) for n in range(40, 60)]
    finish(
        open_journal(path),
        [Outcome(r, Result.CREATED, 201, 1) for r in done]
        + [Outcome(r, Result.FAILED, 500, 5, error="HTTP 500") for r in failed],
    )
    copy = path.with_name("copy.sqlite3")
    shutil.copyfile(path, copy)
    # 300 rows: more than one lookup statement takes (256), repeats across the two.
    chunk = [row(n % 90, line=i + 2) for i, n in enumerate(range(0, 180, 3))] * 5
    at_once, one_by_one = open_journal(path, fresh=fresh), open_journal(copy, fresh=fresh)
    try:
        verdicts = at_once.admit_all(chunk)
        assert verdicts == [one_by_one.admit(each) for each in chunk]
        assert True in verdicts
        assert False in verdicts
    finally:
        at_once.close({})
        one_by_one.close({})


def test_the_start_line_counts_what_a_rerun_of_the_same_operation_skips(path: Path) -> None:
    """Added rows for a run, removed rows for a remove or an undo."""
    rows = [row(i) for i in range(5)]
    finish(
        open_journal(path),
        [Outcome(r, Result.CREATED if i < 3 else Result.REMOVED, 201) for i, r in enumerate(rows)],
    )

    assert done_rows(path, SANDBOX, Operation.RUN) == 3
    assert done_rows(path, SANDBOX, Operation.REMOVE) == 2
    assert done_rows(path, SANDBOX, Operation.UNDO) == 2
    assert done_rows(path, "https://elsewhere.example", Operation.RUN) == 0
