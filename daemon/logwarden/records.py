"""The one place match and alert records are built (DESIGN §4), and how they are serialised."""

from __future__ import annotations

import socket
from typing import Any

import orjson

from logwarden.origin import Origin
from logwarden.rules import Match
from logwarden.thresholds import Alert
from logwarden.timestamps import utc_timestamp

RECORD_VERSION = 1


class RecordBuilder:
    """Builds records for one host; the host name is looked up once."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()

    def match(self, match: Match, source: Origin, time: str | None = None) -> dict[str, Any]:
        return {
            "v": RECORD_VERSION,
            "time": time or utc_timestamp(),
            "rule": match.rule,
            "severity": match.severity,
            "host": self.host,
            "source": source.record_source(match),
            "line": match.line,
            "truncated": match.truncated,
            "captures": match.captures,
        }

    def alert(self, alert: Alert, source: Origin, time: str | None = None) -> dict[str, Any]:
        """A threshold crossing: the triggering match's record plus `kind` and `threshold`."""
        record = self.match(alert.match, source, time)
        record["kind"] = "alert"
        record["threshold"] = {
            "key": alert.key,
            "value": alert.value,
            "count": alert.count,
            "within_s": alert.within_s,
        }
        return record


def dumps(record: dict[str, Any]) -> bytes:
    """One record as a JSON line (with its newline)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
