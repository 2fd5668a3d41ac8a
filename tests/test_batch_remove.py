"""The remove send stage (`worker.batch_remove`) in process, through the real pipeline and
pacer, against a scripted `send`: batches per playlist, halving, a row named by a 400,
and a stop while a batch is in flight."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from worker.answers import Answer, Meaning, meaning_of
from worker.api import Request
from worker.batch_remove import BatchRemover, concurrency_for
from worker.bulk_removal import BatchSizer
from worker.chunks import ThreadedChunks
from worker.events import fan_out
from worker.health import RetryPolicy
from worker.pacer import Pacer
from worker.pipeline import Pipeline, Settings
from worker.report import Report
from worker.rows import Outcome, Result, Row
from worker.stop import Reason, StopState


def answer(status: int, error: str | None = None) -> Answer:
    return Answer(meaning_of(status), status, 1.0, error)


def rows(count: int, playlists: tuple[int, ...] = (7, 8)) -> list[Row]:
    return [
        Row(playlists[n % len(playlists)], str(uuid.UUID(int=n + 1)), None, "rum", "in.csv", n + 2)
        for n in range(count)
    ]


class Server:
    """A scripted `send`: `respond` answers each request; every request is kept."""

    def __init__(self, respond: Callable[[Request], Answer] = lambda _r: answer(204)) -> None:
        self.respond = respond
        self.sent: list[Request] = []

    async def __call__(self, request: Request) -> Answer:
        self.sent.append(request)
        await asyncio.sleep(0)
        return self.respond(request)


def ids_of(request: Request) -> list[str]:
    assert isinstance(request.body, dict)
    return [item["id"] for item in request.body["data"]]


async def remove(
    server: Server,
    items: list[Row],
    *,
    size: int = 100,
    stop: StopState | None = None,
    flush_s: float = 1.0,
) -> tuple[Report, list[Outcome], BatchSizer]:
    report, outcomes = Report(), []
    stop = stop or StopState()

    def keep(event: object) -> None:
        if isinstance(event, Outcome):
            outcomes.append(event)

    sink = fan_out([report, keep])
    sizer = BatchSizer(size)
    remover = BatchRemover(
        send=server,
        pacer=Pacer(rate=None, on_pause=sink),
        sink=sink,
        sizer=sizer,
        policy=RetryPolicy(max_attempts=2, backoff_base_s=0.001),
        stop=stop,
        flush_s=flush_s,  # long: a batch that can fill does, even on a loaded machine
    )
    pipeline = Pipeline(
        ThreadedChunks(iter(items)),
        admit=lambda rows: [True] * len(rows),
        deliver=remover.deliver,
        sink=sink,
        stop=stop,
        settings=Settings(concurrency=concurrency_for(size, 4), grace_s=30.0),
    )
    await pipeline.run()
    return report, outcomes, sizer


async def test_rows_go_in_full_batches_per_playlist() -> None:
    server = Server()
    report, outcomes, _ = await remove(server, rows(250), size=50)
    assert report.removed == 250
    assert report.rows_read == 250
    assert all(r.method == "DELETE" and r.path.endswith("/sessions") for r in server.sent)
    by_playlist: dict[str, list[str]] = {}
    for request in server.sent:
        by_playlist.setdefault(request.path, []).extend(ids_of(request))
    assert {path: len(ids) for path, ids in by_playlist.items()} == {
        "/api/v2/rum/replay/playlists/7/sessions": 125,
        "/api/v2/rum/replay/playlists/8/sessions": 125,
    }
    assert len(server.sent) == 6  # 50 + 50 + 25 for each playlist
    assert {o.result for o in outcomes} == {Result.REMOVED}
    assert report.requests == 6


async def test_a_batch_too_large_is_halved_and_the_size_kept_for_the_run() -> None:
    def capped(request: Request) -> Answer:
        if request.body is not None and len(ids_of(request)) > 30:
            return answer(400, "HTTP 400: too many sessions: at most 30 sessions per request")
        return answer(204)

    server = Server(capped)
    report, _, sizer = await remove(server, rows(200, (7,)), size=100)
    assert report.removed == 200
    assert report.failed == 0
    assert sizer.size == 25
    sent = [len(ids_of(r)) for r in server.sent]
    assert sent[:2] == [100, 50]
    assert max(sent[2:]) == 25


async def test_a_400_naming_one_session_fails_that_row_alone() -> None:
    items = rows(10, (7,))
    bad = items[3].session_id

    def refuse(request: Request) -> Answer:
        if bad in ids_of(request):
            return answer(400, f"HTTP 400: invalid session id {bad}")
        return answer(204)

    report, outcomes, _ = await remove(Server(refuse), items, size=10)
    assert report.removed == 9
    assert report.failed == 1
    (failed,) = [o for o in outcomes if o.result is Result.FAILED]
    assert failed.row == items[3]
    assert failed.error is not None
    assert bad in failed.error


async def test_a_stop_waits_for_the_batch_in_flight_and_counts_it_truly() -> None:
    """A signal while a batch is in flight: every member is marked sending, so the stop
    lets the request finish (within --grace) and its rows count as removed."""
    stop = StopState()
    release = asyncio.Event()
    in_flight = asyncio.Event()

    class Held(Server):
        async def __call__(self, request: Request) -> Answer:
            self.sent.append(request)
            in_flight.set()
            await release.wait()
            return answer(204)

    async def interrupt() -> None:
        await in_flight.wait()
        stop.interrupt("SIGTERM")
        release.set()

    server = Held()
    items = rows(20, (7,))
    (report, outcomes, _), _ = await asyncio.gather(
        remove(server, items, size=20, stop=stop), interrupt()
    )
    assert stop.reason is Reason.SIGNAL
    assert len(server.sent) == 1
    assert report.removed == 20
    assert report.rows_read == 20
    assert len(outcomes) == 20


async def test_a_stop_before_a_batch_leaves_leaves_its_rows_not_attempted() -> None:
    stop = StopState()
    stop.interrupt("SIGINT")
    server = Server()
    report, _, _ = await remove(server, rows(5, (7,)), size=10, stop=stop)
    assert server.sent == []
    assert report.removed == 0
    assert report.rows_read == report.not_attempted


async def test_retryable_failures_are_retried_then_fail_the_batch() -> None:
    server = Server(lambda _r: Answer(Meaning.RETRYABLE, 503, 1.0, "HTTP 503: busy"))
    report, outcomes, _ = await remove(server, rows(4, (7,)), size=4)
    assert len(server.sent) == 2  # --max-attempts 2
    assert report.failed == 4
    assert all(o.attempts == 2 for o in outcomes)


async def test_a_429_spends_no_attempt_of_the_batchs_rows() -> None:
    """Its rows' `attempts` are those --max-attempts bounds: the 429 is not one."""
    limited = Answer(Meaning.RATE_LIMITED, 429, 1.0, "HTTP 429: slow down", retry_after_s=0.0)
    answers = iter([limited, answer(204)])
    server = Server(lambda _r: next(answers))
    report, outcomes, _ = await remove(server, rows(4, (7,)), size=4)
    assert len(server.sent) == 2
    assert (report.removed, report.rate_limited, report.retries) == (4, 1, 0)
    assert all(o.attempts == 1 for o in outcomes)


async def test_batches_refused_together_halve_the_size_once_between_them() -> None:
    """Two playlists' batches of 100 in flight at once, both refused: the size is half of
    what was sent (50, then 25), not halved once for each refusal."""

    def capped(request: Request) -> Answer:
        if request.body is not None and len(ids_of(request)) > 30:
            return answer(400, "HTTP 400: too many sessions: at most 30 sessions per request")
        return answer(204)

    server = Server(capped)
    report, _, sizer = await remove(server, rows(400, (7, 8)), size=100)
    assert report.removed == 400
    assert sizer.size == 25
    sizes = [len(ids_of(r)) for r in server.sent]
    refused = sorted(size for size in sizes if size > 30)
    assert refused == [50, 50, 100, 100]  # 100 and 50 refused, once for each playlist
    accepted = [size for size in sizes if size <= 30]
    assert max(accepted) == 25  # never halved past 25 (a batch the flush timer sends may be
    assert sum(accepted) == 400  # smaller on a loaded machine: only the ceiling is the rule)
