"""The failures a real API and the network between put in a client's way, on demand.

Each PUT (or, with `shares_apply_to="all"`, each API request) draws once from a seeded
generator and falls into at most one fault band, so the shares are exact shares, faults
never stack, and a given seed and arrival order always give the same sequence: a failing
test can be replayed. Hangs, drops before adding, bare 429s and redirects stand for
failures in front of the API (network, proxy), so they spend no rate-limit budget; the
other faults happen inside it and carry the headers. The hostile-server faults (echoed
keys, huge and compressed bodies) change what an answer carries, not whether it comes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from worker.sandbox.ratelimit import Verdict

ERROR_STATUSES = (500, 502, 503, 504)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
SHARE_SCOPES = ("put", "all")
"""Which requests draw a share fault: PUTs only, or every API request."""


class Fault(enum.Enum):
    NONE = "none"
    HANG = "hang"
    """Accept the request and never answer (until the server stops)."""
    DROP_BEFORE = "drop_before"
    """Close the connection without answering; the session is not added."""
    BARE_429 = "bare_429"
    """A 429 with no rate-limit headers and a plain-text body, as a proxy in front of the
    API would send (with `Retry-After` when `FaultConfig.retry_after_s` is set)."""
    ERROR_BEFORE = "error_before"
    """A 5xx; the session is not added."""
    DROP_AFTER = "drop_after"
    """Apply the request, then close the connection without answering."""
    ERROR_AFTER = "error_after"
    """Apply the request, then answer 5xx: the client cannot tell it worked."""
    NON_JSON = "non_json"
    """Apply the request, then answer 2xx with a body that is not JSON."""


_SHARES = (
    Fault.HANG,
    Fault.DROP_BEFORE,
    Fault.BARE_429,
    Fault.ERROR_BEFORE,
    Fault.DROP_AFTER,
    Fault.ERROR_AFTER,
    Fault.NON_JSON,
)
"""The share-valued fields of FaultConfig, named like the Fault they trigger."""


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """What to break. Shares are fractions of PUT requests (0 to 1, summing to at most 1),
    or of every API request with `shares_apply_to="all"`; latency, revocation and the
    hostile-server faults apply to every API request."""

    error_before: float = 0.0
    error_after: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    hang: float = 0.0
    non_json: float = 0.0
    bare_429: float = 0.0
    retry_after_s: int | None = None
    """Whole seconds a bare 429 asks the client to wait (`Retry-After`); None: no header."""
    latency_ms: tuple[float, float] = (0.0, 0.0)
    """Added before answering, drawn uniformly from [min, max]."""
    ratelimit_headers: bool = True
    """False is "proxy mode": no response carries X-RateLimit-* headers."""
    reset_skew_s: float = 0.0
    """Report X-RateLimit-Reset as any whole second within this many seconds of the true
    boundary (0 allowed), like a server whose clock or rounding is off; 0: rounded up."""
    revoke_keys_after: int | None = None
    """Serve this many API requests, then answer 403 to every later one."""
    seed: int = 0
    shares_apply_to: str = "put"
    """"put": the shares are of PUTs; "all": of every API request (a list, a removal...)."""
    max_bulk: int | None = None
    """A bulk removal of more sessions is refused: 400 "at most N sessions per request"."""
    page_size_cap: int | None = None
    """Listings give at most this many items per page, whatever `page[size]` asks."""
    redirect_to: str | None = None
    """Every API request is answered `redirect_status` with this `Location`."""
    redirect_status: int = 307
    echo_keys: bool = False
    """Every JSON error body also holds the request's keys, as sent, upper case, lower
    case, JSON-escaped and percent-encoded: a misconfigured proxy's echo."""
    huge_body_bytes: int = 0
    """Every API answer with a body is padded to at least this many bytes (leading
    whitespace, so it stays valid JSON), streamed: a server that floods the client."""
    gzip_bomb_bytes: int = 0
    """Every API answer with a body is sent gzip-encoded, decompressing to at least this
    many bytes (leading whitespace again): small on the wire, huge once read."""

    def __post_init__(self) -> None:
        total = 0.0
        for fault in _SHARES:
            share = getattr(self, fault.value)
            if not _is_number(share) or not 0.0 <= share <= 1.0:
                raise ValueError(
                    f"fault share {fault.value} must be between 0 and 1, not {share!r}"
                )
            total += share
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fault shares add up to {total:g}, more than every request: lower some of them"
            )
        low, high = self.latency_ms
        if not (_is_number(low) and _is_number(high) and 0 <= low <= high):
            raise ValueError(
                f"latency_ms must be (min, max) with 0 <= min <= max, not {self.latency_ms!r}"
            )
        if not (_is_number(self.reset_skew_s) and 0 <= self.reset_skew_s < math.inf):
            raise ValueError(f"reset_skew_s must be 0 or more seconds, not {self.reset_skew_s!r}")
        if self.revoke_keys_after is not None and (
            not _is_number(self.revoke_keys_after)
            or not isinstance(self.revoke_keys_after, int)
            or self.revoke_keys_after < 0
        ):
            raise ValueError(
                f"revoke_keys_after must be a count of requests (0 or more), "
                f"not {self.revoke_keys_after!r}"
            )
        if self.retry_after_s is not None and (
            not isinstance(self.retry_after_s, int)
            or isinstance(self.retry_after_s, bool)
            or self.retry_after_s < 0
        ):
            raise ValueError(
                f"retry_after_s must be whole seconds (0 or more), not {self.retry_after_s!r}"
            )
        if not isinstance(self.ratelimit_headers, bool) or not isinstance(self.seed, int):
            raise ValueError("ratelimit_headers must be true or false, and seed an integer")
        if self.shares_apply_to not in SHARE_SCOPES:
            raise ValueError(
                f"shares_apply_to must be one of {SHARE_SCOPES}, not {self.shares_apply_to!r}"
            )
        for name in ("max_bulk", "page_size_cap"):
            value = getattr(self, name)
            if value is not None and not (_is_count(value) and value >= 1):
                raise ValueError(f"{name} must be a whole number, 1 or more, not {value!r}")
        for name in ("huge_body_bytes", "gzip_bomb_bytes"):
            value = getattr(self, name)
            if not (_is_count(value) and 0 <= value <= _MAX_BODY_BYTES):
                raise ValueError(
                    f"{name} must be a whole number of bytes from 0 to {_MAX_BODY_BYTES}, "
                    f"not {value!r}"
                )
        if self.redirect_status not in REDIRECT_STATUSES:
            raise ValueError(
                f"redirect_status must be one of {REDIRECT_STATUSES}, not {self.redirect_status!r}"
            )
        if self.redirect_to is not None and not (
            isinstance(self.redirect_to, str)
            and self.redirect_to
            and not any(c in self.redirect_to for c in "\r\n")
        ):
            raise ValueError(f"redirect_to must be a URL on one line, not {self.redirect_to!r}")
        if not isinstance(self.echo_keys, bool):
            raise ValueError(f"echo_keys must be true or false, not {self.echo_keys!r}")

    def updated(self, changes: Mapping[str, object]) -> FaultConfig:
        """This config with some fields changed, from JSON-like values (`latency_ms` may be
        a number, `[min, max]` or `"min-max"`)."""
        names = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known: {sorted(names)}")
        values = dict(changes)
        if "latency_ms" in values:
            values["latency_ms"] = parse_latency_ms(values["latency_ms"])
        return dataclasses.replace(self, **values)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "latency_ms": list(self.latency_ms)}


