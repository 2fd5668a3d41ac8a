"""Peak memory: our CLI's peak RSS on 100,000 and 1,000,000 generated rows.

    .venv/bin/python bench/memory.py [--rows 100000,1000000] [--concurrency 32] [--no-journal]
        [--json]

Each row count is generated once to a CSV file (written as it is made) and read by the
CLI as users run it: streamed from the file, with its journal (a fresh SQLite file; with
`--no-journal`, none, so the run's repeat check is SQLite's private temporary database)
and JSON logs to a file, against a sandbox in its own process (`--minimal`, a limit that
never binds). Peak RSS is the kernel's account of the CLI process alone (`ru_maxrss`
from wait4), start-up included. Every run must land every row.

Targets: at most 80 MB at the largest count, and within 10% of the smallest count's
figure (memory that stays flat as the input grows); the exit status is 1 when missed.
A million rows take several minutes at a few thousand rows per second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import (
    NEVER_BINDING_LIMIT,
    SandboxProcess,
    flat_memory,
    print_results,
    start_cli,
    wait_measured,
    write_generated_csv,
)


@dataclass(frozen=True, slots=True)
class Result:
    rows: int
    max_rss_mb: float
    cpu_s: float
    elapsed_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s


def measure(
    rows: int, sandbox: SandboxProcess, concurrency: int, work: Path, *, journal: bool
) -> Result:
    source = write_generated_csv(work / f"rows-{rows}.csv", rows)
    path, report, log = (work / f"run-{rows}.{suffix}" for suffix in ("sqlite3", "json", "log"))
    tracking = ["--journal", str(path)] if journal else ["--no-journal"]
    sandbox.reset()
    process = start_cli(
        "run", str(source), "--base-url", sandbox.base_url, "--concurrency", str(concurrency),
        *tracking, "--report", str(report), keys=sandbox.keys, stderr=log,
    )  # fmt: skip
    usage = wait_measured(process)
    if usage.exit_code != 0:
        raise RuntimeError(f"our CLI exited with {usage.exit_code}; see {log}")
    created = json.loads(report.read_text())["created"]
    if created != rows:
        raise RuntimeError(f"{created} of {rows} rows were added; see {log}")
    elapsed = float(json.loads(report.read_text())["elapsed_s"])
    for done in (source, log, *work.glob(f"run-{rows}.sqlite3*")):
        done.unlink()  # a million rows leave ~0.5 GB of input, logs and journal behind
    return Result(rows, usage.max_rss_mb, usage.cpu_s, elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-journal", action="store_true", help="run without a journal")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = parser.parse_args(argv)
    counts = sorted(int(count) for count in args.rows.split(","))
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp,
        SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox,
    ):
        for rows in counts:
            print(f"{rows:,} rows ...", file=sys.stderr, flush=True)
            results.append(
                measure(rows, sandbox, args.concurrency, Path(tmp), journal=not args.no_journal)
            )
    lines = [
        f"our CLI (journal {'off' if args.no_journal else 'on'}, JSON logs to a file), "
        f"concurrency {args.concurrency}, "
        f"sandbox --minimal --rate-limit {NEVER_BINDING_LIMIT} in its own process; "
        f"{os.cpu_count()} CPUs",
        "",
        f"{'rows':>10}  {'peak RSS MB':>11}  {'CPU s':>7}  {'rows/s':>7}",
    ]
    lines += [
        f"{r.rows:>10,}  {r.max_rss_mb:>11.1f}  {r.cpu_s:>7.1f}  {r.rows_per_s:>7,.0f}"
        for r in results
    ]
    smallest, largest = results[0], results[-1]
    verdict, met = flat_memory(
        "rows", (smallest.rows, smallest.max_rss_mb), (largest.rows, largest.max_rss_mb)
    )
    lines += ["", *verdict]
    print_results("\n".join(lines), results, as_json=args.json)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
