"""Tailing: which file is which. One `Tailer` per file identity, created, renamed, drained and
retired here as files are discovered, rotated, truncated, deleted and restored after a restart.

The manager owns the map path → file identity and every decision about it (discovery, rotation,
restore, copy detection); each `Tailer` owns one open file and does the reading (`tailer.py`);
where a file resumes and what is a copy of what is `resume.py`. Everything that changes what
`snapshot()` reports happens in the event loop in one synchronous step with the `sink.accept`
that it corresponds to, so a snapshot is always exactly the state after the blocks accepted so far.

Decisions, and what was rejected:
- An append wakes the file's tailer and nothing else (`changed`): no stat, probe or discovery.
  Reconciling (what does this path hold now?) is for creates, deletes, renames, attribute changes
  and the periodic rescan. Truncation is found by the tailer itself, by content.
- A file renamed away is drained before the new file at its path is read (order per path, as a
  reader of the logs expects), and stays open while it grows: writers keep writing to the old
  file until they reopen. Dropping it after a fixed wait (Fluent Bit's `rotate_wait`) loses data.
- copytruncate: when a truncation is seen, copies of the old content beside the file are looked
  for before the reset and read from the old offset, in the same step as the reset (a snapshot
  never has one without the other): inside the globs they are followed, outside drained, so only
  what was written between logrotate's copy and its truncation is lost. Fluent Bit and Filebeat
  restart at 0 and lose (or resend) the rest.
- Files that end (deleted, or rotated away and quiet) are remembered by identity and content for
  a while, so a file that shows up again under a name the globs cover resumes where it stopped
  instead of being read twice.
- A file can also leave a covered path before it was ever read (rotated twice while stopped, or
  renamed out of the globs by logrotate before it was opened). Rotation-named siblings of
  covered paths are therefore looked for on start and after every rotation or rename seen at a
  followed path, and drained when they hold lines never read (`siblings.py`); a `.gz` one is
  read through gzip (`compressed.py`). Rejected: pairing inotify's MOVED_FROM and MOVED_TO to
  learn "this file left that path": it misses what happened while stopped, and a name-based
  search covers both.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from logwarden.compressed import CompressedTailer
from logwarden.config import Config
from logwarden.counters import FileSnapshot
from logwarden.discovery import Coverage
from logwarden.framing import Block, FramerState
from logwarden.identity import FileCheckpoint, Identity, PathStatus, probe_paths
from logwarden.log import get_logger
from logwarden.origin import SourceRef
from logwarden.resume import CopyRead, FileMemory, Lineage, plan_start, rotation_of
from logwarden.rules import Match, SourceMatcher
from logwarden.siblings import Sibling, judge_siblings, rotation_base, siblings_of
from logwarden.tailer import Descriptors, Tailer, TailSettings, TailState
from logwarden.watch import Changes

__all__ = ["BlockSink", "FileCheckpoint", "FileSnapshot", "PathIndex", "TailManager", "TailState"]

log = get_logger(__name__)

IDLE_CLOSE_SECONDS = 60.0  # a following file unchanged this long gives its descriptor back
MAX_OPEN_FILES = 1000
# `rotated_after` is taken this far back: a file's mtime comes from the kernel's coarse clock,
# which may lag the fine one that time.time_ns() reads by a tick (a few ms)
ROTATED_SLACK_NS = 100_000_000


class BlockSink(Protocol):
    """Where lines go (the service: rules, records, report journals)."""

    def accept(self, source: SourceRef, blocks: list[Block]) -> None: ...

    def accept_matched(
        self, source: SourceRef, matches: list[Match], lines: int, block_bytes: int
    ) -> None: ...

    def matcher_ahead(self, source: str) -> SourceMatcher | None: ...

    async def wait_for_room(self) -> None: ...

    def has_room(self) -> bool: ...


class ReadSoFar(NamedTuple):
    """What was read of a file, for judging whether a rotated file is a copy of it, and the
    tailer that was reading it when this was taken (None: the file had ended, or was not being
    read: its checkpoint is all there is). What the copy continues from is asked of that tailer,
    never of whatever is tracked under the file's (dev, inode) later: logrotate's `compress`
    removes the original, and the next file created may get its inode."""

    lineage: Lineage
    reader: Tailer | None


class PathIndex(Protocol):
    """Which source covers a path, and every path the sources' globs cover right now."""

    def source_of(self, path: str) -> str | None: ...

    def discover(self) -> Mapping[str, str]: ...


