"""Prometheus metrics: the counter snapshot rendered in the text format, to a file or over HTTP.

Every figure comes from `counters.DaemonSnapshot`, the one snapshot status.json and systemd's
STATUS= read too; nothing here counts anything. Rejected: prometheus-client's own Counter and
Gauge objects updated in the read path (a second set of counters beside the snapshot's, a lock
per increment in the hot path, and figures that could disagree with `logwarden status`). A
custom collector turns a snapshot into metric families at scrape time instead.

Two ways out, both off by default:
- `textfile`: node_exporter's textfile collector reads `*.prom` files from a directory. The file
  is replaced atomically every `interval` (a temporary whose name starts with `.` and does not end
  in `.prom`, then a rename), so node_exporter never reads a partial one. It needs no network,
  which suits the hardened unit (PrivateNetwork=yes).
- `listen`: an HTTP endpoint from prometheus-client's `start_http_server`, which serves from a
  thread of its own. Rejected: an asyncio server on the daemon's loop, which means writing an
  HTTP server by hand (prometheus-client ships none for asyncio without aiohttp). The thread does
  not read the daemon's objects: a scrape asks the loop for a fresh snapshot
  (`LoopSnapshots`), which is taken in one synchronous step there, as status.json's is.

A figure is exported only where the snapshot counts it: one that reads 0 must mean "none", not
"not counted".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Thread
from typing import TYPE_CHECKING

from logwarden.atomic import write_atomically
from logwarden.config import MetricsConfig
from logwarden.counters import DaemonSnapshot, HistogramSnapshot
from logwarden.log import get_logger

# prometheus_client (and the http.server, email and urllib it brings) is imported where a
# textfile is written or an endpoint started: 15 ms of every start, and most daemons export none
if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

SCRAPE_SNAPSHOT_TIMEOUT = 2.0  # a scrape waits this long for the loop, then serves the last one
TEXTFILE_MODE = 0o644  # node_exporter runs as another user

log = get_logger(__name__)


class MetricsListenError(Exception):
    """The metrics endpoint cannot listen where the config says (port in use, no such address)."""


def _families(snapshot: DaemonSnapshot) -> list[Metric]:
    """Every metric family, from one snapshot."""
    from prometheus_client.metrics_core import (  # noqa: PLC0415 - see the imports
        CounterMetricFamily,
        GaugeMetricFamily,
    )

    lines = CounterMetricFamily(
        "logwarden_lines", "Lines read and handed to the rules, per source.", labels=["source"]
    )
    bytes_read = CounterMetricFamily(
        "logwarden_bytes", "Bytes read from the files, per source.", labels=["source"]
    )
    # every configured source and rule has its series from the start (at 0), so that rate() and
    # increase() see the first lines; one removed by a reload keeps its figures
    for source in sorted({*snapshot.sources, *snapshot.source_lines, *snapshot.source_bytes}):
        lines.add_metric([source], snapshot.source_lines.get(source, 0))
        bytes_read.add_metric([source], snapshot.source_bytes.get(source, 0))

    matches = CounterMetricFamily(
        "logwarden_matches", "Match records written, per rule.", labels=["rule"]
    )
    rules = sorted({*snapshot.rules, *snapshot.matches, *snapshot.alerts_per_rule})
    for rule in rules:
        matches.add_metric([rule], snapshot.matches.get(rule, 0))
    alerts = CounterMetricFamily(
        "logwarden_alerts", "Threshold alerts written, per rule.", labels=["rule"]
    )
    for rule in rules:
        alerts.add_metric([rule], snapshot.alerts_per_rule.get(rule, 0))
    suppressed = CounterMetricFamily(
        "logwarden_suppressed",
        "Matches dropped by a rule's ignore list, per rule.",
        labels=["rule"],
    )
    for rule in sorted({*rules, *snapshot.suppressed}):
        suppressed.add_metric([rule], snapshot.suppressed.get(rule, 0))
    evictions = CounterMetricFamily(
        "logwarden_rule_state_evictions",
        "Keys a rule's threshold windows and held records dropped to stay bounded, per rule.",
        labels=["rule"],
    )
    for rule in sorted({*rules, *snapshot.rule_state_evictions}):
        evictions.add_metric([rule], snapshot.rule_state_evictions.get(rule, 0))
    out_of_bounds = CounterMetricFamily(
        "logwarden_event_times_out_of_bounds",
        "Times read from matched lines too far ahead or behind to trust (arrival time used), "
        "per source.",
        labels=["source"],
    )
    for source, count in sorted(snapshot.times_out_of_bounds.items()):
        out_of_bounds.add_metric([source], count)

    watched = GaugeMetricFamily(
        "logwarden_files_watched", "Files being read, per source.", labels=["source"]
    )
    unreadable = GaugeMetricFamily(
        "logwarden_files_unreadable",
        "Covered paths that cannot be read now (retried), per source.",
        labels=["source"],
    )
    counts = dict.fromkeys(snapshot.sources, 0)
    failing = dict.fromkeys(snapshot.sources, 0)
    lag_bytes: dict[tuple[str, str], int] = defaultdict(int)
    lag_s: dict[tuple[str, str], float] = defaultdict(float)
    for file in snapshot.files:
        if file.state == "error":
            failing[file.source] = failing.get(file.source, 0) + 1
            continue
        counts[file.source] = counts.get(file.source, 0) + 1
        # two files can share a path for a moment (a deleted file draining beside its successor):
        # one series per path, or the exposition would hold a duplicate
        key = (file.source, file.path)
        lag_bytes[key] += file.lag_bytes
        lag_s[key] = max(lag_s[key], file.lag_s)
    for source, count in counts.items():
        watched.add_metric([source], count)
    for source, count in failing.items():
        unreadable.add_metric([source], count)
    lag = GaugeMetricFamily(
        "logwarden_lag_bytes",
        "Bytes of a file not yet read into a line (a held partial last line included).",
        labels=["source", "path"],
    )
    lag_age = GaugeMetricFamily(
        "logwarden_lag_seconds",
        "Age of the oldest unread byte of a file (a lower bound: when the daemon first saw it, "
        "or the file's mtime then if earlier); 0 when nothing is unread.",
        labels=["source", "path"],
    )
    for (source, path), value in sorted(lag_bytes.items()):
        lag.add_metric([source, path], value)
        lag_age.add_metric([source, path], round(lag_s[(source, path)], 3))

    commit = snapshot.commit
    commits = CounterMetricFamily("logwarden_commits", "Commits that succeeded.")
    commits.add_metric([], commit.commits)
    write_errors = CounterMetricFamily(
        "logwarden_write_errors",
        "Failed writes: a commit (journals and checkpoint; retried, reading pauses), or a "
        "publish or retention after a durable commit (retried at the next commit).",
        labels=["stage"],
    )
    write_errors.add_metric(["commit"], commit.failures)
    write_errors.add_metric(["publish"], commit.publish_failures)
    read_errors = CounterMetricFamily(
        "logwarden_read_errors", "Times a file or a covered path became unreadable (retried)."
    )
    read_errors.add_metric([], snapshot.read_errors)

    published = CounterMetricFamily(
        "logwarden_reports_published", "Reports published, per report.", labels=["report"]
    )
    active = GaugeMetricFamily(
        "logwarden_report_active_records",
        "Records in a report's active journal, not yet published.",
        labels=["report"],
    )
    for name, report in sorted(snapshot.reports.items()):
        published.add_metric([name], report.published)
        active.add_metric([name], report.active_records)

    lost = CounterMetricFamily(
        "logwarden_lost_bytes",
        "Bytes known lost to truncations before they were read (a lower bound while "
        "logwarden_unmeasured_truncations_total is above 0).",
    )
    lost.add_metric([], snapshot.possibly_lost_bytes)
    unmeasured = CounterMetricFamily(
        "logwarden_unmeasured_truncations",
        "Truncations seen without a copy of the old content: what they lost is unknown.",
    )
    unmeasured.add_metric([], snapshot.unmeasured_truncations)
    restarts = CounterMetricFamily(
        "logwarden_journalctl_restarts",
        "journalctl children of a journal source that ended and were started again.",
        labels=["source"],
    )
    entries = CounterMetricFamily(
        "logwarden_journal_entries", "Journal entries read, per journal source.", labels=["source"]
    )
    journal_lag = GaugeMetricFamily(
        "logwarden_journal_lag_seconds",
        "How long ago the last entry a journal source handed on was written (absent before any).",
        labels=["source"],
    )
    for journal in snapshot.journals:
        restarts.add_metric([journal.source], journal.restarts)
        entries.add_metric([journal.source], journal.entries)
        if journal.lag_s is not None:
            journal_lag.add_metric([journal.source], round(journal.lag_s, 3))

    started = GaugeMetricFamily(
        "logwarden_start_time_seconds", "When the daemon started, in seconds since the epoch."
    )
    started.add_metric([], round(time.time() - snapshot.uptime_s, 3))
    return [
        lines,
        bytes_read,
        matches,
        alerts,
        suppressed,
        evictions,
        out_of_bounds,
        watched,
        unreadable,
        lag,
        lag_age,
        _histogram(
            "logwarden_commit_duration_seconds",
            "How long a commit that succeeded took (journals written and fsynced, checkpoint "
            "replaced).",
            commit.durations,
        ),
        commits,
        write_errors,
        read_errors,
        published,
        active,
        lost,
        unmeasured,
        restarts,
        entries,
        journal_lag,
        started,
    ]


def _histogram(name: str, documentation: str, histogram: HistogramSnapshot) -> Metric:
    from prometheus_client.metrics_core import HistogramMetricFamily  # noqa: PLC0415

    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


class _SnapshotCollector:
    """A prometheus-client collector over whatever snapshot `take` returns at scrape time."""

    def __init__(self, take: Callable[[], DaemonSnapshot | None]) -> None:
        self._take = take

    def collect(self) -> Iterator[Metric]:
        snapshot = self._take()
        if snapshot is not None:
            yield from _families(snapshot)


def render(snapshot: DaemonSnapshot) -> bytes:
    """The snapshot in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(lambda: snapshot))
    return generate_latest(registry)


