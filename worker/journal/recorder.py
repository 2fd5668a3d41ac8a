"""The persistent journal of one run: what it did to each row, committed as it goes, so
reruns skip finished rows and repeats are sent once.

The journal's database is its memory: `admit_all` asks SQLite (one query a chunk, a
primary-key search per row) rather than a set of every key seen, so a run of a million
rows stays about as small as a run of ten. In memory are only the keys whose outcome is
not yet committed: those in flight, queued, or in the writer's next batch.
"""

from __future__ import annotations

import collections
import functools
import json
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from worker.files import private_dir
from worker.journal.errors import JournalError, journal_error
from worker.journal.lock import RunLock
from worker.journal.records import Operation, QueryKey, done_results, new_run_id
from worker.journal.schema import connect
from worker.rows import ALREADY_PRESENT, CREATED, SKIPPED, Outcome, Result, Row, RowKey, row_key
from worker.shard import Shard

_LOOKUP = (
    "WITH k (place, playlist_id, session_id, data_source) AS (VALUES {values})"
    " SELECT k.place, r.result, r.run_id FROM k CROSS JOIN rows r ON r.target_id = ?"
    " AND r.playlist_id = k.playlist_id AND r.session_id = k.session_id"
    " AND r.data_source = k.data_source"
)
"""The recorded result and run of each of several keys, bound as plain parameters with
their place, by that place. CROSS JOIN keeps SQLite from scanning the table for each key:
each key is one search of the primary key. (A JSON array of the keys, `json_each`, costs
half again: 2.5 against 1.6 us a key, which a rerun pays for every row.)"""
_LOOKUP_PIECE = 256
"""Keys looked up by one statement at most: 1,025 parameters."""

# A batch in one transaction, its rows bound as plain parameters of a few multi-row
# statements (`_PIECE` rows each): SQLite then runs each piece without the GIL, where
# `executemany` would hand the GIL back and forth with the event loop for every row and
# fall far behind it, and a JSON array of the batch (`json_each`, `json_extract`) cost the
# writer half again as many instructions a row. The last final result wins (a --fresh resend
# that fails is recorded as failed), but a row this run never got to says nothing about
# the row: keep what was known, and only mark it as seen by this run.
_PIECE = 100
_LEAVE_UNSENT_AS_IT_WAS = "excluded.result = 'not_attempted'"
_RECORD = (
    "INSERT INTO rows (target_id, playlist_id, session_id, data_source, result, ts,"
    " http_status, attempts, error, updated_at, run_id) VALUES {values}"
    " ON CONFLICT DO UPDATE SET "
    + ", ".join(
        f"{column} = iif({_LEAVE_UNSENT_AS_IT_WAS}, {column}, excluded.{column})"
        for column in ("result", "ts", "http_status", "attempts", "error", "updated_at")
    )
    + ", run_id = excluded.run_id"
)
# What the run did that undo needs, for the rows whose `kept` is not null: later runs
# add their own rows here and never change this run's.
_KEEP_FOR_RUN = (
    "INSERT INTO run_rows (run, playlist_id, session_id, data_source, result, ts)"
    " VALUES {values} ON CONFLICT DO UPDATE SET result = excluded.result, ts = excluded.ts"
)


@functools.lru_cache(maxsize=64)
def _many(statement: str, rows: int, width: int) -> str:
    """`statement` with room for `rows` rows of `width` parameters."""
    row = "(" + ", ".join("?" * width) + ")"
    return statement.format(values=", ".join([row] * rows))


def _in_pieces(
    conn: sqlite3.Connection,
    statement: str,
    rows: Sequence[Sequence[object]],
    *,
    piece: int = _PIECE,
    after: Sequence[object] = (),
) -> list[Any]:
    """`statement` run over `rows` (all of one width), `piece` rows at a time, each run
    bound to its rows' values and then `after`; what the runs return, in order."""
    found: list[Any] = []
    for start in range(0, len(rows), piece):
        part = rows[start : start + piece]
        params = list(chain.from_iterable(part))  # flat, with no Python loop a value
        params += after
        found += conn.execute(_many(statement, len(part), len(part[0])), params).fetchall()
    return found


_SAVE_QUERY = (
    "INSERT INTO queries (target_id, query, playlist_id, {column}, updated_at)"
    " VALUES (:target, :query, :playlist, :value, :now)"
    " ON CONFLICT DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at"
)


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """When the writer commits: a kill loses what is not committed yet, which the rerun
    sends again (an already-present answer each), so the batch bounds the duplicates as
    well as the cost. That is about one batch; more when the loop, sharing one busy core
    with the writer, runs ahead of its commits. Rows of a batch that share a page of the
    table share its write, so larger batches cost less per row; at full speed (about
    5,000 rows/s) both limits give batches of about 1,000 rows."""

    max_rows: int = 1000
    max_wait_s: float = 0.2


