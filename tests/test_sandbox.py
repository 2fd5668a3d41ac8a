"""The sandbox must answer like Datadog, or every other test proves the wrong thing."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from sandbox_http import API, KEYS, FakeClock, assert_ratelimit_headers, parse
from support import MakeSandbox, run_cli
from yarl import URL

from worker.sandbox import FaultConfig, Sandbox, SandboxConfig, parse_rate_limit
from worker.sandbox.cli import config_from_args, describe
from worker.sandbox.ratelimit import FixedWindowLimiter


def session_url(
    sandbox: Sandbox, session_id: str, playlist: object = 7, query: str = "ts=1"
) -> URL:
    """Encodes the id the way Datadog's clients do: no safe characters."""
    path = f"{API}/{playlist}/sessions/{quote(session_id, safe='')}"
    return URL(f"{sandbox.base_url}{path}?{query}", encoded=True)


async def put(
    http: aiohttp.ClientSession,
    sandbox: Sandbox,
    session_id: str = "s1",
    *,
    playlist: object = 7,
    query: str = "ts=1",
    headers: dict[str, str] = KEYS,
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    async with http.put(session_url(sandbox, session_id, playlist, query), headers=headers) as r:
        if r.content_type != "application/json":  # a fault's proxy-like answer: its text
            return r.status, {"text": await r.text()}, r.headers
        return r.status, await r.json(content_type=None), r.headers


# --- the rate limiter on its own --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("100/2", (100, 2.0)), (" 5/0.5 ", (5, 0.5)), ("1/60", (1, 60.0))]
)
def test_parse_rate_limit(text: str, expected: tuple[int, float]) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["", "100", "100/", "a/2", "1.5/2", "0/1", "5/0", "5/-1", "5/inf"])
def test_parse_rate_limit_rejects_with_a_hint(text: str) -> None:
    with pytest.raises(ValueError, match=r"LIMIT/PERIOD|at least 1|positive number"):
        parse_rate_limit(text)


def test_windows_are_aligned_to_the_wall_clock() -> None:
    clock = FakeClock(100.5)
    limiter = FixedWindowLimiter(3, 2, "test", clock)

    verdicts = [limiter.take() for _ in range(4)]

    assert [(v.allowed, v.remaining, v.reset) for v in verdicts] == [
        (True, 2, 2),
        (True, 1, 2),
        (True, 0, 2),
        (False, 0, 2),
    ]
    clock.now = 101.9
    assert limiter.take().reset == 1, "a window ending in 0.1 s resets in 1 whole second"
    clock.now = 102.0
    assert limiter.take().allowed, "a new window (aligned to multiples of 2 s) brings a new budget"
    assert limiter.headers(limiter.take()) == {
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Period": "2",
        "X-RateLimit-Remaining": "1",
        "X-RateLimit-Reset": "2",
        "X-RateLimit-Name": "test",
    }


def test_a_new_limit_keeps_the_windows_count_and_a_new_period_starts_afresh() -> None:
    limiter = FixedWindowLimiter(10, 1, "test", FakeClock(5.0))
    for _ in range(3):
        limiter.take()

    limiter.reconfigure(2, 1)
    refused = limiter.take()
    assert not refused.allowed
    assert refused.remaining == 0  # never negative, though 3 were used of a new limit of 2

    limiter.reconfigure(3, 2)
    assert limiter.take().remaining == 2


# --- the PUT endpoint -------------------------------------------------------------------


