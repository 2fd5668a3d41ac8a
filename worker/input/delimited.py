"""CSV and TSV inputs: the header decides the delimiter and the columns, and records are
read through `RecordLines`, which replays the lines an unclosed quote swallowed so that
one stray quote cannot take the good rows after it along (docs/input.md)."""

from __future__ import annotations

import csv
from collections.abc import Generator
from dataclasses import dataclass
from typing import Self

from worker.input.columns import COLUMNS, column_of
from worker.input.lines import HAS_NUL, MAX_LINE_BYTES, BadLine, Lines, ending_length
from worker.input.lines import not_utf8 as _not_utf8
from worker.input.lines import raw_fields as _raw_fields
from worker.input.options import InputError
from worker.rows import InvalidRow, Row
from worker.validation import FieldError, Validator, show

EARLY_ROWS = 100
"""The rows the early check reads (see `worker.input.stream`); `csv_rows` notes which of
them were read again after an unclosed quote, up to this many."""

_REPLAY_SLACK = 50_000
_DELIMITERS = (",", "\t", ";", "|")
_TSV_DELIMITERS = ("\t", ",", ";", "|")
_NOT_BLANK = str.maketrans("", "", "".join(_DELIMITERS))
_SHOWN_COLUMNS = 10


class RecordLines:
    """Decoded lines for `csv.reader`, which a bad line raises through (the reader then
    starts afresh on the next line); records that span lines are bounded in bytes.

    The raw lines of the current record are kept (they are consecutive, so numbered from
    its first), so that a record that cannot be completed is reported at its first line
    and `replay` hands out the lines it swallowed again, as records of their own. A line
    that could not be read is kept as its `BadLine`, raised again in its place."""

    __slots__ = (
        "_lines",
        "_record",
        "_record_bytes",
        "_replay",
        "_replay_line",
        "_replayed_count",
        "at_end",
        "replayed",
        "start",
    )

    def __init__(self, lines: Lines) -> None:
        self._lines = lines
        self._record: list[bytes | BadLine] = []
        self._record_bytes = 0
        self._replay: list[bytes | BadLine] = []  # the next line last
        self._replay_line = 0
        self._replayed_count = 0
        self.at_end = False
        self.replayed = False
        """Whether the current record starts on a line read again."""
        self.start = 0

    def start_record(self) -> int:
        """Marks the start of the next record; returns its line number."""
        self._record.clear()
        self._record_bytes = 0
        if self._replay:
            self.replayed = True
            self.start = self._replay_line
        else:
            self.replayed = False
            self.start = self._lines.lineno + 1
        return self.start

    def replay(self) -> list[BadLine]:
        """Hands out the current record's lines but its first again, before any new line.

        Lines whose quotes keep a field open however they are read (`a","`) would be read
        again and again, so past twice the lines read plus a slack they are returned as
        `BadLine`s instead: reading stays linear."""
        swallowed = self._record[1:]
        self.at_end = False
        self._replayed_count += len(swallowed)
        if self._replayed_count > 2 * self._lines.lineno + _REPLAY_SLACK:
            return [
                item
                if isinstance(item, BadLine)
                else BadLine(
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
        if self.at_end:
            return unclosed("is not closed before the end of the input")
        if len(self._record) == 1:
            return f"the row cannot be split into fields ({error}): check its quotes"
        return unclosed(f"runs on to line {self._current_line} and breaks there ({error})")

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
            if isinstance(item, BadLine):
                raise item.with_traceback(None)
            raw = item
        else:
            try:
                raw = self._lines.read()
            except BadLine as bad:
                self._record.append(bad)
                raise
            if not raw:
                self.at_end = True
                raise StopIteration
            self._record.append(raw)
        self._record_bytes += len(raw)
        if self._record_bytes > MAX_LINE_BYTES and self._record_bytes - ending_length(raw) > (
            MAX_LINE_BYTES
        ):
            raise BadLine(
                self.start,
                unclosed(f"runs on past {MAX_LINE_BYTES} bytes, to line {self._current_line}"),
                {},
            )
        try:
            text = raw.decode()
        except UnicodeDecodeError as error:
            raise BadLine(
                self._current_line, "the line " + _not_utf8(raw, error), _raw_fields(raw)
            ) from None
        if "\0" in text:
            raise BadLine(self._current_line, HAS_NUL, _raw_fields(raw))
        return text


def unclosed(what: str) -> str:
    """The reason given at the line where a quoted field that is never completed opens."""
    return (
        f"a quoted field opened on this line {what}: close its quote or remove it; "
        "the lines after it are read as rows of their own"
    )


@dataclass(frozen=True, slots=True)
class Header:
    """A CSV input's layout, from its first non-blank line."""

    delimiter: str
    columns: dict[str, int]
    width: int
    last_required: int
    """The index of the last required column: a shorter record lacks a required value."""

    def fields(self, record: list[str]) -> dict[str, object]:
        """The record's recognised values under their canonical names, for echoing."""
        return {
            column: record[index] for column, index in self.columns.items() if index < len(record)
        }


def read_header(
    lines: Lines, name: str, prefer_tab: bool, required: tuple[str, ...]
) -> Header | None:
    """The first line that is not blank, as a `Header` naming every `required` column;
    raises `InputError` saying what to rename otherwise. None for an input of no lines
    but blank ones: no rows, as an empty NDJSON input is (a nightly export with nothing
    new is no error)."""
    text = ""
    while not text.translate(_NOT_BLANK).strip():  # blank, or only delimiters and spaces
        try:
            raw = lines.read()
        except BadLine as bad:
            raise InputError(f"{name}: line {bad.line}: {bad.reason}") from None
        if not raw:
            return None
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
    candidates = []
    for delimiter in _TSV_DELIMITERS if prefer_tab else _DELIMITERS:
        names = next(csv.reader([text], delimiter=delimiter, skipinitialspace=True))
        columns: dict[str, int] = {}
        for index, column_name in enumerate(names):
            column = column_of(column_name)
            if column is None:
                continue
            if column in columns:
                raise InputError(
                    f"{name}: columns {names[columns[column]].strip()!r} and "
                    f"{column_name.strip()!r} both mean {column}: remove or rename one"
                )
            columns[column] = index
        if all(column in columns for column in required):
            last = max(columns[column] for column in required)
            return Header(delimiter, columns, len(names), last)
        candidates.append((len(columns), len(names), names, columns))
    _, _, names, columns = max(candidates, key=lambda candidate: candidate[:2])
    missing = ", ".join(column for column in required if column not in columns)
    found = ", ".join(show(column_name.strip()) for column_name in names[:_SHOWN_COLUMNS])
    if len(names) > _SHOWN_COLUMNS:
        found += f" and {len(names) - _SHOWN_COLUMNS} more"
    optional = ", ".join(column for column in COLUMNS if column not in required)
    looks_like_data = names and names[0].strip().isdigit()
    raise InputError(
        f"{name}: the header has no {missing} column (found {found}; needed "
        f"{', '.join(required)}, optionally {optional}): "
        + (
            f"the first line looks like data; add a header line such as {','.join(required)}"
            if looks_like_data
            else "rename the columns, or check the delimiter (, ; tab or |)"
        )
    )


def csv_rows(
    lines: Lines,
    name: str,
    validator: Validator,
    header: Header,
    reread_lines: set[int],
) -> Generator[Row | InvalidRow]:
    """The rows of a CSV input after its header. Adds to `reread_lines` the lines of the
    first rows read again after an unclosed quote, unless they too open a quote that is
    not closed (the early check leaves them out)."""
    feed = RecordLines(lines)
    records = csv.reader(feed, delimiter=header.delimiter, strict=True, skipinitialspace=True)
    to_row = validator.row
    width = header.width
    # An absent column reads the blank value appended to each record (`pad`).
    playlist, session, ts, data_source = (header.columns.get(c, width) for c in COLUMNS)
    pad = len(header.columns) < len(COLUMNS)
    while True:
        line = feed.start_record()
        try:
            record = next(records)
        except StopIteration:
            return
        except BadLine as bad:
            if bad.line == line:  # this line cannot be read, or the record is too long
                yield InvalidRow(name, bad.line, bad.reason, bad.fields)
                if bad.ends_input:
                    return
            else:  # it comes again, in its place
                yield InvalidRow(
                    name, line, unclosed(f"runs on to line {bad.line}, which cannot be read"), {}
                )
            if (yield from _read_again(feed, name)):
                return
            continue
        except csv.Error as error:
            yield InvalidRow(name, line, feed.unsplittable(error), {})
            if (yield from _read_again(feed, name)):
                return
            continue
        if feed.replayed and len(reread_lines) < EARLY_ROWS:
            reread_lines.add(line)
        reason = None
        if len(record) == width:
            if pad:
                record.append("")
            try:
                row = to_row(
                    record[playlist],
                    record[session],
                    record[ts],
                    record[data_source],
                    source=name,
                    line=line,
                )
            except FieldError as error:
                reason = str(error)
                del record[width:]
            else:
                yield row
                continue
        if any(value.strip() for value in record):
            yield _checked_record(record, header, reason, validator, source=name, line=line)


def _read_again(feed: RecordLines, name: str) -> Generator[InvalidRow, None, bool]:
    """Has the lines the current record swallowed read again, or past the budget yields
    them as invalid rows; returns whether reading stops (one of them ends the input)."""
    for bad in feed.replay():
        yield InvalidRow(name, bad.line, bad.reason, bad.fields)
        if bad.ends_input:
            return True
    return False


def _checked_record(
    record: list[str],
    header: Header,
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
    elif len(record) <= header.last_required:
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
