"""Chaos: a run through 10% 5xx, 3% dropped connections and 1% hangs, row by row.

    .venv/bin/python bench/chaos.py [--rows 5000] [--concurrency 32] [--timeout 2]
                                    [--max-attempts 8] [--seed 1] [--json]

A sandbox process (`--minimal`, a limit that never binds) breaks each PUT with one
fault at most: 10% answer 5xx (half before adding the session, half after: the client
cannot tell them apart), 3% drop the connection without an answer (half before, half
after adding), 1% hang until the sandbox stops, so only `--timeout` frees the worker.
Our CLI runs as users run it: a subprocess with its journal and JSON logs. One attempt
in seven fails here, so the default 5 attempts would leave a row failed in about one run
in four (0.14^5 x 5,000); 8 attempts make that one run in about 1,400.

Figures, each from the side that knows: rows landed and requests sent from the
sandbox's own account (`/_sandbox/state`); attempts per row from the CLI's `row` log
events; wall time of the CLI process, start-up included. The exit status is 1 unless
every row landed and the CLI exited 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import SandboxProcess, start_cli, wait_measured, write_generated_csv

FAULTS = (
    ("--fault-5xx", 0.05),
    ("--fault-5xx-after", 0.05),
    ("--fault-drop", 0.015),
    ("--fault-drop-after", 0.015),
    ("--fault-hang", 0.01),
)


@dataclass(frozen=True, slots=True)
class Chaos:
    rows: int
    landed: int
    """Sessions the sandbox holds at the end."""
    exit_code: int
    wall_s: float
    server: dict[str, Any]
    """The sandbox's counters: requests, answers by status, dropped, hung, duplicate PUTs."""
    report: dict[str, Any]
    attempts: dict[int, int]
    """Rows by the attempts their `row` event reports."""
    notes: int
    """Rows whose `row` event notes an earlier answer lost after the PUT may have applied."""


def run(count: int, concurrency: int, timeout_s: float, max_attempts: int, seed: int) -> Chaos:
    options = [text for option, share in FAULTS for text in (option, str(share))]
    with (
        tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp,
        SandboxProcess("--rate-limit", "1000000/1", "--seed", str(seed), *options) as sandbox,
    ):
        folder = Path(tmp)
        rows = write_generated_csv(folder / "rows.csv", count)
        report_path, log_path = folder / "report.json", folder / "log.ndjson"
        process = start_cli(
            "run",
            str(rows),
            "--base-url",
            sandbox.base_url,
            "--journal",
            str(folder / "journal.sqlite3"),
            "--concurrency",
            str(concurrency),
            "--timeout",
            str(timeout_s),
            "--max-attempts",
            str(max_attempts),
            "--report",
            str(report_path),
            keys=sandbox.keys,
            stderr=log_path,
        )
        usage = wait_measured(process)
        state = sandbox.state()
        report = json.loads(report_path.read_text())
        lines = log_path.read_text().splitlines()
    events = (json.loads(line) for line in lines if line.startswith("{"))
    row_events = [event for event in events if event.get("event") == "row"]
    stats = state["stats"]
    return Chaos(
        rows=count,
        landed=sum(len(records) for records in state["sessions"].values()),
        exit_code=usage.exit_code,
        wall_s=round(usage.wall_s, 2),
        server={
            name: stats[name]
            for name in ("requests", "responses", "dropped", "hung", "duplicate_puts")
        },
        report=report,
        attempts=dict(sorted(Counter(event["attempts"] for event in row_events).items())),
        notes=sum(1 for event in row_events if event.get("note")),
    )


def table(result: Chaos, concurrency: int, timeout_s: float) -> str:
    server, report = result.server, result.report
    spread = "  ".join(
        f"{n}: {rows} ({100 * rows / result.rows:.1f}%)" for n, rows in result.attempts.items()
    )
    faults = ", ".join(f"{option.removeprefix('--fault-')} {share:.1%}" for option, share in FAULTS)
    return "\n".join(
        [
            f"chaos: {result.rows:,} rows, --concurrency {concurrency}, "
            f"--timeout {timeout_s:g} s; faults per PUT: {faults}",
            f"rows landed (server)   {result.landed:,} of {result.rows:,}",
            f"requests sent (server) {server['requests']:,}  answers {server['responses']}, "
            f"dropped {server['dropped']}, hung {server['hung']}, "
            f"repeated PUTs of a held session {server['duplicate_puts']}",
            f"report                 created {report['created']:,}, already_present "
            f"{report['already_present']} ({result.notes} rows noted an answer lost), "
            f"failed {report['failed']}, not_attempted {report['not_attempted']}, "
            f"requests {report['requests']:,}, retries {report['retries']}",
            f"attempts per row       {spread}",
            f"wall time              {result.wall_s} s (exit {result.exit_code})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=2.0, help="the CLI's --timeout")
    parser.add_argument("--max-attempts", type=int, default=8, help="the CLI's --max-attempts")
    parser.add_argument("--seed", type=int, default=1, help="the sandbox's fault seed")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    args = parser.parse_args(argv)
    result = run(args.rows, args.concurrency, args.timeout, args.max_attempts, args.seed)
    text = table(result, args.concurrency, args.timeout)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(asdict(result), indent=2))
    else:
        print(text)
    return 0 if result.landed == args.rows and result.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
