"""Shared fixtures: real sandboxes on loopback, in-process or as their own process.

Tests talk HTTP to these, never to mocks, so what passes here passes against a server.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from loopback import Handler, Serve, Server, start_server

from worker.sandbox import Sandbox, SandboxConfig

ROOT = Path(__file__).resolve().parent.parent

FAST_RATE_LIMIT = (100_000, 1.0)
"""1-second windows, with a budget no test reaches unless it means to."""

_URL_LINE_TIMEOUT = 30.0
"""Seconds for a sandbox process to print its URL; a safety net, not a measurement."""


@pytest.fixture
async def make_sandbox() -> AsyncIterator[Callable[..., Awaitable[Sandbox]]]:
    """`await make_sandbox(**SandboxConfig fields)`: a started in-process sandbox, with
    FAST_RATE_LIMIT for every family unless told otherwise; all are stopped after the
    test."""
    started: list[Sandbox] = []

    async def make(**config: Any) -> Sandbox:
        fast = dict.fromkeys(
            ("rate_limit", "playlists_rate_limit", "search_rate_limit"), FAST_RATE_LIMIT
        )
        sandbox = Sandbox(SandboxConfig(**{**fast, **config}))
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        await sandbox.stop()


@pytest.fixture
async def sandbox(make_sandbox: Callable[..., Awaitable[Sandbox]]) -> Sandbox:
    """A started in-process sandbox: 1-second windows, a limit no test reaches by accident."""
    return await make_sandbox()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """`await serve(handler)`: an aiohttp server on an ephemeral loopback port that
    answers every request with `handler` and records each request it sees."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Server:
        return await start_server(handler, runners)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@dataclass(frozen=True)
class SandboxProcess:
    base_url: str
    process: asyncio.subprocess.Process


@pytest.fixture
async def sandbox_process() -> AsyncIterator[Callable[..., Awaitable[SandboxProcess]]]:
    """`await sandbox_process(*options, env={...})`: `python -m worker.sandbox` as its own
    process (so it can be signalled or killed), once it has printed its base URL.

    `env` is added to a copy of this process's environment without SANDBOX_* keys, so a
    developer's shell cannot change what the test sees. Processes still running after
    the test are terminated.
    """
    processes: list[asyncio.subprocess.Process] = []

    async def start(*options: str, env: Mapping[str, str] | None = None) -> SandboxProcess:
        clean = {name: value for name, value in os.environ.items() if "SANDBOX_" not in name}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.sandbox",
            *options,
            cwd=ROOT,
            env={**clean, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), _URL_LINE_TIMEOUT)
        if not line:
            status = await process.wait()
            raise RuntimeError(f"the sandbox process exited with {status} before printing its URL")
        return SandboxProcess(line.decode().strip(), process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.terminate()
        await process.wait()
