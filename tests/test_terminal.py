"""A run as a person at a terminal sees it: the start line, the display, the table at the
end and the next steps; and, off a terminal, the events scripts parse, unchanged."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from pseudo_terminal import ROOT, Terminal, plain
from rich.console import Console
from support import KEYS, TS, MakeSandbox, keyed_sandbox, rows, run_cli, write_csv

from worker.cli import build_parser
from worker.cli.run import config_from_args
from worker.presenting import summary_context
from worker.terminal import (
    RunStart,
    Step,
    SummaryContext,
    exit_reason,
    next_steps,
    render_summary,
    start_line,
)

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7]|38;5;[0-9]+)m")
"""A foreground colour escape (bold and dim are not colours)."""

REPORT: dict[str, object] = {
    "rows_read": 300,
    "invalid": 8,
    "skipped": 0,
    "created": 287,
    "already_present": 0,
    "failed": 5,
    "not_attempted": 0,
    "requests": 320,
    "rate_limited": 2,
    "retries": 15,
    "elapsed_s": 5.2,
    "exit_code": 1,
    "paused_s": 1.3,
    "dry_run": False,
}


# --- the start line -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "shown"),
    [
        pytest.param(
            RunStart(
                target="https://api.datadoghq.eu",
                inputs=["sessions.csv"],
                journal=Path("/home/sre/.local/state/rum-playlist-ingest/journal.sqlite3"),
                done_rows=1_204,
            ),
            "Adding the rows of sessions.csv to their playlists on https://api.datadoghq.eu"
            " · journal ~/.local/state/rum-playlist-ingest/journal.sqlite3"
            " (1,204 rows done before for this target: skipped if met)",
            id="a file, the journal's done rows",
        ),
        pytest.param(
            RunStart(
                target="http://127.0.0.1:5555",
                sandbox=True,
                query="@application.id:abc",
                playlist="123",
                journal=None,
            ),
            "Adding the sessions matching '@application.id:abc' to playlist 123 on the sandbox"
            " at http://127.0.0.1:5555 · no journal (the sandbox goes with the run)",
            id="a query into one playlist, no journal",
        ),
        pytest.param(
            RunStart(
                target="https://api.datadoghq.com",
                inputs=["a.csv", "b.csv", "c.csv", "-"],
                shard="2/8",
                journal=Path("/data/j.sqlite3"),
                fresh=True,
                dry_run=True,
            ),
            "Dry run: would add the rows of a.csv, b.csv and 2 more inputs to their playlists"
            " on https://api.datadoghq.com · shard 2/8"
            " · journal /data/j.sqlite3 (--fresh: rows done before are sent again)",
            id="many inputs, a shard, --fresh, a dry run",
        ),
        pytest.param(
            RunStart(
                target="http://proxy.internal:8080",
                inputs=["-"],
                journal=Path("/data/j.sqlite3"),
                done_rows=0,
            ),
            "Adding the rows of standard input to their playlists on http://proxy.internal:8080"
            " · journal /data/j.sqlite3 (no rows done yet for this target)",
            id="standard input, an empty journal",
        ),
    ],
)
def test_the_start_line_says_what_will_happen_and_names_nothing_empty(
    start: RunStart, shown: str
) -> None:
    line = start_line(start, home=Path("/home/sre"))
    assert line == shown
    assert "None" not in line


def test_the_start_line_of_a_remove_and_of_an_undo() -> None:
    removing = RunStart(
        target="https://api.datadoghq.eu", inputs=["old.csv"], playlist="7",
        journal=None, doing=("Removing", "remove", "from"),
    )  # fmt: skip
    undoing = RunStart(
        target="https://api.datadoghq.eu", journal=None, doing=("Removing", "remove", "from"),
        rows="the sessions run 20261201T230000Z-1a2b3c4d created",
    )  # fmt: skip
    assert start_line(removing).startswith(
        "Removing the rows of old.csv from playlist 7 on https://api.datadoghq.eu"
    )
    assert start_line(undoing).startswith(
        "Removing the sessions run 20261201T230000Z-1a2b3c4d created from their playlists on"
    )


@pytest.mark.parametrize(
    ("done_rows", "said"), [(0, "no rows removed yet"), (300, "300 rows removed before")]
)
def test_the_journal_part_of_an_undo_counts_what_it_removed_not_what_was_added(
    done_rows: int, said: str
) -> None:
    undoing = RunStart(
        target="https://api.datadoghq.eu", journal=Path("/data/j.sqlite3"), done_rows=done_rows,
        doing=("Removing", "remove", "from"), rows="the sessions run r1 created",
    )  # fmt: skip
    assert f"journal /data/j.sqlite3 ({said} for this target" in start_line(undoing)


def test_a_stopped_sandbox_run_says_a_rerun_starts_from_an_empty_sandbox() -> None:
    report = {**REPORT, "invalid": 0, "failed": 0, "not_attempted": 241, "exit_code": 130}
    context = SummaryContext(inputs=["a.csv"], journal=False, target_outlives_run=False)
    (step,) = next_steps(report, context)
    assert step.what == "rerun the same command: a new sandbox starts empty, so every row is sent"


def test_a_password_in_a_url_is_never_shown() -> None:
    url = "https://user:s3cret@api.example"
    line = start_line(RunStart(target=url, inputs=["a.csv"]))
    assert "https://user:***@api.example" in line
    context = SummaryContext(repeated_options=["--base-url", url], dead_letter="d.ndjson")
    (retry,) = commands(next_steps({**REPORT, "invalid": 0}, context))
    assert "s3cret" not in retry
    assert retry.endswith("--base-url 'https://user:***@api.example'")  # quoted: `*`


# --- why the exit status is what it is, and what to do next ----------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"invalid": 0, "failed": 0, "exit_code": 0}, "Exit 0: every row is in its playlist."),
        (
            {"invalid": 0, "failed": 0, "exit_code": 0, "dry_run": True, "not_attempted": 292},
            "Exit 0: every row is valid; 292 rows would be sent.",
        ),
        ({}, "Exit 1: 8 rows invalid and 5 failed for good; every other row is in its playlist."),
        ({"invalid": 0, "failed": 1}, "Exit 1: 1 row failed for good; every other row is in its"),
        ({"invalid": 0, "failed": 0}, "Exit 1: the report could not be written"),
        (
            {"failed": 0, "dry_run": True},
            "Exit 1: 8 rows invalid; every other row is valid.",
        ),
        ({"exit_code": 2}, "Exit 2: the run could not go on (see the error above)"),
        ({"exit_code": 3}, "Exit 3: aborted, see the error above."),
        ({"exit_code": 130}, "Exit 130: stopped by SIGINT; what was confirmed is kept."),
        ({"exit_code": 143}, "Exit 143: stopped by SIGTERM"),
        ({"exit_code": 129}, "Exit 129: stopped by SIGHUP"),
    ],
)
def test_the_exit_status_is_explained_in_one_line(changes: dict[str, object], reason: str) -> None:
    line = exit_reason({**REPORT, **changes}, SummaryContext())
    assert line.startswith(reason)
    assert "\n" not in line


def test_the_exit_status_of_a_remove_or_a_verify_says_what_it_checked() -> None:
    removed = {**REPORT, "invalid": 0, "failed": 0, "exit_code": 0}
    verified = {**REPORT, "invalid": 0, "failed": 0, "missing": 3}
    assert exit_reason(removed, SummaryContext(command="remove")) == (
        "Exit 0: every row is out of its playlist."
    )
    assert exit_reason(verified, SummaryContext(command="verify")) == (
        "Exit 1: 3 rows missing from their playlists; every other row is in its playlist."
    )
    assert exit_reason({**verified, "missing": 1}, SummaryContext(command="verify")) == (
        "Exit 1: 1 row missing from its playlist; every other row is in its playlist."
    )


def test_an_abort_says_why_when_the_run_knows() -> None:
    context = SummaryContext(abort_detail="the API keeps refusing the keys")
    assert exit_reason({**REPORT, "exit_code": 3}, context) == (
        "Exit 3: aborted, the API keeps refusing the keys."
    )


def commands(steps: list[Step]) -> list[str]:
    return [step.command for step in steps if step.command is not None]


def test_the_next_steps_name_the_exact_commands_to_retry_verify_and_undo() -> None:
    context = SummaryContext(
        inputs=["sessions.csv"],
        repeated_options=["--site", "datadoghq.eu"],
        row_options=["--ts-unit", "s"],
        dead_letter="out/failed.ndjson",
        report_path="out/report.json",
    )
    steps = next_steps({**REPORT, "run_id": "01JDX3Q7"}, context)
    assert commands(steps) == [
        "rum-playlist-ingest validate sessions.csv --ts-unit s",
        "rum-playlist-ingest run out/failed.ndjson --dead-letter out/failed.retry.ndjson"
        " --site datadoghq.eu",
        "rum-playlist-ingest verify sessions.csv --ts-unit s --site datadoghq.eu",
        "rum-playlist-ingest undo 01JDX3Q7 --site datadoghq.eu",
    ]
    assert "5 rows that failed are in out/failed.ndjson" in steps[1].what
    assert steps[-1].what == "the report is in out/report.json"


def test_after_a_remove_the_failed_rows_are_removed_again_and_nothing_is_verified() -> None:
    context = SummaryContext(inputs=["old.csv"], dead_letter="failed.ndjson", command="remove")
    steps = next_steps({**REPORT, "invalid": 0, "run_id": "r2"}, context)
    assert commands(steps) == [
        "rum-playlist-ingest remove failed.ndjson --dead-letter failed.retry.ndjson"
    ]


@pytest.mark.parametrize(
    ("report", "context", "expected"),
    [
        pytest.param(
            {**REPORT, "run_id": "r1", "invalid": 0},
            SummaryContext(
                inputs=["a.csv"],
                repeated_options=["--sandbox"],
                dead_letter="d.ndjson",
                target_outlives_run=False,
            ),
            ["rum-playlist-ingest run d.ndjson --dead-letter d.retry.ndjson --sandbox"],
            id="a sandbox run: its sandbox is gone, nothing to verify or undo",
        ),
        pytest.param(
            {**REPORT, "invalid": 0, "run_id": "r1", "created": 0},
            SummaryContext(inputs=["-"]),
            [],
            id="standard input and nothing created: nothing to verify or undo",
        ),
        pytest.param(
            {**REPORT, "invalid": 0, "failed": 0, "exit_code": 0},
            SummaryContext(inputs=["a.csv"]),
            [],
            id="no run id yet: no verify or undo",
        ),
        pytest.param(
            {**REPORT, "invalid": 0, "failed": 0, "exit_code": 0, "run_id": "r1"},
            SummaryContext(inputs=["a.csv"], journal=False),
            ["rum-playlist-ingest verify a.csv"],
            id="no journal holds the run: verify, and no undo",
        ),
        pytest.param(
            {**REPORT, "failed": 0},
            SummaryContext(inputs=["a.csv", "-"]),
            [],
            id="standard input cannot be validated again",
        ),
        pytest.param(
            {**REPORT, "invalid": 0, "run_id": "r1", "dry_run": True},
            SummaryContext(inputs=["a.csv"], dead_letter="d.ndjson"),
            ["rum-playlist-ingest run d.ndjson --dead-letter d.retry.ndjson"],
            id="a dry run undoes nothing",
        ),
    ],
)
def test_commands_are_offered_only_where_they_apply(
    report: dict[str, object], context: SummaryContext, expected: list[str]
) -> None:
    assert commands(next_steps(report, context)) == expected


def test_a_stopped_run_with_failures_offers_one_rerun_for_both() -> None:
    report = {**REPORT, "invalid": 0, "failed": 3, "not_attempted": 40, "exit_code": 3}
    (step,) = next_steps(report, SummaryContext(inputs=["a.csv"]))
    assert step.what == (
        "rerun the same command to retry the rows that failed and send the rest; "
        "the journal skips the rows done"
    )


def test_the_rate_leaves_out_rows_no_request_was_sent_for() -> None:
    rerun = {**REPORT, "invalid": 0, "created": 0, "failed": 0, "skipped": 300}
    table = rendered(rerun, SummaryContext(inputs=["a.csv"]), 80)
    assert re.search(r"rate\s+-", plain(table)), plain(table)
    assert "rows/s" not in table


@pytest.mark.parametrize(
    ("journal", "advice"),
    [
        (True, "rerun the same command to send the rest; the journal skips the rows done"),
        (False, "without a journal, rows done are sent again"),
    ],
)
def test_an_unfinished_run_says_how_to_resume(journal: bool, advice: str) -> None:
    report = {**REPORT, "invalid": 0, "failed": 0, "not_attempted": 40, "exit_code": 143}
    (step,) = next_steps(report, SummaryContext(inputs=["a.csv"], journal=journal))
    assert advice in step.what


@pytest.mark.parametrize(
    "where",
    [
        ["--journal", "{tmp}/j.sqlite3"],
        ["--shard", "1/2"],
        ["--fresh", "--journal", "{tmp}/j.sqlite3"],
    ],
    ids=["explicit-journal", "shard", "fresh"],
)
def test_every_command_a_run_suggests_is_one_the_cli_accepts(
    tmp_path: Path, where: list[str]
) -> None:
    """From a run's own options to its summary's commands, each parsed as the CLI would:
    they reach the same target with the same key files, and those that read the journal
    (the retry, `undo`) find the run's; `verify` reads none."""
    for name in ("api", "app"):
        (tmp_path / name).write_text("k" * 32)
    argv = [
        "run", str(write_csv(tmp_path / "in.csv", rows(3))), "--base-url", "http://127.0.0.1:9",
        "--api-key-file", str(tmp_path / "api"), "--app-key-file", str(tmp_path / "app"),
        "--dead-letter", str(tmp_path / "failed.ndjson"),
        *(located := [word.format(tmp=tmp_path) for word in where]),
    ]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv), {"HOME": str(tmp_path)})
    report = {**REPORT, "run_id": "r1", "not_attempted": 3}

    steps = next_steps(report, summary_context(config, None))
    suggested = {shlex.split(c)[1]: shlex.split(c)[2:] for c in commands(steps)}

    assert set(suggested) == {"validate", "run", "verify", "undo"}
    for command, words in suggested.items():
        build_parser().parse_args([command, *words])  # exits 2 on an option it refuses
        if command != "validate":
            assert {"--base-url", "--api-key-file", "--app-key-file"} <= set(words), command
    for command in ("run", "undo"):
        assert located[-2:] == suggested[command][-2:], "the run's own journal"
    assert "--journal" not in suggested["verify"]
    assert "--shard" not in suggested["verify"]
    (resume,) = [step.what for step in steps if "send the rest" in step.what]
    assert ("without --fresh" in resume) == ("--fresh" in where)
    if "--shard" in where:
        assert any(step.what.startswith("once every shard has run") for step in steps)


