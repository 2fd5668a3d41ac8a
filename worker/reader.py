"""Inputs to rows: CSV/TSV and NDJSON files, plain or gzip, streamed with flat memory.

`open_inputs` checks everything that can stop a run before it returns (each input opens,
is text, has a known format and a usable CSV header, and its first rows are not nearly
all invalid), so a run fails with exit 2 before sending anything. The returned
`RowStream` then yields one `Row` or `InvalidRow` per data line, in input order, without
ever holding more than one line (and 100 look-ahead rows of stdin or a pipe) in memory.

Limits and decisions:

- A physical line, or a CSV record whose quoted field spans lines, may be at most
  `MAX_LINE_BYTES` (64 KiB, not counting its final `\n` or `\r\n`). A longer line
  becomes an `InvalidRow` and reading resumes at the next newline; the long line is
  never held whole.
- A CSV record that cannot be completed (an unclosed quote: it breaks on a later line,
  reaches the end of the input, runs past `MAX_LINE_BYTES`, or runs into a line that
  cannot be read) is one `InvalidRow` at the line where it opened, and the lines it
  swallowed are read again as rows of their own, with their own numbers: one stray quote
  must not take the good rows after it along. Lines whose quotes keep a field open
  however they are read (`a","`) would be read again and again, so reading again stops
  at twice the lines read plus `_REPLAY_SLACK`; past that, each line a quote swallowed is
  one `InvalidRow`.
- Compression is recognised by content (the gzip magic bytes), whatever the name says.
  A truncated or damaged gzip stream yields every row before the damage, then one
  `InvalidRow` saying where reading stopped; the rest of that input is not read (the run
  goes on with the other inputs and ends with exit 1). Finding the damage up front would
  mean decompressing every file twice.
- The first 8 KiB decide whether an input is text: a UTF-16 byte-order mark, or NULs at
  every other byte (UTF-16 without a mark), means UTF-16; NUL bytes together with other
  control bytes making up more than 1% of them, or with no newline, mean a binary file:
  `InputError`. Otherwise a line with a NUL byte or invalid UTF-8 is one `InvalidRow`,
  wherever it is (a damaged text file is still read).
- NDJSON keys are matched to columns as CSV headers are. An exact name beats an alias
  (an export may hold a `session` object beside `session_id`), but two aliases of one
  column without its exact name make the row invalid, as such a CSV header is refused.
- Early stop: when at least 90% of an input's first 100 data rows are invalid (and it has
  at least 10), it is the wrong file, delimiter or columns: `InputError` with the first
  errors, rather than a million identical messages. Rows read again after an unclosed
  quote are left out of that count: they follow from the one error reported at the quote.
- `-` is standard input (source `<stdin>`), allowed once; without a format option its
  format is sniffed (`{` first means NDJSON). Standard input and pipes are read once,
  keeping the checked rows; regular files are reopened, so any number of them can be
  given without holding a descriptor each.
- CSV: the delimiter is the first of `,` `\\t` `;` `|` (tab first for `.tsv`) under which
  the header names the required columns, which is what sniffing has to establish anyway.
  Rows that are empty or only delimiters and spaces (spreadsheet exports) are skipped,
  before the header as after it.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import gzip
import io
import json
import os
import re
import stat
import time
import zlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import chain, islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from worker.rows import InvalidRow, Row
from worker.validation import FieldError, Validator, json_text, show

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_LINE_BYTES = 64 * 1024
EARLY_ROWS = 100
EARLY_MIN_ROWS = 10
EARLY_INVALID_SHARE = 0.9
STDIN_NAME = "<stdin>"
FORMATS = ("csv", "ndjson")
REQUIRED_COLUMNS = ("playlist_id", "session_id", "ts")

_LIMIT = MAX_LINE_BYTES + 2  # room for a \r\n line ending
_SNIFF_BYTES = 8192
_REPLAY_SLACK = 50_000
_BINARY_SHARE = 0.01
_CONTROL_BYTES = bytes(set(range(32)) - set(b"\t\n\v\f\r"))
_BUFFER_BYTES = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_PIECE_BYTES = 2048
_SHOWN_ERRORS = 3
_DELIMITERS = (",", "\t", ";", "|")
_TSV_DELIMITERS = ("\t", ",", ";", "|")
_SHOWN_COLUMNS = 10
_ECHOED_BYTES = 200
_INT64_RANGE = range(-(2**63), 2**63)
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
_COLUMN_ALIASES = {
    "playlist_id": ("playlistid", "playlist"),
    "session_id": ("sessionid", "session"),
    "ts": ("ts", "timestamp", "timestampms", "tsms"),
    "data_source": ("datasource",),
}
_ALIAS_TO_COLUMN = {
    alias: column for column, aliases in _COLUMN_ALIASES.items() for alias in aliases
}
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_NOT_BLANK = str.maketrans("", "", "".join(_DELIMITERS))
_NDJSON_SHAPE = '{"playlist_id": 1234567, "session_id": "…", "ts": 1704067200000}'


class InputError(Exception):
    """Nothing can be read, or the run must not start (exit 2); the message says why."""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ReaderOptions:
    """How to read inputs: the format override and the defaults for fields rows omit."""

    fmt: str | None = None
    default_data_source: str = "rum"
    ts_unit: str = "ms"
    now_ms: Callable[[], int] = field(default=_wall_clock_ms)


class Readable(Protocol):
    """A binary source that can fill a buffer, such as a raw file or `io.BytesIO`."""

    def readinto(self, buffer: WriteableBuffer, /) -> int | None: ...


def _exact_loads(text: str | bytes) -> object:
    """JSON with numbers kept exact (no float, no NaN): for lines the fast parser could not
    take, and for every line when orjson is not installed."""
    return json.loads(text, parse_float=_exact_number, parse_constant=_reject_constant)


def _exact_number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond Decimal's range, such as 0e1000000000000000000
        raise ValueError(f"the number {text[:40]} is out of range") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


_loads: Callable[[bytes], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    _loads = _exact_loads


@functools.lru_cache(maxsize=4096)
def _column_of(name: str) -> str | None:
    """The canonical column a header or key names: case, spaces and punctuation ignored.

    Cached: NDJSON repeats the same few keys on every line."""
    return _ALIAS_TO_COLUMN.get(_NOT_ALNUM.sub("", name.lower()))


def _ending(raw: bytes) -> int:
    """The length of a line's ending (`\r\n`, `\n` or none), which the limit leaves out."""
    return 2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0


