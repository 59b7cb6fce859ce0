"""The front door's front door: `python -m logwarden` and the `logwarden` script enter here, so
that a SIGTERM handler is in place before the heavy imports (pydantic, re2, structlog: about
0.2 s); `cli.main` takes over from there."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # a SIGTERM while Python is still importing is a stop before anything was done: exit 0
    # rather than die of it (-15), as systemd counts a death by SIGTERM as a failed stop
    sys.exit(0)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_cleanly)
    from logwarden.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
