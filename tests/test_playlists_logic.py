"""The client-side playlist logic (a name to an id, a playlist's listing, batched
removal): in process against scripted servers where the rule is the point, and over
loopback against the sandbox where the wire is."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sandbox_http import KEYS
from support import MakeSandbox

from worker import playlist_sessions
from worker.answers import Answer, Meaning, meaning_of
from worker.api import Request, add_session
from worker.bulk_removal import DEFAULT_BATCH_SIZE, BatchSizer, remove_in_batches
from worker.client import Client
from worker.config import Credentials, Route, Secret
from worker.paging import ApiCallFailed, Send
from worker.playlist_sessions import SessionIdSet, collect_session_ids, session_ids
from worker.playlists import PlaylistAmbiguous, PlaylistNotFound, resolve_playlist
from worker.rows import Row
from worker.sandbox import FaultConfig, Sandbox


def answer(
    status: int | None,
    error: str | None = None,
    payload: object = None,
    body_problem: str | None = None,
) -> Answer:
    """The final answer a pipeline's `send` would give for `status`."""
    meaning = Meaning.RETRYABLE if status is None else meaning_of(status)
    return Answer(meaning, status, 1.0, error, payload=payload, body_problem=body_problem)


class Scripted:
    """A fake `send`: answers with `respond(request)`, and keeps every request."""

    def __init__(self, respond: Callable[[Request], Answer]) -> None:
        self.respond = respond
        self.sent: list[Request] = []

    async def __call__(self, request: Request) -> Answer:
        self.sent.append(request)
        return self.respond(request)


def playlist_item(playlist_id: int, name: str) -> dict[str, object]:
    return {"id": str(playlist_id), "type": "rum_replay_playlist", "attributes": {"name": name}}


def session_item(session_id: str) -> dict[str, object]:
    return {"id": session_id, "type": "rum_replay_session", "attributes": {}}


def paged(items: list[Any], cap: int) -> Callable[[Request], Answer]:
    """A listing server that gives at most `cap` items a page, whatever is asked."""

    def respond(request: Request) -> Answer:
        query = dict(parse_qsl(request.query))
        size = min(int(query["page[size]"]), cap)
        number = int(query["page[number]"])
        return answer(200, payload={"data": items[number * size : (number + 1) * size]})

    return respond


def uuids(count: int, start: int = 0) -> list[str]:
    return [str(uuid.UUID(int=n * 7919 + 1)) for n in range(start, start + count)]


# --- a name to an id ---------------------------------------------------------------------


async def test_the_exact_name_is_found_on_any_page_of_a_capped_search() -> None:
    names = [f"Backfill {n}" for n in range(120)]
    names[97] = "Backfill"
    send = Scripted(paged([playlist_item(1000 + n, name) for n, name in enumerate(names)], 25))

    assert await resolve_playlist(send, "Backfill") == 1097

    assert [dict(parse_qsl(r.query))["page[number]"] for r in send.sent] == [
        str(n) for n in range(5)
    ]
    assert {dict(parse_qsl(r.query))["filter[query]"] for r in send.sent} == {"Backfill"}
    assert {(r.method, r.family, r.want_payload) for r in send.sent} == {("GET", "playlists", True)}


async def test_no_exact_match_is_not_found_unless_created() -> None:
    items = [playlist_item(1, "backfill"), playlist_item(2, "Backfill 2")]

    with pytest.raises(PlaylistNotFound, match="--create-playlist"):
        await resolve_playlist(Scripted(paged(items, 100)), "Backfill")

    def respond(request: Request) -> Answer:
        if request.method == "POST":
            return answer(201, payload={"data": playlist_item(77, "Backfill")})
        return paged(items, 100)(request)

    send = Scripted(respond)
    assert await resolve_playlist(send, "Backfill", create=True, description="night") == 77
    assert send.sent[-1].body == {
        "data": {
            "type": "rum_replay_playlist",
            "attributes": {"name": "Backfill", "description": "night"},
        }
    }