def _raw_fields(raw: bytes) -> dict[str, object]:
    """A line that could not be split into fields, shortened for echoing."""
    return {"raw": raw[:_ECHOED_BYTES].decode("utf-8", "replace").rstrip("\r\n")}


def _echo(value: object) -> object:
    """A JSON value as `InvalidRow.fields` holds it: what any JSON encoder can write back
    (orjson refuses Decimal and integers beyond 64 bits, so those become strings)."""
    if isinstance(value, Decimal) or (type(value) is int and value not in _INT64_RANGE):
        return str(value)
    if isinstance(value, list | dict):
        return json_text(value)[:_ECHOED_BYTES]
    return value


class _BadLine(Exception):
    """A line that cannot become a row; `fatal` when nothing after it can be read."""

    def __init__(
        self, line: int, reason: str, fields: dict[str, object], *, fatal: bool = False
    ) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason
        self.fields = fields
        self.fatal = fatal

    def invalid_row(self, source: str) -> InvalidRow:
        return InvalidRow(source, self.line, self.reason, self.fields)


class _Lines:
    """The physical lines of one input, bounded in length, with their 1-based numbers."""

    __slots__ = ("_readline", "lineno")

    def __init__(self, stream: io.BufferedIOBase) -> None:
        self._readline = stream.readline
        self.lineno = 0

    def read(self) -> bytes:
        """The next line with its newline; b"" at the end. Raises `_BadLine`."""
        try:
            raw = self._readline(_LIMIT)
            if raw:
                self.lineno += 1
                if len(raw) > MAX_LINE_BYTES and len(raw) - _ending(raw) > MAX_LINE_BYTES:
                    if raw[-1] != 0x0A:
                        while (rest := self._readline(_BUFFER_BYTES)) and rest[-1] != 0x0A:
                            pass
                    raise _BadLine(
                        self.lineno,
                        f"the line is longer than {MAX_LINE_BYTES} bytes and was skipped: "
                        "look for a missing newline or an unclosed quote",
                        _raw_fields(raw),
                    )
        except (EOFError, OSError, zlib.error) as error:
            raise _BadLine(
                self.lineno + 1,
                f"the input cannot be read after line {self.lineno} ({error}): it is "
                "truncated or damaged and the rest of it was not read; copy it again",
                {},
                fatal=True,
            ) from None
        return raw


