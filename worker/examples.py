"""The examples that end each subcommand's `--help`: real uses, ready to copy.

Kept apart from the parsers so every subcommand's module takes its text from one place,
and so a test can parse every example with the real parser: an example that names an
option the CLI does not have fails the suite, not the user.
"""

from __future__ import annotations

from collections.abc import Mapping

EXAMPLES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "run": (
        (
            "a backfill from a file; the rows that fail for good kept to retry",
            "rum-playlist-ingest run sessions.csv.gz --dead-letter failed.ndjson"
            " --report report.json",
        ),
        (
            "pod K of a backfill split in 8 (a Kubernetes Indexed Job); see docs/deployment.md",
            "rum-playlist-ingest run backfill.csv.gz --shard 2/8 --concurrency 4",
        ),
        (
            "a nightly job: every completed session with a replay the query found since the "
            "last run",
            "rum-playlist-ingest run --query '@application.id:abc' --from last"
            " --first-from now-7d --playlist 123",
        ),
    ),
    "validate": (
        ("check a file before a big run", "rum-playlist-ingest validate sessions.csv"),
        (
            "only the counts, for several inputs",
            "rum-playlist-ingest validate a.csv b.ndjson.gz --max-errors 0",
        ),
    ),
    "sandbox": (
        (
            "a sandbox with a tight limit, for rehearsing pacing",
            "rum-playlist-ingest sandbox --rate-limit 20/3 > sandbox.url &",
        ),
        (
            "one that fails 10% of the requests with a 5xx",
            "rum-playlist-ingest sandbox --fault-5xx 0.1 --seed 7",
        ),
    ),
    "status": (
        ("what the default journal knows", "rum-playlist-ingest status"),
        (
            "a shard's journal, as JSON, with its last 10 runs",
            "rum-playlist-ingest status --shard 2/8 --runs 10 --json",
        ),
    ),
    "sessions": (
        (
            "write yesterday's sessions with a replay as input for `run`",
            "rum-playlist-ingest sessions --query '@application.id:abc' --from now-1d"
            " -o sessions.ndjson",
        ),
        ("then add them to a playlist", "rum-playlist-ingest run sessions.ndjson --playlist 123"),
        (
            "a look at the sandbox's generated sessions",
            "rum-playlist-ingest sessions --sandbox --query '@session.type:user' --from now-7d"
            " | head",
        ),
    ),
    "verify": (
        (
            "check a backfill; resend what is missing with `run missing.ndjson --fresh`",
            "rum-playlist-ingest verify sessions.csv --missing missing.ndjson",
        ),
        (
            "the sessions of a playlist that no input names, as input for `remove`",
            "rum-playlist-ingest verify sessions.csv --playlist 123 --extra > extra.ndjson",
        ),
    ),
    "undo": (
        (
            "see what undoing the last run would remove",
            "rum-playlist-ingest undo --last --dry-run",
        ),
        ("remove exactly the sessions the last run created", "rum-playlist-ingest undo --last"),
    ),
    "remove": (
        (
            "take a list of sessions out of one playlist",
            "rum-playlist-ingest remove sessions.csv --playlist 123",
        ),
        (
            "smaller bulk removals, behind a proxy that caps request bodies",
            "rum-playlist-ingest remove old.ndjson --batch-size 20",
        ),
    ),
    "playlists": (
        ("find a playlist's id by its name", "rum-playlist-ingest playlists list --name backfill"),
        (
            "create the playlist before a sharded backfill",
            "rum-playlist-ingest playlists create 'Backfill 2026'",
        ),
    ),
    "playlists list": (
        ("find a playlist's id by its name", "rum-playlist-ingest playlists list --name backfill"),
        (
            "the ids of the EU site's empty playlists, for a script",
            "rum-playlist-ingest playlists list --site datadoghq.eu --json"
            " | jq -r 'select(.session_count == 0) | .id'",
        ),
    ),
    "playlists show": (
        (
            "how many sessions a playlist holds after a backfill",
            "rum-playlist-ingest playlists show 123",
        ),
        (
            "its session count alone, for a script",
            "rum-playlist-ingest playlists show 123 --json | jq .session_count",
        ),
    ),
    "playlists create": (
        (
            "the playlist of a backfill, before its shards run; the table shows its id",
            "rum-playlist-ingest playlists create 'Backfill 2026'"
            " --description 'replays of the March incident'",
        ),
        (
            "the same in a script, keeping only the id for `run --playlist`",
            "rum-playlist-ingest playlists create 'Nightly replays' --json | jq -r .id",
        ),
    ),
}
"""Per subcommand, and per action of `playlists` ("playlists list"): (what it does, the
command), two or three each."""


def epilog(command: str) -> str:
    """The end of `command --help` (a subcommand, or "playlists ACTION"); format it with
    `argparse.RawDescriptionHelpFormatter` so the commands keep their lines."""
    lines = ["examples:"]
    for what, example in EXAMPLES[command]:
        lines += [f"  # {what}", f"  {example}"]
    return "\n".join(lines)
