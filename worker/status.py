"""`status`: what a journal knows, for a person at a terminal or a script (`--json`).

It reads the journal without claiming it, so it works while a run is writing (WAL) and
never makes a run refuse to start.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from worker.exits import EXIT_CANNOT_START, EXIT_OK
from worker.journal import JournalError, default_journal_path, iso_time, reading
from worker.rows import Result
from worker.shard import Shard

RECORDED = (Result.CREATED, Result.ALREADY_PRESENT, Result.FAILED, Result.NOT_ATTEMPTED)
"""The results a journal holds for a row; skipped and invalid rows are only counted in
each run's report."""


def status_command(args: argparse.Namespace, out: TextIO) -> int:
    try:
        path = _journal_path(args)
        with reading(path) as conn:
            summary = summarise(conn, path, runs=args.runs, errors=args.errors)
    except (JournalError, ValueError) as exc:
        print(f"rum-playlist-ingest: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    if args.json:
        json.dump(dataclasses.asdict(summary), out, indent=2)
        out.write("\n")
    else:
        out.write(render(summary))
    return EXIT_OK


def _journal_path(args: argparse.Namespace) -> Path:
    if args.journal:
        if args.shard:
            raise ValueError("give --journal or --shard, not both")
        return Path(args.journal)
    return default_journal_path(Shard.parse(args.shard) if args.shard else None)


@dataclass(frozen=True, slots=True)
class TargetRows:
    target: str
    rows: int
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: int
    target: str
    started: str
    ended: str | None
    exit_code: int | None
    fresh: bool
    pid: int
    info: dict[str, object]
    report: dict[str, object] | None


@dataclass(frozen=True, slots=True)
class CommonError:
    target: str
    http_status: int | None
    error: str | None
    rows: int


@dataclass(frozen=True, slots=True)
class JournalSummary:
    journal: str
    targets: list[TargetRows]
    runs: list[RunRecord]
    errors: list[CommonError]


def summarise(conn: sqlite3.Connection, path: Path, *, runs: int, errors: int) -> JournalSummary:
    """Counts per target and result, the last `runs` runs, and the `errors` most common
    errors of the rows still failing."""
    targets: dict[str, dict[str, int]] = {}
    for url, result, count in conn.execute(
        "SELECT t.url, r.result, count(*) FROM rows r JOIN targets t ON t.id = r.target_id"
        " GROUP BY t.url, r.result ORDER BY t.url"
    ):
        targets.setdefault(url, {r.value: 0 for r in RECORDED})[result] = count
    recent = [
        RunRecord(
            id=run_id,
            target=url,
            started=iso_time(started),
            ended=iso_time(ended) if ended is not None else None,
            exit_code=exit_code,
            fresh=bool(fresh),
            pid=pid,
            info=json.loads(info),
            report=json.loads(report) if report is not None else None,
        )
        for run_id, url, started, ended, exit_code, fresh, pid, info, report in conn.execute(
            "SELECT r.id, t.url, r.started_at, r.ended_at, r.exit_code, r.fresh, r.pid,"
            " r.info, r.report FROM runs r JOIN targets t ON t.id = r.target_id"
            " ORDER BY r.id DESC LIMIT ?",
            (runs,),
        )
    ]
    common = [
        CommonError(url, status, error, count)
        for url, status, error, count in conn.execute(
            "SELECT t.url, r.http_status, r.error, count(*) AS n"
            " FROM rows r JOIN targets t ON t.id = r.target_id WHERE r.result = ?"
            " GROUP BY t.url, r.http_status, r.error ORDER BY n DESC, t.url LIMIT ?",
            (Result.FAILED.value, errors),
        )
    ]
    return JournalSummary(
        journal=str(path),
        targets=[TargetRows(url, sum(c.values()), c) for url, c in targets.items()],
        runs=recent,
        errors=common,
    )


def render(summary: JournalSummary) -> str:
    """The summary as text for a person: targets, then runs (newest first), then errors."""
    lines = [f"journal {summary.journal}", ""]
    lines.append("rows by target" if summary.targets else "no rows recorded yet")
    for target in summary.targets:
        lines.append(f"  {target.target}  ({target.rows} rows)")
        lines += [f"    {name:<16}{count:>10}" for name, count in target.counts.items()]
    if summary.runs:
        lines += ["", "last runs, newest first"]
    for run in summary.runs:
        ended = run.ended or "no end recorded: still running, or killed"
        fresh = "  --fresh" if run.fresh else ""
        lines.append(f"  #{run.id}  {run.started} -> {ended}  {run.target}{fresh}")
        inputs = run.info.get("inputs")
        if isinstance(inputs, list):
            lines.append(f"      inputs: {' '.join(map(str, inputs))}")
        if run.report is not None:
            lines.append("      " + "  ".join(f"{k} {v}" for k, v in run.report.items()))
    if summary.errors:
        lines += ["", "most common errors of rows still failing"]
    for error in summary.errors:
        status = "no answer" if error.http_status is None else f"HTTP {error.http_status}"
        lines.append(f"  {error.rows:>8}  {status}  {error.error or ''}  ({error.target})")
    return "\n".join(lines) + "\n"
