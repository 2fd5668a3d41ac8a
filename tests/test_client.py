"""The client over real loopback HTTP, against servers built to misbehave: redirects to a
second server that records whatever reaches it, echoes of the keys, endless and
compressed bodies."""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import resource
import zlib
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from loopback import SERVER, Serve, Server
from support import TS
from yarl import URL

from worker import api, jsoncodec
from worker import client as client_module
from worker.answers import Answer, Meaning
from worker.client import Client, Deadlines, UrlMaker
from worker.config import Credentials, Route, Secret
from worker.rows import DATA_SOURCES, Row
from worker.sandbox import Sandbox

API_KEY = "0123456789abcdef0123456789abcdef"
APP_KEY = 'app/"Key"\\%&=-0123456789abcdef'
ROW = Row(1001, "00000000-0000-0000-0000-000000000001", TS, "rum", "in.csv", 1)
REQUESTS = {
    "add_session": api.add_session(ROW),
    "list_sessions": api.list_sessions(1001, 0, 100),
    "search_events": api.search_events(
        {"filter": {"query": "@type:session"}, "page": {"limit": 10}}
    ),
    "create_playlist": api.create_playlist("backfill", None),
}


CREDENTIALS = Credentials(Secret(API_KEY), Secret(APP_KEY))
JSON = "application/json"


async def send(server: Server, request: api.Request) -> Answer:
    async with Client(Route(server.base_url), CREDENTIALS, concurrency=2, timeout_s=10) as client:
        return await client.send(request)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("call", sorted(REQUESTS))
