"""What every benchmark needs: generated rows, a sandbox in its own process, our CLI.

The sandbox runs as its own process (with `--minimal`) so that serving never competes
with the client under test for one event loop, and its `/_sandbox/state` is the one
yardstick every tool is measured by: what the server answered, and what it holds.
"""

from __future__ import annotations

import compileall
import contextlib
import csv
import functools
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
TS = 1_704_067_200_000
NEVER_BINDING_LIMIT = "1000000000/1"
"""A sandbox limit no client reaches: every answer carries the rate-limit headers, as
Datadog's do, and none is refused, so the client, not the limit, sets the pace."""


@dataclass(frozen=True, slots=True)
class BenchRow:
    playlist_id: int
    session_id: str
    ts: int


def make_rows(
    count: int, *, start: int = 0, playlists: Sequence[int] = (1001, 1002)
) -> list[BenchRow]:
    """`count` distinct rows with UUID session ids; `start` keeps batches disjoint."""
    return [
        BenchRow(playlists[i % len(playlists)], str(uuid.UUID(int=start + i + 1)), TS + i)
        for i in range(start, start + count)
    ]


def write_csv(path: Path, rows: Sequence[BenchRow]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["playlist_id", "session_id", "ts"])
        writer.writerows((row.playlist_id, row.session_id, row.ts) for row in rows)
    return path


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    """The server's CPU and the clients' CPU, apart, where the machine has two or more:
    sharing a core, each would steal the other's time, and a sampler's figures would be
    misattributed (time the server ran charged to the client's writes). None: unpinned."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, {allowed[1]}


SERVER_CPUS, CLIENT_CPUS = _cpus()


def pin_self(cpus: set[int] | None) -> None:
    """Pin this process (a driver started by another bench) to `cpus`."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def pin(process: subprocess.Popen[Any], cpus: set[int] | None) -> subprocess.Popen[Any]:
    """Pin a child just started (before it starts threads of its own) to `cpus`."""
    if cpus is not None:
        os.sched_setaffinity(process.pid, cpus)
    return process


class SandboxProcess:
    """`python -m worker.sandbox --minimal OPTIONS` with keys of its own, for a `with` block."""

    def __init__(self, *options: str) -> None:
        self.api_key, self.app_key = secrets.token_hex(16), secrets.token_hex(16)
        env = {**os.environ, "SANDBOX_API_KEY": self.api_key, "SANDBOX_APP_KEY": self.app_key}
        self._process = pin(
            subprocess.Popen(
                [sys.executable, "-m", "worker.sandbox", "--minimal", *options],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            ),
            SERVER_CPUS,
        )
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url:
            self.close()
            raise RuntimeError(f"the sandbox exited with {self._process.returncode}")

    @property
    def keys(self) -> dict[str, str]:
        """The environment our CLI reads its keys from."""
        return {"DD_API_KEY": self.api_key, "DD_APP_KEY": self.app_key}

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base_url}/_sandbox/state") as response:
            state: dict[str, Any] = json.load(response)
        return state

    def landed(self) -> int:
        """Sessions the sandbox holds, over every playlist."""
        return sum(len(records) for records in self.state()["sessions"].values())

    def responses(self, status: int) -> int:
        count: int = self.state()["stats"]["responses"].get(str(status), 0)
        return count

    def reset(self) -> None:
        """An empty store and zeroed counters, so the next client starts from scratch."""
        request = urllib.request.Request(f"{self.base_url}/_sandbox/reset", method="POST")
        with urllib.request.urlopen(request):
            pass

    def cpu_s(self) -> float:
        """CPU seconds the sandbox has used so far: sample before and after a run."""
        times = psutil.Process(self._process.pid).cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
        self._process.wait()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@functools.cache
def compiled_as_installed() -> None:
    """The tool's bytecode, compiled once, as `pip install` compiles a package's.

    An editable checkout run with PYTHONDONTWRITEBYTECODE set (as on the machine these
    figures come from) would otherwise compile every module of the tool from source at
    every start, about 0.07 s of CPU a run that an installed tool never pays, and that
    the bare loop does not pay either: its aiohttp is compiled in site-packages."""
    compileall.compile_dir(ROOT / "worker", quiet=1)


