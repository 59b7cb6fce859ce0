"""logwarden: watch log files, match lines against rules, publish JSON reports exactly once."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("logwarden")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
