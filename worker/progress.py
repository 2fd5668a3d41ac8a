"""How far a long run has got: a live display on a terminal, a `progress` event elsewhere.

Progress polls the run's counters and the reader's position a few times a second, so the
workers never call into it and a run with the display costs what a run without it does.
Both forms show the same figures (`Snapshot`): rows done of the estimated total, rows per
second over the last half minute, 429s and time paused, failures, and the time left.

The total is estimated, because only the input's size in bytes is known in advance (and
only for regular files): rows read per byte read so far, times the bytes in the input.
Rows read, not rows done: the reader runs ahead of the workers (the whole input, when it
is small), so rows done per byte read would put the total at the rows done, and show
100% while rows remain. Once the reader has reached the end, the total is exact: the
rows it read. Percent and time left are rows done against that total.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol, Self, TextIO

from rich.console import Console, RenderableType
from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text
from structlog.typing import FilteringBoundLogger

from worker.humanize import duration, rate
from worker.input import Reading

Source = Callable[[], Reading]
"""How far the reader has got: `worker.input.RowStream.reading`."""


RATE_WINDOW_S = 30.0
"""Rows per second are measured over this much recent time: long enough to smooth out a
pause, short enough to follow a change of pace (a rerun skips done rows far faster)."""


class Counters(Protocol):
    """What progress reads of the run's account; `worker.report.Report` provides it.

    Its `rows_read` are the rows with a result (skipped and invalid ones too), which is
    what the report calls read once the run is over; `rows_done` leaves out those a stop
    left unsent, so an interrupted run's bar stays where the run got to."""

    @property
    def rows_read(self) -> int: ...
    @property
    def rows_done(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def invalid(self) -> int: ...
    @property
    def rate_limited(self) -> int: ...
    @property
    def paused_s(self) -> float: ...
    @property
    def elapsed_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The figures of one moment of the run."""

    rows_done: int
    rows_read: int
    """Rows the reader has handed out: at least the rows done, often far more."""
    rows_total: int | None
    """Estimated from the rows and bytes read; None until the input's size and some rows
    are known, unless the reader has reached the end."""
    rows_total_exact: bool
    """The reader has reached the end: `rows_total` is the rows read, not an estimate."""
    bytes_done: int
    bytes_total: int | None
    rows_per_s: float | None
    eta_s: float | None
    rate_limited: int
    paused_s: float
    failed: int
    invalid: int
    elapsed_s: float

    def fields(self) -> dict[str, object]:
        """The figures as log fields, rounded for reading."""
        percent = None
        if self.rows_total:
            percent = round(100 * self.rows_done / self.rows_total, 1)
        return {
            "rows_done": self.rows_done,
            "rows_read": self.rows_read,
            "rows_total_est": self.rows_total,
            "rows_total_exact": self.rows_total_exact,
            "percent": percent,
            "rows_per_s": _round(self.rows_per_s, 1),
            "eta_s": _round(self.eta_s, 0),
            "rate_limited": self.rate_limited,
            "paused_s": round(self.paused_s, 1),
            "failed": self.failed,
            "invalid": self.invalid,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Gauge:
    """Turns the counters and the reader's progress into snapshots, keeping the recent
    history the rate needs. Time is the run's own elapsed time, so the report and progress
    agree."""

    def __init__(
        self, counters: Counters, source: Source, paused: Callable[[], float] | None = None
    ) -> None:
        self._counters = counters
        self._source = source
        # The time paused as the pacer measures it, up to now: a pause's announced length
        # counts only as it passes (the counters add it whole when it starts).
        self._paused = paused
        # Nothing is done when the run starts: the first rate is measured from there.
        self._history: deque[tuple[float, int]] = deque([(0.0, 0)])

    def read(self) -> Snapshot:
        c = self._counters
        now, done = c.elapsed_s, c.rows_done
        reading = self._source()
        rate = self._rate(now, done)
        rows_read = max(reading.rows, c.rows_read)
        total = _total(reading, rows_read)
        eta = None
        if total is not None and rate:
            eta = (total - done) / rate
        return Snapshot(
            rows_done=done,
            rows_read=rows_read,
            rows_total=total,
            rows_total_exact=reading.ended,
            bytes_done=reading.bytes_read,
            bytes_total=reading.bytes_total,
            rows_per_s=rate,
            eta_s=eta,
            rate_limited=c.rate_limited,
            paused_s=c.paused_s if self._paused is None else self._paused(),
            failed=c.failed,
            invalid=c.invalid,
            elapsed_s=now,
        )

    def _rate(self, now: float, rows: int) -> float | None:
        history = self._history
        history.append((now, rows))
        while len(history) > 1 and history[1][0] <= now - RATE_WINDOW_S:
            history.popleft()
        then, rows_then = history[0]
        return (rows - rows_then) / (now - then) if now > then else None


def _total(reading: Reading, rows_read: int) -> int | None:
    """The rows the run will have read at the end: exact once the reader is there, else
    rows per byte (as measured at the last refill) times the input's bytes."""
    if reading.ended:
        return rows_read
    if reading.bytes_total is None or reading.rows_then == 0 or reading.bytes_then == 0:
        return None
    return max(rows_read, round(reading.rows_then * reading.bytes_total / reading.bytes_then))


class Display(Protocol):
    def start(self, snapshot: Snapshot) -> None: ...
    def show(self, snapshot: Snapshot) -> None: ...
    def stop(self, snapshot: Snapshot) -> None:
        """The run is over: `snapshot` holds its final figures."""


class _BarAndLines(RichProgress):
    """The bar on one line, the other figures on the lines below: all on one line would
    be cut short on an 80-column terminal."""

    def __init__(
        self, *columns: ProgressColumn, lines: Callable[[_Texts], list[str]], **options: Any
    ) -> None:
        super().__init__(*columns, **options)
        self._lines = lines

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            for line in self._lines(task.fields["texts"]):
                yield Text.from_markup(line)


NARROW_BELOW = 80
"""Columns under which the pace moves off the bar's line, to a line of its own."""


class _BarOnceTotalKnown(ProgressColumn):
    """A spinner while the total is unknown, the bar once it is known.

    rich's bar for an unknown total is a pulse: a full-width bar whose motion is only in
    its colours, so without colour (NO_COLOR, a monochrome terminal) it reads as 100%
    done. A spinner cannot be mistaken for a filled bar."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(ratio=1))  # the bar's room, either way
        self._bar = BarColumn(bar_width=None)
        self._spinner = SpinnerColumn("dots", finished_text="")

    def render(self, task: Task) -> RenderableType:
        if task.total is None:
            return self._spinner.render(task)
        return self._bar.render(task)


class LiveDisplay:
    """A `rich` progress bar with the run's figures, redrawn in place. With `owns_file`,
    the console's file (the controlling terminal, opened for it) is closed at the end."""

    def __init__(self, console: Console, *, owns_file: bool = False) -> None:
        self._console = console
        self._owns_file = owns_file
        columns: tuple[ProgressColumn, ...]
        if console.width >= NARROW_BELOW:
            columns = (
                TextColumn("[bold]ingest"),
                _BarOnceTotalKnown(),
                TextColumn("{task.fields[texts].done}"),
                TextColumn("• {task.fields[texts].speed}"),
                TextColumn("{task.fields[texts].eta_part}"),
            )
            lines = _wide_lines
        else:
            columns = (_BarOnceTotalKnown(), TextColumn("{task.fields[texts].done}"))
            lines = _narrow_lines
        self._progress = _BarAndLines(
            *columns,
            lines=lines,
            console=console,
            auto_refresh=False,  # redrawn by `show`, from the event loop: no thread
            expand=True,
            # What else is written to the display's own stream while it runs (console
            # logs, say) is printed above it; the other stream may be a pipe: left alone.
            redirect_stdout=console.file is sys.stdout,
            redirect_stderr=console.file is sys.stderr,
        )
        self._task = TaskID(0)

    def start(self, snapshot: Snapshot) -> None:
        self._task = self._progress.add_task(
            "ingest", total=snapshot.rows_total, texts=_Texts.of(snapshot)
        )
        self._progress.start()

    def show(self, snapshot: Snapshot) -> None:
        self._progress.update(
            self._task,
            total=snapshot.rows_total,
            completed=snapshot.rows_done,
            refresh=True,
            texts=_Texts.of(snapshot),
        )

    def stop(self, snapshot: Snapshot) -> None:
        self.show(snapshot)
        self._progress.stop()
        if self._owns_file:
            self._console.file.close()


@dataclass(frozen=True, slots=True)
class _Texts:
    """The live display's figures, in rich markup."""

    done: str
    speed: str
    eta: str
    """`ETA 4m 10s`, or nothing while no total or no pace is known."""
    pauses: str
    failures: str
    elapsed: str

    @property
    def eta_part(self) -> str:
        return f"• {self.eta}" if self.eta else ""

    @classmethod
    def of(cls, s: Snapshot) -> _Texts:
        done = f"{s.rows_done:,} rows"
        if s.rows_total:
            percent = 100 * s.rows_done / s.rows_total
            about = "" if s.rows_total_exact else "~"
            done = f"{s.rows_done:,} of {about}{s.rows_total:,} rows ({percent:.0f}%)"
        pauses = f"429s: {s.rate_limited:,}, paused {duration(s.paused_s)}"
        if s.rate_limited:
            pauses = f"[yellow]{pauses}[/]"
        failures = f"{s.failed:,} failed" + (f", {s.invalid:,} invalid" if s.invalid else "")
        if s.failed or s.invalid:
            failures = f"[red]{failures}[/]"
        known = s.eta_s is not None and s.rows_done != s.rows_total
        return cls(
            done=done,
            speed="… rows/s" if s.rows_per_s is None or not s.rows_done else rate(s.rows_per_s),
            eta=f"ETA {duration(s.eta_s)}" if known and s.eta_s is not None else "",
            pauses=pauses,
            failures=failures,
            elapsed=f"{duration(s.elapsed_s)} elapsed",
        )


def _wide_lines(t: _Texts) -> list[str]:
    return [f"{t.pauses} • {t.failures} • {t.elapsed}"]


def _narrow_lines(t: _Texts) -> list[str]:
    pace = " • ".join(part for part in (t.speed, t.eta, t.elapsed) if part)
    return [pace, f"{t.pauses} • {t.failures}"]


class LogDisplay:
    """A structlog `progress` event with the figures as fields, for logs that are read
    later or by machines (cron mail, `kubectl logs`, journald)."""

    def __init__(self, logger: FilteringBoundLogger) -> None:
        self._logger = logger

    def start(self, snapshot: Snapshot) -> None:
        pass  # nothing to say yet: the first event comes after one interval

    def show(self, snapshot: Snapshot) -> None:
        self._logger.info("progress", **snapshot.fields())

    def stop(self, snapshot: Snapshot) -> None:
        pass  # the run's summary event follows, with the final figures


class Progress:
    """Shows a snapshot on each display at its own interval while running (the live
    display twice a second, the log's `progress` event every `--progress-interval`);
    `async with` runs it for the duration of the block."""

    def __init__(self, gauge: Gauge, *shown: tuple[Display, float]) -> None:
        """`shown`: each display, with the seconds between two of its snapshots."""
        self._gauge = gauge
        self._shown = shown
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Show progress until cancelled, then show the final figures."""
        clock = asyncio.get_running_loop().time
        first = self._gauge.read()
        for display, _ in self._shown:
            display.start(first)
        due = [clock() + interval_s for _, interval_s in self._shown]
        try:
            while True:
                await asyncio.sleep(min(due) - clock())
                snapshot = self._gauge.read()
                for index, (display, interval_s) in enumerate(self._shown):
                    if due[index] <= clock():
                        display.show(snapshot)
                        due[index] = clock() + interval_s
        finally:
            # Over: nothing is left to estimate, even where a stop left rows unsent.
            final = replace(self._gauge.read(), eta_s=None)
            for display, _ in self._shown:
                display.stop(final)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run(), name="progress")
        await asyncio.sleep(0)  # let the display start before the run does
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is None:
            return
        self._task.cancel()
        # `wait`, not `await task`: a cancellation of the caller itself must propagate.
        await asyncio.wait([self._task])
        if not self._task.cancelled() and (error := self._task.exception()) is not None:
            raise error


def live_console(enabled: bool | None, stream: TextIO) -> Console | None:
    """The console for the live display, or None when progress goes to the logs.

    The display is drawn on a terminal only: its redraws in a file or a pipe would
    corrupt the log that goes there. On `stream` when it is an interactive terminal
    (`enabled` None: rich decides, honouring `TERM=dumb` and `TTY_INTERACTIVE`), or any
    terminal when asked for (`enabled` True, `--progress`). Asked for while `stream` is
    not a terminal (`run --progress > log.json 2>&1`), on the controlling terminal, if the
    process has one. `--no-progress` (False) leaves only the log events."""
    if enabled is False:
        return None
    if stream.isatty():
        console = Console(file=stream, force_terminal=enabled, force_interactive=enabled)
        return console if console.is_interactive else None
    return controlling_terminal() if enabled else None


def drawn_beside_the_log(enabled: bool | None, stream: TextIO) -> bool:
    """The live display is drawn on `stream` itself, the log's own terminal, where it
    shows the counts: the log beside it need only show what needs attention. A display on
    the controlling terminal leaves the log elsewhere, and whole."""
    return stream.isatty() and live_console(enabled, stream) is not None


CONTROLLING_TERMINAL = "/dev/tty"


def controlling_terminal() -> Console | None:
    """A console on the process's controlling terminal, as wide as it is; None without
    one (cron, CI, a container run without `-t`). The caller closes its file."""
    try:
        tty = open(CONTROLLING_TERMINAL, "w", encoding="locale", errors="replace")  # noqa: SIM115
    except OSError:  # ENXIO: no controlling terminal
        return None
    columns = os.get_terminal_size(tty.fileno()).columns
    return Console(file=tty, force_terminal=True, force_interactive=True, width=columns or None)


def make_progress(
    counters: Counters,
    source: Source,
    *,
    enabled: bool | None,
    stream: TextIO,
    logger: FilteringBoundLogger,
    interval_s: float = 5.0,
    refresh_s: float = 0.5,
    paused: Callable[[], float] | None = None,
) -> Progress:
    """The live display, redrawn every `refresh_s`, where `live_console` draws it; a
    `progress` event every `interval_s` seconds unless the display is beside the log, on
    `stream`: a log in a file or a pipe is the same with or without `--progress`.
    `source` is the stream's `reading`; `paused`, the time paused so far (`Pacer`)."""
    gauge = Gauge(counters, source, paused)
    events = (LogDisplay(logger), interval_s)
    console = live_console(enabled, stream)
    if console is None:
        return Progress(gauge, events)
    if console.file is stream:  # on the log's own terminal: the counts are on screen
        return Progress(gauge, (LiveDisplay(console), refresh_s))
    # On the controlling terminal: the log, elsewhere, keeps its events.
    return Progress(gauge, (LiveDisplay(console, owns_file=True), refresh_s), events)
