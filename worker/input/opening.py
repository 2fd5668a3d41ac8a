"""Opening an input: its name and format, its bytes (gzip undone, a BOM skipped) and the
sniffing that refuses what is not UTF-8 text, before any row is read.

A checked regular file is closed until its turn and reopened where its check stopped, so
any number of files can be given without holding a descriptor each."""

from __future__ import annotations

import codecs
import gzip
import io
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from worker.input.options import InputError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

STDIN_NAME = "<stdin>"
FORMATS = ("csv", "ndjson")

_SNIFF_BYTES = 8192
_BINARY_SHARE = 0.01
_CONTROL_BYTES = bytes(set(range(32)) - set(b"\t\n\v\f\r"))
_BUFFER_BYTES = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_PIECE_BYTES = 2048
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}


class Readable(Protocol):
    """A binary source that can fill a buffer, such as a raw file or `io.BytesIO`."""

    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input as named on the command line, and how to read it."""

    name: str
    path: str | None
    """None for standard input."""
    fmt: str | None
    """None: sniffed from the content (standard input only)."""
    prefer_tab: bool


def input_spec(path: str, fmt: str | None) -> InputSpec:
    """The input named `path` (`-` is standard input), its format from `fmt` or its name."""
    if path == "-":
        return InputSpec(STDIN_NAME, None, fmt, prefer_tab=False)
    if os.path.isdir(path):
        raise InputError(
            f"{path}: is a directory: name the files in it instead, such as "
            f"{os.path.join(path, '*.csv')}"
        )
    stem, extension = os.path.splitext(path.lower())
    if extension == ".gz":
        extension = os.path.splitext(stem)[1]
    if fmt is None and extension not in _EXTENSIONS:
        raise InputError(
            f"{path}: cannot tell the format from the name: use a .csv, .tsv, .ndjson or "
            ".jsonl name (optionally .gz), or pass --format csv or --format ndjson"
        )
    return InputSpec(path, path, fmt or _EXTENSIONS[extension], prefer_tab=extension == ".tsv")


class ByteCounter(io.RawIOBase):
    """Counts the raw (for gzip: compressed) bytes read, for the progress display.

    The buffer above reads only once it has handed out what it held, so `before_read`
    (for plain text) is told the count when it matches the rows parsed, to within a line.
    In between, the count runs up to a buffer (64 KiB) ahead: all of a small input."""

    def __init__(self, raw: Readable, count: int = 0) -> None:
        super().__init__()
        self._raw = raw
        self.count = count
        self.before_read: Callable[[int], None] | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int | None:
        if self.before_read is not None:
            self.before_read(self.count)
        read = self._raw.readinto(buffer)
        if read:
            self.count += read
        return read

    def tell(self) -> int:
        """The raw position, from which the buffer above computes the one it has handed out."""
        return self.count


class GzipFeed:
    """The compressed bytes handed to gzip, counted as `ByteCounter` counts raw ones.

    Gzip asks for more once it has decompressed and handed out what it was given, so
    `before_read` is told a count that matches the rows parsed; the raw count is up to a
    buffer ahead of it. Pieces of 2 KiB, not the 8 KiB gzip asks for: of a large piece it
    keeps back what would decompress past its 8 KiB output, about 4 KiB of bytes counted
    but not parsed. Small pieces seldom leave any, at no measurable cost."""

    def __init__(self, stream: io.BufferedReader[ByteCounter]) -> None:
        self._stream = stream
        self.count = 0
        self.before_read: Callable[[int], None] | None = None

    def read(self, size: int = -1, /) -> bytes:
        if self.before_read is not None:
            self.before_read(self.count)
        data = self._stream.read(_GZIP_PIECE_BYTES if size < 0 else min(size, _GZIP_PIECE_BYTES))
        self.count += len(data)
        return data

    def seek(self, offset: int, /) -> int:
        """Gzip seeks only to go back, which a run never does (and a pipe could not)."""
        raise io.UnsupportedOperation("seek")


class ByteInput:
    """One input's text bytes (`stream`): opened, gzip undone, a UTF-8 BOM skipped, and
    refused with `InputError` when it cannot be read, is UTF-16 or is binary.

    `counter` counts the raw bytes read; `parsed` is the counter that is told, through
    `on_refill`, how far the parser has got (see `ByteCounter`, `GzipFeed`)."""

    def __init__(self, spec: InputSpec, stdin: Readable | None) -> None:
        self.spec = spec
        self.size: int | None = None
        """The raw size of a regular file: what the progress display counts up to."""
        self._on_refill: Callable[[int], None] | None = None
        self._file: io.FileIO | None = None
        self._gzipped = False
        self._paused_at: int | None = None
        raw = stdin if stdin is not None and spec.path is None else self._open_file()
        self._chain(raw)
        try:
            head = self._sniff()
        except BaseException:
            self.close()
            raise
        self.fmt = spec.fmt or ("ndjson" if head.lstrip()[:1] == b"{" else "csv")

    @property
    def can_pause(self) -> bool:
        """A regular file can be closed and reopened; standard input and pipes cannot."""
        return self.size is not None

    def _open_file(self) -> io.FileIO:
        try:
            # Unbuffered: the byte counter sits between the descriptor and the buffer.
            self._file = (
                open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115
                if self.spec.path is None
                else open(self.spec.path, "rb", buffering=0)  # noqa: SIM115
            )
        except OSError as error:
            raise InputError(
                f"{self.spec.name}: cannot read it ({error.strerror}): "
                "check the path and its permissions"
            ) from None
        status = os.fstat(self._file.fileno())
        if self.spec.path is not None and stat.S_ISREG(status.st_mode):
            self.size = status.st_size
        return self._file

    def _chain(self, raw: Readable, count: int = 0) -> None:
        self.counter = ByteCounter(raw, count)
        self.parsed: ByteCounter | GzipFeed = self.counter
        self._buffered = io.BufferedReader(self.counter, _BUFFER_BYTES)
        self.stream: io.BufferedReader[ByteCounter] | gzip.GzipFile = self._buffered
        if self._gzipped:
            self._undo_gzip()
        self.parsed.before_read = self._on_refill

    def _undo_gzip(self) -> None:
        self._gzipped = True
        self.parsed = GzipFeed(self._buffered)
        self.stream = gzip.GzipFile(fileobj=self.parsed, mode="rb")

    def _sniff(self) -> bytes:
        """The first bytes of text, once gzip is recognised, a BOM skipped and binary refused."""
        name = self.spec.name
        try:
            if self._buffered.peek(2)[:2] == _GZIP_MAGIC:
                self._undo_gzip()
            head = self.stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
            if head.startswith(codecs.BOM_UTF8):
                self.stream.read(len(codecs.BOM_UTF8))
                head = head[len(codecs.BOM_UTF8) :]
        except (EOFError, OSError, zlib.error) as error:
            raise InputError(
                f"{name}: cannot read it ({error}): the file is damaged; copy it again"
            ) from None
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _utf16(head):
            raise InputError(f"{name}: the file is UTF-16: save it as UTF-8")
        if _binary(head):
            raise InputError(
                f"{name}: the file is binary, not CSV or NDJSON text (it has NUL bytes): "
                "check that this is the right file, and export it as UTF-8 text"
            )
        return head

    @property
    def on_refill(self) -> Callable[[int], None] | None:
        return self._on_refill

    @on_refill.setter
    def on_refill(self, told: Callable[[int], None] | None) -> None:
        self._on_refill = self.parsed.before_read = told

    def pause(self) -> None:
        """Closes a regular file until `resume`, remembering how far its text was read."""
        self._paused_at = self.stream.tell()
        self._close_chain()

    def resume(self) -> io.BufferedIOBase:
        """The text stream again, where `pause` left it (a no-op for an input not paused)."""
        position, self._paused_at = self._paused_at, None
        if position is None:
            return self.stream
        raw = self._open_file()
        try:
            if self._gzipped:  # a compressed stream cannot be entered midway: decompress again
                self._chain(raw)
                while position and (skipped := len(self.stream.read(min(position, 1 << 16)))):
                    position -= skipped
            else:
                raw.seek(position)
                self._chain(raw, position)
        except (EOFError, OSError, zlib.error) as error:
            self.close()
            raise InputError(
                f"{self.spec.name}: cannot read it again ({error}): it changed during the run"
            ) from None
        return self.stream

    def _close_chain(self) -> None:
        self.stream.close()
        self._buffered.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Closes what this input opened; a substituted stdin stays open."""
        self._paused_at = None
        self._close_chain()


def _utf16(head: bytes) -> bool:
    """Text saved as UTF-16 without a byte-order mark: mostly ASCII, so every other byte is
    NUL, and the whole decodes to printable text."""
    even = len(head) // 2 * 2
    for high, codec in ((head[1:even:2], "utf-16-le"), (head[0:even:2], "utf-16-be")):
        if high and high.count(0) * 2 >= len(high):
            text = head[:even].decode(codec, "replace")
            shown = sum(char.isprintable() or char in "\t\n\r" for char in text)
            if "\0" not in text and shown >= 0.95 * len(text):
                return True
    return False


def _binary(head: bytes) -> bool:
    """NUL bytes in a head of no lines, or among many other control bytes: not a text file
    with a stray NUL (which is one invalid row)."""
    if b"\0" not in head:
        return False
    controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
    return b"\n" not in head or controls > _BINARY_SHARE * len(head)
