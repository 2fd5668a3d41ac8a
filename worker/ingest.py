"""`run`: wires the stages of one run together and turns how it ended into an exit code.

Everything that can be wrong with the options, keys, inputs or journal is found before
the first request, so such a run exits 2 having sent nothing. Once requests flow, every
row ends in the report, the journal and the logs, whether the run finishes, aborts or is
interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import structlog

from worker import aio, logs
from worker.client import Client
from worker.config import ConfigError, Route, redact_url
from worker.deadletter import DeadLetter, DeadLetterError
from worker.deliver import Paced, Preview
from worker.endpoint import open_target
from worker.events import Ended, Event, Sink, fan_out, reading
from worker.exits import EXIT_CANNOT_START, Ending, exit_status
from worker.files import OutputError, UnsafeFile
from worker.input import InputError, RowStream, open_inputs
from worker.jobs import StageParts, UndoJob
from worker.journal import (
    JournalError,
    Ledger,
    NoJournalLedger,
    RepeatCheck,
    SqliteJournal,
    done_before,
    new_run_id,
)
from worker.metrics import statsd_from
from worker.pacer import Pacer
from worker.pipeline import Deliver, Pipeline, Settings, Source
from worker.presenting import tell_start, tell_summary
from worker.progress import drawn_beside_the_log, make_progress
from worker.query.source import SEARCH_KEYS_ADVICE
from worker.report import Report, write_report
from worker.rowlog import WARNINGS_SHOWN, LogSink
from worker.rows import Outcome, Row, RowKey
from worker.rowsource import FileRows, QueryRows, Rows, paced_search
from worker.settings import RunConfig, Target, Watch
from worker.stop import Reason, StopState
from worker.terminal import read_by_a_person

Logger = structlog.typing.FilteringBoundLogger

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""A closed terminal or ssh session (SIGHUP) ends a run as gracefully as SIGTERM."""


def cannot_start(watch: Watch, message: str, report: Path | None = None) -> int:
    """An event like every other exit 2, for log shippers. The keys are not known here,
    and the message names no key (only options, variables and paths)."""
    return _refused(logs.configure(fmt=watch.log_format, secrets=()), message, report)


def _refused(log: Logger, message: str, report: Path | None, *, dry_run: bool = False) -> int:
    """Exit 2 before anything was sent. A `--report` is still written, of no rows, its
    `exit_code` 2 and its `error` the reason: a script reading it must not find an earlier
    run's report there and take it for this one's. Where it cannot be written (the path
    may be why the run cannot start) the event alone tells."""
    log.error("cannot_start", error=message)
    if report is not None:
        account = Report(dry_run=dry_run)
        account.finish(EXIT_CANNOT_START)
        account.extra["error"] = message
        with contextlib.suppress(OSError, UnsafeFile):
            write_report(account.as_dict(), report)
    return EXIT_CANNOT_START


def ingest(config: RunConfig, environ: Mapping[str, str]) -> int:
    credentials = config.target.credentials
    log = logs.configure(
        fmt=config.watch.log_format, secrets=credentials.secrets() if credentials else ()
    )
    if config.query is not None or not config.job.reads_inputs:
        return aio.run(_Run(config, None, log, environ)())
    with _signals_end_opening() as interrupted:
        try:
            # A shard's own rows only: the reader decides it, once per row.
            stream = open_inputs(
                list(config.inputs),
                config.reader,
                owns=config.shard.keeps if config.shard else None,
            )
        except InputError as exc:
            return _refused(log, str(exc), config.outputs.report, dry_run=config.dry_run)
    if interrupted:
        signum = interrupted[0]
        log.warning("interrupted", signal=signal.Signals(signum).name, detail="nothing was sent")
        return _finish(config, Report(dry_run=config.dry_run), Ending(Reason.SIGNAL, signum), log)
    with stream:
        return aio.run(_Run(config, stream, log, environ)())


@contextlib.contextmanager
def _signals_end_opening() -> Iterator[list[int]]:
    """Opening the inputs happens before the event loop takes the signals over, and may
    block (a FIFO with no writer yet): a signal then ends it with no traceback (SIGINT)
    and no silent death (SIGTERM, SIGHUP). The signal's number is yielded back."""
    received: list[int] = []

    class _Interrupted(Exception):
        pass

    def interrupt(signum: int, _frame: object) -> None:
        for each in SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        received.append(signum)
        raise _Interrupted

    before = {each: signal.signal(each, interrupt) for each in SIGNALS}
    try:
        yield received
    except _Interrupted:
        pass
    finally:
        for each, handler in before.items():
            signal.signal(each, handler)


