"""The RUM events the sandbox's search finds: a seeded population generated on demand.

Nothing is stored. Event `e` (0, 1, 2, ... in time order) happens at
`start_ms + e * interval_ms`, so a time range maps to a range of event indexes by
arithmetic, and a million sessions cost nothing until a search reads them. Sessions come
in groups of `GROUP` whose events interleave (as concurrent users' do), so a session's
events are spread over several pages of a search and a client must drop the repeats
itself. Session `i`'s attributes are a pure function of (seed, i): the same seed always
gives the same sessions, and a test can compute what any query should find.

Growing the population (`grown`) adds sessions after the last one and keeps every
existing event where it was, as the nightly `--from last` tests need. The new events
keep the spacing unless that would put them after the moment of growing: then they are
packed into the time between the last event and that moment (`later`), since Datadog
never finds a session that has not happened yet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from dataclasses import dataclass
from functools import lru_cache

GROUP = 8
"""Sessions whose events interleave; the last group may be partly empty (holes)."""
SESSION_TYPES = ("user",) * 8 + ("synthetics", "ci_test")
"""Drawn uniformly: 80% user, 10% synthetics, 10% ci_test."""
_EVENT_TYPES = ("view", "action", "resource", "error", "long_task")
_PAGES = ("/", "/cart", "/checkout", "/account", "/search", "/product/42")
_ORIGIN = "https://shop.example.com"
_MAX_SESSIONS = 10**9
_MAX_EVENTS_PER_SESSION = 1000
DEFAULT_SPAN_MS = 7 * 86_400_000
"""By default the sessions fill the 7 days before the sandbox starts: what `now-7d` finds."""


@dataclass(frozen=True, slots=True)
class PopulationConfig:
    """Which sessions exist. With `start_ms` or `interval_ms` left None, `placed` fixes
    them when the sandbox starts: the sessions then fill the `span_ms` before it."""

    sessions: int = 1000
    start_ms: int | None = None
    """The first event's timestamp; None: `span_ms` before the sandbox starts."""
    interval_ms: int | None = None
    """Between one event and the next, across all sessions; None: as many whole
    milliseconds as spread the events over `span_ms`."""
    span_ms: int = DEFAULT_SPAN_MS
    events_per_session: int = 4
    session_events: int = 1
    """How many of a session's events have `type: session` (the first ones); more than 1
    makes even the wrapped `@type:session` query find a session several times."""
    replay_share: float = 0.7
    """The share of sessions with `session.has_replay: true`."""
    active_share: float = 0.1
    """The share of sessions still active (`session.is_active: true`)."""
    seed: int = 0
    later: tuple[tuple[int, int, int], ...] = ()
    """Where growing changed the spacing: (first event index, its timestamp, interval)
    for the events from that index on, in order (`grown`)."""

    def __post_init__(self) -> None:
        if not 0 <= self.sessions <= _MAX_SESSIONS:
            raise ValueError(f"sessions must be from 0 to {_MAX_SESSIONS}, not {self.sessions}")
        if self.interval_ms is not None and self.interval_ms < 1:
            raise ValueError(f"interval_ms must be 1 or more, not {self.interval_ms}")
        if self.span_ms < 1:
            raise ValueError(f"the population's span must be 1 ms or more, not {self.span_ms}")
        if not 1 <= self.events_per_session <= _MAX_EVENTS_PER_SESSION:
            raise ValueError(
                f"events_per_session must be from 1 to {_MAX_EVENTS_PER_SESSION}, "
                f"not {self.events_per_session}"
            )
        if not 0 <= self.session_events <= self.events_per_session:
            raise ValueError("session_events must be from 0 to events_per_session")
        for name in ("replay_share", "active_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {share!r}")

    @property
    def slots(self) -> int:
        """Event indexes in use or held by the last group's holes."""
        groups = -(-self.sessions // GROUP)
        return groups * GROUP * self.events_per_session

    def placed(self, now_ms: int) -> PopulationConfig:
        """With `interval_ms` and `start_ms` fixed (the start on a whole minute, so the
        times read well); a config that has both is returned as it is."""
        interval = self.interval_ms or max(1, self.span_ms // max(1, self.slots))
        start = self.start_ms
        if start is None:
            start = (now_ms - self.slots * interval) // 60_000 * 60_000
        return dataclasses.replace(self, start_ms=start, interval_ms=interval)

    def grown(self, extra: int, now_ms: int) -> PopulationConfig:
        """`extra` more sessions, all after the existing ones (holes of the last group
        are filled first, so they may start a little before the previous end), and none
        after `now_ms` where there is room before it (1 ms apart at the closest)."""
        if extra < 0:
            raise ValueError(f"a population only grows: {extra} sessions is not a growth")
        first, start, interval = _segments(self)[-1]
        bigger = dataclasses.replace(self, sessions=self.sessions + extra)
        new = bigger.slots - self.slots
        end = start + (self.slots - first) * interval
        if new == 0 or end + new * interval <= now_ms:
            return bigger
        packed = max(1, (now_ms - end) // new)
        return dataclasses.replace(bigger, later=(*self.later, (self.slots, end, packed)))


@dataclass(frozen=True, slots=True)
class Session:
    index: int
    id: str
    has_replay: bool
    is_active: bool
    type: str
    email: str
    application_id: str
    first_page: int
    """Where the session's views start in the shop's pages (they go on from there)."""


@dataclass(frozen=True, slots=True)
class Event:
    index: int
    timestamp_ms: int
    session: Session
    attributes: dict[str, object]
    """The event as the search returns it under `attributes.attributes`."""


class Population:
    """Events and sessions of a PopulationConfig, computed when asked for."""

    def __init__(self, config: PopulationConfig) -> None:
        self.config = config
        self._segments = _segments(config)  # raises for a config not yet placed
        self._session = lru_cache(maxsize=4 * GROUP)(self._make_session)
        self._applications = tuple(_uuid(config.seed, "application", n) for n in range(3))

    @property
    def end_ms(self) -> int:
        """Just after the last event slot: every event is in [start_ms, end_ms)."""
        first, start, interval = self._segments[-1]
        return start + (self.config.slots - first) * interval

    def index_at(self, ms: int) -> int:
        """The first event index whose timestamp is at `ms` or later."""
        segments, slots = self._segments, self.config.slots
        ends = [segment[0] for segment in segments[1:]] + [slots]
        for (first, start, interval), end in zip(segments, ends, strict=True):
            offset = ms - start
            if offset <= 0:
                return first
            index = first + -(-offset // interval)
            if index < end:
                return index
        return slots

    def timestamp_ms(self, index: int) -> int:
        first, start, interval = self._segment(index)
        return start + (index - first) * interval

    def _segment(self, index: int) -> tuple[int, int, int]:
        for segment in reversed(self._segments):
            if segment[0] <= index:
                return segment
        raise IndexError(index)

    def session_of(self, event: int) -> int | None:
        """The session that event index `event` belongs to; None for a hole."""
        per_group = GROUP * self.config.events_per_session
        group, local = divmod(event, per_group)
        session = group * GROUP + local % GROUP
        return session if session < self.config.sessions else None

    def event(self, index: int) -> Event | None:
        """Event `index`, or None where the last group has a hole."""
        session_index = self.session_of(index)
        if session_index is None:
            return None
        config = self.config
        ordinal = (index % (GROUP * config.events_per_session)) // GROUP
        session = self._session(session_index)
        event_type = (
            "session"
            if ordinal < config.session_events
            else _EVENT_TYPES[(ordinal - config.session_events) % len(_EVENT_TYPES)]
        )
        page = _PAGES[(session.first_page + ordinal) % len(_PAGES)]
        timestamp_ms = self.timestamp_ms(index)
        attributes: dict[str, object] = {
            "type": event_type,
            "date": timestamp_ms,
            "application": {"id": session.application_id},
            "session": {
                "id": session.id,
                "type": session.type,
                "has_replay": session.has_replay,
                "is_active": session.is_active,
            },
            "usr": {"email": session.email},
            "view": {"url": f"{_ORIGIN}{page}"},
        }
        return Event(index, timestamp_ms, session, attributes)

    def session(self, index: int) -> Session:
        if not 0 <= index < self.config.sessions:
            raise IndexError(f"session {index} is not in a population of {self.config.sessions}")
        return self._session(index)

    def _make_session(self, index: int) -> Session:
        seed = self.config.seed
        return Session(
            index=index,
            id=_uuid(seed, "session", index),
            has_replay=_share(seed, "replay", index) < self.config.replay_share,
            is_active=_share(seed, "active", index) < self.config.active_share,
            type=SESSION_TYPES[_draw(seed, "type", index) % len(SESSION_TYPES)],
            email=f"user{_draw(seed, 'user', index) % 5000}@example.com",
            application_id=self._applications[_draw(seed, "app", index) % 3],
            first_page=_draw(seed, "page", index) % len(_PAGES),
        )


def _segments(config: PopulationConfig) -> tuple[tuple[int, int, int], ...]:
    """(first event index, its timestamp, interval) of each stretch of even spacing."""
    if config.start_ms is None or config.interval_ms is None:
        raise ValueError("place the population in time first: config.placed(now_ms)")
    return ((0, config.start_ms, config.interval_ms), *config.later)


def _draw(seed: int, purpose: str, *numbers: int) -> int:
    """A 64-bit number that depends only on its arguments (not on Python's hash seed)."""
    text = ":".join((str(seed), purpose, *map(str, numbers))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _share(seed: int, purpose: str, index: int) -> float:
    return _draw(seed, purpose, index) / 2**64


def _uuid(seed: int, purpose: str, index: int) -> str:
    digest = hashlib.blake2b(f"{seed}:{purpose}:{index}".encode(), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))
