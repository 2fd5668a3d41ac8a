"""rum-playlist-ingest: add Datadog RUM session replays to playlists in bulk."""

__version__ = "0.1.0"