def _open_ledger(config: RunConfig, target: str) -> Ledger:
    if config.outputs.journal is None:
        return NoJournalLedger()
    run_info: dict[str, object] = {
        "target": target,
        "inputs": list(config.inputs),
        "options": dict(config.recorded_options or {}),
    }
    return SqliteJournal.open(
        config.outputs.journal,
        target=target,
        fresh=config.outputs.fresh,
        run_info=run_info,
        operation=config.job.operation,
        shard=config.shard,
    )


def _journal_sinks(ledger: Ledger, log: Logger) -> list[Sink]:
    """The journal as sinks: outcomes in, each handed to `ledger.outcome` with no hop
    between (one a row), and the final account at the end, after which a journal that
    could not be written is said so (the run's figures stand)."""

    def close(event: Event) -> None:
        assert isinstance(event, Ended)
        try:
            ledger.close(dict(event.report))
        except JournalError as exc:
            log.error("journal_incomplete", error=str(exc))

    # `reading` hands it outcomes alone, which is all `Ledger.outcome` takes.
    return [reading(Outcome, sink=cast(Sink, ledger.outcome)), reading(Ended, sink=close)]


def _consults_a_journal(config: RunConfig) -> bool:
    """A dry run that skips what the journal holds as done (one is given, not --fresh)."""
    outputs = config.outputs
    return config.dry_run and outputs.journal is not None and not outputs.fresh


class _Looking:
    """The dry run's ledger: it skips what a real run would (repeats, and rows the journal
    holds as done for this target, read and never claimed), and records nothing."""

    def __init__(self, done: Callable[[RowKey], bool]) -> None:
        self._done = done
        self._seen = RepeatCheck()

    def admit_all(self, rows: Sequence[Row]) -> list[bool]:
        seen, done = self._seen, self._done
        return [seen.admit(row) and not done(row.key) for row in rows]

    def outcome(self, outcome: Outcome) -> None:
        pass

    def close(self, report: dict[str, object]) -> None:
        self._seen.close()


