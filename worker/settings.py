"""A run's configuration, typed and checked: built by the CLI, read by everything below.

Nothing below the command line sees argparse. Every value here has already been
checked, so a run that gets this far can only fail on what the world does (an input
that turns unreadable, an API that refuses), never on what the user typed.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import Credentials, Route
from worker.health import RetryPolicy
from worker.input import ReaderOptions
from worker.jobs import AddJob, Job
from worker.pacer import DEFAULT_MAX_PAUSE_S
from worker.shard import Shard


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go, and with which keys."""

    route: Route | None
    """None: a sandbox is started for this run, on a free loopback port."""
    credentials: Credentials | None
    """None: a sandbox's (made up for it) or a dry run's (nothing is sent)."""
    tls: ssl.SSLContext | bool = True
    sandbox_rate_limit: tuple[int, float] | None = None
    access_options: tuple[str, ...] = ()
    """The options that reach it besides its address (`--api-key-file PATH`,
    `--app-key-file PATH`, `--ca-bundle PATH`, `--allow-insecure-http`): the commands a
    summary suggests repeat them, or they would not run where this one ran."""


@dataclass(frozen=True, slots=True)
class Pace:
    concurrency: int = 16
    rate: float | None = None
    """A ceiling of requests per second on top of the server's limits."""
    timeout_s: float = 30.0
    grace_s: float = 30.0
    max_stall_s: float = 900.0
    max_pause_s: float = DEFAULT_MAX_PAUSE_S
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True, slots=True)
class Outputs:
    journal: Path | None
    """None: no journal (`--no-journal`); repeats are still caught, on disk."""
    fresh: bool = False
    dead_letter: Path | None = None
    report: Path | None = None


@dataclass(frozen=True, slots=True)
class Watch:
    log_format: str | None = None
    """None: console on a terminal, JSON otherwise."""
    progress: bool | None = None
    """None: a live display on a terminal, `progress` events otherwise."""
    progress_interval_s: float = 5.0
    statsd: str | None = None


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """`--query` and its range: the rows are the sessions a RUM search finds."""

    query: str
    from_text: str = "now-15m"
    to_text: str = "now"
    first_from: str | None = None
    """For `--from last` when the journal holds no completed search of this query."""
    any_session: bool = False


@dataclass(frozen=True, slots=True)
class RunConfig:
    inputs: tuple[str, ...]
    reader: ReaderOptions
    target: Target
    outputs: Outputs
    pace: Pace = field(default_factory=Pace)
    watch: Watch = field(default_factory=Watch)
    shard: Shard | None = None
    dry_run: bool = False
    query: QueryOptions | None = None
    """Set: the rows come from this search, not from `inputs`."""
    recorded_options: Mapping[str, object] | None = None
    """The options as given, for the journal's record of the run (never the keys)."""
    job: Job = field(default_factory=AddJob)
    """What the run does to each row: add it (`run`), remove, undo or verify it."""
