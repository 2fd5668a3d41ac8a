"""Throughput and CPU: this tool against a bare aiohttp loop and the official client.

    .venv/bin/python bench/throughput.py [--rows 20000] [--concurrency 32] [--rounds 3]
                                         [--without uvloop,orjson] [--json]

One sandbox process (`--minimal`, a limit of 10^9 requests per second: Datadog's
`X-RateLimit-*` headers are on every answer, as from Datadog, but never bind) serves
every client in turn, reset between runs. Each client runs in its own process on the
same generated rows at the same concurrency:

* rum-playlist-ingest: `python -m worker run ROWS.csv` with its journal (a fresh SQLite
  file per run) and JSON logs to a file, as users run it;
* bare aiohttp loop: a bounded `asyncio.Queue`, N workers, one `ClientSession`, the same
  URL, query and headers; no validation, no logging, no journal, no pacing;
* datadog-api-client async: `AsyncApiClient`, N workers over a bounded queue;
* datadog-api-client sync: `ApiClient` (its urllib3 pool sized to N) and N threads.

Every async client runs on the same event loop (uvloop when installed, as ours does).
Figures per client, the median of `--rounds` interleaved rounds:

* rows/s: rows / seconds from the first request to the last answer, as each client times
  itself (our CLI's report `elapsed_s`); interpreter start-up and imports are left out;
* CPU s/1k: the client process's user+system CPU seconds per 1,000 requests the sandbox
  answered, start-up left out the same way for every client: each round runs each client
  on the rows and on an input of no rows, and takes the second's CPU (interpreter
  start-up, imports, set-up and exit) from the first's. The start-up column shows that
  part, which a cron host pays once a run;
* server: the sandbox's CPU share over the run, to show it was not the bottleneck.

Every run must land every row (checked against the sandbox's own count). The exit status
is 1 when a target is missed: CPU per request at most 1.3 times the bare loop's, rows/s
at least 2.5 times the official async client's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common import (
    CLIENT_CPUS,
    NEVER_BINDING_LIMIT,
    SandboxProcess,
    hiding_modules,
    pin_self,
    start_cli,
    start_python,
    wait_measured,
    write_generated_csv,
)

OURS = "rum-playlist-ingest"
BARE = "bare aiohttp loop"
OFFICIAL_ASYNC = "datadog-api-client async"
OFFICIAL_SYNC = "datadog-api-client sync"
CLIENTS = (OURS, BARE, OFFICIAL_ASYNC, OFFICIAL_SYNC)
DRIVERS = {BARE: "bare", OFFICIAL_ASYNC: "official-async", OFFICIAL_SYNC: "official-sync"}
CPU_TARGET = 1.3
"""Our CPU per request, at most this times the bare loop's."""
SPEED_TARGET = 2.5
"""Our rows/s, at least this times the official async client's."""
PATH = "/api/v2/rum/replay/playlists/{playlist_id}/sessions/{session_id}"
OFFICIAL_MODULES = (
    "datadog_api_client",
    "datadog_api_client.exceptions",
    "datadog_api_client.v2.api.rum_replay_playlists_api",
)


@dataclass(frozen=True, slots=True)
class Result:
    client: str
    rows: int
    requests: int
    elapsed_s: float
    process_s: float
    cpu_s: float
    """The process's CPU seconds less those of the same client's run over no rows."""
    server_cpu_s: float
    max_rss_mb: float
    startup_cpu_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / self.requests * 1000

    @property
    def server_busy(self) -> float:
        return self.server_cpu_s / self.elapsed_s