class _Run:
    """One run, a dry run included: the same pipeline, whose send stage sends nothing."""

    def __init__(
        self,
        config: RunConfig,
        stream: RowStream | None,
        log: Logger,
        environ: Mapping[str, str],
    ) -> None:
        self.config = config
        self.log = log
        self.environ = environ
        self.report = Report(dry_run=config.dry_run)
        self.stop = StopState()
        self.received: list[int] = []
        self.rows = self._rows(stream)

    def _rows(self, stream: RowStream | None) -> Rows:
        config = self.config
        if stream is not None:
            return FileRows(stream, config.inputs)
        if config.query is None:
            assert isinstance(config.job, UndoJob)
            return config.job.rows()  # what the journal says the run to undo created
        assert config.reader.default_playlist is not None
        route = config.target.route
        return QueryRows(
            config.query,
            playlist_id=config.reader.default_playlist,
            target=route.base_url if route else "sandbox",
            data_source=config.reader.default_data_source,
            shard=config.shard,
            log=self.log,
        )

    async def __call__(self) -> int:
        cannot_start = await self._go()
        if cannot_start is not None:
            config = self.config
            return _refused(self.log, cannot_start, config.outputs.report, dry_run=config.dry_run)
        ending = Ending(
            self.stop.reason, self.received[0] if self.received else None, self.report.unfinished
        )
        reason = self.stop.reason
        if reason is not None and reason is not Reason.SIGNAL and reason is not Reason.OUTPUT:
            self.log.error(
                "aborted",
                reason=reason.value,
                cause=self.stop.cause,
                detail=advice(reason, searching=self.config.query is not None),
                not_attempted=self.report.not_attempted,
            )
        return _finish(self.config, self.report, ending, self.log)

    async def _go(self) -> str | None:
        """Run the pipeline; what stopped the run before it started, if anything did."""
        config, log, report = self.config, self.log, self.report
        dry_run = config.dry_run
        async with contextlib.AsyncExitStack() as stack:
            if dry_run and not self.rows.needs_api:
                route, credentials = Route(_preview_target(config.target)), None
            else:
                route, credentials = await stack.enter_async_context(open_target(config.target))
            base_url = route.base_url
            try:
                ledger = self._ledger(stack, base_url)
                dead_letter = self._dead_letter()
                job_sinks = [] if dry_run else config.job.sinks()
            except (JournalError, DeadLetterError) as exc:
                return str(exc)
            except OutputError as exc:  # an output of the job's own (--missing)
                return str(exc)
            sinks: list[Sink] = [*_journal_sinks(ledger, log), report]
            # With a live display beside the log the counts are on screen: log only what
            # needs attention. A log in a file or a pipe keeps every line, and a dry run's
            # requests go to standard output.
            live = drawn_beside_the_log(config.watch.progress, sys.stderr)
            person = read_by_a_person(config.watch.log_format, sys.stderr)
            row_log = LogSink(
                log,
                quiet=live or dry_run,
                warnings_shown=WARNINGS_SHOWN if person else None,
                journal=isinstance(ledger, SqliteJournal) or _consults_a_journal(config),
            )
            sinks.append(reading(*LogSink.KINDS, sink=row_log))
            if dead_letter is not None:
                sinks.append(reading(Outcome, Ended, sink=dead_letter))
            sinks += job_sinks
            metrics = None if dry_run else self._metrics()
            if metrics is not None:
                sinks.append(metrics)
            sink = fan_out(sinks)
            pace = config.pace
            pacer = Pacer(rate=pace.rate, on_pause=sink, max_pause_s=pace.max_pause_s)
            try:
                client = None
                if credentials is not None:
                    client = await stack.enter_async_context(
                        Client(
                            route,
                            credentials,
                            concurrency=pace.concurrency,
                            timeout_s=pace.timeout_s,
                            tls=config.target.tls,
                            odd_body=self._odd_body,
                        )
                    )
                paced = (
                    Paced(client.send, pacer=pacer, stop=self.stop, sink=sink) if client else None
                )
                try:
                    source = self.rows.open(
                        paced_search(paced, config.pace) if paced else None,
                        ledger if isinstance(ledger, SqliteJournal) else None,
                    )
                except ValueError as exc:  # a range that cannot be searched
                    self.stop.request(Reason.INPUT, str(exc))
                    return str(exc)
                if self.rows.sinks():
                    # After the journal's sink: a search position is queued behind the
                    # outcome that completed it, so it is never committed without it.
                    sink = fan_out([sink, *self.rows.sinks()])
                # Every run has one, in its start event and its report; a journal's run
                # is known by it there (`status`, `undo`).
                run_id = getattr(ledger, "run_id", None) or new_run_id()
                report.extra["run_id"] = run_id
                if not tell_start(config, base_url):
                    log.info("start", **self._start_fields(base_url, run_id))
                for event, fields in config.job.notices:
                    log.warning(event, **fields)
                parts = None
                if client is not None:
                    parts = StageParts(
                        client.send,
                        pacer,
                        sink,
                        self.stop,
                        pace.policy,
                    )
                await self._pipeline(source, ledger, parts, base_url, sink)
            except BaseException:
                if self.stop.reason is None:
                    self.stop.request(Reason.FATAL, "internal error")  # the journal keeps all
                raise
            finally:
                report.paused_s = pacer.paused_s
                report.extra.update(self.rows.finish(completed_run=self.stop.reason is None))
                if not dry_run:
                    report.extra.update(await config.job.finish(sys.stdout))
                _end_sinks(report, self.stop, self.received, sink)
        return None

    async def _pipeline(
        self, source: Source, ledger: Ledger, parts: StageParts | None, base_url: str, sink: Sink
    ) -> None:
        config, pace, job = self.config, self.config.pace, self.config.job
        deliver: Deliver
        if config.dry_run:
            deliver = Preview(job.row_operation, base_url, sys.stdout, self.stop).deliver
            settings = Settings(concurrency=1, grace_s=0.0)
        else:
            assert parts is not None
            deliver = job.stage(parts)
            settings = Settings(
                concurrency=job.workers(pace.concurrency),
                grace_s=pace.grace_s,
                max_stall_s=pace.max_stall_s,
            )
        pipeline = Pipeline(
            source,
            admit=ledger.admit_all,
            deliver=deliver,
            sink=sink,
            stop=self.stop,
            settings=settings,
        )
        progress = make_progress(
            self.report,
            self.rows.reading,
            enabled=False if config.dry_run else config.watch.progress,
            stream=sys.stderr,
            logger=self.log,
            interval_s=config.watch.progress_interval_s,
            paused=None if parts is None else lambda: parts.pacer.paused_s,
        )
        with _signals(self.stop, self.received, self.log, settings.grace_s):
            async with progress:
                # What start-up made (imports, configuration) lives as long as the run:
                # out of the collector's sight, it is not walked again and again.
                gc.freeze()
                try:
                    await pipeline.run()
                finally:
                    gc.unfreeze()

    def _ledger(self, stack: contextlib.AsyncExitStack, target: str) -> Ledger:
        config = self.config
        if config.dry_run:
            journal = None if config.outputs.fresh else config.outputs.journal
            return _Looking(stack.enter_context(done_before(journal, target, config.job.operation)))
        return _open_ledger(config, target)

    def _odd_body(self, status: int, detail: str) -> None:
        """A success whose body is not the documented JSON: said once a run (the client's
        `BodyCheck` tells only the first)."""
        self.log.warning(
            "unexpected_success_body",
            status=status,
            detail=detail,
            note="the request succeeded; further such answers are not logged",
        )

    def _dead_letter(self) -> DeadLetter | None:
        path = self.config.outputs.dead_letter
        if path is None or self.config.dry_run:
            return None
        return DeadLetter(
            path, self.config.inputs, warn=lambda event, error: self.log.error(event, error=error)
        )

    def _metrics(self) -> Sink | None:
        tags = [f"shard:{self.config.shard}"] if self.config.shard else []
        return statsd_from(self.config.watch.statsd, self.environ, tags=tags)

    def _start_fields(self, target: str, run_id: str) -> dict[str, object]:
        """What the start event says: only what is set."""
        config = self.config
        fields: dict[str, object] = {"target": redact_url(target), **self.rows.start_fields()}
        if config.reader.default_playlist is not None:
            fields["playlist"] = config.reader.default_playlist
        if config.dry_run:
            fields["dry_run"] = True
        else:
            fields["concurrency"] = config.pace.concurrency
        if config.shard is not None:
            fields["shard"] = str(config.shard)
        if config.outputs.journal is not None:
            fields["journal"] = str(config.outputs.journal)
        fields["run_id"] = run_id
        return fields


