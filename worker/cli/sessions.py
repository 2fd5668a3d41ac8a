"""`sessions --query QUERY`: write the rows a RUM query finds as NDJSON input for `run`.

Checked as `run --query` is, before anything is searched: the query not empty, the
range readable and forward, the output a file of its own.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from worker.cli.inputs import add_data_source_option, add_playlist_option
from worker.cli.run import (
    add_query_options,
    add_target_options,
    add_wait_options,
    query_options,
    target_from_args,
)
from worker.cli.types import positive_float, positive_int
from worker.config import ConfigError
from worker.examples import epilog
from worker.files import STDIO, UnsafeFile, check_distinct
from worker.health import RetryPolicy
from worker.journal import default_journal_path, side_files
from worker.query.dates import FROM_LAST
from worker.sessions import SessionsConfig
from worker.settings import Pace, Watch


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "sessions",
        help="write the rows a RUM query finds, as NDJSON input for run",
        epilog=epilog("sessions"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_query_options(parser)
    add_playlist_option(parser)
    add_data_source_option(parser)
    parser.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="write the rows to PATH (default: standard output)",
    )
    parser.add_argument(
        "--journal",
        help="with --from last: the journal a run keeps, read only (default: see docs/journal.md)",
    )
    add_target_options(parser)
    pace = parser.add_argument_group("pace")
    pace.add_argument(
        "--rate", type=positive_float, help="at most R searches per second, on top of the limits"
    )
    pace.add_argument(
        "--max-attempts",
        type=positive_int,
        default=5,
        help="attempts per page for retryable failures (default: %(default)s)",
    )
    add_wait_options(pace)
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="default: console on a terminal, json otherwise",
    )
    parser.set_defaults(handler=handle)


def config_from_args(args: argparse.Namespace) -> SessionsConfig:
    """Raises `ConfigError`, saying what to fix."""
    if args.query is None:
        raise ConfigError("sessions needs --query QUERY: the RUM search whose sessions to write")
    last = (args.from_ or "").strip() == FROM_LAST
    if last and args.playlist is None:
        raise ConfigError(
            "--from last needs --playlist ID: the journal keeps where a run of this query "
            "to a playlist ended"
        )
    if args.journal and not last:
        raise ConfigError("--journal goes with --from last (sessions writes no journal)")
    journal = Path(args.journal) if args.journal else default_journal_path(None)
    output = None if args.output in (None, STDIO) else Path(args.output)
    files: dict[str, Path | None] = {"-o": output}
    if last:
        files["the journal"] = journal
        files.update({f"the journal's {side.name}": side for side in side_files(journal)})
    try:
        check_distinct(files)
    except UnsafeFile as exc:
        raise ConfigError(str(exc)) from None
    return SessionsConfig(
        query=query_options(args, journal=journal),
        playlist_id=args.playlist,
        data_source=args.data_source,
        target=target_from_args(args, os.environ, needs_keys=True),
        output=output,
        journal=journal if last else None,
        pace=Pace(
            rate=args.rate,
            timeout_s=args.timeout,
            max_stall_s=args.max_stall,
            max_pause_s=args.max_pause,
            policy=RetryPolicy(max_attempts=args.max_attempts),
        ),
        log_format=args.log_format,
    )


def handle(args: argparse.Namespace) -> int:
    from worker.ingest import cannot_start
    from worker.sessions import write_sessions

    try:
        config = config_from_args(args)
    except ConfigError as exc:
        return cannot_start(Watch(log_format=args.log_format), str(exc))
    return write_sessions(config)
