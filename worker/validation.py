"""The field rules: what makes a (playlist_id, session_id, ts, data_source) row sendable.

Every value is checked here, before any request, so that the API only ever sees values it
can accept and a person sees one actionable message per bad row instead of a 400. Values
arrive as CSV strings or as JSON values (str, int, Decimal, bool, None, list, dict). Each
rule has a fast path for clean input and falls back to exact parsing (Decimal, Fraction,
ISO-8601) only when needed. The rules themselves, with examples, are in docs/input.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from worker.records import new_record
from worker.rows import DATA_SOURCES, Row

MAX_PLAYLIST_ID = 2**63 - 1
MAX_SESSION_ID_CHARS = 256
MIN_TS_MS = 1_000_000_000_000
FUTURE_TOLERANCE_MS = 86_400_000
TS_UNITS = ("ms", "s")

_MAX_NUMBER_CHARS = 64
_MAX_EXPONENT = 9999
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_SHOWN_CHARS = 40
_PLAYLIST_HINT = "give the playlist's numeric id, e.g. 1234567"


class FieldError(ValueError):
    """A value breaks a field rule; the message names the value and what to do about it."""


def json_text(value: list[object] | dict[str, object]) -> str:
    """A JSON array or object as JSON (not as Python writes it); nesting too deep to write
    (orjson reads 1024 levels, more than the recursion limit allows) is shown as `[…]`."""
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except RecursionError:
        return "[…]" if isinstance(value, list) else "{…}"


def show(value: object) -> str:
    """A value as a message quotes it: shortened, with invisible characters made visible."""
    if isinstance(value, list | dict):
        value = json_text(value)
        return value if len(value) <= _SHOWN_CHARS else value[: _SHOWN_CHARS - 1] + "…"
    if isinstance(value, str):
        if len(value) > _SHOWN_CHARS:
            return repr(value[: _SHOWN_CHARS - 1] + "…")
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _number(field: str, value: object, hint: str) -> Fraction:
    """An exact rational from a JSON number or a numeric string; never goes through float."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise FieldError(f"{field} {show(value)} is not a number: {hint}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
            raise FieldError(f"{field} {show(value)} is not a number: {hint}")
        try:
            exact = Decimal(text)
        except InvalidOperation:  # an exponent beyond Decimal's own range
            raise FieldError(f"{field} {show(value)} is out of range: {hint}") from None
    else:
        exact = Decimal(value)
    if not exact.is_finite() or abs(exact.adjusted()) > _MAX_EXPONENT:
        raise FieldError(f"{field} {show(value)} is out of range: {hint}")
    return Fraction(exact)


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_playlist_id(value: object) -> int:
    """A playlist id: a positive signed-64-bit integer (what the API's integer path takes)."""
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        if 0 < number <= MAX_PLAYLIST_ID:
            return number
    elif type(value) is int and 0 < value <= MAX_PLAYLIST_ID:
        return value
    if _is_blank(value):
        raise FieldError(
            f"playlist_id is missing: {_PLAYLIST_HINT}, or run with --playlist ID for rows "
            "that name none"
        )
    exact = _number("playlist_id", value, _PLAYLIST_HINT)
    if exact.denominator != 1:
        raise FieldError(f"playlist_id {show(value)} is not a whole number: {_PLAYLIST_HINT}")
    if not 0 < exact <= MAX_PLAYLIST_ID:
        raise FieldError(
            f"playlist_id {show(value)} is out of range: it must be from 1 to {MAX_PLAYLIST_ID}"
        )
    return exact.numerator


def parse_session_id(value: object) -> str:
    """A session id as the API will see it: stripped, printable, bounded, case kept."""
    if (
        type(value) is str
        and 0 < len(value) <= MAX_SESSION_ID_CHARS
        and value.isprintable()
        and value[0] != " " != value[-1]
        and value.strip(".")
    ):
        return value
    if value is None:
        raise FieldError("session_id is missing: give the replay's session id")
    if isinstance(value, list | dict):
        kind = "an array" if isinstance(value, list) else "an object"
        raise FieldError(
            f"session_id {show(value)} is {kind}, not a string: give the session id itself "
            "as a JSON string"
        )
    if not isinstance(value, str):
        raise FieldError(f"session_id {show(value)} is not a string: quote it in the JSON")
    text = value.strip()
    if not text:
        raise FieldError("session_id is empty: give the replay's session id")
    if len(text) > MAX_SESSION_ID_CHARS:
        raise FieldError(
            f"session_id {show(text)} is {len(text)} characters long, more than the "
            f"{MAX_SESSION_ID_CHARS} allowed: check that the column holds session ids"
        )
    for position, char in enumerate(text, 1):
        if not char.isprintable():
            raise FieldError(
                f"session_id {show(text)} contains U+{ord(char):04X} at character {position}: "
                "remove control and invisible characters"
            )
    if text in (".", ".."):
        raise FieldError(
            f"session_id {show(text)} is a path dot-segment, not a session id: check the column"
        )
    return text


