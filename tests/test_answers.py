"""What an answer means, read in process: statuses, bounded headers, scrubbed texts."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from worker import answers
from worker.answers import (
    MAX_HINT_S,
    AnswerReader,
    Meaning,
    RateLimit,
    meaning_of,
    origin_of,
    parse_rate_limit,
    parse_retry_after,
)
from worker.scrub import REDACTED, Scrubber, mask_key_shapes, shapes

API_KEY = "0123456789abcdef0123456789abcdef"
APP_KEY = 'app/"Key"\\%&=-0123456789'
HEX_KEY = "fedcba9876543210" * 2
"""A Datadog-shaped key: hex, which `quote` leaves as it is."""
"""Long (redacted wherever it occurs), with characters each shape writes differently."""
READER = AnswerReader(Scrubber((API_KEY, APP_KEY)), "https://api.datadoghq.com")


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        (201, Meaning.DONE),
        (200, Meaning.DONE),
        (204, Meaning.DONE),
        (301, Meaning.FATAL),
        (307, Meaning.FATAL),
        (400, Meaning.ROW_FAILED),
        (404, Meaning.ROW_FAILED),
        (401, Meaning.KEYS_REFUSED),  # Datadog has answered 401 for a missing application key
        (403, Meaning.KEYS_REFUSED),
        (408, Meaning.RETRYABLE),
        (425, Meaning.RETRYABLE),
        (429, Meaning.RATE_LIMITED),
        (500, Meaning.RETRYABLE),
        (503, Meaning.RETRYABLE),
        (102, Meaning.RETRYABLE),  # no final answer at all
        (600, Meaning.RETRYABLE),
        (599, Meaning.RETRYABLE),
        (100, Meaning.RETRYABLE),
        (99, Meaning.RETRYABLE),
        (-1, Meaning.RETRYABLE),
    ],
)
def test_what_each_status_means(status: int, meaning: Meaning) -> None:
    assert meaning_of(status) is meaning


def test_the_table_of_meanings_says_what_the_rule_decides_for_every_status() -> None:
    """`meaning_of` looks a status up in a table made from the rule: the two agree."""
    for status in range(-1, 1000):
        assert meaning_of(status) is answers._meaning_of(status), status


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "X-RateLimit-Limit": "100",
                "X-RateLimit-Period": "60",
                "X-RateLimit-Remaining": "7",
                "X-RateLimit-Reset": "13",
                "X-RateLimit-Name": "rum_replay_playlists",
            },
            RateLimit(100, 60, 7, 13, "rum_replay_playlists"),
        ),
        (
            {"X-RateLimit-Limit": "9" * 5000, "X-RateLimit-Remaining": "1" * 40},
            None,  # int() of 5,000 digits raises: such a header is no number
        ),
        (
            {
                "X-RateLimit-Limit": "100000000000",
                "X-RateLimit-Period": "31536000",
                "X-RateLimit-Remaining": "5",
                "X-RateLimit-Reset": "999999999999",
            },
            RateLimit(None, None, 5, MAX_HINT_S),  # no such limit, no year-long period
        ),
        ({"X-RateLimit-Reset": "1e308"}, RateLimit(None, None, None, MAX_HINT_S)),
        (
            {"X-RateLimit-Remaining": "3", "X-RateLimit-Name": "name with\nspaces"},
            RateLimit(None, None, 3, None, None),  # a name that could be anything is no name
        ),
        ({"X-RateLimit-Reset": "inf", "X-RateLimit-Remaining": "-1"}, None),
    ],
    ids=["datadog", "5000-digits", "out-of-bounds", "huge-reset", "odd-name", "non-finite"],
)
def test_rate_limit_headers_are_bounded(
    headers: dict[str, str], expected: RateLimit | None
) -> None:
    assert parse_rate_limit(headers) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1e308", MAX_HINT_S), ("9" * 40, None), ("Fri, 01 Jan 9999 00:00:00 GMT", MAX_HINT_S)],
)
def test_retry_after_is_bounded(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=lambda: 0.0) == expected


def echoed_shapes() -> list[str]:
    """Every shape of both keys, in every case a server may write them."""
    found = []
    for key in (API_KEY, APP_KEY):
        for shape in shapes(key):
            found += [shape, shape.upper(), shape.lower()]
    found.append(quote(APP_KEY, safe="").lower())  # percent-encoded in lower-case hex
    return found


def assert_no_key(text: str | None) -> None:
    assert text is not None
    for shape in echoed_shapes():
        assert shape.lower() not in text.lower(), shape


@pytest.mark.parametrize("status", [400, 403, 429, 500, 307])
def test_an_echoed_key_never_reaches_the_error(status: int) -> None:
    body = json.dumps({"errors": [f"seen: {shape}" for shape in echoed_shapes()[:8]]}).encode()

    answer = READER.http(status, {"Location": f"https://{API_KEY}.example/"}, body, 1.0)

    assert_no_key(answer.error)
    if status != 307:
        assert answer.error is not None
        assert answer.error.count(REDACTED) == 8


def test_a_key_straddling_the_cut_of_a_long_error_is_not_half_shown() -> None:
    body = ("x" * 480 + API_KEY + "y" * 100).encode()

    answer = READER.http(502, {}, body, 1.0)

    assert answer.error is not None
    assert API_KEY[:10] not in answer.error


def test_a_success_body_problem_is_scrubbed_too() -> None:
    answer = READER.http(200, {}, f"<html>{API_KEY.upper()}</html>".encode(), 1.0)

    assert answer.meaning is Meaning.DONE
    assert answer.body_problem is not None
    assert REDACTED in answer.body_problem
    assert_no_key(answer.body_problem)


@pytest.mark.parametrize(
    ("location", "origin"),
    [
        ("http://127.0.0.1:9/steal?key=1", "http://127.0.0.1:9"),
        ("https://evil.example/a/b", "https://evil.example:443"),
        ("/elsewhere?x=1", "https://api.datadoghq.com:443"),  # relative: this origin
        (None, "nowhere (no Location header)"),
        ("http://[::1:bad", "an unreadable Location"),
    ],
)
def test_a_redirect_names_only_the_origin_it_pointed_to(location: str | None, origin: str) -> None:
    assert origin_of(location, URL("https://api.datadoghq.com")) == origin


def test_a_redirect_is_fatal_and_never_done() -> None:
    answer = READER.http(303, {"Location": "http://10.1.2.3:8080/path?q=secret"}, b"", 1.0)

    assert answer.meaning is Meaning.FATAL
    assert answer.error is not None
    assert "http://10.1.2.3:8080" in answer.error
    assert "/path" not in answer.error
    assert "secret" not in answer.error
    assert "--base-url" in answer.error


def test_a_payload_is_parsed_only_when_asked_for() -> None:
    body = b'{"data": [{"id": "1"}]}'

    assert READER.http(200, {}, body, 1.0, want_payload=True).payload == {"data": [{"id": "1"}]}
    assert READER.http(200, {}, body, 1.0).payload is None
    assert READER.http(204, {}, b"", 1.0, want_payload=True).body_problem is None


def test_an_unreadable_success_may_have_been_applied() -> None:
    answer = READER.unreadable(201, {}, 1.0, "answer larger than 65536 bytes")

    assert (answer.meaning, answer.maybe_applied) == (Meaning.RETRYABLE, True)
    assert answer.error == "HTTP 201: answer larger than 65536 bytes"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"key {API_KEY} here", f"key {REDACTED} here"),
        ("f" * 40, REDACTED),
        ("f" * 36, "f" * 36),  # neither 32 nor 40: not a key's shape
        ("f" * 41, "f" * 41),
        (f"id={'A' * 32}.", f"id={REDACTED}."),
    ],
)
def test_what_looks_like_a_key_is_masked(text: str, masked: str) -> None:
    assert mask_key_shapes(text) == masked


@pytest.mark.parametrize(
    ("secrets", "text", "scrubbed"),
    [
        (
            ("x",),
            "key X, key x, box, X-ray",
            f"key {REDACTED}, key {REDACTED}, box, {REDACTED}-ray",
        ),
        ((API_KEY,), f"KEY={API_KEY.upper()}&n=1", f"KEY={REDACTED}&n=1"),
        ((APP_KEY,), quote(APP_KEY, safe="").lower(), REDACTED),
        ((APP_KEY,), json.dumps(APP_KEY).replace("/", "\\/"), f'"{REDACTED}"'),
        (("short/one",), "a short%2Fone b", f"a {REDACTED} b"),  # short: whole tokens
        ((HEX_KEY,), "".join(f"%{b:02x}" for b in HEX_KEY.encode()), REDACTED),
        ((HEX_KEY,), "".join(f"\\u{ord(c):04X}" for c in HEX_KEY), REDACTED),
    ],
    ids=[
        "short-any-case",
        "long-upper",
        "percent-lower",
        "json-escaped-slash",
        "short-encoded",
        "every-byte-percent-encoded",
        "every-character-json-escaped",
    ],
)
def test_the_scrubber_finds_each_shape_in_any_case(
    secrets: tuple[str, ...], text: str, scrubbed: str
) -> None:
    assert Scrubber(secrets).text(text) == scrubbed


@given(
    st.lists(
        st.integers(min_value=0, max_value=10**12).map(str) | st.text("0123456789", max_size=12),
        min_size=4,
        max_size=4,
    )
)
def test_the_fast_path_for_digits_reads_what_the_general_path_reads(values: list[str]) -> None:
    """Datadog's all-digit headers take a shortcut; a space before each value sends the
    same numbers down the general path, which must agree."""
    names = (
        "X-RateLimit-Limit",
        "X-RateLimit-Period",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    )
    fast = parse_rate_limit(dict(zip(names, values, strict=True)))
    general = parse_rate_limit(
        {name: f" {value}" for name, value in zip(names, values, strict=True)}
    )
    assert fast == general


_RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Period",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Name",
)


@given(
    st.lists(
        st.lists(
            st.none() | st.sampled_from(["0", "1", "7", "60", "100", "²", " 5", "x", "9" * 11]),
            min_size=5,
            max_size=5,
        ),
        min_size=1,
        max_size=12,
    )
)
def test_the_remembered_headers_read_as_they_would_afresh(
    answers_headers: list[list[str | None]],
) -> None:
    """`parse_rate_limit` remembers what all but `Remaining` read as: a run of answers,
    each reusing values the earlier ones had, reads as each answer parsed on its own."""
    answers._steady.clear()
    for values in answers_headers:
        headers = {
            name: v for name, v in zip(_RATE_LIMIT_HEADERS, values, strict=True) if v is not None
        }
        assert parse_rate_limit(headers) == answers._read_rate_limit(*values)


def test_the_remembered_headers_stay_bounded() -> None:
    answers._steady.clear()
    for remaining in range(2 * answers._STEADY_CAP):
        headers = {"X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(remaining)}
        assert parse_rate_limit(headers) == RateLimit(None, None, remaining, remaining)
    assert 0 < len(answers._steady) <= answers._STEADY_CAP


async def test_success_bodies_nobody_wants_are_checked_together_at_the_end_of_the_turn() -> None:
    """With `odd_body`, a success whose payload no caller wants is answered at once with
    no `body_problem`; its body is checked with the turn's others when the turn ends, and
    the first that is not the documented JSON is told once, scrubbed, and no body after.
    A payload asked for is still parsed, and its problem said, at once."""
    told: list[tuple[int, str]] = []
    reader = AnswerReader(
        Scrubber((API_KEY, APP_KEY)),
        "https://api.datadoghq.com",
        lambda status, problem: told.append((status, problem)),
    )
    good = b'{"data": {"id": "s", "type": "rum_replay_session"}}'
    odd = f"<html>{API_KEY}</html>".encode()

    answers_now = [reader.http(status, {}, body, 1.0) for status, body in
                   ((201, good), (200, odd), (201, b"[]"), (201, good))]  # fmt: skip
    asked = reader.http(200, {}, odd, 1.0, want_payload=True)

    assert all(a.meaning is Meaning.DONE and a.body_problem is None for a in answers_now)
    assert asked.body_problem is not None  # parsed at once, as asked
    assert API_KEY not in asked.body_problem
    assert told == []  # not before the turn ends
    await asyncio.sleep(0)
    ((status, problem),) = told
    assert status == 200
    assert "not JSON" in problem
    assert API_KEY not in problem

    reader.http(201, {}, b"[]", 1.0)  # no 'data': checked no more once told
    await asyncio.sleep(0)
    assert len(told) == 1
