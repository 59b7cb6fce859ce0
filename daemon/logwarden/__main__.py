"""`python -m logwarden` is the same front door as the `logwarden` script."""

from logwarden.cli import main

raise SystemExit(main())
