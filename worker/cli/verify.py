"""`verify INPUT...`: whether each row's session is in its playlist; exit 0 when every
one is, 1 when some are missing. Nothing is changed and no journal is kept."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from worker.cli.inputs import add_input_options
from worker.cli.playlist_options import add_playlist_options
from worker.cli.run import (
    add_pace_options,
    add_target_options,
    add_watch_options,
    check_outputs_apart,
    config_from_args,
    watch_from_args,
)
from worker.cli.types import bounded_int
from worker.config import ConfigError
from worker.examples import epilog
from worker.playlist_sessions import SESSION_PAGE_SIZE

MAX_PAGE_SIZE = 1000
"""The most sessions a page may ask for (`worker.api.MAX_PAGE_ITEMS`)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "verify",
        help="check that each row's session is in its playlist",
        epilog=epilog("verify"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(parser)
    add_playlist_options(parser)
    add_target_options(parser)
    add_pace_options(parser)
    checks = parser.add_argument_group("what to report")
    checks.add_argument(
        "--missing", metavar="PATH", help="write the missing rows here, as NDJSON `run` takes"
    )
    checks.add_argument(
        "--extra",
        action="store_true",
        help="print (NDJSON, on stdout) the sessions of the playlists that no input names",
    )
    checks.add_argument(
        "--page-size",
        type=bounded_int(MAX_PAGE_SIZE),
        default=SESSION_PAGE_SIZE,
        help="sessions asked per page of a playlist's listing (default: %(default)s)",
    )
    checks.add_argument("--report", help="write the final report to this JSON file")
    add_watch_options(parser)
    # What `run`'s configuration reads, fixed for a check that changes nothing.
    parser.set_defaults(
        handler=handle,
        journal=None,
        no_journal=True,
        fresh=False,
        dead_letter=None,
        dry_run=False,
        shard=None,
    )


def handle(args: argparse.Namespace) -> int:
    from worker.ingest import cannot_start, ingest
    from worker.jobs import VerifyJob

    try:
        check_outputs_apart(args.inputs, None, report=args.report, missing=args.missing)
        config = config_from_args(args, os.environ)
    except ConfigError as exc:
        return cannot_start(watch_from_args(args), str(exc))
    config = dataclasses.replace(
        config,
        reader=dataclasses.replace(config.reader, ts_required=False),
        job=VerifyJob(
            missing=Path(args.missing) if args.missing else None,
            extra=args.extra,
            page_size=args.page_size,
        ),
    )
    return ingest(config, os.environ)
