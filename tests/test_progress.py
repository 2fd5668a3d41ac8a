"""Progress: the figures, the live display on a real pseudo-terminal, and the log events."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import random
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import structlog
from pseudo_terminal import ANSI, Terminal, plain
from rich.console import Console
from structlog.typing import EventDict

from worker.humanize import duration, rate
from worker.input import ReaderOptions, Reading, RowFilter, open_inputs
from worker.progress import Gauge, LiveDisplay, Progress, Source, make_progress
from worker.report import Report
from worker.rows import InvalidRow, Outcome, Result, Row
from worker.shard import Shard


@dataclass
class Counters:
    """The figures progress reads, with a clock the test sets."""

    rows_read: int = 0
    failed: int = 0
    invalid: int = 0
    rate_limited: int = 0
    paused_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def rows_done(self) -> int:
        return self.rows_read


def reading(
    rows: int,
    bytes_read: int,
    bytes_total: int | None,
    *,
    ended: bool = False,
    then: tuple[int, int] = (0, 0),
) -> Callable[[], Reading]:
    """A reader that stays where it is: `then` is (rows, bytes) at its last refill."""
    return lambda: Reading(rows, bytes_read, bytes_total, ended, *then)


@pytest.mark.parametrize(
    ("source", "total", "exact", "percent", "eta_s"),
    [
        pytest.param(
            # 100 rows done at 10 rows/s; the reader has read 2,000 rows and 128 KiB of
            # 200 KB, and had read 1,000 rows in the first 50 KB.
            reading(2_000, 131_072, 200_000, then=(1_000, 50_000)),
            4_000,
            False,
            2.5,
            390.0,
            id="reader-far-ahead: rows read per byte, not rows done",
        ),
        pytest.param(
            # The demo: one buffer holds the whole 18 KB input before a refill has shown
            # how many rows a byte holds. Rows done per byte read gave 100 of ~100, 100%.
            reading(256, 18_448, 18_448),
            None,
            False,
            None,
            None,
            id="whole-input-in-one-buffer: no total yet, never 100%",
        ),
        pytest.param(
            reading(300, 18_448, 18_448, ended=True),
            300,
            True,
            33.3,
            20.0,
            id="end-of-input: the rows read, exactly",
        ),
        pytest.param(
            # The ratio measured earlier says 1,500, but 2,000 rows have been read already.
            reading(2_000, 190_000, 200_000, then=(1_000, 133_333)),
            2_000,
            False,
            5.0,
            190.0,
            id="estimate-below-rows-read: rows read",
        ),
        pytest.param(
            reading(2_000, 131_072, None, then=(1_000, 50_000)),
            None,
            False,
            None,
            None,
            id="unknown-size: no total",
        ),
        pytest.param(
            reading(2_000, 131_072, None, ended=True),
            2_000,
            True,
            5.0,
            190.0,
            id="unknown-size-read-to-the-end: the rows read, exactly",
        ),
    ],
)
def test_total_comes_from_the_rows_read_and_percent_from_the_rows_done(
    source: Source,
    total: int | None,
    exact: bool,
    percent: float | None,
    eta_s: float | None,
) -> None:
    counters = Counters(rows_read=100, elapsed_s=10.0)
    snapshot = Gauge(counters, source).read()
    fields = snapshot.fields()
    assert (snapshot.rows_total, snapshot.rows_total_exact) == (total, exact)
    assert (fields["percent"], fields["eta_s"]) == (percent, eta_s)
    assert snapshot.rows_per_s == 10.0  # the pace is always there, from the rows done


def test_pace_follows_the_last_half_minute() -> None:
    counters = Counters()
    gauge = Gauge(counters, reading(0, 0, None))
    for second in range(0, 61, 5):
        # 100 rows/s for the first 30 s (a rerun skipping done rows), then 10 rows/s.
        counters.elapsed_s = second
        counters.rows_read = 100 * min(second, 30) + 10 * max(second - 30, 0)
        snapshot = gauge.read()
    assert snapshot.rows_per_s == pytest.approx(10.0)


def json_logger(out: io.StringIO, seen: asyncio.Event) -> Any:
    """A structlog logger as the CLI configures it off a terminal: JSON lines."""

    def notice(_: Any, __: str, event: EventDict) -> EventDict:
        if event["event"] == "progress":
            seen.set()
        return event

    return structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            structlog.processors.add_log_level,
            notice,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


@pytest.mark.parametrize("enabled", [None, False])
async def test_off_a_terminal_progress_is_a_log_event(enabled: bool | None) -> None:
    report = Report(created=30, failed=2, rate_limited=1, paused_s=1.5)
    out, seen = io.StringIO(), asyncio.Event()
    progress = make_progress(
        report,
        reading(64, 300, 1_200, then=(32, 300)),
        enabled=enabled,
        stream=io.StringIO(),  # not a terminal
        logger=json_logger(out, seen),
        interval_s=0.01,
    )
    async with progress:
        await seen.wait()
    event = json.loads(out.getvalue().splitlines()[0])
    assert event["event"] == "progress"
    assert event["level"] == "info"
    fields = ("rows_done", "rows_read", "rows_total_est", "rows_total_exact", "percent")
    assert {k: event[k] for k in (*fields, "failed", "rate_limited", "bytes_done")} == {
        "rows_done": 32,
        "rows_read": 64,
        "rows_total_est": 128,
        "rows_total_exact": False,
        "percent": 25.0,
        "failed": 2,
        "rate_limited": 1,
        "bytes_done": 300,
    }
    assert {"rows_per_s", "eta_s", "paused_s", "elapsed_s", "bytes_total"} <= event.keys()


def drawn_on(stream: io.StringIO, counters: Report, source: Source) -> Progress:
    """The live display as a terminal gets it, drawn on `stream`. (Which stream the real
    command draws on, and that it never draws into a log, is tested on a real
    pseudo-terminal: tests/test_terminal.py.)"""
    console = Console(file=stream, force_terminal=True, force_interactive=True, width=120)
    return Progress(Gauge(counters, source), (LiveDisplay(console), 0.5))


@pytest.mark.parametrize(
    ("ended", "shown"),
    [(False, "7 of ~70 rows (10%)"), (True, "7 of 70 rows (10%)")],
    ids=["estimated", "exact"],
)
async def test_the_total_is_shown_as_an_estimate_until_the_input_has_been_read(
    ended: bool, shown: str
) -> None:
    stream = io.StringIO()
    async with drawn_on(
        stream, Report(created=7), reading(70, 700, 700, ended=ended, then=(60, 600))
    ):
        pass
    assert shown in ANSI.sub("", stream.getvalue())


@pytest.mark.parametrize(
    ("per_s", "shown"),
    [
        (0.25, "0.25 rows/s"),
        (3.2, "3.2 rows/s"),
        (42.4, "42 rows/s"),
        (850.4, "850 rows/s"),
        (1_234, "1,234 rows/s"),
        (12_400, "12.4k rows/s"),
        (250_000, "250k rows/s"),
        (1_200_000, "1.2M rows/s"),
    ],
)
def test_a_rate_reads_well_from_a_few_rows_a_second_to_millions(per_s: float, shown: str) -> None:
    assert rate(per_s) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.4, "0.4s"),
        (12.2, "12s"),
        (59.6, "1m 00s"),
        (250, "4m 10s"),
        (7_500, "2h 05m"),
        (3 * 86_400 + 4 * 3_600, "3d 04h"),
    ],
)
def test_a_time_shows_its_two_largest_units(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


async def test_until_the_total_is_known_the_display_spins_and_shows_no_bar_or_eta() -> None:
    stream = io.StringIO()
    # Standard input: no size, not read to the end.
    async with drawn_on(stream, Report(created=7), reading(70, 700, None)):
        pass
    shown = ANSI.sub("", stream.getvalue())
    assert "7 rows" in shown
    assert "━" not in shown  # rich's bar for no total is a full bar in one colour
    assert "ETA" not in shown
    assert any(frame in shown for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")


CHILD = """
import asyncio, sys
import structlog
from worker.progress import make_progress
from worker.input import Reading
from worker.report import Report

