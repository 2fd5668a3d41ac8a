"""Reading a journal without claiming it: its runs, what each created, where a query got
to, and what a dry run would skip. Safe while a run writes it (WAL), and never a reason
for a run to refuse to start.

Everything text that comes out (a run's options and report, a row's error) has anything
shaped like a Datadog key masked: a journal written by an earlier version may hold keys a
server echoed, and a reader has no keys to look for.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from worker.journal.errors import JournalError, journal_error
from worker.journal.location import JOURNAL_ENV
from worker.journal.lock import RunLock
from worker.journal.records import (
    CreatedRow,
    Operation,
    QueryKey,
    RunRecord,
    done_results,
)
from worker.journal.schema import UPGRADABLE, connect, schema_version
from worker.rows import RowKey
from worker.scrub import mask_key_shapes

LOOKUP = (
    "SELECT result, run_id FROM rows"
    " WHERE target_id = ? AND playlist_id = ? AND session_id = ? AND data_source = ?"
)
_RUNS = (
    "SELECT r.run_id, t.url, r.operation, r.shard, r.started_at, r.ended_at, r.exit_code,"
    " r.fresh, r.pid, r.info, r.report FROM runs r JOIN targets t ON t.id = r.target_id"
)


def _added_later(playlist: str, session: str, source: str) -> str:
    """SQL: a run after `this` (a row of `runs`) added the key given by the three SQL
    expressions."""
    return (
        "EXISTS (SELECT 1 FROM run_rows later JOIN runs lr ON lr.id = later.run"
        f" WHERE later.playlist_id = {playlist} AND later.session_id = {session}"
        f" AND later.data_source = {source} AND later.run > this.id"
        " AND lr.target_id = this.target_id AND later.result IN ('created', 'maybe_created'))"
    )


@dataclass(frozen=True, slots=True)
class CommonError:
    target: str
    http_status: int | None
    error: str | None
    rows: int


class History:
    """Questions to a journal over one read-only connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        """The journal's runs, newest first (at most `limit`)."""
        query = f"{_RUNS} ORDER BY r.id DESC LIMIT ?"
        return [_run(found) for found in self._conn.execute(query, (limit or -1,))]

    def run(self, run_id: str) -> RunRecord | None:
        found = self._conn.execute(f"{_RUNS} WHERE r.run_id = ?", (run_id,)).fetchone()
        return None if found is None else _run(found)

    def last_run(
        self, target: str | None, operation: Operation = Operation.RUN, *, created: bool = False
    ) -> RunRecord | None:
        """The newest run of `operation` against `target` (None: any target); `created`:
        the newest that added a session (what `undo --last` takes back: a run that
        aborted or skipped everything left nothing to undo)."""
        where = "r.operation = ?"
        values: list[object] = [operation.value]
        if target is not None:
            where += " AND t.url = ?"
            values.append(target)
        if created:
            where += (
                " AND EXISTS (SELECT 1 FROM run_rows rr WHERE rr.run = r.id"
                " AND rr.result IN ('created', 'maybe_created'))"
            )
        found = self._conn.execute(
            f"{_RUNS} WHERE {where} ORDER BY r.id DESC LIMIT 1", values
        ).fetchone()
        return None if found is None else _run(found)

    def created_by(self, run_id: str) -> Iterator[CreatedRow]:
        """What run `run_id` added (answered 201) or may have added (`maybe`), in key
        order, streamed: later runs of the same rows never change it."""
        yield from (
            CreatedRow((playlist, session, source), ts, bool(maybe), bool(later), bool(gone))
            for playlist, session, source, ts, maybe, later, gone in self._conn.execute(
                "SELECT rr.playlist_id, rr.session_id, rr.data_source, rr.ts,"
                " rr.result = 'maybe_created',"
                f" {_added_later('rr.playlist_id', 'rr.session_id', 'rr.data_source')},"
                " coalesce(now.result = 'removed', 0)"
                " FROM runs this JOIN run_rows rr ON rr.run = this.id"
                " LEFT JOIN rows now ON now.target_id = this.target_id"
                " AND now.playlist_id = rr.playlist_id AND now.session_id = rr.session_id"
                " AND now.data_source = rr.data_source"
                " WHERE this.run_id = ? AND rr.result IN ('created', 'maybe_created')"
                " ORDER BY rr.playlist_id, rr.session_id, rr.data_source",
                (run_id,),
            )
        )

    def added_later(self, run_id: str, key: RowKey) -> bool:
        """Whether a run after `run_id` in this journal, for its target, also added `key`."""
        found = self._conn.execute(
            f"SELECT {_added_later('?', '?', '?')} FROM runs this WHERE this.run_id = ?",
            (*key, run_id),
        ).fetchone()
        return bool(found and found[0])

    def removed_by(self, run_id: str) -> Iterator[RowKey]:
        """What run `run_id` (a remove or an undo) removed, in key order."""
        yield from self._conn.execute(
            "SELECT rr.playlist_id, rr.session_id, rr.data_source FROM runs this"
            " JOIN run_rows rr ON rr.run = this.id WHERE this.run_id = ? AND rr.result = ?"
            " ORDER BY rr.playlist_id, rr.session_id, rr.data_source",
            (run_id, "removed"),
        )

    def query_position(self, target: str, key: QueryKey) -> int | None:
        """The event time (ms) up to which every row the query found is committed."""
        return self._query_column("position_ts", target, key)

    def completed_to(self, target: str, key: QueryKey) -> int | None:
        """The `--to` (ms) of the last run of this query whose search completed."""
        return self._query_column("completed_to", target, key)

    def _query_column(self, column: str, target: str, key: QueryKey) -> int | None:
        found = self._conn.execute(
            f"SELECT q.{column} FROM queries q JOIN targets t ON t.id = q.target_id"
            " WHERE t.url = ? AND q.query = ? AND q.playlist_id = ?",
            (target, key.query, key.playlist_id),
        ).fetchone()
        return None if found is None else found[0]

    def counts_by_target(self) -> dict[str, dict[str, int]]:
        """How many rows each target holds with each result."""
        counts: dict[str, dict[str, int]] = {}
        for url, result, count in self._conn.execute(
            "SELECT t.url, r.result, count(*) FROM rows r JOIN targets t ON t.id = r.target_id"
            " GROUP BY t.url, r.result ORDER BY t.url"
        ):
            counts.setdefault(url, {})[result] = count
        return counts

    def common_errors(self, limit: int) -> list[CommonError]:
        """The `limit` most common errors of rows still failing, most common first."""
        return [
            CommonError(url, status, None if error is None else mask_key_shapes(error), count)
            for url, status, error, count in self._conn.execute(
                "SELECT t.url, r.http_status, r.error, count(*) AS n"
                " FROM rows r JOIN targets t ON t.id = r.target_id WHERE r.result = 'failed'"
                " GROUP BY t.url, r.http_status, r.error ORDER BY n DESC, t.url LIMIT ?",
                (limit,),
            )
        ]

    def done(self, target: str, operation: Operation = Operation.RUN) -> Callable[[RowKey], bool]:
        """Whether a row is done for `target` (a rerun of `operation` would skip it)."""
        found = self._conn.execute("SELECT id FROM targets WHERE url = ?", (target,)).fetchone()
        if found is None:
            return lambda _key: False
        target_id, results = found[0], done_results(operation)

        def done(key: RowKey) -> bool:
            row = self._conn.execute(LOOKUP, (target_id, *key)).fetchone()
            return row is not None and row[0] in results

        return done