def test_an_undo_says_what_it_left_and_how_to_take_the_doubtful_ones() -> None:
    report = {
        **REPORT, "invalid": 0, "failed": 0, "exit_code": 0, "removed": 50,
        "undo": {"run": "r1", "remove": 50, "added_later": 2, "maybe_created": 10},
    }  # fmt: skip
    context = SummaryContext(
        repeated_options=["--base-url", "http://127.0.0.1:9"],
        journal_options=["--journal", "j.sqlite3"],
        command="remove",
    )

    steps = next_steps(report, context)

    assert [step.what.split(" ")[:2] for step in steps] == [["2", "rows"], ["10", "rows"]]
    (command,) = commands(steps)
    assert command == (
        "rum-playlist-ingest undo r1 --include-maybe --base-url http://127.0.0.1:9"
        " --journal j.sqlite3"
    )
    build_parser().parse_args(shlex.split(command)[1:])


def test_a_verify_names_its_missing_file_and_the_command_that_adds_them() -> None:
    report = {
        **REPORT, "invalid": 0, "failed": 0, "exit_code": 1, "missing": 3,
        "verify": {"playlists": 1, "missing_file": "out/missing.ndjson"},
    }  # fmt: skip
    context = SummaryContext(repeated_options=["--site", "datadoghq.eu"], command="verify")

    (step,) = next_steps(report, context)

    assert "the 3 rows that are missing from their playlists: in out/missing.ndjson" in step.what
    assert step.command == "rum-playlist-ingest run out/missing.ndjson --fresh --site datadoghq.eu"
    build_parser().parse_args(shlex.split(step.command)[1:])


