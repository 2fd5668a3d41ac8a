"""What a run does to its rows, beside how it reads, paces, records and reports them:
`AddJob` (`run`), `RemoveJob` (`remove`), `UndoJob` (`undo`), `VerifyJob` (`verify`).

The pipeline, the pacer, the journal, the report and the logs are the same for all of
them; a job gives the journal's operation, where the rows come from when not from the
inputs (undo reads the journal), how many workers it needs, its send stage, and what it
writes beside the report.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from worker.batch_remove import DEFAULT_FLUSH_S, BatchRemover, concurrency_for
from worker.bulk_removal import DEFAULT_BATCH_SIZE, BatchSizer
from worker.chunks import ThreadedChunks
from worker.deliver import Paced, Send, Sender
from worker.events import Sink
from worker.health import RetryPolicy
from worker.input import Reading
from worker.journal import Operation
from worker.operation import AddSession, RemoveSession, RowOperation
from worker.pacer import Pacer
from worker.pipeline import Deliver, Source
from worker.playlist_sessions import SESSION_PAGE_SIZE
from worker.rows import Row
from worker.stop import StopState
from worker.undo_plan import rows_to_remove
from worker.verify import MissingFile, Verifier, extra_line

Notice = tuple[str, Mapping[str, object]]
"""A warning's event name and fields."""


@dataclass(frozen=True, slots=True)
class StageParts:
    """What a send stage is built of: the run's client, pacer, sinks, stop and policy."""

    send: Send
    pacer: Pacer
    sink: Sink
    stop: StopState
    policy: RetryPolicy


class Job(Protocol):
    @property
    def operation(self) -> Operation:
        """What the journal records the run as (and what counts as done)."""
        ...

    @property
    def row_operation(self) -> RowOperation:
        """The request of one row: what --dry-run prints."""
        ...

    @property
    def reads_inputs(self) -> bool:
        """False: the job brings its own rows (`undo`)."""
        ...

    @property
    def doing(self) -> tuple[str, str, str]:
        """For the start line: its verb going on and in a dry run, and its preposition."""
        ...

    @property
    def rows_text(self) -> str | None:
        """For the start line: what the rows are, when they are not the inputs'."""
        ...

    @property
    def retry_command(self) -> str:
        """The subcommand that sends its rows again (a dead-letter file's)."""
        ...

    def workers(self, concurrency: int) -> int: ...

    def stage(self, parts: StageParts) -> Deliver: ...

    def sinks(self) -> list[Sink]:
        """Outputs of its own, opened before the run: raises `UnsafeFile` or `OSError`."""
        ...

    @property
    def notices(self) -> Sequence[Notice]:
        """Warnings the job has before its first row, logged right after the start line
        (so a log reads in order: what the run is, then what it will leave alone)."""
        ...

    async def finish(self, out: TextIO) -> dict[str, object]:
        """After the pipeline: what the job writes beside the report, and the block it
        adds to the report (empty: none)."""
        ...


class _Plain:
    """What most jobs share: the inputs' rows, and no outputs of their own."""

    __slots__ = ()
    reads_inputs = True
    rows_text: str | None = None
    notices: Sequence[Notice] = ()

    def sinks(self) -> list[Sink]:
        return []


@dataclass(frozen=True, slots=True)
class AddJob(_Plain):
    retry_command = "run"
    doing = ("Adding", "add", "to")
    operation: Operation = Operation.RUN
    row_operation: RowOperation = field(default_factory=AddSession)

    def workers(self, concurrency: int) -> int:
        return concurrency

    def stage(self, parts: StageParts) -> Deliver:
        paced = Paced(parts.send, pacer=parts.pacer, stop=parts.stop, sink=parts.sink)
        sender = Sender(self.row_operation, paced, policy=parts.policy, stop=parts.stop)
        return sender.deliver

    async def finish(self, out: TextIO) -> dict[str, object]:
        return {}


