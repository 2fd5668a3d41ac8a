"""What this tool adds to each request, with the HTTP taken out.

    .venv/bin/python bench/overhead.py [--rows 20000] [--rounds 5] [--without journal,logs]

The real run (reader thread, validation, bounded queue, workers, pacer, health, report)
with its SQLite journal and JSON row logs (to /dev/null), over generated rows, but with
a client that answers every request at once with the sandbox's 201: the same rate-limit
headers and body, parsed as the real client parses them. So the figure is the tool's own
CPU per row, the part that `throughput.py` compares with a bare aiohttp loop, without
the noise of a server and a network. `--without journal` or `--without logs` takes a
piece out to show what it costs.

CPU is `time.process_time()` around the run (all threads, start-up left out); the figure
is the minimum over the rounds, each in a fresh process. Not a test of speed: a gauge
for changes to the per-row path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from common import NEVER_BINDING_LIMIT, ROOT, TS, write_generated_csv

PIECES = ("journal", "logs")


def _one_round(rows: Path, without: set[str]) -> float:
    """In this process: run once and return CPU seconds per row."""
    from multidict import CIMultiDict, CIMultiDictProxy

    from worker import aio, logs
    from worker.client import Kind, Reply, _body_problem, classify_status
    from worker.journal import Ledger, MemoryLedger, SqliteJournal
    from worker.observe import RunObserver
    from worker.pacer import Pacer, parse_rate_limit_headers
    from worker.reader import ReaderOptions, open_inputs
    from worker.report import Report
    from worker.rows import Row
    from worker.runner import Fanout, RetryPolicy, Run, RunSettings
    from worker.sandbox.ratelimit import FixedWindowLimiter, parse_rate_limit
    from worker.sandbox.store import SessionRecord
    from worker.sandbox.wire import json_bytes, resource

    # The sandbox's own 201: its rate-limit headers (a limit that never binds) and body.
    limiter = FixedWindowLimiter(
        *parse_rate_limit(NEVER_BINDING_LIMIT), name="rum_replay_playlists"
    )
    headers = CIMultiDictProxy(CIMultiDict(limiter.headers(limiter.take())))
    body = json_bytes({"data": resource("s", SessionRecord(TS, "rum"))})

    class AnsweringClient:
        """Answers at once, as the sandbox would, and reads the answer as `Client` does."""

        async def add(self, row: Row) -> Reply:
            await asyncio.sleep(0)  # one trip through the loop, as an answer takes
            started = time.perf_counter()
            status = 201
            kind = classify_status(status)
            assert kind is Kind.ADDED
            return Reply(
                kind,
                status,
                (time.perf_counter() - started) * 1000,
                rate_limit=parse_rate_limit_headers(headers),
                body_problem=_body_problem(body),
            )

    async def run(journal_dir: Path, null: TextIO) -> float:
        log = logs.configure(fmt="json", secrets=["k" * 32, "a" * 40], stream=null)
        report = Report()
        ledger: Ledger = MemoryLedger()
        if "journal" not in without:
            ledger = SqliteJournal.open(
                journal_dir / "j.sqlite3", target="http://bench", fresh=False, run_info={}
            )
        observers: list[RunObserver] = [ledger, report]
        if "logs" not in without:
            observers.append(logs.LogObserver(log))
        fanout = Fanout(observers)
        with open_inputs([str(rows)], ReaderOptions()) as stream:
            started = time.process_time()
            await Run(
                iter(stream),
                client=AnsweringClient(),  # type: ignore[arg-type]
                pacer=Pacer(rate=None, on_pause=fanout.paused),
                ledger=ledger,
                observer=fanout,
                settings=RunSettings(32, RetryPolicy()),
            ).execute()
            ledger.close(report.as_dict())
            spent = time.process_time() - started
        assert report.created == report.rows_read, report.as_dict()
        return spent / report.created

    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        return aio.run(run(Path(tmp), null))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without", default="", help="journal,logs: pieces to take out")
    parser.add_argument("--round", dest="round_of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    without = {piece for piece in args.without.split(",") if piece}
    if not without <= set(PIECES):
        parser.error(f"--without takes {', '.join(PIECES)}")
    if args.round_of:
        print(_one_round(Path(args.round_of), without))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        rows = write_generated_csv(Path(tmp) / "rows.csv", args.rows)
        figures = []
        for _ in range(args.rounds):
            # A fresh process per round: nothing warmed or grown by the last one.
            out = subprocess.run(
                [sys.executable, __file__, "--round", str(rows), "--without", args.without],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            figures.append(float(out.split()[-1]) * 1e6)
    taken = f" without {', '.join(sorted(without))}" if without else ""
    print(
        f"{args.rows:,} rows, concurrency 32, a client that answers at once{taken}: "
        f"{min(figures):.1f} us CPU per row (min of {args.rounds}; "
        + ", ".join(f"{figure:.1f}" for figure in figures)
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
