"""`--playlist ID` (`worker.cli.inputs`), `--playlist-name NAME` and `--create-playlist`,
shared by `run`, `remove` and `verify`: which playlist rows that name none go to.

A name is resolved once, before anything is read or sent, so a name that matches no
playlist (or two) exits 2 having sent nothing but the search.
"""

from __future__ import annotations

import argparse
import dataclasses

from worker.cli.inputs import add_playlist_option
from worker.config import ConfigError
from worker.input import ReaderOptions
from worker.settings import Target


def add_playlist_options(parser: argparse.ArgumentParser) -> None:
    add_playlist_option(parser)
    group = parser.add_argument_group("a playlist by its name")
    group.add_argument(
        "--playlist-name",
        metavar="NAME",
        help="as --playlist, for the one playlist named exactly NAME (needs the keys)",
    )
    group.add_argument(
        "--create-playlist",
        action="store_true",
        help="with --playlist-name: create the playlist if none has that name",
    )


def check_playlist_options(args: argparse.Namespace) -> None:
    """Raises `ConfigError` for a combination that cannot work."""
    if args.playlist is not None and args.playlist_name is not None:
        raise ConfigError("--playlist and --playlist-name both name the playlist: give one of them")
    if args.create_playlist and args.playlist_name is None:
        raise ConfigError("--create-playlist needs --playlist-name NAME")
    if args.playlist_name is not None and not args.playlist_name.strip():
        raise ConfigError("--playlist-name must not be empty or blank")
    if args.create_playlist and getattr(args, "shard", None):
        raise ConfigError(
            "--create-playlist with --shard would have each shard create its own playlist: "
            "create it first with `rum-playlist-ingest playlists create NAME`, then give "
            "every shard --playlist-name NAME (or --playlist ID)"
        )
    if args.playlist_name is not None and args.sandbox:
        raise ConfigError(
            "a sandbox started for this run holds no named playlists: give --playlist ID, "
            "or start one with `rum-playlist-ingest sandbox` and pass --base-url"
        )


def with_playlist(args: argparse.Namespace, reader: ReaderOptions, target: Target) -> ReaderOptions:
    """The reader's options (`--playlist` already in them) with the playlist
    `--playlist-name` names, resolved against `target` (a network call). Raises
    `ConfigError` (exit 2)."""
    if args.playlist_name is None:
        return reader
    from worker.playlist_resolution import resolve_name

    playlist_id = resolve_name(target, args.playlist_name, create=args.create_playlist)
    return dataclasses.replace(reader, default_playlist=playlist_id)