def parse_data_source(value: object, default: str) -> str:
    """`rum` or `product_analytics`; blank means the run's default."""
    if type(value) is str and (value in DATA_SOURCES or not value):
        return value or default  # a value as sent, or the blank of an absent column
    if _is_blank(value):
        return default
    if isinstance(value, str) and (folded := value.strip().lower()) in DATA_SOURCES:
        return folded
    raise FieldError(
        f"data_source {show(value)} is not one of {', '.join(DATA_SOURCES)}: "
        f"fix it, or leave it empty for the default ({default})"
    )


def _iso_ms(text: str, hint: str) -> int:
    try:
        # RFC 3339 allows a lowercase z, which fromisoformat refuses (a lowercase t it takes)
        zulu = text.endswith("z") and text[-2:-1].isdigit()
        moment = datetime.fromisoformat(text[:-1] + "Z" if zulu else text)
    except ValueError:
        raise FieldError(f"ts {show(text)} is not a number nor a date-time: {hint}") from None
    if moment.tzinfo is None:
        raise FieldError(
            f"ts {show(text)} has no time zone: add one, e.g. {moment.isoformat()}Z "
            "for UTC or +02:00 for an offset"
        )
    return (moment - _EPOCH) // _ONE_MS


def _as_date(ms: int) -> str:
    """ms as a UTC date-time in parentheses, for messages; empty when not representable."""
    try:
        return f" ({(_EPOCH + ms * _ONE_MS):%Y-%m-%dT%H:%M:%SZ})"
    except OverflowError:
        return ""


@dataclass(frozen=True, slots=True)
class _OnePlaylist:
    """`--playlist`: a row that names no playlist, or this one, goes to this one; a row
    that names another is refused rather than silently moved."""

    playlist_id: int

    def __call__(self, value: object) -> int:
        if _is_blank(value):
            return self.playlist_id
        named = parse_playlist_id(value)
        if named != self.playlist_id:
            raise FieldError(
                f"playlist_id {show(value)} is another playlist than --playlist "
                f"{self.playlist_id}: remove the row, or leave its playlist_id empty to send "
                "it there, or run without --playlist to send each row to its own playlist"
            )
        return named


_PLAYLISTS_KEPT = 1024
"""Playlist ids `Validator` remembers at most (an input of many more only ever misses)."""


