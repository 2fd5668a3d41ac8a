"""What `remove` and `verify` share: a command over rows like `run`'s (inputs, playlist,
target, pace), whose rows need no ts, and whose job is theirs."""

from __future__ import annotations

import argparse
import dataclasses
import os

from worker.bulk_removal import DEFAULT_BATCH_SIZE
from worker.cli.inputs import add_input_options
from worker.cli.playlist_options import add_playlist_options
from worker.cli.run import (
    MAX_CONCURRENCY,
    add_pace_options,
    add_target_options,
    config_from_args,
    refused,
)
from worker.cli.types import bounded_int
from worker.config import ConfigError
from worker.examples import epilog
from worker.jobs import Job

MAX_BATCH_SIZE = MAX_CONCURRENCY // 2
"""A batch's rows wait in workers, two batches' worth of them (`concurrency_for`)."""


def add_row_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, what: str
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name, help=what, epilog=epilog(name), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_input_options(parser)
    add_playlist_options(parser)
    add_target_options(parser)
    add_pace_options(parser)
    return parser


def add_batch_size_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--batch-size",
        type=bounded_int(MAX_BATCH_SIZE),
        default=DEFAULT_BATCH_SIZE,
        help="sessions per bulk removal at first; halved while the server refuses a batch "
        f"as too large, down to one DELETE per row (default: %(default)s, at most "
        f"{MAX_BATCH_SIZE})",
    )


def run_rows_job(args: argparse.Namespace, job: Job) -> int:
    """`job` over the rows the options name, as `run` would read and send them."""
    from worker.ingest import ingest

    try:
        config = config_from_args(args, os.environ)
    except ConfigError as exc:
        return refused(args, exc)
    config = dataclasses.replace(
        config, reader=dataclasses.replace(config.reader, ts_required=False), job=job
    )
    return ingest(config, os.environ)
