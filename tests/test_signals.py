"""SIGINT and SIGTERM sent to a real running process: it stops, says so, and loses nothing.

Each test waits for the run to show progress on its stderr before signalling, rather
than sleeping, and proves "nothing confirmed is lost" twice: the sandbox holds exactly
the rows reported created, and a rerun with the same journal sends none of them again.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import (
    API_KEY,
    APP_KEY,
    COMMAND_TIMEOUT_S,
    KEYS,
    Finished,
    MakeSandbox,
    assert_invariant,
    held,
    rows,
    run_cli,
    start_cli,
    write_csv,
)

from worker.chunks import CHUNK
from worker.sandbox import FaultConfig, Sandbox

Event = dict[str, object]


class Running:
    """A `python -m worker run` process whose stderr is read as it goes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._lines: list[str] = []

    async def until(self, predicate: Callable[[Event], bool], count: int = 1) -> None:
        """Read stderr until `count` log events satisfy `predicate`."""
        assert self.process.stderr is not None
        seen = 0
        while seen < count:
            line = await asyncio.wait_for(self.process.stderr.readline(), COMMAND_TIMEOUT_S)
            assert line, f"the run ended first:\n{''.join(self._lines)}"
            self._lines.append(line.decode())
            if line.startswith(b"{") and predicate(json.loads(line)):
                seen += 1

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def finish(self) -> Finished:
        """Read to the end and wait for the exit, leaving standard input open (unlike
        `communicate`), so a run that waits on its input is not let off."""
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        async with asyncio.timeout(COMMAND_TIMEOUT_S):
            out, err = await asyncio.gather(self.process.stdout.read(), self.process.stderr.read())
            code = await self.process.wait()
        return Finished(code, out.decode(), "".join(self._lines) + err.decode())


def is_row(event: Event) -> bool:
    return event.get("event") == "row"


def is_interrupted(event: Event) -> bool:
    return event.get("event") == "interrupted"


def created(done: Finished) -> set[tuple[int, str]]:
    return {
        (int(str(event["playlist_id"])), str(event["session_id"]))
        for event in done.events("row")
        if event["result"] == "created"
    }


