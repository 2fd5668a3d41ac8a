"""Where a command's requests go: the configured API with the user's keys, or a sandbox
started on loopback for this command alone (`--sandbox`), with keys made for it."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from worker.config import Credentials, Route, Secret
from worker.settings import Target


@contextlib.asynccontextmanager
async def open_target(target: Target) -> AsyncIterator[tuple[Route, Credentials | None]]:
    """The route and keys to use. The sandbox is imported for that case only: it is
    aiohttp's server side, which a run against Datadog never needs."""
    if target.route is not None:
        yield target.route, target.credentials
        return
    from worker.sandbox.app import Sandbox
    from worker.sandbox.config import SandboxConfig

    api_key, app_key = secrets.token_hex(16), secrets.token_hex(16)
    config = SandboxConfig(api_key=api_key, app_key=app_key)
    if target.sandbox_rate_limit:
        config = SandboxConfig(
            api_key=api_key, app_key=app_key, rate_limit=target.sandbox_rate_limit
        )
    async with Sandbox(config) as sandbox:
        yield Route(sandbox.base_url), Credentials(Secret(api_key), Secret(app_key))
