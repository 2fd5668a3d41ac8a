"""`sessions`: the rows a RUM query finds, written as the tool's own NDJSON input, so they
can be reviewed, diffed and kept before `run` sends them.

The same search as `run --query` (`QueryRows`: the wrapped query, the paced pages, each
session once through the on-disk repeat check), written instead of sent. Rows are
flushed a chunk at a time, so a killed command leaves whole lines behind it. It moves no
position in the journal: only a run's committed rows may do that. `--from last` reads
the journal's end of the previous completed run of the same query and playlist (to see
what tonight's run would find); it needs `--playlist` for that reason.

Exit status: 0 the search completed and every row was written; 3 the search could not
go on, or got no page for `--max-stall` seconds (the rows found before are written, and
the summary says how far it got); 2
nothing could start; 141 the output was closed by its reader; 128 + N after signal N.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import structlog

from worker import aio, logs
from worker.client import Client
from worker.config import redact_url
from worker.deliver import Paced, silence_output
from worker.endpoint import open_target
from worker.events import Answered, Event
from worker.exits import EXIT_ABORTED, EXIT_CANNOT_START, EXIT_OK, EXIT_OUTPUT_CLOSED, signal_exit
from worker.files import OutputError, open_output_of
from worker.input import format_row
from worker.journal import JournalError, QueryKey, reading
from worker.pacer import Pacer, Pause
from worker.pipeline import Source, SourceFailed
from worker.query.source import SEARCH_KEYS_ADVICE
from worker.rows import Row
from worker.rowsource import QueryRows, paced_search
from worker.settings import Pace, QueryOptions, Target
from worker.stop import Reason, StopState

Logger = structlog.typing.FilteringBoundLogger

UNNAMED_PLAYLIST = 0
"""The rows' playlist when `--playlist` is not given: never written (the lines name no
playlist, and `run --playlist ID` gives them one), and no real playlist's id."""
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _abort_detail(reason: Reason) -> str:
    """What to do after the search ended early: refused keys need fixing before a rerun."""
    if reason is Reason.KEYS_REFUSED:
        return f"the rows found before it are written; {SEARCH_KEYS_ADVICE}, then run again"
    return "the rows found before it are written; run again to search again"


@dataclass(frozen=True, slots=True)
class SessionsConfig:
    query: QueryOptions
    playlist_id: int | None
    """None: the lines name no playlist."""
    data_source: str
    target: Target
    output: Path | None
    """None: standard output."""
    journal: Path | None
    """Read for `--from last` only; never written."""
    pace: Pace
    log_format: str | None = None


def write_sessions(config: SessionsConfig) -> int:
    """Search, write, and say how it went; the exit status."""
    credentials = config.target.credentials
    log = logs.configure(
        fmt=config.log_format, secrets=credentials.secrets() if credentials else ()
    )
    try:
        out = _open(config.output)
    except OutputError as exc:
        log.error("cannot_start", error=str(exc))
        return EXIT_CANNOT_START
    try:
        return aio.run(_Writer(config, out, log)())
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.close()


def _open(path: Path | None) -> TextIO:
    if path is None:
        return sys.stdout
    return os.fdopen(open_output_of("-o", path), "w", encoding="utf-8")


class _Previous:
    """The journal as `QueryRows` sees it here: the end of the previous completed search
    (for `--from last`), and nothing else; `sessions` commits nothing, so a later run
    neither resumes from it nor starts its `--from last` after it."""

    def __init__(self, journal: Path | None, target: str) -> None:
        self._journal = journal
        self._target = target

    def query_position(self, key: QueryKey) -> int | None:
        return None

    def completed_to(self, key: QueryKey) -> int | None:
        if self._journal is None or not self._journal.is_file():
            return None
        with reading(self._journal) as history:
            return history.completed_to(self._target, key)

    def save_query_position(self, key: QueryKey, ts_ms: int) -> None:
        pass

    def save_completed_to(self, key: QueryKey, ts_ms: int) -> None:
        pass


@dataclass(slots=True)
class _Counts:
    requests: int = 0
    rate_limited: int = 0
    written: int = 0