async def test_two_of_the_exact_name_are_an_error_naming_both() -> None:
    items = [playlist_item(5, "Night"), playlist_item(3, "Night"), playlist_item(4, "Nights")]

    with pytest.raises(PlaylistAmbiguous, match=r"ids 3, 5"):
        await resolve_playlist(Scripted(paged(items, 2)), "Night")


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (answer(403, error="Forbidden"), r"HTTP 403\): Forbidden"),
        (answer(404, error="HTTP 404: not found"), r"failed: HTTP 404: not found$"),
        (answer(None, error="connection reset"), "no answer"),
        (answer(200, body_problem="the body is not JSON"), "not JSON"),
        (answer(200, payload=[]), 'not {"data"'),
        (answer(200, payload={"data": [{"id": 5, "type": "rum_replay_playlist"}]}), "numeric"),
        (answer(200, payload={"data": [playlist_item(1, "x")]}), "repeats page 0"),
    ],
)
async def test_a_bad_answer_is_an_error_saying_what_failed(reply: Answer, complaint: str) -> None:
    with pytest.raises(ApiCallFailed, match=complaint):
        await resolve_playlist(Scripted(lambda _: reply), "x")


async def test_a_blank_name_is_refused_before_sending() -> None:
    send = Scripted(paged([], 1))
    with pytest.raises(ValueError, match="empty"):
        await resolve_playlist(send, " ")
    assert send.sent == []


# --- a playlist's listing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "cap", "requests"),
    [
        (10, 100, 2),  # one short first page, then an empty one
        (10, 3, 4),  # every page shorter than asked; the end is the short one
        (9, 3, 4),  # a whole number of pages: an empty page ends it
        (0, 3, 1),
    ],
)
async def test_the_listing_ends_at_an_empty_page_or_one_shorter_than_the_first(
    count: int, cap: int, requests: int
) -> None:
    ids = [f"s{n}" for n in range(count)]
    send = Scripted(paged([session_item(s) for s in ids], cap))

    assert [s async for s in session_ids(send, 7, page_size=50)] == ids
    assert len(send.sent) == requests
    assert send.sent[0].path == "/api/v2/rum/replay/playlists/7/sessions"
    assert dict(parse_qsl(send.sent[0].query)) == {"page[number]": "0", "page[size]": "50"}


async def test_a_listing_that_is_not_the_documented_json_is_an_error() -> None:
    send = Scripted(lambda _: answer(200, payload={"data": [{"id": "s", "type": "rum"}]}))
    with pytest.raises(ApiCallFailed, match="rum_replay_session"):
        await collect_session_ids(send, 7)


def test_the_compact_set_holds_uuids_and_other_ids_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(playlist_sessions, "_SORT_CHUNK", 4)  # several chunks to merge
    held_uuids = uuids(11)
    held = SessionIdSet()
    for session_id in [*reversed(held_uuids), "s1", held_uuids[3], held_uuids[3].upper(), "s1"]:
        held.add(session_id)

    assert len(held) == 11 + 2, "a repeat counts once; an upper-case UUID is another id"
    assert all(session_id in held for session_id in held_uuids)
    assert "s1" in held
    assert uuids(1, start=50)[0] not in held
    assert held.mark(held_uuids[0])
    assert held.mark("s1")
    assert not held.mark("s2")
    assert sorted(held.unmarked()) == sorted([*held_uuids[1:], held_uuids[3].upper()])
    with pytest.raises(RuntimeError, match="frozen"):
        held.add("late")


def test_the_compact_set_costs_16_bytes_a_uuid() -> None:
    held = SessionIdSet()
    for session_id in uuids(5000):
        held.add(session_id)
    held.freeze()

    assert len(held._records) == 16 * 5000
    assert len(held._marks) == 625


