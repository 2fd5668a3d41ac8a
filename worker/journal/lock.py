"""One run per journal, whatever name the journal is reached by.

The claim is an exclusive `flock` on the journal file itself, opened without following a
symlink: a lock belongs to the file (its device and inode), not to a path, so a second run
through another path to the same file (a symlinked folder, `..`, a bind mount) is refused
while the first holds it. The kernel drops it when the process dies, even by kill -9, so a
crash never leaves a stale lock behind, and no lock file sits beside the journal to be
planted or swapped.

Linux keeps `flock` apart from the POSIX locks SQLite takes on the same file, so the two
never meet. Closing any descriptor of a file drops this process's POSIX locks on it,
though: so a second claim from a process that already holds the journal is refused
before it opens anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from worker.files import SYMLINK, unsafe_because
from worker.journal.errors import JournalError, journal_error
from worker.journal.records import iso_time
from worker.journal.schema import connect, unsafe_journal

_HELD: set[tuple[int, int]] = set()
"""The journals this process holds, by (device, inode)."""


class RunLock:
    """An exclusive claim on a journal file for one run; creates the file (0600) if absent."""

    def __init__(self, journal: Path) -> None:
        self.journal = journal
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def acquire(self) -> None:
        """Raises `JournalError` if another run holds the journal, or it is a symlink or not
        a plain file, or cannot be created."""
        try:
            info = os.stat(self.journal)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise journal_error(self.journal, exc) from None
        else:
            if (info.st_dev, info.st_ino) in _HELD:
                raise self._in_use()
        try:
            fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise unsafe_journal(self.journal, SYMLINK) from None
            raise journal_error(self.journal, exc) from None
        try:
            info = os.fstat(fd)
            problem = unsafe_because(info, own=False, single_name=False)
            if problem is not None:
                raise unsafe_journal(self.journal, problem)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._in_use() from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._identity = (info.st_dev, info.st_ino)
        _HELD.add(self._identity)

    def _in_use(self) -> JournalError:
        return JournalError(
            f"journal {self.journal} is in use by another run{holder(self.journal)}; wait for "
            "it to finish, or give this run its own --journal PATH"
        )

    def release(self) -> None:
        """Let go; call only once every connection to the journal is closed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._identity is not None:
            _HELD.discard(self._identity)
            self._identity = None


def holder(journal: Path) -> str:
    """' (run ID, pid N, since T)' for the newest run of `journal` with no end recorded,
    as it recorded itself, or '' when that cannot be read."""
    try:
        conn = connect(journal, read_only=True)
    except JournalError:
        return ""
    try:
        conn.row_factory = sqlite3.Row
        found = conn.execute(
            "SELECT * FROM runs WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.Error:
        return ""
    finally:
        conn.close()
    if found is None:
        return ""
    run = f"run {found['run_id']}, " if "run_id" in found.keys() else ""  # noqa: SIM118
    return f" ({run}pid {found['pid']}, since {iso_time(found['started_at'])})"
