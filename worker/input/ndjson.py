"""NDJSON inputs, one JSON object per line, and the tool's own NDJSON rows as output
(`format_row`): what `sessions -o` and `verify --missing` write, read back as it was.

Lines are parsed by orjson when it is installed, and again exactly (numbers as Decimal)
only when a value could have lost precision as a float."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.input.columns import canonical_fields, echoed, exact_names_suffice
from worker.input.lines import HAS_NUL, BadLine, Lines, not_utf8, raw_fields
from worker.rows import InvalidRow, Row
from worker.validation import FieldError, Validator

_NDJSON_SHAPE = '{"playlist_id": 1234567, "session_id": "…", "ts": 1704067200000}'
_PLAIN_VALUES = (str, int, bool, type(None))


def exact_loads(text: str | bytes) -> object:
    """JSON with numbers kept exact (no float, no NaN): for lines the fast parser could not
    take, and for every line when orjson is not installed."""
    return json.loads(text, parse_float=_exact_number, parse_constant=_reject_constant)


def _exact_number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # an exponent beyond Decimal's range, such as 0e1000000000000000000
        raise ValueError(f"the number {text[:40]} is out of range") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


_loads: Callable[[bytes], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    _loads = exact_loads


def format_row(row: Row, *, with_playlist: bool = True) -> str:
    """The row as one line of the tool's NDJSON input, newline included: `playlist_id`,
    `session_id`, `ts` when the row has one, and always `data_source`, so that reading
    it back gives the same row whatever the reader's default data source. Without
    `with_playlist` the line names no playlist: `run --playlist ID` gives it one."""
    fields: dict[str, object] = {"playlist_id": row.playlist_id} if with_playlist else {}
    fields["session_id"] = row.session_id
    if row.ts is not None:
        fields["ts"] = row.ts
    fields["data_source"] = row.data_source
    return json.dumps(fields, ensure_ascii=False) + "\n"


def ndjson_rows(lines: Lines, name: str, validator: Validator) -> Generator[Row | InvalidRow]:
    """The rows of an NDJSON input. The fast path reads the exact column names; keys that
    are aliases, floats and lines orjson refuses go the slower, exact way."""
    to_row = validator.row
    while True:
        try:
            raw = lines.read()
        except BadLine as bad:
            yield InvalidRow(name, bad.line, bad.reason, bad.fields)
            if bad.ends_input:
                return
            continue
        if not raw:
            return
        line = lines.lineno
        try:
            obj = _loads(raw)
        except (ValueError, RecursionError):
            if raw.isspace():
                continue
            obj = None
        if type(obj) is not dict:
            yield _parsed_exactly(raw, name, line, validator)
            continue
        playlist_id = obj.get("playlist_id")
        ts = obj.get("ts")
        if (
            type(playlist_id) is not float
            and type(ts) is not float
            # The three exact names alone, or all four (an exact name beats its aliases):
            # no alias can be in play. Any other layout asks the cache.
            and (
                (len(obj) == 3 and "playlist_id" in obj and "session_id" in obj and "ts" in obj)
                or (
                    "data_source" in obj
                    and "playlist_id" in obj
                    and "session_id" in obj
                    and "ts" in obj
                )
                or exact_names_suffice(tuple(obj))
            )
        ):
            try:
                yield to_row(
                    playlist_id,
                    obj.get("session_id"),
                    ts,
                    obj.get("data_source"),
                    source=name,
                    line=line,
                )
            except FieldError as error:
                yield InvalidRow(name, line, str(error), echoed(canonical_fields(obj)[0]))
        elif all(type(value) in _PLAIN_VALUES for value in obj.values()):
            yield _object_row(obj, name, line, validator)  # by aliases, such as sessionId
        else:
            yield _parsed_exactly(raw, name, line, validator)


def _parsed_exactly(raw: bytes, name: str, line: int, validator: Validator) -> Row | InvalidRow:
    """A line the fast path could not take: exact numbers, or a precise error."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        return InvalidRow(name, line, "the line " + not_utf8(raw, error), raw_fields(raw))
    if "\0" in text:
        return InvalidRow(name, line, HAS_NUL, raw_fields(raw))
    try:
        # without its line ending: in an unterminated string, that would be the error
        obj = exact_loads(text.rstrip("\r\n"))
    except (ValueError, RecursionError) as error:
        if isinstance(error, json.JSONDecodeError):
            # Some messages end in "at" and leave the position to str(error), which also
            # names line 1 of a one-line document: give the column alone.
            detail = f"{error.msg} column {error.colno}" if error.msg.endswith(" at") else error.msg
        else:
            detail = str(error)
        return InvalidRow(
            name,
            line,
            f"the line is not valid JSON ({detail}): each line must be one object such as "
            + _NDJSON_SHAPE,
            raw_fields(raw),
        )
    if not isinstance(obj, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(obj), "a number"
        )
        return InvalidRow(
            name,
            line,
            f"the line is {kind}, not a JSON object: each line must be one object such as "
            + _NDJSON_SHAPE,
            raw_fields(raw),
        )
    return _object_row(obj, name, line, validator)


def _object_row(
    obj: dict[str, object], name: str, line: int, validator: Validator
) -> Row | InvalidRow:
    """A parsed JSON object as a row, its keys matched to columns (`canonical_fields`)."""
    fields, ambiguous = canonical_fields(obj)
    if ambiguous is not None:
        return InvalidRow(name, line, ambiguous, echoed(fields))
    try:
        return validator.fields_row(fields, source=name, line=line)
    except FieldError as error:
        return InvalidRow(name, line, str(error), echoed(fields))
