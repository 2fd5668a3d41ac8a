"""`remove INPUT...`: remove each row's session from its playlist, in bulk removals.

The options are `run`'s (the same inputs, target, pace, journal and outputs), plus the
batch size; rows need no ts.
"""

from __future__ import annotations

import argparse

from worker.cli.row_commands import add_batch_size_option, add_row_command, run_rows_job
from worker.cli.run import add_output_options, add_watch_options


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_row_command(commands, "remove", "remove each row's session from its playlist")
    add_batch_size_option(parser)
    add_output_options(parser)
    add_watch_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from worker.jobs import RemoveJob

    return run_rows_job(args, RemoveJob(args.batch_size))