class _Writer:
    def __init__(self, config: SessionsConfig, out: TextIO, log: Logger) -> None:
        self.config = config
        self.out = out
        self.log = log
        self.counts = _Counts()
        self.received: list[int] = []
        self.closed = False

    def _count(self, event: Event) -> None:
        if isinstance(event, Answered):
            self.counts.requests += 1
            self.counts.rate_limited += event.rate_limited

    def _paused(self, pause: Pause) -> None:
        self.log.info(
            "paused", seconds=round(pause.pause_s, 3), reason=pause.reason, family=pause.family
        )

    async def __call__(self) -> int:
        config, log = self.config, self.log
        stop = StopState()
        async with open_target(config.target) as (route, credentials):
            assert credentials is not None, "a search needs keys"
            pacer = Pacer(
                rate=config.pace.rate, on_pause=self._paused, max_pause_s=config.pace.max_pause_s
            )
            rows = QueryRows(
                config.query,
                playlist_id=config.playlist_id or UNNAMED_PLAYLIST,
                target=route.base_url,
                data_source=config.data_source,
                shard=None,
                log=log,
            )
            async with Client(
                route,
                credentials,
                concurrency=1,
                timeout_s=config.pace.timeout_s,
                tls=config.target.tls,
            ) as client:
                paced = Paced(client.send, pacer=pacer, stop=stop, sink=self._count)
                try:
                    source = rows.open(
                        paced_search(paced, config.pace),
                        _Previous(config.journal, route.base_url),
                    )
                except (ValueError, JournalError) as exc:
                    message = exc.without_no_journal if isinstance(exc, JournalError) else exc
                    log.error("cannot_start", error=str(message))  # it takes no --no-journal
                    return EXIT_CANNOT_START
                fields = {"target": redact_url(route.base_url), **rows.start_fields()}
                log.info("start", output=str(config.output or "-"), **fields)
                try:
                    failure = await self._write(source, stop)
                finally:
                    await rows.aclose()
                if failure is not None and failure.reason is Reason.QUERY_REFUSED:
                    log.error("cannot_start", error=str(failure))  # nothing was found
                    return EXIT_CANNOT_START
            block = rows.finish(completed_run=failure is None and not self.received)
        code = self._exit(failure)
        summary: dict[str, object] = {
            "rows_written": self.counts.written,
            "requests": self.counts.requests,
            "rate_limited": self.counts.rate_limited,
            **block,
            "exit_code": code,
        }
        if failure is not None:
            log.error(
                "aborted",
                reason=failure.reason.value,  # failed, stalled (--max-stall), or keys refused
                cause=str(failure),
                detail=_abort_detail(failure.reason),
            )
        log.info("summary", **summary)
        return code

    async def _write(self, source: Source, stop: StopState) -> SourceFailed | None:
        """Every chunk written as it comes; the search's failure, if it had one."""
        named = self.config.playlist_id is not None
        with self._signals(stop):
            try:
                async for chunk in source:
                    lines = [
                        format_row(row, with_playlist=named)
                        for row in chunk
                        if isinstance(row, Row)
                    ]
                    self.out.write("".join(lines))
                    self.out.flush()
                    self.counts.written += len(lines)
                    if self.received:
                        return None
            except SourceFailed as exc:
                return None if self.received else exc
            except BrokenPipeError:
                silence_output(self.out)
                self.closed = True
        return None

    @contextlib.contextmanager
    def _signals(self, stop: StopState) -> Iterator[None]:
        """A signal stops the search after the page in hand is written."""
        loop = asyncio.get_running_loop()

        def handle(signum: int) -> None:
            self.received.append(signum)
            self.log.warning("interrupted", signal=signal.Signals(signum).name)
            stop.interrupt(signal.Signals(signum).name)

        for signum in _SIGNALS:
            loop.add_signal_handler(signum, handle, signum)
        try:
            yield
        finally:
            for signum in _SIGNALS:
                loop.remove_signal_handler(signum)

    def _exit(self, failure: SourceFailed | None) -> int:
        if self.received:
            return signal_exit(self.received[0])
        if self.closed:
            return EXIT_OUTPUT_CLOSED
        return EXIT_ABORTED if failure is not None else EXIT_OK