@dataclass(frozen=True, slots=True)
class _QueryMark:
    """A query's position or completed range, committed with the outcomes handed before it."""

    column: str
    key: QueryKey
    ts_ms: int


def _kept_for_run(outcome: Outcome) -> str | None:
    """What undo needs to know of this row, if anything."""
    if outcome.result is CREATED:
        return "created"
    if outcome.result is ALREADY_PRESENT and outcome.note is not None:
        return "maybe_created"
    if outcome.result is Result.REMOVED:
        return "removed"
    return None


_KEY_COLUMNS = operator.itemgetter(1, 2, 3)
"""A written row's key, its playlist, session and data source, after its first column."""


class _KeyFilter:
    """A Bloom filter of the keys this run has admitted, so that a run whose target the
    journal holds nothing done for (a first run, or `--fresh`) asks SQLite only about keys
    it may have admitted already: a query on the event loop lets go of the GIL, and
    another thread (the reader, the writer) may then hold the loop up for milliseconds.
    Nothing is loaded into it: a rerun, whose every row must be looked up anyway, looks
    them up a chunk at a time and starts at once.

    Two probes, one from each half of the key's 64-bit hash, cost half as much as four;
    a larger table keeps false positives as rare. 4 MiB: about 0.1% false positives at a
    million keys; more keys cost more lookups, never a wrong answer. Python's `hash` is
    salted per process, which is fine: the filter lives and dies with the run.
    """

    MIN_BITS = 1 << 25

    def __init__(self) -> None:
        self._mask = self.MIN_BITS - 1
        self._bits = bytearray(self.MIN_BITS // 8)

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


def _holds_done(reader: sqlite3.Connection, target_id: int, done: Sequence[str]) -> bool:
    try:
        found = reader.execute(
            f"SELECT 1 FROM rows WHERE target_id = ? AND result IN ({', '.join('?' * len(done))})"
            " LIMIT 1",
            (target_id, *done),
        ).fetchone()
        reader.commit()
    except sqlite3.Error:
        return True  # the lookups will say what is wrong
    return found is not None


class SqliteJournal:
    """The persistent `Ledger`: one row per (target, playlist, session, data source) with
    its last final outcome, one row per run with its id, inputs, options and report, and
    what this run created or removed (`run_rows`), which later runs leave alone.

    `admit_all` runs on the event loop: one lookup of a chunk's keys on its own
    connection. Outcomes are handed to one writer thread that
    commits them in batches, one transaction each, in WAL mode with synchronous=NORMAL: a
    commit survives kill -9 of the process, and the event loop never waits on a disk or a
    lock.
    """

    def __init__(
        self,
        path: Path,
        lock: RunLock,
        reader: sqlite3.Connection,
        writer: sqlite3.Connection,
        *,
        started: _Started,
        fresh: bool,
        operation: Operation,
        batch: BatchPolicy,
    ) -> None:
        self.path = path
        self.run_id = started.run_id
        """This run's id, unique across machines and shards: show it, undo names it."""
        self._run = started.row_id
        self._lock = lock
        self._reader = reader
        self._target_id = started.target_id
        self._fresh = fresh
        self._done = done_results(operation)
        self._batch = batch
        # Keys admitted whose outcome is not yet committed: the writer removes a batch's
        # keys once it is committed (one set operation, atomic under the GIL).
        self._uncommitted: set[RowKey] = set()
        self._admitted = _KeyFilter()
        self._done_before = not fresh and _holds_done(reader, self._target_id, self._done)
        """Rows done before for this target exist: every row must be looked up."""
        # Outcomes (and query marks) for the writer; deque appends and pops are atomic, so
        # the event loop never takes a lock, and wakes the writer only once a batch is full.
        self._pending: collections.deque[Outcome | _QueryMark] = collections.deque()
        self._handed = 0  # items put in `_pending`, written by the event loop only
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
        operation: Operation = Operation.RUN,
        shard: Shard | None = None,
        batch: BatchPolicy | None = None,
    ) -> SqliteJournal:
        """Claim the journal for one run of `operation` sending to `target`, and record the
        run's start (with `run_info`: its inputs, under "inputs", and options; never keys).
        The journal's folder is made private (0700) when this makes it; an older journal
        is upgraded in place.

        Raises `JournalError` if another run holds it, it is damaged, it or a side file is
        a symlink, or it cannot be written; nothing stays claimed in that case.
        """
        lock = RunLock(path)
        try:
            private_dir(path.parent)
        except OSError as exc:
            raise journal_error(path, exc) from None
        lock.acquire()
        try:
            reader = connect(path)
            try:
                started = _start_run(
                    reader,
                    target,
                    fresh=fresh,
                    run_info=run_info,
                    operation=operation,
                    shard=shard,
                )
                # Autocommit: each batch is its own explicit transaction.
                writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                writer.execute("PRAGMA synchronous = NORMAL")
                # A batch's two statements keep a statement journal in memory, not in a file.
                writer.execute("PRAGMA temp_store = MEMORY")
                # A checkpoint every 16 MiB of WAL instead of 4: a page changed by several
                # batches in between is copied to the database once.
                writer.execute("PRAGMA wal_autocheckpoint = 4000")
                return cls(
                    path,
                    lock,
                    reader,
                    writer,
                    started=started,
                    fresh=fresh,
                    operation=operation,
                    batch=batch or BatchPolicy(),
                )
            except sqlite3.Error as exc:
                reader.close()
                raise journal_error(path, exc) from None
        except JournalError:
            lock.release()
            raise

    def admit(self, row: Row) -> bool:
        """`admit_all` of one row."""
        return self.admit_all((row,))[0]

    def admit_all(self, rows: Sequence[Row]) -> list[bool]:
        """For each row, in order: done in an earlier run (unless --fresh), or seen earlier
        in this run, means skip (False); failed or never seen means send. Done means added
        for a run (so a row removed since is sent again), removed for a remove or an undo.

        The rows are looked up in one query for them all, a search of the primary key
        each: SQLite is asked once a chunk, not once a row, and nothing is loaded into
        memory beforehand (a rerun of a million done rows starts at once). When the
        journal holds nothing done for this target, only rows this run may have admitted
        already are looked up (`_KeyFilter`).

        Raises `JournalError` once the journal can no longer be read or written: a run
        that cannot keep track of what it did should stop."""
        if self._failure is not None:
            raise self._failure
        keys = list(map(row_key, rows))
        verdicts = [True] * len(keys)
        uncommitted = self._uncommitted
        asked: list[int] = []
        if self._done_before:  # every row is looked up: the filter would spare nothing
            for index, key in enumerate(keys):
                if key in uncommitted:
                    verdicts[index] = False  # a repeat of a row this run has yet to record
                else:
                    asked.append(index)
        else:
            admitted = self._admitted
            for index, key in enumerate(keys):
                if key in uncommitted:
                    verdicts[index] = False
                elif admitted.add(key):
                    asked.append(index)  # admitted by this run already, and committed
                else:
                    uncommitted.add(key)
        if asked:
            refused = self._done_of([keys[index] for index in asked])
            for place, index in enumerate(asked):
                key = keys[index]
                if place in refused or key in uncommitted:
                    verdicts[index] = False
                else:
                    uncommitted.add(key)
        return verdicts

    def _done_of(self, keys: list[RowKey]) -> set[int]:
        """The places in `keys` of those this run must skip: done before, or recorded by
        this very run."""
        reader = self._reader
        try:
            # Read after the uncommitted check: if the writer has let go of a key, its
            # commit is counted by now (the writer counts first), so the lookup sees it.
            committed = self._committed
            if committed != self._read_at:
                reader.commit()  # end the snapshot, which no longer holds every commit
                self._read_at = committed
            if not reader.in_transaction:
                reader.execute("BEGIN")
            # Each key after its place, (place, playlist, session, data source), made in C.
            placed = list(zip(range(len(keys)), *zip(*keys, strict=True), strict=True))
            found = _in_pieces(
                reader, _LOOKUP, placed, piece=_LOOKUP_PIECE, after=(self._target_id,)
            )
            if self._handed != committed:
                reader.commit()  # the writer has work: keep its WAL free to restart
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from None
        fresh, done, this_run = self._fresh, self._done, self._run
        return {
            place
            for place, result, run in found
            if run == this_run or (not fresh and result in done)
        }

    def outcome(self, outcome: Outcome) -> None:
        # A skipped row was decided by `admit` and changes nothing on record.
        if outcome.result is SKIPPED:
            return
        self._hand(outcome)

    def save_query_position(self, key: QueryKey, ts_ms: int) -> None:
        """Every row of the query's events up to `ts_ms` has had its outcome reported: kept
        in the same commit as those outcomes (never before them), so a rerun may start its
        search there."""
        self._hand(_QueryMark("position_ts", key, ts_ms))

    def save_completed_to(self, key: QueryKey, ts_ms: int) -> None:
        """The query's search completed up to `ts_ms` (its `--to`): where `--from last`
        starts next time. Committed with the outcomes reported before it."""
        self._hand(_QueryMark("completed_to", key, ts_ms))

    def _hand(self, item: Outcome | _QueryMark) -> None:
        if self._closing or self._failure is not None:
            return
        pending = self._pending
        pending.append(item)
        self._handed += 1
        # Only the append that fills a batch: pops never make the deque longer.
        if len(pending) == self._batch.max_rows:
            self._wake.set()

    def query_position(self, key: QueryKey) -> int | None:
        """What `save_query_position` last committed for `key` (in any run), or None."""
        return self._query_column("position_ts", key)

    def completed_to(self, key: QueryKey) -> int | None:
        """What `save_completed_to` last committed for `key` (in any run), or None."""
        return self._query_column("completed_to", key)

    def _query_column(self, column: str, key: QueryKey) -> int | None:
        try:
            self._reader.commit()  # the lookups' snapshot may predate the latest commits
            found = self._reader.execute(
                f"SELECT {column} FROM queries"
                " WHERE target_id = ? AND query = ? AND playlist_id = ?",
                (self._target_id, key.query, key.playlist_id),
            ).fetchone()
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from None
        return None if found is None else found[0]

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
                            self._run,
                        ),
                    )
        except sqlite3.Error as exc:
            self._failure = journal_error(self.path, exc)
        finally:
            self._reader.close()
            self._lock.release()
        if self._failure is not None:
            raise self._failure

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        """Every `max_wait_s`, or as soon as `max_rows` outcomes wait, or on `flush` or
        `close`: commit what waits, `max_rows` at a time, and each query mark with the
        outcomes handed before it."""
        try:
            while True:
                self._wake.wait(self._batch.max_wait_s)
                self._wake.clear()
                closing = self._closing  # read first: all it waited for is pending now
                while self._pending:
                    self._commit(conn, *self._next_batch())
                with self._progress:
                    self._progress.notify_all()
                if closing:
                    return
        finally:
            conn.close()

    def _next_batch(self) -> tuple[list[Outcome], _QueryMark | None]:
        """Up to `max_rows` waiting outcomes, and the query mark that ends them, if any."""
        outcomes: list[Outcome] = []
        while self._pending and len(outcomes) < self._batch.max_rows:
            item = self._pending.popleft()
            if isinstance(item, _QueryMark):
                return outcomes, item
            outcomes.append(item)
        return outcomes, None

    def _commit(
        self, conn: sqlite3.Connection, batch: list[Outcome], mark: _QueryMark | None
    ) -> None:
        """Write one batch in one transaction; after a failure, drop what comes (the run is
        told by `admit`, `flush` and `close`).

        In the table's order, so each page the batch changes is read and written once, even
        when the page cache cannot hold them all."""
        if self._failure is not None:
            return
        target, now, run = self._target_id, time.time(), self._run
        rows: list[tuple[object, ...]] = []
        kept: list[tuple[object, ...]] = []
        for o in batch:
            # Its first four fields in one slice: `Row.key` is a Python-level property.
            pid, sid, ts, data_source = o.row[:4]
            result = str(o.result)
            status, attempts, error = o.http_status, o.attempts, o.error
            rows.append(
                (target, pid, sid, data_source, result, ts, status, attempts, error, now, run)
            )
            if (kept_as := _kept_for_run(o)) is not None:
                kept.append((run, pid, sid, data_source, kept_as, ts))
        # Both tables' keys start after one column (the target, the run): one order for both.
        rows.sort(key=_KEY_COLUMNS)
        kept.sort(key=_KEY_COLUMNS)
        try:
            conn.execute("BEGIN")
            _in_pieces(conn, _RECORD, rows)
            _in_pieces(conn, _KEEP_FOR_RUN, kept)
            if mark is not None:
                conn.execute(
                    _SAVE_QUERY.format(column=mark.column),
                    {
                        "target": self._target_id,
                        "query": mark.key.query,
                        "playlist": mark.key.playlist_id,
                        "value": mark.ts_ms,
                        "now": now,
                    },
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._failure = journal_error(self.path, exc)
            return
        self._committed += len(batch) + (mark is not None)  # first: see `admit`
        self._uncommitted.difference_update(map(_KEY_COLUMNS, rows))


@dataclass(frozen=True, slots=True)
class _Started:
    run_id: str
    row_id: int
    target_id: int


def _start_run(
    conn: sqlite3.Connection,
    target: str,
    *,
    fresh: bool,
    run_info: dict[str, object],
    operation: Operation,
    shard: Shard | None,
) -> _Started:
    run_id = new_run_id()
    with conn:
        conn.execute("INSERT INTO targets (url) VALUES (?) ON CONFLICT DO NOTHING", (target,))
        (target_id,) = conn.execute("SELECT id FROM targets WHERE url = ?", (target,)).fetchone()
        cursor = conn.execute(
            "INSERT INTO runs (target_id, started_at, fresh, pid, info, run_id, operation,"
            " shard) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                target_id,
                time.time(),
                fresh,
                os.getpid(),
                json.dumps(run_info, default=str),
                run_id,
                operation.value,
                None if shard is None else str(shard),
            ),
        )
    assert cursor.lastrowid is not None
    return _Started(run_id, cursor.lastrowid, target_id)
