"""The options every subcommand that reads rows shares: the inputs and how to read them."""

from __future__ import annotations

import argparse

from worker.input import ReaderOptions
from worker.rows import DATA_SOURCES, DEFAULT_DATA_SOURCE
from worker.validation import parse_playlist_id


def add_input_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """`required` False: the rows may come from elsewhere (`run --query`)."""
    parser.add_argument(
        "inputs",
        nargs="+" if required else "*",
        metavar="INPUT",
        help="a CSV/NDJSON path, or - for stdin",
    )
    parser.add_argument(
        "--format", choices=("csv", "ndjson"), help="input format (default: from the file name)"
    )
    add_data_source_option(parser)
    parser.add_argument(
        "--ts-unit",
        choices=("ms", "s"),
        default="ms",
        help="unit of numeric ts values (default: %(default)s, as the API takes)",
    )


def add_data_source_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-source",
        choices=DATA_SOURCES,
        default=DEFAULT_DATA_SOURCE,
        help="for rows that do not name one (default: %(default)s)",
    )


def add_playlist_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--playlist",
        type=playlist_id,
        metavar="ID",
        help="the playlist of rows that name none; a row naming another one is invalid",
    )


def playlist_id(text: str) -> int:
    try:
        return parse_playlist_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def reader_options(args: argparse.Namespace, *, ts_required: bool = True) -> ReaderOptions:
    return ReaderOptions(
        fmt=args.format,
        default_data_source=args.data_source,
        ts_unit=args.ts_unit,
        default_playlist=getattr(args, "playlist", None),
        ts_required=ts_required,
    )
