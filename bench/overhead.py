"""What this tool adds to each request: with the HTTP taken out, or beside a bare loop.

    .venv/bin/python bench/overhead.py [--rows 20000] [--rounds 5] [--without journal,logs]
                                       [--http]

The real pipeline (reader thread, validation, admission, bounded queue, workers, pacer,
health, report)
with its SQLite journal and JSON row logs (to /dev/null), over generated rows. By
default its client answers every request at once with the sandbox's 201: the same
rate-limit headers and body, parsed as the real client parses them. So the figure is the
tool's own CPU per row, the part that `throughput.py` compares with a bare aiohttp loop,
without the noise of a server and a network. `--without journal` or `--without logs`
takes a piece out to show what it costs.

`--http` sends for real instead, with the real client, to a sandbox in its own process,
and alternates each round with `throughput.py`'s bare aiohttp loop timed the same way:
how far the run, with the pieces left in, is from the bare loop when start-up is left
out of both.

CPU is `time.process_time()` from the first row to the last answer (all threads,
start-up and imports left out); each figure is the minimum over the rounds, each in a
fresh process. Not a test of speed: a gauge for changes to the per-row path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from common import (
    CLIENT_CPUS,
    NEVER_BINDING_LIMIT,
    ROOT,
    TS,
    SandboxProcess,
    pin_self,
    write_generated_csv,
)

PIECES = ("journal", "logs")
CONCURRENCY = 32


def _one_round(rows: Path, without: set[str], base_url: str | None) -> float:
    """In this process: run once and return CPU seconds per row (sent to `base_url` with
    the keys in DD_API_KEY and DD_APP_KEY, or answered at once when it is None)."""
    from multidict import CIMultiDict, CIMultiDictProxy

    from worker import aio, logs
    from worker.answers import Answer, AnswerReader, Meaning
    from worker.api import Request
    from worker.chunks import ThreadedChunks
    from worker.client import Client
    from worker.config import Credentials, Route, Secret
    from worker.deliver import Paced, Send, Sender
    from worker.events import Ended, Event, Sink, fan_out
    from worker.health import RetryPolicy
    from worker.input import ReaderOptions, open_inputs
    from worker.journal import Ledger, NoJournalLedger, SqliteJournal
    from worker.operation import AddSession
    from worker.pacer import Pacer
    from worker.pipeline import Pipeline, Settings
    from worker.report import Report
    from worker.rowlog import LogSink
    from worker.rows import Outcome
    from worker.sandbox.ratelimit import FixedWindowLimiter, parse_rate_limit
    from worker.sandbox.store import SessionRecord
    from worker.sandbox.wire import json_bytes, resource
    from worker.scrub import Scrubber
    from worker.stop import StopState

    # The sandbox's own 201: its rate-limit headers (a limit that never binds) and body.
    limiter = FixedWindowLimiter(
        *parse_rate_limit(NEVER_BINDING_LIMIT), name="rum_replay_playlists"
    )
    headers = CIMultiDictProxy(CIMultiDict(limiter.headers(limiter.take())))
    body = json_bytes({"data": resource("s", SessionRecord(TS, "rum"))})
    reader = AnswerReader(Scrubber(["k" * 32, "a" * 40]), "http://bench")

    async def answer_at_once(request: Request) -> Answer:
        """As the sandbox would, read as `Client` reads it."""
        await asyncio.sleep(0)  # one trip through the loop, as an answer takes
        started = time.perf_counter()
        answer = reader.http(201, headers, body, (time.perf_counter() - started) * 1000)
        assert answer.meaning is Meaning.DONE
        return answer

    def journal_sink(ledger: Ledger) -> Sink:
        def sink(event: Event) -> None:
            if type(event) is Outcome:
                ledger.outcome(event)  # type: ignore[arg-type]

        return sink

    async def run(journal_dir: Path, null: TextIO) -> float:
        log = logs.configure(fmt="json", secrets=["k" * 32, "a" * 40], stream=null)
        report = Report()
        ledger: Ledger = NoJournalLedger()
        if "journal" not in without:
            ledger = SqliteJournal.open(
                journal_dir / "j.sqlite3", target="http://bench", fresh=False, run_info={}
            )
        sinks: list[Sink] = [journal_sink(ledger), report]
        if "logs" not in without:
            sinks.append(LogSink(log))
        sink = fan_out(sinks)
        with open_inputs([str(rows)], ReaderOptions()) as stream:
            started = time.process_time()
            if base_url is None:
                await _run(stream, answer_at_once, sink, ledger)
            else:
                keys = Credentials(
                    Secret(os.environ["DD_API_KEY"]), Secret(os.environ["DD_APP_KEY"])
                )
                route = Route(base_url)
                async with Client(route, keys, concurrency=CONCURRENCY, timeout_s=30) as real:
                    await _run(stream, real.send, sink, ledger)
            sink(Ended(report.as_dict()))
            ledger.close(report.as_dict())
            spent = time.process_time() - started
        assert report.created == report.rows_read, report.as_dict()
        return spent / report.created

    async def _run(stream: object, send: Send, sink: Sink, ledger: Ledger) -> None:
        stop = StopState()
        paced = Paced(send, pacer=Pacer(rate=None, on_pause=sink), stop=stop, sink=sink)
        sender = Sender(AddSession(), paced, policy=RetryPolicy(), stop=stop, warn=print)
        await Pipeline(
            ThreadedChunks(iter(stream)),  # type: ignore[call-overload]
            admit=ledger.admit,
            deliver=sender.deliver,
            sink=sink,
            stop=stop,
            settings=Settings(CONCURRENCY),
        ).run()

    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        return aio.run(run(Path(tmp), null))


def _round_in_child(rows: Path, without: str, sandbox: SandboxProcess | None) -> float:
    """One round of ours in a fresh process: nothing warmed or grown by the last one."""
    command = [sys.executable, __file__, "--round", str(rows), "--without", without]
    # This checkout's `worker`, not the one the venv was installed from: a script's own
    # folder, not the working directory, heads its import path.
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    if sandbox is not None:
        sandbox.reset()
        command += ["--base-url", sandbox.base_url]
        env.update(sandbox.keys)
    out = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def _bare_in_child(rows: Path, count: int, sandbox: SandboxProcess) -> float:
    """One round of `throughput.py`'s bare aiohttp loop: its CPU per row, start-up left out."""
    sandbox.reset()
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("throughput.py")), "--driver", "bare",
         "--base-url", sandbox.base_url, "--input", str(rows),
         "--concurrency", str(CONCURRENCY)],
        cwd=ROOT, env={**os.environ, **sandbox.keys}, check=True, capture_output=True, text=True,
    )  # fmt: skip
    driven = json.loads(out.stdout)
    if driven["answers"] != {"201": count}:
        raise RuntimeError(f"the bare loop did not add every row: {driven['answers']}")
    return float(driven["cpu_s"]) / count


