"""The tool's own files on a host shared with a hostile neighbour, on real files: planted
symlinks, FIFOs, other users' files, hard links, aliases of a journal in use, and one
option's file given as another's."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.cli import main
from worker.deadletter import DeadLetter, DeadLetterError
from worker.files import UnsafeFile, check_distinct, open_output, private_dir, write_atomic
from worker.journal import JournalError, SqliteJournal, reading

TARGET = "http://127.0.0.1:8126"
NOBODY = 65534
VICTIM_TEXT = b"the user's precious file\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's that a planted symlink points at."""
    path = tmp_path / "precious.txt"
    path.write_bytes(VICTIM_TEXT)
    return path


def plant_symlink(at: Path, to: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(to)
    return at


def open_journal(path: Path) -> SqliteJournal:
    return SqliteJournal.open(path, target=TARGET, fresh=False, run_info={"inputs": []})


# --- outputs written whole: the report -------------------------------------------------


def test_write_atomic_writes_a_private_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out" / "report.json"
    path.parent.mkdir()
    path.write_bytes(b"old")
    write_atomic(path, b'{"created": 1}\n')
    assert path.read_bytes() == b'{"created": 1}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_write_atomic_refuses_a_planted_symlink_and_leaves_both_alone(
    tmp_path: Path, victim: Path
) -> None:
    link = plant_symlink(tmp_path / "report.json", victim)
    with pytest.raises(UnsafeFile, match=r"report.json is a symlink, which the tool never"):
        write_atomic(link, b"{}")
    assert victim.read_bytes() == VICTIM_TEXT
    assert link.is_symlink()


def test_write_atomic_leaves_another_users_file_untouched(tmp_path: Path) -> None:
    theirs = tmp_path / "report.json"
    theirs.write_bytes(VICTIM_TEXT)
    os.chown(theirs, NOBODY, NOBODY)  # the suite runs as root in CI containers
    if theirs.stat().st_uid == os.geteuid():
        pytest.fail("cannot give the file to another user here")
    with pytest.raises(UnsafeFile, match=r"belongs to another user \(uid 65534\)"):
        write_atomic(theirs, b"{}")
    assert theirs.read_bytes() == VICTIM_TEXT


# --- outputs written as the run goes: dead letters, sessions -o, verify --missing ------


def test_open_output_empties_a_file_of_the_users_and_creates_a_new_one_private(
    tmp_path: Path,
) -> None:
    mine = tmp_path / "dead.ndjson"
    mine.write_bytes(b"last night's failures\n")
    os.close(open_output(mine))
    assert mine.read_bytes() == b""
    fresh = tmp_path / "new" / "missing.ndjson"
    os.close(open_output(fresh))
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (lambda at, victim: at.symlink_to(victim), "is a symlink"),
        (lambda at, victim: os.link(victim, at), "has other names"),
        (lambda at, victim: os.mkfifo(at), "is not a plain file"),
    ],
    ids=["symlink", "hard link", "fifo"],
)
def test_open_output_refuses_what_was_planted_and_touches_nothing(
    tmp_path: Path, victim: Path, plant: Callable[[Path, Path], None], message: str
) -> None:
    at = tmp_path / "dead.ndjson"
    plant(at, victim)
    with pytest.raises(UnsafeFile, match=message):
        os.close(open_output(at))  # a FIFO would block here if it were opened blindly
    assert victim.read_bytes() == VICTIM_TEXT


def test_the_dead_letter_file_refuses_a_planted_symlink(tmp_path: Path, victim: Path) -> None:
    link = plant_symlink(tmp_path / "dead.ndjson", victim)
    with pytest.raises(DeadLetterError, match="is a symlink"):
        DeadLetter(link)
    assert victim.read_bytes() == VICTIM_TEXT


