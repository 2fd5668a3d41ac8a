"""Progress: the figures, the live display on a real pseudo-terminal, and the log events."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from fcntl import ioctl
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict

from worker.progress import Gauge, make_progress
from worker.report import Report

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Counters:
    """The figures progress reads, with a clock the test sets."""

    rows_read: int = 0
    failed: int = 0
    invalid: int = 0
    rate_limited: int = 0
    paused_s: float = 0.0
    elapsed_s: float = 0.0


def test_total_is_estimated_from_the_bytes_read() -> None:
    counters = Counters(rows_read=1_000, elapsed_s=10.0, rate_limited=2, paused_s=3.0)
    snapshot = Gauge(counters, lambda: (250, 1_000)).read()
    assert snapshot.rows_total == 4_000
    assert snapshot.rows_per_s == 100.0
    assert snapshot.eta_s == 30.0
    assert snapshot.fields()["percent"] == 25.0


def test_without_a_known_size_there_is_a_pace_but_no_total() -> None:
    counters = Counters(rows_read=500, elapsed_s=5.0)
    snapshot = Gauge(counters, lambda: (12_345, None)).read()
    assert (snapshot.rows_total, snapshot.eta_s, snapshot.rows_per_s) == (None, None, 100.0)


def test_pace_follows_the_last_half_minute() -> None:
    counters = Counters()
    gauge = Gauge(counters, lambda: (0, None))
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
        lambda: (300, 1_200),
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
    assert {k: event[k] for k in ("rows_done", "rows_total_est", "failed", "rate_limited")} == {
        "rows_done": 32,
        "rows_total_est": 128,
        "failed": 2,
        "rate_limited": 1,
    }
    assert {"rows_per_s", "eta_s", "paused_s", "percent", "elapsed_s"} <= event.keys()


async def test_progress_can_be_forced_onto_a_stream_that_is_no_terminal() -> None:
    stream, out = io.StringIO(), io.StringIO()
    report = Report(created=7)
    progress = make_progress(
        report,
        lambda: (70, 700),
        enabled=True,
        stream=stream,
        logger=json_logger(out, asyncio.Event()),
    )
    async with progress:
        pass
    assert "7 of ~70 rows (10%)" in ANSI.sub("", stream.getvalue())
    assert out.getvalue() == ""


CHILD = """
import asyncio, sys
import structlog
from worker.progress import make_progress
from worker.report import Report

async def main() -> None:
    report = Report()
    position = [0]
    progress = make_progress(
        report, lambda: (position[0], 2_000), enabled=None, stream=sys.stderr,
        logger=structlog.get_logger(), refresh_s=0.01,
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


def run_in_terminal(argv: list[str]) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as stdin, stdout and stderr, as a person would."""
    controller, terminal = pty.openpty()
    ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    ambient = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
    env = {k: v for k, v in os.environ.items() if k not in ambient and not k.startswith("DD_")}
    env |= {"TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=ROOT
    ) as child:
        os.close(terminal)
        screen = read_until_closed(controller)
        return child.wait(), screen


def test_on_a_terminal_progress_is_a_live_display(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)

    code, screen = run_in_terminal([sys.executable, str(script)])

    assert code == 0, screen
    text = ANSI.sub("", screen)
    assert "\x1b[" in screen  # drawn in place with escape sequences, not printed as lines
    final = text.replace("\r", "\n").splitlines()
    assert any("ingest" in line and "1,003 of ~2,006 rows (50%)" in line for line in final)
    assert "rows/s" in text
    assert "ETA" in text
    assert "429s: 2, paused 0:00:04" in text
    assert "3 failed" in text
    assert "progress" not in text  # no log events on a terminal


def test_a_run_on_a_terminal_logs_only_what_needs_attention_above_the_display() -> None:
    bad_rows = str(ROOT / "sample_inputs" / "mixed_bad_rows.csv")
    argv = [sys.executable, "-m", "worker", "run", bad_rows, "--sandbox", "--no-journal"]

    code, screen = run_in_terminal(argv)

    assert code == 1, screen
    text = ANSI.sub("", screen)
    assert "ingest" in text  # the live display ran
    assert text.count("invalid_row") == 8  # each bad line once, above the display
    assert not re.search(r"\] row\s", text)  # rows that went well are counted, not listed
    assert "summary" in text
    assert "created=19" in text


def read_until_closed(fd: int) -> str:
    """Everything the child wrote to the terminal; Linux reports its exit as EIO."""
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, 65_536):
            chunks.append(chunk)
    except OSError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")
