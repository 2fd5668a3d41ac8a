"""When a run should give up as a whole, and how hard to try one row before it does.

A row the API refuses (a 4xx such as 404 for a playlist that does not exist) is the
row's failure, and shows the API at work: it does not count towards a systemic abort.
Otherwise a rerun that resends only the rows still failing, all of them for the same bad
data, would abort every time (exit 3) and leave them unaccounted for. Keys valid for
another site or organisation are refused (401/403), not 404.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from worker.answers import DONE, Answer, Meaning
from worker.stop import Reason


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one row, and when the run should give up as a whole."""

    max_attempts: int = 5
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0
    refusals_to_abort: int = 3
    """401/403 answers in a row (429s aside) that end the run: the keys are refused."""
    failure_window: int = 200
    failure_rate_to_abort: float = 0.95

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter, so retries spread out rather than align."""
        return rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2 ** (failures - 1)))


class Health:
    """Watches the answers for failures that are the run's, not a row's."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._refusals = 0
        self._recent: deque[bool] = deque(maxlen=policy.failure_window)
        self._failures = 0

    def record(self, answer: Answer) -> Reason | None:
        """The reason to stop the run that this answer completes, if any."""
        meaning = answer.meaning
        if meaning is DONE:
            self._refusals = 0
            recent = self._recent
            # A full window of successes stays one: nothing to count.
            if self._failures or len(recent) < self._policy.failure_window:
                self._count(failed=False)
            return None
        if meaning is Meaning.FATAL:
            return Reason.FATAL
        if meaning is Meaning.RATE_LIMITED:
            return None
        if meaning is Meaning.KEYS_REFUSED:
            self._refusals += 1
            if self._refusals >= self._policy.refusals_to_abort:
                return Reason.KEYS_REFUSED
        else:
            self._refusals = 0
        failed = meaning is Meaning.RETRYABLE or meaning is Meaning.KEYS_REFUSED
        if self._count(failed=failed):
            return Reason.SYSTEMIC
        return None

    def _count(self, *, failed: bool) -> bool:
        """Slide the window; True when it is full and nearly all of it failed."""
        recent = self._recent
        if self._failures and len(recent) == recent.maxlen:
            self._failures -= recent[0]  # the oldest leaves the window as this one enters
        recent.append(failed)
        if not failed:
            return False  # a success never brings the run nearer an abort
        self._failures += 1
        window = self._policy.failure_window
        return (
            len(recent) == window and self._failures >= window * self._policy.failure_rate_to_abort
        )
