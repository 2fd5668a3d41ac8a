"""The documentation against the tool itself: the options reference against every
subcommand's real `--help` (both ways), the help's examples against the options, and the
README's set-up commands against what CI runs.

The subcommands are found in the help output, not listed here, so a subcommand added
later is checked as soon as it exists: its options must then be in docs/options.md.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from worker.examples import EXAMPLES
from worker.exits import EXIT_ABORTED, Ending, exit_status
from worker.report import Report
from worker.stop import Reason

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = "rum-playlist-ingest"
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
NOT_DOCUMENTED = {"-h", "--help"}
"""Every command has them; the reference says so once, in prose."""

Command = tuple[str, ...]


@functools.cache
def help_text(command: Command) -> str:
    """`rum-playlist-ingest COMMAND --help`, from the real CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "worker", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    return done.stdout


def help_options(text: str) -> set[str]:
    """The options a help text lists: each line that starts with an invocation."""
    found: set[str] = set()
    for line in text.splitlines():
        invocation = re.match(r"^  (-\S.*?)(?:  |$)", line)
        if invocation:
            found |= set(OPTION.findall(invocation.group(1)))
    return found - NOT_DOCUMENTED


def help_subcommands(text: str) -> list[str]:
    """The subcommands a help text lists under its positional arguments."""
    section = text.split("positional arguments:", 1)[1] if "positional arguments:" in text else ""
    section = section.split("\n\n", 1)[0]
    return re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", section, flags=re.MULTILINE)


@functools.cache
def commands() -> tuple[Command, ...]:
    """The program and every subcommand, nested ones included."""
    found: list[Command] = []
    waiting: list[Command] = [()]
    while waiting:
        command = waiting.pop(0)
        found.append(command)
        waiting += [(*command, sub) for sub in help_subcommands(help_text(command))]
    return tuple(found)


def documented_options() -> dict[Command, set[str]]:
    """docs/options.md: a `## \\`rum-playlist-ingest SUB\\`` section per command, whose
    tables list the options in their first column."""
    documented: dict[Command, set[str]] = {}
    current: set[str] | None = None
    for line in (ROOT / "docs" / "options.md").read_text().splitlines():
        heading = re.match(rf"^## `{PROGRAM}(.*)`\s*$", line)
        if heading:
            current = documented.setdefault(tuple(heading.group(1).split()), set())
        elif line.startswith("## "):
            current = None
        elif current is not None and line.startswith("|") and not line.startswith("| ---"):
            first_cell = re.split(r"(?<!\\)\|", line)[1]  # a `\|` is no cell border
            current |= set(OPTION.findall(" ".join(re.findall(r"`([^`]*)`", first_cell))))
    return documented


def test_the_cli_has_the_subcommands_this_suite_knows_of() -> None:
    """A guard for the discovery below: if it found nothing, the checks would pass empty."""
    assert {("run",), ("validate",), ("sandbox",), ("status",)} <= set(commands())


@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c) or PROGRAM)
def test_every_option_of_every_command_is_in_the_reference_and_no_other(
    command: Command,
) -> None:
    documented = documented_options()
    assert command in documented, f"docs/options.md has no section for {PROGRAM} {command}"
    listed = help_options(help_text(command))
    missing, stale = listed - documented[command], documented[command] - listed
    assert not missing, f"{' '.join(command)}: in --help, not in docs/options.md: {missing}"
    assert not stale, f"{' '.join(command)}: in docs/options.md, not in --help: {stale}"


def test_the_reference_documents_no_command_the_cli_does_not_have() -> None:
    assert set(documented_options()) <= set(commands())


@pytest.mark.parametrize("command", [c for c in commands() if c], ids=" ".join)
def test_each_subcommands_help_ends_with_examples_of_real_use(command: Command) -> None:
    """Every subcommand's, and every action's of one that has actions (`playlists list`)."""
    text = help_text(command).rstrip()
    examples = text.split("\nexamples:\n", 1)[1].splitlines()
    runs = [line for line in examples if line.startswith(f"  {PROGRAM} ")]
    assert 2 <= len(runs) <= 3, examples
    assert all(line.startswith(("  # ", f"  {PROGRAM} ")) for line in examples)


def example_cases() -> list[tuple[Command, str]]:
    """Every example of a subcommand or action the CLI has (those of commands still to
    come are checked once their command exists)."""
    have = set(commands())
    return [
        (tuple(name.split()), example)
        for name, pairs in EXAMPLES.items()
        if tuple(name.split()) in have
        for _, example in pairs
    ]


@pytest.mark.parametrize(("command", "example"), example_cases())
def test_every_example_names_only_options_its_command_has(command: Command, example: str) -> None:
    words = shlex.split(example)
    shell = next((i for i, w in enumerate(words) if w in {">", "|", "&", ";"}), len(words))
    words = words[:shell]
    assert words[0] == PROGRAM
    while len(command) < len(words) - 1 and (*command, words[len(command) + 1]) in commands():
        command = (*command, words[len(command) + 1])
    used = {OPTION.match(w).group(1) for w in words if OPTION.match(w)}  # type: ignore[union-attr]
    assert used <= help_options(help_text(command)), example


def test_every_subcommand_and_action_has_examples() -> None:
    assert {" ".join(c) for c in commands() if c} <= EXAMPLES.keys()


def test_the_report_page_documents_every_field_the_report_has_and_no_other() -> None:
    page = (ROOT / "docs" / "report.md").read_text()
    table = page.split("\n## Fields\n", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert documented == list(Report().as_dict()), "the fields, in the report's order"


def test_the_report_page_lists_every_reason_a_run_aborts_with_exit_3() -> None:
    """Each reason the `aborted` event can give with exit 3, as it gives it: a cause left
    out of the list (the first redirect once was) fails here."""
    page = (ROOT / "docs" / "report.md").read_text()
    section = " ".join(page.split("\n### Aborts (exit 3)\n", 1)[1].split("\n### ", 1)[0].split())
    aborting = [r for r in Reason if exit_status(Ending(r, signal.SIGTERM)) == EXIT_ABORTED]
    assert Reason.FATAL in aborting, "a guard: the list below would pass empty"
    missing = [r.value for r in aborting if f"`{r.value}`" not in section]
    assert not missing, f"docs/report.md's aborts leave out: {missing}"


def test_the_readmes_two_set_up_commands_are_make_demo_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Set-up", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    assert [line for line in lines if line] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:", makefile, flags=re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # what CI runs


def test_the_readme_is_a_front_page_that_links_every_reference_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if not p.name.startswith("_"))
    assert pages
    unlinked = [page for page in pages if f"(docs/{page})" not in readme]
    assert not unlinked, unlinked


@pytest.mark.parametrize(
    "page",
    ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))],
)
def test_every_link_between_pages_leads_to_a_file(page: str) -> None:
    path = ROOT / page
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    broken = [t for t in local if not (path.parent / t).exists()]
    assert not broken, f"{page}: {broken}"
