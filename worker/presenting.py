"""What a run tells a person at a terminal: one start line, and at the end the summary
table with what to do next. Off a terminal the same moments are the `start` and
`summary` log events, whose fields scripts parse (`worker.ingest`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from worker.input import ReaderOptions
from worker.journal import JournalError, Operation, default_journal_path, reading
from worker.journal.records import done_results
from worker.settings import RunConfig
from worker.terminal import RunStart, SummaryContext, render_summary, start_line, terminal_console


def tell_start(config: RunConfig, target: str) -> bool:
    """The start line, on a terminal; False when the `start` event is to be logged."""
    console = terminal_console(config.watch.log_format, sys.stderr)
    if console is None:
        return False
    fresh = config.outputs.fresh
    journal = config.outputs.journal
    playlist = config.reader.default_playlist
    start = RunStart(
        target=target,
        inputs=config.inputs,
        query=config.query.query if config.query else None,
        playlist=str(playlist) if playlist is not None else None,
        sandbox=config.target.route is None,
        shard=str(config.shard) if config.shard else None,
        journal=journal,
        done_rows=(
            done_rows(journal, target, config.job.operation) if journal and not fresh else None
        ),
        fresh=fresh,
        dry_run=config.dry_run,
        doing=config.job.doing,
        rows=config.job.rows_text,
    )
    console.print(start_line(start), soft_wrap=True)
    return True


def tell_summary(config: RunConfig, report: Mapping[str, object], advice: str | None) -> bool:
    """The summary table and next steps, on a terminal; False when the `summary` event is
    to be logged."""
    console = terminal_console(config.watch.log_format, sys.stderr)
    if console is None:
        return False
    render_summary(report, summary_context(config, advice), console)
    return True


def summary_context(config: RunConfig, abort_detail: str | None) -> SummaryContext:
    """What the next commands repeat: the target and how it is reached, the journal (a
    shard's, or one that is not the default), and how the rows were read where that is
    not the default."""
    base_url = config.target.route.base_url if config.target.route else None
    if base_url is None:
        repeated = ["--sandbox"]
    elif base_url.startswith("https://api."):
        repeated = ["--site", base_url.removeprefix("https://api.").rstrip("/")]
    else:
        repeated = ["--base-url", base_url]
    repeated += config.target.access_options
    journal = config.outputs.journal
    journal_options = ["--shard", str(config.shard)] if config.shard else []
    if journal is not None and journal != default_journal_path(config.shard):
        journal_options = ["--journal", str(journal)]
    reader, defaults = config.reader, ReaderOptions()
    row_options: list[str] = []
    for option, value, default in (
        ("--format", reader.fmt, defaults.fmt),
        ("--ts-unit", reader.ts_unit, defaults.ts_unit),
        ("--data-source", reader.default_data_source, defaults.default_data_source),
        ("--playlist", reader.default_playlist, defaults.default_playlist),
    ):
        if value is not None and value != default:
            row_options += [option, str(value)]
    dead_letter, report = config.outputs.dead_letter, config.outputs.report
    return SummaryContext(
        inputs=config.inputs,
        repeated_options=repeated,
        journal_options=journal_options,
        sharded=config.shard is not None,
        row_options=row_options,
        dead_letter=str(dead_letter) if dead_letter else None,
        report_path=str(report) if report else None,
        journal=journal is not None,
        fresh=config.outputs.fresh,
        target_outlives_run=base_url is not None,
        abort_detail=abort_detail,
        command=config.job.retry_command,
    )


def done_rows(journal: Path, target: str, operation: Operation) -> int | None:
    """Rows the journal holds as done by `operation` for `target` (what a rerun of it
    skips: added for a run, removed for a remove or an undo); 0 for a journal not made
    yet; None when it cannot say."""
    if not journal.exists():
        return 0
    try:
        with reading(journal) as history:
            counts = history.counts_by_target().get(target, {})
    except JournalError:
        return None
    return sum(counts.get(result, 0) for result in done_results(operation))
