"""The rows of every input in order, checked before the run starts: `open_inputs` opens
each input, reads its header and first rows (the early check), and keeps those rows to
hand out first, so that no row is parsed twice; `RowStream` then streams the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from types import TracebackType
from typing import Self

from worker.input.columns import required_columns
from worker.input.delimited import EARLY_ROWS, csv_rows, read_header
from worker.input.lines import Lines
from worker.input.ndjson import ndjson_rows
from worker.input.opening import FORMATS, ByteCounter, ByteInput, InputSpec, Readable, input_spec
from worker.input.options import InputError, ReaderOptions
from worker.rows import InvalidRow, Row
from worker.validation import Validator

EARLY_MIN_ROWS = 10
EARLY_INVALID_SHARE = 0.9
_SHOWN_ERRORS = 3

RowFilter = Callable[[Row | InvalidRow], bool]
"""Whether a row is this run's (`--shard`): only those are handed out, and counted."""


class _CheckedInput:
    """An input whose header and first rows (`head`) were read by the check. A regular
    file is paused (closed) until its turn; standard input and pipes stay open."""

    def __init__(
        self,
        spec: InputSpec,
        stdin: Readable | None,
        validator: Validator,
        required: tuple[str, ...],
    ) -> None:
        self.bytes = ByteInput(spec, stdin)
        self.reread_lines: set[int] = set()
        try:
            self._lines = Lines(self.bytes.stream)
            self.rows: Generator[Row | InvalidRow]
            if self.bytes.fmt == "csv":
                header = read_header(self._lines, spec.name, spec.prefer_tab, required)
                self.rows = (
                    csv_rows(self._lines, spec.name, validator, header, self.reread_lines)
                    if header is not None
                    else _no_rows()  # nothing but blank lines
                )
            else:
                self.rows = ndjson_rows(self._lines, spec.name, validator)
            self.head: list[Row | InvalidRow] = list(islice(self.rows, EARLY_ROWS))
            _refuse_wrong_file(spec.name, self.head, self.reread_lines)
            self._read_to_end = len(self.head) < EARLY_ROWS  # the check read every row
            if self._read_to_end:
                self.bytes.close()
            elif self.bytes.can_pause:
                self.bytes.pause()
        except BaseException:
            self.bytes.close()
            raise

    def resume(self) -> None:
        """Reopens a paused input where its check stopped."""
        if not self._read_to_end:
            self._lines.continue_from(self.bytes.resume())

    def close(self) -> None:
        self.head = []
        self.rows.close()
        self.bytes.close()


def _no_rows() -> Generator[Row | InvalidRow]:
    yield from ()


def _refuse_wrong_file(name: str, head: list[Row | InvalidRow], reread_lines: set[int]) -> None:
    """Refuses an input whose first rows are nearly all invalid. Rows read again after an
    unclosed quote are not counted: the lines a long quoted field swallowed must not make
    one stray quote look like the wrong file."""
    counted = [item for item in head if item.line not in reread_lines]
    invalid = [item for item in counted if isinstance(item, InvalidRow)]
    if len(counted) >= EARLY_MIN_ROWS and len(invalid) >= EARLY_INVALID_SHARE * len(counted):
        errors = "; ".join(f"line {item.line}: {item.reason}" for item in invalid[:_SHOWN_ERRORS])
        raise InputError(
            f"{name}: {len(invalid)} of the first {len(counted)} rows are invalid, so this "
            f"looks like the wrong file, delimiter or columns. First errors: {errors}"
        )


@dataclass(frozen=True, slots=True)
class Reading:
    """How far the reader has got, for the progress estimate (`RowStream.reading`).

    `rows` and `bytes_read` are not read at the same moment of parsing (the bytes run up
    to a buffer ahead), so the rows per byte come from `rows_then` and `bytes_then`,
    taken together when a buffer was last refilled."""

    rows: int
    """This run's rows handed out so far (with a filter, the only ones handed out)."""
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

    def __init__(self, inputs: list[_CheckedInput], owns: RowFilter | None = None) -> None:
        self._inputs = inputs
        self._owns = owns
        sizes = [item.bytes.size for item in inputs]
        self._total = None if None in sizes else sum(size or 0 for size in sizes)
        self._rows: Generator[Row | InvalidRow] | None = None
        self._current: ByteCounter | None = None
        self._done = 0
        # Written by the reading thread only; each is one assignment, so read whole.
        self._rows_read = 0
        self._then = (0, 0)
        self._ended = False

    @property
    def sources(self) -> tuple[str, ...]:
        """The inputs' source names in reading order, as rows carry them."""
        return tuple(item.bytes.spec.name for item in self._inputs)

    def __iter__(self) -> Iterator[Row | InvalidRow]:
        if self._rows is None:
            self._rows = self._all_rows()
        return self._rows

    def _all_rows(self) -> Generator[Row | InvalidRow]:
        owns = self._owns
        for item in self._inputs:
            head, item.head = item.head, []
            try:
                item.resume()
                item.bytes.on_refill = self._parsed
                self._current = item.bytes.counter
                for row in chain(head, item.rows):
                    if owns is None or owns(row):
                        self._rows_read += 1
                        yield row
            finally:
                size = item.bytes.size
                self._done += item.bytes.counter.count if size is None else size
                item.close()
                self._current = None
        self._ended = True

    def _parsed(self, count: int) -> None:
        """The rows and bytes read so far, at a moment when they match (`ByteInput.parsed`)."""
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
            with contextlib.suppress(ValueError):
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
    owns: RowFilter | None = None,
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
        validator = Validator(
            options.default_data_source,
            options.ts_unit,
            options.now_ms,
            default_playlist=options.default_playlist,
            ts_required=options.ts_required,
        )
    except ValueError as error:
        raise InputError(str(error)) from None
    specs = [input_spec(path, options.fmt) for path in paths]
    required = required_columns(options)
    inputs: list[_CheckedInput] = []
    try:
        for spec in specs:
            inputs.append(_CheckedInput(spec, stdin, validator, required))
    except BaseException:
        for item in inputs:
            item.close()
        raise
    return RowStream(inputs, owns)
