"""`undo RUN_ID` / `undo --last`: remove exactly the sessions a run created.

The run's target is the journal's record of it: `--site` or `--base-url` may only name
that same target (an undo sent elsewhere would remove another organisation's sessions).
"""

from __future__ import annotations

import argparse
import os

from worker.cli.row_commands import add_batch_size_option
from worker.cli.run import add_pace_options, add_target_options, add_watch_options
from worker.cli.types import shard
from worker.examples import epilog


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "undo",
        help="remove exactly the sessions a run created",
        epilog=epilog("undo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", metavar="RUN_ID", help="as `status` lists it")
    which.add_argument(
        "--last", action="store_true", help="the journal's newest run that created sessions"
    )
    parser.add_argument(
        "--include-maybe",
        action="store_true",
        help="also remove sessions the run found present after an answer was lost "
        "(they may have been there before the run; left alone by default)",
    )
    parser.add_argument(
        "--journal", help="the journal that recorded the run (default: see docs/journal.md)"
    )
    parser.add_argument("--shard", type=shard, help="the default journal of shard K/N")
    add_target_options(parser, sandbox=False)
    add_pace_options(parser)
    add_batch_size_option(parser)
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--dead-letter", help="write rows that failed for good here (NDJSON)")
    outputs.add_argument("--report", help="write the final report to this JSON file")
    outputs.add_argument(
        "--dry-run",
        action="store_true",
        help="print (NDJSON) each session the run created and what undo does with it; send nothing",
    )
    add_watch_options(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from worker.undo_command import undo_command

    return undo_command(args, os.environ)
