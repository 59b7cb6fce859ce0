"""The daemon's lifecycle: startup → run → drain → shutdown, with signals turned into events.

Signals are handled with `loop.add_signal_handler`, so a handler only sets an asyncio event or
flag and every decision is taken in ordinary coroutine code. Rejected: `signal.signal` handlers
(they run between bytecodes, in the middle of whatever the loop was doing) and a main loop
polling flags every 100 ms (latency and wake-ups for nothing). The loop's handlers are the first
thing `serve()` does, so a SIGTERM during start-up ends it between two phases, cleanly; before the
loop exists (Python importing, the config compiling) nothing has been done yet, and the plain
SIGTERM handler of `__main__` and `cli` simply exits 0.

The committer is a group commit: as soon as the previous commit finished and new records wait,
the next one starts, so a lone match is durable within one fsync round trip, and under load many
matches share one. Offsets that advanced without any match are committed every
`commit_interval` at most: re-reading a few lines that matched nothing after a crash costs
nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from logwarden import checkpoint
from logwarden.atomic import make_dirs
from logwarden.config import Config
from logwarden.counters import (
    CommitSnapshot,
    DaemonSnapshot,
    DurationHistogram,
    ReloadSnapshot,
    ReportSnapshot,
)
from logwarden.discovery import PathIndex
from logwarden.fallback import files_only, select_sources
from logwarden.journal import JournalManager
from logwarden.journal_entries import JournalPosition
from logwarden.log import get_logger
from logwarden.metrics import MetricsListenError, MetricsOutput
from logwarden.notify import Notifier
from logwarden.pipeline import Pipeline
from logwarden.problems import ConfigError
from logwarden.records import RecordBuilder
from logwarden.reports import (
    CommitBatch,
    Journal,
    ReportDirError,
    ReportWriter,
    cut_back,
    give_back,
    prepare_dirs,
    publish_sealed,
    recover_journals,
    settle,
    write_batches,
)
from logwarden.resume import CopyRead
from logwarden.rules import RuleSet, load_config
from logwarden.status import StatusWriter
from logwarden.tail import FileCheckpoint, TailManager
from logwarden.watch import Watcher

if TYPE_CHECKING:
    from logwarden.console import Echo

EX_OK = 0
EX_FAILURE = 1
DRAIN_TIMEOUT = 60.0
RETRY_MAX = 5.0
START_EXTENSION = 15.0  # seconds asked for at a time while starting
FULL_CHECK_INTERVAL = 60.0  # a truncation the bytes counter misses is also caught on restart
LATENCY_READ_HOLD_S = 0.002  # see `read_hold`
BATCH_READ_HOLD_S = 0.025
SLOW_COMMIT_S = 0.005  # a commit on the loop slower than this sends commits to their thread
THREADED_COMMITS_FOR_S = 300.0  # for this long, before the loop tries again
STATUS_HEARTBEAT = 60.0  # status.json is rewritten this often even when nothing changed
CONSOLE_INTERVAL = 1.0  # the foreground console's snapshots (rates, the --live panel)

log = get_logger(__name__)


def run_daemon(config: Config, rules: RuleSet, *, foreground: bool, live: bool = False) -> int:
    """Run until SIGTERM/SIGINT; the exit code for the cli."""
    daemon = Daemon(config, rules, foreground=foreground, live=live)
    return asyncio.run(daemon.serve())


@dataclass
class CommitOutcome:
    """What a commit published (once its checkpoint was durable), and what went wrong after."""

    published: list[tuple[ReportWriter, Journal, Path]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (log message, error)


@dataclass
class CommitStats:
    commits: int = 0
    failures: int = 0
    last_error: str | None = None
    last_duration: float = 0.0
    publish_failures: int = 0  # publish or retention problems after a durable commit
    durations: DurationHistogram = field(default_factory=DurationHistogram)


class Daemon:
    def __init__(
        self, config: Config, rules: RuleSet, foreground: bool = False, live: bool = False
    ) -> None:
        self.config = config
        self.rules = rules
        self.foreground = foreground
        self.echo: Echo | None = None
        if foreground:  # rich, which the console draws with, is 40 ms of every start: only here
            from logwarden.console import foreground_echo  # noqa: PLC0415

            self.echo = foreground_echo(live)
        self.notifier = Notifier()
        self.builder = RecordBuilder()
        self.writers: dict[str, ReportWriter] = {}
        self.known_sources: frozenset[str] = frozenset()
        self.commit_stats = CommitStats()
        self.stop_requested = asyncio.Event()
        # set by the pipeline (records wait) and by SIGUSR1: the committer looks at once
        self.commit_wanted = asyncio.Event()
        self.started = time.monotonic()
        self._signals = 0
        # SIGHUP only sets this and counts; `_reloader` runs the reloads, one at a time
        self.reload_wanted = asyncio.Event()
        self._hangups = 0
        # held by a reload from start to end; the drain takes it once, so a reload in flight
        # ends before the drain begins, and none starts after (it would start readers and swap
        # writers under the final commits)
        self._reload_lock = asyncio.Lock()
        self._draining = False
        self.generation = 1  # of the config: +1 at each reload applied
        self.last_reload: ReloadSnapshot | None = None
        self.exit_code = EX_OK
        self._status_failing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: IO[bytes] | None = None
        self.restored = checkpoint.Checkpoint()
        self._committed_files: list[FileCheckpoint] = []
        self._committed_cursors: dict[str, JournalPosition] = {}
        self._committed_bytes = 0
        self._commit_lock = asyncio.Lock()
        # commits run on their own thread, never queued behind file reads in the default pool
        self._disk = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="logwarden-commit", initializer=_main_thread_signals
        )
        self._threaded_commits_until = 0.0  # commits go to `_disk` until then (see `_on_disk`)
        self.checkpoints: checkpoint.CheckpointStore
        self.pipeline: Pipeline
        self.tails: TailManager
        self.journals: JournalManager
        self.watcher: Watcher
        self.active: Config  # the config's sources less one of each fallback pair
        self.status: StatusWriter
        self.metrics: MetricsOutput

    # ------------------------------------------------------------------ phases

    async def serve(self) -> int:
        # first of all, so that a stop at any moment of start-up is a clean stop (systemd sends
        # SIGTERM whenever it likes); until now the cli's early handler covered it
        self._install_signal_handlers()
        # worker threads leave the stop signals to the main thread, the one that handles them
        # (and the one that holds them back while the stop switches them to ignored)
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(thread_name_prefix="asyncio", initializer=_main_thread_signals)
        )
        extender = asyncio.create_task(self._extend_start_timeout())
        try:
            await self.startup()
        except StartupStopped as stopped:
            log.info("stopped during start-up", before=stopped.phase)
            await self.shutdown()
            return EX_OK
        except (
            ReportDirError,
            checkpoint.CheckpointError,
            StateDirError,
            MetricsListenError,
            OSError,
        ) as error:
            # OSError: recovery writes (journal tails) on a full or failing disk, among others
            path = getattr(error, "filename", None)
            log.error("cannot start", error=str(error), **({"path": path} if path else {}))
            await self.shutdown()
            return EX_FAILURE
        except Exception:
            # a defect, not an operator's problem: its traceback goes to the log, and what
            # start-up had opened is closed before exit 1 (systemd restarts it)
            log.exception("cannot start: unexpected error")
            await self.shutdown()
            return EX_FAILURE
        finally:
            extender.cancel()
        try:
            await self.stop_requested.wait()
            self.notifier.stopping()
            log.info("stopping: reading every file to its end and committing")
            await asyncio.wait_for(self.drain(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.error(
                "drain took too long; stopping with what is committed", timeout_s=DRAIN_TIMEOUT
            )
        finally:
            await self.shutdown()
        log.info("stopped", commits=self.commit_stats.commits, lines=self.pipeline.lines)
        return self.exit_code

    async def startup(self) -> None:
        config = self.config
        state_dir = config.daemon.state_dir
        self._lock = lock_state_dir(state_dir)
        self.checkpoints = await asyncio.to_thread(checkpoint.CheckpointStore, state_dir)
        self._stop_point("recovery")
        self.restored = restored = self.checkpoints.restored or checkpoint.Checkpoint()
        self.known_sources = restored.sources
        await asyncio.to_thread(prepare_dirs, config.reports, self.journal_root)
        log.debug("recovering journals", reports=len(config.reports))
        self.writers = await self._build_writers(restored)
        self._stop_point("the first commit")
        # sealed journals a crash left unpublished are published before anything new is read
        await self.commit()
        self._stop_point("reading")

        self.pipeline = Pipeline(
            self.rules,
            config.sources,
            self.writers,
            builder=self.builder,
            on_records=self._records_arrived,
            echo=self.echo,
        )
        self.pipeline.restore(restored.rule_state)  # threshold windows, held records
        self.active = active = await asyncio.to_thread(select_sources, config)
        index = PathIndex(active.file_sources)
        self.tails = TailManager(
            files_only(active), index, self.pipeline, restored.files, self.known_sources,
            rotated_after_ns=restored.rotated_after_ns, copies_read=restored.copies_read,
        )  # fmt: skip
        self.journals = JournalManager(
            active, self.pipeline, restored.cursors, self.known_sources, frozenset(config.sources)
        )
        self.watcher = Watcher(
            index, config.daemon.watcher, self.tails.changed, min_interval=read_hold(config)
        )
        await self.watcher.start()
        self._stop_point("reading")
        # from here a stop is an ordinary one: what was read is drained and committed
        await self.tails.start()
        await self.journals.start()
        self.known_sources = frozenset(active.sources)
        self.status = StatusWriter(state_dir)
        # before the ready line: `status` right after it shows this run, not the last one
        await self._write_status(self.snapshot())
        self.metrics = MetricsOutput(self.snapshot)
        await self.metrics.apply(config.metrics)  # a port in use stops start-up here
        for coroutine in (
            self.metrics.textfile_loop(),
            self._committer(),
            self._rescanner(),
            self._status_loop(),
            self._watchdog_loop(),
            self._reloader(),
        ):
            self._spawn(coroutine)
        # what start-up made (modules, the config, the compiled rules) lives until exit or until
        # a reload replaces it: the collector stops walking it at every full collection, as
        # `scan` does (in a catch-up of 2,000,000 lines, collections fell from 50-75 ms of the
        # main process's CPU to 17). A reload collects once and freezes again (`_refreeze`).
        # Not collected first (a full collection on the way to ready): what start-up left as
        # cyclic garbage (validation, caught errors) is small, and freed at the first reload.
        gc.freeze()
        log.info(
            "ready",
            sources=len(active.sources),
            journal_sources=list(self.journals.readers),
            rules=len(config.rules),
            files=len(self.tails.stats()),
            state_dir=str(state_dir),
            pid=os.getpid(),
            read_hold_ms=round(read_hold(config) * 1000),
        )
        self.notifier.ready(self.status.summary(self.snapshot()))
        if self.echo is not None:
            self.echo.open()
            self._spawn(self._console_loop(self.echo))

    def _stop_point(self, phase: str) -> None:
        """Between start-up phases: a stop asked for meanwhile ends start-up here, with every
        phase so far complete (each one leaves the state dir consistent on its own)."""
        if self.stop_requested.is_set():
            raise StartupStopped(phase)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Start a background task; one that dies of an exception stops the daemon (exit 1, so
        systemd restarts it) rather than leaving it running without, say, its committer."""
        task = asyncio.create_task(coroutine, name=getattr(coroutine, "__qualname__", None))
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error(
            "internal task failed; stopping",
            task=task.get_name(),
            error=repr(error),
            exc_info=error,
        )
        self.exit_code = EX_FAILURE
        self.stop_requested.set()

    async def drain(self) -> None:
        async with self._reload_lock:
            self._draining = True
        # journal readers stop first: the commit below then holds their last cursors, and
        # whatever journalctl had not handed on yet is read at the next start
        await self.journals.close()
        await self.tails.drain()
        # the first commit seals and publishes; the second records that nothing is left sealed
        if not (await self.commit(stopping=True) and await self.commit()):
            # nothing is lost (uncommitted lines are read again at the next start), but the
            # operator and systemd should know this stop was not clean
            log.error("could not commit at stop; the next start reads the uncommitted part again")
            self.exit_code = EX_FAILURE

    async def shutdown(self) -> None:
        if self.echo is not None:
            self.echo.close()  # the console is the terminal's again for the last log lines
        loop = asyncio.get_running_loop()
        # stopping already: a further SIGTERM, or a reload or rotation asked for now (logrotate's
        # postrotate runs whenever it likes), must not turn this clean stop into a death by
        # signal. remove_signal_handler puts back the default action (death), so the signals
        # are held back until they are ignored instead: a pending one is then discarded
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for signum in (*STOP_SIGNALS, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if hasattr(self, "metrics"):  # the final figures, while the files are still tracked
            await self.metrics.close()
        if hasattr(self, "journals"):
            await self.journals.close()
        if hasattr(self, "watcher"):
            await self.watcher.stop()
        if hasattr(self, "tails"):
            await self.tails.close()
        if hasattr(self, "status"):
            await self._write_status(self.snapshot(), state="stopped")
        self.notifier.close()
        await asyncio.to_thread(self._disk.shutdown)  # lets a commit in flight finish
        if hasattr(self, "checkpoints"):
            self.checkpoints.close()
        if self._lock is not None:
            self._lock.close()

    def _activity(self) -> tuple[object, ...]:
        """Changes whenever anything `snapshot()` shows changes, at the cost of a few reads."""
        commits = self.commit_stats
        now = time.monotonic()
        return (
            self.tails.version,
            self.journals.version,
            self.pipeline.bytes,
            self.pipeline.alerts,
            commits.commits,
            commits.failures,
            commits.last_error,
            tuple(writer.published for writer in self.writers.values()),
            self.config,
            self.last_reload,
            # the windows slide: "last minute" and lines/s change with no new line
            round(self.pipeline.recent_lines.rate(now), 1),
            tuple(self.pipeline.matches_last_minute(now).values()),
        )

    def snapshot(self) -> DaemonSnapshot:
        """Every counter at this instant, for status.json, STATUS=, metrics and the foreground rates."""
        pipeline, commits = self.pipeline, self.commit_stats
        now = time.monotonic()
        return DaemonSnapshot(
            taken=now,
            started=self.started,
            config_path=self.config.path,
            lines=pipeline.lines,
            bytes=pipeline.bytes,
            matches=dict(pipeline.matches),
            alerts=pipeline.alerts,
            alerts_per_rule=dict(pipeline.alerts_per_rule),
            suppressed=dict(pipeline.suppressed),
            rule_state_evictions=pipeline.processor.evictions(),
            times_out_of_bounds=pipeline.processor.clocks.out_of_bounds(),
            possibly_lost_bytes=self.tails.possibly_lost_bytes,
            unmeasured_truncations=self.tails.unmeasured_truncations,
            commit=CommitSnapshot(
                commits=commits.commits,
                failures=commits.failures,
                last_error=commits.last_error,
                last_duration_s=commits.last_duration,
                publish_failures=commits.publish_failures,
                durations=commits.durations.snapshot(),
            ),
            reports={
                name: ReportSnapshot(
                    dir=writer.config.dir,
                    published=writer.published,
                    active_records=writer.active_records,
                    last_published=writer.last_published,
                )
                for name, writer in self.writers.items()
            },
            files=tuple(self.tails.stats()),
            sources=tuple(self.active.file_sources),
            journals=tuple(self.journals.stats()),
            rules=tuple(self.config.rules),
            source_lines=dict(self.tails.source_lines),
            source_bytes=dict(self.tails.source_bytes),
            read_errors=self.tails.read_errors,
            lines_per_s=pipeline.recent_lines.rate(now),
            matches_last_minute=pipeline.matches_last_minute(now),
            generation=self.generation,
            last_reload=self.last_reload,
        )

    # ------------------------------------------------------------------ committing

    @property
    def journal_root(self) -> Path:
        return self.config.daemon.state_dir / "journals"

    async def _build_writers(self, restored: checkpoint.Checkpoint) -> dict[str, ReportWriter]:
        """Recover each report's journals (on a thread: the loop stays free to take a SIGTERM,
        which ends start-up between two reports) and build its writer on what is left."""
        writers = {}
        for name, report in self.config.reports.items():
            self._stop_point(f"recovering report {name!r}")
            states = restored.journals_of(name)
            lost_states = await asyncio.to_thread(
                recover_journals, self.journal_root, report, states
            )
            for lost in lost_states:
                log.error(
                    "a sealed report is gone from the report dir before it was published; "
                    "its records cannot be recovered",
                    report=name,
                    id=lost.id,
                    records=lost.records,
                )
                states.remove(lost)
            writers[name] = ReportWriter(
                report,
                self.journal_root / name,
                self.builder.host,
                states,
                restored.next_seq.get(name, 1),
            )
            # its index.json, reconciled with the dir now rather than at the first publish
            await asyncio.to_thread(writers[name].index_of, report.dir)
        return writers

    def _records_arrived(self) -> None:
        self.commit_wanted.set()

    async def commit(self, stopping: bool = False) -> bool:
        """One commit: snapshot, write + fsync journals and stage sealed reports, save the
        checkpoint, publish what it sealed.

        A journal is sealed when it is due for rotation (age, SIGUSR1; size and count limits
        seal as records arrive), or when stopping and its report publishes on stop. Commits never
        overlap (the committer's and the final one at stop): each builds on the last one's state.
        """
        async with self._commit_lock:
            return await self._commit(stopping)

    async def _commit(self, stopping: bool) -> bool:
        started = time.monotonic()
        batches: list[CommitBatch] = []
        for writer in self.writers.values():
            seal = writer.due_for_rotation(started) or (stopping and writer.config.publish_on_stop)
            batches += writer.take_batches(seal=seal)
        # one synchronous step: offsets and cursors agree with what the batches above hold
        files = self.tails.snapshot() if hasattr(self, "tails") else list(self.restored.files)
        copies_read: Sequence[CopyRead]
        if hasattr(self, "tails"):
            rotated_after = self.tails.rotated_after()
            copies_read = self.tails.copies_read(rotated_after)
        else:
            rotated_after, copies_read = self.restored.rotated_after_ns, self.restored.copies_read
        cursors = (
            self.journals.snapshot() if hasattr(self, "journals") else dict(self.restored.cursors)
        )
        accepted = self.pipeline.bytes if hasattr(self, "pipeline") else 0
        rule_state = (
            self.pipeline.state() if hasattr(self, "pipeline") else self.restored.rule_state
        )
        state = checkpoint.Checkpoint(
            files=files,
            journals=[batch.target for batch in batches],
            next_seq={name: writer.next_seq for name, writer in self.writers.items()},
            sources=self.known_sources,
            rotated_after_ns=rotated_after,
            copies_read=copies_read,
            cursors=cursors,
            rule_state=rule_state,
        )
        try:
            outcome = await self._on_disk(batches, state)
        except OSError as error:
            give_back(batches)
            self.commit_stats.failures += 1
            if self.commit_stats.last_error is None:
                log.error("commit failed; reading pauses until it succeeds", error=str(error))
            self.commit_stats.last_error = str(error)
            return False
        settle(batches)
        self._committed_files, self._committed_bytes = files, accepted
        self._committed_cursors = cursors
        if self.commit_stats.last_error is not None:
            log.info("commit succeeded again", failed_attempts=self.commit_stats.failures)
            self.commit_stats.last_error = None
        for writer, journal, path in outcome.published:
            writer.forget_published(journal)
            log.info(
                "report published",
                report=writer.name,
                path=str(path),
                records=journal.state.records,
            )
        for message, problem in outcome.problems:
            log.error(message, error=problem)
        self._forget_removed_reports()
        self.commit_stats.publish_failures += len(outcome.problems)
        self.commit_stats.commits += 1
        self.commit_stats.last_duration = time.monotonic() - started
        self.commit_stats.durations.observe(self.commit_stats.last_duration)
        if hasattr(self, "pipeline"):
            self.pipeline.room_made()
        return True

    def _forget_removed_reports(self) -> None:
        """A report a reload removed is kept until what it held is published; then it goes, so
        status, metrics and retention stop speaking of it. (The pipeline shares the dict.)"""
        for name, writer in list(self.writers.items()):
            if name not in self.config.reports and writer.active is None and not writer.sealed:
                del self.writers[name]
                log.info("report removed by a reload: everything it held is published", report=name)

    async def _on_disk(
        self, batches: list[CommitBatch], state: checkpoint.Checkpoint
    ) -> CommitOutcome:
        """A commit's disk work: on the loop while commits are fast, else on the commit thread.

        On a live host most commits carry a few records: a write and one fdatasync, a fraction
        of a millisecond. Handing that to a thread and back wakes two threads, and on a virtual
        machine a wake-up costs tens of microseconds of CPU; measured, the hops were more than
        half of what a commit cost. But an fsync can stall for seconds on a busy disk, and the
        loop must keep reading meanwhile: a commit slower than `SLOW_COMMIT_S` sends commits to
        the thread for `THREADED_COMMITS_FOR_S`, and then the loop tries again. The risk kept:
        the first commit of a sudden stall blocks the loop for the stall's length (disks under
        writeback pressure usually slow down before they stall, which trips the switch first).
        """
        writers = dict(self.writers)
        if time.monotonic() < self._threaded_commits_until:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._disk, self._commit_on_disk, writers, batches, state
            )
        started = time.perf_counter()
        try:
            return self._commit_on_disk(writers, batches, state)
        finally:
            if time.perf_counter() - started > SLOW_COMMIT_S:
                self._threaded_commits_until = time.monotonic() + THREADED_COMMITS_FOR_S
                log.info(
                    "slow commits; committing on a thread of its own for a while",
                    took_ms=round((time.perf_counter() - started) * 1000, 1),
                )

    def _progress_uncommitted(self, full_check: bool) -> bool:
        """Whether tail offsets moved since the last commit: cheaply by the bytes accepted, and on
        `full_check` by comparing snapshots (a truncation moves an offset without new bytes)."""
        if self.pipeline.bytes != self._committed_bytes:
            return True
        if self.journals.snapshot() != self._committed_cursors:
            return True  # a position taken without entries (start_at end, a cursor skipped)
        return full_check and self.tails.snapshot() != self._committed_files

    def _commit_on_disk(
        self,
        writers: dict[str, ReportWriter],
        batches: list[CommitBatch],
        state: checkpoint.Checkpoint,
    ) -> CommitOutcome:
        """All of a commit's disk work, in one trip to the disk thread (each trip costs a wake-up
        on both sides): journals and staged reports, the checkpoint, then the renames it allows.

        Raises OSError only when the commit itself failed (all undone, nothing committed). A
        failed publish or retention is only reported: the journal stays sealed and listed, and
        the next commit publishes it again.
        """
        try:
            write_batches(batches)
            self.checkpoints.save(state)
        except OSError:
            cut_back(batches)
            raise
        outcome = CommitOutcome()
        outcome.published, error = publish_sealed(batches)
        if error is not None:
            outcome.problems.append(("publishing a report failed; will retry", str(error)))
        if outcome.published:
            # a crash now restarts from this checkpoint, which still lists what was just
            # published; retention must leave every journal it lists to be recognised as done
            protected = {journal.id for journal in state.journals if journal.closed is not None}
            for writer in writers.values():
                try:
                    writer.apply_retention(protected)
                except OSError as failure:
                    outcome.problems.append(("retention failed; will retry", str(failure)))
        for writer in writers.values():
            try:  # after retention, so an index never lists a file it has just deleted
                writer.write_indexes()
            except OSError as failure:
                outcome.problems.append(("writing index.json failed; will retry", str(failure)))
        return outcome

    async def _committer(self) -> None:
        """Group commit: records waiting → commit now (again as soon as the last one ends);
        offsets that moved without records → commit every `commit_interval` at most; idle →
        nothing at all (no fsync for a quiet host). Woken by `commit_wanted`, which records,
        SIGUSR1 and a once-a-second tick (rotation by age, offsets without records) set."""
        interval = self.config.daemon.commit_interval
        retry = interval
        last_full_check = last_commit = time.monotonic()
        tick = _Every(max(interval, 1.0), self.commit_wanted.set)
        try:
            while True:
                await self.commit_wanted.wait()
                self.commit_wanted.clear()
                self.pipeline.tick()  # held records whose window closed: into the journals now
                now = time.monotonic()
                full_check = now - last_full_check >= FULL_CHECK_INTERVAL
                if full_check:
                    last_full_check = now
                records = self.pipeline.pending_bytes > 0
                rotation = any(
                    writer.due_for_rotation(now) or writer.sealed
                    for writer in self.writers.values()
                )
                # offsets that moved without records: no hurry, at most every `interval`; never
                # by sleeping, which would hold back records arriving meanwhile
                if not (records or rotation) and (
                    now - last_commit < interval or not self._progress_uncommitted(full_check)
                ):
                    continue
                if await self.commit():
                    retry, last_commit = interval, time.monotonic()
                else:
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX)
        finally:
            tick.cancel()

    # ------------------------------------------------------------------ background loops

    async def _rescanner(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.rescan_interval)
            try:
                await self.tails.rescan()
                await self.watcher.refresh()
            except Exception:  # a rescan failing must never take the daemon down
                log.exception("rescan failed")

    async def _status_loop(self) -> None:
        unchanged_since, last_key = time.monotonic(), None
        while True:
            await asyncio.sleep(self.config.daemon.status_interval)
            # An idle daemon rewrites nothing: walking thousands of files every few seconds to
            # write the same document again was most of its idle CPU. Once a minute it does.
            key = self._activity()
            now = time.monotonic()
            if key != last_key:
                last_key, unchanged_since = key, now
            elif now - unchanged_since < STATUS_HEARTBEAT:
                continue
            else:
                unchanged_since = now
            snapshot = self.snapshot()  # one walk of every file serves all three below
            await self._write_status(snapshot)
            if self.notifier.enabled:
                self.notifier.status(self.status.summary(snapshot))

    async def _console_loop(self, echo: Echo) -> None:
        """Foreground mode: the console's rates (and the --live panel) from a snapshot a second;
        apart from the status loop, which skips its snapshots while nothing changes."""
        while True:
            await asyncio.sleep(CONSOLE_INTERVAL)
            echo.tick(self.snapshot())

    async def _extend_start_timeout(self) -> None:
        """Until READY=1: ask systemd for more time every few seconds, so that a long start
        (publishing what a crash left sealed, discovering thousands of files) is not killed by
        TimeoutStartSec, while a start that hangs for good still is."""
        if not self.notifier.enabled:
            return
        while True:
            self.notifier.extend_timeout(START_EXTENSION)
            await asyncio.sleep(START_EXTENSION / 3)

    async def _write_status(self, snapshot: DaemonSnapshot, state: str = "running") -> None:
        """status.json is advisory: a full disk must not stop the daemon over it."""
        try:
            await asyncio.to_thread(self.status.write, snapshot, state)
        except OSError as error:
            if not self._status_failing:
                log.warning("cannot write status file", error=str(error))
            self._status_failing = True
        else:
            self._status_failing = False

    async def _watchdog_loop(self) -> None:
        """WATCHDOG=1 from the event loop itself, so a wedged loop stops the pings and gets caught."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._on_stop, signal.SIGINT)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_rotate)

    def _on_stop(self, signum: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            log.warning("second interrupt: stopping now without draining")
            os._exit(130)
        self.stop_requested.set()

    def _on_hangup(self) -> None:
        self._hangups += 1
        self.reload_wanted.set()

    async def _reloader(self) -> None:
        """Reloads one at a time: SIGHUPs that arrive during a reload make exactly one more
        after it (it reads the newest config, which is all any of them asked for). A task per
        SIGHUP, as before, ran reloads side by side, each swapping half of the others' work."""
        while True:
            await self.reload_wanted.wait()
            self.reload_wanted.clear()
            signals, self._hangups = self._hangups, 0
            async with self._reload_lock:
                if self._draining:
                    log.info("not reloading: stopping", signals=signals)
                    return
                log.info("reloading (SIGHUP)", signals=signals)
                try:
                    await self.reload()
                except (ReportDirError, MetricsListenError, OSError) as error:
                    # before anything was swapped (a new report dir that cannot be written, a
                    # new metrics address already in use)
                    log.error("reload failed; the old config keeps running", error=str(error))
                    self.last_reload = ReloadSnapshot(time.time(), "failed", str(error))
                    self.notifier.ready(self.status.summary(self.snapshot()))
            await self._write_status(self.snapshot())

    def _on_rotate(self) -> None:
        log.info("rotating every report (SIGUSR1)")
        for writer in self.writers.values():
            writer.request_rotation()
        self.commit_wanted.set()

    async def reload(self) -> None:
        """SIGHUP: load the config again; an invalid one is logged and the old one keeps running."""
        self.notifier.reloading()
        path = self.config.path
        try:
            config, rules = await asyncio.to_thread(load_config, path)
            if config.daemon.state_dir != self.config.daemon.state_dir:
                raise ConfigError([])  # handled below with a specific message
        except ConfigError as error:
            if error.problems:
                problems = [str(problem) for problem in error.problems]
                log.error(
                    "reload refused: the new config is invalid; the old one keeps running",
                    problems=problems,
                )
                why = "; ".join(problems)
            else:
                why = "state_dir cannot change while running; restart instead"
                log.error("reload refused: state_dir cannot change while running; restart instead")
            self.last_reload = ReloadSnapshot(time.time(), "refused", why)
            self.notifier.ready(self.status.summary(self.snapshot()))
            return
        await asyncio.to_thread(prepare_dirs, config.reports, self.journal_root)
        await self.metrics.apply(config.metrics)  # the last step that may refuse the reload
        writers = dict(self.writers)
        for name, report in config.reports.items():
            if name in writers:
                writers[name].reconfigure(report)
            else:
                writers[name] = ReportWriter(
                    report, self.journal_root / name, self.builder.host, [], 1
                )
        for name in set(writers) - set(config.reports):
            writers[name].request_rotation()  # publish what it holds; kept until drained
        self.config, self.rules, self.writers = config, rules, writers
        changes = self.pipeline.reconfigure(rules, config.sources, writers)
        try:
            active = await self._apply_sources(config)
        except OSError as error:
            # past the swap: rules and reports are new, some sources may still be the old ones;
            # the next rescan and the next reload carry on from here
            log.error("reload partly applied: the sources could not all be updated",
                      error=str(error))  # fmt: skip
            self.generation += 1
            _refreeze()  # the old rules and reports are out already
            self.last_reload = ReloadSnapshot(time.time(), "failed", f"partly applied: {error}")
            self.notifier.ready(self.status.summary(self.snapshot()))
            return
        self.generation += 1
        _refreeze()
        self.last_reload = ReloadSnapshot(
            time.time(), "applied", None, changes.added, changes.changed, changes.removed
        )
        log.info(
            "reloaded",
            sources=len(active.sources),
            rules=len(config.rules),
            reports=len(config.reports),
            # unchanged rules keep their threshold windows; these start fresh or are gone
            rules_added=list(changes.added),
            rules_changed=list(changes.changed),
            rules_removed=list(changes.removed),
        )
        self.notifier.ready(self.status.summary(self.snapshot()))

    async def _apply_sources(self, config: Config) -> Config:
        """A reload's second half: which sources run (fallbacks), files and journals to match."""
        self.active = active = await asyncio.to_thread(select_sources, config)
        index = PathIndex(active.file_sources)
        self.tails.reconfigure(files_only(active), index)
        self.watcher.set_min_interval(read_hold(config))
        await self.watcher.reconfigure(index)
        await self.journals.reconfigure(active, frozenset(config.sources))
        self.known_sources = self.known_sources | frozenset(active.sources)
        await self.tails.rescan()
        return active


