"""`verify`'s send stage and undo's rule in process: a scripted server where the rule is
the point (the wire is tested over loopback in test_lifecycle.py)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from worker.answers import Answer, meaning_of
from worker.api import Request
from worker.deliver import Hand, Paced
from worker.health import RetryPolicy
from worker.journal import CreatedRow, SqliteJournal, reading
from worker.pacer import Pacer
from worker.rows import Outcome, Result, Row
from worker.stop import StopState
from worker.undo_plan import UndoRefused, Verdict, the_run, verdict
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
        number = int(dict(parse_qsl(request.query))["page[number]"])
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


def _journal_with(path: Path, runs: list[tuple[list[Result], dict[str, object]]]) -> list[str]:
    """A journal holding one run per item (its rows' results and its options); the ids."""
    ids = []
    for n, (results, options) in enumerate(runs):
        journal = SqliteJournal.open(
            path, target="http://127.0.0.1:9", fresh=False, run_info={"options": options}
        )
        for i, result in enumerate(results):
            row = Row(1, f"run{n}-s{i}", 1_704_067_200_000, "rum", "in.csv", i + 2)
            journal.admit(row)
            journal.outcome(Outcome(row, result, 201 if result is Result.CREATED else 500, 1))
        journal.close({})
        ids.append(journal.run_id)
    return ids


def test_undo_last_takes_the_last_run_that_added_a_session(tmp_path: Path) -> None:
    """A later run that aborted, or skipped everything, added nothing: `--last` passes it
    by rather than undoing nothing and calling that done."""
    path = tmp_path / "j.sqlite3"
    added, _ = _journal_with(path, [([Result.CREATED] * 3, {}), ([Result.FAILED], {})])
    with reading(path) as history:
        assert the_run(history, None, "http://127.0.0.1:9").run_id == added
        assert the_run(history, None, None).run_id == added


def test_a_run_sent_to_its_own_sandbox_cannot_be_undone(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    (run_id,) = _journal_with(path, [([Result.CREATED], {"sandbox": True})])
    with reading(path) as history, pytest.raises(UndoRefused, match="sandbox started for it"):
        the_run(history, run_id, None)
