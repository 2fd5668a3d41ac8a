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
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import structlog

from worker import aio, logs
from worker.chunks import ThreadedChunks
from worker.client import Client
from worker.config import ConfigError, Credentials, Route, Secret, redact_url
from worker.deadletter import DeadLetter, DeadLetterError
from worker.deliver import Preview
from worker.events import Ended, Event, Sink, fan_out
from worker.exits import EXIT_CANNOT_START, Ending, exit_status
from worker.files import UnsafeFile
from worker.input import InputError, RowStream, open_inputs
from worker.jobs import StageParts, UndoJob, UndoRows, VerifyJob
from worker.journal import (
    JournalError,
    Ledger,
    NoJournalLedger,
    RepeatCheck,
    SqliteJournal,
    done_before,
)
from worker.metrics import statsd_from
from worker.pacer import Pacer
from worker.pipeline import Pipeline, Settings
from worker.progress import live_console, make_progress
from worker.report import Report, write_report
from worker.rowlog import LogSink
from worker.rows import Outcome
from worker.settings import RunConfig, Target, Watch
from worker.stop import Reason, StopState

Logger = structlog.typing.FilteringBoundLogger

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""A closed terminal or ssh session (SIGHUP) ends a run as gracefully as SIGTERM."""


def cannot_start(watch: Watch, message: str) -> int:
    """An event like every other exit 2, for log shippers. The keys are not known here,
    and the message names no key (only options, variables and paths)."""
    logs.configure(fmt=watch.log_format, secrets=()).error("cannot_start", error=message)
    return EXIT_CANNOT_START


def ingest(config: RunConfig, environ: Mapping[str, str]) -> int:
    credentials = config.target.credentials
    log = logs.configure(
        fmt=config.watch.log_format, secrets=credentials.secrets() if credentials else ()
    )
    with _signals_end_opening() as interrupted:
        try:
            # A shard's own rows only: the reader decides it, once per row. An undo's
            # rows are what the journal says its run created.
            stream: RowStream | UndoRows = (
                config.job.rows()
                if isinstance(config.job, UndoJob)
                else open_inputs(
                    list(config.inputs),
                    config.reader,
                    owns=config.shard.keeps if config.shard else None,
                )
            )
        except InputError as exc:
            log.error("cannot_start", error=str(exc))
            return EXIT_CANNOT_START
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


@contextlib.asynccontextmanager
async def _target(target: Target) -> AsyncIterator[tuple[Route, Credentials | None]]:
    """The route and keys to use: the configuration's, or those of a sandbox started for
    this run (imported for that case only: it is aiohttp's server side)."""
    if target.route is not None:
        yield target.route, target.credentials
        return
    from worker.sandbox.app import Sandbox
    from worker.sandbox.config import SandboxConfig

    api_key, app_key = secrets.token_hex(16), secrets.token_hex(16)
    config = SandboxConfig(api_key=api_key, app_key=app_key)
    if target.sandbox_rate_limit:
        config = SandboxConfig(
            api_key=api_key, app_key=app_key, rate_limit=target.sandbox_rate_limit
        )
    async with Sandbox(config) as sandbox:
        yield Route(sandbox.base_url), Credentials(Secret(api_key), Secret(app_key))


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
    )


def _journal_sink(ledger: Ledger, log: Logger) -> Sink:
    """The journal as a sink: outcomes in, the final account at the end, after which a
    journal that could not be written is said so (the run's figures stand)."""

    def sink(event: Event) -> None:
        if isinstance(event, Outcome):
            ledger.outcome(event)
        elif isinstance(event, Ended):
            try:
                ledger.close(dict(event.report))
            except JournalError as exc:
                log.error("journal_incomplete", error=str(exc))

    return sink


def _dead_letter_sink(dead_letter: DeadLetter, log: Logger) -> Sink:
    def sink(event: Event) -> None:
        if isinstance(event, Outcome):
            dead_letter.outcome(event)
        elif isinstance(event, Ended):
            try:
                dead_letter.close()
            except DeadLetterError as exc:
                log.error("dead_letter_incomplete", error=str(exc))

    return sink


