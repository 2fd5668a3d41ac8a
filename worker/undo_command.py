"""`undo`: find the run in its journal, check the target, plan, then remove as `remove`
does (the same pipeline, pacing, journal, report and exit codes)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from worker import logs
from worker.cli.run import (
    check_outputs_apart,
    pace_from_args,
    recorded_options,
    report_path,
    watch_from_args,
)
from worker.client import tls_context
from worker.config import (
    ConfigError,
    base_url_for,
    check_transport,
    load_credentials,
    redact_url,
)
from worker.deliver import silence_output
from worker.exits import EXIT_CANNOT_START, EXIT_OK, EXIT_OUTPUT_CLOSED
from worker.input import ReaderOptions
from worker.jobs import Notice, RemoveJob, UndoJob
from worker.journal import History, JournalError, RunRecord, default_journal_path, reading
from worker.settings import Outputs, RunConfig, Target
from worker.shard import Shard
from worker.undo_plan import UndoRefused, each_creation, plan, the_run


def undo_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    log = logs.configure(fmt=watch_from_args(args).log_format, secrets=())
    try:
        journal = _journal(args)
        with reading(journal) as history:
            run = the_run(history, args.run_id, None)
            target = _own_target(args, run, environ)
            if args.dry_run:
                return _preview(history, run.run_id, include_maybe=args.include_maybe)
            counts, left = plan(history, run, include_maybe=args.include_maybe)
        notices: tuple[Notice, ...] = tuple(
            (
                "undo_leaves",
                {
                    "run_id": run.run_id,
                    "playlist_id": created.key[0],
                    "session_id": created.key[1],
                    "data_source": created.key[2],
                    "reason": verdict.value,
                },
            )
            for created, verdict in left
        )
        config = _config(
            args, environ, journal=journal, run=run, target=target, counts=counts, notices=notices
        )
    except (ConfigError, UndoRefused, JournalError) as exc:
        message = exc.without_no_journal if isinstance(exc, JournalError) else str(exc)
        log.error("cannot_start", error=message)  # undo needs its journal: no --no-journal
        return EXIT_CANNOT_START
    from worker.ingest import ingest

    return ingest(config, environ)


def _preview(history: History, run_id: str, *, include_maybe: bool) -> int:
    """The dry run: each session the undo would remove, one JSON line each. Output closed
    by its reader (`undo --dry-run | head`) ends it quietly, as for SIGPIPE."""
    try:
        for creation in each_creation(history, run_id, include_maybe=include_maybe):
            sys.stdout.write(json.dumps(creation) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        silence_output(sys.stdout)
        return EXIT_OUTPUT_CLOSED
    return EXIT_OK


def _journal(args: argparse.Namespace) -> Path:
    if args.journal:
        return Path(args.journal)
    shard: Shard | None = args.shard  # parsed by the option's type
    return default_journal_path(shard)


def _own_target(args: argparse.Namespace, run: RunRecord, environ: Mapping[str, str]) -> str:
    """The run's target as the journal recorded it; another named is refused."""
    if args.base_url or args.site:
        given = base_url_for(args.site, args.base_url, environ)
        if given != run.target:
            raise ConfigError(
                f"run {run.run_id} was sent to {redact_url(run.target)}, not "
                f"{redact_url(given)}: undo acts on the run's own target only; "
                "drop --site/--base-url (or name that same target)"
            )
    return run.target


def _config(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    *,
    journal: Path,
    run: RunRecord,
    target: str,
    counts: dict[str, int],
    notices: tuple[Notice, ...],
) -> RunConfig:
    check_outputs_apart((), journal, report=args.report, dead_letter=args.dead_letter)
    return RunConfig(
        inputs=(),
        reader=ReaderOptions(ts_required=False),
        target=Target(
            route=check_transport(target, environ, allow_insecure_http=args.allow_insecure_http),
            credentials=load_credentials(args.api_key_file, args.app_key_file, environ),
            tls=tls_context(args.ca_bundle),
        ),
        outputs=Outputs(
            journal=journal,
            dead_letter=Path(args.dead_letter) if args.dead_letter else None,
            report=report_path(args.report),
        ),
        pace=pace_from_args(args),
        watch=watch_from_args(args),
        recorded_options={**recorded_options(args), "undoes": run.run_id},
        job=UndoJob(
            journal,
            run.run_id,
            include_maybe=args.include_maybe,
            plan=dict(counts),
            remove=RemoveJob(args.batch_size),
            notices=notices,
        ),
    )
