"""The repeat check of a run without a journal, alone: peak RSS and keys/s at each count,
against the in-memory set it replaced.

    .venv/bin/python bench/repeats.py [--keys 100000,1000000] [--json]

Each measurement runs in a process of its own (peak RSS is a process's high-water mark):
`RepeatCheck` (SQLite's private temporary database), then a Python set of the same keys,
with UUID session ids as in `bench/memory.py`. Target: the repeat check's peak RSS at the
largest count within 5 MB of the smallest's (memory that does not grow with the rows);
the exit status is 1 when missed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from common import print_results

ROOT = Path(__file__).resolve().parent.parent
GROWTH_TARGET_MB = 5.0


@dataclass(frozen=True, slots=True)
class Result:
    kind: str
    keys: int
    max_rss_mb: float
    keys_per_s: float


def measure_here(kind: str, keys: int) -> Result:
    """In this process: admit `keys` distinct keys, then one repeat of each tenth."""
    from worker.journal import RepeatCheck
    from worker.rows import Row

    seen: set[tuple[int, str, str]] = set()
    check = RepeatCheck() if kind == "repeat check" else None
    started = time.perf_counter()
    for i in itertools.chain(range(keys), range(0, keys, 10)):
        row = Row(1000 + i % 3, str(uuid.UUID(int=i + 1)), None, "rum", "in.csv", i)
        if check is not None:
            check.admit(row)
        else:
            seen.add(row.key)
    elapsed = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Result(kind, keys, rss_mb, keys * 1.1 / elapsed)


def measure(kind: str, keys: int) -> Result:
    out = subprocess.run(
        [sys.executable, __file__, "--one", kind, str(keys)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Result(**json.loads(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", default="100000,1000000", help="comma-separated key counts")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asdict(measure_here(args.one[0], int(args.one[1])))))
        return 0
    counts = sorted(int(count) for count in args.keys.split(","))
    results = [measure(kind, n) for kind in ("repeat check", "set") for n in counts]
    lines = [f"{'kind':<13}  {'keys':>10}  {'peak RSS MB':>11}  {'keys/s':>9}"]
    lines += [
        f"{r.kind:<13}  {r.keys:>10,}  {r.max_rss_mb:>11.1f}  {r.keys_per_s:>9,.0f}"
        for r in results
    ]
    check = [r for r in results if r.kind == "repeat check"]
    growth = check[-1].max_rss_mb - check[0].max_rss_mb
    lines += [
        "",
        f"repeat check, peak RSS {check[-1].keys:,} - {check[0].keys:,} keys: "
        f"{growth:.1f} MB (target <= {GROWTH_TARGET_MB:g} MB)",
    ]
    print_results("\n".join(lines), results, as_json=args.json)
    return 1 if growth > GROWTH_TARGET_MB else 0


if __name__ == "__main__":
    raise SystemExit(main())
