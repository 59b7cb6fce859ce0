"""`python -m logwarden` is the same front door as the `logwarden` script."""

import signal
import sys

# Before anything else is imported: a SIGTERM while Python is still importing is a stop before
# anything was done, so exit 0 rather than die of it (-15). `cli.main` takes over from here.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

from logwarden.cli import main  # noqa: E402 - after the handler, on purpose

raise SystemExit(main())
