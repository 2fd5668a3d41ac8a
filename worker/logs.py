"""Structured logs: one event per row outcome, pauses and aborts, and a final summary.

JSON lines on standard error when it is not a terminal (for log shippers), readable
console output when it is. The run's keys are scrubbed from every line as a last line of
defence (`worker.scrub`): nothing in the code logs them, and this makes sure of it. (A key
too short to be a real one, like the sandbox's `x`, only where it stands alone.)

A line that cannot be written (standard error is a terminal closed after SIGHUP, or a
pipe whose reader is gone) silences the log for good rather than raise: the run must still
write its report and commit its journal (`QuietStream`).

A JSON line is written for every row, thousands a second, so that path does the least it
can: the row's fields reach the processor as the one dict they are built in
(`RunLogger.emit`), not as keyword arguments; one processor adds the level and timestamp,
serialises (orjson when installed) and redacts the finished bytes; the logger is bound
once rather than on every call; and the lines logged in one turn of the event loop leave
in one write at the end of that turn (`LineWriter`), so the run makes a system call per
batch of answers, not per row, while every line is still out before the loop does
anything else. A row that went well is logged as what its line is made of and the time
(`RunLogger.deferred`): its line is made with the turn's others when they are written,
one after the other, rather than between two requests with the rest of the run's data in
the caches, which cost three times as much (`bench/README.md`, 2026-12-04, evening).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TextIO, TypeVar, cast

import structlog
from rich.console import Console
from structlog.typing import FilteringBoundLogger

from worker.scrub import Scrubber

try:  # orjson is a dependency where its wheels exist; the stdlib serializer also works.
    import orjson

    _dumps: Callable[[Any], bytes] = functools.partial(orjson.dumps, default=str)
    """A partial, not a function: one Python call less for every line."""
    _dumps_native: Callable[[Any], bytes] = orjson.dumps
    """For events of orjson's own types alone, which a row line is: a third cheaper than
    `_dumps`, whose keyword the partial merges into a new dict at every call. Raises
    `TypeError` for any other type."""

except ImportError:  # pragma: no cover - exercised only without the extra
    import json

    def _dumps(event: Any) -> bytes:
        return json.dumps(event, default=str, ensure_ascii=False, separators=(",", ":")).encode()

    _dumps_native = _dumps


_LEVELS = {"warn": "warning", "exception": "error"}
Item = TypeVar("Item")
Later = tuple[Callable[[Any, int], bytes], Any, int]
"""A line to be made when it is written: how, of what, and when it was logged."""
"""structlog's method names that are not the level they log at (as `add_log_level`)."""


_DIGITS = [f"{n:03d}" for n in range(1000)]
"""Three-digit groups: a lookup writes them faster than `%03d` does."""


