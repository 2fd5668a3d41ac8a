"""The `validate` subcommand: read the inputs exactly as a run would, send nothing.

It shares `open_inputs` with the runner, so a file that validates cleanly is one a run
reads cleanly, and the exit status means the same: 0 all valid, 1 some rows invalid,
2 the run could not start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from worker.exits import EXIT_CANNOT_START, EXIT_OK, EXIT_ROWS_FAILED
from worker.input import InputError, Readable, ReaderOptions, open_inputs
from worker.rows import InvalidRow


def check_inputs(
    paths: Sequence[str],
    options: ReaderOptions,
    out: TextIO,
    *,
    max_errors: int = 20,
    stdin: Readable | None = None,
) -> int:
    """Prints the first `max_errors` invalid rows as `source:line: reason`, then the
    valid and invalid counts of each input; returns the exit status."""
    try:
        with open_inputs(paths, options, stdin=stdin) as rows:
            counts = {source: [0, 0] for source in rows.sources}
            invalid = 0
            for item in rows:
                if isinstance(item, InvalidRow):
                    counts[item.source][1] += 1
                    invalid += 1
                    if invalid <= max_errors:
                        print(f"{item.source}:{item.line}: {item.reason}", file=out)
                else:
                    counts[item.source][0] += 1
    except InputError as error:
        print(f"error: {error}", file=out)
        return EXIT_CANNOT_START
    if invalid > max_errors:
        if max_errors:
            print(f"... and {invalid - max_errors} more invalid rows", file=out)
        else:
            print(f"{invalid} invalid rows, not listed (--max-errors 0)", file=out)
    for source, (source_valid, source_invalid) in counts.items():
        print(f"{source}: {source_valid} valid, {source_invalid} invalid", file=out)
    if len(counts) > 1:
        valid = sum(source_valid for source_valid, _ in counts.values())
        print(f"total: {valid} valid, {invalid} invalid", file=out)
    return EXIT_ROWS_FAILED if invalid else EXIT_OK
