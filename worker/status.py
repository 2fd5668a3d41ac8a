"""`status`: what a journal knows, for a person at a terminal or a script (`--json`).

It reads the journal without claiming it, so it works while a run is writing (WAL) and
never makes a run refuse to start. What it prints passes through `mask_key_shapes`: a
journal written by an earlier version may hold keys a server echoed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from worker.exits import EXIT_CANNOT_START, EXIT_OK
from worker.journal import (
    CommonError,
    JournalError,
    RunRecord,
    default_journal_path,
    iso_time,
    reading,
)
from worker.rows import Result
from worker.scrub import mask_key_shapes
from worker.shard import Shard

RECORDED = (
    Result.CREATED,
    Result.ALREADY_PRESENT,
    Result.REMOVED,
    Result.FAILED,
    Result.NOT_ATTEMPTED,
)
"""The results a journal holds for a row; skipped and invalid rows are only counted in
each run's report."""


def status_command(
    journal: Path | None,
    shard: Shard | None,
    *,
    runs: int,
    errors: int,
    as_json: bool,
    out: TextIO,
) -> int:
    """Print what the journal at `journal` (or the default one, of `shard`) knows: the
    last `runs` runs and the `errors` most common errors. Returns the exit status; a
    journal that cannot be read is an error on standard error and 2."""
    try:
        if journal is not None and shard is not None:
            raise ValueError("give --journal or --shard, not both")
        path = journal or default_journal_path(shard)
        with reading(path) as history:
            summary = JournalSummary(
                journal=str(path),
                targets=[
                    TargetRows(url, sum(counts.values()), _in_order(counts))
                    for url, counts in history.counts_by_target().items()
                ],
                runs=history.runs(runs),
                errors=history.common_errors(errors),
            )
    except JournalError as exc:
        print(f"rum-playlist-ingest: error: {exc.without_no_journal}", file=sys.stderr)
        return EXIT_CANNOT_START
    except ValueError as exc:
        print(f"rum-playlist-ingest: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    text = json.dumps(as_json_object(summary), indent=2) + "\n" if as_json else render(summary)
    out.write(mask_key_shapes(text))
    return EXIT_OK


def _in_order(counts: dict[str, int]) -> dict[str, int]:
    return {r.value: counts.get(r.value, 0) for r in RECORDED}


@dataclass(frozen=True, slots=True)
class TargetRows:
    target: str
    rows: int
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class JournalSummary:
    journal: str
    targets: list[TargetRows]
    runs: list[RunRecord]
    """Newest first."""
    errors: list[CommonError]


def as_json_object(summary: JournalSummary) -> dict[str, object]:
    return {
        "journal": summary.journal,
        "targets": [
            {"target": t.target, "rows": t.rows, "counts": t.counts} for t in summary.targets
        ],
        "runs": [
            {
                "run_id": run.run_id,
                "operation": run.operation,
                "target": run.target,
                "shard": run.shard,
                "started": iso_time(run.started_at),
                "ended": None if run.ended_at is None else iso_time(run.ended_at),
                "exit_code": run.exit_code,
                "fresh": run.fresh,
                "pid": run.pid,
                "inputs": list(run.inputs),
                "report": run.report,
                "info": run.info,
            }
            for run in summary.runs
        ],
        "errors": [
            {"target": e.target, "http_status": e.http_status, "error": e.error, "rows": e.rows}
            for e in summary.errors
        ],
    }


def _as_in_json(value: object) -> str:
    """A report's value as the report writes it (`false`, `null`, a block as a JSON
    object), not as Python does; a string bare, as a person reads it."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _ended(run: RunRecord, *, later_run: bool) -> str:
    """When the run ended. One run holds a journal at a time, so a run with no end
    recorded was stopped without ending (killed, or crashed) once a later one began."""
    if run.ended_at is not None:
        return iso_time(run.ended_at)
    if later_run:
        return "no end recorded: stopped without ending (killed); a later run began after it"
    return "no end recorded: still running, or killed"


def render(summary: JournalSummary) -> str:
    """The summary as text for a person: targets, then runs (newest first), then errors."""
    lines = [f"journal {summary.journal}", ""]
    lines.append("rows by target" if summary.targets else "no rows recorded yet")
    for target in summary.targets:
        lines.append(f"  {target.target}  ({target.rows} rows)")
        lines += [f"    {name:<16}{count:>10}" for name, count in target.counts.items()]
    if summary.runs:
        lines += ["", "last runs, newest first"]
    for index, run in enumerate(summary.runs):
        ended = _ended(run, later_run=index > 0)  # newest first: every run but the first
        extras = "".join(
            f"  {extra}"
            for extra in (run.shard and f"shard {run.shard}", run.fresh and "--fresh")
            if extra
        )
        lines.append(f"  {run.run_id}  {run.operation}  {run.target}{extras}")
        lines.append(f"      {iso_time(run.started_at)} -> {ended}")
        if run.inputs:
            lines.append(f"      inputs: {' '.join(run.inputs)}")
        if run.report is not None:
            # Values as the report writes them (`false`, `null`), not as Python does.
            lines.append(
                "      " + "  ".join(f"{k} {_as_in_json(v)}" for k, v in run.report.items())
            )
    if summary.errors:
        lines += ["", "most common errors of rows still failing"]
    for error in summary.errors:
        status = "no answer" if error.http_status is None else f"HTTP {error.http_status}"
        lines.append(f"  {error.rows:>8}  {status}  {error.error or ''}  ({error.target})")
    return "\n".join(lines) + "\n"
