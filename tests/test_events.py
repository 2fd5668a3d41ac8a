"""The fan-out of events to sinks: each sink reads the kinds it asks for, in order."""

from __future__ import annotations

from worker.events import (
    KINDS,
    Answered,
    Ended,
    Event,
    Sink,
    Skipped,
    fan_out,
    of_kind,
    reading,
)
from worker.pacer import Pause
from worker.rows import InvalidRow, Outcome, Result, Row

ROW = Row(1001, "00000000-0000-0000-0000-000000000001", 1_704_067_200_000, "rum", "in.csv", 2)
ONE_OF_EACH: list[Event] = [
    InvalidRow("in.csv", 3, "bad", {}),
    Outcome(ROW, Result.CREATED, 201, 1, 1.0),
    Skipped([ROW]),
    Answered(201, False, 1.0, False),
    Pause(1.0, 1.0, "429", "playlist_sessions"),
    Ended({"rows_read": 3}),
]


def test_every_kind_of_event_is_in_the_union_the_fan_out_routes() -> None:
    assert {type(event) for event in ONE_OF_EACH} == set(KINDS)


def test_each_sink_gets_the_kinds_it_reads_in_order_and_a_plain_sink_gets_all() -> None:
    calls: list[tuple[str, Event]] = []

    def recorder(name: str) -> Sink:
        return lambda event: calls.append((name, event))

    journal = reading(Outcome, Ended, sink=recorder("journal"))
    report = recorder("report")
    attempts = reading(Answered, sink=recorder("attempts"))
    later = reading(Outcome, Skipped, sink=recorder("later"))
    sink = fan_out([fan_out([journal, report, attempts]), later])

    for event in ONE_OF_EACH:
        sink(event)

    expected = [
        (name, event)
        for event in ONE_OF_EACH
        for name, kinds in (
            ("journal", {Outcome, Ended}),
            ("report", set(KINDS)),
            ("attempts", {Answered}),
            ("later", {Outcome, Skipped}),
        )
        if type(event) in kinds
    ]
    assert calls == expected


def test_a_reading_sink_called_alone_filters_as_the_fan_out_would() -> None:
    seen: list[Event] = []
    only_outcomes = reading(Outcome, sink=seen.append)

    for sink in (only_outcomes, fan_out([only_outcomes])):  # alone, and as a fan-out of one
        for event in ONE_OF_EACH:
            sink(event)

    assert seen == [ONE_OF_EACH[1]] * 2


def test_the_sinks_of_one_kind_get_what_the_fan_out_would_give_them() -> None:
    """`of_kind` resolves once what the fan-out decides at each event: for every kind,
    and for a fan-out, a reading sink and a plain one, the same calls in the same order;
    one sink of the kind is itself the callable."""
    calls: list[tuple[str, Event]] = []

    def recorder(name: str) -> Sink:
        return lambda event: calls.append((name, event))

    report = recorder("report")
    attempts = reading(Answered, sink=recorder("attempts"))
    journal = reading(Outcome, Ended, sink=recorder("journal"))
    for sink in (fan_out([journal, report, attempts]), attempts, report):
        for event in ONE_OF_EACH:
            calls.clear()
            sink(event)
            by_fan_out = list(calls)
            calls.clear()
            of_kind(sink, type(event))(event)
            assert calls == by_fan_out, (sink, event)

    assert of_kind(fan_out([journal, report]), Answered) is report
    assert of_kind(attempts, Answered) is attempts.sink
