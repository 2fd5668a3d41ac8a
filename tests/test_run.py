"""The core run end to end: the real command, a real sandbox on loopback, no mocks.

Retries, 429s and refused keys are covered once, in test_faults.py and test_pacing.py."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from support import (
    API_KEY,
    APP_KEY,
    COMMAND_TIMEOUT_S,
    KEYS,
    TS,
    MakeSandbox,
    assert_invariant,
    finish,
    held,
    keyed_sandbox,
    keys_of,
    rows,
    run_cli,
    start_cli,
    write_csv,
    write_ndjson,
)

from worker.cli import main
from worker.sandbox import FaultConfig, Sandbox


def records(sandbox: Sandbox) -> dict[int, dict[str, dict[str, object]]]:
    """What the sandbox holds, with each record: {playlist: {session_id: record}}."""
    sessions: dict[str, list[dict[str, Any]]] = sandbox.state()["sessions"]  # type: ignore[assignment]
    return {
        int(playlist): {record["session_id"]: record for record in records}
        for playlist, records in sessions.items()
    }


def run_args(sandbox: Sandbox, *inputs: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["run", *inputs, "--base-url", sandbox.base_url, "--no-journal", *extra]


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "csv.gz", "ndjson.gz"])
async def test_every_row_lands_from_each_format(
    make_sandbox: MakeSandbox, tmp_path: Path, fmt: str
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(40, playlists=(1001, 1002, 1003))
    plain = tmp_path / f"in.{fmt.removesuffix('.gz')}"
    (write_csv if fmt.startswith("csv") else write_ndjson)(plain, items)
    path = plain
    if fmt.endswith(".gz"):
        path = tmp_path / f"in.{fmt}"
        path.write_bytes(gzip.compress(plain.read_bytes()))
    report = tmp_path / "report.json"

    done = await run_cli(*run_args(sandbox, str(path), extra=("--report", str(report))), env=KEYS)

    assert done.code == 0, done.stderr
    assert held(sandbox) == keys_of(items)
    written = json.loads(report.read_text())
    assert written["created"] == 40
    assert written["rows_read"] == 40
    assert written["exit_code"] == 0
    assert_invariant(written)
    assert len(done.events("row")) == 40


async def test_stdin_input(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(10)
    data = "".join(json.dumps(item) + "\n" for item in items).encode()

    done = await run_cli(
        *run_args(sandbox, "-", extra=("--format", "ndjson")), env=KEYS, stdin=data
    )

    assert done.code == 0, done.stderr
    assert held(sandbox) == keys_of(items)
    assert {event["source"] for event in done.events("row")} == {"<stdin>"}


async def test_request_shape_and_path_encoding(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    awkward = ["a/b?c#d%e f", "sess/../../admin", "ünïcødé-☃", "100%25"]
    items = [
        {"playlist_id": 7, "session_id": sid, "ts": TS + i, "data_source": "product_analytics"}
        for i, sid in enumerate(awkward)
    ]
    path = write_ndjson(tmp_path / "awkward.ndjson", items)

    done = await run_cli(*run_args(sandbox, str(path)), env=KEYS)

    assert done.code == 0, done.stderr
    assert set(records(sandbox)[7]) == set(awkward)
    requests: list[dict[str, Any]] = sandbox.state()["requests"]  # type: ignore[assignment]
    by_path = {r["raw_path"]: r for r in requests}
    for i, sid in enumerate(awkward):
        raw = f"/api/v2/rum/replay/playlists/7/sessions/{quote(sid, safe='')}"
        request = by_path[raw]
        assert request["method"] == "PUT"
        assert request["query_string"] == f"ts={TS + i}&data_source=product_analytics"
        assert request["accept"] == "application/json"
        assert request["user_agent"].startswith("rum-playlist-ingest/")
        names = {name.lower() for name in request["header_names"]}
        assert {"dd-api-key", "dd-application-key"} <= names
        assert "content-type" not in names
    for record in records(sandbox)[7].values():
        assert record["data_source"] == "product_analytics"


async def test_created_then_already_present(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    path = write_csv(tmp_path / "in.csv", rows(15))

    first = await run_cli(*run_args(sandbox, str(path)), env=KEYS)
    second = await run_cli(*run_args(sandbox, str(path)), env=KEYS)

    assert (first.code, second.code) == (0, 0)
    assert first.summary["created"] == 15
    assert second.summary["created"] == 0
    assert second.summary["already_present"] == 15
    assert {e["status"] for e in second.events("row")} == {200}


async def test_a_rejected_row_fails_while_its_neighbours_land(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, playlists=frozenset({1001}))
    items = rows(5, playlists=(1001,))
    items.insert(2, {"playlist_id": 4242, "session_id": "orphan", "ts": TS})
    path = write_csv(tmp_path / "in.csv", items)

    done = await run_cli(*run_args(sandbox, str(path)), env=KEYS)

    assert done.code == 1
    assert done.summary["created"] == 5
    assert done.summary["failed"] == 1
    (failed,) = [e for e in done.events("row") if e["result"] == "failed"]
    assert failed["status"] == 404
    assert failed["line"] == 4
    assert failed["attempts"] == 1
    assert "4242" in str(failed["error"])
    assert_invariant(done.summary)


async def test_invalid_rows_are_counted_and_the_rest_go_through(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    good = rows(4)
    path = tmp_path / "in.csv"
    write_csv(path, [*good[:2], {"playlist_id": "twelve", "session_id": "x", "ts": TS}, *good[2:]])

    done = await run_cli(*run_args(sandbox, str(path)), env=KEYS)

    assert done.code == 1
    assert done.summary["invalid"] == 1
    assert done.summary["created"] == 4
    (invalid,) = done.events("invalid_row")
    assert invalid["line"] == 4
    assert invalid["source"] == str(path)
    assert_invariant(done.summary)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--concurrency", "0"], KEYS, "--concurrency"),
        (["--concurrency", "1000000"], KEYS, "'1000000' is more than 1024, the most allowed"),
        (["--max-pause", "0"], KEYS, "--max-pause"),
        (["--rate", "-1"], KEYS, "--rate"),
        (["--rate", "nan"], KEYS, "'nan' is not a positive finite number"),
        (["--rate", "inf"], KEYS, "'inf' is not a positive finite number"),
        (["--site", "datadoghq.moon"], KEYS, "unknown Datadog site"),
        ([], {"DD_API_KEY": API_KEY}, "missing Datadog keys"),
        (["--api-key-file", "/nonexistent/key"], {"DD_APP_KEY": APP_KEY}, "cannot read"),
        (["--shard", "3/3"], KEYS, "shard"),
        (["--report", "/"], KEYS, "--report /: cannot write there (it is a directory)"),
        (["--report", "/dev/null/report.json"], KEYS, "--report /dev/null/report.json"),
    ],
)
async def test_bad_options_exit_2_before_any_request(
    make_sandbox: MakeSandbox, tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    path = write_csv(tmp_path / "in.csv", rows(3))
    extra = [] if "--site" in args else ["--base-url", sandbox.base_url]

    done = await run_cli("run", str(path), "--no-journal", *extra, *args, env=env)

    assert done.code == 2
    assert message in done.stderr
    assert sandbox.stats.requests == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--shard", "1of3"], "argument --shard: wants K/N with whole numbers"),
        (["--shard", "3/3"], "argument --shard: shard index must be between 0 and 2"),
        (["--sandbox", "--sandbox-rate-limit", "20"], "argument --sandbox-rate-limit: rate limit"),
        (["--statsd", "foo:bar"], "argument --statsd: wants HOST:PORT"),
        (["--statsd", "no-such-agent.invalid"], "argument --statsd: the agent's host"),
    ],
)
async def test_a_malformed_option_value_is_the_parsers_error_with_the_usage(
    tmp_path: Path, args: list[str], said: str
) -> None:
    # As options.md promises: the usage and a message naming the option, as plain text,
    # not a cannot_start event; nothing is read or sent.
    path = write_csv(tmp_path / "in.csv", rows(3))

    done = await run_cli("run", str(path), "--no-journal", *args, env=KEYS)

    assert done.code == 2
    assert done.stderr.startswith("usage: rum-playlist-ingest run"), done.stderr
    assert f"rum-playlist-ingest run: error: {said}" in done.stderr
    assert "cannot_start" not in done.stderr


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["{tmp}/missing.csv"], "missing.csv: cannot read it"),  # found when the inputs open
        (["{tmp}/in.csv", "--site", "datadoghq.moon"], "unknown Datadog site"),  # an option
    ],
)
async def test_a_run_that_cannot_start_replaces_the_last_report_with_its_own(
    tmp_path: Path, args: list[str], why: str
) -> None:
    # A cron script reads the report after the run: an earlier run's success left there
    # would pass for this one's.
    write_csv(tmp_path / "in.csv", rows(3))
    report = tmp_path / "report.json"
    first = await run_cli(
        "run", str(tmp_path / "in.csv"), "--sandbox", "--report", str(report), env={}
    )
    assert first.code == 0
    assert json.loads(report.read_text())["exit_code"] == 0

    argv = [arg.format(tmp=tmp_path) for arg in args]
    done = await run_cli("run", *argv, "--no-journal", "--report", str(report), env=KEYS)

    assert done.code == 2
    written = json.loads(report.read_text())
    assert (written["exit_code"], written["rows_read"], written["requests"]) == (2, 0, 0)
    assert why in str(written["error"])
    assert why in done.stderr
    assert_invariant(written)


async def test_a_sandbox_run_keeps_no_journal_unless_one_is_named(tmp_path: Path) -> None:
    """A sandbox's target is gone with its run: the default journal is not filled with
    targets no run can send to again. `--journal PATH` still keeps one."""
    path = write_csv(tmp_path / "in.csv", rows(5))
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}

    default = await run_cli("run", str(path), "--sandbox", "--no-progress", env=env)
    named = await run_cli(
        "run", str(path), "--sandbox", "--journal", str(tmp_path / "j.sqlite3"), env=env
    )

    assert (default.code, named.code) == (0, 0), default.stderr + named.stderr
    assert default.summary["created"] == named.summary["created"] == 5
    assert not state.exists() or not any(state.rglob("*.sqlite3"))
    assert (tmp_path / "j.sqlite3").is_file()


SECRET = "abcdef0123456789abcdef0123456789"


@pytest.mark.parametrize(
    "command", [["run", "in.csv", "--dry-run"], ["playlists", "list"], ["verify", "in.csv"]]
)
@pytest.mark.parametrize(
    ("given", "variable"),
    [
        (["--api-key", SECRET], "DD_API_KEY"),
        ([f"--app-key={SECRET}"], "DD_APP_KEY"),
        (["--api", SECRET], "DD_API_KEY"),  # a prefix of --api-key-file, once read as it
    ],
)
def test_a_key_given_as_an_option_is_refused_without_repeating_it(
    capsys: pytest.CaptureFixture[str], command: list[str], given: list[str], variable: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*command, *given])

    out, err = capsys.readouterr()
    assert stopped.value.code == 2
    assert variable in err
    assert SECRET not in out + err


@pytest.mark.parametrize("shortened", ["--dry-ru", "--concurrenc=4", "--api-key-fil=k"])
def test_no_option_may_be_shortened(capsys: pytest.CaptureFixture[str], shortened: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["run", "in.csv", shortened])

    assert stopped.value.code == 2
    assert shortened.split("=", maxsplit=1)[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "usage", "said"),
    [
        (["run", "in.csv", "--dry-ru"], "rum-playlist-ingest run", "did you mean --dry-run?"),
        (
            ["playlists", "list", "--nam", "x"],
            "rum-playlist-ingest playlists list",
            "--nam is not an option of this command; did you mean --name?",
        ),
        (["status", "--what"], "rum-playlist-ingest status", "unrecognized arguments: --what"),
        (
            ["playlists", "list", "--sandbox"],
            "rum-playlist-ingest playlists list",
            "starts no sandbox of its own: start one with `rum-playlist-ingest sandbox",
        ),
        (
            ["sessions", "--query", "x", "--dry-run"],
            "rum-playlist-ingest sessions",
            "--dry-run is not an option of this command, but of run, remove and undo",
        ),
    ],
)
def test_an_unknown_option_is_said_by_its_command_with_the_option_meant(
    capsys: pytest.CaptureFixture[str], arguments: list[str], usage: str, said: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(arguments)

    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.startswith(f"usage: {usage} "), err
    assert said in err


def test_an_option_before_the_playlists_action_is_said_to_go_after_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # argparse took the option's value for the action: "invalid choice: 'datadoghq.eu'".
    with pytest.raises(SystemExit) as stopped:
        main(["playlists", "--site", "datadoghq.eu", "list"])

    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "rum-playlist-ingest: error: --site: the options go after the action (list, show, "
        "create), such as rum-playlist-ingest playlists list --site ...\n"
    )


async def test_missing_input_and_missing_column_exit_2(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    good = write_csv(tmp_path / "good.csv", rows(3))
    no_ts = write_csv(tmp_path / "no_ts.csv", [{"playlist_id": 1, "session_id": "s"}])

    missing = await run_cli(*run_args(sandbox, str(good), str(tmp_path / "nope.csv")), env=KEYS)
    column = await run_cli(*run_args(sandbox, str(good), str(no_ts)), env=KEYS)

    assert (missing.code, column.code) == (2, 2)
    assert "nope.csv" in missing.stderr
    assert "ts" in column.stderr
    assert sandbox.stats.requests == 0


async def test_keys_never_appear_in_any_output(make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    sandbox = await keyed_sandbox(make_sandbox, playlists=frozenset({1001}))
    items = [*rows(5, playlists=(1001,)), {"playlist_id": 9, "session_id": "gone", "ts": TS}]
    path = write_csv(tmp_path / "in.csv", items)
    report, dead = tmp_path / "report.json", tmp_path / "dead.ndjson"

    done = await run_cli(
        *run_args(sandbox, str(path), extra=("--report", str(report), "--dead-letter", str(dead))),
        env=KEYS,
    )

    assert done.code == 1
    outputs = [done.stdout, done.stderr, report.read_text(), dead.read_text()]
    assert "gone" in dead.read_text()
    assert not any(API_KEY in text or APP_KEY in text for text in outputs)


async def test_a_report_that_cannot_be_written_at_the_end_is_logged_and_exits_1(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """Checked before the run, the report's directory can still go away during it: the
    rows have landed, so the run says so and exits 1, with no traceback."""
    # Each answer takes 250 ms: the run is still sending when its "start" event is read.
    sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(latency_ms=(250, 250)))
    items = rows(4)
    path = write_csv(tmp_path / "in.csv", items)
    reports = tmp_path / "reports"
    process = await start_cli(
        *run_args(
            sandbox, str(path), extra=("--concurrency", "1", "--report", str(reports / "r.json"))
        ),
        env=KEYS,
    )
    assert process.stderr is not None
    first = await asyncio.wait_for(process.stderr.readline(), COMMAND_TIMEOUT_S)
    assert b'"event":"start"' in first, first
    reports.rename(tmp_path / "moved")
    reports.write_text("a file where the report's directory was\n")
    done = await finish(process)

    assert done.code == 1
    assert "Traceback" not in done.stderr
    (problem,) = done.events("report_not_written")
    assert problem["path"] == str(reports / "r.json")
    assert done.summary["exit_code"] == 1
    assert done.summary["created"] == 4
    assert held(sandbox) == keys_of(items)


async def test_a_configuration_error_is_a_cannot_start_event(tmp_path: Path) -> None:
    """Like every other exit 2, so that a log shipper sees it as an event."""
    path = write_csv(tmp_path / "in.csv", rows(1))

    done = await run_cli(
        "run", str(path), "--base-url", "http://127.0.0.1:9", "--no-journal", "--log-format", "json"
    )

    assert done.code == 2
    (event,) = done.events("cannot_start")
    assert str(event["error"]).startswith("missing Datadog keys")