class _Run:
    """One run's state, shared by its two ways to go: a preview or a real send."""

    def __init__(
        self,
        config: RunConfig,
        stream: RowStream | UndoRows,
        log: Logger,
        environ: Mapping[str, str],
    ) -> None:
        self.config = config
        self.stream = stream
        self.log = log
        self.environ = environ
        self.report = Report(dry_run=config.dry_run)
        self.stop = StopState()
        self.received: list[int] = []

    async def __call__(self) -> int:
        if self.config.dry_run:
            await self.preview()
        else:
            failed_to_start = await self.send()
            if failed_to_start is not None:
                return failed_to_start
        ending = Ending(
            self.stop.reason, self.received[0] if self.received else None, self.report.unfinished
        )
        if self.stop.reason is not None and self.stop.reason is not Reason.SIGNAL:
            self.log.error(
                "aborted",
                reason=self.stop.reason.value,
                cause=self.stop.cause,
                detail=ADVICE.get(self.stop.reason),
                not_attempted=self.report.not_attempted,
            )
        return _finish(self.config, self.report, ending, self.log)

    async def preview(self) -> None:
        """The dry run: the same pipeline, with a send stage that prints each request a real
        run would send now and sends nothing. Rows a real run would skip are skipped here
        too: repeats, and rows the journal holds as done for this target (read, never claimed
        or written)."""
        base_url = (
            self.config.target.route.base_url
            if self.config.target.route
            else "http://sandbox.invalid"
        )
        journal = None if self.config.outputs.fresh else self.config.outputs.journal
        self.log.info("start", **_start_fields(self.config, base_url, journal, dry_run=True))
        sink = fan_out([self.report, LogSink(self.log, quiet=True)])  # the requests go to stdout
        try:
            with (
                done_before(journal, base_url, self.config.job.operation) as done,
                contextlib.closing(RepeatCheck()) as seen,
            ):
                preview = Preview(self.config.job.row_operation, base_url, sys.stdout)
                pipeline = Pipeline(
                    ThreadedChunks(iter(self.stream)),
                    admit=lambda row: seen.admit(row) and not done(row.key),
                    deliver=preview.deliver,
                    sink=sink,
                    stop=self.stop,
                    settings=Settings(concurrency=1, grace_s=0.0),
                )
                with _signals(self.stop, self.received, self.log, 0.0):
                    await pipeline.run()
        except JournalError as exc:
            self.log.error("cannot_start", error=str(exc))
            self.stop.request(Reason.JOURNAL, str(exc))
        sink(Ended({}))

    async def send(self) -> int | None:
        """Send every row; None once done, or the exit status if the run could not start."""
        async with _target(self.config.target) as (route, credentials):
            assert credentials is not None
            base_url = route.base_url
            try:
                dead_letter = (
                    DeadLetter(self.config.outputs.dead_letter, self.config.inputs)
                    if self.config.outputs.dead_letter
                    else None
                )
                job = self.config.job
                missing = job.missing_sink() if isinstance(job, VerifyJob) else None
                ledger = _open_ledger(self.config, base_url)
            except (JournalError, DeadLetterError) as exc:
                self.log.error("cannot_start", error=str(exc))
                return EXIT_CANNOT_START
            except (OSError, UnsafeFile) as exc:  # --missing
                self.log.error("cannot_start", error=f"--missing: {exc}")
                self.log.error("cannot_start", error=str(exc))
                return EXIT_CANNOT_START
            tags = [f"shard:{self.config.shard}"] if self.config.shard else []
            metrics = statsd_from(self.config.watch.statsd, self.environ, tags=tags)
            # With a live display the counts are on screen: self.log only what needs attention.
            live = live_console(self.config.watch.progress, sys.stderr) is not None
            sinks: list[Sink] = [
                _journal_sink(ledger, self.log),
                self.report,
                LogSink(self.log, quiet=live),
            ]
            if dead_letter is not None:
                sinks.append(_dead_letter_sink(dead_letter, self.log))
            if missing is not None:
                sinks.append(missing)
            run_id = getattr(ledger, "run_id", None)
            if run_id is not None:
                self.report.extra["run_id"] = run_id
            if metrics is not None:
                sinks.append(metrics)
            sink = fan_out(sinks)
            pace = self.config.pace
            pacer = Pacer(rate=pace.rate, on_pause=sink, max_pause_s=pace.max_pause_s)
            try:
                self.log.info(
                    "start",
                    concurrency=pace.concurrency,
                    **_start_fields(self.config, base_url, self.config.outputs.journal),
                    **({"run_id": run_id} if run_id is not None else {}),
                )
                progress = make_progress(
                    self.report,
                    self.stream.reading,
                    enabled=self.config.watch.progress,
                    stream=sys.stderr,
                    logger=self.log,
                    interval_s=self.config.watch.progress_interval_s,
                )
                async with Client(
                    route,
                    credentials,
                    concurrency=pace.concurrency,
                    timeout_s=pace.timeout_s,
                    tls=self.config.target.tls,
                ) as client:
                    deliver = job.stage(
                        StageParts(
                            client.send,
                            pacer,
                            sink,
                            self.stop,
                            pace.policy,
                            warn=lambda event, fields: self.log.warning(event, **fields),
                        )
                    )
                    pipeline = Pipeline(
                        ThreadedChunks(iter(self.stream)),
                        admit=ledger.admit,
                        deliver=deliver,
                        sink=sink,
                        stop=self.stop,
                        settings=Settings(
                            concurrency=job.workers(pace.concurrency),
                            grace_s=pace.grace_s,
                            max_stall_s=pace.max_stall_s,
                        ),
                    )
                    with _signals(self.stop, self.received, self.log, pace.grace_s):
                        async with progress:
                            # What start-up made (imports, configuration) lives as long as the
                            # run: out of the collector's sight, it is not walked again and again.
                            gc.freeze()
                            try:
                                await pipeline.run()
                            finally:
                                gc.unfreeze()
                    if isinstance(job, VerifyJob):
                        await job.close()
                    self.report.extra.update(job.finish(sys.stdout))
            except BaseException:
                self.stop.request(Reason.FATAL, "internal error")  # even so, the journal keeps all
                raise
            finally:
                self.report.paused_s = pacer.paused_s
                _end_sinks(self.report, self.stop, self.received, sink)
        return None


