"""`validate INPUT...`: read and check the inputs as a run would; send nothing."""

from __future__ import annotations

import argparse
import sys

from worker.cli.inputs import add_input_options, reader_options
from worker.cli.types import non_negative_int
from worker.examples import epilog


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "validate",
        help="check the inputs; send nothing",
        epilog=epilog("validate"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(parser)
    parser.add_argument(
        "--max-errors",
        type=non_negative_int,
        default=20,
        help="errors to show; 0 for the counts alone (default: %(default)s)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from worker.check import check_inputs

    return check_inputs(args.inputs, reader_options(args), sys.stdout, max_errors=args.max_errors)
