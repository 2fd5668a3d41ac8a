"""The tool's own files, made so that a neighbour on the same host cannot turn them against
their user.

One rule for every file the tool creates or rewrites (the report, the dead-letter file, the
outputs of `sessions -o` and `verify --missing`, the journal): a symlink planted at its
path is never followed, and an existing file the user does not own, or that is not a
plain file, is left untouched. A report is written whole or not at all (`write_atomic`);
a file written as the run goes is opened with `open_output`. `check_distinct` keeps one
option's file from being another's (a report over its own input, a dead-letter file over
the journal), through any alias: same path, symlink or hard link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

PathLike = str | os.PathLike[str]
STDIO = "-"
"""Standard input or output: not a file of its own, so never compared."""


class UnsafeFile(Exception):
    """A file the tool will not create, rewrite or share; the message says why and what to
    do next."""


class SameFile(UnsafeFile):
    """Two options name one file (`check_distinct`): `options` are the two."""

    def __init__(self, message: str, options: tuple[str, str]) -> None:
        super().__init__(message)
        self.options = options


def private_dir(path: PathLike) -> None:
    """Make the folder `path` and any missing parents private (0700, less the umask);
    folders that exist already are the user's and are left as they are."""
    folder = Path(path)
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another run made it meanwhile
            each.mkdir(mode=0o700)


def write_atomic(path: PathLike, data: bytes) -> None:
    """Put `data` at `path` whole or not at all: written to a new private file (0600)
    beside it, then renamed over it. A rename replaces a symlink rather than following
    it; an existing target we may not replace raises `UnsafeFile` and is left untouched.

    Raises `OSError` when the folder cannot be written."""
    target = Path(path)
    check_replaceable(target)
    private_dir(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_replaceable(path: PathLike) -> None:
    """Raises `UnsafeFile` unless `path` is free, or a plain file of this user's: what
    `write_atomic` may replace. For a check before a run sends anything, so a report that
    will be refused is refused at once."""
    target = Path(path)
    try:
        info = target.lstat()
    except FileNotFoundError:
        return
    _check_own_plain_file(target, info)


class OutputError(Exception):
    """An output an option names that cannot be written, said with the option and the fix."""


def unwritable(option: str, path: PathLike, exc: OSError | UnsafeFile) -> OutputError:
    """Why `option PATH` cannot be written, as every output's error says it."""
    if isinstance(exc, UnsafeFile):
        return OutputError(f"{option} {path}: {exc}")
    reason = exc.strerror or str(exc)
    return OutputError(
        f"{option} {path}: cannot write there ({reason}); name a file in a writable directory"
    )


def open_output_of(option: str, path: PathLike) -> int:
    """`open_output` for the file `option` names; raises `OutputError` saying which."""
    try:
        return open_output(path)
    except (OSError, UnsafeFile) as exc:
        raise unwritable(option, path, exc) from None


def open_output(path: PathLike) -> int:
    """A file descriptor for writing `path` from its start, for a file written as the run
    goes (so a kill loses nothing written): created private (0600) if absent, else emptied,
    but only if it is a plain file of this user's with no other name (a hard link). A
    symlink there is refused by the kernel (`O_NOFOLLOW`); a FIFO never blocks the open.

    Raises `UnsafeFile`, or `OSError` when the folder cannot be written."""
    target = Path(path)
    private_dir(target.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            _check_own_plain_file(target, target.lstat())
        raise
    try:
        problem = unsafe_because(os.fstat(fd))
        if problem is not None:
            raise UnsafeFile(f"{target} {problem}; name another file")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_own_plain_file(path: Path, info: os.stat_result) -> None:
    problem = unsafe_because(info, single_name=False)
    if problem is not None:
        raise UnsafeFile(f"{path} {problem}; name another file (or - for standard output)")


SYMLINK = "is a symlink, which the tool never writes through"


def unsafe_because(
    info: os.stat_result, *, own: bool = True, single_name: bool = True
) -> str | None:
    """Why the file `info` (from `lstat` or `fstat`) may not be written over, or None:
    a symlink, not a plain file, another user's (if `own`), or one with other names (a hard
    link, if `single_name`)."""
    if stat.S_ISLNK(info.st_mode):
        return SYMLINK
    if not stat.S_ISREG(info.st_mode):
        return "is not a plain file"
    if own and info.st_uid != os.geteuid():
        return f"belongs to another user (uid {info.st_uid}) and is left untouched"
    if single_name and info.st_nlink > 1:
        return "has other names (hard links), which emptying it would empty too"
    return None


def check_distinct(files: Mapping[str, PathLike | None]) -> None:
    """Raises `SameFile` naming both if two of `files` (option name, such as "--report"
    or "input #2", to its path; None and "-" are left out) are one file: the same path, a
    symlink to it, or a hard link of it. Paths that exist are compared by identity (device
    and inode), all by their resolved path, so a file a run will create is compared too.
    Call it before anything is read or sent."""
    seen: dict[object, tuple[str, PathLike]] = {}
    for option, value in files.items():
        if value is None or os.fspath(value) == STDIO:
            continue
        path = Path(value)
        names: list[object] = [("path", os.path.realpath(path))]
        with contextlib.suppress(OSError):
            info = path.stat()
            names.append(("inode", info.st_dev, info.st_ino))
        for name in names:
            if name in seen and seen[name][0] != option:
                other, other_value = seen[name]
                raise SameFile(
                    f"{other} {os.fspath(other_value)} and {option} {os.fspath(value)} are "
                    "one file; give each a file of its own",
                    (other, option),
                )
            seen[name] = (option, value)
