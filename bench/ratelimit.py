"""Pacing under Datadog-style rate limits: this tool against the official client.

    .venv/bin/python bench/ratelimit.py [--quick] [--json] [--only abcd]

Each scenario starts a fresh sandbox process with the scenario's limit and sends the
same rows with each tool at the same concurrency: our CLI as a subprocess, and the
official `datadog-api-client` (async, `enable_retry=True`) in this process. Both are
measured by the sandbox's own account (`/_sandbox/state`), so neither grades itself:

* goodput: rows landed / elapsed seconds / (limit / period); 1.0 is the whole budget;
* 429s per window: answers of 429 / calendar windows the run spanned;
* lost: rows the sandbox does not hold at the end.

Elapsed time starts when a tool starts sending (our CLI's report `elapsed_s`, which
leaves out interpreter start-up) and ends when its last answer is in. A run that starts
mid-window gets that window's whole budget too, so a short run can exceed 1.0. Targets
for this tool: goodput >= 0.95, at most one 429 per window, nothing lost; the exit status
is 1 when any is missed. Scenario (d) is (a) with a Reset up to a second off the boundary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from common import BenchRow, SandboxProcess, make_rows, start_cli, write_csv
from datadog_api_client import AsyncApiClient, Configuration
from datadog_api_client.v2.api.rum_replay_playlists_api import RumReplayPlaylistsApi

OURS = "rum-playlist-ingest"
OFFICIAL = "datadog-api-client (async)"
GOODPUT_TARGET = 0.95
PER_WINDOW_TARGET = 1.0


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    limit: int
    period: float
    concurrency: int
    rows: int
    quick_rows: int
    runs: int = 1
    """Runs of our CLI at once, on disjoint shares of the rows, drawing on one budget."""
    sandbox_options: tuple[str, ...] = ()
    official: bool = True

    @property
    def title(self) -> str:
        runs = f", {self.runs} runs at once" if self.runs > 1 else ""
        extra = f", {' '.join(self.sandbox_options)}" if self.sandbox_options else ""
        return f"({self.key}) {self.limit}/{self.period:g}s, c={self.concurrency}{runs}{extra}"


SCENARIOS = (
    Scenario("a", 100, 2.0, 16, 1000, 300),
    Scenario("b", 20, 3.0, 64, 300, 90),
    Scenario("c", 60, 2.0, 16, 600, 240, runs=2, official=False),
    Scenario("d", 100, 2.0, 16, 1000, 300, sandbox_options=("--fault-reset-skew", "1")),
)


@dataclass(frozen=True, slots=True)
class Result:
    scenario: str
    tool: str
    rows: int
    landed: int
    elapsed_s: float
    rate_limited: int
    windows: int
    goodput: float
    per_window: float

    @property
    def lost(self) -> int:
        return self.rows - self.landed

    @property
    def meets_targets(self) -> bool:
        return (
            self.goodput >= GOODPUT_TARGET
            and self.per_window <= PER_WINDOW_TARGET
            and self.lost == 0
        )


def measure(
    scenario: Scenario, tool: str, *, rows: int, sandbox: SandboxProcess, start: float, end: float
) -> Result:
    """The sandbox's account of one tool's run between wall-clock `start` and `end`."""
    landed, rate_limited = sandbox.landed(), sandbox.responses(429)
    elapsed = end - start
    windows = math.floor(end / scenario.period) - math.floor(start / scenario.period) + 1
    return Result(
        scenario.title,
        tool,
        rows,
        landed,
        round(elapsed, 2),
        rate_limited,
        windows,
        round(landed / elapsed / (scenario.limit / scenario.period), 3),
        round(rate_limited / windows, 2),
    )


def run_ours(scenario: Scenario, rows: Sequence[BenchRow], work: Path) -> Result:
    """Our CLI, `scenario.runs` processes at once on disjoint shares of the rows."""
    with SandboxProcess(
        "--rate-limit", f"{scenario.limit}/{scenario.period:g}", *scenario.sandbox_options
    ) as sandbox:
        runs = []
        for i in range(scenario.runs):
            share = write_csv(work / f"ours-{i}.csv", rows[i :: scenario.runs])
            report = work / f"ours-{i}.report.json"
            log = work / f"ours-{i}.log"
            process = start_cli(
                "run", str(share), "--base-url", sandbox.base_url, "--no-journal",
                "--concurrency", str(scenario.concurrency), "--report", str(report),
                keys=sandbox.keys, stderr=log,
            )  # fmt: skip
            runs.append((process, report, log))
        spans = []
        for process, report, log in runs:
            if process.wait() not in (0, 1):
                raise RuntimeError(f"our CLI exited with {process.returncode}; see {log}")
            end = _summary_time(log)
            spans.append((end - json.loads(report.read_text())["elapsed_s"], end))
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        return measure(scenario, OURS, rows=len(rows), sandbox=sandbox, start=start, end=end)


def _summary_time(log: Path) -> float:
    """When our CLI's final summary was logged (wall clock), from its JSON log."""
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "summary":
                return datetime.fromisoformat(event["timestamp"]).timestamp()
    raise RuntimeError(f"no summary event in {log}")


