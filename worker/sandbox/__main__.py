"""`python -m worker.sandbox`: the sandbox on its own, as its own process."""

from worker.sandbox.cli import main

raise SystemExit(main())