# --- batched removal ---------------------------------------------------------------------


class RemovalServer:
    """Refuses a bulk removal of more than `most` sessions with `status` and `error`;
    refuses the sessions in `bad` with a 400 naming them."""

    def __init__(self, most: int, status: int = 400, error: str = "at most {most} per request"):
        self.most, self.status, self.error = most, status, error.format(most=most)
        self.bad: set[str] = set()
        self.removed: list[str] = []
        self.sizes: list[int] = []

    def __call__(self, request: Request) -> Answer:
        assert request.method == "DELETE"
        if isinstance(request.body, dict):
            batch = [item["id"] for item in request.body["data"]]
        else:
            batch = [request.path.rsplit("/", 1)[1]]
        self.sizes.append(len(batch))
        named = sorted(self.bad & set(batch))
        if named:
            return answer(400, error=f"invalid session ids: {', '.join(map(repr, named))}")
        if isinstance(request.body, dict) and len(batch) > self.most:
            return answer(self.status, error=self.error)
        self.removed += batch
        return answer(204)


@pytest.mark.parametrize(
    ("status", "error"), [(400, "at most {most} sessions per request"), (413, "")]
)
async def test_a_batch_refused_as_too_large_is_halved_and_the_size_kept(
    status: int, error: str
) -> None:
    server = RemovalServer(30, status, error)
    sizer = BatchSizer()
    ids = [f"s{n}" for n in range(130)]

    first = await remove_in_batches(Scripted(server), 7, ids[:100], sizer)
    second = await remove_in_batches(Scripted(server), 7, ids[100:], sizer)

    assert sizer.size == 25
    assert server.sizes == [100, 50, 25, 25, 25, 25, 25, 5]
    assert server.removed == ids
    assert all(r.removed for r in [*first, *second])
    assert [r.session_id for r in first] == ids[:100]


async def test_down_to_one_each_session_goes_by_its_own_delete() -> None:
    server = RemovalServer(1)
    sizer = BatchSizer(4)
    send = Scripted(server)

    outcomes = await remove_in_batches(send, 7, ["a/b", "c", "d"], sizer)

    assert sizer.size == 1, "a refused batch of 3 halves to 1, not to 2"
    assert [r.path for r in send.sent[1:]] == [
        "/api/v2/rum/replay/playlists/7/sessions/a%2Fb",
        "/api/v2/rum/replay/playlists/7/sessions/c",
        "/api/v2/rum/replay/playlists/7/sessions/d",
    ]
    assert [r.body for r in send.sent[1:]] == [None, None, None]
    assert [r.removed for r in outcomes] == [True, True, True]


async def test_a_400_naming_a_session_fails_that_row_alone() -> None:
    server = RemovalServer(100)
    server.bad = {"s2"}
    ids = ["s1", "s2", "s22", "s3"]

    outcomes = await remove_in_batches(Scripted(server), 7, ids, BatchSizer())

    assert {r.session_id: r.removed for r in outcomes} == {
        "s1": True,
        "s2": False,
        "s22": True,
        "s3": True,
    }
    assert server.removed == ["s1", "s22", "s3"]
    failed = next(r for r in outcomes if not r.removed)
    assert failed.answer.error == "invalid session ids: 's2'"


@pytest.mark.parametrize(
    "reply", [answer(503, error="unavailable"), answer(400, error="malformed body")]
)
async def test_any_other_refusal_fails_the_whole_batch_and_keeps_the_size(reply: Answer) -> None:
    sizer = BatchSizer(3)
    outcomes = await remove_in_batches(Scripted(lambda _: reply), 7, list("abcd"), sizer)

    assert [(r.session_id, r.removed) for r in outcomes] == [(s, False) for s in "abcd"]
    assert {r.answer for r in outcomes} == {reply}
    assert sizer.size == 3