async def test_a_redirect_is_never_followed(serve: Serve, status: int, call: str) -> None:
    elsewhere = await serve(lambda _r: _answer(201, {"data": {}}))
    target = f"{elsewhere.base_url}/api/v2/steal?api_key={API_KEY}"

    async def redirect(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": target})

    server = await serve(redirect)
    answer = await send(server, REQUESTS[call])

    assert elsewhere.seen == [], "nothing, and no key, reached the other origin"
    assert len(server.seen) == 1
    assert (answer.meaning, answer.status) == (Meaning.FATAL, status)
    assert answer.error is not None
    assert elsewhere.base_url in answer.error  # its origin: scheme, host and port
    assert "/api/v2/steal" not in answer.error
    assert API_KEY not in answer.error


@pytest.mark.parametrize("call", sorted(REQUESTS))
async def test_a_request_carries_a_content_type_only_with_a_body(serve: Serve, call: str) -> None:
    """aiohttp would add `application/octet-stream` to a body-less PUT; the client's
    request class leaves it out and keeps the JSON body's own."""
    server = await serve(lambda _r: _answer(200, {"data": []}))
    request = REQUESTS[call]
    await send(server, request)

    (seen,) = server.seen
    expected = None if request.body is None else "application/json"
    assert seen.headers.get("Content-Type") == expected
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"].startswith("rum-playlist-ingest/")


@pytest.mark.parametrize("call", sorted(REQUESTS))
async def test_a_request_has_on_the_wire_the_headers_aiohttp_itself_would_send(
    serve: Serve, call: str
) -> None:
    """The client's request class builds the headers in fewer steps than aiohttp's own:
    the same headers, in the same order, as a plain session with the same headers sends
    (with aiohttp's own `skip_auto_headers` for the Content-Type of a body-less call)."""
    server = await serve(lambda _r: _answer(200, {"data": []}))
    request = REQUESTS[call]
    await send(server, request)
    async with Client(Route(server.base_url), CREDENTIALS, concurrency=1, timeout_s=10) as ours:
        session_headers = ours._headers
    url = server.base_url + request.path + (f"?{request.query}" if request.query else "")
    async with (
        aiohttp.ClientSession(headers=session_headers, auto_decompress=False) as plain,
        plain.request(
            request.method,
            URL(url, encoded=True),
            allow_redirects=False,
            skip_auto_headers=() if request.body is not None else ("Content-Type",),
            **(
                {}
                if request.body is None
                else {"data": jsoncodec.dumps(request.body), "headers": {"Content-Type": JSON}}
            ),
        ) as answer,
    ):
        await answer.read()

    ours_seen, plain_seen = server.seen
    assert ours_seen.raw_headers == plain_seen.raw_headers
    assert ours_seen.headers.get("Content-Type") == (None if request.body is None else JSON)


async def _answer(status: int, body: object) -> web.Response:
    return web.json_response(body, status=status)


def echoes() -> list[str]:
    """Each key as a server may echo it: as sent, upper, lower, JSON-escaped, percent-encoded."""
    found = []
    for key in (API_KEY, APP_KEY):
        escaped = json.dumps(key)[1:-1]
        found += [key, key.upper(), key.lower(), escaped, quote(key, safe=""), quote(key).lower()]
    return found


@pytest.mark.parametrize("status", [400, 401, 429, 502])
@pytest.mark.parametrize("as_json", [True, False], ids=["json-errors", "plain-text"])
async def test_keys_echoed_in_every_shape_never_reach_the_answer(
    serve: Serve, status: int, as_json: bool
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        assert request.headers["DD-API-KEY"] == API_KEY  # what the echo is made of
        lines = [f"{i}: {shape}" for i, shape in enumerate(echoes())]
        if as_json:  # a JSON string holding an escaped copy survives the parse escaped
            lines = [*lines, json.dumps({"headers": dict(request.headers)})]
            return web.json_response({"errors": lines}, status=status)
        return web.Response(status=status, text=" | ".join(lines))

    answer = await send(await serve(echo), api.add_session(ROW))

    assert answer.status == status
    assert answer.error is not None
    for shape in echoes():
        assert shape.lower() not in answer.error.lower(), shape
    assert answer.error.count("[redacted]") >= len(echoes())


async def test_a_small_answer_is_read_and_its_payload_parsed(serve: Serve) -> None:
    page = {"data": [{"id": ROW.session_id, "type": "rum_replay_session"}]}
    answer = await send(await serve(lambda _r: _answer(200, page)), REQUESTS["list_sessions"])

    assert (answer.meaning, answer.payload, answer.body_problem) == (Meaning.DONE, page, None)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip-members"])
async def test_a_compressed_answer_within_its_cap_is_read(serve: Serve, encoding: str) -> None:
    page = {"data": [{"id": str(i)} for i in range(1000)]}
    raw = json.dumps(page).encode()
    if encoding == "gzip-members":
        body, encoding = gzip.compress(raw[:100]) + gzip.compress(raw[100:]), "gzip"
    else:
        body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)

    async def compressed(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Encoding": encoding})

    answer = await send(await serve(compressed), REQUESTS["list_sessions"])

    assert (answer.meaning, answer.payload) == (Meaning.DONE, page)


async def test_an_answer_over_its_cap_is_a_lost_answer(serve: Serve) -> None:
    big = {"data": {"id": "x" * (api.SMALL_CAP + 1)}}
    answer = await send(await serve(lambda _r: _answer(201, big)), api.add_session(ROW))

    assert (answer.meaning, answer.status) == (Meaning.RETRYABLE, 201)
    assert answer.maybe_applied, "the PUT may have been applied: a later 200 is ours"
    assert answer.error == f"HTTP 201: answer larger than {api.SMALL_CAP} bytes, not read" + (
        " (see worker.api for the caps)"
    )


async def test_a_large_error_keeps_its_meaning(serve: Serve) -> None:
    async def html(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="<html>" + "not found " * 100_000)

    answer = await send(await serve(html), api.add_session(ROW))

    assert (answer.meaning, answer.status) == (Meaning.ROW_FAILED, 404)
    assert answer.error is not None
    assert answer.error.startswith("HTTP 404: <html>not found")


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


GIB = 1 << 30


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 1 MB on the wire, 1 GiB of zeros once inflated: 64 gzip members (a body
    may hold several, one after another) of 16 MiB each."""
    member = gzip.compress(bytes(16 << 20), compresslevel=9)
    return member * (GIB // (16 << 20))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_gzip_bomb_costs_only_its_cap(
    serve: Serve, gzip_bomb: bytes, chunked: bool
) -> None:
    assert len(gzip_bomb) < 1.1e6

    async def bomb(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Encoding": "gzip"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(gzip_bomb)
        await response.prepare(request)
        await response.write(gzip_bomb)
        return response

    before = max_rss_bytes()
    answer = await send(await serve(bomb), REQUESTS["search_events"])

    assert (answer.meaning, answer.maybe_applied) == (Meaning.RETRYABLE, True)
    assert answer.error is not None
    assert "answer larger than" in answer.error
    assert max_rss_bytes() - before < 64 << 20, "the bomb was not inflated"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
async def test_an_endless_body_is_not_read_past_its_cap(serve: Serve, declared: bool) -> None:
    chunk = b"x" * (1 << 16)

    async def endless(request: web.Request) -> web.StreamResponse:
        server = request.app[SERVER]
        response = web.StreamResponse(status=200)
        if declared:
            response.content_length = 1 << 40  # a terabyte, announced
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while server.sent < 1 << 30:
                await response.write(chunk)
                server.sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what it should do
        return response

    server = await serve(endless)
    answer = await send(server, api.add_session(ROW))

    assert (answer.meaning, answer.maybe_applied) == (Meaning.RETRYABLE, True)
    assert answer.error is not None
    assert f"answer larger than {api.SMALL_CAP} bytes" in answer.error
    assert server.sent < 64 << 20, "the client hung up instead of reading on"


async def test_no_answer_at_all_is_retryable_and_was_never_sent(serve: Serve) -> None:
    server = await serve(lambda _r: _answer(201, {}))
    closed = Server(server.base_url.rsplit(":", 1)[0] + ":9")  # nothing listens on port 9

    answer = await send(closed, api.add_session(ROW))

    assert (answer.meaning, answer.status, answer.maybe_applied) == (
        Meaning.RETRYABLE,
        None,
        False,
    )


def _timed_out(answer: Answer) -> bool:
    """A request that ran out of time: retried as an answer lost, which may have applied."""
    return (answer.meaning, answer.status, answer.maybe_applied) == (
        Meaning.RETRYABLE,
        None,
        True,
    ) and "timed out" in str(answer.error)


HANG_S = 1.0
"""How long a hanging handler keeps its request: past every deadline these tests set,
and short, since the test server's shutdown waits for its handlers."""


async def _hang(_request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(HANG_S)
    return web.Response(status=500)


@pytest.mark.parametrize(("timeout_s", "tick"), [(0.001, 0.01), (0.2, 0.05), (30, 1.0)])
def test_the_deadlines_tick_a_quarter_of_the_timeout_within_bounds(
    timeout_s: float, tick: float
) -> None:
    assert Deadlines(timeout_s).tick == pytest.approx(tick)


@pytest.mark.timeout(30)  # a guard: without a deadline this waits for the server
async def test_a_server_that_never_answers_times_out(serve: Serve) -> None:
    server = await serve(_hang)
    async with Client(Route(server.base_url), CREDENTIALS, concurrency=2, timeout_s=0.2) as client:
        answer = await client.send(api.add_session(ROW))

    assert _timed_out(answer), answer


@pytest.mark.timeout(30)
async def test_an_answer_trickled_in_is_cut_at_the_deadline(serve: Serve) -> None:
    """What a time bound on each read would never end: a byte every 20 ms of a body
    that would take 20 s to arrive."""
    length = 1000

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=201, headers={"Content-Length": str(length)})
        await response.prepare(request)
        for _ in range(length):
            await response.write(b" ")
            request.app[SERVER].sent += 1
            await asyncio.sleep(0.02)
        return response

    server = await serve(trickle)
    async with Client(Route(server.base_url), CREDENTIALS, concurrency=2, timeout_s=0.3) as client:
        answer = await client.send(api.add_session(ROW))

    assert _timed_out(answer), answer
    assert 0 < server.sent < length


async def test_a_body_that_comes_in_parts_is_read_whole(serve: Serve) -> None:
    """Its first part with the headers, the rest later: read to its Content-Length, as
    `ClientResponse.read()` would (the body is JSON only once whole)."""
    body = json.dumps({"data": {"type": "rum_replay_playlist", "id": "7", "pad": "x" * 3000}})

    async def in_parts(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Length": str(len(body))})
        await response.prepare(request)
        await response.write(body[:100].encode())
        await asyncio.sleep(0.05)  # the wire's gap: nothing the client could signal
        await response.write(body[100:].encode())
        return response

    server = await serve(in_parts)
    answer = await send(server, api.get_playlist(7))

    assert answer.meaning is Meaning.DONE, answer
    assert answer.payload == json.loads(body)


async def test_a_body_cut_short_of_its_content_length_is_an_answer_lost(serve: Serve) -> None:
    """The connection closes halfway through the body: retried, and it may have been
    applied (the status said done, the rest never came)."""

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=201, headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b'{"data": ')
        assert request.transport is not None
        request.transport.close()
        return response

    server = await serve(cut)
    answer = await send(server, api.add_session(ROW))

    assert answer.meaning is Meaning.RETRYABLE, answer
    assert answer.maybe_applied
    assert answer.error


@pytest.mark.parametrize(("deadline", "stop"), [(True, False), (False, True), (True, True)])
async def test_only_the_deadline_alone_makes_a_timed_out_answer(
    serve: Serve, deadline: bool, stop: bool
) -> None:
    """A stop cancels a worker in the middle of its request: that cancel goes on up,
    even when the request's deadline passes at the same moment."""
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        return await _hang(request)

    server = await serve(hang)
    async with Client(Route(server.base_url), CREDENTIALS, concurrency=2, timeout_s=60) as client:
        sending = asyncio.ensure_future(client.send(api.add_session(ROW)))
        await arrived.wait()
        if deadline:
            client.deadlines.check(math.inf)  # every request's deadline is past
        if stop:
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
        else:
            assert _timed_out(await sending)


async def test_every_call_of_a_playlist_round_trips_through_the_sandbox(
    make_sandbox: Callable[..., Awaitable[Sandbox]],
) -> None:
    """The builders' paths and queries as the sandbox (which decodes as Datadog does)
    reads them: an id holding `/`, `?` and `%` stays one segment; `page[size]` arrives."""
    sandbox = await make_sandbox()
    odd = Row(1001, "a/b?c%d", TS, "rum", "in.csv", 1)
    credentials = Credentials(Secret(API_KEY), Secret(APP_KEY))
    route = Route(sandbox.base_url)
    async with Client(route, credentials, concurrency=2, timeout_s=10) as client:
        added = [await client.send(api.add_session(row)) for row in (ROW, odd)]
        page = await client.send(api.list_sessions(1001, 0, 1))
        removed = await client.send(api.remove_sessions(1001, [ROW.session_id]))
        gone = await client.send(api.remove_session(1001, odd.session_id))
        empty = await client.send(api.list_sessions(1001, 0, 10))

    assert [answer.status for answer in added] == [201, 201]
    assert isinstance(page.payload, dict)
    assert len(page.payload["data"]) == 1, "page[size]=1 was read"
    assert (removed.status, gone.status) == (204, 204)
    assert isinstance(empty.payload, dict)
    assert empty.payload["data"] == []
    assert sandbox.stats.puts == 2


@given(st.text(max_size=40))
def test_a_segment_is_quoted_exactly_as_quote_would_with_no_safe_characters(value: str) -> None:
    """`segment` skips `quote` for values that need no quoting; it must agree with it."""
    assert api.segment(value) == quote(value, safe="")


@given(
    st.integers(min_value=0, max_value=2**63) | st.none(),
    st.sampled_from(DATA_SOURCES) | st.text(max_size=20),
)
def test_a_rows_query_is_what_query_string_writes(ts: int | None, data_source: str) -> None:
    """`add_session` writes its query in one f-string, for speed: the same string as the
    general encoder, whatever the row holds."""
    row = Row(1001, "s", ts, data_source, "in.csv", 1)
    pairs = (
        [("data_source", data_source)]
        if ts is None
        else [("ts", str(ts)), ("data_source", data_source)]
    )
    assert api.add_session(row).query == api.query_string(*pairs)


def test_a_query_string_encodes_keys_and_values_with_no_safe_characters() -> None:
    assert api.query_string(("page[size]", "10"), ("filter[query]", "a b&c=d/é")) == (
        "page%5Bsize%5D=10&filter%5Bquery%5D=a%20b%26c%3Dd%2F%C3%A9"
    )


@given(
    st.sampled_from(
        [
            "http://127.0.0.1:8126",
            "https://api.datadoghq.eu",
            "http://[::1]:9",
            "https://h/base/path",
        ]
    ),
    st.text(max_size=30),
    st.integers(min_value=0, max_value=2**53) | st.none(),
)
def test_a_url_made_from_parts_is_the_url_parsed_from_the_whole_string(
    base_url: str, session_id: str, ts: int | None
) -> None:
    """`UrlMaker` makes URLs from parts, with the base's properties worked out once: the
    very URL yarl parses from the whole string, in every property aiohttp may read."""
    maker = UrlMaker(base_url)
    assert maker.reuses_base  # with the yarl installed, the fast way is the one taken
    for request in (
        api.add_session(Row(1001, session_id, ts, "rum", "in.csv", 1)),
        api.list_playlists(session_id, 0, 10),
        api.get_playlist(7),
    ):
        whole = base_url + request.path + (f"?{request.query}" if request.query else "")
        made, parsed = maker(request), URL(whole, encoded=True)
        assert made == parsed
        assert hash(made) == hash(parsed)
        assert str(made) == whole
        assert made.origin() == parsed.origin()
        for name in URL_PROPERTIES:
            assert getattr(made, name) == getattr(parsed, name), name


URL_PROPERTIES = (
    "scheme", "raw_user", "user", "raw_password", "password", "raw_host", "host",
    "host_subcomponent", "host_port_subcomponent", "explicit_port", "port", "raw_fragment",
    "fragment", "raw_authority", "authority", "raw_path", "path", "raw_query_string",
    "query_string", "raw_path_qs", "path_qs", "absolute", "query", "name", "parent",
)  # fmt: skip


def test_each_url_has_a_cache_of_its_own() -> None:
    """The base's properties are copied into each URL's cache, never shared: a property
    one URL works out (its path's) must not show in the next one's."""
    maker = UrlMaker("http://127.0.0.1:8126")
    first = maker(api.get_playlist(1))
    assert first.raw_path_qs == "/api/v2/rum/replay/playlists/1"
    second = maker(api.get_playlist(2))
    assert second.raw_path_qs == "/api/v2/rum/replay/playlists/2"
    assert first.raw_path_qs == "/api/v2/rum/replay/playlists/1"


def test_a_yarl_whose_insides_differ_gets_its_urls_from_url_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the base's properties cannot be taken as the fast way needs (a yarl without
    one of them, here), every URL is made by `URL.build`, the same URL."""
    monkeypatch.setattr(client_module, "_OF_THE_BASE", ("scheme", "no_such_property"))
    maker = UrlMaker("http://127.0.0.1:8126")
    assert not maker.reuses_base
    request = api.get_playlist(7)
    assert maker(request) == URL("http://127.0.0.1:8126/api/v2/rum/replay/playlists/7")


def test_a_url_made_the_fast_way_that_differed_would_not_be_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check of the fast way can fail: with a wrong base property (the port, here),
    its URL differs from `URL.build`'s and the fast way is turned off."""
    check = client_module._same_as_built

    def with_a_wrong_port(maker: UrlMaker) -> bool:
        assert maker._base_cache is not None
        maker._base_cache["port"] = 1
        return check(maker)

    monkeypatch.setattr(client_module, "_same_as_built", with_a_wrong_port)
    assert not UrlMaker("http://127.0.0.1:8126").reuses_base
