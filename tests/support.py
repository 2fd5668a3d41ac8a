"""Helpers for end-to-end tests: generated inputs and the real command as a subprocess."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.sandbox import Sandbox

MakeSandbox = Callable[..., Awaitable[Sandbox]]
"""The `make_sandbox` fixture (conftest.py): `await make_sandbox(**SandboxConfig fields)`."""

ROOT = Path(__file__).resolve().parent.parent
TS = 1_704_067_200_000
API_KEY = "test-api-key-0123456789abcdef"
APP_KEY = "test-app-key-fedcba9876543210"
KEYS = {"DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY}
COMMAND_TIMEOUT_S = 120.0
"""A safety net so a hung run fails the test instead of hanging the suite."""


def rows(
    n: int, playlists: Sequence[int] = (1001, 1002), start: int = 0
) -> list[dict[str, object]]:
    """`n` distinct rows with UUID session ids, spread over `playlists`."""
    return [
        {
            "playlist_id": playlists[i % len(playlists)],
            "session_id": str(uuid.UUID(int=start + i + 1)),
            "ts": TS + i,
        }
        for i in range(n)
    ]


def write_csv(path: Path, items: Iterable[Mapping[str, object]]) -> Path:
    items = list(items)
    fields = list(dict.fromkeys(k for item in items for k in item)) or [
        "playlist_id",
        "session_id",
        "ts",
    ]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(items)
    return path


def write_ndjson(path: Path, items: Iterable[Mapping[str, object]]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item) + "\n")
    return path


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str

    def events(self, name: str | None = None) -> list[dict[str, object]]:
        """The JSON log events on stderr (optionally only those named `name`)."""
        found = []
        for line in self.stderr.splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    found.append(event)
        return found

    @property
    def summary(self) -> dict[str, object]:
        (summary,) = self.events("summary")
        return summary


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any Datadog or sandbox settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "SANDBOX_"))}
    return {**env, **(extra or {})}


async def start_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
) -> asyncio.subprocess.Process:
    """`python -m worker ARGS` as cron or CI starts it: pipes, and in a session of its own
    with no controlling terminal, even when the suite runs from one."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        *args,
        cwd=ROOT,
        env=clean_env(env),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def finish(process: asyncio.subprocess.Process, stdin: bytes | None = None) -> Finished:
    out, err = await asyncio.wait_for(process.communicate(stdin), COMMAND_TIMEOUT_S)
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def run_cli(
    *args: str, env: Mapping[str, str] | None = None, stdin: bytes | None = None
) -> Finished:
    """Run `python -m worker ARGS` to the end; keys are those in `env` only."""
    return await finish(await start_cli(*args, env=env, stdin=stdin), stdin)


Key = tuple[int, str]
"""(playlist_id, session_id): what the sandbox holds a session by."""


async def into_a_pipe_read_once(*args: str, env: Mapping[str, str] | None = None) -> Finished:
    """`rum-playlist-ingest ARGS | head -1`: standard output goes to a pipe whose reader
    takes one line and leaves. `stdout` is that line; `stderr` and `code` as they ended."""
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker", *args,
            cwd=ROOT, env=clean_env(env), stdout=write_end, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(write_end)
        first = reader.readline()
    _, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    assert process.returncode is not None
    return Finished(process.returncode, first.decode(), err.decode())


def key_of(item: Mapping[str, object]) -> Key:
    return (int(str(item["playlist_id"])), str(item["session_id"]))


def keys_of(items: Iterable[Mapping[str, object]]) -> set[Key]:
    return {key_of(item) for item in items}


def stats(sandbox: Sandbox) -> dict[str, int]:
    """The sandbox's own counters (requests, puts, responses by status, ...)."""
    return sandbox.state()["stats"]  # type: ignore[return-value]


def held(sandbox: Sandbox) -> set[Key]:
    """Every session the sandbox holds, checked server-side."""
    store = sandbox.store
    return {(p, s) for p in store.playlist_ids() for s in store.sessions(p)}


async def keyed_sandbox(make_sandbox: Callable[..., Awaitable[Sandbox]], **config: Any) -> Sandbox:
    """A sandbox that accepts only this suite's keys (API_KEY, APP_KEY)."""
    return await make_sandbox(api_key=API_KEY, app_key=APP_KEY, **config)


def run_against(sandbox: Sandbox, journal: Path, *args: str, concurrency: int) -> list[str]:
    """`run ARGS` against `sandbox` with `journal`, at `concurrency`, logging JSON: the
    argument list of the resume and kill tests, which read the log lines."""
    return [
        "run",
        *args,
        "--base-url",
        sandbox.base_url,
        "--journal",
        str(journal),
        "--concurrency",
        str(concurrency),
        "--log-format",
        "json",
    ]


def assert_invariant(report: Mapping[str, object]) -> None:
    parts = ("invalid", "skipped", "created", "already_present", "failed", "not_attempted")
    assert report["rows_read"] == sum(int(report[p]) for p in parts), report  # type: ignore[call-overload]