def rendered(report: dict[str, object], context: SummaryContext, width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, _environ={"NO_COLOR": "1"})
    render_summary(report, context, console)
    return out.getvalue()


def test_a_verify_is_titled_a_check_not_a_run() -> None:
    verified = {**REPORT, "invalid": 0, "failed": 0, "missing": 1, "verify": {"playlists": 1}}
    context = SummaryContext(inputs=["a.csv"], command="verify")

    text = rendered(verified, context, 80)

    assert "Check finished" in text.splitlines()[0], text
    assert "Run finished" not in text


@pytest.mark.parametrize("width", [40, 80])
def test_the_table_fits_a_narrow_terminal_and_honours_no_color(width: int) -> None:
    context = SummaryContext(inputs=["sessions.csv"], dead_letter="out/failed.ndjson")
    screen = rendered(REPORT, context, width)
    assert not COLOUR.search(screen)
    lines = plain(screen).splitlines()
    table = lines[1 : lines.index(next(line for line in lines if line.startswith("Exit 1")))]
    assert all(len(line.rstrip()) <= width for line in table), table
    labels = " ".join(table)
    for label in ("rows read", "invalid", "skipped", "created", "already present", "failed"):
        assert label in labels
    for label in ("not attempted", "requests", "429s", "retries", "paused", "time", "rate"):
        assert label in labels
    assert "56 rows/s" in labels  # 287 created and 5 failed in 5.2 s: not the invalid
    # A command is one line, whatever the width: the terminal wraps it, copy and paste
    # gets it whole.
    retry = "rum-playlist-ingest run out/failed.ndjson --dead-letter out/failed.retry.ndjson"
    assert any(line.strip() == retry for line in screen.splitlines())