class Validator:
    """Turns raw field values into a `Row`, or says precisely why it cannot.

    Holds the run's options and a cached upper bound for `ts`: the bound only grows with
    the clock, so a value under the cached bound is under the true one and the clock is
    read again only for values above it.
    """

    __slots__ = (
        "_default_source",
        "_max_ts",
        "_now_ms",
        "_playlist_id",
        "_playlists",
        "_scale",
        "_ts_required",
    )

    def __init__(
        self,
        default_data_source: str,
        ts_unit: str,
        now_ms: Callable[[], int],
        *,
        default_playlist: int | None = None,
        ts_required: bool = True,
    ) -> None:
        if ts_unit not in TS_UNITS:
            raise ValueError(f"the ts unit {ts_unit!r} is not one of {', '.join(TS_UNITS)}")
        if default_data_source.lower() not in DATA_SOURCES:
            raise ValueError(
                f"the default data source {default_data_source!r} is not one of "
                f"{', '.join(DATA_SOURCES)}"
            )
        self._default_source = default_data_source.lower()
        self._playlist_id: Callable[[object], int] = parse_playlist_id
        self._playlists: dict[str, int] = {}  # see `_playlist`
        if default_playlist is not None:
            try:
                self._playlist_id = _OnePlaylist(parse_playlist_id(default_playlist))
            except FieldError as error:
                raise ValueError(f"--playlist {default_playlist}: {error}") from None
        self._ts_required = ts_required
        self._scale = 1000 if ts_unit == "s" else 1
        self._now_ms = now_ms
        self._max_ts = now_ms() + FUTURE_TOLERANCE_MS

    def row(
        self,
        playlist_id: object,
        session_id: object,
        ts: object,
        data_source: object,
        *,
        source: str,
        line: int,
    ) -> Row:
        """The valid row; raises `FieldError` naming every bad field, joined by "; "."""
        try:
            playlist = self._playlists.get(playlist_id) if type(playlist_id) is str else None
            return new_record(
                Row,
                (
                    self._playlist(playlist_id) if playlist is None else playlist,
                    parse_session_id(session_id),
                    self.ts(ts),
                    parse_data_source(data_source, self._default_source),
                    source,
                    line,
                ),
            )
        except FieldError:
            checks: tuple[tuple[Callable[[object], object], object], ...] = (
                (self._playlist_id, playlist_id),
                (parse_session_id, session_id),
                (self.ts, ts),
                (lambda value: parse_data_source(value, self._default_source), data_source),
            )
            problems = []
            for check, value in checks:
                try:
                    check(value)
                except FieldError as error:
                    problems.append(str(error))
            raise FieldError("; ".join(problems)) from None

    def _playlist(self, value: object) -> int:
        """The playlist id, remembered by its text: an input names a handful of playlists
        over millions of rows, and parsing one cost a row a fifth of its validation.
        Only what parsed is remembered, so a bad value is refused every time."""
        number = self._playlist_id(value)
        if type(value) is str:
            if len(self._playlists) >= _PLAYLISTS_KEPT:
                self._playlists.clear()
            self._playlists[value] = number
        return number

    def fields_row(self, fields: Mapping[str, object], *, source: str, line: int) -> Row:
        """`row` from values keyed by the canonical column names; absent means missing."""
        return self.row(
            fields.get("playlist_id"),
            fields.get("session_id"),
            fields.get("ts"),
            fields.get("data_source"),
            source=source,
            line=line,
        )

    def ts(self, value: object) -> int | None:
        """Milliseconds within the plausible window, from a number or an ISO date-time;
        None for a blank value when ts is not required."""
        if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 19:
            ms = int(value) * self._scale
            if MIN_TS_MS <= ms <= self._max_ts:
                return ms
        elif type(value) is int and MIN_TS_MS <= value * self._scale <= self._max_ts:
            return value * self._scale
        return self._ts_slow(value)

    @property
    def _hint(self) -> str:
        unit = "seconds (--ts-unit s)" if self._scale != 1 else "milliseconds"
        return f"ts must be {unit} since 1970-01-01 UTC, or an ISO-8601 date-time with a zone"

    def _ts_slow(self, value: object) -> int | None:
        if _is_blank(value):
            if not self._ts_required:
                return None
            raise FieldError(f"ts is missing: {self._hint}")
        if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
            ms = _iso_ms(value.strip(), self._hint)
            if ms < MIN_TS_MS:
                raise FieldError(
                    f"ts {show(value)} is before 2001-09-09, too early for a session replay: "
                    "check the date"
                )
            self._check_future(value, ms)
            return ms
        exact = _number("ts", value, self._hint) * self._scale
        if exact.denominator != 1 and self._scale == 1:
            raise FieldError(
                f"ts {show(value)} is not a whole number of milliseconds: {self._hint}"
            )
        ms = exact.numerator // exact.denominator
        if ms < 0:
            raise FieldError(f"ts {show(value)} is negative: {self._hint}")
        if ms < MIN_TS_MS:
            if self._scale == 1 and MIN_TS_MS <= ms * 1000 <= self._bound():
                raise FieldError(
                    f"ts {show(value)} looks like seconds{_as_date(ms * 1000)}, not milliseconds: "
                    "pass --ts-unit s, or multiply by 1000"
                )
            raise FieldError(f"ts {show(value)} is before 2001-09-09: {self._hint}")
        self._check_future(value, ms)
        return ms

    def _bound(self) -> int:
        self._max_ts = max(self._max_ts, self._now_ms() + FUTURE_TOLERANCE_MS)
        return self._max_ts

    def _check_future(self, value: object, ms: int) -> None:
        if ms <= self._max_ts or ms <= self._bound():
            return
        if self._scale != 1 and MIN_TS_MS <= ms // 1000 <= self._max_ts:
            hint = "it looks like milliseconds: drop --ts-unit s"
        elif self._scale == 1 and MIN_TS_MS <= ms // 1000 <= self._max_ts:
            hint = "it looks like microseconds: divide by 1000"
        elif self._scale == 1 and MIN_TS_MS <= ms // 1_000_000 <= self._max_ts:
            hint = "it looks like nanoseconds: divide by 1000000"
        else:
            hint = "check the value and its unit"
        raise FieldError(f"ts {show(value)}{_as_date(ms)} is more than 1 day in the future: {hint}")
