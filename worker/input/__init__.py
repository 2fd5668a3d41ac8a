"""Inputs to rows: CSV/TSV and NDJSON files, plain or gzip, streamed with flat memory, and
the tool's NDJSON rows as output. The rules every input follows are in docs/input.md.

`open_inputs` checks everything that can stop a run before it returns, so a run fails
with exit 2 before sending anything; the `RowStream` it returns yields one `Row` or
`InvalidRow` per data line, in input order."""

from worker.input.lines import MAX_LINE_BYTES
from worker.input.ndjson import format_row
from worker.input.opening import Readable
from worker.input.options import InputError, ReaderOptions
from worker.input.stream import Reading, RowFilter, RowStream, open_inputs

__all__ = [
    "MAX_LINE_BYTES",
    "InputError",
    "Readable",
    "ReaderOptions",
    "Reading",
    "RowFilter",
    "RowStream",
    "format_row",
    "open_inputs",
]
