"""The records made once per row: immutable, and `Row.key` (read by position, for speed)
is what makes a row the same row."""

from __future__ import annotations

import pytest

from worker.rows import Outcome, Result, Row


def test_a_rows_key_is_its_playlist_session_and_data_source() -> None:
    row = Row(
        playlist_id=7, session_id="s", ts=1, data_source="product_analytics", source="x", line=3
    )
    assert (
        row.key
        == (row.playlist_id, row.session_id, row.data_source)
        == (
            7,
            "s",
            "product_analytics",
        )
    )


def test_records_cannot_be_changed() -> None:
    row = Row(7, "s", 1, "rum", "x", 3)
    outcome = Outcome(row, Result.CREATED, 201, 1)
    with pytest.raises(AttributeError):
        row.session_id = "t"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        outcome.result = Result.FAILED  # type: ignore[misc]
