"""The journal's tables, how an older journal is upgraded to them, and how a journal file
is opened: only one of ours, never through a symlink.

Version 2 (this one) adds to version 1: a run id unique across machines and shards, with
the run's operation and shard; `run_rows`, what each run created (or may have created, or
removed), which later runs never overwrite, so a run can be undone; `queries`, where a
query's search got to; and rows without a time (remove and verify need none).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from worker.files import unsafe_because
from worker.journal.errors import JournalError, damaged, journal_error
from worker.journal.location import APP_NAME

# 'RPIJ': marks the file as ours, so a stranger's SQLite database is refused, not altered.
APPLICATION_ID = 0x5250494A
SCHEMA_VERSION = 2
UPGRADABLE = frozenset({1})
"""Schema versions this version upgrades in place."""

SIDE_FILES = ("-wal", "-shm", "-journal")
"""What SQLite opens beside a database by name: it follows no flag of ours there."""

_ROWS_V2 = """
CREATE TABLE rows (
    target_id INTEGER NOT NULL,
    playlist_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    data_source TEXT NOT NULL,
    result TEXT NOT NULL,
    ts INTEGER,
    http_status INTEGER,
    attempts INTEGER NOT NULL,
    error TEXT,
    updated_at REAL NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (target_id, playlist_id, session_id, data_source)
) WITHOUT ROWID;
"""

# What version 2 adds beside `rows`. `run_rows.result` is 'created' (answered 201),
# 'maybe_created' (already present after an attempt whose answer was lost) or 'removed'.
# Keyed by row first: whether a later run added a row is one range lookup, and a run's
# rows come out in key order from one pass over the table (undo is rare; a second index
# would double the table's size and its cost on every run).
_HISTORY_V2 = """
CREATE UNIQUE INDEX runs_by_run_id ON runs (run_id);
CREATE TABLE run_rows (
    run INTEGER NOT NULL REFERENCES runs(id),
    playlist_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    data_source TEXT NOT NULL,
    result TEXT NOT NULL,
    ts INTEGER,
    PRIMARY KEY (playlist_id, session_id, data_source, run)
) WITHOUT ROWID;
CREATE TABLE queries (
    target_id INTEGER NOT NULL REFERENCES targets(id),
    query TEXT NOT NULL,
    playlist_id INTEGER NOT NULL,
    position_ts INTEGER,
    completed_to INTEGER,
    updated_at REAL NOT NULL,
    PRIMARY KEY (target_id, query, playlist_id)
) WITHOUT ROWID;
"""

SCHEMA = (
    """
CREATE TABLE targets (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL UNIQUE
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    target_id INTEGER NOT NULL REFERENCES targets(id),
    started_at REAL NOT NULL,
    ended_at REAL,
    fresh INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    info TEXT NOT NULL,
    report TEXT,
    exit_code INTEGER,
    run_id TEXT NOT NULL,
    operation TEXT NOT NULL DEFAULT 'run',
    shard TEXT
);
"""
    + _ROWS_V2
    + _HISTORY_V2
)

# Version 1 to 2, in one transaction. Runs of version 1 get ids of the new form, their
# time and 'v1' plus their number. Version 1 kept, per row, only its last final result
# and the last run that saw it: a row last recorded as created is credited to that run,
# the best that can be known now.
_UPGRADE_FROM_1 = (
    """
ALTER TABLE runs ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN operation TEXT NOT NULL DEFAULT 'run';
ALTER TABLE runs ADD COLUMN shard TEXT;
UPDATE runs SET run_id = strftime('%Y%m%dT%H%M%SZ', started_at, 'unixepoch') || '-v1' || id;
ALTER TABLE rows RENAME TO rows_v1;
"""
    + _ROWS_V2
    + """
INSERT INTO rows SELECT * FROM rows_v1;
DROP TABLE rows_v1;
"""
    + _HISTORY_V2
    + """
INSERT INTO run_rows (run, playlist_id, session_id, data_source, result, ts)
    SELECT run_id, playlist_id, session_id, data_source, 'created', ts FROM rows
    WHERE result = 'created';
"""
)


def check_files(path: Path) -> None:
    """Raises `JournalError` if the journal or a side file SQLite would open beside it is a
    symlink (it would write through it, wherever it points) or not a plain file, or if the
    journal has other names (hard links): SQLite names its side files after the name it
    was given, so two names would be two write-ahead logs of one database."""
    for each in (path, *side_files(path)):
        try:
            info = each.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise journal_error(path, exc) from None
        problem = unsafe_because(info, own=False, single_name=each == path)
        if problem is not None:
            raise unsafe_journal(each, problem)


def unsafe_journal(path: Path, problem: str) -> JournalError:
    return JournalError(
        f"{path} {problem}; pass --journal with another path (a journal is one plain file "
        "with one name, and so are its side files)"
    )


def side_files(path: Path) -> tuple[Path, ...]:
    """The files SQLite keeps beside the journal: other outputs must keep off them too."""
    return tuple(path.with_name(path.name + suffix) for suffix in SIDE_FILES)


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to a journal known to be one of ours (created if new and not
    `read_only`, upgraded if older and not `read_only`), or a `JournalError`."""
    check_files(path)
    conn: sqlite3.Connection | None = None
    try:
        if read_only:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        _check_schema(conn, path, writable=not read_only)
    except (sqlite3.Error, JournalError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, JournalError):
            raise
        raise journal_error(path, exc) from None
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _check_schema(conn: sqlite3.Connection, path: Path, *, writable: bool) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = schema_version(conn)
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == 0 and tables == 0 and writable:
        conn.execute("PRAGMA journal_mode = WAL")
        _in_one_transaction(conn, SCHEMA, SCHEMA_VERSION)
        return
    if app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is not a {APP_NAME} journal (it is some other SQLite database, "
            "left untouched); pass --journal with another path"
        )
    if version in UPGRADABLE and writable:
        _in_one_transaction(conn, _UPGRADE_FROM_1, SCHEMA_VERSION)
    elif version != SCHEMA_VERSION and not (version in UPGRADABLE and not writable):
        raise JournalError(
            f"journal {path} has schema version {version}, and this version of {APP_NAME} "
            f"reads version {SCHEMA_VERSION}; use the matching version of the tool, "
            "or pass --journal with another path"
        )
    # Corruption can hide in pages nothing has read yet: find it now, with a clear
    # message, rather than halfway through a run.
    problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if problem != "ok":
        raise damaged(path, problem)


def _in_one_transaction(conn: sqlite3.Connection, script: str, version: int) -> None:
    """All of `script` or none of it: a kill halfway leaves the journal as it was."""
    conn.executescript(
        f"BEGIN IMMEDIATE; {script} PRAGMA application_id = {APPLICATION_ID};"
        f" PRAGMA user_version = {version}; COMMIT;"
    )