# --- the real command on a pseudo-terminal ----------------------------------------------


SAMPLE = str(ROOT / "sample_inputs" / "sessions.csv")
"""300 valid rows."""
QUICK_SAMPLE_RUN = ["run", SAMPLE, "--sandbox", "--no-journal", "--sandbox-rate-limit", "100000/1"]


def run_on_terminal(
    argv: list[str],
    *,
    columns: int = 120,
    env: dict[str, str] | None = None,
    stdin: tuple[bytes, bytes] | None = None,
    output: Path | None = None,
) -> tuple[int, str, str]:
    """`python -m worker ARGV` on a terminal; with `stdin` (head, rest), the head is
    written first and the rest only once the display's first frame is on screen, so the
    first frame is drawn while the total cannot be known; with `output`, stdout and
    stderr go to that file (`> FILE 2>&1`). Returns the exit status, the first frame (the
    screen up to it, with stdin) and the whole screen."""
    command = [sys.executable, "-m", "worker", *argv]
    with Terminal(
        command, columns=columns, env=env, stdin_pipe=stdin is not None, output=output
    ) as terminal:
        first = ""
        if stdin is not None:
            head, rest = stdin
            terminal.write_stdin(head)
            first = plain(terminal.read_until(lambda text: "elapsed" in text))
            terminal.write_stdin(rest, close=True)
        code = terminal.finish()
        return code, first, terminal.screen


