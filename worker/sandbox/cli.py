"""The sandbox's command line: shared by `rum-playlist-ingest sandbox` and
`python -m worker.sandbox`, so both take the same options and print the same line."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys
import textwrap
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from worker.sandbox import search_config
from worker.sandbox.config import FAMILIES, SandboxConfig
from worker.sandbox.faults import REDIRECT_STATUSES, SHARE_SCOPES, FaultConfig, parse_latency_ms
from worker.sandbox.ratelimit import parse_rate_limit

T = TypeVar("T")

API_KEY_ENV = "SANDBOX_API_KEY"
APP_KEY_ENV = "SANDBOX_APP_KEY"

_SHARE_OPTIONS = {
    "error_before": ("--fault-5xx", "answer 5xx without adding the session"),
    "error_after": ("--fault-5xx-after", "add the session, then answer 5xx"),
    "drop_before": ("--fault-drop", "close the connection without adding or answering"),
    "drop_after": ("--fault-drop-after", "add the session, then close without answering"),
    "hang": ("--fault-hang", "never answer (until the sandbox stops)"),
    "non_json": ("--fault-non-json", "add the session, then answer 2xx with an HTML body"),
    "bare_429": ("--fault-bare-429", "answer 429 with no rate-limit headers, like a proxy"),
}
"""FaultConfig share field -> (option, what it does to that share of PUTs)."""


_FAMILY_HELP = {
    "rate_limit": "the playlist-session routes (add, list, remove)",
    "playlists_rate_limit": "the playlists routes (create, list, get, update, delete)",
    "search_rate_limit": "the RUM events search",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    keys = textwrap.fill(
        f"Keys: any non-empty DD-API-KEY/DD-APPLICATION-KEY pair is accepted, unless "
        f"{API_KEY_ENV} and {APP_KEY_ENV} are set: then the request's keys must match them.",
        88,
    )
    # The examples the caller gives (`rum-playlist-ingest sandbox --help`) end the help.
    parser.epilog = f"{keys}\n\n{parser.epilog}" if parser.epilog else keys
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=_port, default=0, help="port to listen on (default: 0, any free port)"
    )
    for family in FAMILIES:
        limit, period = family.default
        parser.add_argument(
            family.option,
            dest=family.config_field,
            metavar="LIMIT/PERIOD",
            default=f"{limit}/{period:g}",
            help=f"LIMIT requests per PERIOD-second window for "
            f"{_FAMILY_HELP[family.config_field]}, shared by every client, "
            f"X-RateLimit-Name {family.header_name} (default: %(default)s)",
        )
    parser.add_argument(
        "--playlists",
        metavar="ID,ID,...",
        help="the playlists that exist at the start; others answer 404 until created "
        "(default: every playlist exists)",
    )
    parser.add_argument(
        "--minimal",
        action="store_true",
        help="for benchmarks: keep no request log, do as little per request as possible",
    )
    faults = parser.add_argument_group(
        "faults",
        "SHARE is a fraction of PUT requests (of every API request with --fault-scope all), "
        "0 to 1; the shares add up to at most 1",
    )
    for field, (option, help_text) in _SHARE_OPTIONS.items():
        faults.add_argument(
            option, dest=f"fault_{field}", type=float, default=0.0, metavar="SHARE", help=help_text
        )
    faults.add_argument(
        "--fault-latency-ms",
        metavar="MS|MIN-MAX",
        default="0",
        help="delay every answer by MS, or by a uniform draw from MIN-MAX milliseconds",
    )
    faults.add_argument(
        "--fault-retry-after",
        type=int,
        metavar="SECONDS",
        help="bare 429s (--fault-bare-429) carry Retry-After: SECONDS, as a proxy may send",
    )
    faults.add_argument(
        "--no-ratelimit-headers",
        action="store_true",
        help="proxy mode: no response carries X-RateLimit-* headers",
    )
    faults.add_argument(
        "--fault-reset-skew",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="report X-RateLimit-Reset as any whole second within SECONDS of the true boundary",
    )
    faults.add_argument(
        "--revoke-keys-after",
        type=int,
        metavar="N",
        help="serve N API requests, then answer 403 Forbidden to every later one",
    )
    faults.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default: 0)")
    faults.add_argument(
        "--fault-scope",
        choices=SHARE_SCOPES,
        default="put",
        help="the SHAREs are of PUTs (default), or of every API request (all)",
    )
    faults.add_argument(
        "--max-bulk",
        type=int,
        metavar="N",
        help='refuse a bulk removal of more than N sessions: 400 "at most N sessions per request"',
    )
    faults.add_argument(
        "--page-size-cap",
        type=int,
        metavar="N",
        help="give at most N items per page of a listing, whatever page[size] asks",
    )
    hostile = parser.add_argument_group(
        "hostile server", "for security tests: what a misconfigured proxy or a hostile server does"
    )
    hostile.add_argument(
        "--fault-redirect",
        metavar="LOCATION",
        help="answer every API request with a redirect to LOCATION",
    )
    hostile.add_argument(
        "--fault-redirect-status",
        type=int,
        choices=REDIRECT_STATUSES,
        default=307,
        help="the status of those redirects (default: %(default)s)",
    )
    hostile.add_argument(
        "--fault-echo-keys",
        action="store_true",
        help="every error body echoes the request's keys, in several encodings",
    )
    hostile.add_argument(
        "--fault-huge-body",
        type=int,
        default=0,
        metavar="BYTES",
        help="pad every answer body to BYTES (leading whitespace; still valid JSON)",
    )
    hostile.add_argument(
        "--fault-gzip-bomb",
        type=int,
        default=0,
        metavar="BYTES",
        help="send every answer body gzip-encoded, decompressing to BYTES",
    )
    search_config.add_arguments(parser)


def _port(text: str) -> int:
    """0 (any free port) to 65535: a larger number would wrap around, not fail."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def config_from_args(
    args: argparse.Namespace, env: Mapping[str, str] = os.environ
) -> SandboxConfig:
    """Raises ValueError naming the bad option. Keys come from the environment, never
    from options, so they stay out of the process list."""
    faults = FaultConfig(
        **{field: getattr(args, f"fault_{field}") for field in _SHARE_OPTIONS},
        retry_after_s=args.fault_retry_after,
        latency_ms=_option("--fault-latency-ms", parse_latency_ms, args.fault_latency_ms),
        ratelimit_headers=not args.no_ratelimit_headers,
        reset_skew_s=args.fault_reset_skew,
        revoke_keys_after=args.revoke_keys_after,
        seed=args.seed,
        shares_apply_to=args.fault_scope,
        max_bulk=args.max_bulk,
        page_size_cap=args.page_size_cap,
        redirect_to=args.fault_redirect,
        redirect_status=args.fault_redirect_status,
        echo_keys=args.fault_echo_keys,
        huge_body_bytes=args.fault_huge_body,
        gzip_bomb_bytes=args.fault_gzip_bomb,
    )
    limits = {
        family: _option(family.option, parse_rate_limit, getattr(args, family.config_field))
        for family in FAMILIES
    }
    return SandboxConfig(
        playlists=None
        if args.playlists is None
        else _option("--playlists", _parse_playlists, args.playlists),
        api_key=env.get(API_KEY_ENV) or None,
        app_key=env.get(APP_KEY_ENV) or None,
        faults=faults,
        minimal=args.minimal,
        search=search_config.config_from_args(args),
    ).with_limits(limits)