def test_private_dir_makes_only_the_missing_folders_private(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir(mode=0o755)
    private_dir(tmp_path / "mine" / "a" / "b")
    assert stat.S_IMODE((tmp_path / "mine").stat().st_mode) == 0o755
    for made in (tmp_path / "mine" / "a", tmp_path / "mine" / "a" / "b"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700


# --- one option's file is never another's ----------------------------------------------


def test_distinct_files_pass(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("x")
    check_distinct(
        {
            "input #1": tmp_path / "in.csv",
            "input #2": "-",
            "--report": tmp_path / "report.json",
            "--dead-letter": None,
            "--journal": tmp_path / "journal.sqlite3",
        }
    )


@pytest.mark.parametrize(
    "alias",
    [
        lambda original, at: str(at.parent / "." / original.name),
        lambda original, at: at.symlink_to(original) or str(at),
        lambda original, at: os.link(original, at) or str(at),
        lambda original, at: (at.parent / "sub").mkdir() or str(at.parent / "sub/../in.csv"),
    ],
    ids=["same path", "symlink", "hard link", "dot-dot"],
)
def test_an_output_that_is_an_input_in_disguise_is_refused(
    tmp_path: Path, alias: Callable[[Path, Path], str]
) -> None:
    original = tmp_path / "in.csv"
    original.write_text("playlist_id,session_id,ts\n")
    other = alias(original, tmp_path / "alias.csv")
    with pytest.raises(UnsafeFile, match=r"input #1 .*in.csv and --report .* are one file"):
        check_distinct({"input #1": original, "--report": other})


def test_two_outputs_that_do_not_exist_yet_are_compared_by_path(tmp_path: Path) -> None:
    with pytest.raises(UnsafeFile, match=r"--journal .* and --dead-letter .* are one file"):
        check_distinct(
            {
                "--journal": tmp_path / "j.sqlite3",
                "--dead-letter": tmp_path / "sub" / ".." / "j.sqlite3",
            }
        )


ROWS = "playlist_id,session_id,ts\n1001,s-1,1704067200000\n"


@pytest.mark.parametrize(
    ("command", "clash"),
    [
        (["run", "in.csv", "--report", "in.csv"], "in.csv"),
        (["remove", "in.csv", "--report", "in.csv"], "in.csv"),
        (["run", "in.csv", "--journal", "j.sqlite3", "--report", "j.sqlite3"], "j.sqlite3"),
        (["run", "in.csv", "--dead-letter", "out.json", "--report", "out.json"], "out.json"),
    ],
    ids=["an input", "a remove's input", "the journal", "the dead-letter file"],
)
def test_a_report_that_collides_is_never_written_over_what_it_collides_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], clash: str
) -> None:
    """The refusal's report would be written where its own path is at fault: over the
    rows, the journal, or another output. Nothing is written there; the event tells."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text(ROWS)
    open_journal(tmp_path / "j.sqlite3").close({})
    (tmp_path / "out.json").write_text("kept\n")
    before = (tmp_path / clash).read_bytes()

    assert main([*command, "--sandbox", "--log-format", "json"]) == 2
    assert (tmp_path / clash).read_bytes() == before


def test_a_refusal_for_another_options_path_still_writes_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script reading the report must not find an earlier run's there: where the
    report's path is not at fault, the refusal is written to it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text(ROWS)
    (tmp_path / "report.json").write_text('{"exit_code": 0}')
    command = ["run", "in.csv", "--dead-letter", "in.csv", "--report", "report.json"]

    assert main([*command, "--sandbox", "--log-format", "json"]) == 2
    assert (tmp_path / "in.csv").read_text() == ROWS
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["exit_code"], report["rows_read"]) == (2, 0)
    assert "are one file" in report["error"]


# --- the journal ------------------------------------------------------------------------


def test_a_new_journals_folder_is_private(tmp_path: Path) -> None:
    open_journal(tmp_path / "state" / "app" / "journal.sqlite3").close({})
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "app").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "app" / "journal.sqlite3").stat().st_mode) == 0o600


def test_a_journal_that_is_a_symlink_is_refused(tmp_path: Path, victim: Path) -> None:
    link = plant_symlink(tmp_path / "journal.sqlite3", victim)
    with pytest.raises(JournalError, match="is a symlink, which the tool never writes through"):
        open_journal(link)
    with pytest.raises(JournalError, match="is a symlink"), reading(link):
        pass
    assert victim.read_bytes() == VICTIM_TEXT


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_symlink_planted_as_a_side_file_is_refused(
    tmp_path: Path, victim: Path, suffix: str
) -> None:
    path = tmp_path / "journal.sqlite3"
    open_journal(path).close({})  # a journal of the user's, in use every night
    plant_symlink(path.with_name(path.name + suffix), victim)
    with pytest.raises(JournalError, match=rf"journal.sqlite3{suffix} is a symlink"):
        open_journal(path)
    with pytest.raises(JournalError, match=rf"journal.sqlite3{suffix} is a symlink"), reading(path):
        pass
    assert victim.read_bytes() == VICTIM_TEXT
    open_journal(tmp_path / "other.sqlite3").close({})  # and nothing stayed claimed


def test_a_symlink_where_the_old_lock_file_was_is_never_written(
    tmp_path: Path, victim: Path
) -> None:
    path = tmp_path / "journal.sqlite3"
    plant_symlink(path.with_name("journal.sqlite3.lock"), victim)
    open_journal(path).close({})
    assert victim.read_bytes() == VICTIM_TEXT


def test_a_hard_linked_alias_of_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    held = open_journal(path)
    alias = tmp_path / "alias.sqlite3"
    os.link(path, alias)
    try:
        with pytest.raises(JournalError, match="in use by another run"):
            open_journal(alias)
    finally:
        held.close({})
    # Two names would be two write-ahead logs of one database: refused even when free.
    for name in (alias, path):
        with pytest.raises(JournalError, match="has other names"):
            open_journal(name)


def test_an_alias_through_a_symlinked_folder_is_refused_while_a_run_holds_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    held = open_journal(tmp_path / "real" / "journal.sqlite3")
    try:
        with pytest.raises(JournalError, match="in use by another run"):
            open_journal(tmp_path / "alias" / "journal.sqlite3")
    finally:
        held.close({})
    open_journal(tmp_path / "alias" / "journal.sqlite3").close({})