async def test_put_adds_once_then_reports_already_present(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    first = await put(http, sandbox, query="ts=1704067200000&data_source=product_analytics")
    again = await put(http, sandbox, query="ts=99")

    assert first[0] == 201
    assert again[0] == 200
    expected_data = {
        "id": "s1",
        "type": "rum_replay_session",
        "attributes": {
            "session_event": {"timestamp": 1704067200000, "data_source": "product_analytics"},
            "track": "product_analytics",
        },
    }
    assert first[1] == again[1] == {"data": expected_data}, "a repeat reports what is held"
    assert_ratelimit_headers(first[2])
    record = sandbox.store.get(7, "s1")
    assert record is not None
    assert (record.ts, record.data_source) == (1704067200000, "product_analytics")
    assert (sandbox.stats.puts, sandbox.stats.duplicate_puts) == (2, 1)
    assert sandbox.stats.responses == {201: 1, 200: 1}


@pytest.mark.parametrize(
    "session_id",
    [
        "a/b?c#d%e f",
        "%2F",
        "a%2Fb",
        "été/ü 日本",
        "..",
        "a+b&ts=2",
        "00000000-0000-0000-0000-000000000001",
    ],
)
async def test_an_encoded_session_id_is_one_segment_decoded_exactly_once(
    sandbox: Sandbox, http: aiohttp.ClientSession, session_id: str
) -> None:
    status, body, _ = await put(http, sandbox, session_id)

    assert status == 201
    assert body["data"]["id"] == session_id
    assert list(sandbox.store.sessions(7)) == [session_id]
    assert sandbox.store.get(7, session_id) is not None


async def test_the_raw_encoded_path_reaches_the_log(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    await put(http, sandbox, "a/b?c#d%e f")

    assert sandbox.requests[-1].raw_path == f"{API}/7/sessions/a%2Fb%3Fc%23d%25e%20f"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"DD-API-KEY": "k"},
        {"DD-APPLICATION-KEY": "k"},
        {"DD-API-KEY": "", "DD-APPLICATION-KEY": "k"},
    ],
)
async def test_both_keys_are_required(
    sandbox: Sandbox, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, body, response_headers = await put(http, sandbox, headers=headers)

    assert (status, body) == (403, {"errors": ["Forbidden"]})
    assert_ratelimit_headers(response_headers)
    assert len(sandbox.store) == 0


async def test_configured_keys_must_match_exactly(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(api_key="api-key-value", app_key="app-key-value")
    wrong = {**KEYS, "DD-APPLICATION-KEY": "app-key-valu"}

    assert (await put(http, sandbox, headers=wrong))[0] == 403
    assert (await put(http, sandbox, headers=KEYS))[0] == 201


@pytest.mark.parametrize(
    ("tail", "complaint"),
    [
        ("abc/sessions/s?ts=1", "playlist_id"),
        ("0/sessions/s?ts=1", "playlist_id"),
        ("-1/sessions/s?ts=1", "playlist_id"),
        ("9223372036854775808/sessions/s?ts=1", "playlist_id"),
        ("7/sessions/?ts=1", "session_id"),
        ("7/sessions/%FF?ts=1", "UTF-8"),
        ("7/sessions/s", "ts is required"),
        ("7/sessions/s?data_source=rum", "ts is required"),
        ("7/sessions/s?ts=1.5", "ts must be an integer"),
        ("7/sessions/s?ts=soon", "ts must be an integer"),
        ("7/sessions/s?ts=1&data_source=logs", "data_source"),
    ],
)
async def test_bad_parameters_answer_400_saying_which(
    sandbox: Sandbox, http: aiohttp.ClientSession, tail: str, complaint: str
) -> None:
    url = URL(f"{sandbox.base_url}{API}/{tail}", encoded=True)
    async with http.put(url, headers=KEYS) as response:
        body = await response.json()
        assert response.status == 400
        assert_ratelimit_headers(response.headers)
    assert complaint in body["errors"][0]
    assert len(sandbox.store) == 0


async def test_unknown_playlists_answer_404_when_the_playlists_are_known(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(playlists=frozenset({1, 2}))

    status, body, headers = await put(http, sandbox, playlist=3)

    assert status == 404
    assert body == {"errors": ["playlist 3 not found"]}
    assert_ratelimit_headers(headers)
    assert (await put(http, sandbox, playlist=2))[0] == 201


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api/v2/rum/replay/playlists/7", 405),
        ("GET", "/api/v2/rum/replay", 404),
        ("PUT", "/api/v2/rum/replay/playlists/7/sessions/a/b", 404),
        ("GET", "/api/v1/validate", 404),
        ("POST", f"{API}/7/sessions/s1", 405),
        ("PUT", f"{API}/7/sessions", 405),
    ],
)
async def test_unknown_routes_and_methods_answer_with_errors(
    sandbox: Sandbox, http: aiohttp.ClientSession, method: str, path: str, status: int
) -> None:
    async with http.request(method, f"{sandbox.base_url}{path}?ts=1", headers=KEYS) as response:
        assert response.status == status
        assert (await response.json())["errors"]


# --- the related routes -----------------------------------------------------------------


async def test_list_pages_and_deletes(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    for session_id in ("a", "b/c", "d"):
        await put(http, sandbox, session_id)
    collection = f"{sandbox.base_url}{API}/7/sessions"

    async def listed(number: int) -> list[str]:
        params = {"page[number]": number, "page[size]": 2}
        async with http.get(collection, params=params, headers=KEYS) as response:
            assert response.status == 200
            body = await response.json()
        assert set(body) == {"data"}, "no total, no links: a client stops at a short page"
        return [entry["id"] for entry in body["data"]]

    assert (await listed(0), await listed(1)) == (["a", "b/c"], ["d"])

    for _ in range(2):  # 204 whether or not the playlist held it
        async with http.delete(session_url(sandbox, "b/c"), headers=KEYS) as response:
            assert response.status == 204
    remove = {
        "data": [
            {"id": "a", "type": "rum_replay_session"},
            {"id": "x", "type": "rum_replay_session"},
        ]
    }
    async with http.delete(collection, json=remove, headers=KEYS) as response:
        assert response.status == 204
    assert list(sandbox.store.sessions(7)) == ["d"]


@pytest.mark.parametrize("body", [b"not json", b'{"data": [{"id": "a"}]}', b"[]"])
async def test_bulk_delete_explains_the_body_it_needs(
    sandbox: Sandbox, http: aiohttp.ClientSession, body: bytes
) -> None:
    url = f"{sandbox.base_url}{API}/7/sessions"
    async with http.delete(url, data=body, headers=KEYS) as response:
        assert response.status == 400
        assert "rum_replay_session" in (await response.json())["errors"][0]


@pytest.mark.parametrize("query", ["page[size]=0", "page[size]=1001", "page[number]=-1"])
async def test_bad_pages_answer_400(
    sandbox: Sandbox, http: aiohttp.ClientSession, query: str
) -> None:
    async with http.get(f"{sandbox.base_url}{API}/7/sessions?{query}", headers=KEYS) as response:
        assert response.status == 400


# --- the rate limit over HTTP ----------------------------------------------------------


async def test_one_budget_is_shared_by_every_client(make_sandbox: MakeSandbox) -> None:
    clock = FakeClock(1000.25)
    sandbox = await make_sandbox(rate_limit=(3, 1), clock=clock)
    async with aiohttp.ClientSession() as one, aiohttp.ClientSession() as two:
        statuses = [
            (await put(client, sandbox, f"s{i}"))[0] for i, client in enumerate([one, two, one])
        ]
        refused = await put(two, sandbox, "late")

        assert statuses == [201, 201, 201]
        status, body, headers = refused
        assert (status, body) == (429, {"errors": ["Too many requests"]})
        assert (headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == ("0", "1")
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Period"]) == ("3", "1")
        assert headers["X-RateLimit-Name"] == "rum_replay_playlists"

        clock.now = 1001.0
        assert (await put(two, sandbox, "late"))[0] == 201
    assert sandbox.stats.responses == {201: 4, 429: 1}


async def test_the_limit_changes_while_serving(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(rate_limit=(100, 1), clock=FakeClock(50.5))
    await put(http, sandbox, "a")
    await put(http, sandbox, "b")

    config = {"rate_limit": "3/1"}
    async with http.post(f"{sandbox.base_url}/_sandbox/config", json=config) as response:
        assert response.status == 200
        assert (await response.json())["rate_limit"]["limit"] == 3

    assert [(await put(http, sandbox, s))[0] for s in "cd"] == [201, 429]
    sandbox.reconfigure(rate_limit=(4, 1))
    assert (await put(http, sandbox, "d"))[0] == 201
    assert sandbox.config.rate_limit == (4, 1.0)


# --- faults -----------------------------------------------------------------------------


async def faulty(make_sandbox: MakeSandbox, **faults: Any) -> Sandbox:
    return await make_sandbox(faults=FaultConfig(**faults))


@pytest.mark.parametrize(("fault", "stored"), [("error_before", False), ("error_after", True)])
async def test_5xx_before_or_after_adding(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession, fault: str, stored: bool
) -> None:
    sandbox = await faulty(make_sandbox, **{fault: 1.0})

    status, body, headers = await put(http, sandbox)

    assert status in (500, 502, 503, 504)
    assert body == {"errors": ["Internal Server Error"]}
    assert_ratelimit_headers(headers)
    assert (sandbox.store.get(7, "s1") is not None) == stored


@pytest.mark.parametrize(("fault", "stored"), [("drop_before", False), ("drop_after", True)])
async def test_dropped_connections_before_or_after_adding(
    make_sandbox: MakeSandbox,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    stored: bool,
) -> None:
    sandbox = await faulty(make_sandbox, **{fault: 1.0})

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await put(http, sandbox)

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "a quiet drop"

    assert (sandbox.store.get(7, "s1") is not None) == stored
    assert sandbox.stats.dropped == sandbox.stats.puts >= 1
    assert sum(sandbox.stats.responses.values()) == 0, "not a byte of answer"


async def test_a_hang_outlasts_the_client_and_ends_with_the_server(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await faulty(make_sandbox, hang=1.0)

    with pytest.raises(asyncio.TimeoutError):
        await http.put(
            session_url(sandbox, "s1"), headers=KEYS, timeout=aiohttp.ClientTimeout(total=0.2)
        )
    assert (sandbox.stats.hung, sandbox.stats.dropped) == (1, 0)

    await sandbox.stop()

    assert sandbox.stats.dropped == 1, "stop() released the hung request, not cancelled it"
    assert len(sandbox.store) == 0


async def test_non_json_success(make_sandbox: MakeSandbox, http: aiohttp.ClientSession) -> None:
    sandbox = await faulty(make_sandbox, non_json=1.0)

    async with http.put(session_url(sandbox, "s1"), headers=KEYS) as response:
        assert response.status == 201
        assert response.content_type == "text/html"
        with pytest.raises(json.JSONDecodeError):
            json.loads(await response.text())
    assert sandbox.store.get(7, "s1") is not None


@pytest.mark.parametrize("retry_after_s", [None, 0, 3])
async def test_a_bare_429_is_a_proxys_plain_answer_and_adds_nothing(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession, retry_after_s: int | None
) -> None:
    sandbox = await faulty(make_sandbox, bare_429=1.0, retry_after_s=retry_after_s)

    async with http.put(session_url(sandbox, "s1"), headers=KEYS) as response:
        status, text, headers = response.status, await response.text(), response.headers

    assert (status, text, headers["Content-Type"]) == (
        429,
        "429 Too Many Requests\n",
        "text/plain",
    )
    assert headers.get("Retry-After") == (None if retry_after_s is None else str(retry_after_s))
    assert_ratelimit_headers(headers, present=False)
    assert len(sandbox.store) == 0


@pytest.mark.parametrize("wait", [-1, 1.5, True])
def test_retry_after_is_whole_seconds(wait: object) -> None:
    with pytest.raises(ValueError, match="retry_after_s"):
        FaultConfig(retry_after_s=wait)  # type: ignore[arg-type]


async def test_proxy_mode_hides_the_headers_but_keeps_the_limit(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(
        rate_limit=(1, 1),
        clock=FakeClock(3.5),
        faults=FaultConfig(ratelimit_headers=False),
    )

    answers = [await put(http, sandbox, s) for s in "ab"]

    assert [status for status, _, _ in answers] == [201, 429]
    for _, _, headers in answers:
        assert_ratelimit_headers(headers, present=False)


async def test_a_skewed_reset_is_any_whole_second_near_the_boundary(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock(1000.25)  # 1.75 s before the 2-second window ends
    sandbox = await make_sandbox(
        rate_limit=(100, 2), clock=clock, faults=FaultConfig(reset_skew_s=1.0)
    )

    answers = [await put(http, sandbox, f"s{i}") for i in range(20)]
    clock.now = 1001.9  # 0.1 s left: 0 and 1 are within a second, -1 is not a Reset
    late = {(await put(http, sandbox, f"t{i}"))[2]["X-RateLimit-Reset"] for i in range(20)}

    assert {headers["X-RateLimit-Reset"] for _, _, headers in answers} == {"1", "2"}
    assert late == {"0", "1"}
    assert [headers["X-RateLimit-Remaining"] for _, _, headers in answers[:2]] == ["99", "98"]


async def test_revoked_keys_refuse_every_later_request(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await faulty(make_sandbox, revoke_keys_after=2)

    statuses = [(await put(http, sandbox, s))[0] for s in "abcd"]

    assert statuses == [201, 201, 403, 403]
    assert sandbox.stats.after_revoke == 2


async def test_latency_delays_but_answers(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await faulty(make_sandbox, latency_ms=(1.0, 3.0))

    assert (await put(http, sandbox))[0] == 201


async def test_a_seed_replays_the_same_faults(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    runs = []
    for _ in range(2):
        sandbox = await faulty(make_sandbox, error_before=0.3, bare_429=0.2, seed=42)
        runs.append([(await put(http, sandbox, f"s{i}"))[0] for i in range(30)])

    assert runs[0] == runs[1]
    assert {201, 429} < set(runs[0]), "a mix of successes and faults"


@pytest.mark.parametrize(
    ("faults", "complaint"),
    [
        ({"hang": 1.5}, "between 0 and 1"),
        ({"hang": -0.1}, "between 0 and 1"),
        ({"error_before": 0.6, "drop_after": 0.6}, "add up"),
        ({"latency_ms": (5.0, 1.0)}, "latency_ms"),
        ({"revoke_keys_after": -1}, "revoke_keys_after"),
        ({"reset_skew_s": -1}, "reset_skew_s"),
    ],
)
def test_fault_config_refuses_nonsense(faults: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        FaultConfig(**faults)


# --- introspection over HTTP -----------------------------------------------------------


async def test_state_config_and_reset_over_http(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    control = f"{sandbox.base_url}/_sandbox"
    await put(http, sandbox, "a/b", query="ts=5")

    async with http.get(f"{control}/state") as response:
        state = await response.json()
    assert state["sessions"] == {"7": [{"session_id": "a/b", "ts": 5, "data_source": "rum"}]}
    assert state["stats"]["responses"] == {"201": 1}
    assert state["stats"]["puts"] == 1
    assert state["config"]["rate_limit"] == {
        "limit": 100_000,
        "period": 1.0,
        "name": "rum_replay_playlists",
    }
    assert state["requests"][0]["raw_path"] == f"{API}/7/sessions/a%2Fb"

    change = {"faults": {"error_before": 1.0, "latency_ms": "0-1"}}
    async with http.post(f"{control}/config", json=change) as response:
        assert (await response.json())["faults"]["latency_ms"] == [0.0, 1.0]
    assert (await put(http, sandbox, "c"))[0] >= 500

    async with http.post(f"{control}/reset") as response:
        assert response.status == 204
    assert len(sandbox.store) == sandbox.stats.requests == len(sandbox.requests) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"rate_limit": "fast"},
        {"rate_limit": 5},
        {"faults": {"hang": 2}},
        {"faults": {"explode": 1}},
        {"faults": {"latency_ms": [None, 1]}},
        {"faults": {"revoke_keys_after": True}},
        {"color": "red"},
        [],
        "not json",
    ],
)
async def test_bad_config_changes_answer_400_and_change_nothing(
    sandbox: Sandbox, http: aiohttp.ClientSession, body: object
) -> None:
    before = sandbox.config

    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    async with http.post(f"{sandbox.base_url}/_sandbox/config", data=data) as response:
        assert response.status == 400
        assert (await response.json())["errors"]
    assert sandbox.config == before


async def test_the_log_names_headers_but_never_holds_key_values(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    headers = {**KEYS, "User-Agent": "ingest/1.0", "Accept": "application/json"}
    await put(http, sandbox, headers=headers)

    entry = sandbox.requests[-1]
    assert (entry.method, entry.query_string) == ("PUT", "ts=1")
    assert (entry.user_agent, entry.accept) == ("ingest/1.0", "application/json")
    assert {"DD-API-KEY", "DD-APPLICATION-KEY"} <= set(entry.header_names)
    dumped = json.dumps(sandbox.state())
    assert not any(key in dumped for key in KEYS.values())


async def test_minimal_mode_keeps_no_log(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(minimal=True)

    assert (await put(http, sandbox))[0] == 201
    assert len(sandbox.requests) == 0
    assert sandbox.stats.puts == 1


# --- the command line and its own process ----------------------------------------------


def test_options_become_a_config() -> None:
    args = parse(
        "--rate-limit", "10/3", "--playlists", "1, 2", "--minimal", "--fault-5xx", "0.1",
        "--fault-drop-after", "0.2", "--fault-latency-ms", "5-50", "--no-ratelimit-headers",
        "--revoke-keys-after", "9", "--seed", "4", "--fault-reset-skew", "1",
    )  # fmt: skip

    config = config_from_args(args, env={"SANDBOX_API_KEY": "a", "SANDBOX_APP_KEY": "b"})

    assert config == SandboxConfig(
        rate_limit=(10, 3.0),
        playlists=frozenset({1, 2}),
        api_key="a",
        app_key="b",
        minimal=True,
        faults=FaultConfig(
            error_before=0.1,
            drop_after=0.2,
            latency_ms=(5.0, 50.0),
            ratelimit_headers=False,
            reset_skew_s=1.0,
            revoke_keys_after=9,
            seed=4,
        ),
    )
    assert "'a'" not in repr(config), "keys never show in a repr"
    assert config_from_args(parse(), env={}).api_key is None


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--rate-limit", "fast"], "--rate-limit"),
        (["--playlists", "1,x"], "--playlists"),
        (["--playlists", "0"], "positive"),
        (["--fault-latency-ms", "9-1"], "--fault-latency-ms"),
        (["--fault-hang", "2"], "hang"),
        (["--fault-retry-after", "-1"], "retry_after_s"),
    ],
)
def test_bad_options_say_which(argv: list[str], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        config_from_args(parse(*argv), env={})


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
async def test_a_port_out_of_range_is_refused_not_wrapped(port: str) -> None:
    done = await run_cli("sandbox", "--port", port)

    assert done.code == 2
    assert f"{port!r} is not a port number (0 to 65535)" in done.stderr


@pytest.mark.parametrize(
    ("api_key", "app_key", "accepting"),
    [
        (None, None, "accepting any non-empty key pair"),
        ("a", "b", "accepting the API key in SANDBOX_API_KEY with the application key in"),
        ("a", None, "accepting the API key in SANDBOX_API_KEY with any application key"),
        (None, "b", "accepting any API key with the application key in SANDBOX_APP_KEY"),
    ],
)
def test_the_first_line_says_which_keys_are_accepted(
    api_key: str | None, app_key: str | None, accepting: str
) -> None:
    config = SandboxConfig(api_key=api_key, app_key=app_key)
    assert accepting in describe(config, "127.0.0.1")


async def test_a_bad_value_shows_the_sandbox_commands_own_usage() -> None:
    done = await run_cli("sandbox", "--rate-limit", "fast")

    assert done.code == 2
    assert done.stderr.startswith("usage: rum-playlist-ingest sandbox ")
    assert "--rate-limit: rate limit 'fast' is not LIMIT/PERIOD" in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_process_prints_one_line_and_stops_cleanly_on_a_signal(
    sandbox_process: Callable[..., Awaitable[Any]], signum: signal.Signals
) -> None:
    started = await sandbox_process("--rate-limit", "5/1", env={"SANDBOX_API_KEY": "api-key-value"})
    async with aiohttp.ClientSession(base_url=started.base_url) as http:
        async with http.put(f"{API}/7/sessions/s1?ts=1", headers=KEYS) as response:
            assert response.status == 201
            assert response.headers["X-RateLimit-Limit"] == "5"
        wrong = {**KEYS, "DD-API-KEY": "other"}
        async with http.put(f"{API}/7/sessions/s1?ts=1", headers=wrong) as response:
            assert response.status == 403

    started.process.send_signal(signum)

    assert await started.process.wait() == 0
    assert await started.process.stdout.read() == b"", "the URL is the only line on stdout"


async def test_the_process_refuses_bad_options(
    sandbox_process: Callable[..., Awaitable[Any]],
) -> None:
    with pytest.raises(RuntimeError, match="exited with 2"):
        await sandbox_process("--rate-limit", "0/1")


async def test_a_taken_port_is_refused_with_exit_2(
    sandbox: Sandbox, sandbox_process: Callable[..., Awaitable[Any]]
) -> None:
    port = str(URL(sandbox.base_url).port)

    with pytest.raises(RuntimeError, match="exited with 2"):
        await sandbox_process("--port", port)
