"""The hostile-server faults other tests rely on: each must really put on the wire what
it claims (a redirect, echoed keys in every shape, a flood, a gzip bomb)."""

from __future__ import annotations

import gzip
import json

import aiohttp
import pytest
from sandbox_http import API, KEYS, assert_ratelimit_headers, call
from support import MakeSandbox
from yarl import URL

from worker.sandbox import FaultConfig

PUT_PATH = f"{API}/7/sessions/s1?ts=1"
SECRET_KEYS = {"DD-API-KEY": "AbCdEf0123456789abcdef0123456789", "DD-APPLICATION-KEY": "k/é y"}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize(("method", "path"), [("PUT", PUT_PATH), ("GET", API)])
async def test_a_redirect_names_the_tests_location_and_applies_nothing(
    make_sandbox: MakeSandbox, status: int, method: str, path: str
) -> None:
    sandbox = await make_sandbox(
        faults=FaultConfig(redirect_to="http://127.0.0.2:9/steal", redirect_status=status)
    )
    url = URL(f"{sandbox.base_url}{path}", encoded=True)

    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=KEYS, allow_redirects=False) as response,
    ):
        assert response.status == status
        assert response.headers["Location"] == "http://127.0.0.2:9/steal"
        assert_ratelimit_headers(response.headers, present=False)

    assert len(sandbox.store) == 0
    assert sandbox.stats.redirected == 1


async def test_error_bodies_echo_the_keys_in_every_shape(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(
        api_key="the-right-key", app_key="x", faults=FaultConfig(echo_keys=True)
    )
    api_key, app_key = SECRET_KEYS.values()

    url = URL(f"{sandbox.base_url}{PUT_PATH}", encoded=True)
    async with http.put(url, headers=SECRET_KEYS) as response:
        status, raw = response.status, (await response.read()).decode()

    assert status == 403
    for shape in (
        api_key,
        api_key.upper(),
        api_key.lower(),
        "%41%62%43%64",  # every byte percent-encoded
        "\\u0041\\u0062\\u0043",  # every character JSON-escaped, in the raw text
        "%C3%A9",  # the app key's é, as UTF-8 bytes
    ):
        assert shape in raw
    parsed = json.loads(raw)["errors"]
    assert parsed[0] == "Forbidden"
    assert f"echo json: {app_key}" in parsed, "a JSON parser turns the escapes back into keys"


async def test_echoing_is_only_for_errors(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(echo_keys=True))

    status, body, _ = await call(http, sandbox.base_url, "PUT", PUT_PATH, headers=SECRET_KEYS)

    assert status == 201
    assert SECRET_KEYS["DD-API-KEY"] not in json.dumps(body)


async def test_a_huge_body_is_still_the_answer_padded_and_the_put_applied(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    size = 3 * 2**20 + 7
    sandbox = await make_sandbox(faults=FaultConfig(huge_body_bytes=size))

    url = URL(f"{sandbox.base_url}{PUT_PATH}", encoded=True)
    async with http.put(url, headers=KEYS) as response:
        raw = await response.read()
        assert (response.status, response.content_length) == (201, size)

    assert len(raw) == size
    assert json.loads(raw)["data"]["id"] == "s1", "leading whitespace: still the documented JSON"
    assert sandbox.store.get(7, "s1") is not None


async def test_a_gzip_bomb_is_small_on_the_wire_and_huge_once_read(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    size = 20 * 2**20
    sandbox = await make_sandbox(faults=FaultConfig(gzip_bomb_bytes=size))

    url = URL(f"{sandbox.base_url}{PUT_PATH}", encoded=True)
    async with (
        aiohttp.ClientSession(auto_decompress=False) as raw_http,
        raw_http.put(url, headers=KEYS) as response,
    ):
        wire = await response.read()
        assert (response.status, response.headers["Content-Encoding"]) == (201, "gzip")
    async with http.put(url, headers=KEYS) as response:  # a client that inflates it whole
        inflated = await response.read()

    assert len(wire) < size / 500
    assert len(gzip.decompress(wire)) == len(inflated) == size
    assert json.loads(inflated)["data"]["id"] == "s1"
