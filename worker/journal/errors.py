"""Why a journal cannot be used, said once for every part of the journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class JournalError(Exception):
    """The journal cannot be used; the message says why and what to do next.

    `or_no_journal` ends the advice with `--no-journal`, which only `run` and `remove`
    take; a command without it (`status`) shows `without_no_journal`, so as not to
    suggest an option it would refuse."""

    def __init__(self, message: str, *, or_no_journal: bool = False) -> None:
        super().__init__(f"{message}, or --no-journal" if or_no_journal else message)
        self.without_no_journal = message


_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def journal_error(path: Path, exc: BaseException) -> JournalError:
    """Say what went wrong with the journal file and what to do next, without a traceback."""
    if isinstance(exc, sqlite3.Error) and exc.sqlite_errorname in _DAMAGED:
        return damaged(path, exc)
    cause = str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return JournalError(
        f"cannot use the journal at {path} ({cause}); fix the permissions of its folder or "
        "free some space and rerun (what was committed is kept), or pass --journal with "
        "another path",
        or_no_journal=True,
    )


def damaged(path: Path, cause: object) -> JournalError:
    return JournalError(
        f"journal {path} is damaged ({cause}); move it aside and rerun "
        "(rows already sent are then answered 'already present', nothing is added twice), "
        "or pass --journal with another path",
        or_no_journal=True,
    )