@dataclass(slots=True)
class RemoveJob(_Plain):
    """Each row's session removed, in bulk removals of up to `batch_size` per playlist;
    the size the server takes is found once and kept for the run (`sizer`)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    flush_s: float = DEFAULT_FLUSH_S
    retry_command = "remove"
    doing = ("Removing", "remove", "from")
    operation: Operation = Operation.REMOVE
    row_operation: RowOperation = field(default_factory=RemoveSession)
    sizer: BatchSizer = field(init=False)

    def __post_init__(self) -> None:
        self.sizer = BatchSizer(self.batch_size)

    def workers(self, concurrency: int) -> int:
        return concurrency_for(self.batch_size, concurrency)

    def stage(self, parts: StageParts) -> Deliver:
        remover = BatchRemover(
            send=parts.send,
            pacer=parts.pacer,
            sink=parts.sink,
            sizer=self.sizer,
            policy=parts.policy,
            stop=parts.stop,
            flush_s=self.flush_s,
        )
        return remover.deliver

    async def finish(self, out: TextIO) -> dict[str, object]:
        return {"batch_size": self.sizer.size}


@dataclass(frozen=True, slots=True)
class UndoJob(_Plain):
    """The sessions run `run_id` created, read back from the journal and removed."""

    journal: Path
    run_id: str
    include_maybe: bool = False
    plan: dict[str, object] = field(default_factory=dict)
    """The plan's counts (`worker.undo_plan`), for the report."""
    remove: RemoveJob = field(default_factory=RemoveJob)
    notices: Sequence[Notice] = ()
    """An `undo_leaves` warning for each creation the undo leaves alone, by name."""
    operation: Operation = Operation.UNDO
    row_operation: RowOperation = field(default_factory=RemoveSession)
    reads_inputs = False
    retry_command = "remove"  # its failures, as rows of their own
    doing = ("Removing", "remove", "from")

    @property
    def rows_text(self) -> str:  # type: ignore[override]
        return f"the sessions run {self.run_id} created"

    def rows(self) -> UndoRows:
        return UndoRows(self.journal, self.run_id, include_maybe=self.include_maybe)

    def workers(self, concurrency: int) -> int:
        return self.remove.workers(concurrency)

    def stage(self, parts: StageParts) -> Deliver:
        return self.remove.stage(parts)

    async def finish(self, out: TextIO) -> dict[str, object]:
        return {"undo": {"run": self.run_id, **self.plan, **await self.remove.finish(out)}}


class UndoRows:
    """The undo's rows (`worker.rowsource.Rows`): what the journal says the run created,
    read in the reader's thread over a connection of its own."""

    needs_api = False

    def __init__(self, journal: Path, run_id: str, *, include_maybe: bool) -> None:
        self._journal = journal
        self._run_id = run_id
        self._include_maybe = include_maybe
        self._count = 0
        self._ended = False

    def open(self, search: object, positions: object) -> Source:
        return ThreadedChunks(self._each())

    def _each(self) -> Iterator[Row]:
        for row in rows_to_remove(self._journal, self._run_id, include_maybe=self._include_maybe):
            self._count += 1
            yield row
        self._ended = True

    def start_fields(self) -> dict[str, object]:
        return {"undoes": self._run_id}

    def reading(self) -> Reading:
        return Reading(self._count, 0, None, self._ended)

    def sinks(self) -> list[Sink]:
        return []

    def finish(self, completed_run: bool) -> dict[str, object]:
        return {}


@dataclass(slots=True)
class VerifyJob(_Plain):
    """Whether each row's session is in its playlist; nothing is changed."""

    missing: Path | None = None
    extra: bool = False
    page_size: int = SESSION_PAGE_SIZE
    retry_command = "verify"
    doing = ("Checking", "check", "in")
    operation: Operation = Operation.RUN
    row_operation: RowOperation = field(default_factory=AddSession)
    _verifier: Verifier | None = None
    _missing_file: MissingFile | None = None

    def workers(self, concurrency: int) -> int:
        return concurrency

    def sinks(self) -> list[Sink]:
        if self.missing is not None and self._missing_file is None:
            self._missing_file = MissingFile(str(self.missing))
        return [self._missing_file] if self._missing_file is not None else []

    def stage(self, parts: StageParts) -> Deliver:
        paced = Paced(parts.send, pacer=parts.pacer, stop=parts.stop, sink=parts.sink)
        self._verifier = Verifier(
            paced, policy=parts.policy, page_size=self.page_size, rng=random.Random()
        )
        return self._verifier.deliver

    async def finish(self, out: TextIO) -> dict[str, object]:
        verifier = self._verifier
        if verifier is None:
            return {}
        await verifier.close()
        extra = 0
        if self.extra:
            for playlist_id, session_id in verifier.extra():
                out.write(extra_line(playlist_id, session_id))
                extra += 1
            out.flush()
        block: dict[str, object] = {"playlists": verifier.playlists_read()}
        if self.extra:
            block["extra"] = extra
        if self._missing_file is not None:
            block["missing_file"] = str(self.missing)
        return {"verify": block}