def parse_latency_ms(value: object) -> tuple[float, float]:
    """`5` or `"5"` -> (5, 5); `"5-50"` or `[5, 50]` -> (5, 50)."""
    try:
        if isinstance(value, str):
            low, _, high = value.partition("-")
            bounds = (float(low), float(high or low))
        elif isinstance(value, list | tuple) and len(value) == 2:
            bounds = (float(value[0]), float(value[1]))
        elif _is_number(value):
            bounds = (float(value), float(value))  # type: ignore[arg-type]
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"latency {value!r} is not MS or MIN-MAX milliseconds: write e.g. 5 or 5-50"
        ) from None
    if not (math.isfinite(bounds[1]) and 0 <= bounds[0] <= bounds[1]):
        raise ValueError(f"latency {value!r} must be 0 or more, with MIN <= MAX")
    return bounds


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_MAX_BODY_BYTES = 8 * 2**30
"""8 GiB: more than any client under test should ever read."""


class FaultPlan:
    """The live state of a FaultConfig: its random stream and its revocation count."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        bands: list[tuple[float, Fault]] = []
        edge = 0.0
        for fault in _SHARES:
            share = getattr(config, fault.value)
            if share:
                edge += share
                bands.append((edge, fault))
        self._bands = tuple(bands)
        low, high = config.latency_ms
        self._latency = (low / 1000, high / 1000)
        self._requests = 0
        self._skew_rng = random.Random(f"reset-skew/{config.seed}")  # keeps the PUT draws

    def draw(self, is_put: bool) -> Fault:
        """The fault for the next request: one draw per request in scope (PUTs, or every
        request with `shares_apply_to="all"`), none when no share is set."""
        if not self._bands or not (is_put or self.config.shares_apply_to == "all"):
            return Fault.NONE
        point = self._rng.random()
        for edge, fault in self._bands:
            if point < edge:
                return fault
        return Fault.NONE

    def error_status(self) -> int:
        return self._rng.choice(ERROR_STATUSES)

    def latency(self) -> float:
        """Seconds to wait before answering."""
        low, high = self._latency
        return low if low == high else self._rng.uniform(low, high)

    def skew(self, verdict: Verdict) -> Verdict:
        """The verdict with its Reset moved by up to `reset_skew_s`, never below 0 (kept
        rounded up when no whole second lies that close to the boundary)."""
        skew = self.config.reset_skew_s
        if not skew:
            return verdict
        low = max(0, math.ceil(verdict.left - skew))
        high = max(low, math.floor(verdict.left + skew))
        return dataclasses.replace(verdict, reset=self._skew_rng.randint(low, high))

    def revoked(self) -> bool:
        """Counts one API request; True once the keys' allowance is spent."""
        limit = self.config.revoke_keys_after
        if limit is None:
            return False
        self._requests += 1
        return self._requests > limit
