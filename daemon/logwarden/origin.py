"""Where a line came from: the reference the tailer hands on with each block, and records carry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Which file a line came from: the source's name, the path and the file's identity."""

    name: str | None
    path: str
    dev: int
    inode: int
