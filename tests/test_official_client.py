"""Datadog's own Python client calls every playlists endpoint of the sandbox and reads
each answer with its own models: the sandbox's shapes are the ones Datadog documents,
not ones this project made up. (The sync client runs in a thread: the sandbox serves
on this test's event loop.)"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, NotFoundException
from datadog_api_client.v2.api.rum_replay_playlists_api import RumReplayPlaylistsApi
from datadog_api_client.v2.model.playlist import Playlist
from datadog_api_client.v2.model.playlist_data import PlaylistData
from datadog_api_client.v2.model.playlist_data_attributes import PlaylistDataAttributes
from datadog_api_client.v2.model.playlist_data_type import PlaylistDataType
from datadog_api_client.v2.model.session_id_array import SessionIdArray
from datadog_api_client.v2.model.session_id_data import SessionIdData
from datadog_api_client.v2.model.viewership_history_session_data_type import (
    ViewershipHistorySessionDataType,
)
from support import MakeSandbox

API_KEY, APP_KEY = "official-api-key", "official-app-key"
SESSIONS = [f"00000000-0000-0000-0000-00000000000{n}" for n in range(1, 6)]


def configuration(base_url: str) -> Configuration:
    config = Configuration(host=base_url, enable_retry=False)
    config.api_key["apiKeyAuth"] = API_KEY
    config.api_key["appKeyAuth"] = APP_KEY
    return config


def playlist(name: str, description: str) -> Playlist:
    attributes = PlaylistDataAttributes(name=name, description=description)
    return Playlist(
        data=PlaylistData(type=PlaylistDataType.RUM_REPLAY_PLAYLIST, attributes=attributes)
    )


def every_endpoint(base_url: str) -> dict[str, object]:
    """Each call's answer, read by the client's own models (which raise on a mismatch)."""
    seen: dict[str, object] = {}
    with ApiClient(configuration(base_url)) as client:
        api = RumReplayPlaylistsApi(client)
        created = api.create_rum_replay_playlist(body=playlist("Backfill", "night of 1 Dec"))
        playlist_id = int(created.data.id)
        attributes = created.data.attributes
        seen["created"] = (attributes.name, type(attributes.created_at), attributes.session_count)
        added = [
            api.add_rum_replay_session_to_playlist(
                ts=1_704_067_200_000 + n, playlist_id=playlist_id, session_id=sid
            )
            for n, sid in enumerate(SESSIONS)
        ]
        again = api.add_rum_replay_session_to_playlist(
            ts=1, playlist_id=playlist_id, session_id=SESSIONS[0], data_source="rum"
        )
        seen["added"] = [item.data.id for item in added]
        seen["again"] = (again.data.id, again.data.attributes.session_event["timestamp"])
        seen["pages"] = [
            [
                item.id
                for item in api.list_rum_replay_playlist_sessions(
                    playlist_id, page_number=n, page_size=2
                ).data
            ]
            for n in range(4)
        ]
        seen["track"] = api.list_rum_replay_playlist_sessions(playlist_id).data[0].attributes.track
        listed = api.list_rum_replay_playlists(filter_query="backfill", page_number=0, page_size=10)
        seen["listed"] = [(item.id, item.attributes.session_count) for item in listed.data]
        got = api.get_rum_replay_playlist(playlist_id)
        seen["got"] = (got.data.attributes.name, got.data.attributes.created_by.uuid)
        updated = api.update_rum_replay_playlist(
            playlist_id, body=playlist("Backfill (done)", "checked")
        )
        seen["updated"] = (updated.data.attributes.name, updated.data.attributes.description)
        seen["removed_one"] = api.remove_rum_replay_session_from_playlist(playlist_id, SESSIONS[0])
        bulk = SessionIdArray(
            data=[
                SessionIdData(id=sid, type=ViewershipHistorySessionDataType("rum_replay_session"))
                for sid in SESSIONS[1:3]
            ]
        )
        seen["removed_many"] = api.bulk_remove_rum_replay_playlist_sessions(playlist_id, body=bulk)
        seen["left"] = [item.id for item in api.list_rum_replay_playlist_sessions(playlist_id).data]
        seen["deleted"] = api.delete_rum_replay_playlist(playlist_id)
        with pytest.raises(NotFoundException) as gone:
            api.get_rum_replay_playlist(playlist_id)
        seen["gone"] = (gone.value.status, gone.value.body)
        seen["id"] = playlist_id
    return seen


async def test_the_official_client_reads_every_playlists_answer(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(api_key=API_KEY, app_key=APP_KEY, playlists=frozenset())

    seen = await asyncio.to_thread(every_endpoint, sandbox.base_url)

    playlist_id = seen["id"]
    assert seen["created"] == ("Backfill", datetime, 0)
    assert seen["added"] == SESSIONS
    assert seen["again"] == (SESSIONS[0], 1_704_067_200_000), "a repeat shows what is held"
    assert seen["pages"] == [SESSIONS[0:2], SESSIONS[2:4], SESSIONS[4:], []]
    assert seen["track"] == "rum"
    assert seen["listed"] == [(str(playlist_id), 5)]
    assert seen["got"] == ("Backfill", "00000000-0000-0000-0000-00000000cafe")
    assert seen["updated"] == ("Backfill (done)", "checked")
    assert seen["removed_one"] is seen["removed_many"] is seen["deleted"] is None
    assert seen["left"] == SESSIONS[3:]
    assert seen["gone"] == (404, {"errors": [f"playlist {playlist_id} not found"]})
    assert len(sandbox.store) == 0
    assert (sandbox.stats.responses[201], sandbox.stats.responses[204]) == (6, 3)


def rate_limited(base_url: str) -> ApiException:
    with ApiClient(configuration(base_url)) as client:
        api = RumReplayPlaylistsApi(client)
        api.list_rum_replay_playlists()
        with pytest.raises(ApiException) as refused:
            api.list_rum_replay_playlists()
        return refused.value


async def test_the_official_client_sees_the_documented_429(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(playlists_rate_limit=(1, 3600))

    refused = await asyncio.to_thread(rate_limited, sandbox.base_url)

    assert refused.status == 429
    assert refused.body == {"errors": ["Too many requests"]}
    assert refused.headers["X-RateLimit-Name"] == "rum_replay_playlists_crud"