class UtcTimestamps:
    """ISO-8601 UTC timestamps with microseconds: what `TimeStamper(fmt="iso", utc=True)`
    writes, for a fraction of its cost. The date and time are formatted once a second
    and the milliseconds once a millisecond (a loop turn logs its answers' lines within
    one), from the integer clock: no float arithmetic a line."""

    __slots__ = ("_head", "_ms", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = self._ms = -1
        self._prefix = self._head = ""  # up to the second's ".", and its milliseconds

    def __call__(self, now_ns: int | None = None) -> str:
        ms, micros = divmod((time.time_ns() if now_ns is None else now_ns) // 1000, 1000)
        if ms != self._ms:
            self._ms = ms
            second, millis = divmod(ms, 1000)
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._head = self._prefix + _DIGITS[millis]
        return self._head + _DIGITS[micros] + "Z"


class JsonLine:
    """The JSON form's only processor: level, timestamp, one serialisation, redaction."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._scrubber = Scrubber(secrets)
        # Inside a JSON string a key is written as the serialiser escapes it.
        self._finder = self._scrubber.finder(lambda shape: (_dumps(shape)[1:-1],))
        self._timestamp = UtcTimestamps()

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> bytes:
        return self.at(method, event, None)

    def at(self, method: str, event: MutableMapping[str, Any], now_ns: int | None) -> bytes:
        """The line of `event`, logged at `now_ns` (`time.time_ns()`; None: now)."""
        event["level"] = _LEVELS.get(method, method)
        event["timestamp"] = self._timestamp(now_ns)
        try:
            line = _dumps_native(event)
        except TypeError:  # a field of a type of its own (a path, an exception): its str
            line = _dumps(event)
        if self._finder.found(line):
            line = _dumps(self._scrubber.value(event))
        return line


class ConsoleLine:
    """structlog's console renderer, redacted: a key appears as itself in a plain string,
    and escaped as `repr` writes it in quoted strings, containers and exceptions. `repr`
    escapes a `'` or not depending on the rest of the string, so both are looked for."""

    def __init__(self, secrets: Iterable[str], *, colors: bool) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=colors)
        self._scrubber = Scrubber(secrets)
        self._finder = self._scrubber.finder(_console_forms)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        line = self._render(logger, method, dict(event))  # the renderer takes fields out
        if self._finder.found(line):
            scrubbed = self._scrubber.value(event)
            assert isinstance(scrubbed, dict)
            line = self._render(logger, method, scrubbed)
        return line


def _console_forms(secret: str) -> tuple[str, ...]:
    # In a string that also holds a `"`, `repr` quotes with `'` and escapes each `'`; in
    # one with a `'` and no `"`, it quotes with `"` and escapes neither.
    return (secret, repr(secret + '"')[1:-2], repr(secret)[1:-1])


if TYPE_CHECKING:  # what `make_filtering_bound_logger` builds at run time

    class _FilteringAtInfo(structlog.BoundLoggerBase, FilteringBoundLogger): ...

else:
    _FilteringAtInfo = structlog.make_filtering_bound_logger(logging.INFO)


class RunLogger(_FilteringAtInfo):
    """structlog's logger filtering at INFO, plus `emit` for the line written per row.

    A level method takes the fields as keyword arguments, which structlog packs into a
    dict and copies three times on their way to the processors: a third of what a row
    line cost. `emit`, a method of the kind structlog has custom wrapper classes add, runs the
    processor chain on the event dict the caller built and hands over.
    """

    def emit(self, level: Literal["info", "warning"], event_dict: dict[str, Any]) -> None:
        """Log `event_dict` (the "event" and its fields; taken, not copied) at `level`,
        which is never below INFO and so never filtered out."""
        event: Any = {**self._context, **event_dict} if self._context else event_dict
        for processor in self._processors:
            event = processor(self._logger, level, event)
        getattr(self._logger, level)(event)  # both chains end in a rendered line

    def deferred(
        self, level: Literal["info", "warning"], build: Callable[[Item], dict[str, Any]]
    ) -> Callable[[Item], None]:
        """A callable that logs `build(item)` at `level`, for a line logged for every row.

        In the JSON form the line is made when the loop's turn ends and its lines are
        written (`LineWriter`), all of the turn's lines one after the other, rather than
        each between two requests with the rest of the run's data in the caches; its
        time is the time it was logged. Otherwise `build` and `emit` at once."""
        processors, logger = list(self._processors), self._logger
        if self._context or len(processors) != 1 or not isinstance(logger, LineWriter):
            return lambda item: self.emit(level, build(item))
        (json_line,) = processors
        assert isinstance(json_line, JsonLine)
        at, later, clock = json_line.at, logger.msg, time.time_ns

        def render(item: Item, now_ns: int) -> bytes:
            return at(level, build(item), now_ns)

        def log(item: Item) -> None:
            later((render, item, clock()))

        return log


def configure(
    *, fmt: str | None, secrets: Iterable[str], stream: TextIO | None = None
) -> FilteringBoundLogger:
    """Build the run's logger; `fmt` None picks console on a terminal, JSON otherwise."""
    out = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    processors: list[structlog.typing.Processor]
    factory: Any
    if fmt == "json":
        processors = [JsonLine(secrets)]
        # A text stream without a buffer (tests' StringIO) takes the bytes decoded.
        binary = out.buffer if hasattr(out, "buffer") else _TextAsBytes(out)
        writer = LineWriter(QuietStream(binary, silence=out))
        factory = writer.factory
    else:
        processors = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            ConsoleLine(secrets, colors=in_colour(out)),
        ]
        # The current sys.stderr at each write, so that a live progress display, which
        # redirects it while running, prints the lines above itself.
        factory = structlog.PrintLoggerFactory(
            cast(TextIO, QuietStream(out if stream is not None else _CurrentStderr(), silence=out))
        )
    structlog.configure(
        processors=processors,
        wrapper_class=RunLogger,
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Bound now, so that each call goes straight to the processors, not through a proxy.
    logger: RunLogger = structlog.get_logger("rum-playlist-ingest").bind()
    return logger


def in_colour(out: TextIO) -> bool:
    """Whether rich would colour `out` (not under a non-empty `NO_COLOR`, nor `TERM=dumb`,
    nor off a terminal): asked of rich itself, so the console lines never disagree with
    the live display and the summary printed beside them."""
    console = Console(file=out)
    return console.color_system is not None and not console.no_color


class LineWriter:
    """The JSON form's logger: lines logged while an event loop runs are joined and
    written (and flushed) once, in a callback at the end of the loop's current turn;
    outside a loop, and from other threads, each line is written at once, after any
    that are waiting. Lines still waiting when the process exits are written then.

    A line logged in the loop takes no lock, which cost more than the rest of `msg`:
    appending to a list is atomic, and only the loop's thread uses `_scheduled`. The
    writes take the lock, and take out only the lines they write.
    """

    def __init__(self, out: BinaryIO | _TextAsBytes | QuietStream) -> None:
        self._out = out
        self._lines: list[bytes | Later] = []
        self._scheduled = False
        self._loop_thread = 0  # the thread whose loop will flush, while `_scheduled`
        self._lock = threading.Lock()
        _WRITERS.add(self)

    def factory(self, *_args: object) -> LineWriter:
        return self

    def msg(self, line: bytes | Later) -> None:
        if self._scheduled and threading.get_ident() == self._loop_thread:
            self._lines.append(line)  # the flush due in this loop turn takes it too
            return
        try:
            loop = asyncio.get_running_loop()  # on Python 3.11, a getpid() system call
        except RuntimeError:  # no loop in this thread: nothing would flush it later
            with self._lock:
                self._lines.append(line)
                self._write()
            return
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            self._loop_thread = threading.get_ident()
            loop.call_soon(self.flush)

    # structlog calls the method named after the level.
    debug = info = warning = warn = error = err = exception = critical = fatal = msg

    def flush(self) -> None:
        self._scheduled = False  # first: a line appended after the write schedules another
        with self._lock:
            self._write()

    def _write(self) -> None:
        lines = self._lines[:]
        if lines:
            del self._lines[: len(lines)]  # not `clear`: a line the loop adds meanwhile stays
            rendered = [
                line if isinstance(line, bytes) else line[0](line[1], line[2]) for line in lines
            ]
            rendered.append(b"")
            self._out.write(b"\n".join(rendered))
            self._out.flush()


_WRITERS: weakref.WeakSet[LineWriter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """A loop closed with a flush still scheduled must not lose the lines it held."""
    for writer in list(_WRITERS):
        with contextlib.suppress(OSError, ValueError):  # the stream is already closed
            writer.flush()


class QuietStream:
    """A stream that stops writing, quietly and for good, at its first failure.

    Standard error fails with EIO once the terminal is gone (SIGHUP, a closed ssh
    session) and with EPIPE once the pipe's reader is (`| head`). A log line is never
    worth the run: raising there would skip the report and the journal's last commit.
    The descriptor behind `silence` is pointed at the null device too, so the
    interpreter's own flush of it at exit has nowhere to fail either."""

    __slots__ = ("__weakref__", "_out", "_silence", "dead")

    def __init__(self, out: Any, *, silence: object = None) -> None:
        self._out = out
        self._silence = silence
        self.dead = False

    def write(self, data: Any) -> int:
        if not self.dead:
            try:
                return int(self._out.write(data))
            except (OSError, ValueError):  # ValueError: already closed
                self._die()
        return len(data)

    def flush(self) -> None:
        if not self.dead:
            try:
                self._out.flush()
            except (OSError, ValueError):
                self._die()

    def _die(self) -> None:
        self.dead = True
        fileno = getattr(self._silence, "fileno", None)
        if fileno is None:
            return
        with contextlib.suppress(OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fileno())
            finally:
                os.close(null)


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the moment of writing."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _TextAsBytes:
    """The part of a binary stream the line writer uses, over a text stream."""

    def __init__(self, text: TextIO) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        return self._text.write(data.decode())

    def flush(self) -> None:
        self._text.flush()
