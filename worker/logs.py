"""Structured logs: one event per row outcome, pauses and aborts, and a final summary.

JSON lines on standard error when it is not a terminal (for log shippers), readable
console output when it is. The run's keys are scrubbed from every line as a last line of
defence: nothing in the code logs them, and this makes sure of it.

A JSON line is written for every row, thousands a second, so that path does the least it
can: one processor adds the level and timestamp, serialises (orjson when installed) and
redacts the finished bytes; the logger is bound once rather than on every call; and the
lines logged in one turn of the event loop leave in one write at the end of that turn
(`LineWriter`), so the run makes a system call per batch of answers, not per row, while
every line is still out before the loop does anything else.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, BinaryIO, Generic, TextIO, TypeVar, cast

import structlog

from worker.rows import InvalidRow, Outcome

try:  # orjson is an optional speed-up (the `fast` extra); the stdlib serializer also works.
    import orjson

    def _dumps(event: Any) -> bytes:
        return orjson.dumps(event, default=str)

except ImportError:  # pragma: no cover - exercised only without the extra
    import json

    def _dumps(event: Any) -> bytes:
        return json.dumps(event, default=str, ensure_ascii=False, separators=(",", ":")).encode()


REDACTED = "[redacted]"
_LEVELS = {"warn": "warning", "exception": "error"}
"""structlog's method names that are not the level they log at (as `add_log_level`)."""

Line = TypeVar("Line", str, bytes)


class Redactor(Generic[Line]):
    """Keeps the run's keys out of a finished line.

    Looking for them in the line, in each form the renderer writes a key, costs one
    substring search per form and finds them anywhere: in values, nested, in an
    exception's message. A line that holds one is rendered again from the event with the
    keys replaced in its strings, so the line keeps its syntax and field names whatever
    the key (even a one-letter key that also occurs in field names and numbers).
    """

    def __init__(self, secrets: Iterable[str], forms: Callable[[str], Iterable[Line]]) -> None:
        self._secrets = tuple(dict.fromkeys(secret for secret in secrets if secret))
        self._forms: tuple[Line, ...] = tuple(
            dict.fromkeys(form for secret in self._secrets for form in forms(secret))
        )

    def found(self, line: Line) -> bool:
        return any(form in line for form in self._forms)

    def scrub(self, value: object) -> object:
        """`value` with every key replaced in its strings; other objects (an exception,
        say) as their scrubbed `str`, which is how they render. Field names are the
        code's, never data, and stay as they are."""
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            return value
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {key: self.scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(item) for item in value]
        return self.scrub(str(value))


class UtcTimestamps:
    """ISO-8601 UTC timestamps with microseconds, formatted once per second: what
    `TimeStamper(fmt="iso", utc=True)` writes, for a fraction of its cost."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


class JsonLine:
    """The JSON form's only processor: level, timestamp, one serialisation, redaction."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Inside a JSON string a key is written as the serialiser escapes it.
        self._redactor = Redactor(secrets, lambda secret: (_dumps(secret)[1:-1],))
        self._timestamp = UtcTimestamps()

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> bytes:
        event["level"] = _LEVELS.get(method, method)
        event["timestamp"] = self._timestamp()
        line = _dumps(event)
        if self._redactor.found(line):
            line = _dumps(self._redactor.scrub(event))
        return line


class ConsoleLine:
    """structlog's console renderer, redacted: a key appears as itself in a plain string,
    and escaped as `repr` writes it inside containers and exceptions."""

    def __init__(self, secrets: Iterable[str], *, colors: bool) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=colors)
        self._redactor = Redactor(secrets, lambda secret: (secret, repr(secret)[1:-1]))

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        line = self._render(logger, method, dict(event))  # the renderer takes fields out
        if self._redactor.found(line):
            scrubbed = self._redactor.scrub(event)
            assert isinstance(scrubbed, dict)
            line = self._render(logger, method, scrubbed)
        return line


def configure(
    *, fmt: str | None, secrets: Iterable[str], stream: TextIO | None = None
) -> structlog.typing.FilteringBoundLogger:
    """Build the run's logger; `fmt` None picks console on a terminal, JSON otherwise."""
    out = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    processors: list[structlog.typing.Processor]
    factory: Any
    if fmt == "json":
        processors = [JsonLine(secrets)]
        # A text stream without a buffer (tests' StringIO) takes the bytes decoded.
        writer = LineWriter(out.buffer if hasattr(out, "buffer") else _TextAsBytes(out))
        factory = writer.factory
    else:
        processors = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            ConsoleLine(secrets, colors=out.isatty()),
        ]
        # The current sys.stderr at each write, so that a live progress display, which
        # redirects it while running, prints the lines above itself.
        factory = structlog.PrintLoggerFactory(
            out if stream is not None else cast(TextIO, _CurrentStderr())
        )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    # Bound now, so that each call goes straight to the processors, not through a proxy.
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(
        "rum-playlist-ingest"
    ).bind()
    return logger


class LineWriter:
    """The JSON form's logger: lines logged while an event loop runs are joined and
    written (and flushed) once, in a callback at the end of the loop's current turn;
    outside a loop, and from other threads, each line is written at once, after any
    that are waiting. Lines still waiting when the process exits are written then."""

    def __init__(self, out: BinaryIO | _TextAsBytes) -> None:
        self._out = out
        self._lines: list[bytes] = []
        self._scheduled = False
        self._lock = threading.Lock()
        _WRITERS.add(self)

    def factory(self, *_args: object) -> LineWriter:
        return self

    def msg(self, line: bytes) -> None:
        with self._lock:
            self._lines.append(line)
            if self._scheduled:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: nothing would flush it later
                self._write()
                return
            self._scheduled = True
        loop.call_soon(self.flush)

    # structlog calls the method named after the level.
    debug = info = warning = warn = error = err = exception = critical = fatal = msg

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            self._write()

    def _write(self) -> None:
        if self._lines:
            self._lines.append(b"")
            self._out.write(b"\n".join(self._lines))
            self._lines.clear()
            self._out.flush()


_WRITERS: weakref.WeakSet[LineWriter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """A loop closed with a flush still scheduled must not lose the lines it held."""
    for writer in list(_WRITERS):
        with contextlib.suppress(OSError, ValueError):  # the stream is already closed
            writer.flush()


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


class LogObserver:
    """The run's events as log lines (see `worker.observe.RunObserver`).

    `quiet` (a live progress display is showing the counts) leaves out the lines for
    rows that went well and for pauses; failures and invalid rows are still logged."""

    def __init__(self, log: structlog.typing.FilteringBoundLogger, *, quiet: bool = False) -> None:
        self._log = log
        self._quiet = quiet

    def rejected(self, row: InvalidRow) -> None:
        self._log.warning("invalid_row", source=row.source, line=row.line, reason=row.reason)

    def outcome(self, outcome: Outcome) -> None:
        row = outcome.row
        if self._quiet and not outcome.error:
            return
        log = self._log.warning if outcome.error else self._log.info
        log(
            "row",
            result=outcome.result,  # a str enum: serialised as its value
            playlist_id=row.playlist_id,
            session_id=row.session_id,
            data_source=row.data_source,
            status=outcome.http_status,
            attempts=outcome.attempts,
            latency_ms=round(outcome.latency_ms, 2),
            source=row.source,
            line=row.line,
            error=outcome.error,
            **({"note": outcome.note} if outcome.note else {}),
        )

    def response(self, status: int | None, latency_ms: float, *, retry: bool) -> None:
        pass

    def paused(self, seconds: float, reason: str) -> None:
        if not self._quiet:
            self._log.info("paused", seconds=round(seconds, 3), reason=reason)
