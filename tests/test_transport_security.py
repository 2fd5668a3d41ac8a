"""Where the keys may travel: the transport check, proxies, redacted URLs, and the real
command against servers that redirect or pose as a proxy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from loopback import Serve, Server
from support import KEYS, TS, rows, run_cli, write_csv

from worker import api
from worker.client import Client
from worker.config import ConfigError, Credentials, Route, Secret, check_transport, redact_url
from worker.rows import Row
from worker.sandbox import Sandbox

DD = "https://api.datadoghq.com"
REFUSED = None

ROW = Row(1001, "00000000-0000-0000-0000-000000000001", TS, "rum", "in.csv", 1)


@pytest.mark.parametrize(
    ("base_url", "environ", "allow", "proxy"),
    [
        # Plain http leaves the machine: refused, directly or through a proxy.
        ("http://10.0.0.1:8126", {}, False, REFUSED),
        ("http://api.example.com", {}, False, REFUSED),
        ("http://0.0.0.0:8126", {}, False, REFUSED),
        ("http://10.0.0.1", {"HTTP_PROXY": "http://proxy:3128"}, False, REFUSED),
        # ... unless the user says so: then the proxy, if any, is used.
        ("http://10.0.0.1", {}, True, ""),
        ("http://10.0.0.1", {"http_proxy": "http://proxy:3128"}, True, "http://proxy:3128"),
        # Loopback: always fine, always direct, whatever the environment says.
        ("http://127.0.0.1:8126", {}, False, ""),
        ("http://127.0.0.5:8126", {"HTTP_PROXY": "http://proxy:3128"}, False, ""),
        ("http://localhost:8126", {"http_proxy": "http://proxy:3128"}, False, ""),
        ("http://[::1]:8126", {"HTTP_PROXY": "http://proxy:3128"}, False, ""),
        ("http://[::ffff:127.0.0.1]:8126", {}, False, ""),
        # https: fine, directly or through an http:// proxy, which only tunnels (CONNECT).
        (DD, {}, False, ""),
        (DD, {"HTTPS_PROXY": "http://proxy:3128"}, False, "http://proxy:3128"),
        (DD, {"https_proxy": "https://u:pw@proxy:3128"}, False, "https://u:pw@proxy:3128"),
        (DD, {"HTTP_PROXY": "http://proxy:3128"}, False, ""),  # for http targets only
        (DD, {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".datadoghq.com"}, False, ""),
        (DD, {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "*"}, False, ""),
        ("https://10.1.2.3", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, False, ""),
        (
            "https://[fd00::1]",
            {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "[fd00::1]:443"},
            False,
            "",
        ),
        (
            DD,
            {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "example.com"},
            False,
            "http://proxy:3128",
        ),
        # A proxy the client cannot speak to.
        (DD, {"HTTPS_PROXY": "socks5://proxy:1080"}, False, REFUSED),
        # Credentials in the base URL: the keys go in headers; refused, and not shown.
        ("https://user:hunter2@api.datadoghq.com", {}, False, REFUSED),
    ],
)
def test_the_transport_check(
    base_url: str, environ: dict[str, str], allow: bool, proxy: str | None
) -> None:
    if proxy is REFUSED:
        with pytest.raises(ConfigError) as refused:
            check_transport(base_url, environ, allow_insecure_http=allow)
        message = str(refused.value)
        assert "hunter2" not in message
        if base_url.startswith("http://"):
            assert "--allow-insecure-http" in message
        return
    route = check_transport(base_url, environ, allow_insecure_http=allow)
    assert route == Route(base_url, proxy or None)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:hunter2@proxy:3128", "http://user:***@proxy:3128"),
        ("https://user:p%40ss@proxy.example/path?q=1", "https://user:***@proxy.example/path?q=1"),
        ("http://:hunter2@proxy", "http://:***@proxy"),
        ("http://user@proxy:3128", "http://user@proxy:3128"),  # no password to hide
        ("http://proxy:3128", "http://proxy:3128"),
        ("http://user:hunter2@proxy:port", "http://user:***@proxy:port"),
        ("http://user:hunter2@[::1", "(an unreadable URL)"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_a_proxy_gets_its_credentials_and_its_echo_of_them_is_scrubbed(
    serve: Serve,
) -> None:
    """Allowed plain http through a proxy: the proxy's user and password (from its URL)
    go as Proxy-Authorization, and a 407 that echoes the password shows none of it."""

    async def proxy(request: web.Request) -> web.StreamResponse:
        return web.Response(status=407, text=f"denied: {request.headers['Proxy-Authorization']}")

    proxy_server = await serve(proxy)
    password = "pa55word-for-the-proxy"
    route = check_transport(
        "http://10.255.255.1",
        {"HTTP_PROXY": proxy_server.base_url.replace("://", f"://me:{password}@")},
        allow_insecure_http=True,
    )
    async with Client(
        route, Credentials(Secret("a" * 32), Secret("b" * 40)), concurrency=1, timeout_s=10
    ) as client:
        answer = await client.send(api.add_session(ROW))

    (seen,) = proxy_server.seen
    assert seen.headers["Proxy-Authorization"].startswith("Basic ")
    assert seen.headers["Host"] == "10.255.255.1"
    assert answer.status == 407
    assert answer.error is not None
    assert password not in answer.error
    assert "[redacted]" in answer.error


async def test_a_loopback_target_is_reached_directly_with_proxies_set(
    make_sandbox: Callable[..., Awaitable[Sandbox]], serve: Serve, tmp_path: Path
) -> None:
    sandbox = await make_sandbox()
    proxy = await serve(lambda _r: web.Response(status=502))
    env = {**KEYS, "HTTP_PROXY": proxy.base_url, "http_proxy": proxy.base_url}
    env |= {"HTTPS_PROXY": proxy.base_url, "ALL_PROXY": proxy.base_url}
    path = write_csv(tmp_path / "in.csv", rows(3))

    done = await run_cli("run", str(path), "--base-url", sandbox.base_url, "--no-journal", env=env)

    assert done.code == 0, done.stderr[-2000:]
    assert done.summary["created"] == 3
    assert proxy.seen == []


async def test_plain_http_off_the_machine_exits_2_before_sending(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", rows(1))

    done = await run_cli("run", str(path), "--base-url", "http://10.255.255.1", env=KEYS)

    assert done.code == 2
    assert "--allow-insecure-http" in done.stderr
    assert KEYS["DD_API_KEY"] not in done.stderr


async def test_the_first_redirect_aborts_the_run_and_nothing_follows_it(
    serve: Serve, tmp_path: Path
) -> None:
    elsewhere = await serve(lambda _r: web.json_response({"data": {}}, status=200))

    async def redirect(request: web.Request) -> web.StreamResponse:
        return web.Response(status=307, headers={"Location": f"{elsewhere.base_url}{request.path}"})

    server: Server = await serve(redirect)
    path = write_csv(tmp_path / "in.csv", rows(20))
    report = tmp_path / "report.json"

    done = await run_cli(
        "run",
        str(path),
        "--base-url",
        server.base_url,
        "--no-journal",
        "--report",
        str(report),
        env=KEYS,
    )

    assert done.code == 3, done.stderr[-2000:]
    counts = json.loads(report.read_text())
    assert counts["created"] == counts["already_present"] == 0
    assert counts["not_attempted"] == 20
    assert elsewhere.seen == []
    (aborted,) = done.events("aborted")
    assert elsewhere.base_url in str(aborted["cause"])
    assert {event["result"] for event in done.events("row")} <= {"not_attempted"}
    assert all(e.get("status") != 200 for e in done.events("row")), "no hop was counted done"
