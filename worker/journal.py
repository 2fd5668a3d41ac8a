"""What the run has already done, so reruns skip finished rows and repeats are sent once.

`Ledger` is what the runner needs; `MemoryLedger` keeps it for one run only
(`--no-journal`); `SqliteJournal` keeps it on disk, so a run that is killed, or a cron
job that reruns the same input, picks up where the last one stopped.

The journal's database is its memory: `admit` asks SQLite (one indexed lookup) rather
than a set of every key seen, so a run of a million rows stays about as small as a run of
ten. In memory are only a Bloom filter (4 MiB up to 1.6 million keys), which spares the
lookup for keys the journal has never seen, and the keys whose outcome is not yet
committed: those in flight, queued, or in the writer's next batch.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from worker.rows import InvalidRow, Outcome, Result, Row, RowKey
from worker.shard import Shard


class Ledger(Protocol):
    def admit(self, row: Row) -> bool:
        """True if the row should be sent; False if it was done in an earlier run or
        already appeared in this one (the runner then counts it as skipped)."""

    def rejected(self, row: InvalidRow) -> None: ...

    def outcome(self, outcome: Outcome) -> None: ...

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None: ...

    def paused(self, seconds: float, reason: str) -> None: ...

    def close(self, report: dict[str, object]) -> None:
        """Flush everything and record the run's report; safe to call more than once."""


class MemoryLedger:
    """Within-run de-duplication only: memory grows with the number of distinct rows."""

    def __init__(self) -> None:
        self._seen: set[RowKey] = set()

    def admit(self, row: Row) -> bool:
        key = row.key
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def rejected(self, row: InvalidRow) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        pass

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        pass

    def paused(self, seconds: float, reason: str) -> None:
        pass

    def close(self, report: dict[str, object]) -> None:
        pass


APP_NAME = "rum-playlist-ingest"
JOURNAL_ENV = "RUM_PLAYLIST_INGEST_JOURNAL"
JOURNAL_FILE = "journal.sqlite3"

# 'RPIJ': marks the file as ours, so a stranger's SQLite database is refused, not altered.
APPLICATION_ID = 0x5250494A
SCHEMA_VERSION = 1

_SCHEMA = """
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
    exit_code INTEGER
);
CREATE TABLE rows (
    target_id INTEGER NOT NULL,
    playlist_id INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    data_source TEXT NOT NULL,
    result TEXT NOT NULL,
    ts INTEGER NOT NULL,
    http_status INTEGER,
    attempts INTEGER NOT NULL,
    error TEXT,
    updated_at REAL NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (target_id, playlist_id, session_id, data_source)
) WITHOUT ROWID;
"""

_LOOKUP = (
    "SELECT result, run_id FROM rows"
    " WHERE target_id = ? AND playlist_id = ? AND session_id = ? AND data_source = ?"
)
_DONE_WHERE = "WHERE target_id = ? AND result IN ('created', 'already_present')"
_DONE_KEYS = f"SELECT playlist_id, session_id, data_source FROM rows {_DONE_WHERE}"
_DONE_COUNT = f"SELECT count(*) FROM rows {_DONE_WHERE}"
# A whole batch in one statement, its rows as one JSON array of
# [playlist_id, session_id, data_source, result, ts, http_status, attempts, error]:
# SQLite then runs the batch without the GIL, where one statement per row would hand the
# GIL back and forth with the event loop for each row. One statement is also its own
# transaction: SQLite then keeps no statement journal (a temporary file) to undo half a
# batch, which two statements in one transaction need.
# The last final result wins (a --fresh resend that fails is recorded as failed), but a
# row this run never got to says nothing about the row: keep what was known, and only
# mark it as seen by this run.
_KEEP = "excluded.result = 'not_attempted'"
_RECORD = (
    "INSERT INTO rows (target_id, playlist_id, session_id, data_source, result, ts,"
    " http_status, attempts, error, updated_at, run_id)"
    " SELECT :target, json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),"
    " :now, :run FROM json_each(:rows) WHERE true ON CONFLICT DO UPDATE SET "
    + ", ".join(
        f"{column} = iif({_KEEP}, {column}, excluded.{column})"
        for column in ("result", "ts", "http_status", "attempts", "error", "updated_at")
    )
    + ", run_id = excluded.run_id"
)


class JournalError(Exception):
    """The journal cannot be used; the message says why and what to do next."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When the writer commits: a kill loses at most one uncommitted batch, which the
    rerun sends again, so the batch bounds the duplicates as well as the cost. Rows of a
    batch that share a page of the table share its write, so larger batches cost less per
    row; at full speed (about 5,000 rows/s) both limits give batches of about 1,000 rows."""

    max_rows: int = 1000
    max_wait_s: float = 0.2


