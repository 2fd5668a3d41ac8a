"""Where the journal lives when no `--journal` is given."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from worker.shard import Shard

APP_NAME = "rum-playlist-ingest"
JOURNAL_ENV = "RUM_PLAYLIST_INGEST_JOURNAL"
JOURNAL_FILE = "journal.sqlite3"


def default_journal_path(
    shard: Shard | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The same path on every run of the same command, so a cron job resumes itself.

    `$RUM_PLAYLIST_INGEST_JOURNAL`, else `$XDG_STATE_HOME/rum-playlist-ingest/`, else
    `~/.local/state/rum-playlist-ingest/`. A relative `XDG_STATE_HOME` is ignored, as the
    XDG specification says: it would put the journal wherever the command happens to
    start. Each shard gets its own file beside it, so shards running side by side never
    wait on or refuse each other.
    """
    env = os.environ if environ is None else environ
    if env.get(JOURNAL_ENV):
        base = Path(env[JOURNAL_ENV]).expanduser()
    else:
        state = env.get("XDG_STATE_HOME", "")
        if not os.path.isabs(state):
            state = str(Path("~/.local/state").expanduser())
        base = Path(state) / APP_NAME / JOURNAL_FILE
    if shard is None:
        return base
    return base.with_name(f"{base.stem}.shard-{shard.index}-of-{shard.count}{base.suffix}")
