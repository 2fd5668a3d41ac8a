"""What a caller decides about reading (`ReaderOptions`), and the error that stops a run
before it starts (`InputError`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.rows import DEFAULT_DATA_SOURCE


class InputError(Exception):
    """Nothing can be read, or the run must not start (exit 2); the message says why."""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    """How to read inputs: the format override and the defaults for fields rows omit."""

    fmt: str | None = None
    default_data_source: str = DEFAULT_DATA_SOURCE
    ts_unit: str = "ms"
    now_ms: Callable[[], int] = field(default=_wall_clock_ms)
    default_playlist: int | None = None
    """`--playlist ID`: rows without a playlist_id go to ID; a row naming another is invalid."""
    ts_required: bool = True
    """False for operations that need no time (remove, verify): rows may leave ts out."""
