"""A purpose-built aiohttp server on an ephemeral loopback port, for tests of how the
client meets a server that misbehaves (redirects, echoes, endless or compressed bodies).
The `serve` fixture (conftest.py) starts them and stops them after the test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Server:
    base_url: str
    seen: list[web.Request] = field(default_factory=list)
    sent: int = 0  # body bytes written, for the streaming handlers


SERVER = web.AppKey("server", Server)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Serve = Callable[[Handler], Awaitable[Server]]


async def start_server(handler: Handler, runners: list[web.AppRunner]) -> Server:
    """Serve every request with `handler`, recording each one; its runner joins `runners`."""
    server = Server("")

    async def record(request: web.Request) -> web.StreamResponse:
        server.seen.append(request)
        return await handler(request)

    app = web.Application()
    app[SERVER] = server
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    runners.append(runner)
    server.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return server
