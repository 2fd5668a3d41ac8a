"""A RUM query to a playlist: rows/s, search pages and peak RSS of `run --query` on
100,000 and 1,000,000 sessions.

    .venv/bin/python bench/query.py [--sessions 100000,1000000] [--concurrency 32] [--json]

For each count, a sandbox in its own process (`--minimal`, limits that never bind for
the PUTs and the search) generates that many sessions over the 7 days before it starts,
every one completed and with a replay (`--replay-share 1 --active-share 0`), so the
wrapped query `(*) @type:session @session.has_replay:true @session.is_active:false`
finds each once. The CLI runs as users run it: `run --query '*' --from now-8d
--playlist 1`, with its journal (a fresh SQLite file) and JSON logs to a file. Peak RSS
is the kernel's account of the CLI process alone (`ru_maxrss` from wait4), start-up
included; rows/s is the report's `rows_read` over its `elapsed_s`. Every session must
land, and the search must complete.

Targets: at most 80 MB at the largest count, and within 10% of the smallest count's
figure (the search fetches ahead only as fast as the queue drains); exit status 1 when
missed. A million sessions take several minutes.
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
)


@dataclass(frozen=True, slots=True)
class Result:
    sessions: int
    pages: int
    max_rss_mb: float
    cpu_s: float
    elapsed_s: float

    @property
    def rows_per_s(self) -> float:
        return self.sessions / self.elapsed_s


def measure(sessions: int, concurrency: int, work: Path) -> Result:
    population = ("--population", str(sessions), "--replay-share", "1", "--active-share", "0")
    limits = ("--rate-limit", NEVER_BINDING_LIMIT, "--search-rate-limit", NEVER_BINDING_LIMIT)
    journal, report, log = (
        work / f"query-{sessions}.{kind}" for kind in ("sqlite3", "json", "log")
    )
    with SandboxProcess(*limits, *population) as sandbox:
        process = start_cli(
            "run", "--query", "*", "--from", "now-8d", "--playlist", "1",
            "--base-url", sandbox.base_url, "--concurrency", str(concurrency),
            "--journal", str(journal), "--report", str(report), keys=sandbox.keys, stderr=log,
        )  # fmt: skip
        usage = wait_measured(process)
    if usage.exit_code != 0:
        raise RuntimeError(f"our CLI exited with {usage.exit_code}; see {log}")
    figures = json.loads(report.read_text())
    query = figures["query"]
    if figures["created"] != sessions or not query["completed"]:
        raise RuntimeError(f"{figures['created']} of {sessions} sessions were added; see {log}")
    for done in (log, *work.glob(f"query-{sessions}.sqlite3*")):
        done.unlink()
    return Result(sessions, query["pages"], usage.max_rss_mb, usage.cpu_s, figures["elapsed_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", default="100000,1000000", help="comma-separated counts")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = parser.parse_args(argv)
    counts = sorted(int(count) for count in args.sessions.split(","))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        for sessions in counts:
            print(f"{sessions:,} sessions ...", file=sys.stderr, flush=True)
            results.append(measure(sessions, args.concurrency, Path(tmp)))
    lines = [
        f"our CLI, run --query (journal on, JSON logs to a file), concurrency "
        f"{args.concurrency}, sandbox --minimal with limits {NEVER_BINDING_LIMIT} in its own "
        f"process; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "",
        f"{'sessions':>10}  {'pages':>6}  {'peak RSS MB':>11}  {'CPU s':>7}  {'rows/s':>7}",
    ]
    lines += [
        f"{r.sessions:>10,}  {r.pages:>6,}  {r.max_rss_mb:>11.1f}  {r.cpu_s:>7.1f}  "
        f"{r.rows_per_s:>7,.0f}"
        for r in results
    ]
    smallest, largest = results[0], results[-1]
    verdict, met = flat_memory(
        "sessions", (smallest.sessions, smallest.max_rss_mb), (largest.sessions, largest.max_rss_mb)
    )
    lines += ["", *verdict]
    print_results("\n".join(lines), results, as_json=args.json)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
