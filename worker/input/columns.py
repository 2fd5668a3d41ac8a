"""Columns and their aliases, shared by CSV headers and NDJSON keys: one naming rule for
both formats, so an export's column names mean the same whichever format carries them."""

from __future__ import annotations

import functools
import re
from decimal import Decimal

from worker.input.options import ReaderOptions
from worker.validation import json_text, show

COLUMNS = ("playlist_id", "session_id", "ts", "data_source")
_ALIASES = {
    "playlist_id": ("playlistid", "playlist"),
    "session_id": ("sessionid", "session"),  # also @session.id and session.id (RUM exports)
    "ts": ("ts", "timestamp", "timestampms", "tsms", "date"),  # date: RUM's CSV export
    "data_source": ("datasource",),
}
_ALIAS_TO_COLUMN = {alias: column for column, aliases in _ALIASES.items() for alias in aliases}
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_ECHOED_CHARS = 200
_INT64_RANGE = range(-(2**63), 2**63)


def required_columns(options: ReaderOptions) -> tuple[str, ...]:
    """The columns every input must have: playlist_id unless `--playlist` gives it, and
    ts unless the operation needs no time."""
    needed = (
        ("playlist_id", options.default_playlist is None),
        ("session_id", True),
        ("ts", options.ts_required),
    )
    return tuple(column for column, required in needed if required)


@functools.lru_cache(maxsize=4096)
def column_of(name: str) -> str | None:
    """The canonical column a header or key names: case, spaces and punctuation ignored.

    Cached: NDJSON repeats the same few keys on every line."""
    return _ALIAS_TO_COLUMN.get(_NOT_ALNUM.sub("", name.lower()))


@functools.lru_cache(maxsize=1024)
def exact_names_suffice(keys: tuple[str, ...]) -> bool:
    """Whether reading an object's columns by their exact names alone reads them all: no
    key is an alias of a column whose exact name is absent. Cached by the keys in their
    order: most NDJSON inputs repeat one layout on every line."""
    return all(
        (column := column_of(key)) is None or column == key or column in keys for key in keys
    )


def canonical_fields(obj: dict[str, object]) -> tuple[dict[str, object], str | None]:
    """The object's fields under their canonical names, and why they are ambiguous, if so.

    An exact name beats an alias: an export may hold, say, a `session` object beside
    `session_id`. Two aliases of one column without its exact name (`ts_ms` and
    `timestamp`) are not resolved: which one holds the value is anyone's guess, and a CSV
    header with both is refused too."""
    fields: dict[str, object] = {}
    keys: dict[str, str] = {}
    clashes: list[tuple[str, str, str]] = []
    for key, value in obj.items():
        column = column_of(key)
        if column is None:
            continue
        taken = keys.get(column)
        if taken is None or key == column:
            fields[column] = value
            keys[column] = key
        elif taken != column:
            clashes.append((column, taken, key))
    problems = [
        f"keys {show(first)} and {show(second)} both mean {column}: keep one"
        for column, first, second in clashes
        if keys[column] != column
    ]
    return fields, "; ".join(problems) or None


def echoable(value: object) -> object:
    """A JSON value as `InvalidRow.fields` holds it: what any JSON encoder can write back
    (orjson refuses Decimal and integers beyond 64 bits, so those become strings)."""
    if isinstance(value, Decimal) or (type(value) is int and value not in _INT64_RANGE):
        return str(value)
    if isinstance(value, list | dict):
        return json_text(value)[:_ECHOED_CHARS]
    return value


def echoed(fields: dict[str, object]) -> dict[str, object]:
    """Every field `echoable`."""
    return {column: echoable(value) for column, value in fields.items()}
