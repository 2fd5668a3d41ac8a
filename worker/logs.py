"""Structured logs: one event per row outcome, pauses and aborts, and a final summary.

JSON lines on standard error when it is not a terminal (for log shippers), readable
console output when it is. A redacting processor scrubs the run's keys from every event
as a last line of defence: nothing in the code logs them, and this makes sure of it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, BinaryIO, TextIO

import structlog

from worker.rows import InvalidRow, Outcome

try:  # orjson is an optional speed-up (the `fast` extra); the stdlib serializer also works.
    import orjson

    def _dumps(event: Any, **_: Any) -> bytes:
        return orjson.dumps(event, default=str)

except ImportError:  # pragma: no cover - exercised only without the extra
    import json

    def _dumps(event: Any, **_: Any) -> bytes:
        return json.dumps(event, default=str, ensure_ascii=False).encode()


REDACTED = "[redacted]"


class Redact:
    """Replace any occurrence of a secret in event values (strings, nested or not)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def __call__(
        self, logger: object, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self._secrets:
            return event
        for key, value in event.items():
            if isinstance(value, str | dict | list | tuple):
                event[key] = self._scrub(value)
        return event


def configure(
    *, fmt: str | None, secrets: Iterable[str], stream: TextIO | None = None
) -> structlog.typing.FilteringBoundLogger:
    """Build the run's logger; `fmt` None picks console on a terminal, JSON otherwise."""
    out = stream if stream is not None else sys.stderr
    if fmt is None:
        fmt = "console" if out.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        Redact(secrets),
    ]
    factory: Any
    if fmt == "json":
        processors = [*shared, structlog.processors.JSONRenderer(serializer=_dumps)]
        buffer: BinaryIO = out.buffer if hasattr(out, "buffer") else _TextAsBytes(out)
        factory = structlog.BytesLoggerFactory(buffer)
    else:
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=out.isatty())]
        factory = structlog.PrintLoggerFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("rum-playlist-ingest")
    return logger


class _TextAsBytes:
    """Lets the bytes logger write to a text stream that has no buffer (tests' StringIO)."""

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
            result=outcome.result.value,
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
