"""How the sandbox's RUM search is set up: its population, rate limit and faults, and
the sandbox options that set them. Apart from the HTTP side (`search.py`), so parsing
the sandbox's options never imports the server."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from worker.sandbox.population import PopulationConfig

"""50 searches per 10-second window: a budget of its own, apart from the playlists'."""

_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhdw])")
_OPTIONS = {
    "sessions": "--population",
    "events_per_session": "--events-per-session",
    "session_events": "--session-events",
    "replay_share": "--replay-share",
    "active_share": "--active-share",
}
"""PopulationConfig field -> the option that sets it, for error messages."""
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


@dataclass(frozen=True, slots=True)
class SearchFaults:
    """How many of the next search answers each fault takes (see `search.py`)."""

    timeouts: int = 0
    expired_cursors: int = 0
    warnings: int = 0

    def __post_init__(self) -> None:
        for name in ("timeouts", "expired_cursors", "warnings"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise ValueError(f"search fault {name} must be a count (0 or more), not {value!r}")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    population: PopulationConfig = field(default_factory=PopulationConfig)
    """By default 1,000 sessions over the 7 days before the sandbox starts."""
    faults: SearchFaults = field(default_factory=SearchFaults)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "RUM search", "POST /api/v2/rum/events/search over a generated, seeded population"
    )
    group.add_argument(
        "--population", type=int, default=1000, metavar="N", help="sessions (default: 1000)"
    )
    group.add_argument(
        "--population-span",
        default="7d",
        metavar="DURATION",
        help="the sessions fill this span (N s|m|h|d|w) ending as the sandbox starts (default: 7d)",
    )
    group.add_argument(
        "--events-per-session", type=int, default=4, metavar="N", help="(default: 4)"
    )
    group.add_argument(
        "--session-events",
        type=int,
        default=1,
        metavar="N",
        help="events per session of type session (default: 1)",
    )
    group.add_argument(
        "--replay-share",
        type=float,
        default=0.7,
        metavar="SHARE",
        help="share of sessions with a replay (default: 0.7)",
    )
    group.add_argument(
        "--active-share",
        type=float,
        default=0.1,
        metavar="SHARE",
        help="share of sessions still active (default: 0.1)",
    )
    group.add_argument("--population-seed", type=int, default=0, metavar="N", help="(default: 0)")


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    """Raises ValueError naming the bad option."""
    match = _DURATION.fullmatch(args.population_span.strip())
    if match is None:
        raise ValueError(
            f"--population-span: {args.population_span!r} is not a duration: write e.g. 7d or 12h"
        )
    span_ms = int(match[1]) * _UNIT_MS[match[2]]
    try:
        population = _population(args, span_ms)
    except ValueError as exc:
        field = str(exc).partition(" ")[0]
        raise ValueError(f"{_OPTIONS.get(field, '--population')}: {exc}") from None
    return SearchConfig(population=population)


def _population(args: argparse.Namespace, span_ms: int) -> PopulationConfig:
    return PopulationConfig(
        sessions=args.population,
        span_ms=span_ms,
        events_per_session=args.events_per_session,
        session_events=args.session_events,
        replay_share=args.replay_share,
        active_share=args.active_share,
        seed=args.population_seed,
    )