def test_a_batch_size_below_one_is_refused() -> None:
    assert BatchSizer().size == DEFAULT_BATCH_SIZE
    with pytest.raises(ValueError, match="1 or more"):
        BatchSizer(0)


# --- over loopback, against the sandbox -------------------------------------------------


@pytest.fixture
async def loopback() -> AsyncIterator[Callable[[Sandbox], Awaitable[Send]]]:
    """The wire module's real Client (no pacer, no retries: none of these calls fail)."""
    async with AsyncExitStack() as stack:

        async def connect(sandbox: Sandbox) -> Send:
            credentials = Credentials(
                Secret(KEYS["DD-API-KEY"]), Secret(KEYS["DD-APPLICATION-KEY"])
            )
            client = Client(Route(sandbox.base_url), credentials, concurrency=4, timeout_s=30.0)
            return (await stack.enter_async_context(client)).send

        yield connect


async def put_sessions(send: Send, playlist_id: int, ids: list[str]) -> None:
    for session_id in ids:
        row = Row(playlist_id, session_id, 1, "rum", "test", 1)
        assert (await send(add_session(row))).status == 201


async def test_over_loopback_a_name_resolves_on_a_capped_server_or_is_created(
    make_sandbox: MakeSandbox, loopback: Callable[[Sandbox], Awaitable[Send]]
) -> None:
    sandbox = await make_sandbox(playlists=frozenset(), faults=FaultConfig(page_size_cap=3))
    send = await loopback(sandbox)
    made = [await resolve_playlist(send, f"Night {n}", create=True) for n in range(8)]

    assert await resolve_playlist(send, "Night 6") == made[6]
    with pytest.raises(PlaylistNotFound):
        await resolve_playlist(send, "Night")
    assert len(sandbox.store.records()) == 8
    assert sandbox.stats.calls["create_playlist"] == 8


async def test_over_loopback_a_listing_finds_what_the_server_lost(
    make_sandbox: MakeSandbox, loopback: Callable[[Sandbox], Awaitable[Send]]
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(page_size_cap=4))
    send = await loopback(sandbox)
    ids = uuids(20)
    await put_sessions(send, 7, ids)
    lost = sandbox.drop_sessions(7, every=6)

    held = await collect_session_ids(send, 7, page_size=10)

    assert lost == [ids[0], ids[6], ids[12], ids[18]]
    assert [session_id for session_id in ids if session_id not in held] == lost
    assert sandbox.stats.calls["list_sessions"] == 5  # 4, 4, 4, 4, 0


async def test_over_loopback_removal_finds_the_servers_batch_limit(
    make_sandbox: MakeSandbox, loopback: Callable[[Sandbox], Awaitable[Send]]
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(max_bulk=7))
    send = await loopback(sandbox)
    ids = [f"s{n}" for n in range(40)]
    await put_sessions(send, 7, ids)
    sizer = BatchSizer(32)

    outcomes = await remove_in_batches(send, 7, [*ids, "never-there"], sizer)

    assert sizer.size == 4
    assert all(r.removed for r in outcomes), "204 whether or not the session was there"
    assert len(sandbox.store) == 0
    assert sandbox.stats.calls["remove_sessions"] == 3 + 11  # 32, 16, 8 refused; 41 in 4s


async def test_over_loopback_a_cap_of_one_falls_back_to_single_deletes(
    make_sandbox: MakeSandbox, loopback: Callable[[Sandbox], Awaitable[Send]]
) -> None:
    sandbox = await make_sandbox(faults=FaultConfig(max_bulk=1))
    send = await loopback(sandbox)
    await put_sessions(send, 7, ["a", "b", "c"])

    outcomes = await remove_in_batches(send, 7, ["a", "b", "c"], BatchSizer(2))

    assert [r.removed for r in outcomes] == [True, True, True]
    assert len(sandbox.store) == 0
    assert (sandbox.stats.calls["remove_sessions"], sandbox.stats.calls["remove_session"]) == (1, 3)
