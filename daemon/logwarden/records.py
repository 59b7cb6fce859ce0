"""How match and alert records look (DESIGN §4), and how they are serialised.

Records are built in one place, `stages.MatchProcessor`, which both `scan` and the daemon run;
this module only knows their shape.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson

from logwarden.eventtime import rfc3339
from logwarden.origin import Origin
from logwarden.rules import Match
from logwarden.thresholds import Alert
from logwarden.timestamps import utc_timestamp

RECORD_VERSION = 1


class RecordBuilder:
    """Builds records for one host; the host name is looked up once."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or socket.gethostname()

    def match(
        self,
        match: Match,
        source: Origin,
        time: str | None = None,
        event_time: str | None = None,
        time_source: str = "arrival",
    ) -> dict[str, Any]:
        stamp = time or utc_timestamp()
        return {
            "v": RECORD_VERSION,
            "time": stamp,
            "event_time": event_time or stamp,
            "time_source": time_source,
            "rule": match.rule,
            "severity": match.severity,
            "host": self.host,
            "source": source.record_source(match),
            "line": match.line,
            "truncated": match.truncated,
            "captures": match.captures,
        }

    def alert(self, alert: Alert, time: str | None = None) -> dict[str, Any]:
        """A threshold crossing: which key, how many matches between `first` and `last` (event
        times), and where some of them are."""
        return {
            "v": RECORD_VERSION,
            "time": time or utc_timestamp(),
            "kind": "alert",
            "rule": alert.rule,
            "severity": alert.severity,
            "host": self.host,
            "key": alert.key,
            "count": alert.count,
            "within_s": alert.within_s,
            "first": rfc3339(alert.first),
            "last": rfc3339(alert.last),
            "samples": alert.samples,
        }


def dumps(record: dict[str, Any]) -> bytes:
    """One record as a JSON line (with its newline)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
