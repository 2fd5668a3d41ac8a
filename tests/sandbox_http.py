"""What the sandbox's own tests share: the keys, the paths, a fake clock and one way to
call the sandbox and read its answer."""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from worker.sandbox.cli import add_arguments

API = "/api/v2/rum/replay/playlists"
KEYS = {"DD-API-KEY": "api-key-value", "DD-APPLICATION-KEY": "app-key-value"}
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Period",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Name",
)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def call(
    http: aiohttp.ClientSession,
    base_url: str,
    method: str,
    path: str,
    *,
    json: object = None,
    params: dict[str, str | int] | None = None,
    headers: dict[str, str] = KEYS,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """(status, the JSON body or None when there is none, headers); `path` is sent as
    given, already percent-encoded."""
    url = URL(f"{base_url}{path}", encoded=True)
    async with http.request(method, url, json=json, params=params, headers=headers) as response:
        raw = await response.read()
        body = await response.json(content_type=None) if raw else None
        return response.status, body, response.headers


def assert_ratelimit_headers(headers: Any, present: bool = True) -> None:
    assert [name in headers for name in RATE_LIMIT_HEADERS] == [present] * 5


def parse(*argv: str) -> argparse.Namespace:
    """The sandbox's options, as its command line parses them."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))