class _CsvFeed:
    """Decoded lines for `csv.reader`, which a bad line raises through (the reader then
    starts afresh on the next line); records that span lines are bounded in bytes.

    The raw lines of the current record are kept (they are consecutive, so numbered from
    its first), so that a record that cannot be completed is reported at its first line
    and `replay` hands out the lines it swallowed again, as records of their own. A line
    that could not be read is kept as its `_BadLine`, raised again in its place."""

    __slots__ = (
        "_lines",
        "_record",
        "_record_bytes",
        "_replay",
        "_replay_line",
        "_replayed",
        "ended",
        "replayed",
        "start",
    )

    def __init__(self, lines: _Lines) -> None:
        self._lines = lines
        self._record: list[bytes | _BadLine] = []
        self._record_bytes = 0
        self._replay: list[bytes | _BadLine] = []  # the next line last
        self._replay_line = 0
        self._replayed = 0
        self.ended = False
        self.replayed = False
        self.start = 0

    def start_record(self) -> int:
        """Marks the start of the next record; returns its line number. `replayed` tells
        whether it starts on a line read again."""
        self._record.clear()
        self._record_bytes = 0
        if self._replay:
            self.replayed = True
            self.start = self._replay_line
        else:
            self.replayed = False
            self.start = self._lines.lineno + 1
        return self.start

    def replay(self) -> list[_BadLine]:
        """Hands out the current record's lines but its first again, before any new line.

        Past the budget (see the module's notes) they are returned as `_BadLine`s instead."""
        swallowed = self._record[1:]
        self.ended = False
        self._replayed += len(swallowed)
        if self._replayed > 2 * self._lines.lineno + _REPLAY_SLACK:
            return [
                item
                if isinstance(item, _BadLine)
                else _BadLine(
                    self.start + index,
                    f"the line is inside the quoted field opened on line {self.start}, which "
                    "is not closed, and was not read as a row (the quotes on many lines "
                    "around here do not pair up): fix the quotes",
                    _raw_fields(item),
                )
                for index, item in enumerate(swallowed, 1)
            ]
        self._replay.extend(reversed(swallowed))
        self._replay_line = self.start + 1
        return []

    def unsplittable(self, error: csv.Error) -> str:
        """Why the current record could not be split into fields (`csv.Error`)."""
        if self.ended:
            return _unclosed("is not closed before the end of the input")
        if len(self._record) == 1:
            return f"the row cannot be split into fields ({error}): check its quotes"
        return _unclosed(f"runs on to line {self._current_line} and breaks there ({error})")

    @property
    def _current_line(self) -> int:
        return self.start + len(self._record) - 1

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> str:
        if self._replay:
            item = self._replay.pop()
            self._replay_line += 1
            self._record.append(item)
            if isinstance(item, _BadLine):
                raise item.with_traceback(None)
            raw = item
        else:
            try:
                raw = self._lines.read()
            except _BadLine as bad:
                self._record.append(bad)
                raise
            if not raw:
                self.ended = True
                raise StopIteration
            self._record.append(raw)
        self._record_bytes += len(raw)
        if self._record_bytes > MAX_LINE_BYTES and self._record_bytes - _ending(raw) > (
            MAX_LINE_BYTES
        ):
            raise _BadLine(
                self.start,
                _unclosed(f"runs on past {MAX_LINE_BYTES} bytes, to line {self._current_line}"),
                {},
            )
        try:
            text = raw.decode()
        except UnicodeDecodeError as error:
            raise _BadLine(
                self._current_line, "the line " + _not_utf8(raw, error), _raw_fields(raw)
            ) from None
        if "\0" in text:
            raise _BadLine(self._current_line, _HAS_NUL, _raw_fields(raw))
        return text


def _unclosed(what: str) -> str:
    return (
        f"a quoted field opened on this line {what}: close its quote or remove it; "
        "the lines after it are read as rows of their own"
    )


_HAS_NUL = "the line contains a NUL byte: the file may be damaged or not UTF-8 text"


def _not_utf8(raw: bytes, error: UnicodeDecodeError) -> str:
    return (
        f"is not valid UTF-8 (byte 0x{raw[error.start]:02x} at byte "
        f"{error.start + 1}): save the file as UTF-8"
    )


