"""Running one `playlists` action: its calls, its output, its exit status."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from worker import aio
from worker.answers import Meaning
from worker.calls import paced_calls
from worker.exits import EXIT_ABORTED, EXIT_CANNOT_START, EXIT_OK, EXIT_ROWS_FAILED
from worker.paging import ApiCallFailed, Send
from worker.playlist_views import PlaylistView, created, listed, shown, write_ndjson, write_table
from worker.settings import Target


def playlists_command(args: argparse.Namespace, target: Target, out: TextIO, *, table: bool) -> int:
    """0 done; 1 the API refused or failed; 2 a bad argument; 3 the keys refused."""
    route, credentials = target.route, target.credentials
    assert route is not None
    assert credentials is not None

    async def act() -> list[PlaylistView]:
        async with paced_calls(route, credentials, tls=target.tls) as send:
            return await _action(args, send)

    try:
        views = aio.run(act())
    except ValueError as exc:
        print(f"rum-playlist-ingest: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except ApiCallFailed as exc:
        print(f"rum-playlist-ingest: error: {exc}", file=sys.stderr)
        refused = exc.answer is not None and exc.answer.meaning is Meaning.KEYS_REFUSED
        return EXIT_ABORTED if refused else EXIT_ROWS_FAILED
    (write_table if table else write_ndjson)(views, out)
    return EXIT_OK


async def _action(args: argparse.Namespace, send: Send) -> list[PlaylistView]:
    if args.action == "show":
        return [await shown(send, args.playlist_id)]
    if args.action == "create":
        return [await created(send, args.name, args.description)]
    return [view async for view in listed(send, args.name)]
