"""The requests `remove` and `undo` send for the rows they remove, and the pages `verify`
fetches, with their times against the sandbox.

    .venv/bin/python bench/lifecycle.py [--rows 10000] [--playlists 2] [--json]

One sandbox process (`--minimal`, a limit that never binds) serves a sequence of
commands on the same generated rows, with one journal: `run` (every row created),
`verify` (every row present), `remove` (every row removed, default batch size), `run`
again (a removed row is no longer done: every row created again), `undo --last` (every
row removed), and `remove` against sandboxes that cap a bulk removal at 30 and at 1
sessions. Each command's requests come from its report and are checked against the
sandbox's own count of the routes it served; its time is the report's `elapsed_s`
(interpreter start-up left out). Every command must leave the store as expected.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import SandboxProcess, print_results, start_cli, wait_measured, write_generated_csv

NEVER_BINDING_LIMIT = "1000000000/1"


@dataclass(frozen=True, slots=True)
class Step:
    command: str
    rows: int
    requests: int
    """HTTP requests the command sent (its report), retries included."""
    served: dict[str, int]
    """What the sandbox served, by route."""
    elapsed_s: float
    held_after: int


def step(
    name: str, args: list[str], sandbox: SandboxProcess, work: Path, *, rows: int, expect: set[int]
) -> Step:
    before = sandbox.state()["stats"]["calls"]
    report, log = work / "report.json", work / f"{name.replace(' ', '_')}.log"
    process = start_cli(
        *args,
        "--base-url",
        sandbox.base_url,
        "--report",
        str(report),
        keys=sandbox.keys,
        stderr=log,
    )
    usage = wait_measured(process)
    if usage.exit_code not in expect:
        raise SystemExit(f"{name}: exit {usage.exit_code}; see the log:\n{log.read_text()[-2000:]}")
    state = sandbox.state()
    after = state["stats"]["calls"]
    served = {k: int(v) - int(before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0)}
    written = json.loads(report.read_text())
    if int(written["requests"]) != sum(served.values()):
        raise SystemExit(f"{name}: the report says {written['requests']}, the sandbox {served}")
    held = sum(len(records) for records in state["sessions"].values())
    return Step(name, rows, int(written["requests"]), served, float(written["elapsed_s"]), held)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--playlists", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the text on stderr")
    args = parser.parse_args(argv)
    playlists = tuple(1001 + n for n in range(args.playlists))
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="bench-lifecycle-") as tmp:
        work = Path(tmp)
        source = str(write_generated_csv(work / "rows.csv", args.rows, playlists))
        journal = ["--journal", str(work / "journal.sqlite3")]
        n = args.rows
        with SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox:
            plan = [
                ("run", ["run", source, *journal], {0}, n),
                ("verify", ["verify", source], {0}, n),
                ("remove", ["remove", source, *journal], {0}, 0),
                ("run again", ["run", source, *journal], {0}, n),
                ("undo --last", ["undo", "--last", *journal], {0}, 0),
            ]
            for name, command, expect, held in plan:
                print(f"{name} ...", file=sys.stderr, flush=True)
                done = step(name, command, sandbox, work, rows=n, expect=expect)
                if done.held_after != held:
                    raise SystemExit(f"{name}: the sandbox holds {done.held_after}, not {held}")
                steps.append(done)
        for cap in (30, 1):
            options = ("--rate-limit", NEVER_BINDING_LIMIT, "--max-bulk", str(cap))
            with SandboxProcess(*options) as sandbox:
                name = f"remove, --max-bulk {cap}"
                print(f"{name} ...", file=sys.stderr, flush=True)
                fresh = ["--journal", str(work / f"journal-{cap}.sqlite3")]
                step("fill", ["run", source, *fresh], sandbox, work, rows=n, expect={0})
                done = step(name, ["remove", source, *fresh], sandbox, work, rows=n, expect={0})
                if done.held_after != 0:
                    raise SystemExit(f"{name}: the sandbox still holds {done.held_after}")
                steps.append(done)
    lines = [
        f"{args.rows:,} rows over {args.playlists} playlists; sandbox --minimal in its own "
        f"process; {os.cpu_count()} CPUs",
        "",
        f"{'command':<24} {'requests':>8} {'rows/request':>12} {'seconds':>8}   served",
        *(
            f"{s.command:<24} {s.requests:>8,} {s.rows / max(1, s.requests):>12.1f} "
            f"{s.elapsed_s:>8.2f}   {', '.join(f'{k} {v:,}' for k, v in sorted(s.served.items()))}"
            for s in steps
        ),
    ]
    print_results("\n".join(lines), steps, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