@dataclass(frozen=True)
class _Header:
    """A CSV input's layout, from its first non-blank line."""

    delimiter: str
    columns: dict[str, int]
    width: int

    def fields(self, record: list[str]) -> dict[str, object]:
        """The record's recognised values under their canonical names, for echoing."""
        return {
            column: record[index] for column, index in self.columns.items() if index < len(record)
        }


def _header(lines: _Lines, name: str, prefer_tab: bool) -> _Header:
    text = ""
    while not text.translate(_NOT_BLANK).strip():  # blank, or only delimiters and spaces
        try:
            raw = lines.read()
        except _BadLine as bad:
            raise InputError(f"{name}: line {bad.line}: {bad.reason}") from None
        if not raw:
            raise InputError(
                f"{name}: no header line: a CSV input starts with the names of its columns, "
                "e.g. playlist_id,session_id,ts"
            )
        try:
            text = raw.decode()
        except UnicodeDecodeError as error:
            raise InputError(f"{name}: the header {_not_utf8(raw, error)}") from None
    if "\0" in text:
        raise InputError(
            f"{name}: the header contains a NUL byte: the file may be damaged or not UTF-8 text"
        )
    if "\r" in text.rstrip("\r\n"):
        raise InputError(
            f"{name}: lines end with a bare carriage return (old Mac style): "
            "convert the file to LF or CRLF line endings"
        )
    delimiters = _TSV_DELIMITERS if prefer_tab else _DELIMITERS
    candidates = []
    for delimiter in delimiters:
        names = next(csv.reader([text], delimiter=delimiter, skipinitialspace=True))
        columns: dict[str, int] = {}
        for index, column_name in enumerate(names):
            column = _column_of(column_name)
            if column is None:
                continue
            if column in columns:
                raise InputError(
                    f"{name}: columns {names[columns[column]].strip()!r} and "
                    f"{column_name.strip()!r} both mean {column}: remove or rename one"
                )
            columns[column] = index
        if all(column in columns for column in REQUIRED_COLUMNS):
            return _Header(delimiter, columns, len(names))
        candidates.append((len(columns), len(names), names, columns))
    _, _, names, columns = max(candidates, key=lambda candidate: candidate[:2])
    missing = ", ".join(column for column in REQUIRED_COLUMNS if column not in columns)
    found = ", ".join(show(column_name.strip()) for column_name in names[:_SHOWN_COLUMNS])
    if len(names) > _SHOWN_COLUMNS:
        found += f" and {len(names) - _SHOWN_COLUMNS} more"
    looks_like_data = names and names[0].strip().isdigit()
    raise InputError(
        f"{name}: the header has no {missing} column (found {found}; needed playlist_id, "
        "session_id, ts, optionally data_source): "
        + (
            "the first line looks like data; add a header line such as playlist_id,session_id,ts"
            if looks_like_data
            else "rename the columns, or check the delimiter (, ; tab or |)"
        )
    )


def _csv_rows(
    lines: _Lines, name: str, validator: Validator, prefer_tab: bool, aside: set[int]
) -> Iterator[Row | InvalidRow]:
    """The rows of a CSV input. Adds to `aside` the lines of the first rows read again after
    an unclosed quote (see `_early_stop`), unless they too open a quote that is not closed."""
    header = _header(lines, name, prefer_tab)
    feed = _CsvFeed(lines)
    records = csv.reader(feed, delimiter=header.delimiter, strict=True, skipinitialspace=True)
    to_row = validator.row
    width = header.width
    playlist, session, ts = (header.columns[column] for column in REQUIRED_COLUMNS)
    data_source = header.columns.get("data_source", -1)
    while True:
        line = feed.start_record()
        try:
            record = next(records)
        except StopIteration:
            return
        except _BadLine as bad:
            if bad.line == line:  # this line cannot be read, or the record is too long
                yield bad.invalid_row(name)
                if bad.fatal:
                    return
            else:  # it comes again, in its place
                yield InvalidRow(
                    name, line, _unclosed(f"runs on to line {bad.line}, which cannot be read"), {}
                )
            if (yield from _read_again(feed, name)):
                return
            continue
        except csv.Error as error:
            yield InvalidRow(name, line, feed.unsplittable(error), {})
            if (yield from _read_again(feed, name)):
                return
            continue
        if feed.replayed and len(aside) < EARLY_ROWS:
            aside.add(line)
        reason = None
        if len(record) == width:
            try:
                row = to_row(
                    record[playlist],
                    record[session],
                    record[ts],
                    record[data_source] if data_source >= 0 else None,
                    source=name,
                    line=line,
                )
            except FieldError as error:
                reason = str(error)
            else:
                yield row
                continue
        if any(value.strip() for value in record):
            yield _csv_slow(record, header, reason, validator, source=name, line=line)


