"""`run INPUT...`: add every row of the inputs to its playlist.

The options become a `RunConfig` here, and every check that can be made before the first
request is made here, so a bad option exits 2 having sent nothing.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from worker.cli.inputs import add_input_options, reader_options
from worker.cli.playlist_options import (
    add_playlist_options,
    check_playlist_options,
    with_playlist,
)
from worker.cli.types import (
    agent_address,
    bounded_int,
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
    rate_limit,
    shard,
)
from worker.config import (
    ConfigError,
    PathRefused,
    base_url_for,
    check_transport,
    load_credentials,
)
from worker.examples import epilog
from worker.files import SameFile, UnsafeFile, check_distinct, unwritable
from worker.health import RetryPolicy
from worker.journal import default_journal_path, side_files
from worker.metrics import destination_from
from worker.pacer import DEFAULT_MAX_PAUSE_S
from worker.query.dates import (
    DEFAULT_FROM,
    DEFAULT_TO,
    FROM_LAST,
    DateError,
    parse_when,
    resolve,
)
from worker.query.slices import check_sharded
from worker.query.spec import QuerySpec
from worker.report import prepare_destination
from worker.settings import Outputs, Pace, QueryOptions, RunConfig, Target, Watch
from worker.shard import Shard

MAX_CONCURRENCY = 1024
"""Requests in flight at most: far above what any Datadog rate limit lets through at
once, and low enough that the buffers behind each one stay a few megabytes."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="add every row of the inputs to its playlist",
        epilog=epilog("run"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_options(run, required=False)
    add_playlist_options(run)
    add_query_options(run)
    add_target_options(run)
    add_pace_options(run)
    add_output_options(run)
    add_watch_options(run)
    run.set_defaults(handler=handle)


def add_query_options(parser: argparse.ArgumentParser) -> None:
    query = parser.add_argument_group(
        "rows from a RUM search (instead of inputs)", "see docs/query.md"
    )
    query.add_argument(
        "--query",
        metavar="QUERY",
        help="the sessions a RUM search finds, e.g. '@application.id:abc'",
    )
    query.add_argument(
        "--from",
        dest="from_",
        metavar="WHEN",
        help="start of the range: now-7d, an ISO date-time, epoch ms, or `last` (where the "
        "previous completed search of this query ended, less 4 h 30 min) (default: now-15m)",
    )
    query.add_argument("--to", metavar="WHEN", help="end of the range (default: now)")
    query.add_argument(
        "--first-from",
        metavar="WHEN",
        help="with --from last: where a first run, with no previous search, starts",
    )
    query.add_argument(
        "--any-session",
        action="store_true",
        help="send the query as given, not narrowed to completed sessions with a replay",
    )


def query_from_args(args: argparse.Namespace, *, journal: Path | None) -> QueryOptions | None:
    """The search, checked now (its dates against the clock, its query not empty), or
    None for a run over inputs. Raises `ConfigError`."""
    range_options = {
        "--from": args.from_,
        "--to": args.to,
        "--first-from": args.first_from,
        "--any-session": args.any_session or None,
    }
    if args.query is None:
        given = [name for name, value in range_options.items() if value is not None]
        if given:
            verb = "goes" if len(given) == 1 else "go"
            raise ConfigError(f"{', '.join(given)} {verb} with --query; give --query QUERY too")
        if not args.inputs:
            raise ConfigError("give the INPUT files to read, or --query QUERY to search")
        return None
    if args.inputs:
        shown = " ".join(args.inputs[:3]) + (" ..." if len(args.inputs) > 3 else "")
        raise ConfigError(
            f"give INPUT files or --query, not both: a run reads its rows from one place "
            f"(INPUT given: {shown}; a query such as * unquoted is expanded by the shell "
            "into file names: quote it, --query '*')"
        )
    if args.playlist is None and args.playlist_name is None:
        raise ConfigError(
            "--query needs --playlist ID (or --playlist-name NAME): the playlist its sessions go to"
        )
    options = query_options(args, journal=journal)
    if args.shard is not None:
        try:
            check_sharded(
                options.from_text, options.to_text, options.first_from, int(time.time() * 1000)
            )
        except DateError as exc:
            raise ConfigError(str(exc)) from None
    return options


def query_options(args: argparse.Namespace, *, journal: Path | None) -> QueryOptions:
    """`--query` and its range (`add_query_options`), checked against the clock now;
    `journal` None: there is none to resolve `--from last` from. Raises `ConfigError`."""
    options = QueryOptions(
        query=args.query,
        from_text=args.from_ or DEFAULT_FROM,
        to_text=args.to or DEFAULT_TO,
        first_from=args.first_from,
        any_session=args.any_session,
    )
    now = int(time.time() * 1000)
    try:
        # The query's own check; a playlist named is resolved later, so any id does.
        QuerySpec(options.query, args.playlist or 1, "check")
        if options.from_text.strip() == FROM_LAST:
            if journal is None:
                raise ConfigError(
                    "--from last needs the journal, which keeps where it ended: drop "
                    "--no-journal, or with --sandbox pass --journal PATH (a sandbox's own "
                    "target is gone with its run: give --from a time instead)"
                )
            parse_when(options.to_text, "--to", now)
            if options.first_from is not None:
                parse_when(options.first_from, "--first-from", now)
        else:
            if options.first_from is not None:
                raise ConfigError("--first-from goes with --from last")
            resolve(options.from_text, options.to_text, now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return options


def add_target_options(parser: argparse.ArgumentParser, *, sandbox: bool = True) -> None:
    """`sandbox` False: for a command whose target must outlive it (`undo`, `playlists`),
    no `--sandbox` (a sandbox started for one command holds nothing the next can use)."""
    target = parser.add_argument_group("where to send")
    target.add_argument("--site", help="Datadog site (default: $DD_SITE, else datadoghq.com)")
    target.add_argument("--base-url", help="send to this base URL instead of https://api.{site}")
    if sandbox:
        target.add_argument(
            "--sandbox", action="store_true", help="send to a built-in sandbox on loopback"
        )
        target.add_argument(
            "--sandbox-rate-limit",
            type=rate_limit,
            metavar="LIMIT/PERIOD",
            help="with --sandbox: the sandbox's limit, e.g. 100/2 (default: the sandbox's)",
        )
    else:
        parser.set_defaults(sandbox=False, sandbox_rate_limit=None)
    target.add_argument("--api-key-file", help="read the API key from this file")
    target.add_argument("--app-key-file", help="read the application key from this file")
    target.add_argument("--ca-bundle", help="CA bundle to verify TLS with (corporate proxies)")
    target.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="let the keys travel over plain http to a host that is not this machine "
        "(or through an http proxy that sees them); never needed for Datadog itself",
    )


def add_pace_options(parser: argparse.ArgumentParser) -> None:
    pace = parser.add_argument_group("pace and retries")
    pace.add_argument(
        "--concurrency",
        type=bounded_int(MAX_CONCURRENCY),
        default=16,
        help=f"requests in flight at most, up to {MAX_CONCURRENCY} (default: %(default)s)",
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
    add_wait_options(pace)
    pace.add_argument(
        "--grace",
        type=non_negative_float,
        default=30.0,
        help="seconds to let requests in flight finish after a signal (default: %(default)s)",
    )
    pace.add_argument(
        "--abort-failure-rate",
        type=fraction,
        default=0.95,
        help="abort when this share of the last --abort-window requests failed (%(default)s)",
    )
    pace.add_argument(
        "--abort-window",
        type=positive_int,
        default=200,
        help="requests the failure rate is measured over (default: %(default)s)",
    )


def add_wait_options(group: argparse._ArgumentGroup) -> None:
    """How long one request, one rate-limit pause, and no progress at all may last: `run`
    and `sessions`."""
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        help="seconds per request, connecting included (default: %(default)s)",
    )
    group.add_argument(
        "--max-stall",
        type=positive_float,
        default=900.0,
        help="abort after this many seconds without progress: no row finished, or no page "
        "of a search came (default: %(default)s)",
    )
    group.add_argument(
        "--max-pause",
        type=positive_float,
        default=DEFAULT_MAX_PAUSE_S,
        help="seconds one rate-limit pause lasts at most, whatever the server's hint "
        "(default: %(default)g)",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    track = parser.add_argument_group("journal and outputs")
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
    track.add_argument("--shard", type=shard, help="take only shard K (0-based) of N, as K/N")


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    watch = parser.add_argument_group("logs, progress and metrics")
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
        help="live progress display (default: on a terminal); with standard error not a "
        "terminal, drawn on the controlling terminal, if any, never into the log",
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
        type=agent_address,
        metavar="HOST:PORT",
        help="send metrics to a DogStatsD agent (default: $DD_DOGSTATSD_URL, else "
        "$DD_AGENT_HOST, if set)",
    )


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> RunConfig:
    """Raises `ConfigError`, saying what to fix, for anything wrong before the run."""
    try:
        # --statsd is checked as it is parsed; the environment's agent is checked here.
        agent = destination_from(args.statsd, environ)
        if agent is not None and args.statsd is None:
            agent.check_there()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    check_playlist_options(args)
    shard: Shard | None = args.shard
    journal = _journal_path(args, shard)
    check_outputs_apart(args.inputs, journal, report=args.report, dead_letter=args.dead_letter)
    # `remove` and `verify` take no query.
    query = query_from_args(args, journal=journal) if "query" in vars(args) else None
    # A dry run of a search, or of a playlist by name, must search: it needs the keys.
    needs_keys = not args.dry_run or query is not None or args.playlist_name is not None
    target = target_from_args(args, environ, needs_keys=needs_keys)
    outputs = Outputs(
        journal=journal,
        fresh=args.fresh,
        dead_letter=Path(args.dead_letter) if args.dead_letter else None,
        report=report_path(args.report),
    )
    return RunConfig(
        inputs=tuple(args.inputs),
        # Last of the checks: a name is resolved (or its playlist created) only once
        # every other option is known to be good.
        reader=with_playlist(args, reader_options(args), target),
        target=target,
        outputs=outputs,
        pace=pace_from_args(args),
        watch=watch_from_args(args),
        shard=shard,
        dry_run=args.dry_run,
        query=query,
        recorded_options=recorded_options(args),
    )


def target_from_args(
    args: argparse.Namespace, environ: Mapping[str, str], *, needs_keys: bool
) -> Target:
    sandbox_limit = None
    if args.sandbox_rate_limit:
        if not args.sandbox:
            raise ConfigError("--sandbox-rate-limit applies only with --sandbox")
        sandbox_limit = args.sandbox_rate_limit
    if args.sandbox:
        if args.base_url or args.site:
            raise ConfigError("--sandbox sends to a local sandbox; drop --site/--base-url")
        return Target(route=None, credentials=None, sandbox_rate_limit=sandbox_limit)
    from worker.client import tls_context

    base_url = base_url_for(args.site, args.base_url, environ)
    return Target(
        route=check_transport(base_url, environ, allow_insecure_http=args.allow_insecure_http),
        credentials=(
            load_credentials(args.api_key_file, args.app_key_file, environ) if needs_keys else None
        ),
        tls=tls_context(args.ca_bundle),
        access_options=_access_options(args),
    )


def _access_options(args: argparse.Namespace) -> tuple[str, ...]:
    options: list[str] = []
    for option, value in (
        ("--api-key-file", args.api_key_file),
        ("--app-key-file", args.app_key_file),
        ("--ca-bundle", args.ca_bundle),
    ):
        if value:
            options += [option, value]
    return (*options, "--allow-insecure-http") if args.allow_insecure_http else tuple(options)


def pace_from_args(args: argparse.Namespace) -> Pace:
    return Pace(
        concurrency=args.concurrency,
        rate=args.rate,
        timeout_s=args.timeout,
        grace_s=args.grace,
        max_stall_s=args.max_stall,
        max_pause_s=args.max_pause,
        policy=RetryPolicy(
            max_attempts=args.max_attempts,
            backoff_base_s=args.backoff_base,
            backoff_cap_s=args.backoff_cap,
            failure_window=args.abort_window,
            failure_rate_to_abort=args.abort_failure_rate,
        ),
    )


def watch_from_args(args: argparse.Namespace) -> Watch:
    return Watch(
        log_format=args.log_format,
        progress=args.progress,
        progress_interval_s=args.progress_interval,
        statsd=args.statsd,
    )


def check_outputs_apart(inputs: Sequence[str], journal: Path | None, **outputs: str | None) -> None:
    """Every input and output is a file of its own: a report written over an input, or a
    dead-letter file over the journal, would destroy what the run depends on. Checked
    before anything is read or sent; `outputs` are named by their option."""
    files: dict[str, str | Path | None] = {
        f"--{name.replace('_', '-')}": path for name, path in outputs.items()
    }
    if journal is not None:
        files["the journal"] = journal
        for side in side_files(journal):
            files[f"the journal's {side.name}"] = side
    for number, name in enumerate(inputs, start=1):
        files[f"input #{number}"] = name
    try:
        check_distinct(files)
    except SameFile as exc:
        raise PathRefused(str(exc), exc.options) from None


def _journal_path(args: argparse.Namespace, shard: Shard | None) -> Path | None:
    """None for `--no-journal`, and for `--sandbox` unless `--journal` names one: a
    sandbox's target is gone with its run, so the default journal would only fill with
    targets no run can send to again."""
    if args.no_journal or (args.sandbox and not args.journal):
        return None
    return Path(args.journal) if args.journal else default_journal_path(shard)


def report_path(option: str | None) -> Path | None:
    if option is None:
        return None
    path = Path(option)
    try:
        prepare_destination(path)
    except (OSError, UnsafeFile) as exc:
        raise PathRefused(str(unwritable("--report", option, exc)), ("--report",)) from None
    return path


def recorded_options(args: argparse.Namespace) -> dict[str, object]:
    """What the journal records of the options: never the key files' paths' contents,
    and nothing argparse added for itself."""
    return {
        key: value
        for key, value in vars(args).items()
        if not key.endswith("_file") and key not in ("handler", "command", "error")
    }


def handle(args: argparse.Namespace) -> int:
    from worker.ingest import ingest

    try:
        config = config_from_args(args, os.environ)
    except ConfigError as exc:
        return refused(args, exc)
    return ingest(config, os.environ)


def refused(args: argparse.Namespace, error: ConfigError) -> int:
    """Exit 2 for options that make no run. The `--report` is still written, of no rows
    and with the reason, unless its own path is at fault: it may be an input or the
    journal, which writing it would destroy."""
    from worker.ingest import cannot_start

    report = getattr(args, "report", None)
    if isinstance(error, PathRefused) and "--report" in error.options:
        report = None
    return cannot_start(watch_from_args(args), str(error), Path(report) if report else None)
