"""The command line: `rum-playlist-ingest COMMAND` (run, sessions, validate, status,
sandbox, playlists, remove, undo, verify).

Names, options and exit codes follow `cli-contract.md`; scripts depend on them. One
module per subcommand adds its parser; every option is checked before anything is read
or sent, so a bad option exits 2 at once. Nothing below the command line sees argparse.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from worker import __version__
from worker.cli import playlists, remove, run, sandbox, sessions, status, undo, validate, verify


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    args = build_parser().parse_args(arguments)
    code: int = args.handler(args)
    return code
