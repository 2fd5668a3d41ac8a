"""The command line: `rum-playlist-ingest run | validate | sandbox | status`.

Names, options and exit codes follow `cli-contract.md`; scripts depend on them. Every
option is checked here, before anything is read or sent, so a bad option exits 2 at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from worker import __version__, aio
from worker.examples import epilog
from worker.rows import DATA_SOURCES, DEFAULT_DATA_SOURCE
from worker.sandbox import cli as sandbox_cli


def _bounded(kind: Callable[[str], float], low: float, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value >= low:  # also rejects NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def positive_int(text: str) -> int:
    return int(_bounded(int, 1, "a whole number of 1 or more")(text))


def positive_float(text: str) -> float:
    what = "a positive finite number"
    value = _bounded(float, 0, what)(text)
    if value == 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def non_negative_int(text: str) -> int:
    return int(_bounded(int, 0, "a whole number of 0 or more")(text))


def non_negative_float(text: str) -> float:
    return _bounded(float, 0, "a number of 0 or more")(text)


def share(text: str) -> float:
    value = _bounded(float, 0, "a share between 0 and 1")(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


def _add_input_options(parser: argparse.ArgumentParser) -> None:
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


def _add_run_options(run: argparse.ArgumentParser) -> None:
    target = run.add_argument_group("where to send")
    target.add_argument("--site", help="Datadog site (default: $DD_SITE, else datadoghq.com)")
    target.add_argument("--base-url", help="send to this base URL instead of https://api.{site}")
    target.add_argument(
        "--sandbox", action="store_true", help="send to a built-in sandbox on loopback"
    )
    target.add_argument(
        "--sandbox-rate-limit",
        metavar="LIMIT/PERIOD",
        help="with --sandbox: the sandbox's limit, e.g. 100/2 (default: the sandbox's)",
    )
    target.add_argument("--api-key-file", help="read the API key from this file")
    target.add_argument("--app-key-file", help="read the application key from this file")
    target.add_argument("--ca-bundle", help="CA bundle to verify TLS with (corporate proxies)")

    pace = run.add_argument_group("pace and retries")
    pace.add_argument(
        "--concurrency",
        type=positive_int,
        default=16,
        help="requests in flight at most (default: %(default)s)",
    )
    pace.add_argument(
        "--rate",
        type=positive_float,
        help="at most R requests per second, on top of the server's limits",
    )
    pace.add_argument(
        "--max-attempts",
        type=positive_int,
        default=5,
        help="attempts per row for retryable failures (default: %(default)s)",
    )
    pace.add_argument(
        "--backoff-base",
        type=positive_float,
        default=0.25,
        help="seconds: retry n waits a random time up to base * 2^(n-1) (default: %(default)s)",
    )
    pace.add_argument(
        "--backoff-cap",
        type=positive_float,
        default=30.0,
        help="seconds a retry waits at most (default: %(default)s)",
    )
    pace.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        help="seconds per request, connecting included (default: %(default)s)",
    )
    pace.add_argument(
        "--grace",
        type=non_negative_float,
        default=30.0,
        help="seconds to let requests in flight finish after SIGINT/SIGTERM (default: %(default)s)",
    )
    pace.add_argument(
        "--max-stall",
        type=positive_float,
        default=900.0,
        help="abort after this many seconds without a finished row (default: %(default)s)",
    )
    pace.add_argument(
        "--abort-failure-rate",
        type=share,
        default=0.95,
        help="abort when this share of the last --abort-window requests failed (%(default)s)",
    )
    pace.add_argument(
        "--abort-window",
        type=positive_int,
        default=200,
        help="requests the failure rate is measured over (default: %(default)s)",
    )

    track = run.add_argument_group("journal and outputs")
    journal = track.add_mutually_exclusive_group()
    journal.add_argument("--journal", help="journal file (default: see docs/journal.md)")
    journal.add_argument("--no-journal", action="store_true", help="keep no journal")
    track.add_argument(
        "--fresh", action="store_true", help="ignore what the journal holds; send every row"
    )
    track.add_argument("--dead-letter", help="write rows that failed for good to this NDJSON file")
    track.add_argument("--report", help="write the final report to this JSON file")
    track.add_argument(
        "--dry-run", action="store_true", help="validate and show what would be sent; send nothing"
    )
    track.add_argument("--shard", help="take only shard K (0-based) of N, as K/N")

    watch = run.add_argument_group("logs, progress and metrics")
    watch.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="default: console on a terminal, json otherwise",
    )
    progress = watch.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="live progress display (default: on a terminal)",
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false")
    watch.add_argument(
        "--progress-interval",
        type=positive_float,
        default=5.0,
        help="seconds between progress log events off a terminal (default: %(default)s)",
    )
    watch.add_argument(
        "--statsd",
        metavar="HOST:PORT",
        help="send metrics to a DogStatsD agent (default: from $DD_AGENT_HOST if set)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rum-playlist-ingest",
        description="Add Datadog RUM session replays to playlists in bulk.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            epilog=epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = add_command("run", "add every row of the inputs to its playlist")
    _add_input_options(run)
    _add_run_options(run)

    validate = add_command("validate", "check the inputs; send nothing")
    _add_input_options(validate)
    validate.add_argument(
        "--max-errors",
        type=non_negative_int,
        default=20,
        help="errors to show; 0 for the counts alone (default: %(default)s)",
    )

    sandbox = add_command("sandbox", "serve a local Datadog-compatible API")
    sandbox_cli.add_arguments(sandbox)
    sandbox.set_defaults(error=sandbox.error)  # a bad value shows the sandbox's usage

    from worker import status

    status.add_arguments(add_command("status", "summarise a journal"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from worker.ingest import ingest

        return ingest(args, os.environ)
    if args.command == "validate":
        from worker.check import check_inputs
        from worker.reader import ReaderOptions

        options = ReaderOptions(
            fmt=args.format, default_data_source=args.data_source, ts_unit=args.ts_unit
        )
        return check_inputs(args.inputs, options, sys.stdout, max_errors=args.max_errors)
    if args.command == "sandbox":
        try:
            config = sandbox_cli.config_from_args(args)
        except ValueError as exc:
            args.error(str(exc))
        return aio.run(sandbox_cli.serve(config, args.host, args.port))
    from worker import status

    return status.status_command(args, sys.stdout)
