"""`run`: wires the parts of one ingest together and turns how it ended into an exit code.

Everything that can be wrong with the options, keys, inputs or journal is found here
before the first request, so such a run exits 2 having sent nothing. Once requests flow,
every row ends in the report, the journal and the logs, whether the run finishes, aborts
or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import secrets
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from worker import aio, logs
from worker.client import Client, session_url, tls_context
from worker.config import ConfigError, Credentials, Secret, base_url_for, load_credentials
from worker.deadletter import DeadLetter, DeadLetterError
from worker.journal import (
    JournalError,
    Ledger,
    MemoryLedger,
    SqliteJournal,
    default_journal_path,
    done_before,
    reading,
)
from worker.metrics import destination_from, statsd_from
from worker.pacer import Pacer
from worker.progress import live_console, make_progress
from worker.reader import InputError, ReaderOptions, RowStream, open_inputs
from worker.report import (
    EXIT_ABORTED,
    EXIT_CANNOT_START,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    Report,
    prepare_destination,
)
from worker.rows import DEFAULT_DATA_SOURCE, InvalidRow, Outcome, Result, Row
from worker.runner import Fanout, RetryPolicy, Run, RunSettings, Stop
from worker.sandbox import SandboxConfig, parse_rate_limit
from worker.shard import Shard
from worker.terminal import RunStart, SummaryContext, render_summary, start_line, terminal_console

Logger = structlog.typing.FilteringBoundLogger


@dataclass(frozen=True)
class Plan:
    """Everything a run needs, resolved and checked before anything is sent."""

    args: argparse.Namespace
    reader: ReaderOptions
    shard: Shard | None
    base_url: str | None  # None: a sandbox started for this run
    credentials: Credentials | None  # None: --dry-run or --sandbox
    sandbox_rate_limit: tuple[int, float] | None
    policy: RetryPolicy
    journal_path: Path | None
    tls: ssl.SSLContext | bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> Plan:
        try:
            destination_from(args.statsd, environ)  # a bad agent address exits 2 here
            shard = Shard.parse(args.shard) if args.shard else None
            sandbox_limit = (
                parse_rate_limit(args.sandbox_rate_limit) if args.sandbox_rate_limit else None
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if sandbox_limit and not args.sandbox:
            raise ConfigError("--sandbox-rate-limit applies only with --sandbox")
        if args.sandbox and (args.base_url or args.site):
            raise ConfigError("--sandbox sends to a local sandbox; drop --site/--base-url")
        needs_keys = not (args.sandbox or args.dry_run)
        base_url = None if args.sandbox else base_url_for(args.site, args.base_url, environ)
        credentials = (
            load_credentials(args.api_key_file, args.app_key_file, environ) if needs_keys else None
        )
        journal_path = None
        if not args.no_journal:  # a dry run reads it, to show what a run would skip
            journal_path = Path(args.journal) if args.journal else default_journal_path(shard)
        if args.report:
            try:
                prepare_destination(Path(args.report))
            except OSError as exc:
                raise ConfigError(
                    f"--report {args.report}: cannot write a report there "
                    f"({exc.strerror or exc}); name a file in a writable directory"
                ) from None
        return cls(
            args=args,
            reader=ReaderOptions(
                fmt=args.format, default_data_source=args.data_source, ts_unit=args.ts_unit
            ),
            shard=shard,
            base_url=base_url,
            credentials=credentials,
            sandbox_rate_limit=sandbox_limit,
            policy=RetryPolicy(
                max_attempts=args.max_attempts,
                backoff_base_s=args.backoff_base,
                backoff_cap_s=args.backoff_cap,
                failure_window=args.abort_window,
                failure_rate_to_abort=args.abort_failure_rate,
                max_stall_s=args.max_stall,
            ),
            journal_path=journal_path,
            tls=tls_context(args.ca_bundle),
        )

    def owns(self, item: Row | InvalidRow) -> bool:
        if self.shard is None:
            return True
        if isinstance(item, Row):
            return self.shard.owns(item.key)
        return self.shard.owns_line(item.source, item.line)

    def run_info(self, target: str) -> dict[str, object]:
        """What the journal records of this run: the options, never the keys."""
        options = {k: v for k, v in vars(self.args).items() if not k.endswith("_file")}
        options.pop("handler", None)
        return {"target": target, "inputs": list(self.args.inputs), "options": options}


def ingest(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        plan = Plan.from_args(args, environ)
    except ConfigError as exc:
        # An event like every other exit 2, for log shippers. The keys are not known
        # here, and the message names no key (only options, variables and paths).
        logs.configure(fmt=args.log_format, secrets=()).error("cannot_start", error=str(exc))
        return EXIT_CANNOT_START
    secrets_ = plan.credentials.secrets() if plan.credentials else ()
    log = logs.configure(fmt=args.log_format, secrets=secrets_)
    with _signals_end_reading():
        try:
            # A shard's own rows only: the reader decides it, once per row.
            stream = open_inputs(args.inputs, plan.reader, owns=plan.owns if plan.shard else None)
        except InputError as exc:
            log.error("cannot_start", error=str(exc))
            return EXIT_CANNOT_START
        except Interrupted as stop:
            return _finish_interrupted(plan, Report(), log, stop, "before the run started")
        if args.dry_run:
            with stream:
                return _dry_run(plan, stream, log)
    with stream:
        return aio.run(_ingest(plan, stream, log, environ))


class Interrupted(Exception):
    """SIGINT or SIGTERM while reading outside the event loop (`_signals_end_reading`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_end_reading() -> Iterator[None]:
    """Before the event loop takes the signals over, the inputs are checked, and a dry
    run reads them all, without it: on a quiet standard input that read blocks. A signal
    then ends the read with `Interrupted` (and a report), not with a traceback (SIGINT)
    or a silent death (SIGTERM). Later signals are ignored while the report is written."""

    def interrupt(signum: int, _frame: object) -> None:
        for each in (signal.SIGINT, signal.SIGTERM):
            signal.signal(each, signal.SIG_IGN)
        raise Interrupted(signum)

    before = {each: signal.signal(each, interrupt) for each in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for each, handler in before.items():
            signal.signal(each, handler)


def _finish_interrupted(
    plan: Plan, report: Report, log: Logger, stop: Interrupted, when: str
) -> int:
    log.warning("interrupted", signal=str(stop), detail=f"{when}; nothing was sent")
    report.finish(EXIT_SIGTERM if stop.signum == signal.SIGTERM else EXIT_SIGINT)
    return _finish(plan, report, log)


def _dry_run(plan: Plan, stream: RowStream, log: Logger) -> int:
    """Validate, and print each request a real run would send now; send nothing.

    Rows a real run would skip are skipped here too: repeats within the input, and rows
    the journal holds as done for this target (read, never claimed or written). Rows
    that would be sent count as not attempted."""
    base_url = plan.base_url or "http://sandbox.invalid"
    journal = None if plan.args.fresh else plan.journal_path
    if not _tell_start(plan, base_url):
        log.info(
            "start",
            target=base_url,
            inputs=list(plan.args.inputs),
            dry_run=True,
            shard=str(plan.shard) if plan.shard else None,
            journal=str(journal) if journal else None,
        )
    report = Report(dry_run=True)
    observer = Fanout([report, logs.LogObserver(log)])
    seen = MemoryLedger()  # as a run without a journal de-duplicates: in memory
    out = sys.stdout
    try:
        with done_before(journal, base_url) as done:
            for item in stream:
                if isinstance(item, InvalidRow):
                    observer.rejected(item)
                elif not seen.admit(item) or done(item.key):
                    observer.outcome(Outcome(item, Result.SKIPPED))
                else:
                    out.write(f"PUT {session_url(base_url, item)}\n")
                    report.outcome(Outcome(item, Result.NOT_ATTEMPTED))
    except JournalError as exc:
        log.error("cannot_start", error=str(exc))
        return EXIT_CANNOT_START
    except Interrupted as stop:
        return _finish_interrupted(plan, report, log, stop, "the dry run stopped reading")
    report.finish(EXIT_ROWS_FAILED if report.invalid else EXIT_OK)
    return _finish(plan, report, log)


@contextlib.asynccontextmanager
async def _target(plan: Plan) -> AsyncIterator[tuple[str, Credentials]]:
    """The base URL and keys to use: the plan's, or a sandbox's started for this run."""
    if plan.base_url is not None:
        assert plan.credentials is not None
        yield plan.base_url, plan.credentials
        return
    api_key, app_key = secrets.token_hex(16), secrets.token_hex(16)
    config = SandboxConfig(api_key=api_key, app_key=app_key)
    if plan.sandbox_rate_limit:
        config = SandboxConfig(api_key=api_key, app_key=app_key, rate_limit=plan.sandbox_rate_limit)
    from worker.sandbox.app import Sandbox  # the server side of aiohttp, for this case only

    async with Sandbox(config) as sandbox:
        yield sandbox.base_url, Credentials(Secret(api_key), Secret(app_key))


def _open_ledger(plan: Plan, target: str) -> Ledger:
    if plan.journal_path is None:
        return MemoryLedger()
    return SqliteJournal.open(
        plan.journal_path, target=target, fresh=plan.args.fresh, run_info=plan.run_info(target)
    )


async def _ingest(plan: Plan, stream: RowStream, log: Logger, environ: Mapping[str, str]) -> int:
    args = plan.args
    report = Report()
    async with _target(plan) as (base_url, credentials):
        try:
            dead_letter = (
                DeadLetter(Path(args.dead_letter), args.inputs) if args.dead_letter else None
            )
            ledger = _open_ledger(plan, base_url)
        except (JournalError, DeadLetterError) as exc:
            log.error("cannot_start", error=str(exc))
            return EXIT_CANNOT_START
        tags = [f"shard:{plan.shard}"] if plan.shard else []
        metrics = statsd_from(args.statsd, environ, tags=tags)
        sinks = [o for o in (dead_letter, metrics) if o is not None]
        # With a live display the counts are on screen: log only what needs attention.
        live = live_console(args.progress, sys.stderr) is not None
        fanout = Fanout([ledger, report, logs.LogObserver(log, quiet=live), *sinks])
        try:
            await _execute(
                plan,
                stream,
                log,
                fanout=fanout,
                ledger=ledger,
                report=report,
                base_url=base_url,
                credentials=credentials,
            )
        finally:
            # Even after a crash: flush what was confirmed, so a rerun knows it.
            if report.exit_code is None:
                report.finish(EXIT_ABORTED)
            if metrics is not None:
                metrics.close()
            if dead_letter is not None:
                try:
                    dead_letter.close()
                except DeadLetterError as exc:
                    log.error("dead_letter_incomplete", error=str(exc))
            try:
                ledger.close(report.as_dict())
            except JournalError as exc:
                log.error("journal_incomplete", error=str(exc))
    return _finish(plan, report, log)


async def _execute(
    plan: Plan,
    stream: RowStream,
    log: Logger,
    *,
    fanout: Fanout,
    ledger: Ledger,
    report: Report,
    base_url: str,
    credentials: Credentials,
) -> None:
    """Send every row; the report is finished with the run's exit status."""
    args = plan.args
    if not _tell_start(plan, base_url):
        log.info(
            "start",
            target=base_url,
            inputs=list(args.inputs),
            concurrency=args.concurrency,
            shard=str(plan.shard) if plan.shard else None,
            journal=str(plan.journal_path) if plan.journal_path else None,
        )
    progress = make_progress(
        report,
        stream.reading,
        enabled=args.progress,
        stream=sys.stderr,
        logger=log,
        interval_s=args.progress_interval,
    )
    async with Client(
        base_url,
        credentials,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        tls=plan.tls,
    ) as client:
        run = Run(
            iter(stream),
            client=client,
            pacer=Pacer(rate=args.rate, on_pause=fanout.paused),
            ledger=ledger,
            observer=fanout,
            settings=RunSettings(args.concurrency, plan.policy, grace_s=args.grace),
            warn=lambda event, fields: log.warning(event, **fields),
        )
        received: list[int] = []
        with _signals(run, received, log, args.grace):
            async with progress:
                # What start-up made (imports, configuration) lives as long as the run: out
                # of the collector's sight, it is not walked again every few hundred rows.
                gc.freeze()
                try:
                    stop = await run.execute()
                finally:
                    gc.unfreeze()  # a process that runs again collects as before
    code = _exit_code(stop, received, report)
    if stop is not None and stop is not Stop.SIGNAL:
        log.error(
            "aborted",
            reason=stop.value,
            cause=run.cause,
            detail=_ABORT_ADVICE.get(stop),
            not_attempted=report.not_attempted,
        )
    report.finish(code)


_ABORT_ADVICE = {
    Stop.KEYS_REFUSED: "check DD_API_KEY / DD_APP_KEY, the site (--site), and that the "
    "application key may write RUM playlists; rerun to resume",
    Stop.SYSTEMIC: "nearly every request failed; see the errors above, fix the cause and "
    "rerun to resume (--abort-failure-rate tunes this)",
    Stop.STALLED: "no row finished within --max-stall seconds; rerun later to resume",
    Stop.FATAL: "the API cannot be reached as configured; see the error above",
}


def _exit_code(stop: Stop | None, received: list[int], report: Report) -> int:
    if stop is Stop.SIGNAL:
        return EXIT_SIGTERM if received and received[0] == signal.SIGTERM else EXIT_SIGINT
    if stop in (Stop.INPUT, Stop.JOURNAL):
        return EXIT_CANNOT_START
    if stop is not None:
        return EXIT_ABORTED
    return report.exit_status()


@contextlib.contextmanager
def _signals(run: Run, received: list[int], log: Logger, grace_s: float) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully. Second: stop at once (still losing nothing
    that was confirmed: outcomes already reached the journal)."""
    loop = asyncio.get_running_loop()

    def handle(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            log.warning(
                "interrupted",
                signal=name,
                detail=f"stopped reading; requests in flight may finish within {grace_s:g} s "
                "(--grace); signal again to stop at once",
            )
            run.request_stop(Stop.SIGNAL)
        else:
            log.warning("interrupted", signal=name, detail="stopping at once")
            run.hurry()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handle, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _finish(plan: Plan, report: Report, log: Logger) -> int:
    """Write the report and log the summary; the exit status, 1 at least if the report
    asked for could not be written (its directory was checked before the run, but a disk
    can fill up)."""
    if plan.args.report:
        try:
            report.write(Path(plan.args.report))
        except OSError as exc:
            log.error(
                "report_not_written",
                path=plan.args.report,
                error=str(exc),
                detail="the summary below holds the same figures",
            )
            report.exit_code = max(report.exit_code or 0, EXIT_ROWS_FAILED)
    console = terminal_console(plan.args.log_format, sys.stderr)
    if console is None:
        log.info("summary", **report.as_dict())
    else:
        render_summary(report.as_dict(), _summary_context(plan), console)
    assert report.exit_code is not None
    return report.exit_code


def _tell_start(plan: Plan, target: str) -> bool:
    """The start line, on a terminal; False when the `start` event is to be logged."""
    console = terminal_console(plan.args.log_format, sys.stderr)
    if console is None:
        return False
    journal = plan.journal_path
    start = RunStart(
        target=target,
        inputs=plan.args.inputs,
        sandbox=plan.args.sandbox,
        shard=str(plan.shard) if plan.shard else None,
        journal=journal,
        done_rows=_done_rows(journal, target) if journal and not plan.args.fresh else None,
        fresh=plan.args.fresh,
        dry_run=plan.args.dry_run,
    )
    console.print(start_line(start), soft_wrap=True)
    return True


def _summary_context(plan: Plan) -> SummaryContext:
    args = plan.args
    repeated = ["--sandbox"] if args.sandbox else []
    for option, value in (("--site", args.site), ("--base-url", args.base_url)):
        if value:
            repeated += [option, value]
    if args.journal:
        repeated += ["--journal", args.journal]
    row_options: list[str] = []  # how the rows were read, where not the default
    for option, value, default in (
        ("--format", args.format, None),
        ("--ts-unit", args.ts_unit, "ms"),
        ("--data-source", args.data_source, DEFAULT_DATA_SOURCE),
    ):
        if value != default:
            row_options += [option, value]
    return SummaryContext(
        inputs=args.inputs,
        repeated_options=repeated,
        row_options=row_options,
        dead_letter=args.dead_letter,
        report_path=args.report,
        journal=not args.no_journal,
        target_outlives_run=not args.sandbox,
    )


def _done_rows(journal: Path, target: str) -> int | None:
    """Rows the journal holds as done for `target` (0 for a journal not made yet); None
    when it cannot say. (The journal's own count belongs in `worker.journal`.)"""
    if not journal.exists():
        return 0
    try:
        with reading(journal) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM rows r JOIN targets t ON t.id = r.target_id"
                " WHERE t.url = ? AND r.result IN (?, ?)",
                (target, Result.CREATED.value, Result.ALREADY_PRESENT.value),
            ).fetchone()
    except JournalError:
        return None
    return int(count)
