"""What `undo RUN_ID` takes back, read from the journal: the sessions that run created.

The rule, row by row, of what the run recorded as its own (`History.created_by`):

* answered 201 (created): removed, unless
* a later run in this journal, for the same target, also added it: then it is left and
  reported (that run's undo takes it back); runs in other journals, shards or tools are
  invisible here;
* answered 200 after an attempt whose answer was lost (`maybe`): the lost attempt may
  have added it, or it was there before the run. It is left and listed, since removing a
  session someone else had put there is worse than leaving one of ours; `--include-maybe`
  removes these too;
* already removed since (by an undo or a remove): nothing to send, so undoing twice
  sends nothing the second time.

The plan is read twice: once to count and list (`plan`), once as the run's source
(`rows_to_remove`), in the reader's thread, over its own read-only connection, so memory
stays flat however much the run created.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Iterator
from pathlib import Path

from worker.journal import CreatedRow, History, RunRecord, reading
from worker.rows import Row


class UndoRefused(Exception):
    """The undo cannot start (exit 2): the message says why and what to do."""


class Verdict(enum.StrEnum):
    REMOVE = "remove"
    ADDED_LATER = "added_later"
    MAYBE = "maybe_created"
    ALREADY_REMOVED = "already_removed"


def verdict(created: CreatedRow, *, include_maybe: bool) -> Verdict:
    if created.removed:
        return Verdict.ALREADY_REMOVED
    if created.added_later:
        return Verdict.ADDED_LATER
    if created.maybe and not include_maybe:
        return Verdict.MAYBE
    return Verdict.REMOVE


def the_run(history: History, run_id: str | None, target: str | None) -> RunRecord:
    """The run to undo: `run_id`, or the last `run` against `target` (`--last`). Raises
    `UndoRefused` for a run the journal does not hold, or one that added nothing."""
    if run_id is None:
        found = history.last_run(target, created=True)
        if found is None:
            raise UndoRefused(
                "the journal holds no run that added a session, so nothing to undo; "
                "`status` lists its runs"
            )
        _check_reachable(found)
        return found
    found = history.run(run_id)
    if found is None:
        raise UndoRefused(
            f"the journal holds no run {run_id!r}: `status --runs N` lists the runs it "
            "holds (each journal, and each shard's, keeps its own)"
        )
    if found.operation != "run":
        raise UndoRefused(
            f"run {run_id} was a {found.operation}, which added nothing: only a run can be undone"
        )
    _check_reachable(found)
    return found


def _check_reachable(run: RunRecord) -> None:
    """A run sent to a sandbox started for it (`--sandbox`) added to a playlist that
    ended with that sandbox: there is nothing left to undo, and no one to ask."""
    options = run.info.get("options")
    if isinstance(options, dict) and options.get("sandbox"):
        raise UndoRefused(
            f"run {run.run_id} went to a sandbox started for it (--sandbox), which ended "
            "with the run: what it added is gone already, there is nothing to undo"
        )


def plan(
    history: History, run: RunRecord, *, include_maybe: bool
) -> tuple[dict[str, int], list[tuple[CreatedRow, Verdict]]]:
    """How many of the run's creations have each verdict, and (up to `MAX_LISTED`) those
    left alone, to report each by name."""
    counts = dict.fromkeys(Verdict, 0)
    left: list[tuple[CreatedRow, Verdict]] = []
    for created in history.created_by(run.run_id):
        judged = verdict(created, include_maybe=include_maybe)
        counts[judged] += 1
        if judged in (Verdict.ADDED_LATER, Verdict.MAYBE) and len(left) < MAX_LISTED:
            left.append((created, judged))
    return {str(key): count for key, count in counts.items()}, left


MAX_LISTED = 1000
"""Creations left alone that are named one by one in the logs; the counts say the rest."""


def rows_to_remove(path: Path, run_id: str, *, include_maybe: bool) -> Generator[Row]:
    """The rows an undo sends, as a source would read them (`source` names the run)."""
    with reading(path) as history:
        source = f"journal run {run_id}"
        for line, created in enumerate(history.created_by(run_id), start=1):
            if verdict(created, include_maybe=include_maybe) is Verdict.REMOVE:
                playlist_id, session_id, data_source = created.key
                yield Row(playlist_id, session_id, created.ts, data_source, source, line)


def each_creation(
    history: History, run_id: str, *, include_maybe: bool
) -> Iterator[dict[str, object]]:
    """Every creation of the run with what undo does with it: what --dry-run prints."""
    for created in history.created_by(run_id):
        playlist_id, session_id, data_source = created.key
        yield {
            "playlist_id": playlist_id,
            "session_id": session_id,
            "data_source": data_source,
            "undo": verdict(created, include_maybe=include_maybe).value,
        }
