"""Structured logs: one event per row outcome, pauses and aborts, and a final summary.

JSON lines on standard error when it is not a terminal (for log shippers), readable
console output when it is. The run's keys are scrubbed from every line as a last line of
defence: nothing in the code logs them, and this makes sure of it.

A JSON line is written for every row, thousands a second, so that path does the least it
can: one processor adds the level and timestamp, serialises (orjson when installed) and
redacts the finished bytes, and the logger is bound once rather than on every call.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, MutableMapping
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
    """Replaces every secret in a finished line, in each form the renderer writes it.

    Working on the line rather than on the event covers every value and key, nested or
    not, exception messages included, in one substring search per form.
    """

    def __init__(self, forms: Iterable[Line], replacement: Line) -> None:
        self._forms: tuple[Line, ...] = tuple(dict.fromkeys(form for form in forms if form))
        self._replacement: Line = replacement

    def __call__(self, line: Line) -> Line:
        for form in self._forms:
            if form in line:
                line = line.replace(form, self._replacement)
        return line


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
        self._redact = Redactor((_dumps(s)[1:-1] for s in secrets if s), REDACTED.encode())
        self._timestamp = UtcTimestamps()

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> bytes:
        event["level"] = _LEVELS.get(method, method)
        event["timestamp"] = self._timestamp()
        return self._redact(_dumps(event))


class ConsoleLine:
    """structlog's console renderer, redacted: a key appears as itself in a plain string,
    and escaped as `repr` writes it inside containers and exceptions."""

    def __init__(self, secrets: Iterable[str], *, colors: bool) -> None:
        self._render = structlog.dev.ConsoleRenderer(colors=colors)
        self._redact = Redactor(
            (form for s in secrets if s for form in (s, repr(s)[1:-1])), REDACTED
        )

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        return self._redact(self._render(logger, method, event))


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
        buffer = out.buffer if hasattr(out, "buffer") else cast(BinaryIO, _TextAsBytes(out))
        factory = structlog.BytesLoggerFactory(buffer)
    else:
        processors = [
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            ConsoleLine(secrets, colors=out.isatty()),
        ]
        factory = structlog.PrintLoggerFactory(out)
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


class _TextAsBytes:
    """The part of a binary stream the bytes logger uses, over a text stream."""

    def __init__(self, text: TextIO) -> None:
        self._text = text

    def write(self, data: bytes) -> int:
        return self._text.write(data.decode())

    def flush(self) -> None:
        self._text.flush()


class LogObserver:
    """The run's events as log lines (see `worker.observe.RunObserver`)."""

    def __init__(self, log: structlog.typing.FilteringBoundLogger) -> None:
        self._log = log

    def rejected(self, row: InvalidRow) -> None:
        self._log.warning("invalid_row", source=row.source, line=row.line, reason=row.reason)

    def outcome(self, outcome: Outcome) -> None:
        row = outcome.row
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
        self._log.info("paused", seconds=round(seconds, 3), reason=reason)
