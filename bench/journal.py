"""What the journal costs: rows/s with it divided by rows/s with `--no-journal`.

    .venv/bin/python bench/journal.py [--rows 20000] [--concurrency 32] [--rounds 3] [--json]

One sandbox process (`--minimal`, a limit that never binds) serves both modes in turn,
reset between runs, on the same generated rows at the same concurrency. Each round runs
both modes back to back, in alternating order, so that drift in the machine's load hits
both alike; the round's ratio compares its two runs.
Each journal run gets a new journal file, so every row is sent and recorded: the cost
measured is a first run's, the dearest (a rerun only looks rows up). rows/s is rows over
the run's own `elapsed_s` (first read to last answer and journal commit), from its report;
interpreter start-up is left out. Every run must land every row, by the sandbox's count.

The figure is the median of the rounds' ratios; the exit status is 1 below the target
of 0.9.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from common import SandboxProcess, start_cli, wait_measured, write_generated_csv

NEVER_BINDING_LIMIT = "1000000000/1"
TARGET = 0.9
JOURNAL, NO_JOURNAL = "journal", "no journal"


@dataclass(frozen=True, slots=True)
class Run:
    mode: str
    rows_per_s: float
    cpu_s: float
    max_rss_mb: float


def run_once(
    mode: str, sandbox: SandboxProcess, source: Path, *, rows: int, concurrency: int, work: Path
) -> Run:
    """One run in `mode`; a journal run gets a journal of its own in a new folder."""
    sandbox.reset()
    report, log = work / "report.json", work / "run.log"
    journal = Path(tempfile.mkdtemp(dir=work)) / "journal.sqlite3"
    tracking = ["--journal", str(journal)] if mode == JOURNAL else ["--no-journal"]
    process = start_cli(
        "run", str(source), "--base-url", sandbox.base_url, "--concurrency", str(concurrency),
        "--report", str(report), *tracking, keys=sandbox.keys, stderr=log,
    )  # fmt: skip
    usage = wait_measured(process)
    if usage.exit_code != 0:
        raise SystemExit(f"{mode}: exit {usage.exit_code}; see the log:\n{log.read_text()[-2000:]}")
    if (held := sandbox.landed()) != rows:
        raise SystemExit(f"{mode}: the sandbox holds {held} rows of {rows}")
    elapsed = float(json.loads(report.read_text())["elapsed_s"])
    return Run(mode, rows / elapsed, usage.cpu_s, usage.max_rss_mb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many (default 3)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the text on stderr")
    args = parser.parse_args(argv)

    rounds: list[dict[str, Run]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp,
        SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox,
    ):
        work = Path(tmp)
        source = write_generated_csv(work / "rows.csv", args.rows)
        for round_ in range(1, args.rounds + 1):
            pair: dict[str, Run] = {}
            for mode in (JOURNAL, NO_JOURNAL)[:: 1 if round_ % 2 else -1]:
                print(f"round {round_}/{args.rounds}: {mode} ...", file=sys.stderr, flush=True)
                pair[mode] = run_once(
                    mode, sandbox, source, rows=args.rows, concurrency=args.concurrency, work=work
                )
            rounds.append(pair)

    def median(mode: str, pick: str) -> float:
        return float(statistics.median(getattr(pair[mode], pick) for pair in rounds))

    ratios = [pair[JOURNAL].rows_per_s / pair[NO_JOURNAL].rows_per_s for pair in rounds]
    ratio = statistics.median(ratios)
    lines = [
        f"{args.rows:,} rows, concurrency {args.concurrency}, median of {args.rounds} rounds; "
        f"sandbox --minimal in its own process; {os.cpu_count()} CPUs",
        "",
        *(
            f"{mode:<11} {median(mode, 'rows_per_s'):>8,.0f} rows/s   "
            f"CPU {median(mode, 'cpu_s'):5.2f} s   max RSS {median(mode, 'max_rss_mb'):4.0f} MB"
            for mode in (JOURNAL, NO_JOURNAL)
        ),
        "",
        f"rounds' ratios: {', '.join(f'{r:.3f}' for r in ratios)}",
        f"rows/s with the journal / with --no-journal: {ratio:.3f} (target >= {TARGET})",
    ]
    text = "\n".join(lines)
    if args.json:
        print(text, file=sys.stderr)
        print(
            json.dumps(
                {
                    "ratio": ratio,
                    "ratios": ratios,
                    "target": TARGET,
                    "runs": [asdict(run) for pair in rounds for run in pair.values()],
                }
            )
        )
    else:
        print(text)
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