async def main() -> None:
    report = Report()
    position = [0]
    progress = make_progress(
        report,
        # The reader 100 rows ahead of the workers; a row a byte, 2,000 bytes.
        lambda: Reading(position[0] + 100, position[0] + 100, 2_000, False, *[position[0]] * 2),
        enabled=None, stream=sys.stderr, logger=structlog.get_logger(), refresh_s=0.01,
    )
    async with progress:
        for step in range(1, 21):
            report.created += 50
            position[0] = 50 * step
            if step == 5:
                report.rate_limited += 2
                report.paused_s += 4.0
                report.failed += 3
            await asyncio.sleep(0.005)

asyncio.run(main())
"""


def test_on_a_terminal_progress_is_a_live_display(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    with Terminal([sys.executable, str(script)]) as terminal:
        code = terminal.finish()

    assert code == 0, terminal.screen
    assert "\x1b[" in terminal.screen  # drawn in place with escape sequences, not printed as lines
    text = plain(terminal.screen)
    final = text.splitlines()
    assert any("ingest" in line and "1,003 of ~2,000 rows (50%)" in line for line in final)
    assert "rows/s" in text
    assert "ETA" in text
    assert "429s: 2, paused 4.0s" in text
    assert "3 failed" in text
    assert "progress" not in text  # no log events on a terminal


ROWS = 20_000
TS = 1_704_067_200_000


def csv_lines(count: int, seed: int) -> list[str]:
    """`count` data rows with random sessions (so gzip compresses them as it would real
    ones); every 50th has a bad ts, so invalid rows are read and done like the others."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        ts = "yesterday" if i % 50 == 49 else str(TS + i)
        lines.append(f"{rng.randint(1, 9_999)},{uuid.UUID(int=rng.getrandbits(128))},{ts}\n")
    return lines