def run_official(scenario: Scenario, rows: Sequence[BenchRow]) -> Result:
    with SandboxProcess("--rate-limit", f"{scenario.limit}/{scenario.period:g}",
                        *scenario.sandbox_options) as sandbox:  # fmt: skip
        start, end = asyncio.run(_official(sandbox, rows, scenario.concurrency))
        return measure(scenario, OFFICIAL, rows=len(rows), sandbox=sandbox, start=start, end=end)


async def _official(
    sandbox: SandboxProcess, rows: Sequence[BenchRow], concurrency: int
) -> tuple[float, float]:
    """Every row through the official async client; a row that raises is lost."""
    configuration = Configuration(host=sandbox.base_url, enable_retry=True)
    configuration.api_key["apiKeyAuth"] = sandbox.api_key
    configuration.api_key["appKeyAuth"] = sandbox.app_key
    gate = asyncio.Semaphore(concurrency)
    async with AsyncApiClient(configuration) as client:
        api = RumReplayPlaylistsApi(client)

        async def add(row: BenchRow) -> None:
            async with gate:
                with contextlib.suppress(Exception):  # a lost row; the sandbox counts what landed
                    await api.add_rum_replay_session_to_playlist(
                        ts=row.ts, playlist_id=row.playlist_id, session_id=row.session_id
                    )

        start = time.time()
        await asyncio.gather(*(add(row) for row in rows))
        return start, time.time()


HEADER = ("scenario", "tool", "rows", "landed", "lost", "elapsed s", "goodput", "429s",
          "windows", "429s/window")  # fmt: skip


def table(results: Sequence[Result]) -> str:
    """Text columns left-aligned, numbers right-aligned, a rule under the header."""
    cells = [HEADER] + [
        (r.scenario, r.tool, str(r.rows), str(r.landed), str(r.lost), f"{r.elapsed_s:.2f}",
         f"{r.goodput:.3f}", str(r.rate_limited), str(r.windows), f"{r.per_window:.2f}")
        for r in results
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows: about a third the time")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    parser.add_argument("--only", metavar="KEYS", help="only these scenarios, e.g. ab")
    args = parser.parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp:
        for scenario in SCENARIOS:
            if args.only and scenario.key not in args.only:
                continue
            rows = make_rows(scenario.quick_rows if args.quick else scenario.rows)
            print(f"running {scenario.title}, {len(rows)} rows ...", file=sys.stderr, flush=True)
            results.append(run_ours(scenario, rows, Path(tmp)))
            if scenario.official:
                results.append(run_official(scenario, rows))
    text = table(results)
    failed = [r for r in results if r.tool == OURS and not r.meets_targets]
    verdict = (
        f"targets (goodput >= {GOODPUT_TARGET}, <= {PER_WINDOW_TARGET:g} 429 per window, "
        f"none lost): {'missed by ' + ', '.join(r.scenario for r in failed) if failed else 'met'}"
    )
    if args.json:
        print(f"{text}\n{verdict}", file=sys.stderr)
        print(json.dumps([{**asdict(r), "lost": r.lost} for r in results], indent=2))
    else:
        print(f"{text}\n{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
