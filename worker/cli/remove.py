"""`remove INPUT...`: remove each row's session from its playlist, in bulk removals.

The options are `run`'s (the same inputs, target, pace, journal and outputs), plus the
batch size; rows need no ts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from worker.bulk_removal import DEFAULT_BATCH_SIZE
from worker.cli.inputs import add_input_options
from worker.cli.playlist_options import add_playlist_options
from worker.cli.run import (
    MAX_CONCURRENCY,
    add_output_options,
    add_pace_options,
    add_target_options,
    add_watch_options,
    config_from_args,
    watch_from_args,
)
from worker.cli.types import bounded_int
from worker.config import ConfigError
from worker.examples import epilog

MAX_BATCH_SIZE = MAX_CONCURRENCY // 2
"""A batch's rows wait in workers, two batches' worth of them (`concurrency_for`)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "remove",
        help="remove each row's session from its playlist",
        epilog=epilog("remove"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(parser)
    add_playlist_options(parser)
    add_target_options(parser)
    add_pace_options(parser)
    parser.add_argument(
        "--batch-size",
        type=bounded_int(MAX_BATCH_SIZE),
        default=DEFAULT_BATCH_SIZE,
        help="sessions per bulk removal at first; halved while the server refuses a batch "
        f"as too large, down to one DELETE per row (default: %(default)s, at most "
        f"{MAX_BATCH_SIZE})",
    )
    add_output_options(parser)
    add_watch_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from worker.ingest import cannot_start, ingest
    from worker.jobs import RemoveJob

    try:
        config = config_from_args(args, os.environ)
    except ConfigError as exc:
        return cannot_start(watch_from_args(args), str(exc))
    config = dataclasses.replace(
        config,
        reader=dataclasses.replace(config.reader, ts_required=False),
        job=RemoveJob(args.batch_size),
    )
    return ingest(config, os.environ)
