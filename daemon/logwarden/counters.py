"""A typed snapshot of the daemon's counters: what status.json, systemd's STATUS= and metrics read.

The daemon builds one in the event loop, in one synchronous step, so its figures agree with each
other; readers get a frozen copy and never the daemon's own objects (they may then render it in
a worker thread while the loop goes on changing the originals).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FileSnapshot:
    """One tracked file (or a path that cannot be read, with `state` "error")."""

    source: str
    path: str
    dev: int
    inode: int
    offset: int  # committed framer offset: where a restart would resume
    size: int  # last size seen
    lag_bytes: int  # bytes not yet read into a line
    lines: int
    state: str  # the tailer's: "following", "draining" or "error"
    error: str | None


@dataclass(frozen=True, slots=True)
class JournalSnapshot:
    """One journal source: where it stands and how its journalctl fares."""

    source: str
    directory: str | None  # None: the system journal
    cursor: str | None  # of the last entry handed on (what the next commit saves)
    realtime: str | None  # that entry's time (RFC 3339 UTC)
    lag_s: float | None  # how long ago that was
    entries: int
    restarts: int  # journalctl children that ended and were started again
    oversized: int  # entries skipped for their size
    state: str  # "starting", "following", "restarting" or "error"
    error: str | None


@dataclass(frozen=True, slots=True)
class ReportSnapshot:
    dir: Path
    published: int  # reports published since the daemon started
    active_records: int  # records in the journal not yet sealed


@dataclass(frozen=True, slots=True)
class CommitSnapshot:
    commits: int
    failures: int  # since the daemon started
    last_error: str | None  # set while commits fail, None once one succeeds again
    last_duration_s: float


@dataclass(frozen=True, slots=True)
class DaemonSnapshot:
    """Everything counted, as of `taken` (monotonic seconds)."""

    taken: float
    started: float  # monotonic
    config_path: Path
    lines: int
    bytes: int
    matches: Mapping[str, int]  # per rule
    alerts: int
    possibly_lost_bytes: int  # known lost to truncations before they were read
    unmeasured_truncations: int  # truncations without a copy: their loss is unknown
    commit: CommitSnapshot
    reports: Mapping[str, ReportSnapshot]
    files: tuple[FileSnapshot, ...]
    sources: tuple[str, ...]  # every file source, each shown even with no file
    journals: tuple[JournalSnapshot, ...] = ()

    def files_per_source(self) -> dict[str, int]:
        """Tracked files of each source, in config order; 0 for a source that matches none."""
        counts = dict.fromkeys(self.sources, 0)
        for file in self.files:
            if file.source in counts:
                counts[file.source] += 1
        return counts

    @property
    def uptime_s(self) -> float:
        return self.taken - self.started

    @property
    def lag_bytes(self) -> int:
        return sum(file.lag_bytes for file in self.files)

    @property
    def lost_bytes(self) -> int | None:
        """Bytes lost to truncations, or None when some loss could not be measured: a figure
        that reads 0 must mean nothing was lost, not that nothing could be counted."""
        return None if self.unmeasured_truncations else self.possibly_lost_bytes

    @property
    def match_count(self) -> int:
        return sum(self.matches.values())
