"""`verify`'s send stage and undo's rule in process: a scripted server where the rule is
the point (the wire is tested over loopback in test_lifecycle.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from worker.answers import Answer, meaning_of
from worker.api import Request
from worker.deliver import Hand, Paced
from worker.health import RetryPolicy
from worker.journal import CreatedRow
from worker.pacer import Pacer
from worker.rows import Result, Row
from worker.stop import StopState
from worker.undo_plan import Verdict, verdict
from worker.verify import Verifier


def answer(status: int, payload: object = None, error: str | None = None) -> Answer:
    return Answer(meaning_of(status), status, 1.0, error, payload=payload)


def sid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


class Listing:
    """A scripted server: playlist 7 lists sessions 0-9 (3 a page); any other is 404."""

    def __init__(self) -> None:
        self.sent: list[Request] = []

    async def __call__(self, request: Request) -> Answer:
        self.sent.append(request)
        await asyncio.sleep(0)
        if not request.path.endswith("/7/sessions"):
            return answer(404, error="HTTP 404: playlist not found")
        number = int(dict(request.query)["page[number]"])
        page = [
            {"id": sid(n), "type": "rum_replay_session"}
            for n in range(10)[number * 3 : number * 3 + 3]
        ]
        return answer(200, {"data": page})


def verifier(server: Listing) -> Verifier:
    stop = StopState()
    paced = Paced(
        server, pacer=Pacer(rate=None, on_pause=lambda _e: None), stop=stop, sink=lambda _e: None
    )
    return Verifier(paced, policy=RetryPolicy(max_attempts=1), page_size=3)


def row(playlist_id: int, n: int) -> Row:
    return Row(playlist_id, sid(n), None, "rum", "in.csv", n + 2)


async def test_each_playlist_is_listed_once_and_rows_are_present_or_missing() -> None:
    server = Listing()
    check = verifier(server)
    rows = [row(7, n) for n in (0, 4, 12, 9, 15)]
    outcomes = await asyncio.gather(*(check.deliver(r, Hand()) for r in rows))
    assert [o.result for o in outcomes] == [
        Result.PRESENT,
        Result.PRESENT,
        Result.MISSING,
        Result.PRESENT,
        Result.MISSING,
    ]
    assert len(server.sent) == 4  # pages of 3, 3, 3 and the short one of 1
    extra = [session for _playlist, session in check.extra()]
    assert extra == sorted(sid(n) for n in (1, 2, 3, 5, 6, 7, 8))
    await check.close()


async def test_rows_of_a_playlist_that_cannot_be_listed_fail_with_the_reason() -> None:
    server = Listing()
    check = verifier(server)
    outcomes = [await check.deliver(row(8, n), Hand()) for n in range(3)]
    assert {o.result for o in outcomes} == {Result.FAILED}
    assert all(o.http_status == 404 for o in outcomes)
    assert "playlist not found" in str(outcomes[0].error)
    assert len(server.sent) == 1, "a failed listing is not asked again for every row"
    assert list(check.extra()) == []


def created(*, maybe: bool = False, later: bool = False, removed: bool = False) -> CreatedRow:
    return CreatedRow((7, "s", "rum"), 1, maybe, later, removed)


@pytest.mark.parametrize(
    ("row_", "include_maybe", "expected"),
    [
        (created(), False, Verdict.REMOVE),
        (created(maybe=True), False, Verdict.MAYBE),
        (created(maybe=True), True, Verdict.REMOVE),
        (created(later=True), False, Verdict.ADDED_LATER),
        (created(later=True, maybe=True), True, Verdict.ADDED_LATER),
        (created(removed=True), False, Verdict.ALREADY_REMOVED),
        (created(removed=True, later=True), True, Verdict.ALREADY_REMOVED),
    ],
)
def test_undo_removes_its_own_creations_only(
    row_: CreatedRow, include_maybe: bool, expected: Verdict
) -> None:
    assert verdict(row_, include_maybe=include_maybe) is expected