# --- the clients under test, each run as `throughput.py --driver NAME` -------------------


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """The generated file's rows as strings: no validation, as a bare loop would do."""
    with path.open(newline="", encoding="utf-8") as source:
        rows = csv.reader(source)
        next(rows)
        yield from rows


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    """The loop our CLI uses (uvloop when installed), so loops are not what differs."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def _feed(source: Path, concurrency: int, work: Callable[[list[str]], Any]) -> None:
    """N workers over a bounded queue, like ours: the file is read as the workers go."""
    queue: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=max(2 * concurrency, 256))

    async def worker() -> None:
        while (row := await queue.get()) is not None:
            await work(row)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    for row in _csv_rows(source):
        await queue.put(row)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)


async def _bare(base_url: str, source: Path, concurrency: int, out: Counter[str]) -> None:
    import aiohttp
    from yarl import URL

    headers = {
        "DD-API-KEY": os.environ["DD_API_KEY"],
        "DD-APPLICATION-KEY": os.environ["DD_APP_KEY"],
        "Accept": "application/json",
    }
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def put(row: list[str]) -> None:
            playlist_id, session_id, ts = row
            path = PATH.format(playlist_id=playlist_id, session_id=quote(session_id, safe=""))
            url = URL(f"{base_url}{path}?ts={ts}&data_source=rum", encoded=True)
            async with session.put(url) as response:
                await response.read()
                out[str(response.status)] += 1

        await _feed(source, concurrency, put)


def _official_configuration(base_url: str) -> Any:
    from datadog_api_client import Configuration

    configuration = Configuration(host=base_url, enable_retry=True)
    configuration.api_key["apiKeyAuth"] = os.environ["DD_API_KEY"]
    configuration.api_key["appKeyAuth"] = os.environ["DD_APP_KEY"]
    return configuration


def _official_call(api: Any, row: list[str]) -> Any:
    playlist_id, session_id, ts = row
    return api.add_rum_replay_session_to_playlist(
        ts=int(ts), playlist_id=int(playlist_id), session_id=session_id, data_source="rum"
    )


async def _official_async(base_url: str, source: Path, concurrency: int, out: Counter[str]) -> None:
    from datadog_api_client import AsyncApiClient
    from datadog_api_client.exceptions import ApiException
    from datadog_api_client.v2.api.rum_replay_playlists_api import RumReplayPlaylistsApi

    async with AsyncApiClient(_official_configuration(base_url)) as client:
        api = RumReplayPlaylistsApi(client)

        async def put(row: list[str]) -> None:
            try:
                await _official_call(api, row)
                out["ok"] += 1
            except ApiException as error:
                out[str(error.status)] += 1

        await _feed(source, concurrency, put)


def _official_sync(base_url: str, source: Path, concurrency: int, out: Counter[str]) -> None:
    from datadog_api_client import ApiClient
    from datadog_api_client.exceptions import ApiException
    from datadog_api_client.v2.api.rum_replay_playlists_api import RumReplayPlaylistsApi

    with ApiClient(_official_configuration(base_url)) as client:
        # Its default pool keeps 4 connections; N threads need N, as a user would set.
        client.rest_client.pool_manager.connection_pool_kw["maxsize"] = concurrency
        api = RumReplayPlaylistsApi(client)

        def put(row: list[str]) -> str:
            try:
                _official_call(api, row)
            except ApiException as error:
                return str(error.status)
            return "ok"

        with ThreadPool(concurrency) as pool:
            out.update(pool.imap_unordered(put, _csv_rows(source), chunksize=16))


PRELOAD = {
    "bare": ("aiohttp", "yarl"),
    "official-async": ("aiosonic", *OFFICIAL_MODULES),
    "official-sync": OFFICIAL_MODULES,
}
"""What each driver imports, loaded before its clock starts: imports are start-up."""


def drive(name: str, base_url: str, source: Path, concurrency: int) -> dict[str, object]:
    """Run one client over the file; what it saw, and how long sending took (wall and
    CPU of every thread, from the first request to the last answer)."""
    for module in (*PRELOAD[name], "uvloop"):
        with contextlib.suppress(ImportError):  # not installed, or hidden by --without
            importlib.import_module(module)
    out: Counter[str] = Counter()
    cpu_started, started = time.process_time(), time.perf_counter()
    if name == "bare":
        _event_loop_run(_bare(base_url, source, concurrency, out))
    elif name == "official-async":
        _event_loop_run(_official_async(base_url, source, concurrency, out))
    else:
        _official_sync(base_url, source, concurrency, out)
    return {
        "elapsed_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
        "answers": dict(out),
    }


# --- the harness ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """What every client is run on: the same server, rows and concurrency."""

    sandbox: SandboxProcess
    source: Path
    rows: int
    concurrency: int
    work: Path
    empty: Path
    """An input of no rows: what a client costs before and after its first request."""


def run_client(client: str, setting: Setting) -> Result:
    """One run of one client over the rows, less its start-up (a run over no rows)."""
    startup = _run_once(client, setting, setting.empty, 0)
    full = _run_once(client, setting, setting.source, setting.rows)
    return Result(
        **{**asdict(full), "cpu_s": full.cpu_s - startup.cpu_s, "startup_cpu_s": startup.cpu_s}
    )


def _run_once(client: str, setting: Setting, source: Path, rows: int) -> Result:
    """One run of one client against a freshly reset sandbox, checked and measured."""
    sandbox, work = setting.sandbox, setting.work
    sandbox.reset()
    server_before = sandbox.cpu_s()
    if client == OURS:
        journal, report, log = (work / f"ours.{suffix}" for suffix in ("sqlite3", "json", "log"))
        for stale in work.glob("ours.sqlite3*"):
            stale.unlink()
        process = start_cli(
            "run", str(source), "--base-url", sandbox.base_url,
            "--concurrency", str(setting.concurrency), "--journal", str(journal),
            "--report", str(report), keys=sandbox.keys, stderr=log,
        )  # fmt: skip
        usage = wait_measured(process)
        if usage.exit_code != 0:
            raise RuntimeError(f"our CLI exited with {usage.exit_code}; see {log}")
        elapsed = float(json.loads(report.read_text())["elapsed_s"])
    else:
        process = start_python(
            __file__, "--driver", DRIVERS[client], "--base-url", sandbox.base_url,
            "--input", str(source), "--concurrency", str(setting.concurrency),
            env=sandbox.keys,
        )  # fmt: skip
        usage = wait_measured(process)
        assert process.stdout is not None
        driven = json.loads(process.stdout.read())
        if usage.exit_code != 0:
            raise RuntimeError(f"{client} exited with {usage.exit_code}")
        elapsed = float(driven["elapsed_s"])
    server_cpu = sandbox.cpu_s() - server_before
    stats = sandbox.state()["stats"]
    created = stats["responses"].get("201", 0)
    if created != rows:
        raise RuntimeError(f"{client}: the sandbox added {created} of {rows} rows: {stats}")
    return Result(
        client=client,
        rows=rows,
        requests=stats["requests"],
        elapsed_s=elapsed,
        process_s=usage.wall_s,
        cpu_s=usage.cpu_s,
        server_cpu_s=server_cpu,
        max_rss_mb=usage.max_rss_mb,
        startup_cpu_s=0.0,
    )


def median_result(runs: list[Result]) -> Result:
    """Each figure's median over the rounds (rows and requests are the same in each)."""
    first = runs[0]

    def mid(pick: Callable[[Result], float]) -> float:
        return statistics.median(pick(r) for r in runs)

    return Result(
        first.client,
        first.rows,
        first.requests,
        mid(lambda r: r.elapsed_s),
        mid(lambda r: r.process_s),
        mid(lambda r: r.cpu_s),
        mid(lambda r: r.server_cpu_s),
        mid(lambda r: r.max_rss_mb),
        mid(lambda r: r.startup_cpu_s),
    )


