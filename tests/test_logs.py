"""The log lines: their fields, their timestamps, and keys that never get through."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import pytest

from worker import logs
from worker.rows import InvalidRow, Outcome, Result, Row

API_KEY = "api-key-0123456789abcdef"
APP_KEY = 'app-key-"quoted"\\and\tescaped'
ROW = Row(1001, "00000000-0000-0000-0000-000000000001", 1_704_067_200_000, "rum", "in.csv", 7)


def json_logger(
    secrets: tuple[str, ...] = (API_KEY, APP_KEY),
) -> tuple[logs.LogObserver, io.StringIO]:
    out = io.StringIO()
    log = logs.configure(fmt="json", secrets=secrets, stream=out)
    return logs.LogObserver(log), out


def events(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_row_outcome_is_one_json_line_with_every_field() -> None:
    observer, out = json_logger()

    observer.outcome(Outcome(ROW, Result.CREATED, 201, 1, 12.3456))

    (event,) = events(out)
    assert event == {
        "event": "row",
        "level": "info",
        "timestamp": event["timestamp"],
        "result": "created",
        "playlist_id": 1001,
        "session_id": ROW.session_id,
        "data_source": "rum",
        "status": 201,
        "attempts": 1,
        "latency_ms": 12.35,
        "source": "in.csv",
        "line": 7,
        "error": None,
    }
    stamp = datetime.fromisoformat(str(event["timestamp"]))
    assert stamp.tzinfo == UTC
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_failures_and_invalid_rows_are_warnings() -> None:
    observer, out = json_logger()

    observer.outcome(Outcome(ROW, Result.FAILED, 404, 1, 1.0, "HTTP 404: playlist not found"))
    observer.rejected(InvalidRow("in.csv", 9, "ts is missing", {}))

    failed, invalid = events(out)
    assert (failed["level"], failed["result"], failed["error"]) == (
        "warning",
        "failed",
        "HTTP 404: playlist not found",
    )
    assert (invalid["level"], invalid["event"], invalid["line"]) == ("warning", "invalid_row", 9)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_keys_are_redacted_wherever_they_appear(fmt: str) -> None:
    out = io.StringIO()
    log = logs.configure(fmt=fmt, secrets=(API_KEY, APP_KEY), stream=out)

    log.error(
        "oops",
        error=f"refused {API_KEY}",
        nested={"deep": [f"x{APP_KEY}y"]},
        exc=ValueError(f"bad key {API_KEY}"),
    )

    text = out.getvalue()
    assert API_KEY not in text
    assert APP_KEY not in text
    assert json.dumps(APP_KEY)[1:-1] not in text  # nor in its escaped JSON form
    assert text.count(logs.REDACTED) == 3


def test_a_redacted_line_is_still_json() -> None:
    out = io.StringIO()
    log = logs.configure(fmt="json", secrets=(APP_KEY,), stream=out)

    log.warning("row", headers={"DD-APPLICATION-KEY": APP_KEY}, keys=[APP_KEY])

    (event,) = events(out)
    assert event["headers"] == {"DD-APPLICATION-KEY": logs.REDACTED}
    assert event["keys"] == [logs.REDACTED]


@pytest.mark.parametrize("secret", ["a", "1", '"', "row"])
def test_a_key_that_occurs_in_the_syntax_keeps_the_line_whole(secret: str) -> None:
    """A short key (the sandbox takes any) also occurs in field names, numbers or quotes:
    the line is still JSON with every field name, and the key is gone from the values."""
    observer, out = json_logger(secrets=(secret,))

    observer.outcome(Outcome(ROW, Result.FAILED, 400, 1, 1.0, f"HTTP 400: bad {secret}"))

    (event,) = events(out)
    assert set(event) >= {"event", "level", "result", "playlist_id", "session_id", "error"}
    assert event["playlist_id"] == 1001  # numbers are left alone
    assert event["error"] == f"HTTP 400: bad {secret}".replace(secret, logs.REDACTED)


def test_no_secrets_means_nothing_is_replaced() -> None:
    observer, out = json_logger(secrets=("",))

    observer.outcome(Outcome(ROW, Result.ALREADY_PRESENT, 200, 2, 1.0))

    assert events(out)[0]["result"] == "already_present"


@pytest.mark.parametrize(
    "now",
    [
        1_704_067_200.0,  # a whole second: the fraction is still written
        1_704_067_200.123456,
        1_704_067_259.999999,  # the last microsecond before the next minute
        1_704_067_260.5,
    ],
)
def test_timestamps_match_the_standard_format(now: float) -> None:
    expected = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")

    stamp = logs.UtcTimestamps()(now)

    assert stamp == expected.replace("+00:00", "Z")
    assert datetime.fromisoformat(stamp) == datetime.fromtimestamp(now, UTC)


def test_timestamps_follow_the_clock_across_seconds() -> None:
    stamps = logs.UtcTimestamps()

    first, second = stamps(1_704_067_200.25), stamps(1_704_067_201.75)

    assert first.endswith("00:00:00.250000Z")
    assert second.endswith("00:00:01.750000Z")


def test_console_lines_are_readable() -> None:
    out = io.StringIO()
    log = logs.configure(fmt="console", secrets=(), stream=out)

    logs.LogObserver(log).outcome(Outcome(ROW, Result.CREATED, 201, 1, 1.0))

    assert "row" in out.getvalue()
    assert "result=created" in out.getvalue()


async def test_lines_logged_in_one_turn_of_the_loop_leave_together_at_its_end() -> None:
    out = io.BytesIO()
    writer = logs.LineWriter(out)

    writer.info(b"one")
    writer.warning(b"two")
    held = out.getvalue()
    await asyncio.sleep(0)

    assert held == b""
    assert out.getvalue() == b"one\ntwo\n"


async def test_a_line_from_another_thread_is_written_at_once_after_those_waiting() -> None:
    out = io.BytesIO()
    writer = logs.LineWriter(out)

    writer.info(b"from the loop")
    await asyncio.to_thread(writer.info, b"from a thread")

    assert out.getvalue() == b"from the loop\nfrom a thread\n"


def test_outside_a_loop_each_line_is_written_at_once() -> None:
    out = io.BytesIO()
    writer = logs.LineWriter(out)

    writer.error(b"cannot start")

    assert out.getvalue() == b"cannot start\n"


def test_lines_still_waiting_at_exit_are_written() -> None:
    out = io.BytesIO()
    writer = logs.LineWriter(out)

    def log_and_stop() -> None:
        writer.info(b"last words")
        loop.stop()  # the loop stops before its next turn, where the flush waits

    loop = asyncio.new_event_loop()
    loop.call_soon(log_and_stop)
    loop.run_forever()
    loop.close()
    assert out.getvalue() == b""

    logs._flush_at_exit()

    assert out.getvalue() == b"last words\n"
