"""logwarden: watch log files, match lines against rules, publish JSON reports exactly once."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`__version__` on first use: importlib.metadata costs 30 ms that every start would pay
    before `__main__` could install its SIGTERM handler."""
    if name != "__version__":
        raise AttributeError(f"module 'logwarden' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("logwarden")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0.0.0"
