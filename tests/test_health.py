"""When a run gives up as a whole: the sliding window of failures and refused keys."""

from __future__ import annotations

import pytest

from worker.answers import Answer, Meaning
from worker.health import Health, RetryPolicy
from worker.stop import Reason

ANSWERS = {
    "F": Answer(Meaning.RETRYABLE, 503, 1.0),
    "S": Answer(Meaning.DONE, 201, 1.0),
    "R": Answer(Meaning.RATE_LIMITED, 429, 1.0),
    "B": Answer(Meaning.ROW_FAILED, 404, 1.0),
    "K": Answer(Meaning.KEYS_REFUSED, 403, 1.0),
    "X": Answer(Meaning.FATAL, 307, 1.0),
}


def first_stop(answers: str, policy: RetryPolicy) -> tuple[int, Reason] | None:
    health = Health(policy)
    for number, letter in enumerate(answers, start=1):
        reason = health.record(ANSWERS[letter])
        if reason is not None:
            return number, reason
    return None


@pytest.mark.parametrize(
    ("answers", "stops_at"),
    [
        ("FFF", None),  # the window is not full yet
        ("FFFF", 4),
        ("SFFF", 4),  # 3 of 4 failed: the rate is reached
        ("SSFF", None),
        ("FFSSFF", None),  # the window holds S S F F: the first two failures left it
        ("FFSSFFF", 7),  # S F F F
        ("FRRRFFF", 7),  # 429s are neither successes nor failures
        ("BBBBBB", None),  # a row refused (404) is the row's failure, not the run's
        ("FFBF", 4),  # ... and counts in the window as an answer that is no failure
    ],
)
def test_a_window_of_mostly_failures_is_systemic(answers: str, stops_at: int | None) -> None:
    """A window of 4 answers with an abort at 75% failures."""
    policy = RetryPolicy(failure_window=4, failure_rate_to_abort=0.75, refusals_to_abort=99)
    stopped = first_stop(answers, policy)
    assert stopped == (None if stops_at is None else (stops_at, Reason.SYSTEMIC))


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ("KKK", (3, Reason.KEYS_REFUSED)),
        ("KKSKK", None),  # a success in between: the keys work
        ("KKRK", (4, Reason.KEYS_REFUSED)),  # a 429 says nothing about the keys
        ("SX", (2, Reason.FATAL)),  # a redirect (or a TLS failure) ends the run at once
    ],
)
def test_refused_keys_and_fatal_answers(answers: str, expected: tuple[int, Reason] | None) -> None:
    policy = RetryPolicy(failure_window=100, refusals_to_abort=3)
    assert first_stop(answers, policy) == expected