def write_csv(path: Path, count: int, seed: int = 0) -> str:
    text = "playlist_id,session_id,ts\n" + "".join(csv_lines(count, seed))
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


def write_ndjson(path: Path, count: int) -> str:
    keys = ("playlist_id", "session_id", "ts")
    objects = (
        dict(zip(keys, line.rstrip().split(","), strict=True)) for line in csv_lines(count, 0)
    )
    path.write_text("".join(json.dumps(item) + "\n" for item in objects))
    return str(path)


def shard_owns(shard: Shard) -> RowFilter:
    """What `--shard` makes of a row, as `worker.ingest.Plan.owns` does."""

    def owns(item: Row | InvalidRow) -> bool:
        if isinstance(item, Row):
            return shard.owns(item.key)
        return shard.owns_line(item.source, item.line)

    return owns


@dataclass(frozen=True)
class Inputs:
    paths: list[str]
    owns: RowFilter | None = None
    shards: int = 1
    """The share of the rows `owns` keeps is about one in this many."""


INPUTS: dict[str, Callable[[Path], Inputs]] = {
    "csv": lambda tmp: Inputs([write_csv(tmp / "rows.csv", ROWS)]),
    "csv.gz (compressed bytes)": lambda tmp: Inputs([write_csv(tmp / "rows.csv.gz", ROWS)]),
    "ndjson": lambda tmp: Inputs([write_ndjson(tmp / "rows.ndjson", ROWS)]),
    "two files": lambda tmp: Inputs(
        [write_csv(tmp / "a.csv", 12_000, seed=1), write_csv(tmp / "b.csv", 8_000, seed=2)]
    ),
    "shard 1/3 (this run's rows of those read)": lambda tmp: Inputs(
        [write_csv(tmp / "rows.csv", ROWS)], owns=shard_owns(Shard(1, 3)), shards=3
    ),
}


def account(report: Report, items: list[Row | InvalidRow]) -> None:
    """What the run makes of rows: each one done, invalid ones as invalid, and every 10th
    line skipped (done by an earlier run), as the report counts them."""
    for item in items:
        if isinstance(item, InvalidRow):
            report(item)
        elif item.line % 10 == 0:
            report(Outcome(item, Result.SKIPPED))
        else:
            report(Outcome(item, Result.CREATED, 201))


