"""How a sandbox is set up: the one record every entry point (tests, CLI, `run --sandbox`)
builds, so they cannot drift apart."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from worker.sandbox.faults import FaultConfig
from worker.sandbox.ratelimit import Clock, check_rate_limit
from worker.sandbox.search_config import SearchConfig

DEFAULT_RATE_LIMIT = (100, 2.0)
"""100 requests per 2-second window: tight enough that a rehearsal shows the pacing."""

_MAX_PLAYLIST_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    rate_limit: tuple[int, float] = DEFAULT_RATE_LIMIT
    """(requests, seconds per window), as `parse_rate_limit` returns it."""
    rate_limit_name: str = "rum_replay_playlists"
    playlists: frozenset[int] | None = None
    """The playlists that exist (others get 404); None: every playlist exists."""
    api_key: str | None = field(default=None, repr=False)
    """The DD-API-KEY to require; None accepts any non-empty key."""
    app_key: str | None = field(default=None, repr=False)
    """The DD-APPLICATION-KEY to require; None accepts any non-empty key."""
    faults: FaultConfig = field(default_factory=FaultConfig)
    minimal: bool = False
    """For benchmarks: no request log, so the sandbox is never the bottleneck."""
    request_log_size: int = 1000
    search: SearchConfig = field(default_factory=SearchConfig)
    """The RUM search route: its population, its own rate limit, its faults."""
    clock: Clock = field(default=time.time, compare=False, repr=False)
    """Wall-clock seconds; the rate-limit windows follow it."""

    def __post_init__(self) -> None:
        check_rate_limit(*self.rate_limit)
        if self.playlists is not None:
            bad = sorted(p for p in self.playlists if not 0 < p <= _MAX_PLAYLIST_ID)
            if bad:
                raise ValueError(f"playlist ids must be positive 64-bit integers, not {bad}")
        if self.request_log_size < 0:
            raise ValueError("request_log_size must be 0 or more")