def _preview_target(target: Target) -> str:
    """Where a dry run's requests would go; a sandbox is not started to say so."""
    return target.route.base_url if target.route else "http://sandbox.invalid"


def _end_sinks(report: Report, stop: StopState, received: list[int], sink: Sink) -> None:
    """The final account goes to every sink: the journal keeps it with the run."""
    ending = Ending(stop.reason, received[0] if received else None, report.unfinished)
    report.finish(exit_status(ending))
    sink(Ended(report.as_dict()))


ADVICE = {
    Reason.KEYS_REFUSED: "check DD_API_KEY / DD_APP_KEY, the site (--site), and that the "
    "application key may write RUM playlists; rerun to resume",
    Reason.SYSTEMIC: "nearly every request failed; see the errors above, fix the cause and "
    "rerun to resume (--abort-failure-rate tunes this)",
    Reason.STALLED: "no row finished (or no page of the search came) within --max-stall "
    "seconds; rerun later to resume",
    Reason.FATAL: "the API cannot be reached as configured; see the error above",
    Reason.SOURCE: "the search could not go on; rerun the same command to resume",
    Reason.INPUT: "fix the input and run again; what was done is in the journal",
    Reason.QUERY_REFUSED: "fix the query or its range (the query as sent is in the `query` "
    "event) and run again; nothing was found, so nothing was sent",
}


def advice(reason: Reason | None, *, searching: bool) -> str | None:
    """What to do after a run ended early for `reason`. A run that searches (`--query`)
    needs its application key to read RUM events as well as to write playlists: refused
    keys there name both, whichever call was refused."""
    if reason is Reason.KEYS_REFUSED and searching:
        return f"{SEARCH_KEYS_ADVICE} and write RUM playlists; then rerun to resume"
    return ADVICE.get(reason) if reason is not None else None


@contextlib.contextmanager
def _signals(stop: StopState, received: list[int], log: Logger, grace_s: float) -> Iterator[None]:
    """First SIGINT/SIGTERM/SIGHUP: stop gracefully. Second: stop at once (still losing
    nothing that was confirmed: outcomes already reached the journal)."""
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1 and stop.reason is None:
            detail = (
                f"stopped reading; requests in flight may finish within {grace_s:g} s "
                "(--grace); signal again to stop at once"
            )
        else:
            detail = "stopping at once"
        log.warning("interrupted", signal=name, detail=detail)
        stop.interrupt(name)

    for signum in SIGNALS:
        loop.add_signal_handler(signum, handle, signum)
    try:
        yield
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)


def _finish(config: RunConfig, report: Report, ending: Ending, log: Logger) -> int:
    """Write the report and log the summary; the exit status, 1 at least if the report
    asked for could not be written (its directory was checked before the run, but a disk
    can fill up)."""
    if report.exit_code is None:
        report.finish(exit_status(ending))
    path = config.outputs.report
    if path is not None:
        try:
            write_report(report.as_dict(), path)
        except OSError as exc:
            log.error(
                "report_not_written",
                path=str(path),
                error=str(exc),
                detail="the summary below holds the same figures",
            )
            report.exit_code = exit_status(
                Ending(ending.reason, ending.signum, ending.unfinished_rows, report_lost=True)
            )
    said = advice(ending.reason, searching=config.query is not None)
    if not tell_summary(config, report.as_dict(), said):
        log.info("summary", **report.as_dict())
    assert report.exit_code is not None
    return report.exit_code


__all__ = ["ConfigError", "cannot_start", "ingest"]
