"""The one spelling of a moment in everything the daemon writes: records, reports, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp(moment: datetime | None = None) -> str:
    """`2026-11-24T13:19:38.120512Z`: RFC 3339, UTC, microseconds, the form every record uses."""
    moment = moment or datetime.now(UTC)
    # isoformat is C all the way and several times faster than strftime (one call per match);
    # its first 26 characters are the same fields, before the offset it appends
    return moment.isoformat(timespec="microseconds")[:26] + "Z"
