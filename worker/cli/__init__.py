"""The command line: `rum-playlist-ingest COMMAND` (run, sessions, validate, status,
sandbox, playlists, remove, undo, verify).

Names, options and exit codes follow `cli-contract.md`; scripts depend on them. One
module per subcommand adds its parser; every option is checked before anything is read
or sent, so a bad option exits 2 at once. Nothing below the command line sees argparse.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

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
    args = parser.parse_args(arguments)
    code: int = args.handler(args)
    return code
