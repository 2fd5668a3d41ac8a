"""The sandbox's playlists API and its listing faults: the shapes the official client
models, a budget per endpoint family, and the server-side losses verify must find."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from sandbox_http import API, KEYS, FakeClock, assert_ratelimit_headers, call, parse
from support import MakeSandbox

from worker.sandbox import FaultConfig, Sandbox, SandboxConfig
from worker.sandbox.cli import config_from_args, describe


def playlist_body(name: str, description: str | None = None) -> dict[str, object]:
    attributes: dict[str, object] = {"name": name}
    if description is not None:
        attributes["description"] = description
    return {"data": {"type": "rum_replay_playlist", "attributes": attributes}}


def sessions_body(*session_ids: str) -> dict[str, object]:
    return {"data": [{"id": sid, "type": "rum_replay_session"} for sid in session_ids]}


async def create(http: aiohttp.ClientSession, sandbox: Sandbox, name: str) -> int:
    status, body, _ = await call(http, sandbox.base_url, "POST", API, json=playlist_body(name))
    assert status == 201
    return int(body["data"]["id"])


async def add(http: aiohttp.ClientSession, sandbox: Sandbox, playlist: int, *ids: str) -> None:
    for session_id in ids:
        path = f"{API}/{playlist}/sessions/{session_id}?ts=1"
        assert (await call(http, sandbox.base_url, "PUT", path))[0] in (200, 201)


async def listed(
    http: aiohttp.ClientSession, sandbox: Sandbox, path: str, number: int, size: int
) -> list[str]:
    params: dict[str, str | int] = {"page[number]": number, "page[size]": size}
    status, body, _ = await call(http, sandbox.base_url, "GET", path, params=params)
    assert status == 200
    assert set(body) == {"data"}
    return [item["id"] for item in body["data"]]


async def test_a_playlists_life_create_get_update_list_delete(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(playlists=frozenset(), clock=FakeClock(1_767_225_600.0))
    base = sandbox.base_url

    status, created, headers = await call(
        http, base, "POST", API, json=playlist_body("Backfill", "from the CSV")
    )
    assert status == 201
    assert_ratelimit_headers(headers)
    playlist_id = created["data"]["id"]
    assert created == {
        "data": {
            "id": playlist_id,
            "type": "rum_replay_playlist",
            "attributes": {
                "name": "Backfill",
                "description": "from the CSV",
                "session_count": 0,
                "created_at": "2026-01-01T00:00:00.000Z",
                "updated_at": "2026-01-01T00:00:00.000Z",
                "created_by": {
                    "handle": "sandbox@example.com",
                    "id": "1",
                    "uuid": "00000000-0000-0000-0000-00000000cafe",
                    "name": "Sandbox",
                },
            },
        }
    }
    await add(http, sandbox, int(playlist_id), "s1", "s2")
    status, got, _ = await call(http, base, "GET", f"{API}/{playlist_id}")
    assert (status, got["data"]["attributes"]["session_count"]) == (200, 2)

    status, updated, _ = await call(
        http, base, "PUT", f"{API}/{playlist_id}", json=playlist_body("Backfill 2")
    )
    assert status == 200
    assert updated["data"]["attributes"]["name"] == "Backfill 2"
    assert "description" not in updated["data"]["attributes"], "the whole playlist is replaced"

    assert (await call(http, base, "DELETE", f"{API}/{playlist_id}"))[:2] == (204, None)
    status, body, _ = await call(http, base, "GET", f"{API}/{playlist_id}")
    assert (status, body) == (404, {"errors": [f"playlist {playlist_id} not found"]})
    assert len(sandbox.store) == 0, "its sessions went with it"
    assert sandbox.stats.calls == {
        "create_playlist": 1,
        "add_session": 2,
        "get_playlist": 2,
        "update_playlist": 1,
        "delete_playlist": 1,
    }


async def test_the_listing_filters_by_any_part_of_the_name_and_pages(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(playlists=frozenset({5}))
    ids = [await create(http, sandbox, name) for name in ("Night", "night run", "Day", "NIGHT")]

    assert await listed(http, sandbox, f"{API}?filter[query]=nIgHt", 0, 2) == [
        str(ids[0]),
        str(ids[1]),
    ]
    assert await listed(http, sandbox, f"{API}?filter[query]=nIgHt", 1, 2) == [str(ids[3])]
    assert await listed(http, sandbox, f"{API}?filter[query]=nIgHt", 2, 2) == []
    everything = await listed(http, sandbox, API, 0, 100)
    assert everything == ["5", *map(str, ids)], "configured playlists exist, ids never reused"
    creator = "filter[created_by_uuid]"
    assert await listed(http, sandbox, f"{API}?{creator}=someone-else", 0, 100) == []


async def test_where_every_playlist_exists_a_named_one_comes_into_being(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    await add(http, sandbox, 7, "s1")
    new_id = await create(http, sandbox, "made")

    status, body, _ = await call(http, sandbox.base_url, "GET", API)
    assert status == 200
    assert [(p["id"], p["attributes"]["name"]) for p in body["data"]] == [
        ("7", "playlist 7"),
        (str(new_id), "made"),
    ]
    assert new_id > 7, "a created id never takes one already named"
    assert (await call(http, sandbox.base_url, "GET", f"{API}/99"))[0] == 200


async def test_a_created_playlist_takes_sessions_where_others_are_unknown(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(playlists=frozenset({1}))
    made = await create(http, sandbox, "made")

    await add(http, sandbox, made, "a")
    put_unknown = await call(http, sandbox.base_url, "PUT", f"{API}/{made + 1}/sessions/a?ts=1")

    assert put_unknown[:2] == (404, {"errors": [f"playlist {made + 1} not found"]})
    assert list(sandbox.store.sessions(made)) == ["a"]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({}, "the body must be"),
        ({"data": {"type": "rum_replay_session", "attributes": {"name": "x"}}}, "must be"),
        ({"data": {"type": "rum_replay_playlist", "attributes": {}}}, "attributes.name"),
        ({"data": {"type": "rum_replay_playlist", "attributes": {"name": " "}}}, "non-empty"),
        (playlist_body("x" * 257), "longer than 256"),
        ({"data": {"type": "rum_replay_playlist", "attributes": {"name": "a", "description": 3}}},
         "description"),
        ({"data": {"id": "9", "type": "rum_replay_playlist", "attributes": {"name": "a"}}},
         "data.id"),
    ],
)  # fmt: skip
async def test_a_bad_playlist_body_answers_400_saying_what_to_send(
    sandbox: Sandbox, http: aiohttp.ClientSession, body: object, complaint: str
) -> None:
    status, answer, _ = await call(http, sandbox.base_url, "POST", API, json=body)

    assert status == 400
    assert complaint in answer["errors"][0]
    assert sandbox.store.records() == []


async def test_a_body_that_is_not_json_is_a_400(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    url = f"{sandbox.base_url}{API}"
    async with http.post(url, data=b"{", headers=KEYS) as response:
        assert response.status == 400
        assert "not JSON" in (await response.json())["errors"][0]


@pytest.mark.parametrize("query", ["page[size]=0", "page[size]=1001", "page[number]=x"])
async def test_bad_pages_of_playlists_answer_400(
    sandbox: Sandbox, http: aiohttp.ClientSession, query: str
) -> None:
    status, body, _ = await call(http, sandbox.base_url, "GET", f"{API}?{query}")

    assert status == 400
    assert "page[" in body["errors"][0]


# --- a budget per family ---------------------------------------------------------------


async def test_each_family_has_its_own_budget_and_name(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(
        rate_limit=(2, 1),
        playlists_rate_limit=(1, 10),
        search_rate_limit=(300, 60.0),
        clock=FakeClock(100.0),
    )
    base = sandbox.base_url

    playlists = [(await call(http, base, "GET", API))[::2] for _ in range(2)]
    sessions = [(await call(http, base, "GET", f"{API}/7/sessions"))[::2] for _ in range(3)]

    assert [status for status, _ in playlists] == [200, 429]
    assert [status for status, _ in sessions] == [200, 200, 429], "untouched by the other"
    first_playlists, first_sessions = playlists[0][1], sessions[0][1]
    assert first_playlists["X-RateLimit-Name"] == "rum_replay_playlists_crud"
    assert (first_playlists["X-RateLimit-Limit"], first_playlists["X-RateLimit-Period"]) == (
        "1",
        "10",
    )
    assert first_sessions["X-RateLimit-Name"] == "rum_replay_playlists"
    assert sandbox.state()["config"]["rate_limits"] == {  # type: ignore[index]
        "playlist_sessions": {"limit": 2, "period": 1.0, "name": "rum_replay_playlists"},
        "playlists": {"limit": 1, "period": 10.0, "name": "rum_replay_playlists_crud"},
        "rum_search": {"limit": 300, "period": 60.0, "name": "rum_search"},
    }


async def test_a_familys_limit_changes_over_the_control_plane(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    change = {"playlists_rate_limit": "7/3", "search_rate_limit": "9/4"}
    async with http.post(f"{sandbox.base_url}/_sandbox/config", json=change) as response:
        assert response.status == 200
        limits = (await response.json())["rate_limits"]

    assert (limits["playlists"]["limit"], limits["rum_search"]["period"]) == (7, 4.0)
    assert (sandbox.config.playlists_rate_limit, sandbox.config.search_rate_limit) == (
        (7, 3.0),
        (9, 4.0),
    )
    assert sandbox.config.rate_limit == (100_000, 1.0), "the others are kept"


# --- the sessions' listing and removal -------------------------------------------------


async def test_a_page_size_cap_gives_fewer_than_asked_and_every_item_once(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(page_size_cap=2))
    await add(http, sandbox, 7, *"abcde")

    pages = [await listed(http, sandbox, f"{API}/7/sessions", n, 10) for n in range(4)]

    assert pages == [["a", "b"], ["c", "d"], ["e"], []]


async def test_a_bulk_removal_over_the_cap_is_refused_naming_the_limit(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(max_bulk=2))
    await add(http, sandbox, 7, *"abc")
    path = f"{API}/7/sessions"

    refused = await call(http, sandbox.base_url, "DELETE", path, json=sessions_body(*"abc"))
    removed = await call(http, sandbox.base_url, "DELETE", path, json=sessions_body("a", "x"))

    assert refused[:2] == (
        400,
        {"errors": ["too many sessions: at most 2 sessions per request, not 3"]},
    )
    assert removed[:2] == (204, None), "a session that is not there is no error"
    assert list(sandbox.store.sessions(7)) == ["b", "c"]


async def test_sessions_lost_server_side_by_name_or_by_stride(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    await add(http, sandbox, 7, *"abcdefg")
    control = f"{sandbox.base_url}/_sandbox/drop_sessions"

    async with http.post(control, json={"playlist_id": 7, "session_ids": ["b", "x"]}) as r:
        assert (r.status, await r.json()) == (200, {"dropped": ["b"]})
    async with http.post(control, json={"playlist_id": 7, "every": 3}) as r:
        assert (r.status, await r.json()) == (200, {"dropped": ["a", "e"]})

    assert list(sandbox.store.sessions(7)) == ["c", "d", "f", "g"]
    assert sandbox.stats.requests == 7, "the control plane is not counted"


@pytest.mark.parametrize(
    "body",
    [
        {"playlist_id": 7},
        {"playlist_id": 7, "every": 2, "session_ids": ["a"]},
        {"playlist_id": 7, "every": 0},
        {"playlist_id": "7", "every": 1},
        {"playlist_id": 7, "session_ids": "a"},
        {"playlist_id": 7, "every": 1.5},
        {"playlist_id": 7, "every": 1, "also": 1},
        [],
    ],
)
async def test_a_bad_drop_answers_400_and_drops_nothing(
    sandbox: Sandbox, http: aiohttp.ClientSession, body: object
) -> None:
    await add(http, sandbox, 7, "a")

    async with http.post(f"{sandbox.base_url}/_sandbox/drop_sessions", json=body) as response:
        assert response.status == 400
        assert (await response.json())["errors"]
    assert list(sandbox.store.sessions(7)) == ["a"]


@pytest.mark.parametrize(("scope", "statuses"), [("put", {200}), ("all", {500, 502, 503, 504})])
async def test_fault_shares_reach_every_request_only_when_asked(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession, scope: str, statuses: set[int]
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(error_before=1.0, shares_apply_to=scope))

    status, _, headers = await call(http, sandbox.base_url, "GET", f"{API}/7/sessions")

    assert status in statuses
    assert_ratelimit_headers(headers)


async def test_a_removal_faulted_after_applying_removed_the_sessions(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox()
    await add(http, sandbox, 7, "a", "b")
    sandbox.reconfigure(faults=FaultConfig(error_after=1.0, shares_apply_to="all"))

    status, _, _ = await call(
        http, sandbox.base_url, "DELETE", f"{API}/7/sessions", json=sessions_body("a")
    )

    assert status >= 500
    assert list(sandbox.store.sessions(7)) == ["b"]


async def test_the_state_shows_the_playlists_and_the_calls(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(playlists=frozenset({3}))
    await add(http, sandbox, 3, "a")

    async with http.get(f"{sandbox.base_url}/_sandbox/state") as response:
        state = await response.json()

    assert state["playlists"] == [
        {"id": 3, "name": "playlist 3", "description": None, "session_count": 1}
    ]
    assert state["stats"]["calls"] == {"add_session": 1}
    await create(http, sandbox, "gone after a reset")
    sandbox.reset()
    assert [playlist_id for playlist_id, _ in sandbox.store.records()] == [3]


# --- the command line -------------------------------------------------------------------


def test_the_new_options_become_a_config() -> None:
    args = parse(
        "--playlists-rate-limit", "5/1", "--search-rate-limit", "6/2", "--fault-scope", "all",
        "--max-bulk", "50", "--page-size-cap", "20", "--fault-redirect", "http://elsewhere/",
        "--fault-redirect-status", "308", "--fault-echo-keys", "--fault-huge-body", "1000",
        "--fault-gzip-bomb", "2000",
    )  # fmt: skip

    config = config_from_args(args, env={})

    assert config == SandboxConfig(
        playlists_rate_limit=(5, 1.0),
        search_rate_limit=(6, 2.0),
        faults=FaultConfig(
            shares_apply_to="all",
            max_bulk=50,
            page_size_cap=20,
            redirect_to="http://elsewhere/",
            redirect_status=308,
            echo_keys=True,
            huge_body_bytes=1000,
            gzip_bomb_bytes=2000,
        ),
    )
    assert "rum_replay_playlists_crud 5/1s" in describe(config, "127.0.0.1")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--search-rate-limit", "0/1"], "--search-rate-limit"),
        (["--max-bulk", "0"], "max_bulk"),
        (["--page-size-cap", "-1"], "page_size_cap"),
        (["--fault-huge-body", "-1"], "huge_body_bytes"),
    ],
)
def test_bad_new_options_say_which(argv: list[str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        config_from_args(parse(*argv), env={})


@pytest.mark.parametrize(
    "faults",
    [
        {"shares_apply_to": "some"},
        {"redirect_status": 200},
        {"redirect_to": "http://a/\r\nX-Evil: 1"},
        {"redirect_to": ""},
        {"echo_keys": 1},
        {"gzip_bomb_bytes": True},
    ],
)
def test_new_fault_fields_refuse_nonsense(faults: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(faults))):
        FaultConfig(**faults)