@pytest.mark.parametrize("make", INPUTS.values(), ids=INPUTS.keys())
def test_the_real_reader_far_ahead_of_the_workers_gives_a_sane_estimate_then_the_exact_total(
    make: Callable[[Path], Inputs], tmp_path: Path
) -> None:
    inputs = make(tmp_path)
    ours = inputs.owns or (lambda _: True)
    with open_inputs(inputs.paths, ReaderOptions(), owns=inputs.owns) as stream:
        report = Report()
        gauge = Gauge(report, stream.reading)
        items = iter(stream)
        read = list(islice(items, ROWS // 2 // inputs.shards))  # about halfway
        read_ahead, done_ahead = len(read), len(read) // 4
        account(report, read[:done_ahead])  # the workers far behind the reader

        ahead = gauge.read()

        read += items
        end = gauge.read()
        account(report, read[done_ahead:])
        done = gauge.read()

    total = len(read)
    assert (ahead.rows_done, ahead.rows_read, ahead.rows_total_exact) == (
        done_ahead,
        read_ahead,
        False,
    )
    # Halfway, rows per byte so far are within 1% of the input's (the shard's share too).
    assert ahead.rows_total == pytest.approx(total, rel=0.01)
    assert ahead.fields()["percent"] == pytest.approx(100 * done_ahead / total, rel=0.01, abs=0.1)
    assert (end.rows_total, end.rows_total_exact, end.rows_done) == (total, True, done_ahead)
    assert end.fields()["percent"] == round(100 * done_ahead / total, 1)
    assert (done.rows_done, done.fields()["percent"], done.eta_s) == (total, 100.0, 0.0)
    assert done.invalid == sum(isinstance(item, InvalidRow) for item in read) > 0
    assert all(ours(item) for item in read), "a shard's stream holds only its own rows"
    assert report.skipped > 0


def test_standard_input_has_no_total_until_it_has_been_read_to_the_end() -> None:
    data = ("playlist_id,session_id,ts\n" + "".join(csv_lines(ROWS, 0))).encode()
    with open_inputs(["-"], ReaderOptions(), stdin=io.BytesIO(data)) as stream:
        report = Report()
        gauge = Gauge(report, stream.reading)
        items = iter(stream)
        account(report, list(islice(items, ROWS // 2)))
        halfway = gauge.read()
        rest = list(items)
        end = gauge.read()

    assert (halfway.rows_total, halfway.fields()["percent"], halfway.eta_s) == (None, None, None)
    assert halfway.bytes_total is None
    assert (end.rows_total, end.rows_total_exact) == (ROWS, True)
    assert end.fields()["percent"] == 50.0
    assert len(rest) == ROWS // 2


@pytest.mark.parametrize("dry_run", [False, True])
def test_rows_a_stop_left_unsent_are_not_done_except_in_a_dry_run(dry_run: bool) -> None:
    """An interrupted run's bar stays where the run got to, not at 100% because the rows
    it never sent have their result; in a dry run not sending is every row's result."""
    report = Report(dry_run=dry_run)
    rows = [Row(1001, f"s{n}", TS, "rum", "in.csv", n + 2) for n in range(10)]
    for row in rows[:3]:
        report(Outcome(row, Result.NOT_ATTEMPTED if dry_run else Result.CREATED, 201))
    for row in rows[3:]:
        report(Outcome(row, Result.NOT_ATTEMPTED))  # the stop's account of the rest
    snapshot = Gauge(report, reading(10, 100, 100, ended=True)).read()
    assert (snapshot.rows_read, snapshot.rows_total) == (10, 10)
    assert snapshot.rows_done == (10 if dry_run else 3)
    assert snapshot.fields()["percent"] == (100.0 if dry_run else 30.0)


async def test_the_last_frame_of_an_interrupted_run_shows_where_it_got_to_and_no_eta() -> None:
    stream = io.StringIO()
    report = Report(created=3, not_attempted=7)  # a stop left seven rows unsent
    async with drawn_on(stream, report, reading(10, 100, 100, ended=True)):
        pass
    last = ANSI.sub("", stream.getvalue()).rsplit("ingest", 1)[-1]
    assert "3 of 10 rows (30%)" in last
    assert "ETA" not in last
