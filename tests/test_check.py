"""`validate`: the exact report a person reads, and the exit status scripts rely on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from worker.check import check_inputs
from worker.input import ReaderOptions

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_795_651_200_000  # 2026-11-26T00:00:00Z
OPTIONS = ReaderOptions(now_ms=lambda: NOW)
UUID = "00000000-0000-0000-0000-000000000001"


@pytest.fixture(autouse=True)
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample inputs are named as the README shows them."""
    monkeypatch.chdir(ROOT)


def check(paths: list[str], *, max_errors: int = 20, stdin: bytes = b"") -> tuple[int, str]:
    out = io.StringIO()
    status = check_inputs(paths, OPTIONS, out, max_errors=max_errors, stdin=io.BytesIO(stdin))
    return status, out.getvalue()


def test_clean_inputs_exit_0_with_counts() -> None:
    assert check(["sample_inputs/sessions.csv", "sample_inputs/sessions.ndjson"]) == (
        0,
        "sample_inputs/sessions.csv: 300 valid, 0 invalid\n"
        "sample_inputs/sessions.ndjson: 300 valid, 0 invalid\n"
        "total: 600 valid, 0 invalid\n",
    )


MIXED_REPORT = """\
sample_inputs/mixed_bad_rows.csv:5: playlist_id 'playlist-1001' is not a number: give the playlist's numeric id, e.g. 1234567
sample_inputs/mixed_bad_rows.csv:8: playlist_id '1001.5' is not a whole number: give the playlist's numeric id, e.g. 1234567
sample_inputs/mixed_bad_rows.csv:11: session_id is empty: give the replay's session id
sample_inputs/mixed_bad_rows.csv:14: ts '1795240556' looks like seconds (2026-11-21T05:55:56Z), not milliseconds: pass --ts-unit s, or multiply by 1000
sample_inputs/mixed_bad_rows.csv:17: ts '2026-11-20T09:30:00' has no time zone: add one, e.g. 2026-11-20T09:30:00Z for UTC or +02:00 for an offset
sample_inputs/mixed_bad_rows.csv:20: ts '4102444800000' (2100-01-01T00:00:00Z) is more than 1 day in the future: check the value and its unit
sample_inputs/mixed_bad_rows.csv:23: data_source 'logs' is not one of rum, product_analytics: fix it, or leave it empty for the default (rum)
sample_inputs/mixed_bad_rows.csv:26: the row has 6 fields but the header has 4: quote values that contain ','
sample_inputs/mixed_bad_rows.csv: 19 valid, 8 invalid
"""  # noqa: E501


def test_the_sample_bad_rows_as_the_readme_shows_them() -> None:
    assert check(["sample_inputs/mixed_bad_rows.csv"]) == (1, MIXED_REPORT)


@pytest.mark.parametrize("max_errors", [2, 0])
def test_only_the_first_errors_are_printed(max_errors: int) -> None:
    status, output = check(["sample_inputs/mixed_bad_rows.csv"], max_errors=max_errors)
    assert status == 1
    assert output.splitlines() == [
        *MIXED_REPORT.splitlines()[:max_errors],
        f"... and {8 - max_errors} more invalid rows"
        if max_errors
        else "8 invalid rows, not listed (--max-errors 0)",
        "sample_inputs/mixed_bad_rows.csv: 19 valid, 8 invalid",
    ]


def test_input_error_exits_2_with_its_message() -> None:
    assert check(["sample_inputs/sessions.csv", "nope.csv"]) == (
        2,
        "error: nope.csv: cannot read it (No such file or directory): check the path and its "
        "permissions\n",
    )


def test_counts_are_listed_per_input_in_order() -> None:
    stdin = f"playlist_id,session_id,ts\n1001,{UUID},1795000000000\n".encode()
    status, output = check(["-", "sample_inputs/sessions.csv"], stdin=stdin)
    assert status == 0
    assert output.splitlines() == [
        "<stdin>: 1 valid, 0 invalid",
        "sample_inputs/sessions.csv: 300 valid, 0 invalid",
        "total: 301 valid, 0 invalid",
    ]


def test_header_only_input_is_zero_rows_and_exit_0() -> None:
    assert check(["-"], stdin=b"playlist_id,session_id,ts\n") == (
        0,
        "<stdin>: 0 valid, 0 invalid\n",
    )
