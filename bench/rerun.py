"""A rerun whose rows are all done: how fast the tool gets through a journal's done rows.

    .venv/bin/python bench/rerun.py [--rows 1000000] [--json]

A nightly job or a resumed migration reads its whole input again, and most of it was
done before. One sandbox process (`--minimal`, a limit that never binds) is the target;
a journal holding every row as created for that target is written directly (through
`SqliteJournal`, as a first run would leave it), then the CLI reruns the same CSV as
users run it (journal and JSON logs to a file) and must skip every row and send nothing.
The figure is rows / the report's `elapsed_s`, with the CLI pinned to its own core.

Target: at least 150,000 rows/s at 1,000,000 rows; the exit status is 1 when missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    NEVER_BINDING_LIMIT,
    ROOT,
    SandboxProcess,
    start_cli,
    wait_measured,
    write_generated_csv,
)

sys.path.insert(0, str(ROOT))

TARGET_ROWS_PER_S = 150_000


def done_journal(rows: Path, journal: Path, target: str) -> None:
    """A journal in which every row of `rows` was created by an earlier run."""
    from worker.input import ReaderOptions, open_inputs
    from worker.journal import SqliteJournal
    from worker.rows import Outcome, Result, Row

    ledger = SqliteJournal.open(journal, target=target, fresh=False, run_info={})
    with open_inputs([str(rows)], ReaderOptions()) as stream:
        for row in stream:
            assert isinstance(row, Row)
            ledger.admit(row)
            ledger.outcome(Outcome(row, Result.CREATED, 201, 1))
    ledger.close({})


def build_in_child(rows: Path, journal: Path, target: str) -> None:
    """`done_journal` in a process of its own: the bench process stays small, and the CLI
    it forks starts from it (a forked child's peak RSS counts what it inherited)."""
    subprocess.run(
        [sys.executable, __file__, "--build", str(rows), str(journal), target], check=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        rows, journal, target = args.build
        done_journal(Path(rows), Path(journal), target)
        return 0
    with (
        tempfile.TemporaryDirectory() as tmp,
        SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox,
    ):
        work = Path(tmp)
        rows = write_generated_csv(work / "rows.csv", args.rows)
        journal, report, log = work / "j.sqlite3", work / "report.json", work / "run.log"
        build_in_child(rows, journal, sandbox.base_url)
        process = start_cli(
            "run", str(rows), "--base-url", sandbox.base_url, "--journal", str(journal),
            "--report", str(report), keys=sandbox.keys, stderr=log,
        )  # fmt: skip
        usage = wait_measured(process)
        figures = json.loads(report.read_text())
        if figures["skipped"] != args.rows or figures["requests"] != 0:
            raise RuntimeError(f"the rerun did not skip every row: {figures}")
    rows_per_s = args.rows / figures["elapsed_s"]
    result = {
        "rows": args.rows,
        "elapsed_s": figures["elapsed_s"],
        "rows_per_s": round(rows_per_s),
        "cpu_s": round(usage.cpu_s, 2),
        "max_rss_mb": round(usage.max_rss_mb, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"rerun of {args.rows:,} done rows: {rows_per_s:,.0f} rows/s by the report's "
            f"elapsed_s ({figures['elapsed_s']:.2f} s; CPU {usage.cpu_s:.2f} s; peak RSS "
            f"{usage.max_rss_mb:.0f} MB); target >= {TARGET_ROWS_PER_S:,} rows/s"
        )
    return 0 if rows_per_s >= TARGET_ROWS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
