"""Where a run's rows come from: files and standard input, or a RUM search.

Both end as the pipeline's `Source` (chunks of rows); what differs is what they need
(a search needs the API and its keys, even for a dry run), what the start event says of
them, what progress can know of the total, and what they add to the report.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from structlog.typing import FilteringBoundLogger

from worker import api
from worker.answers import Answer
from worker.chunks import ThreadedChunks
from worker.deliver import Paced
from worker.events import Sink
from worker.input import Reading, RowStream
from worker.journal import QueryKey
from worker.pipeline import Source
from worker.query.dates import (
    FROM_LAST,
    Resolved,
    TimeRange,
    iso,
    relative,
    resolve,
    resolve_last,
)
from worker.query.slices import SLICE_MS, Slices, slice_start
from worker.query.source import QuerySource, SearchFailed, SearchStalled
from worker.query.spec import QuerySpec
from worker.query.stage import Checkpoints, QueryChunks
from worker.settings import Pace, QueryOptions
from worker.shard import Shard

Search = Callable[[Mapping[str, object]], Awaitable[Answer]]


def paced_search(paced: Paced, pace: Pace) -> Search:
    """The search's pages through `paced`, under the search's own rate-limit family, so a
    429 on the search pauses no PUT and the reverse; retryable failures are tried again
    as `pace.policy` says. A 429 spends no attempt, so a search answered by nothing else
    would be asked again for ever: one that gets no other answer for `--max-stall`
    seconds stalls (`SearchStalled`), as a row that never finishes stalls a run."""
    rng = random.Random()
    policy, limit = pace.policy, pace.max_stall_s

    async def search(body: Mapping[str, object]) -> Answer:
        try:
            async with asyncio.timeout(limit) as deadline:
                answer = await paced.call(api.search_events(body), policy, rng)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise SearchStalled(
                f"no page of the search came in {limit:g} s (--max-stall): every answer was "
                "a 429 or a failure being retried, or none came"
            ) from None
        if answer is None:
            raise SearchFailed("the run stopped before the search could go on")
        return answer

    return search


class Positions(Protocol):
    """What the journal keeps of a query's searches (`worker.journal.SqliteJournal`)."""

    def query_position(self, key: QueryKey) -> int | None: ...
    def completed_to(self, key: QueryKey) -> int | None: ...
    def save_query_position(self, key: QueryKey, ts_ms: int) -> None: ...
    def save_completed_to(self, key: QueryKey, ts_ms: int) -> None: ...


class Rows(Protocol):
    needs_api: bool

    def open(self, search: Search | None, positions: Positions | None) -> Source:
        """The source, once the target and the journal are known. Raises `DateError` or
        `ValueError` (exit 2, nothing sent) for what cannot be searched."""
        ...

    def start_fields(self) -> dict[str, object]: ...
    def reading(self) -> Reading: ...
    def sinks(self) -> list[Sink]: ...
    def finish(self, completed_run: bool) -> dict[str, object]:
        """The report's blocks; `completed_run`: the run was not stopped early."""
        ...


class FileRows:
    needs_api = False

    def __init__(self, stream: RowStream, inputs: tuple[str, ...]) -> None:
        self._stream = stream
        self._inputs = inputs

    def open(self, search: Search | None, positions: Positions | None) -> Source:
        return ThreadedChunks(iter(self._stream))

    def start_fields(self) -> dict[str, object]:
        return {"inputs": list(self._inputs)}

    def reading(self) -> Reading:
        return self._stream.reading()

    def sinks(self) -> list[Sink]:
        return []

    def finish(self, completed_run: bool) -> dict[str, object]:
        return {}


@dataclass(frozen=True, slots=True)
class _Searched:
    spec: QuerySpec
    key: QueryKey
    resolved: Resolved
    resumed_from_ms: int | None
    slices: Slices | None
    """The parts of the range a shard searches; None for a run alone."""


