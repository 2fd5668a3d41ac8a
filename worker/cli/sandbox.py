"""`sandbox`: serve a local Datadog-compatible API. Its options are the sandbox's own
(`python -m worker.sandbox` takes the same), parsed by the sandbox only when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from worker.examples import epilog

PROG = "rum-playlist-ingest sandbox"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # A placeholder for the command list and `--help`: `main` hands `sandbox ...` to the
    # sandbox's own parser before this one would ever parse it.
    commands.add_parser("sandbox", help="serve a local Datadog-compatible API", add_help=False)


def main(argv: Sequence[str]) -> int:
    from worker.sandbox.cli import main as sandbox_main

    return sandbox_main(list(argv), prog=PROG, epilog=epilog("sandbox"))
