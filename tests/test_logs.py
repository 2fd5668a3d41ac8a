"""The log lines: their fields, their timestamps, and keys that never get through."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import KEYS, ROOT, TS, clean_env, rows, run_cli, write_csv

from worker import logs, scrub
from worker.events import Ended, Skipped
from worker.rowlog import LogSink
from worker.rows import InvalidRow, Outcome, Result, Row
from worker.sandbox import Sandbox

API_KEY = "api-key-0123456789abcdef"
APP_KEY = 'app-key-"quoted"\\and\tescaped'
ROW = Row(1001, "00000000-0000-0000-0000-000000000001", 1_704_067_200_000, "rum", "in.csv", 7)


def json_logger(
    secrets: tuple[str, ...] = (API_KEY, APP_KEY),
) -> tuple[LogSink, io.StringIO]:
    out = io.StringIO()
    log = logs.configure(fmt="json", secrets=secrets, stream=out)
    return LogSink(log), out


def events(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_row_outcome_is_one_json_line_with_every_field() -> None:
    observer, out = json_logger()

    observer(Outcome(ROW, Result.CREATED, 201, 1, 12.3456))

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

    observer(Outcome(ROW, Result.FAILED, 404, 1, 1.0, "HTTP 404: playlist not found"))
    observer(InvalidRow("in.csv", 9, "ts is missing", {}))

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
    assert text.count(scrub.REDACTED) == 3


def test_a_redacted_line_is_still_json() -> None:
    out = io.StringIO()
    log = logs.configure(fmt="json", secrets=(APP_KEY,), stream=out)

    log.warning("row", headers={"DD-APPLICATION-KEY": APP_KEY}, keys=[APP_KEY])

    (event,) = events(out)
    assert event["headers"] == {"DD-APPLICATION-KEY": scrub.REDACTED}
    assert event["keys"] == [scrub.REDACTED]


@pytest.mark.parametrize("secret", ["a", "1", '"', "row"])
def test_a_key_that_occurs_in_the_syntax_keeps_the_line_whole(secret: str) -> None:
    """A short key (the sandbox takes any) also occurs in field names, numbers or quotes:
    the line is still JSON with every field name, and the key is gone from the values."""
    observer, out = json_logger(secrets=(secret,))

    observer(Outcome(ROW, Result.FAILED, 400, 1, 1.0, f"HTTP 400: bad {secret}"))

    (event,) = events(out)
    assert set(event) >= {"event", "level", "result", "playlist_id", "session_id", "error"}
    assert event["playlist_id"] == 1001  # numbers are left alone
    assert event["error"] == f"HTTP 400: bad {scrub.REDACTED}"


REAL_API_KEY = "0123456789abcdef" * 2
"""As long as a real API key (32 hex characters): redacted wherever it occurs."""
REAL_APP_KEY = "fedcba9876543210" * 2 + "01234567"
"""As long as a real application key (40 hex characters)."""
QUOTE_KEY = "key'with-a-quote-0123456789"
"""Long, with a `'`, which `repr` escapes in a string that also holds a `"`."""
R = scrub.REDACTED

REDACTION_CASES = [
    pytest.param(
        (REAL_API_KEY, REAL_APP_KEY),
        {
            "url": f"https://api.example/v2?api_key={REAL_API_KEY}&page=2",
            "glued": f"key{REAL_APP_KEY}key",
            "error": ValueError(f"refused:{REAL_API_KEY}"),
            "nested": {"deep": [f"({REAL_APP_KEY})"]},
        },
        {
            "url": f"https://api.example/v2?api_key={R}&page=2",
            "glued": f"key{R}key",
            "error": f"refused:{R}",
            "nested": {"deep": [f"({R})"]},
        },
        id="long-keys-embedded-in-text",
    ),
    pytest.param(
        (QUOTE_KEY,),
        {"said": f'say "hi" {QUOTE_KEY}', "listed": [f'"{QUOTE_KEY}"']},
        {"said": f'say "hi" {R}', "listed": [f'"{R}"']},
        id="long-key-escaped-by-repr",
    ),
    pytest.param(
        ("x", "y"),
        {
            "value": "x",
            "quoted": '"y"',
            "pair": "key=x,",
            "words": "x y",
            "listed": ["x", "y"],
            "after_newline": "line\nx",
        },
        {
            "value": R,
            "quoted": f'"{R}"',
            "pair": f"key={R},",
            "words": f"{R} {R}",
            "listed": [R, R],
            "after_newline": f"line\n{R}",
        },
        id="short-keys-as-whole-tokens",
    ),
    pytest.param(
        ("x", "y"),
        {
            "event": "summary",
            "result": "already_present",
            "source": "mixed_bad_rows.csv",
            "playlist_id": 1001,
            "note": "mixed, yes: 0x1y",
        },
        {
            "event": "summary",
            "result": "already_present",
            "source": "mixed_bad_rows.csv",
            "playlist_id": 1001,
            "note": "mixed, yes: 0x1y",
        },
        id="short-keys-inside-words",
    ),
    pytest.param(
        ("result", "playlist_id"),
        {"event": "row", "result": "created", "playlist_id": 1001, "error": "no result"},
        {"event": "row", "result": "created", "playlist_id": 1001, "error": f"no {R}"},
        id="keys-equal-to-field-names",
    ),
    pytest.param(
        (REAL_API_KEY, REAL_APP_KEY, "x", "y"),
        {"error": f"{REAL_API_KEY} and {REAL_APP_KEY}", "pair": "x,y"},
        {"error": f"{R} and {R}", "pair": f"{R},{R}"},
        id="both-keys-at-once",
    ),
    pytest.param(
        (REAL_API_KEY, REAL_API_KEY + "ffff"),
        {"error": f"k={REAL_API_KEY}ffff; k={REAL_API_KEY}"},
        {"error": f"k={R}; k={R}"},
        id="long-key-inside-a-longer-one",
    ),
    pytest.param(
        ("x", "key-x-0123456789abcdef"),
        {"error": "key-x-0123456789abcdef x"},
        {"error": f"{R} {R}"},
        id="short-key-inside-a-long-one",
    ),
    pytest.param(
        ("ab", "ab-c"),
        {"error": "ab-c ab abc"},
        {"error": f"{R} {R} abc"},
        id="short-key-inside-a-short-one",
    ),
    pytest.param(
        (REAL_API_KEY[:20], REAL_API_KEY[4:24]),
        {"error": f"<{REAL_API_KEY[:24]}>"},
        {"error": f"<{R}>"},
        id="overlapping-keys",
    ),
    pytest.param(
        ("", "x"),
        {"empty": "", "word": "mixed", "value": "x"},
        {"empty": "", "word": "mixed", "value": R},
        id="an-empty-key-is-no-key",
    ),
]


def one_line(fmt: str, secrets: tuple[str, ...], fields: dict[str, object]) -> str:
    out = io.StringIO()
    log = logs.configure(fmt=fmt, secrets=secrets, stream=out)
    fields = dict(fields)
    log.warning(str(fields.pop("event", "probe")), **fields)
    (line,) = out.getvalue().splitlines()
    return line


@pytest.mark.parametrize(("secrets", "logged", "expected"), REDACTION_CASES)
def test_what_a_json_line_shows_of_the_keys(
    secrets: tuple[str, ...], logged: dict[str, object], expected: dict[str, object]
) -> None:
    line = one_line("json", secrets, logged)

    event = json.loads(line)
    assert {name: event[name] for name in expected} == expected
    assert not any(key in line for key in secrets if len(key) >= scrub.LONG_SECRET_CHARS)
    assert set(event) == {*logged, "event", "level", "timestamp"}  # field names as logged


@pytest.mark.parametrize(("secrets", "logged", "expected"), REDACTION_CASES)
def test_what_a_console_line_shows_of_the_keys(
    secrets: tuple[str, ...], logged: dict[str, object], expected: dict[str, object]
) -> None:
    line = one_line("console", secrets, logged)

    for name, value in expected.items():
        if name == "event":
            assert f"] {value} " in line
        else:  # a string is written as it is, or as `repr` when it holds quotes or spaces
            assert f" {name}={value}" in line or f" {name}={value!r}" in line, name
    assert line.count(R) == sum(str(value).count(R) for value in expected.values())
    assert not any(key in line for key in secrets if len(key) >= scrub.LONG_SECRET_CHARS)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_row_line_with_one_letter_keys_keeps_its_words(fmt: str) -> None:
    out = io.StringIO()
    log = logs.configure(fmt=fmt, secrets=("x", "y"), stream=out)
    row = Row(1001, ROW.session_id, ROW.ts, "rum", "in/mixed_bad_rows.csv", 7)

    LogSink(log)(Outcome(row, Result.ALREADY_PRESENT, 200, 1, 1.0))

    text = out.getvalue()
    assert scrub.REDACTED not in text
    if fmt == "json":
        (event,) = events(out)
        assert (event["result"], event["source"]) == ("already_present", row.source)
        assert event["playlist_id"] == 1001
    else:
        assert "result=already_present" in text
        assert "source=in/mixed_bad_rows.csv" in text


@pytest.mark.parametrize("kind", [str, bytes])
def test_the_finder_finds_every_form_of_every_key_in_any_case_wherever_it_stands(
    kind: type,
) -> None:
    # Forms that share a first character and forms that do not, as the shapes of a hex
    # key do (as sent, every character \\u-escaped, every byte percent-encoded): the
    # finder searches a form only where its first character occurs, and must still find
    # each one, at the start, inside or at the end of a line.
    secrets = ("0a1b2c3d4e5f60718293a4b5c6d7e8f9", "f" * 40, "0a1b2c3d" + "9" * 24)
    scrubber = scrub.Scrubber(secrets)

    def encode(text: str) -> str | bytes:
        return text if kind is str else text.encode()

    finder: scrub.Finder[Any] = scrubber.finder(lambda shape: (encode(shape),))
    forms = [shape for secret in secrets for shape in scrub.shapes(secret)]
    assert {form[0] for form in forms} >= {"0", "f", "\\", "%"}
    for form in forms:
        for line in (form, f'{{"a":1,"b":"{form.upper()}"}}', f"x {form}"):
            assert finder.found(encode(line)), line
    for clean in ('{"event":"row","session_id":"00000000-0000-0000-0000-000000000001"}', ""):
        assert not finder.found(encode(clean))
    assert not finder.found(encode(forms[1][:-1] + "%5C" + forms[-1][:-1]))  # near misses


def test_an_empty_key_finds_and_replaces_nothing() -> None:
    scrubber = scrub.Scrubber(["", ""])

    assert not scrubber.finder(lambda shape: (shape,)).found("any line")
    assert scrubber.value("any line") == "any line"


def test_no_secrets_means_nothing_is_replaced() -> None:
    observer, out = json_logger(secrets=("",))

    observer(Outcome(ROW, Result.ALREADY_PRESENT, 200, 2, 1.0))

    assert events(out)[0]["result"] == "already_present"


@pytest.mark.parametrize(
    "now_us",
    [
        1_704_067_200_000_000,  # a whole second: the fraction is still written
        1_704_067_200_123_456,
        1_704_067_259_999_999,  # the last microsecond before the next minute
        1_704_067_260_500_000,
        1_704_067_260_000_999,  # microseconds only
    ],
)
def test_timestamps_match_the_standard_format(now_us: int) -> None:
    moment = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=now_us)
    expected = moment.isoformat(timespec="microseconds")

    stamp = logs.UtcTimestamps()(now_us * 1000 + 999)  # nanoseconds are cut, not rounded

    assert stamp == expected.replace("+00:00", "Z")
    assert datetime.fromisoformat(stamp) == moment


def test_timestamps_follow_the_clock_across_milliseconds_and_seconds() -> None:
    stamps = logs.UtcTimestamps()
    second = 1_704_067_200 * 10**9

    written = [
        stamps(second + ns)
        for ns in (250_000_000, 250_000_001, 250_001_000, 251_500_000, 1_750_000_000)
    ]

    assert [stamp[-16:] for stamp in written] == [
        "00:00:00.250000Z",
        "00:00:00.250000Z",
        "00:00:00.250001Z",
        "00:00:00.251500Z",
        "00:00:01.750000Z",
    ]


def test_console_lines_are_readable() -> None:
    out = io.StringIO()
    log = logs.configure(fmt="console", secrets=(), stream=out)

    LogSink(log)(Outcome(ROW, Result.CREATED, 201, 1, 1.0))

    assert "row" in out.getvalue()
    assert "result=created" in out.getvalue()


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as standard error does in one."""

    def isatty(self) -> bool:
        return True


