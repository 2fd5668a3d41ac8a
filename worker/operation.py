"""What a run does to each row: the request that does it, and what its success means.

The send stage (`worker.deliver`) is the same for every operation: pacing, retries and
accounting do not care whether a session is added or removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker import api
from worker.answers import Answer
from worker.api import Request
from worker.rows import ALREADY_PRESENT, CREATED, Result, Row


class RowOperation(Protocol):
    @property
    def family(self) -> str:
        """The rate-limit family its requests are paced under."""
        ...

    def request(self, row: Row) -> Request: ...

    def result(self, answer: Answer) -> Result:
        """The row's result for an answer whose meaning is DONE."""
        ...


@dataclass(frozen=True, slots=True)
class AddSession:
    """PUT a session into its playlist: 201 created it, 200 found it there already."""

    family: str = "playlist_sessions"

    def request(self, row: Row) -> Request:
        return api.add_session(row)

    def result(self, answer: Answer) -> Result:
        return CREATED if answer.status == 201 else ALREADY_PRESENT


@dataclass(frozen=True, slots=True)
class RemoveSession:
    """DELETE one session from its playlist: 204 whether or not it was there."""

    family: str = "playlist_sessions"

    def request(self, row: Row) -> Request:
        return api.remove_session(row.playlist_id, row.session_id)

    def result(self, answer: Answer) -> Result:
        return Result.REMOVED