def _read_again(feed: _CsvFeed, name: str) -> Generator[InvalidRow, None, bool]:
    """Has the lines the current record swallowed read again, or past the budget yields
    them as invalid rows; returns whether reading stops (one of them ends the input)."""
    for bad in feed.replay():
        yield bad.invalid_row(name)
        if bad.fatal:
            return True
    return False


def _csv_slow(
    record: list[str],
    header: _Header,
    reason: str | None,
    validator: Validator,
    *,
    source: str,
    line: int,
) -> Row | InvalidRow:
    """A non-blank record the fast path did not take: a wrong field count, or bad values."""
    fields = header.fields(record)
    if len(record) > header.width and any(value.strip() for value in record[header.width :]):
        reason = (
            f"the row has {len(record)} fields but the header has {header.width}: "
            f"quote values that contain {header.delimiter!r}"
        )
    elif len(record) <= max(header.columns[column] for column in REQUIRED_COLUMNS):
        count = f"{len(record)} field" + ("" if len(record) == 1 else "s")
        reason = (
            f"the row has {count} but the header has {header.width}: add the missing "
            f"values (an empty value still needs its {header.delimiter!r})"
        )
    elif reason is None:
        try:
            return validator.fields_row(fields, source=source, line=line)
        except FieldError as error:
            reason = str(error)
    return InvalidRow(source, line, reason, fields)


def _canonical_fields(obj: dict[str, object]) -> tuple[dict[str, object], str | None]:
    """The row's fields under their canonical names, and why they are ambiguous, if so.

    An exact name beats an alias: an export may hold, say, a `session` object beside
    `session_id`. Two aliases of one column without its exact name (`ts_ms` and
    `timestamp`) are not resolved: which one holds the value is anyone's guess, and a CSV
    header with both is refused too."""
    fields: dict[str, object] = {}
    keys: dict[str, str] = {}
    clashes: list[tuple[str, str, str]] = []
    for key, value in obj.items():
        column = _column_of(key)
        if column is None:
            continue
        taken = keys.get(column)
        if taken is None or key == column:
            fields[column] = value
            keys[column] = key
        elif taken != column:
            clashes.append((column, taken, key))
    problems = [
        f"keys {show(first)} and {show(second)} both mean {column}: keep one"
        for column, first, second in clashes
        if keys[column] != column
    ]
    return fields, "; ".join(problems) or None


def _echoed(fields: dict[str, object]) -> dict[str, object]:
    return {column: _echo(value) for column, value in fields.items()}


def _ndjson_rows(lines: _Lines, name: str, validator: Validator) -> Iterator[Row | InvalidRow]:
    to_row = validator.row
    while True:
        try:
            raw = lines.read()
        except _BadLine as bad:
            yield bad.invalid_row(name)
            if bad.fatal:
                return
            continue
        if not raw:
            return
        line = lines.lineno
        try:
            obj = _loads(raw)
        except (ValueError, RecursionError):
            if raw.isspace():
                continue
            obj = None
        if (
            type(obj) is dict
            and "playlist_id" in obj
            and "session_id" in obj
            and "ts" in obj
            and type(obj["playlist_id"]) is not float
            and type(obj["ts"]) is not float
        ):
            data_source = obj.get("data_source")
            if (
                data_source is None
                and len(obj) > 3
                and "data_source" not in obj
                and _names_a_source(tuple(obj))
            ):
                yield _object_row(obj, name, line, validator)  # by an alias such as dataSource
                continue
            try:
                row = to_row(
                    obj["playlist_id"],
                    obj["session_id"],
                    obj["ts"],
                    data_source,
                    source=name,
                    line=line,
                )
            except FieldError as error:
                yield InvalidRow(name, line, str(error), _echoed(_canonical_fields(obj)[0]))
            else:
                yield row
        else:
            yield _ndjson_slow(raw, name, line, validator)