def default_journal_path(
    shard: Shard | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The same path on every run of the same command, so a cron job resumes itself.

    `$RUM_PLAYLIST_INGEST_JOURNAL`, else `$XDG_STATE_HOME/rum-playlist-ingest/`, else
    `~/.local/state/rum-playlist-ingest/`. Each shard gets its own file beside it, so
    shards running side by side never wait on or refuse each other.
    """
    env = os.environ if environ is None else environ
    if env.get(JOURNAL_ENV):
        base = Path(env[JOURNAL_ENV]).expanduser()
    else:
        state = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
        base = Path(state) / APP_NAME / JOURNAL_FILE
    if shard is None:
        return base
    return base.with_name(f"{base.stem}.shard-{shard.index}-of-{shard.count}{base.suffix}")


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to a journal known to be one of ours (created if new and not
    `read_only`), or a `JournalError`."""
    conn: sqlite3.Connection | None = None
    try:
        if read_only:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        _check_schema(conn, path, create=not read_only)
    except (sqlite3.Error, JournalError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, JournalError):
            raise
        raise _journal_error(path, exc) from None
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == 0 and tables == 0 and create:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(
            f"BEGIN; {_SCHEMA} PRAGMA application_id = {APPLICATION_ID};"
            f" PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )
        return
    if app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is not a {APP_NAME} journal (it is some other SQLite database, "
            "left untouched); pass --journal with another path"
        )
    if version != SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, and this version of {APP_NAME} "
            f"reads version {SCHEMA_VERSION}; use the matching version of the tool, "
            "or pass --journal with another path"
        )
    # Corruption can hide in pages nothing has read yet: find it now, with a clear
    # message, rather than halfway through a run.
    problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    if problem != "ok":
        raise _damaged(path, problem)


_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def _journal_error(path: Path, exc: BaseException) -> JournalError:
    """Say what went wrong with the journal file and what to do next, without a traceback."""
    if isinstance(exc, sqlite3.Error) and exc.sqlite_errorname in _DAMAGED:
        return _damaged(path, exc)
    cause = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return JournalError(
        f"cannot use the journal at {path} ({cause}); fix the permissions of its folder or "
        "free some space and rerun (what was committed is kept), or pass --journal with "
        "another path, or --no-journal"
    )


def _damaged(path: Path, cause: object) -> JournalError:
    return JournalError(
        f"journal {path} is damaged ({cause}); move it aside and rerun "
        "(rows already sent are then answered 'already present', nothing is added twice), "
        "or pass --journal with another path, or --no-journal"
    )


class _RunLock:
    """An exclusive claim on a journal for one run: the kernel drops it when the process
    dies, even by kill -9, so a crash never leaves a stale lock behind."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises `JournalError` if another process holds the lock, `OSError` if the
        lock file cannot be created."""
        lock_path = self.journal.with_name(self.journal.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip()
            os.close(fd)
            raise JournalError(
                f"journal {self.journal} is in use by another run"
                f"{f' ({holder})' if holder else ''}; wait for it to finish, or give this "
                "run its own --journal PATH"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {iso_time(time.time())}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


_DONE = frozenset(r.value for r in Result if r.done)
_KEY_COLUMNS = operator.itemgetter(0, 1, 2)


class _KeyFilter:
    """A Bloom filter of row keys, so that `admit` asks SQLite only about keys it may
    have seen: a query on the event loop lets go of the GIL, and another thread (the
    reader, the writer) may then hold the loop up for milliseconds. A first run, where
    every key is new, asks SQLite nothing.

    Two probes, one from each half of the key's 64-bit hash, cost half as much as four;
    a larger table keeps false positives as rare. 4 MiB at least, 20 bits or more per key
    done earlier: about 1% false positives at 1.7 million keys; more keys cost more
    lookups, never a wrong answer. Python's `hash` is salted per process, which is fine:
    the filter lives and dies with the run.
    """

    MIN_BITS = 1 << 25

    def __init__(self, expected: int) -> None:
        bits = max(self.MIN_BITS, 1 << (expected * 20).bit_length())
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)

    def add(self, key: RowKey) -> bool:
        """Add `key`; True if it may have been there already."""
        h = hash(key)
        mask, bits = self._mask, self._bits
        first, second = h & mask, (h >> 32) & mask
        byte1, bit1, byte2, bit2 = first >> 3, 1 << (first & 7), second >> 3, 1 << (second & 7)
        if bits[byte1] & bit1 and bits[byte2] & bit2:
            return True
        bits[byte1] |= bit1
        bits[byte2] |= bit2
        return False


class SqliteJournal:
    """The persistent `Ledger`: one row per (target, playlist, session, data source) with
    its last final outcome, and one row per run with its inputs, options and report.

    `admit` runs on the event loop: a Bloom filter, then, for a key it may have seen, a
    point lookup on its own connection. Outcomes are handed to one writer thread that
    commits them in batches, one statement each, in WAL mode with synchronous=NORMAL: a
    commit survives kill -9 of the process, and the event loop never waits on a disk or a
    lock.
    """

    def __init__(
        self,
        path: Path,
        lock: _RunLock,
        reader: sqlite3.Connection,
        writer: sqlite3.Connection,
        *,
        target_id: int,
        run_id: int,
        fresh: bool,
        batch: BatchPolicy,
    ) -> None:
        self.path = path
        self.run_id = run_id
        self._lock = lock
        self._reader = reader
        self._target_id = target_id
        self._fresh = fresh
        self._batch = batch
        self._seen = self._load_filter()
        # Keys admitted whose outcome is not yet committed: the writer removes a batch's
        # keys once it is committed (one set operation, atomic under the GIL).
        self._uncommitted: set[RowKey] = set()
        # Outcomes for the writer; deque appends and pops are atomic, so the event loop
        # never takes a lock, and wakes the writer only once a batch is full.
        self._pending: collections.deque[Outcome] = collections.deque()
        self._handed = 0  # outcomes put in `_pending`, written by the event loop only
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._committed = 0  # written by the writer thread only
        # Lookups share one read transaction (a snapshot) while the writer has nothing to
        # write, as in a rerun that skips rows done: one per lookup costs three more system
        # calls. A snapshot kept while the writer writes would keep the WAL from being
        # reset (it would grow), and one kept past a commit would miss the rows that
        # commit let go of from `_uncommitted`. `_committed` when the last one was let go:
        self._read_at = 0
        self._failure: JournalError | None = None
        self._closing = False
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, args=(writer,), name="journal-writer", daemon=True
        )
        self._writer.start()

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        target: str,
        fresh: bool,
        run_info: dict[str, object],
        batch: BatchPolicy | None = None,
    ) -> SqliteJournal:
        """Claim the journal for one run sending to `target`, and record the run's start.

        Raises `JournalError` if another run holds it, it is damaged, or it cannot be
        written; nothing stays claimed in that case.
        """
        lock = _RunLock(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except OSError as exc:
            raise _journal_error(path, exc) from None
        try:
            reader = _connect(path)
            try:
                target_id, run_id = _start_run(reader, target, fresh, run_info)
                # Autocommit: each batch is one statement, so its own transaction.
                writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                writer.execute("PRAGMA synchronous = NORMAL")
                # A checkpoint every 16 MiB of WAL instead of 4: a page changed by several
                # batches in between is copied to the database once.
                writer.execute("PRAGMA wal_autocheckpoint = 4000")
                return cls(
                    path,
                    lock,
                    reader,
                    writer,
                    target_id=target_id,
                    run_id=run_id,
                    fresh=fresh,
                    batch=batch or BatchPolicy(),
                )
            except sqlite3.Error as exc:
                reader.close()
                raise _journal_error(path, exc) from None
        except JournalError:
            lock.release()
            raise

    def _load_filter(self) -> _KeyFilter:
        """The keys done in earlier runs for this target: the only ones `admit` needs to
        look up (none with --fresh), besides those this run admits."""
        if self._fresh:
            return _KeyFilter(0)
        (count,) = self._reader.execute(_DONE_COUNT, (self._target_id,)).fetchone()
        seen = _KeyFilter(count)
        for key in self._reader.execute(_DONE_KEYS, (self._target_id,)):
            seen.add(key)
        return seen

    def admit(self, row: Row) -> bool:
        """Done in an earlier run (unless --fresh), or seen earlier in this run, means
        skip; failed or never seen means send.

        Raises `JournalError` once the journal can no longer be read or written: a run
        that cannot keep track of what it did should stop."""
        if self._failure is not None:
            raise self._failure
        key = row.key
        if key in self._uncommitted:
            return False
        reader = self._reader
        try:
            # Read after the check above: if the writer has let go of `key`, its commit is
            # counted by now (the writer counts first), so the lookup sees it.
            committed = self._committed
            if committed != self._read_at:
                reader.commit()  # end the snapshot, which no longer holds every commit
                self._read_at = committed
            if self._seen.add(key):
                if not reader.in_transaction:
                    reader.execute("BEGIN")
                found = reader.execute(_LOOKUP, (self._target_id, *key)).fetchone()
                if self._handed != committed:
                    reader.commit()  # the writer has work: keep its WAL free to restart
                if found is not None and (
                    found[1] == self.run_id or (not self._fresh and found[0] in _DONE)
                ):
                    return False
        except sqlite3.Error as exc:
            raise _journal_error(self.path, exc) from None
        self._uncommitted.add(key)
        return True

    def rejected(self, row: InvalidRow) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        # A skipped row was decided by `admit` and changes nothing on record.
        if outcome.result is Result.SKIPPED or self._closing or self._failure is not None:
            return
        pending = self._pending
        pending.append(outcome)
        self._handed += 1
        # Only the append that fills a batch: pops never make the deque longer.
        if len(pending) == self._batch.max_rows:
            self._wake.set()

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        pass

    def paused(self, seconds: float, reason: str) -> None:
        pass

    def flush(self) -> None:
        """Block until every outcome reported so far is committed.

        Raises `JournalError` if they could not be."""
        wanted = self._handed
        with self._progress:
            self._wake.set()
            self._progress.wait_for(
                lambda: (
                    self._committed >= wanted
                    or self._failure is not None
                    or not self._writer.is_alive()
                )
            )
        if self._failure is not None:
            raise self._failure

    def close(self, report: dict[str, object]) -> None:
        """Commit every outcome, record the run's end and report, and release the lock.

        Raises `JournalError` (after releasing) if something could not be written."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._wake.set()
        self._writer.join()
        try:
            self._reader.commit()  # end the lookups' snapshot: writing needs a fresh one
            if self._failure is None:
                with self._reader:
                    self._reader.execute(
                        "UPDATE runs SET ended_at = ?, report = ?, exit_code = ? WHERE id = ?",
                        (
                            time.time(),
                            json.dumps(report, default=str),
                            report.get("exit_code"),
                            self.run_id,
                        ),
                    )
        except sqlite3.Error as exc:
            self._failure = _journal_error(self.path, exc)
        finally:
            self._reader.close()
            self._lock.release()
        if self._failure is not None:
            raise self._failure

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        """Every `max_wait_s`, or as soon as `max_rows` outcomes wait, or on `flush` or
        `close`: commit what waits, `max_rows` at a time."""
        try:
            while True:
                self._wake.wait(self._batch.max_wait_s)
                self._wake.clear()
                closing = self._closing  # read first: all it waited for is pending now
                while self._pending:
                    count = min(len(self._pending), self._batch.max_rows)
                    self._commit(conn, [self._pending.popleft() for _ in range(count)])
                with self._progress:
                    self._progress.notify_all()
                if closing:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Outcome]) -> None:
        """Write one batch in one statement; after a failure, drop what comes (the run is
        told by `admit`, `flush` and `close`).

        In the table's order, so each page the batch changes is read and written once, even
        when the page cache cannot hold them all."""
        if self._failure is not None:
            return
        rows = sorted(
            ([*o.row.key, o.result, o.row.ts, o.http_status, o.attempts, o.error] for o in batch),
            key=_KEY_COLUMNS,
        )
        try:
            conn.execute(
                _RECORD,
                {
                    "target": self._target_id,
                    "now": time.time(),
                    "run": self.run_id,
                    "rows": json.dumps(rows),
                },
            )
        except sqlite3.Error as exc:
            self._failure = _journal_error(self.path, exc)
            return
        self._committed += len(batch)  # first: see `admit`
        self._uncommitted.difference_update(map(_KEY_COLUMNS, rows))


def _start_run(
    conn: sqlite3.Connection, target: str, fresh: bool, run_info: dict[str, object]
) -> tuple[int, int]:
    with conn:
        conn.execute("INSERT INTO targets (url) VALUES (?) ON CONFLICT DO NOTHING", (target,))
        (target_id,) = conn.execute("SELECT id FROM targets WHERE url = ?", (target,)).fetchone()
        cursor = conn.execute(
            "INSERT INTO runs (target_id, started_at, fresh, pid, info) VALUES (?, ?, ?, ?, ?)",
            (target_id, time.time(), fresh, os.getpid(), json.dumps(run_info, default=str)),
        )
    assert cursor.lastrowid is not None
    return target_id, cursor.lastrowid


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only look at a journal, safe while a run is writing it (WAL)."""
    if not path.is_file():
        raise JournalError(f"no journal at {path}: no run has used it yet")
    conn = _connect(path, read_only=True)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise _journal_error(path, exc) from None
    finally:
        conn.close()


@contextlib.contextmanager
def done_before(path: Path | None, target: str) -> Iterator[Callable[[RowKey], bool]]:
    """Whether the journal at `path` holds a row as done for `target`: what a real run
    would skip, for --dry-run. Read only, and the journal is not claimed, so a dry run
    may look while a run works. No journal (or None: --fresh, --no-journal), or none for
    this target, means nothing was done before.

    Raises `JournalError` for a journal that cannot be read."""
    if path is None or not path.is_file():
        yield lambda _key: False
        return
    with reading(path) as conn:
        found = conn.execute("SELECT id FROM targets WHERE url = ?", (target,)).fetchone()
        if found is None:
            yield lambda _key: False
            return
        target_id = found[0]

        def done(key: RowKey) -> bool:
            row = conn.execute(_LOOKUP, (target_id, *key)).fetchone()
            return row is not None and row[0] in _DONE

        yield done
