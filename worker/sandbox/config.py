"""How a sandbox is set up: the one record every entry point (tests, CLI, `run --sandbox`)
builds, so they cannot drift apart. Cheap to import: no aiohttp."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.sandbox.faults import FaultConfig
from worker.sandbox.ratelimit import Clock, check_rate_limit
from worker.sandbox.search_config import SearchConfig

DEFAULT_RATE_LIMIT = (100, 2.0)
"""100 requests per 2-second window: tight enough that a rehearsal shows the pacing."""

_MAX_PLAYLIST_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Family:
    """Endpoints that draw on one rate-limit budget, as Datadog groups them: each
    family has its own window, count and `X-RateLimit-Name`."""

    key: str
    """The family as a client's request names it (`Request.family`)."""
    header_name: str
    """Its `X-RateLimit-Name`."""
    config_field: str
    """The SandboxConfig field that holds its (limit, period)."""
    option: str
    """The sandbox's command-line option for it."""
    default: tuple[int, float]


PLAYLIST_SESSIONS = Family(
    "playlist_sessions", "rum_replay_playlists", "rate_limit", "--rate-limit", DEFAULT_RATE_LIMIT
)
"""Adding, listing and removing a playlist's sessions (the name is the one the sandbox
has always sent)."""
PLAYLISTS = Family(
    "playlists",
    "rum_replay_playlists_crud",
    "playlists_rate_limit",
    "--playlists-rate-limit",
    (50, 10.0),
)
"""Creating, listing, reading, updating and deleting playlists: rare calls."""
RUM_SEARCH = Family(
    "rum_search", "rum_search", "search_rate_limit", "--search-rate-limit", (300, 60.0)
)
"""The RUM events search."""
FAMILIES = (PLAYLIST_SESSIONS, PLAYLISTS, RUM_SEARCH)


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    rate_limit: tuple[int, float] = PLAYLIST_SESSIONS.default
    """(requests, seconds per window) of the playlist-session routes."""
    playlists_rate_limit: tuple[int, float] = PLAYLISTS.default
    search_rate_limit: tuple[int, float] = RUM_SEARCH.default
    playlists: frozenset[int] | None = None
    """The playlists that exist at the start (others get 404 until created); None: every
    playlist exists, and one comes into being the first time a request names it."""
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
    """Wall-clock seconds; the rate-limit windows and playlist timestamps follow it."""

    def __post_init__(self) -> None:
        for family in FAMILIES:
            check_rate_limit(*self.limit_of(family))
        if self.playlists is not None:
            bad = sorted(p for p in self.playlists if not 0 < p <= _MAX_PLAYLIST_ID)
            if bad:
                raise ValueError(f"playlist ids must be positive 64-bit integers, not {bad}")
        if self.request_log_size < 0:
            raise ValueError("request_log_size must be 0 or more")

    def limit_of(self, family: Family) -> tuple[int, float]:
        limit: tuple[int, float] = getattr(self, family.config_field)
        return limit

    def with_limits(self, limits: Mapping[Family, tuple[int, float]]) -> SandboxConfig:
        """This config with some families' (limit, period) changed."""
        changes: dict[str, Any] = {family.config_field: limit for family, limit in limits.items()}
        return dataclasses.replace(self, **changes)
