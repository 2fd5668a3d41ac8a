"""`status`: what a journal holds: its runs, its rows' results, the most common errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.cli.types import positive_int, shard
from worker.examples import epilog


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "status",
        help="summarise a journal",
        epilog=epilog("status"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--journal", help="the journal to read (default: see docs/journal.md)")
    parser.add_argument("--shard", type=shard, help="read the default journal of shard K/N")
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=5,
        help="how many recent runs to show (default: %(default)s)",
    )
    parser.add_argument(
        "--errors",
        type=positive_int,
        default=5,
        help="how many of the most common errors to show (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from worker.status import status_command

    return status_command(
        Path(args.journal) if args.journal else None,
        args.shard,  # a Shard, parsed by the option's type
        runs=args.runs,
        errors=args.errors,
        as_json=args.json,
        out=sys.stdout,
    )
