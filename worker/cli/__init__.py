"""The command line: `rum-playlist-ingest COMMAND` (run, sessions, validate, status,
sandbox, playlists, remove, undo, verify).

Names, options and exit codes follow `cli-contract.md`; scripts depend on them. One
module per subcommand adds its parser; every option is checked before anything is read
or sent, so a bad option exits 2 at once. Nothing below the command line sees argparse.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any, NoReturn

from worker import __version__
from worker.cli import playlists, remove, run, sandbox, sessions, status, undo, validate, verify


class _Parser(argparse.ArgumentParser):
    """No option may be shortened (argparse's default): `--api-key SECRET` would be read
    as `--api-key-file SECRET`, and its error would print the key. Every subcommand's
    parser is of this class too (argparse makes subparsers of their parent's class)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


_KEY_FILE_OPTIONS = ("--api-key-file", "--app-key-file")


def refused_key_option(arguments: Sequence[str]) -> str | None:
    """Why the arguments cannot be parsed, if one passes a key itself as an option (or
    anything after `--api`/`--app` but the key-file options): said without repeating
    the arguments, since argparse's own error would print the key that follows."""
    for argument in arguments:
        if argument == "--":
            return None
        name = argument.split("=", 1)[0]
        if name in _KEY_FILE_OPTIONS or not name.startswith(("--api", "--app")):
            continue
        kind = "api" if name.startswith("--api") else "app"
        variable = f"DD_{kind.upper()}_KEY"
        return (
            f"{name}: a key is never an option (it would show in the process list and the "
            f"shell's history); set {variable} in the environment, or pass --{kind}-key-file PATH"
        )
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rum-playlist-ingest",
        description="Add Datadog RUM session replays to playlists in bulk.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, sessions, validate, sandbox, status, playlists, remove, undo, verify):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["sandbox"]:
        return sandbox.main(arguments[1:])
    parser = build_parser()
    refusal = refused_key_option(arguments) or playlists.misplaced_option(arguments)
    if refusal is not None:
        parser.exit(2, f"{parser.prog}: error: {refusal}\n")
    args, unknown = parser.parse_known_args(arguments)
    if unknown:
        _unrecognized(parser, args, unknown)
    code: int = args.handler(args)
    return code


_NO_SANDBOX = (
    "--sandbox is not an option of this command, which starts no sandbox of its own: start "
    "one with `rum-playlist-ingest sandbox > sandbox.url &` and pass "
    '--base-url "$(head -1 sandbox.url)"'
)


def _unrecognized(
    parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: Sequence[str]
) -> NoReturn:
    """Arguments the command does not take, said by the (sub)command they were given to,
    with its usage rather than the top level's, and the option meant where one is close
    (`--dry-ru`: `--dry-run`). Exits 2."""
    command = parser
    for chosen in (args.command, getattr(args, "action", "")):
        command = _subcommands(command).get(str(chosen), command)
    options = [name for action in command._actions for name in action.option_strings]
    said, unrecognized = [], []
    for given in unknown:
        close = difflib.get_close_matches(given.split("=", 1)[0], options, n=1, cutoff=0.8)
        if given.startswith("--") and close:
            said.append(f"{given} is not an option of this command; did you mean {close[0]}?")
        elif given == "--sandbox" and "--base-url" in options:
            said.append(_NO_SANDBOX)
        elif given.startswith("--") and (owners := _taken_by(parser, given)):
            commands = " and ".join([", ".join(owners[:-1]), owners[-1]] if owners[:-1] else owners)
            said.append(f"{given} is not an option of this command, but of {commands}")
        else:
            unrecognized.append(given)
    if unrecognized:
        said.insert(0, f"unrecognized arguments: {' '.join(unrecognized)}")
    command.error("; ".join(said))


def _taken_by(parser: argparse.ArgumentParser, given: str) -> list[str]:
    """The commands that take option `given` (`sessions --dry-run`: `run`, ...)."""
    name = given.split("=", 1)[0]
    return [
        command
        for command, sub in _subcommands(parser).items()
        if any(name in action.option_strings for action in sub._actions)
    ]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
