"""The sandbox's RUM query syntax on its own: what it matches, and what it refuses."""

from __future__ import annotations

import pytest

from worker.sandbox.query import QuerySyntaxError, parse

EVENT: dict[str, object] = {
    "type": "session",
    "session": {"id": "abc-123", "has_replay": True, "is_active": False, "type": "user"},
    "usr": {"email": "ann@example.com"},
    "view": {"url": "https://shop.example.com/checkout"},
    "tags": ["env:prod", "team:web"],
    "count": 3,
    "note": "two words",
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", True),
        ("*", True),
        ("@type:session", True),
        ("type:session", True),
        ("@type:view", False),
        ("@session.has_replay:true", True),
        ("@session.has_replay:false", False),
        ("@session.is_active:false", True),
        ("@count:3", True),
        ("@usr.email:*@example.com", True),
        ("@usr.email:ann*", True),
        ("@usr.email:bob*", False),
        ("@view.url:*check?ut", True),
        ("@missing:x", False),
        ("-@missing:x", True),
        ("@session:x", False),
        ("@session.id.deeper:x", False),
        ("@tags:team:web", True),
        ('@note:"two words"', True),
        ('@note:"two*"', False),
        ("@note:two\\ words", True),
        ("@note:two*", True),
        ("-@type:session", False),
        ("NOT @type:session", False),
        ("NOT NOT @type:session", True),
        ("@type:session @session.type:user", True),
        ("@type:session @session.type:synthetics", False),
        ("@type:session AND @session.type:synthetics", False),
        ("@type:view OR @session.type:user", True),
        ("@type:view OR @session.type:synthetics", False),
        ("@type:view OR @type:session @session.type:synthetics", False),
        ("(@type:view OR @type:session) @session.type:user", True),
        ("(@type:view OR @type:session) -@session.type:user", False),
        (
            "(@usr.email:nobody* OR @view.url:*checkout) @type:session "
            "@session.has_replay:true @session.is_active:false",
            True,
        ),
        ("-(@type:view OR @type:action)", True),
        ("@type:Session", False),
    ],
)
def test_a_query_matches_what_datadog_would(query: str, expected: bool) -> None:
    assert parse(query).matches(EVENT) is expected


def test_and_binds_tighter_than_or() -> None:
    # a OR (b AND c): true through a alone
    assert parse("@type:session OR @type:view @count:4").matches(EVENT)
    assert not parse("(@type:session OR @type:view) @count:4").matches(EVENT)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("checkout", "free-text"),
        ("@type:", "value is missing"),
        ("@type:session AND", "missing at the end"),
        ("AND @type:session", "AND needs a term"),
        ("@type:session OR OR @type:view", "OR needs a term"),
        ("(@type:session", "never closed"),
        ("@type:session)", "closes no"),
        ("()", "hold no term"),
        ('@note:"open', "quoted value is never closed"),
        ("- @type:session", "right before"),
        ("@count:>3", "comparisons"),
        ("@count:[1 TO 5]", "ranges"),
        ("@.x:1", "attribute path"),
        ("(" * 5000 + "@type:session" + ")" * 5000, "nested"),
        ("-" * 5000 + "@type:session", "nested"),
    ],
)
def test_a_query_it_cannot_read_is_refused_saying_where(query: str, problem: str) -> None:
    with pytest.raises(QuerySyntaxError, match="invalid query at character") as caught:
        parse(query)
    assert problem in str(caught.value)
