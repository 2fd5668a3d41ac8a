"""The field rules, value by value: what is accepted (and as what), what is refused and
exactly what the person reading the error is told."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.rows import Row
from worker.validation import (
    MAX_SESSION_ID_CHARS,
    FieldError,
    Validator,
    parse_data_source,
    parse_playlist_id,
    parse_session_id,
    show,
)

NOW = 1_795_651_200_000  # 2026-11-26T00:00:00Z
TS = 1_795_000_000_000  # 2026-11-18T11:06:40Z
PLAYLIST_HINT = "give the playlist's numeric id, e.g. 1234567"
MISSING_HINT = f"{PLAYLIST_HINT}, or run with --playlist ID for rows that name none"
MS_HINT = "ts must be milliseconds since 1970-01-01 UTC, or an ISO-8601 date-time with a zone"
S_HINT = (
    "ts must be seconds (--ts-unit s) since 1970-01-01 UTC, or an ISO-8601 date-time with a zone"
)


def validator(ts_unit: str = "ms", default: str = "rum", now: int = NOW) -> Validator:
    return Validator(default, ts_unit, lambda: now)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1001", 1001),
        (1001, 1001),
        (" 1001 ", 1001),
        ("0001001", 1001),
        ("+1001", 1001),
        ("1.234567e+06", 1234567),
        ("1.234567E6", 1234567),
        ("1001.000", 1001),
        (Decimal("1.234567e+06"), 1234567),
        (1234567.0, 1234567),
        ("9223372036854775807", 2**63 - 1),
        (2**63 - 1, 2**63 - 1),
        ("9.223372036854775807e18", 2**63 - 1),
    ],
)
def test_playlist_id_accepts(value: object, expected: int) -> None:
    assert parse_playlist_id(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, f"playlist_id is missing: {MISSING_HINT}"),
        ("", f"playlist_id is missing: {MISSING_HINT}"),
        ("  ", f"playlist_id is missing: {MISSING_HINT}"),
        ("abc", f"playlist_id 'abc' is not a number: {PLAYLIST_HINT}"),
        ("1,001", f"playlist_id '1,001' is not a number: {PLAYLIST_HINT}"),
        ("0x10", f"playlist_id '0x10' is not a number: {PLAYLIST_HINT}"),
        ("\uff11\uff10", f"playlist_id '\uff11\uff10' is not a number: {PLAYLIST_HINT}"),
        ("\u0661\u0660", f"playlist_id '\u0661\u0660' is not a number: {PLAYLIST_HINT}"),
        (True, f"playlist_id true is not a number: {PLAYLIST_HINT}"),
        ([1], f"playlist_id [1] is not a number: {PLAYLIST_HINT}"),
        ("1001.5", f"playlist_id '1001.5' is not a whole number: {PLAYLIST_HINT}"),
        ("1.2345675e+06", f"playlist_id '1.2345675e+06' is not a whole number: {PLAYLIST_HINT}"),
        (Decimal("0.5"), f"playlist_id 0.5 is not a whole number: {PLAYLIST_HINT}"),
        ("0", "playlist_id '0' is out of range: it must be from 1 to 9223372036854775807"),
        ("-7", "playlist_id '-7' is out of range: it must be from 1 to 9223372036854775807"),
        (
            "9223372036854775808",
            "playlist_id '9223372036854775808' is out of range: it must be from 1 to "
            "9223372036854775807",
        ),
        (2**64, f"playlist_id {2**64} is out of range: it must be from 1 to 9223372036854775807"),
        ("1e999999999", f"playlist_id '1e999999999' is out of range: {PLAYLIST_HINT}"),
        (  # beyond Decimal's own exponent range, which Decimal() refuses outright
            "0e1000000000000000000",
            f"playlist_id '0e1000000000000000000' is out of range: {PLAYLIST_HINT}",
        ),
        (float("nan"), f"playlist_id nan is out of range: {PLAYLIST_HINT}"),
        ("1" * 65, f"playlist_id '{'1' * 39}…' is not a number: {PLAYLIST_HINT}"),
    ],
)
def test_playlist_id_refuses(value: object, message: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse_playlist_id(value)
    assert str(refused.value) == message


UUID = "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (UUID, UUID),
        (UUID.upper(), UUID.upper()),
        (f"  {UUID}\t", UUID),
        ("not-a-uuid_but/fine?#%", "not-a-uuid_but/fine?#%"),
        ("sessiön-ü", "sessiön-ü"),
        ("...", "..."),
        (" a b/c?d#e%f ", "a b/c?d#e%f"),
        ("x" * MAX_SESSION_ID_CHARS, "x" * MAX_SESSION_ID_CHARS),
    ],
)
def test_session_id_accepts_any_printable_id_as_is(value: str, expected: str) -> None:
    assert parse_session_id(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "session_id is missing: give the replay's session id"),
        ("", "session_id is empty: give the replay's session id"),
        (" \t ", "session_id is empty: give the replay's session id"),
        (123, "session_id 123 is not a string: quote it in the JSON"),
        (
            {"id": "n11"},
            'session_id {"id": "n11"} is an object, not a string: give the session id itself '
            "as a JSON string",
        ),
        (
            ["n11", Decimal("1.50")],
            'session_id ["n11", "1.50"] is an array, not a string: give the session id itself '
            "as a JSON string",
        ),
        (
            {"id": "é" * 50},
            f'session_id {{"id": "{"é" * 31}… is an object, not a string: give the session id '
            "itself as a JSON string",
        ),
        (
            "x" * (MAX_SESSION_ID_CHARS + 1),
            f"session_id '{'x' * 39}…' is 257 characters long, more than the 256 allowed: "
            "check that the column holds session ids",
        ),
        (
            "ab\x00cd",
            "session_id 'ab\\x00cd' contains U+0000 at character 3: "
            "remove control and invisible characters",
        ),
        (
            "ab\tcd",
            "session_id 'ab\\tcd' contains U+0009 at character 3: "
            "remove control and invisible characters",
        ),
        (
            "ab\u00a0cd",
            "session_id 'ab\\xa0cd' contains U+00A0 at character 3: "
            "remove control and invisible characters",
        ),
        (
            "ab\u200bcd",
            "session_id 'ab\\u200bcd' contains U+200B at character 3: "
            "remove control and invisible characters",
        ),
        (
            "ab\ud800",
            "session_id 'ab\\ud800' contains U+D800 at character 3: "
            "remove control and invisible characters",
        ),
        ("..", "session_id '..' is a path dot-segment, not a session id: check the column"),
        (".", "session_id '.' is a path dot-segment, not a session id: check the column"),
    ],
)
def test_session_id_refuses(value: object, message: str) -> None:
    with pytest.raises(FieldError) as refused:
        parse_session_id(value)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("rum", "rum", "rum"),
        ("product_analytics", "rum", "product_analytics"),
        (" Product_Analytics ", "rum", "product_analytics"),
        ("RUM", "product_analytics", "rum"),
        ("", "product_analytics", "product_analytics"),
        (None, "rum", "rum"),
        ("  ", "rum", "rum"),
    ],
)
def test_data_source_accepts(value: object, default: str, expected: str) -> None:
    assert parse_data_source(value, default) == expected


@pytest.mark.parametrize("value", ["logs", "rum,", 1, ["rum"]])
def test_data_source_refuses(value: object) -> None:
    with pytest.raises(FieldError) as refused:
        parse_data_source(value, "rum")
    assert str(refused.value) == (
        f"data_source {show(value)} is not one of rum, product_analytics: "
        "fix it, or leave it empty for the default (rum)"
    )


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (str(TS), "ms", TS),
        (TS, "ms", TS),
        (f" {TS} ", "ms", TS),
        ("1.795e+12", "ms", 1_795_000_000_000),
        (Decimal("1.795e12"), "ms", TS),
        ("2026-11-18T11:06:40Z", "ms", TS),
        ("2026-11-18T11:06:40z", "ms", TS),
        ("2026-11-18t11:06:40z", "ms", TS),
        (" 2026-11-18T11:06:40.123z ", "ms", TS + 123),
        ("2026-11-18T11:06:40.123Z", "ms", TS + 123),
        ("2026-11-18T11:06:40.123999Z", "ms", TS + 123),
        ("2026-11-18T13:06:40+02:00", "ms", TS),
        ("2026-11-18 06:06:40-05:00", "ms", TS),
        ("2026-11-18T11:06:40Z", "s", TS),
        ("1795000000", "s", TS),
        (1795000000, "s", TS),
        ("1795000000.123", "s", TS + 123),
        ("1795000000.1239", "s", TS + 123),
        ("1.795e9", "s", TS),
        (str(NOW + 86_400_000), "ms", NOW + 86_400_000),
        ("1000000000000", "ms", 1_000_000_000_000),
    ],
)
def test_ts_accepts(value: object, unit: str, expected: int) -> None:
    assert validator(unit).ts(value) == expected


@pytest.mark.parametrize(
    ("value", "unit", "message"),
    [
        (None, "ms", f"ts is missing: {MS_HINT}"),
        ("", "s", f"ts is missing: {S_HINT}"),
        ("yesterday", "ms", f"ts 'yesterday' is not a number nor a date-time: {MS_HINT}"),
        ("z", "ms", f"ts 'z' is not a number nor a date-time: {MS_HINT}"),
        (
            "2026-11-18T11:06:40zz",
            "ms",
            f"ts '2026-11-18T11:06:40zz' is not a number nor a date-time: {MS_HINT}",
        ),
        (True, "ms", f"ts true is not a number: {MS_HINT}"),
        ("-5", "ms", f"ts '-5' is negative: {MS_HINT}"),
        (
            "1795000000",
            "ms",
            "ts '1795000000' looks like seconds (2026-11-18T11:06:40Z), not milliseconds: "
            "pass --ts-unit s, or multiply by 1000",
        ),
        ("20261118", "ms", f"ts '20261118' is before 2001-09-09: {MS_HINT}"),
        ("999999999999", "ms", f"ts '999999999999' is before 2001-09-09: {MS_HINT}"),
        ("5", "s", f"ts '5' is before 2001-09-09: {S_HINT}"),
        (
            str(TS) + ".5",
            "ms",
            f"ts '{TS}.5' is not a whole number of milliseconds: {MS_HINT}",
        ),
        (
            "2026-11-18T11:06:40",
            "ms",
            "ts '2026-11-18T11:06:40' has no time zone: add one, e.g. 2026-11-18T11:06:40Z "
            "for UTC or +02:00 for an offset",
        ),
        (
            "2026-11-18",
            "ms",
            "ts '2026-11-18' has no time zone: add one, e.g. 2026-11-18T00:00:00Z "
            "for UTC or +02:00 for an offset",
        ),
        (
            "1999-12-31T23:59:59Z",
            "ms",
            "ts '1999-12-31T23:59:59Z' is before 2001-09-09, too early for a session replay: "
            "check the date",
        ),
        (
            str(NOW + 86_400_001),
            "ms",
            f"ts '{NOW + 86_400_001}' (2026-11-27T00:00:00Z) is more than 1 day in the future: "
            "check the value and its unit",
        ),
        (
            "2100-01-01T00:00:00Z",
            "ms",
            "ts '2100-01-01T00:00:00Z' (2100-01-01T00:00:00Z) is more than 1 day in the future: "
            "check the value and its unit",
        ),
        (
            str(TS * 1000),
            "ms",
            f"ts '{TS * 1000}' is more than 1 day in the future: "
            "it looks like microseconds: divide by 1000",
        ),
        (
            str(TS * 1_000_000),
            "ms",
            f"ts '{TS * 1_000_000}' is more than 1 day in the future: "
            "it looks like nanoseconds: divide by 1000000",
        ),
        (
            str(TS),
            "s",
            f"ts '{TS}' is more than 1 day in the future: "
            "it looks like milliseconds: drop --ts-unit s",
        ),
        ("1e999999", "ms", f"ts '1e999999' is out of range: {MS_HINT}"),
        ("NaN", "ms", f"ts 'NaN' is not a number nor a date-time: {MS_HINT}"),
        (
            "0001-01-01T00:00:00+01:00",
            "ms",
            "ts '0001-01-01T00:00:00+01:00' is before 2001-09-09, too early for a session "
            "replay: check the date",
        ),
    ],
)
def test_ts_refuses(value: object, unit: str, message: str) -> None:
    with pytest.raises(FieldError) as refused:
        validator(unit).ts(value)
    assert str(refused.value) == message


def test_ts_future_bound_follows_the_clock() -> None:
    """The bound is cached, but a value over it is checked against the clock again."""
    clock = [NOW]
    rules = Validator("rum", "ms", lambda: clock[0])
    later = NOW + 2 * 86_400_000
    with pytest.raises(FieldError):
        rules.ts(later)
    clock[0] = NOW + 86_400_000
    assert rules.ts(later) == later


def test_row_resolves_every_field() -> None:
    row = validator(default="product_analytics").row(
        "1001", UUID, str(TS), "", source="in.csv", line=7
    )
    assert row == Row(1001, UUID, TS, "product_analytics", "in.csv", 7)


def test_row_names_every_bad_field_in_order() -> None:
    with pytest.raises(FieldError) as refused:
        validator().row("x", "", "1795000000", "logs", source="in.csv", line=2)
    assert str(refused.value).split("; ") == [
        f"playlist_id 'x' is not a number: {PLAYLIST_HINT}",
        "session_id is empty: give the replay's session id",
        "ts '1795000000' looks like seconds (2026-11-18T11:06:40Z), not milliseconds: "
        "pass --ts-unit s, or multiply by 1000",
        "data_source 'logs' is not one of rum, product_analytics: "
        "fix it, or leave it empty for the default (rum)",
    ]


@pytest.mark.parametrize(
    ("unit", "default", "message"),
    [
        ("us", "rum", "the ts unit 'us' is not one of ms, s"),
        ("ms", "logs", "the default data source 'logs' is not one of rum, product_analytics"),
    ],
)
def test_validator_refuses_bad_options(unit: str, default: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Validator(default, unit, lambda: NOW)


@pytest.mark.parametrize("value", [None, "", "  ", "1001", 1001, "1.001e3"])
def test_a_default_playlist_takes_rows_naming_none_or_the_same(value: object) -> None:
    rules = Validator("rum", "ms", lambda: NOW, default_playlist=1001)
    assert rules.row(value, UUID, TS, None, source="in.csv", line=3) == Row(
        1001, UUID, TS, "rum", "in.csv", 3
    )


def test_a_default_playlist_refuses_rows_naming_another() -> None:
    rules = Validator("rum", "ms", lambda: NOW, default_playlist=1001)
    with pytest.raises(FieldError) as refused:
        rules.row("2002", UUID, "x", None, source="in.csv", line=3)
    assert str(refused.value).split("; ") == [
        "playlist_id '2002' is another playlist than --playlist 1001: remove the row, or "
        "leave its playlist_id empty to send it there, or run without --playlist to send "
        "each row to its own playlist",
        f"ts 'x' is not a number nor a date-time: {MS_HINT}",
    ]
    with pytest.raises(FieldError, match=r"^playlist_id 'x' is not a number"):
        rules.row("x", UUID, TS, None, source="in.csv", line=3)


@pytest.mark.parametrize("playlist", [0, 2**63, -1])
def test_a_default_playlist_must_be_a_playlist_id(playlist: int) -> None:
    with pytest.raises(ValueError, match=f"^--playlist {playlist}: playlist_id .* out of range"):
        Validator("rum", "ms", lambda: NOW, default_playlist=playlist)


@pytest.mark.parametrize("value", [None, "", " "])
def test_ts_may_be_left_out_when_not_required(value: object) -> None:
    rules = Validator("rum", "ms", lambda: NOW, ts_required=False)
    assert rules.ts(value) is None
    assert rules.row(1001, UUID, value, None, source="f", line=1).ts is None
    assert rules.ts(str(TS)) == TS
    with pytest.raises(FieldError, match=r"^ts 'soon' is not a number nor a date-time"):
        rules.ts("soon")
    with pytest.raises(FieldError, match=r"^ts is missing"):
        validator().ts(value)


def test_show_shortens_and_makes_characters_visible() -> None:
    assert show("a\tb") == "'a\\tb'"
    assert show("x" * 100) == f"'{'x' * 39}…'"
    assert show(None) == "null"
    assert show(False) == "false"
    assert show(Decimal("1.50")) == "1.50"


def test_show_writes_arrays_and_objects_as_json() -> None:
    """A message quotes JSON as JSON, never as Python's repr (`{'id': 'n11'}`)."""
    assert (
        show({"id": "n11", "ok": True, "none": None}) == '{"id": "n11", "ok": true, "none": null}'
    )
    assert show([1, "a"]) == '[1, "a"]'
    assert show(list(range(100))) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, …"
    deep: list[object] = []
    for _ in range(5000):  # deeper than json.dumps can recurse
        deep = [deep]
    assert show(deep) == "[…]"
    assert show({"a": deep}) == "{…}"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.decimals(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
field_values = json_values | st.from_regex(r"\s*[+-]?[0-9.eE:TZ+-]{0,25}\s*", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(field_values, field_values, field_values, field_values, st.sampled_from(["ms", "s"]))
def test_row_only_ever_raises_field_error(
    playlist_id: object, session_id: object, ts: object, data_source: object, unit: str
) -> None:
    try:
        row = validator(unit).row(playlist_id, session_id, ts, data_source, source="f", line=1)
    except FieldError as error:
        reason = str(error)
        row = None
    if row is None:
        assert reason.count(": ") >= 1  # every message says what to do after a colon
    else:
        assert 0 < row.playlist_id < 2**63
        assert 1_000_000_000_000 <= row.ts <= NOW + 86_400_000
        assert row.session_id == row.session_id.strip() != ""
        assert row.data_source in ("rum", "product_analytics")


playlist_texts = st.from_regex(r"\s*[+-]?[0-9.eE]{0,22}\s*", fullmatch=True) | st.sampled_from(
    ["", " ", "x", "0", "1001", "2002", "01001"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(playlist_texts, min_size=1, max_size=12), st.sampled_from([None, 1001]))
def test_the_remembered_playlists_read_as_each_row_parsed_afresh(
    texts: list[str], default_playlist: int | None
) -> None:
    """A validator that has seen a text before gives the row (or the refusal) that a new
    one gives: remembering a playlist id must never accept what parsing refuses, such as
    another playlist than `--playlist`, nor change what it parsed to."""
    seasoned = Validator("rum", "ms", lambda: NOW, default_playlist=default_playlist)
    for text in texts + texts:
        fresh = Validator("rum", "ms", lambda: NOW, default_playlist=default_playlist)
        outcomes = []
        for rules in (seasoned, fresh):
            try:
                outcomes.append(rules.row(text, UUID, TS, None, source="f", line=1))
            except FieldError as error:
                outcomes.append(str(error))
        assert outcomes[0] == outcomes[1]


def test_the_remembered_playlists_stay_bounded() -> None:
    rules = validator()
    for number in range(1, 5000):
        assert rules.row(str(number), UUID, TS, None, source="f", line=1).playlist_id == number
    assert 0 < len(rules._playlists) <= 1024