class Scenario:
    """One input, journal and report, run against `sandbox` and then resumed."""

    def __init__(self, sandbox: Sandbox, tmp_path: Path, count: int, *options: str) -> None:
        self.sandbox = sandbox
        self.count = count
        self.report = tmp_path / "report.json"
        input_path = write_csv(tmp_path / "in.csv", rows(count))
        self.args = [
            "run",
            str(input_path),
            "--base-url",
            sandbox.base_url,
            "--journal",
            str(tmp_path / "journal.sqlite3"),
            *options,
        ]

    async def start(self) -> Running:
        return Running(await start_cli(*self.args, "--report", str(self.report), env=KEYS))

    def check_interrupted(self, done: Finished, code: int) -> dict[str, int]:
        """The exit status, a report that adds up, and no confirmed row missing."""
        assert done.code == code, done.stderr
        report: dict[str, int] = json.loads(self.report.read_text())
        assert_invariant(report)
        assert report["exit_code"] == code
        assert report["not_attempted"] > 0
        assert report["created"] == len(created(done))
        assert held(self.sandbox) == created(done)
        for text in (done.stdout, done.stderr, self.report.read_text()):
            assert API_KEY not in text
            assert APP_KEY not in text
        return report

    async def check_resumes(self, first: dict[str, int]) -> None:
        """A rerun skips every row confirmed before the signal and sends only the rest."""
        self.sandbox.reconfigure(faults=FaultConfig())
        again = await run_cli(*self.args, env=KEYS)

        assert again.code == 0, again.stderr
        assert again.summary["skipped"] == first["created"]
        assert again.summary["created"] == self.count - first["created"]
        assert self.sandbox.stats.duplicate_puts == 0
        assert len(held(self.sandbox)) == self.count


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
    ids=["TERM", "INT", "HUP"],
)
async def test_a_signal_stops_gracefully_and_loses_nothing(
    make_sandbox: MakeSandbox, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    sandbox = await make_sandbox(
        api_key=API_KEY, app_key=APP_KEY, faults=FaultConfig(latency_ms=(5, 15))
    )
    scenario = Scenario(sandbox, tmp_path, 400, "--concurrency", "4")
    running = await scenario.start()

    await running.until(is_row, count=20)
    running.send(signum)
    done = await running.finish()

    report = scenario.check_interrupted(done, code)
    assert report["created"] >= 20
    (interrupted,) = done.events("interrupted")
    assert interrupted["signal"] == signum.name
    assert not done.events("aborted")
    # Requests in flight were let finish: none is reported as cut off.
    assert not [e for e in done.events("row") if "in flight" in str(e["error"])]
    await scenario.check_resumes(report)


async def test_a_second_signal_stops_at_once(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)
    # A grace and a timeout far beyond the test's own limit: only a prompt stop passes.
    scenario = Scenario(
        sandbox, tmp_path, 200, "--concurrency", "4", "--grace", "3600", "--timeout", "3600"
    )
    running = await scenario.start()
    await running.until(is_row, count=10)
    sandbox.reconfigure(faults=FaultConfig(hang=1.0))  # from now on no request is answered

    await _until_hung(sandbox, 4)
    running.send(signal.SIGTERM)
    await running.until(is_interrupted)
    running.send(signal.SIGINT)
    done = await running.finish()

    report = scenario.check_interrupted(done, 143)
    cut_off = [e for e in done.events("row") if "in flight" in str(e["error"])]
    assert len(cut_off) == 4
    assert {e["result"] for e in cut_off} == {"not_attempted"}
    assert [e["detail"] for e in done.events("interrupted")][1] == "stopping at once"
    await scenario.check_resumes(report)


async def quiet_stdin_run(
    sandbox: Sandbox, tmp_path: Path, env: dict[str, str]
) -> tuple[Running, Path]:
    """A run reading standard input that sends more rows than one chunk, then nothing:
    the reader is left waiting for the rest, as behind a slow producer."""
    report_path = tmp_path / "report.json"
    process = await start_cli(
        *("run", "-", "--format", "csv", "--base-url", sandbox.base_url, "--no-journal"),
        *("--report", str(report_path), "--concurrency", "4"),
        env=env,
        stdin=b"",
    )
    assert process.stdin is not None
    process.stdin.write(write_csv(tmp_path / "in.csv", rows(CHUNK + 44)).read_bytes())
    await process.stdin.drain()  # and left open: Running.finish does not close it
    return Running(process), report_path


async def test_a_signal_is_not_held_up_by_a_quiet_standard_input(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)
    running, report_path = await quiet_stdin_run(sandbox, tmp_path, KEYS)

    # Rows that trickle in are sent as they come, not held until a chunk is full.
    await running.until(is_row, count=CHUNK + 44)
    running.send(signal.SIGTERM)
    done = await running.finish()

    assert done.code == 143, done.stderr
    report = json.loads(report_path.read_text())
    assert_invariant(report)
    assert report["created"] == len(held(sandbox)) == CHUNK + 44


async def test_a_second_signal_ends_an_abort_waiting_for_the_rest_of_its_input(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY)
    wrong_keys = {"DD_API_KEY": "not-the-api-key", "DD_APP_KEY": APP_KEY}
    running, report_path = await quiet_stdin_run(sandbox, tmp_path, wrong_keys)

    await running.until(is_row, count=CHUNK + 44)  # aborted; every row read is counted
    running.send(signal.SIGTERM)
    await running.until(is_interrupted)
    running.send(signal.SIGTERM)
    done = await running.finish()

    assert done.code == 3, done.stderr
    report = json.loads(report_path.read_text())
    assert_invariant(report)
    assert report["not_attempted"] == report["rows_read"] == CHUNK + 44
    assert sandbox.stats.requests <= 4 + 5
    (aborted,) = done.events("aborted")
    assert aborted["reason"] == "the API keeps refusing the keys"


async def _until_hung(sandbox: Sandbox, count: int) -> None:
    """Wait until `count` requests are held by the sandbox's hang fault (a counter with
    no event to wait on, hence the polling)."""
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        while sandbox.stats.hung < count:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def waiting_on_stdin(pid: int) -> bool:
    """Whether one of the process's threads waits in read(2) on its standard input:
    Linux's /proc shows the system call (0 on x86-64, 63 on arm64) and its first
    argument, the descriptor. (The run reads its input in a thread of its own.)"""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            call = (task / "syscall").read_text().split()[:2]
        except OSError:  # the thread ended meanwhile
            continue
        if call in (["0", "0x0"], ["63", "0x0"]):
            return True
    return False


async def blocked_reading_stdin(pid: int) -> None:
    """A process state, not an event: polled, in a thread, until it holds."""

    def poll() -> None:
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while not waiting_on_stdin(pid):
            assert time.monotonic() < deadline, "the process never waited on its input"
            time.sleep(0.01)

    await asyncio.to_thread(poll)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_before_the_run_starts_ends_it_with_a_report(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """Standard input open and quiet: the input check blocks reading it, before the
    event loop has taken the signals over."""
    report = tmp_path / "report.json"
    process = await start_cli(
        "run", "-", "--base-url", "http://127.0.0.1:9", "--no-journal",
        "--report", str(report), env=KEYS, stdin=b"",
    )  # fmt: skip
    await blocked_reading_stdin(process.pid)

    process.send_signal(signum)
    done = await Running(process).finish()

    assert done.code == code, done.stderr
    assert "Traceback" not in done.stderr
    (interrupted,) = done.events("interrupted")
    assert interrupted["signal"] == signum.name
    assert json.loads(report.read_text())["exit_code"] == done.summary["exit_code"] == code


async def test_a_signal_during_a_dry_run_reports_the_rows_read_so_far(tmp_path: Path) -> None:
    items = rows(150)
    text = write_csv(tmp_path / "in.csv", items).read_bytes()
    report = tmp_path / "report.json"
    process = await start_cli(
        "run", "-", "--format", "csv", "--dry-run", "--no-journal", "--report", str(report),
        env=KEYS, stdin=b"",
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(text)  # and no end: the dry run waits for more
    await process.stdin.drain()
    await blocked_reading_stdin(process.pid)

    process.send_signal(signal.SIGTERM)
    done = await Running(process).finish()

    assert done.code == 143, done.stderr
    assert "Traceback" not in done.stderr
    written = json.loads(report.read_text())
    assert_invariant(written)
    assert (written["rows_read"], written["not_attempted"], written["exit_code"]) == (150, 150, 143)
    # Rows the preview had not reached when the signal came are counted, not printed.
    puts = [line for line in done.stdout.splitlines() if line.startswith("PUT ")]
    assert len(puts) == len(set(puts)) <= 150


async def test_a_closed_terminal_still_gets_a_report_and_a_journal(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """SIGHUP as a closed terminal or ssh session sends it: standard error is gone too
    (EPIPE on every write), yet the run stops gracefully, writes its report, commits its
    journal (a rerun skips what was done) and exits 129."""
    sandbox = await make_sandbox(
        api_key=API_KEY, app_key=APP_KEY, faults=FaultConfig(latency_ms=(5, 15))
    )
    scenario = Scenario(sandbox, tmp_path, 400, "--concurrency", "4")
    running = await scenario.start()
    await running.until(is_row, count=20)
    process = running.process
    transport = process._transport  # type: ignore[attr-defined]
    transport.get_pipe_transport(2).close()  # the reading end goes: writes get EPIPE
    process.send_signal(signal.SIGHUP)
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        code = await process.wait()

    assert code == 129
    report = json.loads(scenario.report.read_text())
    assert_invariant(report)
    assert report["exit_code"] == 129
    assert report["created"] == len(held(sandbox))
    await scenario.check_resumes(report)
