"""The one spelling of a moment in everything the daemon writes: records, reports, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_timestamp(moment: datetime | None = None) -> str:
    """`2026-11-24T13:19:38.120512Z`: RFC 3339, UTC, microseconds, the form every record uses."""
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
