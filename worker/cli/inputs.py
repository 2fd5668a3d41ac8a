"""The options every subcommand that reads rows shares: the inputs and how to read them."""

from __future__ import annotations

import argparse

from worker.input import ReaderOptions
from worker.rows import DATA_SOURCES, DEFAULT_DATA_SOURCE


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="a CSV/NDJSON path, or - for stdin"
    )
    parser.add_argument(
        "--format", choices=("csv", "ndjson"), help="input format (default: from the file name)"
    )
    parser.add_argument(
        "--data-source",
        choices=DATA_SOURCES,
        default=DEFAULT_DATA_SOURCE,
        help="for rows that do not name one (default: %(default)s)",
    )
    parser.add_argument(
        "--ts-unit",
        choices=("ms", "s"),
        default="ms",
        help="unit of numeric ts values (default: %(default)s, as the API takes)",
    )


def reader_options(args: argparse.Namespace) -> ReaderOptions:
    return ReaderOptions(
        fmt=args.format, default_data_source=args.data_source, ts_unit=args.ts_unit
    )