async def test_on_a_terminal_a_run_starts_with_a_line_spins_until_the_total_and_ends_with_a_table(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, playlists=[1001, 1002])
    good = rows(200)
    lost = {"playlist_id": 9999, "session_id": "no-such-playlist", "ts": TS}
    lines = [f"{r['playlist_id']},{r['session_id']},{r['ts']}\n" for r in [*good, lost]]
    # More than the 100 rows the reader looks ahead at before the run starts.
    head = "playlist_id,session_id,ts\n" + "".join(lines[:150])
    rest = "".join(lines[150:])
    journal, dead = tmp_path / "journal.sqlite3", tmp_path / "failed.ndjson"
    argv = ["run", "-", "--base-url", sandbox.base_url, "--journal", str(journal)]
    argv += ["--dead-letter", str(dead)]

    code, first, screen = await asyncio.to_thread(
        run_on_terminal, argv, env=KEYS, stdin=(head.encode(), rest.encode())
    )

    assert code == 1, screen
    text = plain(screen)
    assert text.splitlines()[0] == (
        f"Adding the rows of standard input to their playlists on {sandbox.base_url}"
        f" · journal {journal} (no rows done yet for this target)"
    )
    frame = next(line for line in first.splitlines() if line.startswith("ingest"))
    assert any(spin in frame for spin in SPINNER), frame
    for part in ("━", "ETA", "%"):  # no bar, no time left, no share before the total
        assert part not in frame
    assert "ingest ━" in text  # once the input has ended: a bar, with the exact total
    assert "201 of 201 rows (100%)" in text
    table = text[text.index("Run finished") :]
    assert re.search(r"rows read\s+201\b", table)
    assert re.search(r"created\s+200\b", table)
    assert re.search(r"failed\s+1\b", table)
    assert re.search(r"rate\s+[0-9.,k]+ rows/s", table)
    assert "Exit 1: 1 row failed for good; every other row is in its playlist." in table
    assert (
        f"rum-playlist-ingest run {dead} --dead-letter {tmp_path / 'failed.retry.ndjson'}"
        f" --base-url {sandbox.base_url} --journal {journal}"
    ) in table
    assert '"event"' not in text  # no JSON on a terminal
    assert "summary" not in text  # the table instead of the summary event

    # The same rows again: the start line counts what the journal holds as done.
    path = write_csv(tmp_path / "again.csv", good)
    argv = ["run", str(path), "--base-url", sandbox.base_url, "--journal", str(journal)]
    code, _, screen = await asyncio.to_thread(run_on_terminal, argv, env=KEYS)
    assert code == 0, screen
    text = plain(screen)
    assert "(200 rows done before for this target: skipped if met)" in text.splitlines()[0]
    assert re.search(r"skipped\s+200\b", text)
    assert "Exit 0: every row is in its playlist." in text