@functools.lru_cache(maxsize=1024)
def _names_a_source(keys: tuple[str, ...]) -> bool:
    """Whether one of an object's keys is an alias of data_source. Cached by the keys in
    their order: most NDJSON inputs repeat one layout on every line."""
    return any(_column_of(key) == "data_source" for key in keys)


def _ndjson_slow(raw: bytes, name: str, line: int, validator: Validator) -> Row | InvalidRow:
    """A line the fast path could not take: exact numbers, aliases, or a precise error."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        return InvalidRow(name, line, "the line " + _not_utf8(raw, error), _raw_fields(raw))
    if "\0" in text:
        return InvalidRow(name, line, _HAS_NUL, _raw_fields(raw))
    try:
        # without its line ending: in an unterminated string, that would be the error
        obj = _exact_loads(text.rstrip("\r\n"))
    except (ValueError, RecursionError) as error:
        if isinstance(error, json.JSONDecodeError):
            # Some messages end in "at" and leave the position to str(error), which also
            # names line 1 of a one-line document: give the column alone.
            detail = f"{error.msg} column {error.colno}" if error.msg.endswith(" at") else error.msg
        else:
            detail = str(error)
        return InvalidRow(
            name,
            line,
            f"the line is not valid JSON ({detail}): each line must be one object such as "
            + _NDJSON_SHAPE,
            _raw_fields(raw),
        )
    if not isinstance(obj, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(obj), "a number"
        )
        return InvalidRow(
            name,
            line,
            f"the line is {kind}, not a JSON object: each line must be one object such as "
            + _NDJSON_SHAPE,
            _raw_fields(raw),
        )
    return _object_row(obj, name, line, validator)


def _object_row(
    obj: dict[str, object], name: str, line: int, validator: Validator
) -> Row | InvalidRow:
    """A parsed JSON object as a row, its keys matched to columns (`_canonical_fields`)."""
    fields, ambiguous = _canonical_fields(obj)
    if ambiguous is not None:
        return InvalidRow(name, line, ambiguous, _echoed(fields))
    try:
        return validator.fields_row(fields, source=name, line=line)
    except FieldError as error:
        return InvalidRow(name, line, str(error), _echoed(fields))


class _ByteCounter(io.RawIOBase):
    """Counts the raw (for gzip: compressed) bytes read, for the progress display.

    The buffer above reads only once it has handed out what it held, so `before_read`
    (for plain text) is told the count when it matches the rows parsed, to within a line.
    In between, the count runs up to a buffer (64 KiB) ahead: all of a small input."""

    def __init__(self, raw: Readable) -> None:
        super().__init__()
        self._raw = raw
        self.count = 0
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


class _GzipFeed:
    """The compressed bytes handed to gzip, counted as `_ByteCounter` counts raw ones.

    Gzip asks for more once it has decompressed and handed out what it was given, so
    `before_read` is told a count that matches the rows parsed; the raw count is up to a
    buffer ahead of it. Pieces of 2 KiB, not the 8 KiB gzip asks for: of a large piece it
    keeps back what would decompress past its 8 KiB output, about 4 KiB of bytes counted
    but not parsed. Small pieces seldom leave any, at no measurable cost."""

    def __init__(self, stream: io.BufferedReader[_ByteCounter]) -> None:
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


@dataclass(frozen=True)
class _Spec:
    """One input as named on the command line, and how to read it."""

    name: str
    path: str | None
    fmt: str | None
    prefer_tab: bool


def _spec(path: str, fmt: str | None) -> _Spec:
    if path == "-":
        return _Spec(STDIN_NAME, None, fmt, prefer_tab=False)
    stem, extension = os.path.splitext(path.lower())
    if extension == ".gz":
        extension = os.path.splitext(stem)[1]
    if fmt is None and extension not in _EXTENSIONS:
        raise InputError(
            f"{path}: cannot tell the format from the name: use a .csv, .tsv, .ndjson or "
            ".jsonl name (optionally .gz), or pass --format csv or --format ndjson"
        )
    return _Spec(path, path, fmt or _EXTENSIONS[extension], prefer_tab=extension == ".tsv")


class _Opened:
    """An open input: the byte counter under it, and the rows read from it. `parsed`
    counts the bytes as far as the parser has got (see `_ByteCounter`, `_GzipFeed`)."""

    def __init__(self, spec: _Spec, stdin: Readable | None, validator: Validator) -> None:
        self.size: int | None = None
        self.aside: set[int] = set()  # see `_csv_rows`
        self._owned: io.FileIO | None = None
        raw: Readable
        if stdin is not None and spec.path is None:
            raw = stdin
        else:
            try:
                # Unbuffered: the byte counter sits between the descriptor and the buffer.
                raw = self._owned = (
                    open(0, "rb", buffering=0, closefd=False)  # noqa: SIM115
                    if spec.path is None
                    else open(spec.path, "rb", buffering=0)  # noqa: SIM115
                )
            except OSError as error:
                raise InputError(
                    f"{spec.name}: cannot read it ({error.strerror}): "
                    "check the path and its permissions"
                ) from None
            status = os.fstat(self._owned.fileno())
            if spec.path is not None and stat.S_ISREG(status.st_mode):
                self.size = status.st_size
        self.counter = _ByteCounter(raw)
        self.parsed: _ByteCounter | _GzipFeed = self.counter
        self._buffered = io.BufferedReader(self.counter, _BUFFER_BYTES)
        self._stream: io.BufferedReader[_ByteCounter] | gzip.GzipFile = self._buffered
        try:
            head = self._sniff(spec.name)
        except BaseException:
            self.close()
            raise
        fmt = spec.fmt or ("ndjson" if head.lstrip()[:1] == b"{" else "csv")
        lines = _Lines(self._stream)
        self.rows = (
            _csv_rows(lines, spec.name, validator, spec.prefer_tab, self.aside)
            if fmt == "csv"
            else _ndjson_rows(lines, spec.name, validator)
        )

    def _sniff(self, name: str) -> bytes:
        """The first bytes of text, once gzip is recognised, a BOM skipped and binary refused."""
        try:
            if self._buffered.peek(2)[:2] == _GZIP_MAGIC:
                self.parsed = _GzipFeed(self._buffered)
                self._stream = gzip.GzipFile(fileobj=self.parsed, mode="rb")
            head = self._stream.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
            if head.startswith(codecs.BOM_UTF8):
                self._stream.read(len(codecs.BOM_UTF8))
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

    def close(self) -> None:
        """Closes what this input opened; a substituted stdin stays open."""
        self._stream.close()
        self._buffered.close()
        if self._owned is not None:
            self._owned.close()


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


def _early_stop(name: str, head: list[Row | InvalidRow], aside: set[int]) -> None:
    """Refuses an input whose first rows are nearly all invalid. Rows read again after an
    unclosed quote (`aside`) are not counted: the lines a long quoted field swallowed must
    not make one stray quote look like the wrong file."""
    head = [item for item in head if item.line not in aside]
    invalid = [item for item in head if isinstance(item, InvalidRow)]
    if len(head) >= EARLY_MIN_ROWS and len(invalid) >= EARLY_INVALID_SHARE * len(head):
        errors = "; ".join(f"line {item.line}: {item.reason}" for item in invalid[:_SHOWN_ERRORS])
        raise InputError(
            f"{name}: {len(invalid)} of the first {len(head)} rows are invalid, so this looks "
            f"like the wrong file, delimiter or columns. First errors: {errors}"
        )


@dataclass
class _Input:
    """A checked input. `held` stays open (stdin and pipes cannot be read twice) with the
    rows the check read; a regular file is reopened when its turn comes."""

    spec: _Spec
    size: int | None
    held: _Opened | None = None
    head: list[Row | InvalidRow] = field(default_factory=list)

    def close(self) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None


def _check(spec: _Spec, stdin: Readable | None, validator: Validator) -> _Input:
    """Opens the input and reads its header and first rows, to fail before any request."""
    opened = _Opened(spec, stdin, validator)
    try:
        head = list(islice(opened.rows, EARLY_ROWS))
        _early_stop(spec.name, head, opened.aside)
    except BaseException:
        opened.close()
        raise
    if opened.size is None:
        return _Input(spec, None, opened, head)
    opened.close()
    return _Input(spec, opened.size)


Owns = Callable[[Row | InvalidRow], bool]
"""Whether a row is this run's (`--shard`): only those are handed out, and counted."""


