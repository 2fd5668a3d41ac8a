"""Why a run stops early, and how urgently: one state that every stage reads.

A run is RUNNING until something asks it to stop. A graceful stop (a first signal, an
abort) moves it to STOPPING: nothing new is sent, and requests in flight may finish
within the grace period. HALTING (a second signal, a stall, a crash) abandons them too.
After an abort the rest of the input is still read, to be counted; a signal then moves
the run to QUITTING, which ends that reading too. The first reason given is the one
reported.
"""

from __future__ import annotations

import asyncio
import enum


class Reason(enum.Enum):
    """Why a run ended early; a run that reached the end of its input has none."""

    KEYS_REFUSED = "the API keeps refusing the keys"
    SYSTEMIC = "nearly every request is failing"
    STALLED = "no progress"
    FATAL = "the API cannot be reached as configured"
    SIGNAL = "interrupted"
    INPUT = "the input became unreadable"
    JOURNAL = "the journal cannot be written"
    SOURCE = "the search could not go on"
    QUERY_REFUSED = "the search was refused by the API"
    """A 4xx to the search's first page: the query or its range is to fix (exit 2)."""
    OUTPUT = "standard output was closed"

    @property
    def accounts_for_the_rest(self) -> bool:
        """After this stop the rest of the input is still read and counted, so the report
        covers all of it. Not after a signal (the user wants out, and a quiet standard
        input may never end) nor when the input itself failed."""
        return self not in (Reason.SIGNAL, Reason.INPUT, Reason.OUTPUT)


class Phase(enum.IntEnum):
    RUNNING = 0
    STOPPING = 1
    HALTING = 2
    QUITTING = 3


class StopState:
    """The run's phase, the reason and the answer or error behind it."""

    def __init__(self) -> None:
        self.phase = Phase.RUNNING
        self.reason: Reason | None = None
        self.cause: str | None = None
        self._reached = {phase: asyncio.Event() for phase in Phase if phase}

    def request(self, reason: Reason, cause: str | None = None, *, at_once: bool = False) -> None:
        """Stop gracefully, or `at_once`; a later reason never replaces the first."""
        if self.reason is None:
            self.reason, self.cause = reason, cause
        self._advance(Phase.HALTING if at_once else Phase.STOPPING)

    def interrupt(self, name: str) -> None:
        """A signal: the first stops the run gracefully; each later one (or one after an
        abort) goes a phase further."""
        if self.reason is None:
            self.request(Reason.SIGNAL, name)
        else:
            self._advance(Phase(min(self.phase + 1, Phase.QUITTING)))

    def add_cause(self, more: str) -> None:
        self.cause = f"{self.cause}; {more}" if self.cause else more

    def _advance(self, phase: Phase) -> None:
        while self.phase < phase:
            self.phase = Phase(self.phase + 1)
            self._reached[self.phase].set()

    async def reached(self, phase: Phase) -> None:
        await self._reached[phase].wait()
