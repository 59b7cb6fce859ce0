"""A typed snapshot of the daemon's counters: what status.json, systemd's STATUS= and metrics read.

The daemon builds one in the event loop, in one synchronous step, so its figures agree with each
other; readers get a frozen copy and never the daemon's own objects (they may then render it in
a worker thread while the loop goes on changing the originals).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Upper bounds of the commit duration buckets, in seconds: a commit is a write and an fdatasync,
# a fraction of a millisecond on a quiet SSD, seconds on a disk under writeback pressure.
COMMIT_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


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
    # age of the oldest unread byte, a lower bound: seconds since the daemon first saw it (or
    # since the file's mtime then, if earlier); 0 when lag_bytes is 0 (see Tailer.unread_since)
    lag_s: float = 0.0
    lines_per_s: float = 0.0  # over the last few seconds (recent.RATE_WINDOW_S)
    last_read: float | None = None  # wall clock of the last read that yielded lines


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
    last_published: Path | None = None  # the newest file in the report dir (from its index)


@dataclass(frozen=True, slots=True)
class ReloadSnapshot:
    """The last SIGHUP: when, whether the new config was taken, and what it changed."""

    time: float  # wall clock
    result: str  # "applied", "refused" (invalid config: the old one runs) or "failed"
    error: str | None
    rules_added: tuple[str, ...] = ()
    rules_changed: tuple[str, ...] = ()
    rules_removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative-free bucket counts: `counts[i]` observations fell in bucket i (the last bucket
    is +Inf), so the i-th Prometheus bucket is the sum of counts[:i + 1]."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float  # sum of the observations


class DurationHistogram:
    """Observations in fixed buckets: one bisect and two additions per observation, so the
    committer can record every commit without a metrics library in its path."""

    def __init__(self, bounds: tuple[float, ...] = COMMIT_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self.bounds, seconds)] += 1
        self._total += seconds

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(self._counts), self._total)


@dataclass(frozen=True, slots=True)
class CommitSnapshot:
    commits: int
    failures: int  # since the daemon started
    last_error: str | None  # set while commits fail, None once one succeeds again
    last_duration_s: float
    # publishing or retention failed after a durable commit (retried at the next commit)
    publish_failures: int = 0
    durations: HistogramSnapshot = field(default_factory=lambda: DurationHistogram().snapshot())


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
    rules: tuple[str, ...] = ()  # every configured rule, each shown even with no match
    # since the daemon started, per source name (a source removed by a reload keeps its figures)
    source_lines: Mapping[str, int] = field(default_factory=dict)
    source_bytes: Mapping[str, int] = field(default_factory=dict)
    alerts_per_rule: Mapping[str, int] = field(default_factory=dict)
    suppressed: Mapping[str, int] = field(default_factory=dict)  # matches dropped by `ignore`
    # keys a rule's threshold windows and held records dropped to stay bounded, per rule
    rule_state_evictions: Mapping[str, int] = field(default_factory=dict)
    # times read from lines but too far ahead or behind to trust (arrival used), per source
    times_out_of_bounds: Mapping[str, int] = field(default_factory=dict)
    read_errors: int = 0  # times a file or path became unreadable (each logged once)
    lines_per_s: float = 0.0  # every source's, over the last few seconds (recent.RATE_WINDOW_S)
    matches_last_minute: Mapping[str, int] = field(default_factory=dict)  # per rule
    generation: int = 1  # the config's: 1 as started, +1 at each reload that was applied
    last_reload: ReloadSnapshot | None = None

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