def write_textfile(path: Path, snapshot: DaemonSnapshot) -> None:
    """Blocking: run in a thread. Atomic, not durable (rewritten every interval anyway)."""
    write_atomically(path, [render(snapshot)], mode=TEXTFILE_MODE, durable=False)


class LoopSnapshots:
    """Snapshots taken on the event loop, for the endpoint's threads: the daemon's counters
    belong to the loop, and a snapshot built there in one step is consistent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, take: Callable[[], DaemonSnapshot]):
        self._loop = loop
        self._take = take
        self.last: DaemonSnapshot | None = None

    def get(self) -> DaemonSnapshot | None:
        """A fresh snapshot; the last one when the loop is busy past the timeout or closed."""
        future: concurrent.futures.Future[DaemonSnapshot] = concurrent.futures.Future()

        def take() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._take())
                except Exception as error:
                    future.set_exception(error)

        try:
            self._loop.call_soon_threadsafe(take)
            self.last = future.result(SCRAPE_SNAPSHOT_TIMEOUT)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            pass
        except TimeoutError:
            future.cancel()
        return self.last


class _Endpoint:
    """prometheus-client's HTTP server and its thread."""

    def __init__(self, listen: str, address: tuple[str, int], snapshots: LoopSnapshots) -> None:
        from prometheus_client import CollectorRegistry, start_http_server  # noqa: PLC0415

        self.listen = listen
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(snapshots.get))
        host, port = address
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        except OSError as error:  # gaierror included: an unknown host name
            raise MetricsListenError(
                f"cannot listen on {listen} for metrics: {error.strerror or error}"
            ) from error
        self.port: int = self._server.server_port

    def stop(self) -> None:
        """Blocking (up to the server's poll interval): run in a thread."""
        server: WSGIServer = self._server
        thread: Thread = self._thread
        server.shutdown()
        server.server_close()
        thread.join()


