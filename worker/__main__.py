"""`python -m worker` is the same command as `rum-playlist-ingest`."""

from worker.cli import main

raise SystemExit(main())
