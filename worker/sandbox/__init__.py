"""A local, Datadog-compatible API for rehearsals, demos, tests and benchmarks.

It answers the RUM replay playlists API (the playlists and their sessions) with
Datadog's status codes, bodies, auth and rate-limit headers, and can inject the failures
a real run meets (5xx, dropped connections, hangs, bare 429s, revoked keys, capped pages
and batches) and what a hostile server does (redirects, echoed keys, huge and gzip-bomb
bodies), so a client can be proven against all of them on loopback without sending
anything to Datadog. See docs/sandbox.md.

Importing this package (or `worker.sandbox.config`) is cheap: the server side of aiohttp
is imported only with `Sandbox`.
"""

from typing import TYPE_CHECKING

from worker.sandbox.config import SandboxConfig
from worker.sandbox.faults import FaultConfig
from worker.sandbox.ratelimit import parse_rate_limit

if TYPE_CHECKING:
    from worker.sandbox.app import Sandbox

__all__ = ["FaultConfig", "Sandbox", "SandboxConfig", "parse_rate_limit"]


def __getattr__(name: str) -> object:
    """`Sandbox` (aiohttp's server side) is imported on first use: every command parses
    the sandbox's options, and only a sandbox should pay for the server."""
    if name == "Sandbox":
        from worker.sandbox.app import Sandbox

        return Sandbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