def _run(found: tuple[object, ...]) -> RunRecord:
    run_id, url, operation, shard, started, ended, exit_code, fresh, pid, info, report = found
    assert isinstance(info, str)
    options = json.loads(mask_key_shapes(info))
    inputs = options.get("inputs") if isinstance(options, dict) else None
    return RunRecord(
        run_id=str(run_id),
        target=str(url),
        operation=str(operation),
        shard=None if shard is None else str(shard),
        started_at=float(started),  # type: ignore[arg-type]
        ended_at=None if ended is None else float(ended),  # type: ignore[arg-type]
        exit_code=None if exit_code is None else int(exit_code),  # type: ignore[call-overload]
        fresh=bool(fresh),
        pid=int(pid),  # type: ignore[call-overload]
        inputs=tuple(map(str, inputs)) if isinstance(inputs, list) else (),
        info=options if isinstance(options, dict) else {},
        report=None if report is None else json.loads(mask_key_shapes(str(report))),
    )


@contextlib.contextmanager
def reading(path: Path) -> Iterator[History]:
    """A read-only look at a journal. A journal of an older schema is first upgraded in
    place, under the run lock (so never under a run of this version).

    Raises `JournalError` for a journal that is absent or cannot be read."""
    if not path.is_file():
        raise JournalError(
            f"no journal at {path}: no run has used it yet; to read the one a run used, pass "
            f"its --journal PATH (--shard K/N for a shard's), or set {JOURNAL_ENV}"
        )
    conn = connect(path, read_only=True)
    if schema_version(conn) in UPGRADABLE:
        conn.close()
        _upgrade(path)
        conn = connect(path, read_only=True)
    try:
        yield History(conn)
    except sqlite3.Error as exc:
        raise journal_error(path, exc) from None
    finally:
        conn.close()


def _upgrade(path: Path) -> None:
    lock = RunLock(path)
    lock.acquire()
    try:
        connect(path).close()
    finally:
        lock.release()


@contextlib.contextmanager
def done_before(
    path: Path | None, target: str, operation: Operation = Operation.RUN
) -> Iterator[Callable[[RowKey], bool]]:
    """Whether the journal at `path` holds a row as done for `target`: what a real run
    would skip, for --dry-run. Read only, and the journal is not claimed, so a dry run
    may look while a run works. No journal (or None: --fresh, --no-journal), or none for
    this target, means nothing was done before.

    Raises `JournalError` for a journal that cannot be read."""
    if path is None or not path.is_file():
        yield lambda _key: False
        return
    with reading(path) as history:
        yield history.done(target, operation)
