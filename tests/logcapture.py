"""What the code under test logged: structlog's own capture, read as (level, event, context).

Components log through module-level structlog loggers (one way to get a logger); a test asks
what they said with `RecordingLog()` while the `capture_logs` fixture is active.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

_active: list[list[MutableMapping[str, Any]]] = []


@pytest.fixture
def capture_logs() -> Iterator[None]:
    with structlog.testing.capture_logs() as entries:
        _active.append(entries)
        try:
            yield
        finally:
            _active.pop()


class RecordingLog:
    """A view of the log entries captured during the current test."""

    def __init__(self) -> None:
        if not _active:
            raise RuntimeError("RecordingLog needs the capture_logs fixture")
        self._entries = _active[-1]

    @property
    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (
                str(entry["log_level"]),
                str(entry["event"]),
                {k: v for k, v in entry.items() if k not in ("log_level", "event")},
            )
            for entry in self._entries
        ]

    def count(self, level: str, contains: str) -> int:
        return sum(1 for lvl, event, _ in self.events if lvl == level and contains in event)

    def warnings(self) -> list[str]:
        """Events at warning level and above, in order."""
        return [event for level, event, _ in self.events if level in ("warning", "error")]
