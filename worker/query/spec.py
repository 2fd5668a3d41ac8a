"""The query a run actually sends, and the key that names it in the journal.

Datadog only lets a playlist take completed sessions with a replay, so unless
`any_session` is set the user's query is wrapped as
`(QUERY) @type:session @session.has_replay:true @session.is_active:false`: the
parentheses keep an `OR` in the user's query from escaping the conditions, and
`@type:session` asks for the one session-level event per session instead of every view,
action and resource.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

PLAYABLE = "@type:session @session.has_replay:true @session.is_active:false"
"""What a session needs before a playlist takes it."""


class QueryError(ValueError):
    """A `--query` that cannot be run; the message says what to give instead."""


@dataclass(frozen=True, slots=True)
class QuerySpec:
    """What to search and where the sessions go: the identity of a query run."""

    query: str
    """The user's query, as given (surrounding space removed)."""
    playlist_id: int
    target: str
    """Where the search is sent (the API's base URL, or the site): the same query
    against another organisation is another run."""
    any_session: bool = False

    def __post_init__(self) -> None:
        if not self.query.strip():
            raise QueryError(
                "the query is empty: give a RUM search query, e.g. "
                "--query '@application.id:<id>' or --query '*' for every session"
            )
        object.__setattr__(self, "query", self.query.strip())

    @property
    def effective_query(self) -> str:
        """The text sent as `filter.query`."""
        if self.any_session:
            return self.query
        return f"({self.query}) {PLAYABLE}"

    @property
    def key(self) -> str:
        """Stable across runs and releases (a digest of the effective query, the playlist
        and the target), so a rerun or a nightly `--from last` finds its checkpoints; the
        time range is left out on purpose, since each night's range differs."""
        identity = json.dumps(
            [self.effective_query, self.playlist_id, self.target], separators=(",", ":")
        )
        return "query:" + hashlib.sha256(identity.encode()).hexdigest()[:32]