def _end_sinks(report: Report, stop: StopState, received: list[int], sink: Sink) -> None:
    """The final account goes to every sink: the journal keeps it with the run."""
    ending = Ending(stop.reason, received[0] if received else None, report.unfinished)
    report.finish(exit_status(ending))
    sink(Ended(report.as_dict()))


def _start_fields(
    config: RunConfig, target: str, journal: Path | None, *, dry_run: bool = False
) -> dict[str, object]:
    """What the start event says: only what is set."""
    fields: dict[str, object] = {"target": redact_url(target), "inputs": list(config.inputs)}
    if dry_run:
        fields["dry_run"] = True
    if config.shard is not None:
        fields["shard"] = str(config.shard)
    if journal is not None:
        fields["journal"] = str(journal)
    return fields


ADVICE = {
    Reason.KEYS_REFUSED: "check DD_API_KEY / DD_APP_KEY, the site (--site), and that the "
    "application key may write RUM playlists; rerun to resume",
    Reason.SYSTEMIC: "nearly every request failed; see the errors above, fix the cause and "
    "rerun to resume (--abort-failure-rate tunes this)",
    Reason.STALLED: "no row finished within --max-stall seconds; rerun later to resume",
    Reason.FATAL: "the API cannot be reached as configured; see the error above",
    Reason.SOURCE: "the search could not go on; rerun the same command to resume",
}


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
    log.info("summary", **report.as_dict())
    assert report.exit_code is not None
    return report.exit_code


__all__ = ["ConfigError", "cannot_start", "ingest"]