def start_cli(*args: str, keys: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    """`python -m worker ARGS` with JSON logs to `stderr` and no live display, its
    bytecode compiled as an installed tool's is."""
    compiled_as_installed()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "SANDBOX_"))}
    with stderr.open("wb") as log:
        return pin(
            subprocess.Popen(
                [sys.executable, "-m", "worker", *args, "--log-format", "json", "--no-progress"],
                cwd=ROOT,
                env={**env, **keys},
                stdout=subprocess.DEVNULL,
                stderr=log,
            ),
            CLIENT_CPUS,
        )


def write_generated_csv(path: Path, count: int, playlists: Sequence[int] = (1001, 1002)) -> Path:
    """`count` distinct rows written as they are made, so a million cost no memory here."""
    with path.open("w", encoding="utf-8") as out:
        out.write("playlist_id,session_id,ts\n")
        for i in range(count):
            out.write(f"{playlists[i % len(playlists)]},{uuid.UUID(int=i + 1)},{TS + i}\n")
    return path


def start_python(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python SCRIPT ARGS` with `env` (and no Datadog settings of ours); stdout piped."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "SANDBOX_"))}
    return pin(
        subprocess.Popen(
            [sys.executable, script, *args], cwd=ROOT, env={**clean, **env}, stdout=subprocess.PIPE
        ),
        CLIENT_CPUS,
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """What a finished child process cost, by the kernel's account of it (wait4)."""

    exit_code: int
    wall_s: float
    cpu_s: float
    """User + system seconds of the process and all its threads, start-up included."""
    max_rss_mb: float
    """Peak resident set size, in MiB."""


def wait_measured(process: subprocess.Popen[Any]) -> Usage:
    """Wait for `process` and read its own resource usage: that child's alone, not the
    bench's nor any other child's (which `RUSAGE_CHILDREN` would sum)."""
    started = psutil.Process(process.pid).create_time()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Usage(process.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


@contextlib.contextmanager
def hiding_modules(names: Sequence[str]) -> Iterator[None]:
    """Children started inside see `names` as not installed (`import` raises ImportError):
    measures what an optional speed-up such as uvloop or orjson pays for."""
    if not names:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="bench-hide-") as tmp:
        hide = "".join(f"sys.modules[{name!r}] = None\n" for name in names)
        Path(tmp, "sitecustomize.py").write_text(f"import sys\n{hide}")
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (tmp, before)))
        try:
            yield
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before


def print_results(text: str, results: Sequence[Any], *, as_json: bool) -> None:
    """The table for a person; with `as_json`, it goes to stderr and the results (frozen
    dataclasses) as JSON to stdout, for a script."""
    if as_json:
        print(text, file=sys.stderr)
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(text)


PEAK_TARGET_MB = 80.0
"""Peak RSS at the largest count, at most."""
GROWTH_TARGET = 1.10
"""Peak RSS at the largest count over that at the smallest, at most: flat memory."""


def flat_memory(
    what: str, smallest: tuple[int, float], largest: tuple[int, float]
) -> tuple[list[str], bool]:
    """The verdict on peak RSS, given (count, MB) at the smallest and the largest count of
    `what` (rows, sessions): its lines, and whether both targets were met."""
    (low, low_mb), (high, high_mb) = smallest, largest
    growth = high_mb / low_mb
    peak_ok, growth_ok = high_mb <= PEAK_TARGET_MB, growth <= GROWTH_TARGET
    lines = [
        f"peak RSS at {high:,} {what}: {high_mb:.1f} MB (target <= {PEAK_TARGET_MB:g} MB)",
        f"peak RSS, {high:,} / {low:,} {what}: {growth:.3f} (target <= {GROWTH_TARGET:.2f})",
    ]
    return lines, peak_ok and growth_ok