async def serve(config: SandboxConfig, host: str, port: int) -> int:
    """Serves until SIGINT or SIGTERM; the base URL is the one line on stdout, so a
    script can read it (`url=$(... | head -1)`)."""
    from worker.sandbox.app import Sandbox

    sandbox = Sandbox(config)
    try:
        base_url = await sandbox.start(host, port)
    except OSError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        print(base_url, flush=True)
        print(describe(config, host), file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        await sandbox.stop()
    return 0


def main(
    argv: list[str] | None = None,
    *,
    prog: str = "python -m worker.sandbox",
    epilog: str | None = None,
) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve a local Datadog-compatible RUM replay playlist API; "
        "prints its base URL, serves until SIGINT or SIGTERM.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    return _run(serve(config, args.host, args.port))


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    """With uvloop (the `fast` extra) when installed: benchmarks need the headroom."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    result: int = uvloop.run(coroutine)
    return result


def _option(option: str, parse: Callable[[str], T], text: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def _parse_playlists(text: str) -> frozenset[int]:
    try:
        ids = frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of playlist ids") from None
    if not ids:
        raise ValueError("name at least one playlist id, e.g. --playlists 1,2,3")
    return ids


def describe(config: SandboxConfig, host: str) -> str:
    """What the sandbox says on standard error as it starts: its limit, the keys it takes,
    and a warning when it listens beyond loopback."""
    limits = ", ".join(
        f"{family.header_name} {limit}/{period:g}s"
        for family in FAMILIES
        for limit, period in [config.limit_of(family)]
    )
    api = f"the API key in {API_KEY_ENV}" if config.api_key else "any API key"
    app = f"the application key in {APP_KEY_ENV}" if config.app_key else "any application key"
    keys = (
        f"{api} with {app}"
        if config.api_key or config.app_key
        else f"any non-empty key pair (set {API_KEY_ENV}/{APP_KEY_ENV} to require one)"
    )
    lines = [
        f"sandbox: rate limits {limits}; accepting {keys}; "
        "state at /_sandbox/state; stop with Ctrl-C or SIGTERM"
    ]
    if not _is_loopback(host):
        lines.append(
            f"sandbox: warning: {host} is reachable from other machines, and the "
            "/_sandbox/ control routes need no key"
        )
    return "\n".join(lines)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