class TailManager:
    """Follows every file the sources' globs cover, exactly once, across rotation and restarts."""

    def __init__(
        self,
        config: Config,
        index: PathIndex,
        sink: BlockSink,
        restored: Sequence[FileCheckpoint],
        known_sources: frozenset[str],
        *,
        rotated_after_ns: int | None = None,
        copies_read: Sequence[CopyRead] = (),
    ) -> None:
        self.config = config
        self.index = index
        self.sink = sink
        self._settings = _settings_of(config)
        self._restored = list(restored)
        self._known_sources = known_sources
        self._tailers: dict[Identity, Tailer] = {}
        self._paths: dict[str, Tailer] = {}  # path → the file it points at (attached tailers)
        self._memory = FileMemory()
        self._memory.restore_copies_read(copies_read)
        self._coverage = Coverage()  # says which sources match no file
        self._noted: dict[str, tuple[str, str | None]] = {}  # path → (kind, error) already logged
        self._pending_paths: set[str] = set()
        self._pending_discover = False
        self._fresh_sources: set[str] = set()  # sources new since a reload: start_at applies
        self._reconcile_wake = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        # rotated files unknown to the checkpoint and modified after this may hold unread lines
        self._restored_after = rotated_after_ns
        self._search_after = rotated_after_ns or 0  # set at start
        self._searched = False  # the start's search for rotated files is done
        self._rotated_paths: set[str] = set()  # uncovered paths with events: rotations of ours?
        self._rotated_bases: set[str] = set()  # covered paths whose file left: look beside them
        # path → the file that left it (gone before the next file appeared there): the next one
        # waits for it as for a file it replaced (`Tailer.after`)
        self._departed: dict[str, Tailer] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.descriptors = Descriptors(
            MAX_OPEN_FILES
            if soft == resource.RLIM_INFINITY
            else min(MAX_OPEN_FILES, max(soft // 2, 16))
        )
        self._lines = self._bytes = self._lost = self._unmeasured = 0
        self.read_errors = 0  # times a file or path became unreadable
        # lines and bytes handed to the sink per source, counted per delivery (not per line)
        self.source_lines: Counter[str] = Counter()
        self.source_bytes: Counter[str] = Counter()
        # bumped by every change `stats()` would show: status is not rewritten while it stays
        self.version = 0

    @property
    def total_lines(self) -> int:
        """Lines handed to the sink (a line cut for length counts once)."""
        return self._lines

    @property
    def total_bytes(self) -> int:
        """Bytes read from files."""
        return self._bytes

    @property
    def possibly_lost_bytes(self) -> int:
        """Bytes known to be lost to truncations: partial lines, and data seen but not read."""
        return self._lost

    @property
    def unmeasured_truncations(self) -> int:
        """Truncations seen without a copy of the old content: what they lost is not known."""
        return self._unmeasured

    def _follow_map(self) -> dict[str, bool]:
        return {name: source.follow_symlinks for name, source in self.config.sources.items()}

    # -- lifecycle

    async def start(self) -> None:
        """Discover, match the restored checkpoints, look for files rotated while stopped, and
        start reading."""
        if self._restored_after is None:
            self._search_after = time.time_ns() - ROTATED_SLACK_NS
        discovered = await self._discover()
        checkpoints = [cp for cp in self._restored if cp.source in self.config.sources]
        plan = await asyncio.to_thread(plan_start, checkpoints, discovered, self._follow_map())
        moved_from: dict[str, Tailer] = {}  # old path → the file that was there (read it first)
        resumed: dict[Identity, Tailer] = {}  # checkpoints whose file reads on where it stopped
        for resume in plan.resumes:
            checkpoint = resume.checkpoint
            covered = self.index.source_of(resume.path)
            state = checkpoint.framer if resume.intact else FramerState()
            tailer = self._add(
                covered or checkpoint.source, resume.path, checkpoint.identity, state,
                attached=covered is not None and resume.path not in self._paths,
                size=checkpoint.tail_end, seed=checkpoint if resume.intact else None,
                compressed=checkpoint.compressed,
            )  # fmt: skip
            if resume.intact:
                resumed[checkpoint.identity] = tailer
            else:
                self._truncated_while_stopped(tailer, checkpoint, plan.copies.values())
            if resume.path != checkpoint.path:
                tailer.set_names((checkpoint.path, resume.path))
                moved_from[checkpoint.path] = tailer
                if covered is None:
                    tailer.log.info("file was renamed while stopped", old_path=checkpoint.path)
        for checkpoint in plan.lost:
            self._memory.remember(checkpoint)
            log.info(
                "checkpointed file not found", path=checkpoint.path, offset=checkpoint.framer.offset
            )
        for path, (original, status, start) in plan.copies.items():
            covered = discovered.get(path)
            if covered is None and start.offset >= status.size:
                self._memory.read_through(status)  # as in `adopt_copies`
                continue  # outside the globs and nothing unread in it
            self._add(
                covered or original.source, path, status.identity, start,
                attached=covered is not None, size=status.size,
                how=f"a copy of {original.path} (copytruncate while stopped)",
            )  # fmt: skip
        for path, source in discovered.items():
            status = plan.statuses[path]
            if not self._usable(path, status) or status.identity in self._tailers:
                continue
            if source in self._known_sources:
                state, how = FramerState(), "created while stopped"
            else:
                start_at = self.config.sources[source].start_at
                state, how = self._start_at(source, status), f"new source (start_at {start_at})"
            self._add(
                source, path, status.identity, state, attached=True, size=status.size,
                after=moved_from.get(path), how=how,
            )  # fmt: skip
        for old_path, tailer in moved_from.items():
            successor = self._paths.get(old_path)
            if successor is not None and successor is not tailer and successor.after is None:
                successor.after = tailer
        if self._restored_after is not None:  # files rotated while stopped, never seen
            bases = {cp.path for cp in checkpoints} | {
                path for path, source in discovered.items() if source in self._known_sources
            }
            lineages: dict[str, list[ReadSoFar]] = {}
            for cp in checkpoints:
                if not cp.compressed:
                    read = ReadSoFar(Lineage(cp), resumed.get(cp.identity))
                    lineages.setdefault(cp.path, []).append(read)
            await self._search_rotated(set(), bases, lineages, "rotated while stopped", spawn=False)
        self._searched = True
        for tailer in list(self._tailers.values()):
            self._spawn(tailer)
        self._reconciler = asyncio.create_task(
            self._reconcile_loop(), name="logwarden-tail-reconcile"
        )

    def _truncated_while_stopped(
        self,
        tailer: Tailer,
        checkpoint: FileCheckpoint,
        copies: Iterable[tuple[FileCheckpoint, PathStatus, FramerState]],
    ) -> None:
        """Logged and counted: with a copy (copytruncate while stopped) the copy holds what was
        not read; without one, what the file held past the checkpoint is unknown."""
        copied = [status.path for original, status, _ in copies if original == checkpoint]
        if copied:
            tailer.log.info(
                "file was truncated while stopped; its copy holds what was not read yet",
                old_offset=checkpoint.framer.offset, copies=copied,
            )  # fmt: skip
            return
        tailer.log.warning(
            "file was truncated or rewritten while stopped; reading it from the start; what it "
            "held past the checkpoint is unknown (possibly lost)",
            old_offset=checkpoint.framer.offset, possibly_lost_bytes="unknown",
        )  # fmt: skip
        self.count(unmeasured=1)

    def changed(self, changes: Changes) -> None:
        """From the watcher, in the loop. A followed file that grew is read, nothing more: that is
        nearly every event on a busy host. Any other change (and growth of a path not followed)
        is reconciled: what does the path hold now, and is there anything new to discover?"""
        unknown = set()
        for path in changes.grown:
            tailer = self._paths.get(path)
            if tailer is None:
                unknown.add(path)
            elif not tailer.read_now():
                tailer.wake.set()
        for path in changes.moved:
            tailer = self._paths.get(path)
            if tailer is not None:
                tailer.wake.set()
        if not (unknown or changes.moved or changes.rediscover):
            return
        self._pending_paths |= unknown | changes.moved
        self._pending_discover = self._pending_discover or changes.rediscover
        self._reconcile_wake.set()

    async def rescan(self) -> None:
        """The safety net: rediscover, stat every tracked path, wake whatever changed."""
        await self._reconcile(set(), discover=True, full=True)

    def rotated_after(self) -> int | None:
        """For the checkpoint (`Checkpoint.rotated_after_ns`): a rotated file it does not know,
        modified after this, may hold lines never read. Until the start's search is done that is
        still the restored checkpoint's moment; then it is now, except that a compressed copy
        waiting for its original to end (and so not in the checkpoint) must be judged again
        after a restart."""
        if not self._searched:
            return self._restored_after
        waiting = [
            tailer.mtime_ns - 1
            for tailer in self._tailers.values()
            if tailer.compressed and not tailer.ready
        ]
        return max(min([time.time_ns() - ROTATED_SLACK_NS, *waiting]), 0)

    def copies_read(self, rotated_after_ns: int | None) -> list[CopyRead]:
        """For the checkpoint, beside `rotated_after`: the copies read through that a search
        after a restart would otherwise take for rotated files never read."""
        return self._memory.copies_read_after(rotated_after_ns or 0)

    def snapshot(self) -> list[FileCheckpoint]:
        found = []
        for tailer in self._tailers.values():
            if tailer.done:
                continue
            checkpoint = tailer.checkpoint() if tailer.ready else tailer.pending_checkpoint()
            if checkpoint is not None:
                found.append(checkpoint)
        return found

    async def drain(self) -> None:
        """Read every file to its current end, oldest first (so a rotated file precedes its
        successor); partial last lines stay pending, open multi-line events end (a stop ends
        an event: what follows after a restart is an event of its own)."""
        for tailer in list(self._tailers.values()):
            async with tailer.lock:
                await tailer.catch_up(ending=False)
                if not tailer.done and tailer.ready:
                    tailer.end_event()

    async def close(self) -> None:
        tasks = [tailer.task for tailer in self._tailers.values() if tailer.task is not None]
        if self._reconciler is not None:
            tasks.append(self._reconciler)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._stopping, return_exceptions=True)
        for tailer in list(self._tailers.values()):
            await tailer.release()
        self._tailers.clear()
        self._paths.clear()

    def reconfigure(self, config: Config, index: PathIndex) -> None:
        """A reload: kept files keep their offsets; removed sources stop; new globs are discovered."""
        old_sources = set(self.config.sources)
        self.config, self.index = config, index
        self._settings = _settings_of(config)
        self.version += 1
        for tailer in list(self._tailers.values()):
            source = self.index.source_of(tailer.path) if tailer.attached else tailer.source
            if source is None or source not in config.sources:
                self._stop(
                    tailer, "its source was removed" if source else "no longer covered by the globs"
                )
                continue
            if source != tailer.source:
                tailer.rename(source, tailer.path)
            tailer.reconfigure(self._settings[source])
        self._memory.forget_sources(config.sources)
        self._fresh_sources |= set(config.sources) - old_sources
        self._pending_discover = True
        self._reconcile_wake.set()

    def stats(self) -> list[FileSnapshot]:
        now = time.time()
        found = [tailer.stats(now) for tailer in self._tailers.values()]
        for path, (kind, error) in self._noted.items():
            if kind == "error":
                source = self.index.source_of(path) or ""
                found.append(FileSnapshot(source, path, 0, 0, 0, 0, 0, 0, "error", error))
        return found

    # -- what tailers hand on and ask (TailerHost)

    def deliver(self, tailer: Tailer, blocks: list[Block]) -> None:
        self.sink.accept(tailer.ref, blocks)
        self._delivered(tailer, sum(block.line_count for block in blocks))

    def deliver_matched(
        self, tailer: Tailer, matches: list[Match], lines: int, block_bytes: int
    ) -> None:
        self.sink.accept_matched(tailer.ref, matches, lines, block_bytes)
        self._delivered(tailer, lines)

    def matcher_ahead(self, source: str) -> SourceMatcher | None:
        return self.sink.matcher_ahead(source)

    def _delivered(self, tailer: Tailer, lines: int) -> None:
        tailer.lines += lines
        tailer.recent_lines.add(lines, time.monotonic())
        tailer.last_read = time.time()
        self._lines += lines
        self.source_lines[tailer.source] += lines

    async def wait_for_room(self) -> None:
        await self.sink.wait_for_room()

    def has_room(self) -> bool:
        return self.sink.has_room()

    def count(
        self,
        *,
        read: int = 0,
        lost: int = 0,
        unmeasured: int = 0,
        read_errors: int = 0,
        source: str | None = None,
    ) -> None:
        self._bytes += read
        if source is not None:  # as read: an event's newlines and CRs too (its block has none)
            self.source_bytes[source] += read
        self._lost += lost
        self._unmeasured += unmeasured
        self.read_errors += read_errors
        self.version += 1

    def state_changed(self, tailer: Tailer) -> None:
        self.version += 1

    def finished(self, tailer: Tailer) -> None:
        self.version += 1
        if self._tailers.get(tailer.identity) is tailer:
            del self._tailers[tailer.identity]
        if self._paths.get(tailer.path) is tailer:
            del self._paths[tailer.path]
        self._departed = {p: t for p, t in self._departed.items() if t is not tailer}
        self._memory.remember(tailer.checkpoint())

    def truncated(self, tailer: Tailer, before: Lineage) -> None:
        """A file was truncated: remember what it held, a copy of it may turn up (copytruncate)."""
        self._memory.truncated(tuple(tailer.names), before)
        for other in self._tailers.values():
            if not other.ready:
                other.wake.set()

    def settled_identities(self) -> frozenset[Identity]:
        return frozenset(identity for identity, tailer in self._tailers.items() if tailer.ready)

    def lineages_for(self, path: str, dev: int) -> tuple[list[Lineage], list[Lineage]]:
        return self._memory.truncation_lineages(path, dev), self._live_lineages(path, dev)

    def adopt_copies(self, original: Tailer, copies: list[tuple[PathStatus, FramerState]]) -> None:
        """Read the copies of a truncated file from where it was read: a copy the globs cover is
        followed from there (or, already known as a possible copy, settled); one they do not
        cover is drained from there and closed, so what was written between the last read and
        the copy is not lost (only what came between the copy and the truncation is)."""
        for status, start in copies:
            known = self._tailers.get(status.identity)
            if known is not None:
                if not known.ready:
                    known.resolve_copy(start, f"a copy of {original.path}")
                continue
            if status.path in self._paths:
                continue
            source = self.index.source_of(status.path)
            if source is None and start.offset >= status.size:
                # outside the globs and nothing unread in it; remembered as read, so that a
                # search for rotated files (`siblings.py`) never reads it again
                self._memory.read_through(status)
                continue
            tailer = self._add(
                source or original.source, status.path, status.identity, start,
                attached=source is not None, size=status.size, how=f"a copy of {original.path}",
            )  # fmt: skip
            self._spawn(tailer)

    def _live_lineages(self, path: str, dev: int) -> list[Lineage]:
        """Files whose rotation name `path` has, as they are now (their truncation may not have
        been seen yet); only files something was read from."""
        return [
            tailer.lineage()
            for tailer in self._tailers.values()
            if tailer.ready
            and tailer.dev == dev
            and tailer.path != path
            and tailer.framer.position > 0
            and not tailer.compressed
            and rotation_of(path, tailer.names)
        ]

    def _add(
        self, source: str, path: str, identity: Identity, state: FramerState, *, attached: bool,
        size: int, seed: FileCheckpoint | None = None, after: Tailer | None = None,
        copy: bool = False, how: str | None = None, compressed: bool = False,
        follows: Tailer | None = None,
    ) -> Tailer:  # fmt: skip
        if compressed:
            tailer: Tailer = CompressedTailer(
                self, settings=self._settings[source], descriptors=self.descriptors,
                source=source, path=path, identity=identity, state=state, attached=False,
                size=size, seed=seed, follows=follows,
            )  # fmt: skip
        else:
            tailer = Tailer(
                self, settings=self._settings[source], descriptors=self.descriptors,
                source=source, path=path, identity=identity, state=state, attached=attached,
                size=size, seed=seed,
            )  # fmt: skip
            tailer.ready = not copy
        tailer.after = after
        self.version += 1
        self._tailers[identity] = tailer
        if attached:
            self._paths[path] = tailer
        if how is not None:
            tailer.log.info("following file", offset=state.offset, reason=how)
        return tailer

    def _spawn(self, tailer: Tailer) -> None:
        tailer.task = asyncio.create_task(tailer.run(), name=f"logwarden-tail:{tailer.path}")

    def _attach(self, tailer: Tailer, path: str, source: str) -> None:
        self.version += 1
        if self._paths.get(tailer.path) is tailer:
            del self._paths[tailer.path]
        if path != tailer.path or source != tailer.source:
            tailer.log.info("file renamed within the globs; following it there", new_path=path)
            tailer.rename(source, path)
        tailer.attached = True
        if tailer.state != "error":
            tailer.state = "following"
        self._paths[path] = tailer
        tailer.wake.set()

    def _detach(self, tailer: Tailer, why: str) -> None:
        """The path no longer points at this file: drain it, keep it while it grows, then close."""
        self.version += 1
        old_path = tailer.path
        if self._paths.get(old_path) is tailer:
            del self._paths[old_path]
            self._departed[old_path] = tailer
        tailer.attached = False
        new_path = tailer.current_path()
        if new_path is not None and new_path != old_path:
            tailer.rename(tailer.source, new_path)
        if tailer.state != "error":
            tailer.state = "draining"
        if not tailer.done:
            tailer.settled.clear()
        tailer.last_growth = tailer.left_path_at = time.monotonic()
        tailer.wake.set()
        tailer.log.info("file left its path; draining it", why=why, old_path=old_path)
        self._rotated_bases.add(old_path)  # what else left it unseen? (see `siblings.py`)
        self._pending_discover = True  # it may have been renamed to a name the globs cover
        self._reconcile_wake.set()

    def _stop(self, tailer: Tailer, why: str) -> None:
        self.version += 1
        """Stop tailing without finishing (a reload removed it); its checkpoint is dropped."""
        tailer.done = True
        tailer.settled.set()
        tailer.ended.set()
        if self._tailers.get(tailer.identity) is tailer:
            del self._tailers[tailer.identity]
        if self._paths.get(tailer.path) is tailer:
            del self._paths[tailer.path]
        tailer.log.info("stopped following file", why=why)
        task = tailer.task
        if task is not None:
            task.cancel()

        async def stopped() -> None:
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
            await tailer.release()

        stopping = asyncio.create_task(stopped())
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)

    def _start_at(self, source: str, status: PathStatus) -> FramerState:
        if self.config.sources[source].start_at == "beginning":
            return FramerState()
        return FramerState(status.size, None, False)

    def _usable(self, path: str, status: PathStatus) -> bool:
        """A regular file; anything else at a covered path is logged once and skipped."""
        if status.kind == "file":
            previous = self._noted.pop(path, None)
            if previous is not None:
                self.version += 1
            if previous is not None and previous[0] == "error":
                log.info("path is readable again", path=path)
            return True
        if status.kind == "missing":
            if self._noted.pop(path, None) is not None:
                self.version += 1
            return False
        noted = (status.kind, status.error)
        if self._noted.get(path) != noted:
            self._noted[path] = noted
            self.version += 1
            if status.kind == "error":
                log.warning("cannot read path; will retry", path=path, error=status.error)
                self.read_errors += 1
            elif status.kind == "symlink":
                log.info("skipping symlink (follow_symlinks is off)", path=path)
            else:
                log.info("skipping path: not a regular file", path=path)
        return False

    # -- discovery and reconciliation

    async def _discover(self) -> dict[str, str]:
        try:
            found = dict(await asyncio.to_thread(self.index.discover))
        except Exception as error:  # a broken glob root must not stop the daemon
            log.warning("discovery failed; will retry", error=str(error))
            return {}
        self._coverage.update(self.config.sources, found)
        return found

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_wake.wait()
            self._reconcile_wake.clear()
            paths, self._pending_paths = self._pending_paths, set()
            discover, self._pending_discover = self._pending_discover, False
            try:
                await self._reconcile(paths, discover=discover, full=False)
            except Exception:  # keep watching whatever went wrong this round
                log.exception("reconciling paths failed")

    async def _reconcile(self, paths: set[str], *, discover: bool, full: bool) -> None:
        async with self._reconcile_lock:
            fresh, self._fresh_sources = (
                (self._fresh_sources, set()) if discover else (set(), self._fresh_sources)
            )
            targets: dict[str, str] = await self._discover() if discover else {}
            gone: list[str] = []
            for path in paths | (set(self._paths) if full else set()):
                if path in targets:
                    continue
                source = self.index.source_of(path)
                if source is not None:
                    targets[path] = source
                elif path in self._paths:
                    gone.append(path)
                else:  # renamed out of the globs, compressed, ...: a rotation of a covered path?
                    self._rotated_paths.add(path)
            probed = await asyncio.to_thread(
                probe_paths, targets, self._follow_map(), dict(self._memory.retired)
            )
            for path in gone:
                if (tailer := self._paths.get(path)) is not None:
                    self._detach(tailer, "no longer covered by the globs")
            for path, source in targets.items():
                self._apply(
                    path,
                    source,
                    probed.statuses[path],
                    probed.resumable.get(path),
                    path_fresh=source in fresh,
                )
            candidates, self._rotated_paths = self._rotated_paths, set()
            bases, self._rotated_bases = self._rotated_bases, set()
            if candidates or bases:
                await self._search_rotated(candidates, bases, None, "rotated out of the globs")
            if full:
                self._sweep()

    async def _search_rotated(
        self,
        candidates: set[str],
        bases: set[str],
        lineages: dict[str, list[ReadSoFar]] | None,
        why: str,
        *,
        spawn: bool = True,
    ) -> None:
        """Read the rotated files beside `bases` (and the uncovered `candidates`) that hold lines
        never read (`siblings.py`). `lineages`: the files read, by the path they were at (at
        start the restored checkpoints; else the files tracked and remembered)."""
        source_of = self.index.source_of
        named = {
            path: base
            for path in candidates
            if (base := rotation_base(path, source_of)) is not None
        }
        if not (named or bases):
            return
        if lineages is None:
            lineages = self._lineages_by_base(bases | set(named.values()))
        known = frozenset(self._tailers)
        compared = {base: [read.lineage for read in reads] for base, reads in lineages.items()}
        retired = dict(self._memory.retired)
        read_through = dict(self._memory.copies_read)
        chunk = self.config.daemon.read_chunk_bytes
        after = self._search_after

        def search() -> list[Sibling]:
            found = siblings_of(bases, source_of)
            found.update(named)
            return judge_siblings(
                found, compared, known=known, retired=retired, read_through=read_through,
                after_ns=after, chunk_bytes=chunk,
            )  # fmt: skip

        try:
            siblings = await asyncio.to_thread(search)
        except Exception:  # a failed search must not stop the daemon; the next rotation retries
            log.exception("looking for rotated files failed")
            return
        for sibling in siblings:
            self._adopt_sibling(sibling, lineages.get(sibling.base, []), why, spawn)

    def _lineages_by_base(self, bases: set[str]) -> dict[str, list[ReadSoFar]]:
        """What was read of the files that were at `bases`, or at a rotation name of them:
        tracked ones, remembered ones, then what truncated ones held. In that order: a rotated
        file is continued from the first it is a copy of, and a copy that copytruncate left
        beside the file and that was read (`adopt_copies`) knows more than the truncation."""
        lineages: dict[str, list[ReadSoFar]] = {base: [] for base in bases}

        def bases_of(path: str) -> list[str]:
            return [base for base in lineages if path == base or rotation_of(path, (base,))]

        for tailer in self._tailers.values():
            if tailer.ready and not tailer.compressed and tailer.framer.position > 0:
                for base in bases_of(tailer.home):
                    lineages[base].append(ReadSoFar(tailer.lineage(), tailer))
        for checkpoint in self._memory.retired.values():
            if not checkpoint.compressed:
                for base in bases_of(checkpoint.path):
                    lineages[base].append(ReadSoFar(Lineage(checkpoint), None))
        # what a file held before it was truncated (copytruncate): its rotations, compressed
        # after the copy (`compress`), are copies of that content, not of what it holds now
        for base, reads in lineages.items():
            reads += [ReadSoFar(before, None) for before in self._memory.truncated_at(base)]
        return lineages

    def _adopt_sibling(
        self, sibling: Sibling, reads: list[ReadSoFar], why: str, spawn: bool
    ) -> None:
        """Drain a rotated file from where its lines were not read yet (`siblings.py`).

        A copy of a file read continues where that file's reader stands now (`ReadSoFar`): the
        lineages were taken before the search ran in its thread, and the reader may have read on
        meanwhile. A copy holding only lines read already is remembered as read through, so that
        later searches leave it alone instead of judging it again against a memory of its
        original that a file reusing the original's inode may by then have replaced (a whole
        .gz never changes: one judgement is final)."""
        status = sibling.status
        source = self.index.source_of(sibling.base)
        if status.identity in self._tailers or source is None or source not in self.config.sources:
            return
        start, follows, how = FramerState(), None, why
        if "copy" in sibling.verdicts:
            read = reads[sibling.verdicts.index("copy")]
            original, reader = read.lineage.checkpoint, read.reader
            if reader is not None and not reader.done:
                if not sibling.compressed:
                    return  # a copy of a file being read (copytruncate adopts it at the truncate)
                follows = reader
            elif reader is not None:  # it read on to its end and finished while the search ran
                original = reader.checkpoint()
            start, how = original.framer, f"{why}; a copy of {original.path}"
            if follows is None and start.offset >= sibling.size:
                self._memory.read_through(status)  # holds only lines read already
                return
        elif "maybe" in sibling.verdicts:
            if sibling.compressed:  # whole (`judge_gzip`): a part of what was read, judged once
                self._memory.read_through(status)
            return  # holds only lines read already, or is a copy still being written
        seed = None
        if sibling.raw is not None:
            head, tail, raw_size = sibling.raw
            seed = FileCheckpoint(
                source, status.path, status.dev, status.inode, head, start, tail, raw_size, True
            )
        tailer = self._add(
            source, status.path, status.identity, start, attached=False, size=sibling.size,
            seed=seed, how=how, compressed=sibling.compressed, follows=follows,
        )  # fmt: skip
        tailer.mtime_ns = status.mtime_ns
        if spawn:
            self._spawn(tailer)

    def _apply(
        self,
        path: str,
        source: str,
        status: PathStatus,
        resumable: FileCheckpoint | None,
        *,
        path_fresh: bool,
    ) -> None:
        """Act on what a path holds now (the probe may be slightly stale; a later one corrects it)."""
        if source not in self.config.sources:
            return
        current = self._paths.get(path)
        if not self._usable(path, status):
            if current is not None:
                self._detach(
                    current,
                    "path no longer holds a regular file"
                    if status.kind != "missing"
                    else "path gone",
                )
            return
        known = self._tailers.get(status.identity)
        if known is not None and known is current:
            if (
                status.size != known.size
                or status.mtime_ns != known.mtime_ns
                or known.state == "error"
            ):
                known.wake.set()
            return
        if known is not None:  # a file we follow, now (also) at this path: renamed into the globs
            if current is not None:
                self._detach(current, "replaced by another tracked file")
            self._attach(known, path, source)
            return
        if current is not None:
            self._detach(current, "rotated: a new file is at its path")
        before = self._departed.pop(path, None)  # `current`, or the file that left the path
        if before is not None and before.done:
            before = None
        seed, copy = None, False
        if resumable is not None and resumable.identity == status.identity:
            self._memory.forget(resumable.identity)
            state, how, seed = resumable.framer, "seen before; resuming", resumable
        elif path_fresh:
            state, how = (
                self._start_at(source, status),
                f"new source (start_at {self.config.sources[source].start_at})",
            )
        else:
            state, how = FramerState(), "new file"
            copy = any(self.lineages_for(path, status.dev))
        tailer = self._add(
            source, path, status.identity, state, attached=True, size=status.size,
            seed=seed, after=before, copy=copy, how=how,
        )  # fmt: skip
        self._spawn(tailer)

    def _sweep(self) -> None:
        """Rescan only: retry failed files, re-check detached ones, give idle descriptors back."""
        now = time.monotonic()
        for tailer in list(self._tailers.values()):
            if tailer.state == "error" or not tailer.attached:
                tailer.wake.set()
            elif (
                tailer.fd is not None
                and not tailer.lock.locked()
                and now - tailer.last_active >= IDLE_CLOSE_SECONDS
                and tailer.framer.position >= tailer.size
            ):
                tailer.close_fd()


def _settings_of(config: Config) -> dict[str, TailSettings]:
    grace = max(2.0, 2 * config.daemon.commit_interval)
    return {
        name: TailSettings(
            max_line_bytes=source.max_line_bytes,
            follow_symlinks=source.follow_symlinks,
            chunk_bytes=config.daemon.read_chunk_bytes,
            grace=grace,
            multiline=source.multiline,
        )
        for name, source in config.sources.items()
    }
