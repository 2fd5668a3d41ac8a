"""`verify INPUT...`: whether each row's session is in its playlist; exit 0 when every
one is, 1 when some are missing. Nothing is changed and no journal is kept."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.cli.row_commands import add_row_command, run_rows_job
from worker.cli.run import add_watch_options, check_outputs_apart, watch_from_args
from worker.cli.types import bounded_int
from worker.config import ConfigError
from worker.playlist_sessions import SESSION_PAGE_SIZE

MAX_PAGE_SIZE = 1000
"""The most sessions a page may ask for (`worker.api.MAX_PAGE_ITEMS`)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_row_command(commands, "verify", "check that each row's session is in its playlist")
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
    from worker.ingest import cannot_start
    from worker.jobs import VerifyJob

    try:
        check_outputs_apart(args.inputs, None, report=args.report, missing=args.missing)
    except ConfigError as exc:
        return cannot_start(watch_from_args(args), str(exc))
    job = VerifyJob(
        missing=Path(args.missing) if args.missing else None,
        extra=args.extra,
        page_size=args.page_size,
    )
    return run_rows_job(args, job)