def console_line_on_a_terminal() -> str:
    out = Terminal()
    log = logs.configure(fmt="console", secrets=(), stream=out)
    LogSink(log)(Outcome(ROW, Result.FAILED, 404, 1, 1.0, "HTTP 404: playlist not found"))
    return out.getvalue()


@pytest.fixture
def colour_terminal(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment that leaves the colour to the terminal, whatever the suite's is."""
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    return monkeypatch


@pytest.mark.parametrize("no_color", [None, ""], ids=["unset", "empty"])
def test_console_lines_are_in_colour_on_a_terminal(
    colour_terminal: pytest.MonkeyPatch, no_color: str | None
) -> None:
    """The rule's other side: an empty `NO_COLOR` is no request, as for rich."""
    if no_color is not None:
        colour_terminal.setenv("NO_COLOR", no_color)

    assert "\x1b[" in console_line_on_a_terminal()


@pytest.mark.parametrize(("name", "value"), [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_console_lines_drop_the_colour_as_rich_does(
    colour_terminal: pytest.MonkeyPatch, name: str, value: str
) -> None:
    colour_terminal.setenv(name, value)

    line = console_line_on_a_terminal()

    assert "result=failed" in line
    assert "\x1b[" not in line


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


async def test_a_run_with_one_letter_keys_logs_every_word_whole(
    make_sandbox: Callable[..., Awaitable[Sandbox]], tmp_path: Path
) -> None:
    """The README's sandbox keys: `x` and `y` occur in field values, file names and
    event names, and none of them is touched."""
    sandbox = await make_sandbox()  # takes any key pair
    path = write_csv(
        tmp_path / "mixed_bad_rows.csv",
        [*rows(3), {"playlist_id": "twelve", "session_id": "s", "ts": TS}],
    )
    args = ("run", str(path), "--base-url", sandbox.base_url, "--no-journal")
    keys = {"DD_API_KEY": "x", "DD_APP_KEY": "y"}

    await run_cli(*args, env=keys)
    done = await run_cli(*args, env=keys)  # the same rows again: already present

    assert done.code == 1, done.stderr  # for the invalid row
    assert all(line.startswith("{") for line in done.stderr.splitlines())
    assert '"event":"summary"' in done.stderr
    assert done.summary["already_present"] == 3
    assert {event["result"] for event in done.events("row")} == {"already_present"}
    lines = [*done.events("row"), *done.events("invalid_row")]
    assert {event["source"] for event in lines} == {str(path)}
    assert scrub.REDACTED not in done.stderr  # no word in this run is a key
    assert not {"x", "y"} & {str(v) for event in done.events() for v in event.values()}


def closed_pipe() -> int:
    """The writing end of a pipe whose reader is gone: every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_log_into_a_closed_pipe_falls_silent_instead_of_raising(fmt: str) -> None:
    write = closed_pipe()
    with open(write, "w", encoding="utf-8") as stream:
        log = logs.configure(fmt=fmt, secrets=(), stream=stream)

        log.warning("first", detail="nobody reads this")
        log.warning("second")

        os.write(stream.fileno(), b"to the null device now")  # EPIPE no more


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_a_run_whose_stderr_is_gone_still_writes_its_report(
    make_sandbox: Callable[..., Awaitable[Sandbox]], tmp_path: Path, fmt: str
) -> None:
    """As after SIGHUP (EIO) or `2>&1 | head` (EPIPE): the log cannot be written, and the
    run goes on to the end, its report included."""
    sandbox = await make_sandbox()
    path = write_csv(tmp_path / "in.csv", rows(5))
    report = tmp_path / "report.json"
    write = closed_pipe()
    args = ("run", str(path), "--base-url", sandbox.base_url, "--no-journal", "--log-format", fmt)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            *args,
            "--report",
            str(report),
            cwd=ROOT,
            env=clean_env(KEYS),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=write,
        )
    finally:
        os.close(write)
    code = await asyncio.wait_for(process.wait(), 60)

    assert code == 0
    assert json.loads(report.read_text())["created"] == 5
    assert len(sandbox.store) == 5


@pytest.mark.parametrize("cap", [3, None])
def test_a_person_is_shown_a_few_warnings_of_each_kind_and_told_how_many_more(
    cap: int | None,
) -> None:
    out = io.StringIO()
    sink = LogSink(logs.configure(fmt="json", secrets=(), stream=out), warnings_shown=cap)
    failed = [
        Outcome(ROW._replace(line=n), Result.FAILED, 404, 1, 1.0, "HTTP 404: no such playlist")
        for n in range(5)
    ]
    invalid = [InvalidRow("in.csv", n, "playlist_id is missing", {}) for n in range(4)]
    for event in [*failed[:2], *invalid, *failed[2:], Outcome(ROW, Result.CREATED, 201, 1, 1.0)]:
        sink(event)
    sink(Ended({}))

    lines = events(out)
    names = [line["event"] for line in lines]
    if cap is None:  # logs for machines: every line
        assert names == ["row"] * 2 + ["invalid_row"] * 4 + ["row"] * 4
        return
    assert names == [
        *["row", "row", "invalid_row", "invalid_row", "invalid_row", "not_shown"],
        *["row", "not_shown", "row", "not_shown", "not_shown"],
    ]
    assert [line["kind"] for line in lines if line["event"] == "not_shown"] == [
        "invalid_row",
        "row",
        "row",
        "invalid_row",
    ]
    ends = [(line["kind"], line["lines"]) for line in lines if "lines" in line]
    assert ends == [("row", 2), ("invalid_row", 1)]
    assert all(
        "--dead-letter" in line["detail"] or "validate" in line["detail"] for line in lines[-2:]
    )
    assert lines[-3]["result"] == "created"  # a success is logged whatever the cap


@pytest.mark.parametrize(
    ("journal", "because"),
    [
        (True, "done in an earlier run (the journal) or repeated within this run"),
        (False, "repeated within this run"),
    ],
)
def test_the_skipped_line_says_why_as_the_run_can_know(journal: bool, because: str) -> None:
    """Without a journal (`--no-journal`, `verify`) a row is skipped only as a repeat."""
    out = io.StringIO()
    sink = LogSink(logs.configure(fmt="json", secrets=(), stream=out), journal=journal)
    sink(Skipped([ROW, ROW]))
    sink(Ended({}))

    (line,) = events(out)
    assert (line["event"], line["rows"], line["detail"]) == ("skipped", 2, because)


async def test_a_row_line_is_made_at_the_end_of_the_turn_with_the_time_it_was_logged() -> None:
    """A row that went well is logged as a line made when the turn's lines are written:
    the same fields, in the order logged among the turn's other lines, at the time it was
    logged, not the time it was made."""
    observer, out = json_logger()
    failed = Outcome(ROW, Result.FAILED, 404, 1, 2.0, f"HTTP 404: {API_KEY}")
    before = datetime.now(UTC)
    observer(Outcome(ROW, Result.CREATED, 201, 1, 12.3456))
    observer(failed)  # a warning's line is made at once
    observer(Outcome(ROW._replace(line=8), Result.ALREADY_PRESENT, 200, 2, 1.0))
    logged = datetime.now(UTC)
    while datetime.now(UTC) < logged + timedelta(milliseconds=5):
        pass  # the rest of the turn: time passes before the lines are made
    assert out.getvalue() == ""
    await asyncio.sleep(0)

    first, warning, last = events(out)
    assert (first["result"], warning["result"], last["result"]) == (
        "created", "failed", "already_present"
    )  # fmt: skip
    assert first == {
        "event": "row", "result": "created", "playlist_id": 1001,
        "session_id": ROW.session_id, "data_source": "rum", "status": 201, "attempts": 1,
        "latency_ms": 12.35, "source": "in.csv", "line": 7, "error": None,
        "level": "info", "timestamp": first["timestamp"],
    }  # fmt: skip
    assert (warning["level"], last["level"], last["line"]) == ("warning", "info", 8)
    for line in (first, last):
        when = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
        assert before <= when <= logged
    assert API_KEY not in out.getvalue()