class MetricsOutput:
    """The endpoint and the textfile, as the config says; `apply` on start and on every reload."""

    def __init__(self, take: Callable[[], DaemonSnapshot]) -> None:
        self._take = take
        self._snapshots = LoopSnapshots(asyncio.get_running_loop(), take)
        self.config = MetricsConfig()
        self._endpoint: _Endpoint | None = None
        self._changed = asyncio.Event()
        self._failing = False

    async def apply(self, config: MetricsConfig) -> None:
        """Start, stop or move the endpoint; raises MetricsListenError with the previous endpoint
        still (or again) serving, so a reload that fails here changes nothing."""
        if config.listen != self.config.listen:
            previous = self._endpoint
            if previous is not None:  # first: the new address may be the old port
                await asyncio.to_thread(previous.stop)
                self._endpoint = None
            try:
                self._endpoint = await self._listen(config)
            except MetricsListenError:
                if previous is not None:
                    try:
                        self._endpoint = await self._listen(self.config)
                    except MetricsListenError:
                        # neither address: none serves now, and the config must say so, or a
                        # later reload naming the old address again would never listen
                        log.error("metrics endpoint lost; a reload tries again")
                        self.config = self.config.model_copy(update={"listen": None})
                raise
        old_textfile = self.config.textfile
        # the new config first: a write of the old file in flight then removes what it wrote
        # (`_write`), whether it ends before the unlink below or after it
        self.config = config
        if old_textfile is not None and old_textfile != config.textfile:
            # node_exporter would serve a file left behind as if it were current
            with contextlib.suppress(OSError):
                await asyncio.to_thread(old_textfile.unlink, missing_ok=True)
        self._changed.set()

    async def _listen(self, config: MetricsConfig) -> _Endpoint | None:
        if config.listen is None or config.address is None:
            return None
        endpoint = await asyncio.to_thread(
            _Endpoint, config.listen, config.address, self._snapshots
        )
        log.info("serving metrics", listen=config.listen, port=endpoint.port)
        return endpoint

    @property
    def port(self) -> int | None:
        """The endpoint's port (the one the kernel chose for port 0)."""
        return None if self._endpoint is None else self._endpoint.port

    async def textfile_loop(self) -> None:
        """Writes the textfile at once and then every `interval`; a reload wakes it."""
        while True:
            self._changed.clear()
            if self.config.textfile is not None:
                await self._write(self.config.textfile)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.config.interval)

    async def _write(self, path: Path) -> None:
        """The textfile is a view: a full disk or a missing directory is logged once, not fatal."""
        snapshot = self._take()
        self._snapshots.last = snapshot
        try:
            await asyncio.to_thread(write_textfile, path, snapshot)
            if path != self.config.textfile:
                # a reload moved or dropped the textfile while this write was in flight: the
                # old path must not be left for node_exporter to serve as if it were current
                await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as error:
            if not self._failing:
                log.warning("cannot write metrics textfile", path=str(path), error=str(error))
            self._failing = True
        else:
            if self._failing:
                log.info("metrics textfile written again", path=str(path))
            self._failing = False

    async def close(self) -> None:
        """At stop: the endpoint closes; the textfile gets the final figures (node_exporter's
        `node_textfile_mtime_seconds` tells it is no longer refreshed)."""
        if self._endpoint is not None:
            await asyncio.to_thread(self._endpoint.stop)
            self._endpoint = None
        if self.config.textfile is not None:
            await self._write(self.config.textfile)