class QueryRows:
    """The sessions a RUM query finds, each once, resumable from the journal."""

    needs_api = True

    def __init__(
        self,
        options: QueryOptions,
        *,
        playlist_id: int,
        target: str,
        data_source: str,
        shard: Shard | None,
        log: FilteringBoundLogger,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._options = options
        self._spec = QuerySpec(options.query, playlist_id, target, options.any_session)
        self._data_source = data_source
        self._shard = shard
        self._log = log
        self._now_ms = now_ms
        self._searched: _Searched | None = None
        self._source: QuerySource | None = None
        self._chunks: QueryChunks | None = None
        self._positions: Positions | None = None

    def open(self, search: Search | None, positions: Positions | None) -> Source:
        assert search is not None, "a query needs the API"
        spec, shard = self._spec, self._shard
        key = query_key(spec, shard)
        previous = positions.completed_to(key) if positions is not None else None
        resolved = resolve_range(self._options, self._now_ms(), previous, shard)
        slices = None if shard is None else Slices(resolved.time_range, shard)
        saved = positions.query_position(key) if positions is not None else None
        resumed = saved if _resumable(saved, previous, resolved.time_range) else None
        self._searched = _Searched(spec, key, resolved, resumed, slices)
        self._positions = positions
        self._log.info(
            "query",
            query=spec.effective_query,
            detail="the query is narrowed to completed sessions with a replay (--any-session "
            "to send it as given)"
            if not spec.any_session
            else "the query is sent as given (--any-session)",
            **self._range_fields(),
        )
        source = QuerySource(
            search,
            spec,
            resolved.time_range,
            slices=slices,
            data_source=self._data_source,
            start_ms=resumed,
            log=self._log,
        )
        self._source = source
        self._chunks = QueryChunks(source)
        return self._chunks

    async def aclose(self) -> None:
        """Ends the search early, cancelling a page fetched ahead (see `QueryChunks`)."""
        if self._chunks is not None:
            await self._chunks.aclose()

    def _range_fields(self) -> dict[str, object]:
        assert self._searched is not None
        searched = self._searched
        fields: dict[str, object] = {
            "from": iso(searched.resolved.time_range.from_ms),
            "to": iso(searched.resolved.time_range.to_ms),
            "why": searched.resolved.why,
        }
        if searched.resumed_from_ms is not None:
            fields["resumed_from"] = iso(searched.resumed_from_ms)
        if searched.slices is not None:
            fields["slices"] = searched.slices.to_json()
        return fields

    def start_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"query": self._spec.query}
        if self._searched is not None:
            fields.update(self._range_fields())
        return fields

    def reading(self) -> Reading:
        """No total is known before the search ends."""
        summary = self._source.summary if self._source is not None else None
        sessions = summary.sessions if summary is not None else 0
        repeats = self._chunks.repeats if self._chunks is not None else 0
        ended = summary is not None and summary.completed
        return Reading(rows=sessions - repeats, bytes_read=0, bytes_total=None, ended=ended)

    def sinks(self) -> list[Sink]:
        positions, chunks, searched = self._positions, self._chunks, self._searched
        if positions is None or chunks is None or searched is None:
            return []
        key = searched.key
        return [Checkpoints(chunks, lambda ts_ms: positions.save_query_position(key, ts_ms))]

    def finish(self, completed_run: bool) -> dict[str, object]:
        if self._source is None or self._searched is None:
            return {}
        summary = self._source.summary
        if completed_run and summary.completed and self._positions is not None:
            # Where the next `--from last` starts (less its margin).
            self._positions.save_completed_to(self._searched.key, summary.to_ms)
        block = summary.to_json()
        block["sessions"] = summary.sessions - (self._chunks.repeats if self._chunks else 0)
        block["why"] = self._searched.resolved.why
        if self._searched.slices is not None:
            block["slices"] = self._searched.slices.to_json()
        return {"query": block}


def query_key(spec: QuerySpec, shard: Shard | None) -> QueryKey:
    """What the journal files the search's position and end under. A shard's names the
    shard and the slices too: with another N (or width) its slices are other times, and
    going on from where the old ones ended could skip some; so it starts afresh, from
    `--first-from`."""
    if shard is None:
        return QueryKey(spec.effective_query, spec.playlist_id)
    sliced = f"{spec.effective_query} [shard {shard}, slices of {SLICE_MS} ms]"
    return QueryKey(sliced, spec.playlist_id)


def resolve_range(
    options: QueryOptions, now_ms: int, previous_to_ms: int | None, shard: Shard | None
) -> Resolved:
    """The range a run searches, and why. A shard takes `now` as the start of its hour,
    so that shards started within one hour take one range; none of their sessions hangs
    on it, since a moment's shard is its hour's, whatever range each shard took
    (`worker.query.slices`)."""
    now = now_ms if shard is None else slice_start(now_ms)
    if options.from_text.strip() == FROM_LAST:
        sharded = shard is not None
        resolved = resolve_last(
            options.to_text, now, previous_to_ms, options.first_from, fixed_example=sharded
        )
    else:
        span = resolve(options.from_text, options.to_text, now)
        resolved = Resolved(span, "--from and --to as given")
    if shard is None:
        return resolved
    why = (
        f"{resolved.why}; shard {shard} searches the hours of it numbered {shard.index} "
        f"mod {shard.count} from the epoch"
    )
    if relative(options.to_text):
        why += f", and took now as {iso(now)}, the start of its hour, as every shard started in it"
    return Resolved(resolved.time_range, why)


def _resumable(saved: int | None, completed_to: int | None, span: TimeRange) -> bool:
    """A saved position is where a stopped search may go on, if it lies inside this range
    and past the end of the last completed search: that one ends on its `--to`, which
    is no stopped search's position, and resuming there would skip the `--from last`
    margin (and, for a wider range, what the completed search never covered)."""
    if saved is None or not span.from_ms < saved < span.to_ms:
        return False
    return completed_to is None or saved > completed_to
