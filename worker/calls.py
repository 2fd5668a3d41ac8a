"""Requests that are no row's, for commands that make a few calls (`playlists`, resolving
`--playlist-name`): one client, the pacer and the retries of a run, and an `Answer` back.
"""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import AsyncIterator

from worker.answers import Answer
from worker.api import Request
from worker.client import Client
from worker.config import Credentials, Route
from worker.deliver import Paced
from worker.events import Event
from worker.health import RetryPolicy
from worker.pacer import Pacer
from worker.paging import Send
from worker.stop import StopState

CALL_CONCURRENCY = 4
"""Connections for a few calls in a row: one is used; the rest cost nothing unopened."""


def _ignore(_event: Event) -> None:
    """These calls have no report: their requests are not a run's."""


@contextlib.asynccontextmanager
async def paced_calls(
    route: Route,
    credentials: Credentials,
    *,
    tls: ssl.SSLContext | bool = True,
    timeout_s: float = 30.0,
    policy: RetryPolicy | None = None,
) -> AsyncIterator[Send]:
    """A `send` that paces each request under its family's limit and retries a 429 or
    a retryable failure; it returns the final answer (never raises for the server's)."""
    stop = StopState()  # never stopped: a signal ends these commands at once
    pacer = Pacer(rate=None, on_pause=_ignore)
    retry = policy or RetryPolicy()
    rng = random.Random()
    async with Client(
        route, credentials, concurrency=CALL_CONCURRENCY, timeout_s=timeout_s, tls=tls
    ) as client:
        paced = Paced(client.send, pacer=pacer, stop=stop, sink=_ignore)

        async def send(request: Request) -> Answer:
            answer = await paced.call(request, retry, rng)
            assert answer is not None  # only a stop gives None, and nothing stops it
            return answer

        yield send
