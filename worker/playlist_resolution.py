"""`--playlist-name` resolved before a run starts, over its own short-lived client."""

from __future__ import annotations

from worker import aio
from worker.calls import paced_calls
from worker.config import ConfigError
from worker.paging import ApiCallFailed
from worker.playlists import PlaylistAmbiguous, PlaylistNotFound, resolve_playlist
from worker.settings import Target


def resolve_name(target: Target, name: str, *, create: bool) -> int:
    """The id of the one playlist named exactly `name` (created with `create` when none
    is). Raises `ConfigError` for none, two or more, or a search that failed."""
    if target.route is None or target.credentials is None:
        raise ConfigError("--playlist-name needs a target and keys (it must search)")
    route, credentials = target.route, target.credentials

    async def resolve() -> int:
        async with paced_calls(route, credentials, tls=target.tls) as send:
            return await resolve_playlist(send, name, create=create)

    try:
        return aio.run(resolve())
    except (PlaylistNotFound, PlaylistAmbiguous) as exc:
        raise ConfigError(f"--playlist-name: {exc}") from None
    except ApiCallFailed as exc:
        raise ConfigError(f"--playlist-name {name!r}: {exc}") from None