def test_a_narrow_terminal_without_colour_gets_the_table_and_log_lines_above_it() -> None:
    bad_rows = str(ROOT / "sample_inputs" / "mixed_bad_rows.csv")
    argv = ["run", bad_rows, "--sandbox", "--no-journal"]

    code, _, screen = run_on_terminal(argv, columns=40, env={"NO_COLOR": "1"})

    assert code == 1, screen
    assert not COLOUR.search(screen)
    text = plain(screen)
    assert text.count("invalid_row") == 8  # each bad line once, above the display
    assert not re.search(r"\] row\s", text)  # rows that went well are counted, not listed
    display = [line for line in text.splitlines() if re.search(r"rows/s|429s:|━", line)]
    assert display
    assert all(len(line.rstrip()) <= 40 for line in display), display
    table = text[text.index("Run finished") : text.index("Exit 1")].splitlines()
    assert all(len(line.rstrip()) <= 40 for line in table), table
    assert re.search(r"created\s+19\b", "\n".join(table))
    assert "Exit 1: 8 rows invalid; every other row is in its playlist." in " ".join(text.split())
    assert f"rum-playlist-ingest validate {bad_rows}" in text


def test_a_dumb_terminal_gets_no_live_display_but_the_table() -> None:
    code, _, screen = run_on_terminal(QUICK_SAMPLE_RUN, env={"TERM": "dumb"})

    assert code == 0, screen
    assert "\x1b[1A" not in screen  # nothing drawn in place
    text = plain(screen)
    assert text.startswith("Adding the rows of ")
    assert re.search(r"created\s+300\b", text)
    assert "Exit 0: every row is in its playlist." in text


