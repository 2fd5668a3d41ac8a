"""The repeat check of a run without a journal: exact, and as small at a million rows as
at ten.

A set of every key seen grows by about 210 bytes a row (270 MB at a million rows). The
keys go instead to SQLite's private temporary database (opened with an empty name): a file
SQLite creates under a random name with `O_EXCL` in the temporary folder (`$SQLITE_TMPDIR`,
`$TMPDIR`, `/var/tmp`, `/tmp`) and unlinks at once, so nothing is left behind even by
kill -9, and nobody can open it by name. Only its page cache (`CACHE_KIB`) is in memory.
It is never committed: nothing has to survive the run, so nothing is synced either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from worker.rows import Outcome, Row

CACHE_KIB = 8192


class RepeatCheck:
    """`admit(row)`: True the first time a row's key is seen, False after."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        for pragma in (
            "temp_store = FILE",
            f"cache_size = -{CACHE_KIB}",
            "journal_mode = OFF",
            "synchronous = OFF",
        ):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.execute(
            "CREATE TABLE seen (playlist_id INTEGER NOT NULL, session_id TEXT NOT NULL,"
            " data_source TEXT NOT NULL, PRIMARY KEY (playlist_id, session_id, data_source))"
            " WITHOUT ROWID"
        )
        # One transaction for the whole run: a commit per row would cost a sync each.
        self._conn.execute("BEGIN")
        self._insert = "INSERT INTO seen VALUES (?, ?, ?) ON CONFLICT DO NOTHING"

    def admit(self, row: Row) -> bool:
        return self._conn.execute(self._insert, row.key).rowcount == 1

    def close(self) -> None:
        """Drop every key (the file is already gone); safe to call more than once."""
        self._conn.close()


class NoJournalLedger:
    """The `Ledger` of a run with `--no-journal`: repeats within the run are sent once, and
    nothing is kept after it."""

    def __init__(self) -> None:
        self._seen = RepeatCheck()

    def admit_all(self, rows: Sequence[Row]) -> list[bool]:
        return [self._seen.admit(row) for row in rows]

    def outcome(self, outcome: Outcome) -> None:
        pass

    def close(self, report: dict[str, object]) -> None:
        self._seen.close()