def _figures(name: str, figures: list[float]) -> str:
    return (
        f"{name}: {min(figures) * 1e6:.1f} us CPU per row (min of {len(figures)}; "
        + ", ".join(f"{figure * 1e6:.1f}" for figure in figures)
        + ")"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--without", default="", help="journal,logs: pieces to take out")
    parser.add_argument("--http", action="store_true", help="send for real, beside a bare loop")
    parser.add_argument("--round", dest="round_of", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    without = {piece for piece in args.without.split(",") if piece}
    if not without <= set(PIECES):
        parser.error(f"--without takes {', '.join(PIECES)}")
    if args.round_of:
        pin_self(CLIENT_CPUS)
        print(_one_round(Path(args.round_of), without, args.base_url))
        return 0
    taken = f" without {', '.join(sorted(without))}" if without else ""
    with tempfile.TemporaryDirectory() as tmp:
        rows = write_generated_csv(Path(tmp) / "rows.csv", args.rows)
        if not args.http:
            ours = [_round_in_child(rows, args.without, None) for _ in range(args.rounds)]
            print(
                f"{args.rows:,} rows, concurrency {CONCURRENCY}, a client that answers at once: "
                + _figures(f"rum-playlist-ingest{taken}", ours)
            )
            return 0
        ours, bare = [], []
        with SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox:
            for _ in range(args.rounds):  # alternated, so both see the same machine
                ours.append(_round_in_child(rows, args.without, sandbox))
                if sandbox.responses(201) != args.rows:
                    raise RuntimeError(f"ours did not add every row: {sandbox.state()['stats']}")
                bare.append(_bare_in_child(rows, args.rows, sandbox))
    print(
        f"{args.rows:,} rows, concurrency {CONCURRENCY}, loopback HTTP to a sandbox in its own "
        f"process:\n  {_figures(f'rum-playlist-ingest{taken}', ours)}\n  "
        f"{_figures('bare aiohttp loop', bare)}\n"
        f"  ours / bare loop: {min(ours) / min(bare):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