def assert_a_whole_json_log(log: str, rows_sent: int) -> list[dict[str, object]]:
    """Every line a JSON event (no redraw of a display among them), one per row; the
    events."""
    assert "\x1b" not in log
    events = [json.loads(line) for line in log.splitlines()]
    assert sum(event["event"] == "row" for event in events) == rows_sent
    assert events[-1]["event"] == "summary"
    return events


def test_progress_asked_for_with_the_log_in_a_file_is_drawn_on_the_terminal(
    tmp_path: Path,
) -> None:
    """`run - --progress > log.json 2>&1` at a terminal: the display on the screen, the
    log in the file as a script reads it, every row line and its `progress` events in it."""
    log = tmp_path / "log.json"
    argv = ["run", "-", "--sandbox", "--no-journal", "--sandbox-rate-limit", "100000/1"]
    command = [sys.executable, "-m", "worker", *argv, "--progress", "--progress-interval", "0.01"]

    with Terminal(command, stdin_pipe=True, output=log) as terminal:
        terminal.write_stdin(Path(SAMPLE).read_bytes())
        # A redraw comes after half a second, so after a progress event was due.
        terminal.read_until(lambda text: text.count("elapsed") >= 2)
        terminal.write_stdin(b"", close=True)
        code = terminal.finish()

    assert code == 0, log.read_text()
    assert "\x1b[" in terminal.screen  # drawn in place
    assert "300 of 300 rows (100%)" in plain(terminal.screen)
    events = assert_a_whole_json_log(log.read_text(), 300)
    assert any(event["event"] == "progress" for event in events)


async def test_progress_asked_for_with_no_terminal_at_all_leaves_the_log_whole() -> None:
    """Under cron or CI there is no terminal to draw on: the log is all there is."""
    done = await run_cli(*QUICK_SAMPLE_RUN, "--progress")

    assert done.code == 0, done.stderr
    assert_a_whole_json_log(done.stderr, 300)


async def test_off_a_terminal_the_summary_event_keeps_every_field_of_the_report(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    path = write_csv(tmp_path / "in.csv", rows(5))
    report = tmp_path / "report.json"
    args = ["run", str(path), "--base-url", sandbox.base_url, "--no-journal"]
    done = await run_cli(*args, "--report", str(report), env=KEYS)
    assert done.code == 0, done.stderr
    summary = done.summary
    assert {k: v for k, v in summary.items() if k not in ("event", "level", "timestamp")} == (
        json.loads(report.read_text())
    )
    (start,) = done.events("start")
    assert start["target"] == sandbox.base_url
    assert "Run finished" not in done.stderr


@pytest.mark.parametrize(("removed", "shown"), [(0, False), (12, True)])
def test_removed_rows_are_counted_only_where_there_are_some(removed: int, shown: bool) -> None:
    screen = plain(rendered({**REPORT, "removed": removed}, SummaryContext(), 80))
    assert ("removed" in screen) is shown
