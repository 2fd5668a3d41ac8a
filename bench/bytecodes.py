"""Python bytecodes a row: where the event loop's Python work goes, function by function.

    .venv/bin/python bench/bytecodes.py [--top 40] [--json]

Callgrind counts instructions per C function, and nearly all of the tool's own work
shows there as the interpreter's `_PyEval_EvalFrameDefault`, whoever's code it runs.
This counts the bytecodes each Python function executes instead, exactly, by tracing
(`sys.settrace` with `f_trace_opcodes`) in the event loop's thread, for this tool's run
and for `throughput.py`'s bare aiohttp loop, both over 1,000 and 3,000 generated rows
against one sandbox process: (count at 3,000 - count at 1,000) / 2,000 rows leaves
start-up and the end out. Each figure is repeatable to the bytecode, whatever else the
machine is doing.

Two caveats. A bytecode is not a unit of time (one may call C code that does much), so
this says where the Python goes, not the seconds. And tracing makes the run about a
hundred times slower, so code whose path depends on the time (a log line's cached
millisecond, a rate-limit window's end, the journal writer's batches) takes its slow
path more often than at full speed: its figures are upper bounds. The journal writer and
the input reader are other threads, not traced.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

from common import (
    NEVER_BINDING_LIMIT,
    ROOT,
    SandboxProcess,
    make_rows,
    start_cli,
    start_python,
    wait_measured,
    write_csv,
)

COUNTS = (1_000, 3_000)
# A `sitecustomize` for the traced process: counts each Python function's bytecodes in
# the thread that starts tracing, from `START` (None: from the start) to the exit.
TRACER = """
import atexit, collections, os, sys

_counts = collections.Counter()

def _tracer(frame, event, arg):
    frame.f_trace_opcodes, frame.f_trace_lines = True, False
    code = frame.f_code
    key = f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"

    def _count(frame, event, arg):
        if event == "opcode":
            _counts[key] += 1
        return _count

    return _count

def _dump():
    sys.settrace(None)
    with open(os.environ["BYTECODES_OUT"], "w") as out:
        out.writelines(f"{n}\\t{key}\\n" for key, n in _counts.items())

atexit.register(_dump)
if os.environ.get("BYTECODES_FROM_RUN"):
    import worker.pipeline

    _run = worker.pipeline.Pipeline.run

    async def _traced_run(self):
        sys.settrace(_tracer)
        await _run(self)

    worker.pipeline.Pipeline.run = _traced_run
else:
    sys.settrace(_tracer)
"""


def _counted(path: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        n, key = line.split("\t", 1)
        counts[key] += int(n)
    return counts


def _per_row(runs: dict[int, Path]) -> dict[str, float]:
    low, high = (_counted(runs[n]) for n in COUNTS)
    rows = COUNTS[1] - COUNTS[0]
    return {key: (high[key] - low.get(key, 0)) / rows for key in high}


def _where(key: str) -> str:
    """A function's module as a person names it: the tool's by path, others by package."""
    filename = key.split(":", 1)[0]
    worker = str(ROOT / "worker") + os.sep
    if filename.startswith(worker):
        return "worker/" + filename[len(worker) :]
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return Path(filename).name


def _short(key: str) -> str:
    filename, rest = key.split(":", 1)
    where = _where(key)
    return f"{where if where.startswith('worker/') else Path(filename).name}:{rest}"


def _measure(sandbox: SandboxProcess, work: Path, tracer: Path) -> dict[str, dict[int, Path]]:
    runs: dict[str, dict[int, Path]] = {"ours": {}, "bare": {}}
    os.environ["PYTHONPATH"] = str(tracer)
    for count in COUNTS:
        source = write_csv(work / f"rows{count}.csv", make_rows(count))
        for client, outputs in runs.items():
            sandbox.reset()
            out = outputs[count] = work / f"{client}{count}.txt"
            os.environ["BYTECODES_OUT"] = str(out)
            if client == "ours":
                os.environ["BYTECODES_FROM_RUN"] = "1"
                process = start_cli(
                    "run", str(source), "--base-url", sandbox.base_url, "--concurrency", "32",
                    "--journal", str(work / f"j{count}.sqlite3"), "--report",
                    str(work / f"r{count}.json"), keys=sandbox.keys, stderr=work / "log",
                )  # fmt: skip
            else:
                os.environ.pop("BYTECODES_FROM_RUN", None)
                process = start_python(
                    str(ROOT / "bench" / "throughput.py"), "--driver", "bare", "--base-url",
                    sandbox.base_url, "--input", str(source), "--concurrency", "32",
                    env=sandbox.keys,
                )  # fmt: skip
            if wait_measured(process).exit_code != 0:
                raise RuntimeError(f"{client} failed over {count} rows (see {work / 'log'})")
            if sandbox.responses(201) != count:
                raise RuntimeError(f"{client}: the sandbox did not add all {count} rows")
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=40, help="functions listed (default 40)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bytecodes-") as tmp:
        work = Path(tmp)
        tracer = work / "tracer"
        tracer.mkdir()
        (tracer / "sitecustomize.py").write_text(TRACER)
        with SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox:
            runs = _measure(sandbox, work, tracer)
        ours, bare = _per_row(runs["ours"]), _per_row(runs["bare"])
    totals = {name: sum(per.values()) for name, per in (("ours", ours), ("bare", bare))}
    modules: collections.Counter[str] = collections.Counter()
    for key, n in ours.items():
        modules[_where(key)] += n
    functions = sorted(ours.items(), key=lambda item: -item[1])[: args.top]
    if args.json:
        figures = {
            "bytecodes_per_row": totals,
            "ours_by_module": dict(modules.most_common()),
            "ours_top_functions": {_short(k): v for k, v in functions},
        }
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"bytecodes a row in the event loop's thread, ({COUNTS[1]:,} rows - {COUNTS[0]:,}) / "
        f"{COUNTS[1] - COUNTS[0]:,}: rum-playlist-ingest {totals['ours']:,.0f}, bare aiohttp "
        f"loop {totals['bare']:,.0f} ({totals['ours'] / totals['bare']:.2f}x)\n"
    )
    print("by module (ours):")
    for module, n in modules.most_common():
        if n >= 1:
            print(f"  {n:8.1f}  {module}")
    print(f"\nthe {args.top} busiest functions (ours):")
    for key, n in functions:
        print(f"  {n:8.1f}  {_short(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
