"""Where a line came from: the reference the tailer hands on with each block, and records carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from logwarden.rules import Match


class Origin(Protocol):
    """Where the lines of the blocks handed on together came from: a file (`SourceRef`, one for
    every line) or a batch of journal entries (each line its own entry, found by offset)."""

    @property
    def name(self) -> str | None: ...

    def record_source(self, match: Match) -> dict[str, Any]:
        """The record's `source` for a match of one of these lines."""
        ...

    def where(self, match: Match) -> str:
        """A short place for a person: `path:line`."""
        ...

    def entry_time(self, match: Match) -> float | None:
        """The time the source itself gives the line (a journal entry's realtime, epoch
        seconds), or None when only the line's text can say."""
        ...

    def sample(self, match: Match) -> dict[str, Any]:
        """Where a match is, in an alert's `samples`: `{"path", "offset"}` or `{"cursor"}`."""
        ...

    def stream(self, match: Match) -> str:
        """Which run of lines within the source the match's line belongs to, where the same pid
        names the same process (for `carry`): a file (by the name it was first read under, so
        its lines are one stream across a rotation), or a journal entry's host and boot."""
        ...


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Which file a line came from: the source's name, the path and the file's identity; `home`
    is the name it was first read under when it has been renamed since (rotated)."""

    name: str | None
    path: str
    dev: int
    inode: int
    home: str | None = None

    def record_source(self, match: Match) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "dev": self.dev,
            "inode": self.inode,
            "offset": match.offset,
            "line_no": match.line_no,
        }

    def where(self, match: Match) -> str:
        return f"{self.path}:{match.line_no or '?'}"

    def entry_time(self, match: Match) -> float | None:
        return None

    def sample(self, match: Match) -> dict[str, Any]:
        return {"path": self.path, "offset": match.offset}

    def stream(self, match: Match) -> str:
        return self.home or self.path
