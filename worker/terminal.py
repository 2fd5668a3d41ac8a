"""What a person at a terminal sees when a run starts and ends.

Off a terminal, scripts and log shippers read the `start` and `summary` events, which
keep their fields as they are. On one, the start is a sentence that says what will
happen, and the end a table of the report's counts and what to do next: the command that
retries the dead letters, the ones that check or undo the run, and why the exit status
is what it is. Everything here is pure: values in, text or renderables out, so it is
tested without a terminal, and rich decides about colour (`NO_COLOR`, `TERM=dumb`).
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from worker.config import redact_url
from worker.humanize import duration, rate

PROGRAM = "rum-playlist-ingest"

TWO_COLUMNS_FROM = 56
"""Terminal width from which the counts stand in two columns of pairs: the widest pair
takes about 26 characters."""


def read_by_a_person(log_format: str | None, stream: TextIO) -> bool:
    """`stream` is a terminal and the log is not asked to be JSON (which a script on a
    terminal may parse)."""
    return log_format != "json" and stream.isatty()


def terminal_console(log_format: str | None, stream: TextIO) -> Console | None:
    """The console for the start line and the summary, or None when they go to the log.
    For a person (`read_by_a_person`); rich honours `NO_COLOR` and `TERM=dumb` itself."""
    if not read_by_a_person(log_format, stream):
        return None
    return Console(file=stream, highlight=False)


def shown_path(path: Path | str, home: Path | None = None) -> str:
    """A path with the home folder as `~`, as a person would type it."""
    home = Path.home() if home is None else home
    try:
        return "~/" + str(Path(path).relative_to(home))
    except ValueError:
        return str(path)


# --- the start of a run ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunStart:
    """What a run is about to do, as the start line tells it."""

    target: str
    inputs: Sequence[str] = ()
    query: str | None = None
    playlist: str | None = None
    """`--playlist ID` or `--playlist-name NAME`, as given; None: each row names its own."""
    sandbox: bool = False
    shard: str | None = None
    journal: Path | None = None
    """None: `--no-journal`."""
    done_rows: int | None = None
    """Rows the journal holds as done for this target; None when unknown."""
    fresh: bool = False
    dry_run: bool = False
    doing: tuple[str, str, str] = ("Adding", "add", "to")
    """The run's verb, as going on and as a dry run's, and its preposition: ("Removing",
    "remove", "from") for `remove`."""
    rows: str | None = None
    """What the rows are when not the inputs' nor a query's (an undo's)."""


_NAMED_INPUTS = 3
"""Inputs named in the start line; more are counted."""


def start_line(plan: RunStart, home: Path | None = None) -> str:
    """One sentence; it names nothing the run does not have (no `journal=None`)."""
    going, dry, preposition = plan.doing
    verb = f"Dry run: would {dry}" if plan.dry_run else going
    where = f"playlist {plan.playlist}" if plan.playlist else "their playlists"
    target = redact_url(plan.target)
    on = f"the sandbox at {target}" if plan.sandbox else target
    parts = [f"{verb} {_what(plan)} {preposition} {where} on {on}"]
    if plan.shard:
        parts.append(f"shard {plan.shard}")
    parts.append(_journal_part(plan, home))
    return " · ".join(parts)


def _what(plan: RunStart) -> str:
    if plan.rows is not None:
        return plan.rows
    if plan.query is not None:
        return f"the sessions matching {plan.query!r}"
    names = ["standard input" if name == "-" else name for name in plan.inputs]
    if len(names) > _NAMED_INPUTS:
        more = len(names) - (_NAMED_INPUTS - 1)
        names = [*names[: _NAMED_INPUTS - 1], f"{more} more inputs"]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"the rows of {listed}"


def _journal_part(plan: RunStart, home: Path | None) -> str:
    if plan.journal is None:
        return "no journal (the sandbox goes with the run)" if plan.sandbox else "no journal"
    where = f"journal {shown_path(plan.journal, home)}"
    if plan.fresh:
        return f"{where} (--fresh: rows done before are sent again)"
    if plan.done_rows is None:
        return where
    # Done is what this operation leaves: added for a run, removed for a remove or undo.
    done = "removed" if plan.doing[1] == "remove" else "done"
    if plan.done_rows == 0:
        return f"{where} (no rows {done} yet for this target)"
    noun = "row" if plan.done_rows == 1 else "rows"
    return f"{where} ({plan.done_rows:,} {noun} {done} before for this target: skipped if met)"


# --- the end of a run -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SummaryContext:
    """What the summary needs besides the report, to name the next commands exactly."""

    inputs: Sequence[str] = ()
    """The run's file inputs; empty for a query."""
    repeated_options: Sequence[str] = ()
    """Options every suggested command repeats: the target (`--site`, `--base-url`,
    `--sandbox`) and how it is reached (key files, `--ca-bundle`)."""
    journal_options: Sequence[str] = ()
    """How the commands that read the journal (a retry, `undo`) find it: `--shard K/N`
    or an explicit `--journal`; `verify` reads no journal."""
    sharded: bool = False
    """The run was one shard: `verify` of the whole input waits for every shard."""
    row_options: Sequence[str] = ()
    """Options that say how to read the rows (`--ts-unit s`, `--playlist ID`), for the
    `validate` and `verify` commands suggested."""
    dead_letter: str | None = None
    report_path: str | None = None
    journal: bool = True
    """False for `--no-journal`: a rerun sends the done rows again."""
    fresh: bool = False
    """`--fresh`: the same command again would send every row again."""
    target_outlives_run: bool = True
    """False for `--sandbox`: its sandbox is gone, so there is nothing to verify or undo."""
    abort_detail: str | None = None
    """Why an aborted run stopped and what to do, as the `aborted` event says."""
    command: str = "run"
    """The subcommand that retries the run's rows (`remove` for a remove or an undo); only
    a `run` is followed by `verify` and `undo`."""


@dataclass(frozen=True, slots=True)
class Step:
    """One thing to do next, and the command that does it, if there is one."""

    what: str
    command: str | None = None


def _count(report: Mapping[str, object], field: str) -> int:
    value = report.get(field, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _seconds(report: Mapping[str, object], field: str) -> float:
    value = report.get(field, 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


_SIGNALS = {128 + int(s): s.name for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}


def exit_reason(report: Mapping[str, object], context: SummaryContext) -> str:
    """One line: the exit status and why it is that."""
    code = _count(report, "exit_code")
    invalid, failed = _count(report, "invalid"), _count(report, "failed")
    not_attempted, missing = _count(report, "not_attempted"), _count(report, "missing")
    done = "is out of its playlist" if context.command == "remove" else "is in its playlist"
    if code == 0:
        if report.get("dry_run"):
            return f"Exit 0: every row is valid; {_rows(not_attempted)} would be sent."
        return f"Exit 0: every row {done}."
    if code == 1:
        parts = [f"{_rows(invalid)} invalid"] if invalid else []
        for count, what in ((failed, "failed for good"), (missing, _missing_from(missing))):
            if count:
                parts.append(f"{count:,} {what}" if parts else f"{_rows(count)} {what}")
        if not parts:
            return "Exit 1: the report could not be written (see the error above)."
        rest = "is valid" if report.get("dry_run") else done
        return f"Exit 1: {' and '.join(parts)}; every other row {rest}."
    if code == 2:
        return "Exit 2: the run could not go on (see the error above); what was confirmed is kept."
    if code == 3:
        return f"Exit 3: aborted, {context.abort_detail or 'see the error above'}."
    if code in _SIGNALS:
        return f"Exit {code}: stopped by {_SIGNALS[code]}; what was confirmed is kept."
    return f"Exit {code}."


def next_steps(report: Mapping[str, object], context: SummaryContext) -> list[Step]:
    """What to do after this run, most urgent first, with commands to copy."""
    steps: list[Step] = []
    repeated = list(context.repeated_options)
    failed, invalid = _count(report, "failed"), _count(report, "invalid")
    not_attempted = _count(report, "not_attempted")
    dry_run = bool(report.get("dry_run"))
    # Files only: standard input cannot be read again by the commands suggested.
    files = [name for name in context.inputs if name != "-"]
    if len(files) < len(context.inputs):
        files = []
    if invalid:
        steps.append(
            Step(
                f"fix the {_rows(invalid)} listed above as invalid"
                + ("; this lists them again:" if files else ""),
                _command("validate", *files, *context.row_options) if files else None,
            )
        )
    if failed and context.dead_letter:
        dead = context.dead_letter
        steps.append(
            Step(
                f"the {_rows(failed)} that failed {'is' if failed == 1 else 'are'} in {dead}; "
                "once the cause is fixed, retry exactly those:",
                _command(
                    context.command,
                    dead,
                    "--dead-letter",
                    _retry_name(dead),
                    *repeated,
                    *context.journal_options,
                ),
            )
        )
    # One rerun does both, so it is offered once.
    retry = "retry the rows that failed" if failed and not context.dead_letter else ""
    if not_attempted and not dry_run:
        rest = f"{retry} and send the rest" if retry else "send the rest"
        if not context.target_outlives_run:
            resume = "rerun the same command: a new sandbox starts empty, so every row is sent"
        elif not context.journal:
            resume = (
                f"rerun the same command to {rest} (without a journal, rows done "
                "are sent again and answered 'already present')"
            )
        else:
            again = "the same command without --fresh" if context.fresh else "the same command"
            resume = f"rerun {again} to {rest}; the journal skips the rows done"
        steps.append(Step(resume))
    elif retry:
        steps.append(Step(f"rerun the same command to {retry}"))
    run_id = report.get("run_id")
    adds = context.command == "run"
    if run_id is not None and not dry_run and context.target_outlives_run and adds:
        if files:
            check = "check that every row is in its playlist"
            steps.append(
                Step(
                    f"once every shard has run, {check}:" if context.sharded else f"{check}:",
                    _command("verify", *files, *context.row_options, *repeated),
                )
            )
        if _count(report, "created") and context.journal:  # undo reads what it holds
            steps.append(
                Step(
                    "take back the sessions this run added:",
                    _command("undo", str(run_id), *repeated, *context.journal_options),
                )
            )
    steps += _left_by_undo(report, context) + _missing_found(report, context)
    if context.report_path:
        steps.append(Step(f"the report is in {context.report_path}"))
    return steps


def _block(report: Mapping[str, object], name: str) -> Mapping[str, object]:
    block = report.get(name)
    return block if isinstance(block, Mapping) else {}


def _left_by_undo(report: Mapping[str, object], context: SummaryContext) -> list[Step]:
    """What an undo left in the playlists on purpose, and how to take the doubtful ones."""
    undo = _block(report, "undo")
    steps = []
    if later := _count(undo, "added_later"):
        steps.append(Step(f"{_rows(later)} a later run also added stayed in their playlists"))
    if (maybe := _count(undo, "maybe_created")) and isinstance(undo.get("run"), str):
        steps.append(
            Step(
                f"{_rows(maybe)} the run found present after an answer was lost stayed (they "
                "may have been there before it); to remove them as well:",
                _command(
                    "undo",
                    str(undo["run"]),
                    "--include-maybe",
                    *context.repeated_options,
                    *context.journal_options,
                ),
            )
        )
    return steps


def _missing_from(rows: int) -> str:
    return "missing from its playlist" if rows == 1 else "missing from their playlists"


def _missing_found(report: Mapping[str, object], context: SummaryContext) -> list[Step]:
    """Where `verify --missing` wrote the rows it did not find, and how to add them."""
    missing_file = _block(report, "verify").get("missing_file")
    missing = _count(report, "missing")
    if not missing or not isinstance(missing_file, str):
        return []
    verb = "is" if missing == 1 else "are"
    return [
        Step(
            f"the {_rows(missing)} that {verb} {_missing_from(missing)}: in {missing_file}; "
            "to add them again (--fresh: the journal may hold them as done):",
            _command("run", missing_file, "--fresh", *context.repeated_options),
        )
    ]


def _command(*args: str) -> str:
    return shlex.join([PROGRAM, *(redact_url(a) if "://" in a else a for a in args)])


def _retry_name(dead_letter: str) -> str:
    """Where the retry keeps its own failures: beside the file it retries, never it."""
    path = Path(dead_letter)
    stem = path.name.removesuffix(".ndjson").removesuffix(".jsonl")
    return str(path.with_name(f"{stem}.retry.ndjson"))


def _title(report: Mapping[str, object]) -> Text:
    code = _count(report, "exit_code")
    if report.get("dry_run"):
        title = "Dry run finished"
    elif code == 3:
        title = "Run aborted"
    elif code in _SIGNALS:
        title = "Run interrupted"
    elif code == 2:
        title = "Run stopped"
    elif "verify" in report:  # a check of the playlists, not a run that changed them
        title = "Check finished"
    else:
        title = "Run finished"
    return Text(title, style="bold")


ANSWERED_RESULTS = ("created", "already_present", "failed", "removed", "present", "missing")


def counts_table(report: Mapping[str, object], width: int) -> Table:
    """The report's counts, then its traffic, the time and the rate; as two columns of
    pairs from TWO_COLUMNS_FROM characters wide, one below."""
    elapsed = _seconds(report, "elapsed_s")
    rows_read = _count(report, "rows_read")
    # The rate is of the rows the API answered for: skipped rows cost no request, and a
    # rerun that skips a million would otherwise show a speed no request was sent at.
    answered = sum(_count(report, field) for field in ANSWERED_RESULTS)
    results: list[tuple[str, Text]] = [
        ("rows read", _figure(rows_read)),
        ("invalid", _figure(_count(report, "invalid"), "red")),
        ("skipped", _figure(_count(report, "skipped"))),
        ("created", _figure(_count(report, "created"), "green")),
        ("already present", _figure(_count(report, "already_present"))),
    ]
    for field, style in (("removed", ""), ("present", "green"), ("missing", "red")):
        if _count(report, field):  # the figures of remove, undo and verify
            results.append((field, _figure(_count(report, field), style)))
    results += [
        ("failed", _figure(_count(report, "failed"), "red")),
        ("not attempted", _figure(_count(report, "not_attempted"), "yellow")),
    ]
    paused = _seconds(report, "paused_s")
    traffic: list[tuple[str, Text]] = [
        ("requests", _figure(_count(report, "requests"))),
        ("429s", _figure(_count(report, "rate_limited"), "yellow")),
        ("retries", _figure(_count(report, "retries"))),
        ("paused", Text(duration(paused), style="yellow" if paused >= 0.05 else "dim")),
        ("time", Text(duration(elapsed))),
        ("rate", Text(rate(answered / elapsed) if elapsed > 0 and answered else "-")),
    ]
    table = Table.grid(padding=(0, 1))
    if width >= TWO_COLUMNS_FROM:
        for _ in range(2):
            table.add_column(style="dim")
            table.add_column(justify="right")
            table.add_column(width=2)
        blank = ("", Text(""))
        for index in range(max(len(results), len(traffic))):
            left = results[index] if index < len(results) else blank
            right = traffic[index] if index < len(traffic) else blank
            table.add_row(left[0], left[1], "", right[0], right[1], "")
    else:
        table.add_column(style="dim")
        table.add_column(justify="right")
        for label, value in [*results, *traffic]:
            table.add_row(label, value)
    return table


def _figure(value: int, style_when_any: str = "") -> Text:
    if value == 0:
        return Text("0", style="dim")
    return Text(f"{value:,}", style=style_when_any)


def render_summary(report: Mapping[str, object], context: SummaryContext, console: Console) -> None:
    """The end of a run on a terminal: the table, why the exit status is what it is, and
    the next steps. Commands are printed unwrapped (the terminal wraps them), so a
    command copied from a narrow terminal still runs."""
    console.print(Group(_title(report), counts_table(report, console.width)))
    code = _count(report, "exit_code")
    console.print(Text(exit_reason(report, context), style="bold" if code == 0 else "bold red"))
    steps = next_steps(report, context)
    if steps:
        console.print(Text("Next:", style="bold"))
    for step in steps:
        console.print(Padding(Text(step.what), (0, 0, 0, 2)))
        if step.command is not None:
            console.print(Text("    " + step.command, style="cyan"), soft_wrap=True)