def read_hold(config: Config) -> float:
    """How long a busy file's reader stays away from inotify after each read (`watch.py`): the
    latency the reports can see. A report that publishes every record (`rotate_max_records = 1`)
    shows each one within milliseconds of its write, so the hold stays short; any other record
    waits for its report's rotation (a size, a count, an interval, SIGUSR1), next to which 25 ms
    is nothing, while at 2,000 single-line writes a second it halves the daemon's CPU (fewer
    wake-ups, reads and commits; README "Performance"). The first line after a quiet spell is
    read at once either way."""
    if any(report.rotate_max_records == 1 for report in config.reports.values()):
        return LATENCY_READ_HOLD_S
    return BATCH_READ_HOLD_S


# signals the daemon handles on its loop and ignores once it stops
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1})


def _main_thread_signals() -> None:
    """A worker thread's start: the kernel then delivers the stop signals to the main thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class _Every:
    """Calls `callback` every `seconds` on the running loop until cancelled: one timer, where a
    timeout around each wait would build and tear one down for every commit."""

    def __init__(self, seconds: float, callback: Callable[[], None]) -> None:
        self._seconds = seconds
        self._callback = callback
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(seconds, self._fire)

    def _fire(self) -> None:
        self._handle = self._loop.call_later(self._seconds, self._fire)
        self._callback()

    def cancel(self) -> None:
        self._handle.cancel()


class StartupStopped(Exception):
    """A stop was asked for during start-up; `phase` is the one that did not begin."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class StateDirError(Exception):
    """The state dir cannot be used (not writable, or another daemon holds it)."""


def lock_state_dir(state_dir: Path) -> IO[bytes]:
    """Create the state dir and hold its lock for our lifetime: two daemons on one state dir
    would each commit offsets the other has not seen."""
    try:
        make_dirs(state_dir)
        handle = open(state_dir / "lock", "ab")  # noqa: SIM115 - held open for the daemon's lifetime
    except OSError as error:
        raise StateDirError(
            f"cannot use state dir {state_dir}: {error.strerror or error}"
        ) from error
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        handle.close()
        raise StateDirError(
            f"another logwarden holds {state_dir}/lock; one daemon per state dir"
        ) from error
    return handle


def _refreeze() -> None:
    """After a reload: the old config and rules, frozen at start-up, are garbage now; frozen,
    their reference cycles would never be freed, and a config management tool reloads often.
    One full collection (tens of milliseconds, once per reload), then freeze what lives on."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