def table(results: list[Result]) -> str:
    header = ("client", "rows/s", "CPU s/1k req", "CPU s", "start-up CPU s", "send s",
              "process s", "server busy", "max RSS MB")  # fmt: skip
    lines = [
        (
            r.client,
            f"{r.rows_per_s:,.0f}",
            f"{r.cpu_per_1k:.3f}",
            f"{r.cpu_s:.2f}",
            f"{r.startup_cpu_s:.2f}",
            f"{r.elapsed_s:.2f}",
            f"{r.process_s:.2f}",
            f"{r.server_busy:.0%}",
            f"{r.max_rss_mb:.0f}",
        )
        for r in results
    ]
    cells = [header, *lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = []
    for n, row in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _versions(without: list[str]) -> str:
    parts = [f"Python {sys.version.split()[0]}"]
    for name in ("aiohttp", "uvloop", "orjson", "datadog-api-client", "aiosonic"):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "not installed"
        parts.append(f"{name} {'hidden' if name in without else version}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="median of this many (default 3)")
    parser.add_argument(
        "--without",
        default="",
        metavar="MODULES",
        help="run every client as if these were not installed, e.g. uvloop,orjson",
    )
    parser.add_argument("--only", help="comma-separated clients: ours,bare,async,sync")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    parser.add_argument("--driver", choices=sorted(DRIVERS.values()), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.driver:
        pin_self(CLIENT_CPUS)
        print(json.dumps(drive(args.driver, args.base_url, args.input, args.concurrency)))
        return 0

    without = [m for m in args.without.split(",") if m]
    short = {"ours": OURS, "bare": BARE, "async": OFFICIAL_ASYNC, "sync": OFFICIAL_SYNC}
    clients = [short[c] for c in args.only.split(",")] if args.only else list(CLIENTS)
    runs: dict[str, list[Result]] = {client: [] for client in clients}
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp,
        SandboxProcess("--rate-limit", NEVER_BINDING_LIMIT) as sandbox,
        hiding_modules(without),  # from the clients only: the server stays the same
    ):
        work = Path(tmp)
        source = write_generated_csv(work / "rows.csv", args.rows)
        empty = write_generated_csv(work / "none.csv", 0)
        setting = Setting(sandbox, source, args.rows, args.concurrency, work, empty)
        for round_ in range(1, args.rounds + 1):
            for client in clients:
                print(f"round {round_}/{args.rounds}: {client} ...", file=sys.stderr, flush=True)
                runs[client].append(run_client(client, setting))
    results = [median_result(runs[client]) for client in clients]
    heading = (
        f"{args.rows:,} rows, concurrency {args.concurrency}, median of {args.rounds} rounds; "
        f"sandbox --minimal --rate-limit {NEVER_BINDING_LIMIT} in its own process; "
        f"{os.cpu_count()} CPUs, load average {load_before:.2f} before and "
        f"{os.getloadavg()[0]:.2f} after; {_versions(without)}"
    )
    text, verdicts, failed = table(results), [], False
    by_name = {r.client: r for r in results}
    if OURS in by_name and BARE in by_name:
        ratio = by_name[OURS].cpu_per_1k / by_name[BARE].cpu_per_1k
        failed |= ratio > CPU_TARGET
        verdicts.append(f"CPU per request, ours / bare loop: {ratio:.2f} (target <= {CPU_TARGET})")
    if OURS in by_name and OFFICIAL_ASYNC in by_name:
        ratio = by_name[OURS].rows_per_s / by_name[OFFICIAL_ASYNC].rows_per_s
        failed |= ratio < SPEED_TARGET
        verdicts.append(f"rows/s, ours / official async: {ratio:.2f} (target >= {SPEED_TARGET})")
    report = "\n".join([heading, "", text, "", *verdicts])
    if args.json:
        print(report, file=sys.stderr)
        print(json.dumps([{**asdict(r), "rows_per_s": r.rows_per_s,
                           "cpu_per_1k": r.cpu_per_1k} for r in results], indent=2))  # fmt: skip
    else:
        print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