@dataclass(frozen=True, slots=True)
class Reading:
    """How far the reader has got, for the progress estimate (`RowStream.reading`).

    `rows` and `bytes_read` are not read at the same moment of parsing (the bytes run up
    to a buffer ahead), so the rows per byte come from `rows_then` and `bytes_then`,
    taken together when a buffer was last refilled."""

    rows: int
    """This run's rows handed out so far (with `owns`, the only ones handed out)."""
    bytes_read: int
    bytes_total: int | None
    ended: bool
    """Every input has been read to its end: `rows` is the run's total."""
    rows_then: int = 0
    bytes_then: int = 0


class RowStream:
    """The rows of all inputs in order; a context manager that closes every file.

    Iterate it once, from one thread at a time (it never touches an event loop, so a
    worker thread can pull chunks); `reading` may be called from any thread.
    """

    def __init__(
        self,
        inputs: list[_Input],
        stdin: Readable | None,
        validator: Validator,
        owns: Owns | None = None,
    ) -> None:
        self._inputs = inputs
        self._stdin = stdin
        self._validator = validator
        self._owns = owns
        sizes = [item.size for item in inputs]
        self._total = None if None in sizes else sum(size or 0 for size in sizes)
        self._rows: Generator[Row | InvalidRow] | None = None
        self._current: _ByteCounter | None = None
        self._done = 0
        # Written by the reading thread only; each is one assignment, so read whole.
        self._rows_read = 0
        self._then = (0, 0)
        self._ended = False

    @property
    def sources(self) -> tuple[str, ...]:
        """The inputs' source names in reading order, as rows carry them."""
        return tuple(item.spec.name for item in self._inputs)

    def __iter__(self) -> Iterator[Row | InvalidRow]:
        if self._rows is None:
            self._rows = self._all_rows()
        return self._rows

    def _all_rows(self) -> Generator[Row | InvalidRow]:
        owns = self._owns
        for item in self._inputs:
            opened = item.held or _Opened(item.spec, self._stdin, self._validator)
            head, item.head, item.held = item.head, [], None
            opened.parsed.before_read = self._parsed
            self._current = opened.counter
            try:
                for row in chain(head, opened.rows):
                    if owns is None or owns(row):
                        self._rows_read += 1
                        yield row
            finally:
                opened.close()
                self._current = None
                self._done += opened.counter.count if item.size is None else item.size
        self._ended = True

    def _parsed(self, count: int) -> None:
        """The rows and bytes read so far, at a moment when they match (`_Opened.parsed`)."""
        self._then = (self._rows_read, self._done + count)

    def reading(self) -> Reading:
        """How far the reader has got: rows, raw bytes (gzip inputs count compressed bytes
        on both sides, so the ratio is the progress), and whether it has reached the end."""
        ended = self._ended  # first: once it is seen set, the rows read are final
        rows_then, bytes_then = self._then
        current = self._current
        bytes_read = self._done + (current.count if current is not None else 0)
        return Reading(self._rows_read, bytes_read, self._total, ended, rows_then, bytes_then)

    def close(self) -> None:
        """Stops reading and closes every input."""
        if self._rows is not None:
            # ValueError: another thread is inside a read right now (an interrupted run);
            # the generator closes its file when that read returns and it is collected.
            with contextlib.suppress(ValueError):
                self._rows.close()
        for item in self._inputs:
            item.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_inputs(
    paths: Sequence[str],
    options: ReaderOptions,
    *,
    stdin: Readable | None = None,
    owns: Owns | None = None,
) -> RowStream:
    """Checks every input and returns their rows; raises `InputError` if the run must not
    start. `stdin` stands in for standard input (`-`) in tests and embeddings; `owns`
    (a `--shard` run's) keeps only this run's rows and invalid lines: the one place a
    shard's share is decided."""
    if not paths:
        raise InputError("no input given: name one or more files, or - for standard input")
    if list(paths).count("-") > 1:
        raise InputError("- (standard input) is given more than once: it can be read only once")
    if options.fmt is not None and options.fmt not in FORMATS:
        raise InputError(f"the format {options.fmt!r} is unknown: use csv or ndjson")
    try:
        validator = Validator(options.default_data_source, options.ts_unit, options.now_ms)
    except ValueError as error:
        raise InputError(str(error)) from None
    specs = [_spec(path, options.fmt) for path in paths]
    inputs: list[_Input] = []
    try:
        for spec in specs:
            inputs.append(_check(spec, stdin, validator))
    except BaseException:
        for item in inputs:
            item.close()
        raise
    return RowStream(inputs, stdin, validator, owns)
