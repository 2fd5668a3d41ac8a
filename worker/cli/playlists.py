"""`playlists list|show|create`: the playlists themselves, by the same target and keys
as `run`; a table on a terminal, NDJSON (one playlist a line) otherwise or with --json."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from worker.cli.run import add_target_options, target_from_args
from worker.cli.types import positive_int
from worker.examples import epilog

ACTIONS = ("list", "show", "create")


def misplaced_option(arguments: Sequence[str]) -> str | None:
    """Why `playlists --site X list` cannot be parsed: argparse takes what follows an
    option it does not know there for the action, and its error names neither."""
    if arguments[:1] != ["playlists"] or len(arguments) < 2:
        return None
    first = arguments[1]
    if not first.startswith("-") or first in ("-h", "--help"):
        return None
    return (
        f"{first}: the options go after the action ({', '.join(ACTIONS)}), such as "
        f"rum-playlist-ingest playlists list {first} ..."
    )


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "playlists",
        help="list, show or create playlists",
        epilog=epilog("playlists"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _action(actions, "list", "every playlist (or those whose name holds TEXT)")
    listing.add_argument("--name", metavar="TEXT", help="the API's search of the names")
    show = _action(actions, "show", "one playlist")
    show.add_argument("playlist_id", type=positive_int, metavar="ID")
    create = _action(actions, "create", "create a playlist; prints it, with its id")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--description", metavar="TEXT")
    for each in (listing, show, create):
        add_target_options(each, sandbox=False)
        each.add_argument("--json", action="store_true", help="NDJSON even on a terminal")
        each.set_defaults(handler=handle)


def _action(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str, what: str
) -> argparse.ArgumentParser:
    """An action's parser, whose --help ends with its own examples, as a subcommand's does."""
    return actions.add_parser(
        name,
        help=what,
        epilog=epilog(f"playlists {name}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def handle(args: argparse.Namespace) -> int:
    from worker.config import ConfigError
    from worker.playlist_command import playlists_command

    try:
        target = target_from_args(args, os.environ, needs_keys=True)
    except ConfigError as exc:
        print(f"rum-playlist-ingest: error: {exc}", file=sys.stderr)
        return 2
    table = sys.stdout.isatty() and not args.json
    return playlists_command(args, target, sys.stdout, table=table)
