"""The records the hot path makes with `new_record` (`worker.records`): nothing checks
the tuple it is given, so each place that makes one is held here to the record that the
NamedTuple's own constructor makes by keyword, field by field."""

from __future__ import annotations

import asyncio

from multidict import CIMultiDict, CIMultiDictProxy

from worker import api
from worker.answers import (
    DONE,
    RATE_LIMITED,
    Answer,
    AnswerReader,
    Meaning,
    RateLimit,
    parse_rate_limit,
)
from worker.api import SMALL_CAP, Request
from worker.deliver import Hand, Paced, Sender
from worker.events import Answered, Event
from worker.health import RetryPolicy
from worker.operation import AddSession
from worker.pacer import Pacer, Ticket
from worker.rows import ALREADY_PRESENT, FAILED, Outcome, Row
from worker.scrub import Scrubber
from worker.stop import StopState
from worker.validation import Validator

HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            "X-RateLimit-Limit": "60",
            "X-RateLimit-Period": "10",
            "X-RateLimit-Remaining": "59",
            "X-RateLimit-Reset": "7",
            "X-RateLimit-Name": "rum_replay_playlists",
        }
    )
)
BODY = b'{"data": {"id": "s", "type": "rum_replay_session"}}'
ROW = Row(playlist_id=7, session_id="s-1", ts=1_704_067_200_000, data_source="rum",
          source="in.csv", line=2)  # fmt: skip


def same(made: tuple[object, ...], expected: tuple[object, ...]) -> None:
    """Equal, and of the same type and length: a tuple one field short or long, or with
    two fields of different values swapped, fails here (the tests give the fields of
    each record different values wherever the code can)."""
    assert type(made) is type(expected)
    assert len(made) == len(type(expected)._fields)  # type: ignore[attr-defined]
    assert made._asdict() == expected._asdict()  # type: ignore[attr-defined]


def test_the_row_validation_makes() -> None:
    validator = Validator("rum", "ms", lambda: 1_800_000_000_000)
    made = validator.row(7, "s-1", 1_704_067_200_000, None, source="in.csv", line=2)
    same(made, ROW)


def test_the_request_to_add_a_session() -> None:
    path = "/api/v2/rum/replay/playlists/7/sessions/s-1"
    expected = Request(
        method="PUT",
        path=path,
        query="ts=1704067200000&data_source=rum",
        body=None,
        family="playlist_sessions",
        body_cap=SMALL_CAP,
        want_payload=False,
    )
    same(api.add_session(ROW), expected)


def test_the_rate_limit_of_datadogs_headers() -> None:
    expected = RateLimit(limit=60, period=10, remaining=59, reset=7, name="rum_replay_playlists")
    same(parse_rate_limit(HEADERS), expected)  # type: ignore[arg-type]


def test_the_answer_to_a_success() -> None:
    reader = AnswerReader(Scrubber(["k" * 32]), "http://127.0.0.1:1")
    expected = Answer(
        meaning=DONE,
        status=201,
        latency_ms=1.5,
        error=None,
        rate_limit=parse_rate_limit(HEADERS),
        retry_after_s=None,
        maybe_applied=False,
        payload=None,
        body_problem=None,
    )
    same(reader.http(201, HEADERS, BODY, 1.5), expected)


def test_the_ticket_the_pacer_hands_out() -> None:
    pacer = Pacer(rate=None, on_pause=lambda _pause: None, wall=lambda: 1234.5)
    ticket = pacer.try_acquire("playlist_sessions")
    assert ticket is not None
    same(ticket, Ticket(seq=1, sent_wall=1234.5, family="playlist_sessions", budget=ticket.budget))


def delivered(*answers: Answer) -> tuple[Outcome, list[Event]]:
    """`ROW` delivered by the send stage over a client that gives `answers` in turn, with
    no pause or backoff to wait out; its outcome, and the events it told the sinks."""
    events: list[Event] = []
    scripted = iter(answers)

    async def send(request: Request) -> Answer:
        return next(scripted)

    async def deliver() -> Outcome:
        stop = StopState()
        pacer = Pacer(rate=None, on_pause=lambda _pause: None, max_pause_s=0.0)
        paced = Paced(send, pacer=pacer, stop=stop, sink=events.append)
        policy = RetryPolicy(backoff_base_s=0.0)
        sender = Sender(AddSession(), paced, policy=policy, stop=stop)
        return await sender.deliver(ROW, Hand())

    return asyncio.run(deliver()), events


def test_the_attempts_and_the_outcome_of_a_row() -> None:
    """A 429, a 500 (an answer lost after the server may have applied it), then a 200:
    each attempt's flags and the outcome's error and note differ, so a swap shows. The
    429 spends no attempt: the 500 is the first, repeated by the 200."""
    outcome, events = delivered(
        Answer(RATE_LIMITED, 429, 1.5, "HTTP 429: slow down"),
        Answer(Meaning.RETRYABLE, 500, 2.5, "HTTP 500: oops", maybe_applied=True),
        Answer(DONE, 200, 3.5),
    )
    expected_attempts = [
        Answered(status=429, rate_limited=True, latency_ms=1.5, retry=False),
        Answered(status=500, rate_limited=False, latency_ms=2.5, retry=False),
        Answered(status=200, rate_limited=False, latency_ms=3.5, retry=True),
    ]
    assert len(events) == len(expected_attempts)
    for made, attempt in zip(events, expected_attempts, strict=True):
        same(made, attempt)  # type: ignore[arg-type]
    assert outcome.note is not None
    expected = Outcome(
        row=ROW,
        result=ALREADY_PRESENT,
        http_status=200,
        attempts=2,
        latency_ms=3.5,
        error=None,
        note=outcome.note,
    )
    same(outcome, expected)
    assert "HTTP 500: oops" in outcome.note


def test_the_outcome_of_a_row_that_failed() -> None:
    """The error set and the note not: the other way round from the test above."""
    outcome, _ = delivered(Answer(Meaning.ROW_FAILED, 404, 4.5, "HTTP 404: no such playlist"))
    expected = Outcome(
        row=ROW,
        result=FAILED,
        http_status=404,
        attempts=1,
        latency_ms=4.5,
        error="HTTP 404: no such playlist",
        note=None,
    )
    same(outcome, expected)
