"""A playlist's whole life through the real command over loopback, checked server-side
(the sandbox's store): playlists by name, remove, undo and verify."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import (
    KEYS,
    TS,
    MakeSandbox,
    held,
    into_a_pipe_read_once,
    keyed_sandbox,
    rows,
    run_cli,
    write_csv,
)

from worker.sandbox import FaultConfig, Sandbox
from worker.sandbox.store import SessionRecord


def at(sandbox: Sandbox) -> list[str]:
    return ["--base-url", sandbox.base_url]


def quiet(journal: Path) -> list[str]:
    return ["--journal", str(journal), "--log-format", "json", "--no-progress"]


def unnamed(items: list[dict[str, object]]) -> list[dict[str, object]]:
    """The rows without their playlist_id (for --playlist / --playlist-name)."""
    return [{k: v for k, v in item.items() if k != "playlist_id"} for item in items]


def report_of(finished_stderr: str) -> dict[str, object]:
    (summary,) = [
        json.loads(line)
        for line in finished_stderr.splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "summary"
    ]
    return summary


def full_invariant(report: dict[str, object]) -> None:
    parts = (
        "invalid",
        "skipped",
        "created",
        "already_present",
        "failed",
        "not_attempted",
        "removed",
        "present",
        "missing",
    )
    assert report["rows_read"] == sum(int(str(report[p])) for p in parts), report


# --- playlists by name -------------------------------------------------------------------


async def test_playlists_create_list_show_and_a_run_into_a_playlist_found_by_name(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, playlists=frozenset())
    made = await run_cli(
        "playlists", "create", "Backfill", "--description", "Q1", *at(sandbox), env=KEYS
    )
    assert made.code == 0, made.stderr
    (playlist,) = [json.loads(line) for line in made.stdout.splitlines()]
    assert (playlist["name"], playlist["description"]) == ("Backfill", "Q1")
    await run_cli("playlists", "create", "Backfill 2", *at(sandbox), env=KEYS)

    listed = await run_cli("playlists", "list", "--name", "backfill", *at(sandbox), env=KEYS)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == [
        "Backfill",
        "Backfill 2",
    ]
    shown = await run_cli("playlists", "show", str(playlist["id"]), *at(sandbox), env=KEYS)
    assert json.loads(shown.stdout)["id"] == playlist["id"]

    items = rows(30, playlists=(playlist["id"],))
    source = write_csv(tmp_path / "in.csv", unnamed(items))
    ran = await run_cli(
        "run",
        str(source),
        "--playlist-name",
        "Backfill",
        *at(sandbox),
        *quiet(tmp_path / "j"),
        env=KEYS,
    )
    assert ran.code == 0, ran.stderr
    assert held(sandbox) == {(playlist["id"], str(item["session_id"])) for item in items}
    assert ran.summary["run_id"] == ran.events("start")[0]["run_id"]


@pytest.mark.parametrize(
    "keeping", [["--no-journal"], ["--sandbox"]], ids=["no journal", "sandbox"]
)
async def test_a_run_without_a_journal_has_a_run_id_all_the_same(
    make_sandbox: MakeSandbox, tmp_path: Path, keeping: list[str]
) -> None:
    """The contract: every run has a run id, in its start event and its report."""
    source = write_csv(tmp_path / "in.csv", rows(3))
    target = [] if keeping == ["--sandbox"] else at(await make_sandbox())
    report = tmp_path / "report.json"
    ran = await run_cli(
        "run", str(source), *target, *keeping, "--report", str(report), "--log-format",
        "json", "--no-progress", env=KEYS,
    )  # fmt: skip

    assert ran.code == 0, ran.stderr
    run_id = ran.events("start")[0]["run_id"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", str(run_id))
    assert ran.summary["run_id"] == json.loads(report.read_text())["run_id"] == run_id


async def test_a_missing_name_is_refused_unless_created_and_two_of_a_name_are_refused(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, playlists=frozenset())
    source = write_csv(tmp_path / "in.csv", unnamed(rows(3)))
    args = [str(source), *at(sandbox), *quiet(tmp_path / "j")]

    missing = await run_cli("run", *args, "--playlist-name", "Nightly", env=KEYS)
    assert missing.code == 2
    assert "no playlist is named 'Nightly'" in missing.stderr
    assert held(sandbox) == set()

    created = await run_cli(
        "run", *args, "--playlist-name", "Nightly", "--create-playlist", env=KEYS
    )
    assert created.code == 0, created.stderr
    ((playlist_id, _record),) = sandbox.store.records()
    assert {p for p, _ in held(sandbox)} == {playlist_id}

    await run_cli("playlists", "create", "Nightly", *at(sandbox), env=KEYS)
    twice = await run_cli("run", *args, "--playlist-name", "Nightly", env=KEYS)
    assert twice.code == 2
    ids = sorted(p for p, _ in sandbox.store.records())
    assert f"ids {ids[0]}, {ids[1]}" in twice.stderr


async def test_bad_playlist_options_exit_2_before_anything_is_sent(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "in.csv", unnamed(rows(3)))
    args = [str(source), *at(sandbox), *quiet(tmp_path / "j")]
    both = await run_cli("run", *args, "--playlist", "5", "--playlist-name", "X", env=KEYS)
    sharded = await run_cli(
        "run", *args, "--playlist-name", "X", "--create-playlist", "--shard", "0/8", env=KEYS
    )
    alone = await run_cli("remove", *args, "--create-playlist", env=KEYS)
    assert (both.code, sharded.code, alone.code) == (2, 2, 2)
    assert "give one of them" in both.stderr
    assert "playlists create" in sharded.stderr
    assert "needs --playlist-name" in alone.stderr
    assert sandbox.requests == type(sandbox.requests)()


# --- remove ------------------------------------------------------------------------------


async def test_remove_in_bulk_then_a_run_adds_the_rows_again(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(250)
    source = write_csv(tmp_path / "in.csv", items)
    journal = tmp_path / "journal"
    first = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    assert first.code == 0, first.stderr
    assert len(held(sandbox)) == 250

    removed = await run_cli(
        "remove", str(source), "--batch-size", "50", *at(sandbox), *quiet(journal), env=KEYS
    )
    assert removed.code == 0, removed.stderr
    assert held(sandbox) == set()
    report = removed.summary
    assert report["removed"] == 250
    full_invariant(report)
    assert sandbox.stats.calls["remove_sessions"] == report["requests"]
    assert int(str(report["requests"])) <= 8  # 125 a playlist in batches of 50: 3 each, at best 6

    again = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    assert again.code == 0, again.stderr
    assert again.summary["created"] == 250, "a removed row is no longer done"
    assert len(held(sandbox)) == 250


async def test_remove_finds_a_batch_cap_below_the_default_and_falls_back_to_single_deletes(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    for cap, expected_size in ((30, 25), (1, 1)):
        sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(max_bulk=cap))
        items = rows(120, playlists=(7,))
        for item in items:
            sandbox.store.add(7, str(item["session_id"]), SessionRecord(TS, "rum"))
        source = write_csv(tmp_path / f"in{cap}.csv", unnamed(items))
        removed = await run_cli(
            "remove",
            str(source),
            "--playlist",
            "7",
            *at(sandbox),
            *quiet(tmp_path / f"j{cap}"),
            "--report",
            str(tmp_path / f"r{cap}.json"),
            env=KEYS,
        )
        assert removed.code == 0, removed.stderr
        assert held(sandbox) == set()
        report = json.loads((tmp_path / f"r{cap}.json").read_text())
        assert report["removed"] == 120
        assert report["batch_size"] == expected_size
        if cap == 1:
            assert sandbox.stats.calls["remove_session"] == 120


async def test_remove_and_verify_report_invalid_rows_as_run_does(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    items: list[dict[str, object]] = [
        {"playlist_id": 7, "session_id": "a", "ts": TS},
        {"playlist_id": "seven", "session_id": "b", "ts": TS},
    ]
    source = write_csv(tmp_path / "in.csv", items)
    ran = await run_cli("run", str(source), *at(sandbox), *quiet(tmp_path / "j1"), env=KEYS)
    removed = await run_cli("remove", str(source), *at(sandbox), *quiet(tmp_path / "j2"), env=KEYS)
    verified = await run_cli(
        "verify", str(source), *at(sandbox), "--log-format", "json", "--no-progress", env=KEYS
    )
    bad = [
        [(e["source"], e["line"], e["reason"]) for e in f.events("invalid_row")]
        for f in (ran, removed, verified)
    ]
    assert bad[0] == bad[1] == bad[2]
    ((where, line, reason),) = bad[0]
    assert (where, line) == (str(source), 3)
    assert "playlist_id" in str(reason)
    assert (ran.code, removed.code, verified.code) == (1, 1, 1)


# --- undo --------------------------------------------------------------------------------


async def test_a_run_undone_leaves_the_playlist_as_it_was_and_twice_sends_nothing(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(60)
    for item in items[:10]:  # present before the run: never the run's to take back
        sandbox.store.add(
            int(str(item["playlist_id"])), str(item["session_id"]), SessionRecord(TS, "rum")
        )
    before = held(sandbox)
    source = write_csv(tmp_path / "in.csv", items)
    journal = tmp_path / "journal"
    ran = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    assert (ran.summary["created"], ran.summary["already_present"]) == (50, 10)
    run_id = str(ran.summary["run_id"])

    planned = await run_cli("undo", run_id, "--dry-run", *quiet(journal), env=KEYS)
    assert planned.code == 0, planned.stderr
    plan = [json.loads(line) for line in planned.stdout.splitlines()]
    assert len(plan) == 50
    assert {p["undo"] for p in plan} == {"remove"}
    assert len(held(sandbox)) == 60, "a dry run sends nothing"

    undone = await run_cli("undo", run_id, *quiet(journal), env=KEYS)
    assert undone.code == 0, undone.stderr
    assert held(sandbox) == before
    assert undone.summary["removed"] == 50
    full_invariant(undone.summary)

    calls = sandbox.stats.calls["remove_sessions"]
    twice = await run_cli("undo", run_id, *quiet(journal), env=KEYS)
    assert twice.code == 0, twice.stderr
    assert twice.summary["requests"] == 0
    assert sandbox.stats.calls["remove_sessions"] == calls
    assert held(sandbox) == before


async def test_an_undo_dry_run_into_a_closed_pipe_ends_quietly(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """`undo --dry-run | head -1`: exit 141, as for SIGPIPE, with no traceback."""
    sandbox = await keyed_sandbox(make_sandbox)
    source = write_csv(tmp_path / "in.csv", rows(1500))
    journal = tmp_path / "journal"
    ran = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    assert ran.summary["created"] == 1500
    piped = await into_a_pipe_read_once(
        "undo", str(ran.summary["run_id"]), "--dry-run", *quiet(journal), env=KEYS
    )

    assert json.loads(piped.stdout)["undo"] == "remove"  # a dry run sends nothing
    assert piped.code == 141, piped.stderr
    assert "Traceback" not in piped.stderr


async def test_undo_reports_a_session_a_later_run_also_added(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    items = rows(4, playlists=(7,))
    source = write_csv(tmp_path / "in.csv", items)
    journal = tmp_path / "journal"
    first = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    await run_cli("remove", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    second = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    assert second.summary["created"] == 4

    undone = await run_cli("undo", str(first.summary["run_id"]), *quiet(journal), env=KEYS)
    assert undone.code == 0, undone.stderr
    assert len(held(sandbox)) == 4, "the later run's sessions stay"
    left = undone.events("undo_leaves")
    assert {e["session_id"] for e in left} == {str(item["session_id"]) for item in items}
    assert {e["reason"] for e in left} == {"added_later"}
    named = [e["event"] for e in undone.events()]
    assert named.index("start") < named.index("undo_leaves"), "what the run is comes first"

    last = await run_cli("undo", "--last", *quiet(journal), env=KEYS)
    assert last.code == 0, last.stderr
    assert held(sandbox) == set()


async def test_undo_of_an_unknown_run_or_against_another_target_exits_2(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox)
    other = await keyed_sandbox(make_sandbox)
    source = write_csv(tmp_path / "in.csv", rows(3))
    journal = tmp_path / "journal"
    ran = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    run_id = str(ran.summary["run_id"])

    unknown = await run_cli("undo", "20260101T000000Z-deadbeef", *quiet(journal), env=KEYS)
    elsewhere = await run_cli("undo", run_id, *at(other), *quiet(journal), env=KEYS)
    same = await run_cli("undo", run_id, *at(sandbox), *quiet(journal), env=KEYS)
    assert (unknown.code, elsewhere.code, same.code) == (2, 2, 0)
    assert "holds no run" in unknown.stderr
    assert "undo acts on the run's own target only" in elsewhere.stderr
    assert other.stats.calls["remove_sessions"] == 0
    assert held(sandbox) == set()


# --- verify ------------------------------------------------------------------------------


async def test_an_output_that_cannot_be_written_is_named_with_its_option_and_the_fix(
    tmp_path: Path,
) -> None:
    # As --report's: the option, the path, why, and what to do; never a bare OSError.
    source = write_csv(tmp_path / "in.csv", rows(2))
    (tmp_path / "taken").mkdir()
    verify = await run_cli(
        "verify", str(source), "--sandbox", "--missing", str(tmp_path / "taken"), env={}
    )
    sessions = await run_cli(
        "sessions", "--query", "*", "--from", "now-1d", "--sandbox", "-o", str(tmp_path / "taken"),
        env={},
    )  # fmt: skip

    fix = "cannot write there (Is a directory); name a file in a writable directory"
    assert verify.code == sessions.code == 2
    assert f"--missing {tmp_path / 'taken'}: {fix}" in verify.stderr
    assert f"-o {tmp_path / 'taken'}: {fix}" in sessions.stderr
    assert "Errno" not in verify.stderr + sessions.stderr


async def test_verify_finds_what_the_server_lost_and_the_missing_file_reruns_to_completion(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(page_size_cap=7))
    items = rows(100, playlists=(7, 8))
    source = write_csv(tmp_path / "in.csv", items)
    journal = tmp_path / "journal"
    ran = await run_cli("run", str(source), *at(sandbox), *quiet(journal), env=KEYS)
    assert ran.code == 0, ran.stderr
    lost = sandbox.drop_sessions(7, every=10) + sandbox.drop_sessions(8, every=10)
    sandbox.store.add(8, "not-in-any-input", SessionRecord(TS, "rum"))
    missing = tmp_path / "missing.ndjson"
    verify = ["verify", str(source), *at(sandbox), "--log-format", "json", "--no-progress"]

    checked = await run_cli(*verify, "--missing", str(missing), "--extra", env=KEYS)
    assert checked.code == 1, checked.stderr
    report = checked.summary
    assert (report["present"], report["missing"]) == (100 - len(lost), len(lost))
    full_invariant(report)
    written = [json.loads(line) for line in missing.read_text().splitlines()]
    assert {item["session_id"] for item in written} == set(lost)
    assert [json.loads(line) for line in checked.stdout.splitlines()] == [
        {"playlist_id": 8, "session_id": "not-in-any-input"}
    ]

    # The journal holds these rows as done (the server answered 201, then lost them):
    # --fresh sends them again.
    rerun = await run_cli("run", str(missing), "--fresh", *at(sandbox), *quiet(journal), env=KEYS)
    assert rerun.code == 0, rerun.stderr
    assert rerun.summary["created"] == len(lost)
    again = await run_cli(*verify, env=KEYS)
    assert again.code == 0, again.stderr
    assert (again.summary["present"], again.summary["missing"]) == (100, 0)


async def test_undo_leaves_a_row_found_present_after_a_lost_answer_unless_asked(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    """An attempt whose answer was lost, then a 200: that attempt may have added the
    session (here it did) or it was there before. Undo lists it and leaves it; with
    --include-maybe it is removed too."""
    sandbox = await keyed_sandbox(make_sandbox, faults=FaultConfig(drop_after=0.4, seed=3))
    source = write_csv(tmp_path / "in.csv", rows(40, playlists=(7,)))
    journal = tmp_path / "journal"
    ran = await run_cli(
        "run", str(source), "--backoff-base", "0.01", *at(sandbox), *quiet(journal), env=KEYS
    )
    assert ran.code == 0, ran.stderr
    maybe = int(str(ran.summary["already_present"]))
    assert maybe > 0, "the seed loses some answers"
    run_id = str(ran.summary["run_id"])
    sandbox.reconfigure(faults=FaultConfig())

    planned = await run_cli("undo", run_id, "--dry-run", *quiet(journal), env=KEYS)
    verdicts = [json.loads(line)["undo"] for line in planned.stdout.splitlines()]
    assert sorted(set(verdicts)) == ["maybe_created", "remove"]
    assert verdicts.count("maybe_created") == maybe

    undone = await run_cli("undo", run_id, *quiet(journal), env=KEYS)
    assert undone.code == 0, undone.stderr
    assert len(held(sandbox)) == maybe
    assert {e["reason"] for e in undone.events("undo_leaves")} == {"maybe_created"}

    everything = await run_cli("undo", run_id, "--include-maybe", *quiet(journal), env=KEYS)
    assert everything.code == 0, everything.stderr
    assert everything.summary["removed"] == maybe
    assert held(sandbox) == set()


async def test_playlists_read_every_page_and_a_playlist_that_is_not_there_is_exit_1(
    make_sandbox: MakeSandbox,
) -> None:
    sandbox = await keyed_sandbox(
        make_sandbox, playlists=frozenset(), faults=FaultConfig(page_size_cap=2)
    )
    for n in range(5):
        made = await run_cli("playlists", "create", f"Night {n}", *at(sandbox), env=KEYS)
        assert made.code == 0, made.stderr
    listed = await run_cli("playlists", "list", *at(sandbox), env=KEYS)
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == [
        f"Night {n}" for n in range(5)
    ]
    assert sandbox.stats.calls["list_playlists"] == 3  # 2, 2, then the short page of 1
    absent = await run_cli("playlists", "show", "999", *at(sandbox), env=KEYS)
    assert absent.code == 1
    assert "HTTP 404" in absent.stderr
    keyless = await run_cli("playlists", "list", *at(sandbox))
    assert keyless.code == 2
    assert "DD_API_KEY" in keyless.stderr


async def test_a_query_run_into_a_playlist_found_by_name(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    sandbox = await keyed_sandbox(make_sandbox, playlists=frozenset())
    made = await run_cli("playlists", "create", "From RUM", *at(sandbox), env=KEYS)
    playlist_id = json.loads(made.stdout)["id"]
    ran = await run_cli(
        "run", "--query", "*", "--from", "now-30d", "--playlist-name", "From RUM",
        *at(sandbox), *quiet(tmp_path / "j"), env=KEYS,
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    found = held(sandbox)
    assert found
    assert {p for p, _ in found} == {playlist_id}
