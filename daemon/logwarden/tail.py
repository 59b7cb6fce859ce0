"""Tailing: one task per file identity that reads new bytes in chunks and hands whole lines on.

The manager owns the map path → file identity and every decision about it (discovery, rotation,
restore, copy detection); each `_Tailer` owns one open file and its framer and does the reading.
Blocking calls (stat, open, scandir, pread) run in worker threads; everything that changes what
`snapshot()` reports happens in the event loop in one synchronous step with the `sink.accept`
that it corresponds to, so a snapshot is always exactly the state after the blocks accepted so far.

Decisions, and what was rejected:
- Wake-ups are events, not timers: an idle file costs a parked task and nothing else. Only files
  renamed away from their path (their grace period) and possible copies being written carry a
  timer, and only until they are settled.
- Reads are positional (`pread` of the last bytes already read plus the next chunk, then the head,
  run through aiofiles' executor wrapper) rather than `seek` + `read`: one thread hop per chunk,
  no shared file position, and the re-read of the head and of the 64 bytes before the offset
  catches a truncate-and-regrow past the offset in the same hop that reads the new data. A size
  check alone misses that (Vector #26334).
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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar

import aiofiles.os

from logwarden.config import Config
from logwarden.framing import Block, FramerState, LineFramer
from logwarden.identity import (
    HEAD_BYTES,
    TAIL_BYTES,
    FileCheckpoint,
    Fingerprint,
    Identity,
    Known,
    Lineage,
    Opened,
    PathStatus,
    copy_start,
    find_copies,
    is_rotation_name,
    judge_copies,
    open_tailed,
    plan_start,
    probe_paths,
    read_checked,
)
from logwarden.origin import SourceRef

__all__ = [
    "BlockSink",
    "FileCheckpoint",
    "FileStats",
    "Fingerprint",
    "PathIndex",
    "TailManager",
    "TailState",
]

TailState = Literal["following", "draining", "error"]

IDLE_CLOSE_SECONDS = 60.0  # a following file unchanged this long gives its descriptor back
MAX_OPEN_FILES = 1000
MAX_NAMES = 4  # paths a file is remembered under, for naming its copies
RETIRED_MEMORY = 4096  # ended files remembered, in case they reappear under a covered name

_T = TypeVar("_T")
_read_checked = aiofiles.os.wrap(read_checked)  # the data path: pread in aiofiles' executor


class BlockSink(Protocol):
    """Where lines go (the service: rules, records, report journals)."""

    def accept(self, source: SourceRef, blocks: list[Block]) -> None: ...

    async def wait_for_room(self) -> None: ...


class PathIndex(Protocol):
    """Which source covers a path, and every path the sources' globs cover right now."""

    def source_of(self, path: str) -> str | None: ...

    def discover(self) -> Mapping[str, str]: ...


class Log(Protocol):
    """The part of a structlog BoundLogger used here."""

    def bind(self, **new_values: Any) -> Log: ...

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def exception(self, event: str, *args: Any, **kw: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class FileStats:
    source: str
    path: str
    dev: int
    inode: int
    offset: int  # committed framer offset: where a restart would resume
    size: int  # last size seen
    lag: int  # bytes not yet read into a line
    lines: int
    state: TailState
    error: str | None


# ---------------------------------------------------------------- one file


class _Tailer:
    """One file identity: its descriptor, framer and content samples, read by its own task."""

    def __init__(
        self,
        manager: TailManager,
        source: str,
        path: str,
        identity: Identity,
        state: FramerState,
        *,
        attached: bool,
        size: int,
        seed: FileCheckpoint | None = None,
    ) -> None:
        self.m = manager
        self.source = source
        self.path = path
        self.names: tuple[str, ...] = (path,)  # the paths it had (copies are named after them)
        self.dev, self.inode = identity
        self.attached = attached  # the path is known to point at this file
        self.framer = LineFramer(manager.max_line_bytes(source), state)
        self.seed = seed  # the verified checkpoint we resumed from, until we read the file
        self.head = b""  # the file's first bytes, up to HEAD_BYTES
        self.sample = b""  # the bytes just before framer.position, up to TAIL_BYTES
        self.fd: int | None = None
        self.size = size
        self.mtime_ns = 0
        self.lines = 0
        self.state: TailState = "following" if attached else "draining"
        self.error: str | None = None
        self.done = False
        now = time.monotonic()
        self.last_active = now  # last read that found data (idle close)
        self.last_growth = now  # same, for the grace period of a file rotated away
        self.wake = asyncio.Event()
        self.settled = asyncio.Event()  # read to its end since it was last rotated away
        self.lock = asyncio.Lock()  # one reader at a time (its task, or drain)
        self.after: _Tailer | None = None  # the file that was at this path before: read it first
        self.ready = True  # False while deciding whether it is a copy of a tracked file
        self.copy_guess: Lineage | None = None  # what it matched when last judged
        self.inflight: asyncio.Future[Any] | None = None
        self.task: asyncio.Task[None] | None = None
        self._checkpoint: FileCheckpoint | None = None
        self.ref = SourceRef(source, path, self.dev, self.inode)
        self.log = manager.log.bind(source=source, path=path)

    @property
    def identity(self) -> Identity:
        return (self.dev, self.inode)

    # -- what the checkpoint sees

    def checkpoint(self) -> FileCheckpoint:
        if self._checkpoint is None:
            if self.seed is not None and not self.head:
                self._checkpoint = replace(self.seed, source=self.source, path=self.home)
            else:
                position = self.framer.position
                self._checkpoint = FileCheckpoint(
                    source=self.source,
                    path=self.home,
                    dev=self.dev,
                    inode=self.inode,
                    head=Fingerprint.of(self.head[:position]),  # only bytes already read
                    framer=self.framer.state,
                    tail=Fingerprint.of(self.sample) if self.sample else None,
                    tail_end=position,
                )
        return self._checkpoint

    @property
    def home(self) -> str:
        """The path the checkpoint names: the first one it had in its directory (`app.log`, not
        `app.log.2`), which its copies are named after; a restart finds it by identity there."""
        directory = os.path.dirname(self.path)
        return next(name for name in self.names if os.path.dirname(name) == directory)

    def lineage(self) -> Lineage:
        """For copy detection; the head bytes only when they are really known (not a file resumed
        from a checkpoint's digests and not read since)."""
        position = self.framer.position
        known = len(self.head) >= min(position, HEAD_BYTES)
        return Lineage(self.checkpoint(), self.head[:position] if known else None)

    def pending_checkpoint(self) -> FileCheckpoint | None:
        """While deciding whether it is a copy: the resume point of the file it was last judged a
        copy of, under this file's identity, so that after a restart the content check decides.
        Nothing when not judged yet: the restart then compares it with the original's checkpoint."""
        if self.copy_guess is None:
            return None
        original = self.copy_guess.checkpoint
        return replace(original, source=self.source, path=self.path, dev=self.dev, inode=self.inode)

    def stats(self) -> FileStats:
        offset = self.framer.state.offset
        return FileStats(
            self.source, self.path, self.dev, self.inode, offset, self.size,
            max(self.size - offset, 0), self.lines, self.state, self.error,
        )  # fmt: skip

    def rename(self, source: str, path: str) -> None:
        if path != self.path:
            self.names = (*self.names[-(MAX_NAMES - 1) :], path)
        self.source, self.path = source, path
        self.ref = SourceRef(source, path, self.dev, self.inode)
        self.log = self.m.log.bind(source=source, path=path)
        self._checkpoint = None

    # -- the task

    async def run(self) -> None:
        try:
            if not self.ready:
                try:
                    await self._settle_copy()
                except Exception:  # undecided is not a reason to skip the file: read it whole
                    self.log.exception("deciding whether the file is a copy failed")
                    self.ready = True
            while self.after is not None and not self.after.settled.is_set():
                await self.after.settled.wait()
            self.after = None
            while not self.done:
                self.wake.clear()
                try:
                    async with self.lock:
                        await self.catch_up()
                except Exception as error:  # a bug here must not stop the other files
                    self.log.exception("tailing failed; will retry")
                    self._fail(error)
                if self.done:
                    return
                await self._sleep(self._grace_left())
        finally:
            self.settled.set()

    async def _sleep(self, seconds: float | None) -> None:
        """Until woken, or `seconds`. Not `wait_for`: on 3.11 it can swallow a cancellation that
        races with the wake-up, and `close()` would then wait for ever."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    def _grace_left(self) -> float | None:
        """Only a file rotated away has a timer: it closes once quiet for the grace period."""
        if self.attached or self.state == "error":
            return None
        return max(self.m.grace - (time.monotonic() - self.last_growth), 0.0) + 0.01

    async def _io(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run blocking work in a thread; on cancellation it finishes, and `release` waits for it."""
        future: asyncio.Future[_T] = asyncio.ensure_future(asyncio.to_thread(function, *args))
        return await self._shielded(future)

    async def _shielded(self, awaitable: Awaitable[_T]) -> _T:
        future = asyncio.ensure_future(awaitable)
        self.inflight = future
        result = await asyncio.shield(future)
        self.inflight = None
        return result

    async def release(self) -> None:
        """After the task is cancelled: wait for a thread still working on our descriptor, close it."""
        inflight, self.inflight = self.inflight, None
        if inflight is not None:
            await asyncio.wait({inflight})  # its own error is of no interest any more
            if not inflight.cancelled() and inflight.exception() is None:
                result = inflight.result()
                if isinstance(result, Opened) and result.fd != self.fd:
                    os.close(result.fd)
        self.close_fd()

    # -- deciding whether a new file is a copy (copytruncate with the copy inside the globs)

    async def _settle_copy(self) -> None:
        """Decide where a possible copy starts. Against a truncated original: at once. Against a
        live one: wait for its truncation (copytruncate truncates right after copying; the
        original's own reads until then would overlap the copy), or until the copy has been
        quiet for the grace period (a plain copy). A copy still being written waits while it
        grows. `_truncated` of the original may settle it meanwhile (`resolve_copy`)."""
        follow = self.m.follows(self.source)
        last_size, last_change = -1, time.monotonic()
        while not self.ready:
            records = self.m.truncation_lineages(self.path, self.dev)
            live = self.m.live_lineages(self.path, self.dev)
            verdicts, size = await self._io(
                judge_copies, self.path, follow, self.identity, records + live
            )
            if self.ready or self.done:
                return
            now = time.monotonic()
            if size != last_size:
                last_size, last_change = size, now
            quiet = now - last_change >= self.m.grace
            lineages = records + live
            self.copy_guess = lineages[verdicts.index("copy")] if "copy" in verdicts else None
            start = copy_start(verdicts[: len(records)], records, size)
            if start is None and quiet:
                start = copy_start(verdicts, lineages, size)
            if start is not None:
                self.resolve_copy(start, "a copy of a tracked file")
            elif quiet or all(verdict == "no" for verdict in verdicts):
                self.ready = True  # a file of its own: read it from the start
            else:
                self.wake.clear()
                await self._sleep(self.m.grace - (now - last_change) + 0.01)

    def resolve_copy(self, start: FramerState, what: str) -> None:
        """It is a copy: start where the original was read (or at its end when it holds only
        bytes already read)."""
        self.framer = LineFramer(self.framer.max_line_bytes, start)
        self._checkpoint = None
        self.ready = True
        self.wake.set()
        self.log.info(f"file is {what}; continuing from where that was read", offset=start.offset)

    # -- reading

    async def catch_up(self, *, ending: bool = True) -> None:
        """Read to the current end; with `ending`, also close a file that has ended."""
        if self.done or not self.ready:
            return
        if self.fd is None:
            async with self.m.open_slots:  # bounds descriptors while thousands of files start
                if self.done or not await self._open():
                    return
                await self._read_open(ending)
        else:
            await self._read_open(ending)

    async def _open(self) -> bool:
        try:
            position = self.framer.position
            seed = self.seed if not self.head else None  # resumed, but not read since
            known = Known(position, self.head[:position], self.sample, seed)
            opened = await self._io(
                open_tailed, self.path, self.m.follows(self.source), self.identity, known
            )
        except OSError as error:
            self._fail(error)
            return False
        if opened is None:
            self.finish("gone (deleted or moved out of its directory)")
            return False
        self.fd = opened.fd
        self.m.open_count += 1
        self.size = opened.size
        if opened.path != self.path and not self.attached:
            self.rename(self.source, opened.path)
        if opened.intact:
            self.head, self.sample = opened.head, opened.sample
            self._checkpoint = None
        else:
            await self._truncated("file content changed while it was closed", opened.size)
        return True

    async def _read_open(self, ending: bool) -> None:
        assert self.fd is not None
        try:
            grew, status = await self._read_to_end()
        except OSError as error:
            self._fail(error)
            return
        if status is None:  # closed or finished while waiting for room: the next round reads
            self.settled.set()
            return
        self.mtime_ns = status.st_mtime_ns
        self.size = max(status.st_size, self.framer.position)
        if self.state == "error":
            self.log.info("file is readable again")
            self.state, self.error = ("following" if self.attached else "draining"), None
        self.settled.set()
        now = time.monotonic()
        if grew:
            self.last_active = self.last_growth = now
        if not ending:
            return
        if status.st_nlink == 0:
            self.finish("deleted")
        elif not self.attached and now - self.last_growth >= self.m.grace:
            self.finish("rotated away and no longer written")
        elif self.attached and self.m.open_count > self.m.max_open:
            self.close_fd()

    async def _read_to_end(self) -> tuple[bool, os.stat_result | None]:
        """Read chunks until a short read; each re-reads the sample first, to catch truncation.
        Returns whether the file grew, and its status as of the last read (None: none was made)."""
        chunk_bytes = self.m.config.daemon.read_chunk_bytes
        grew = False
        status: os.stat_result | None = None
        while True:
            await self.m.sink.wait_for_room()
            fd = self.fd
            if fd is None or self.done:
                return grew, status
            position = self.framer.position
            overlap = len(self.sample)
            known_head = self.head[:position]  # not what lies past the position: it may change
            status, head, data = await self._shielded(
                _read_checked(fd, len(known_head), position - overlap, overlap + chunk_bytes)
            )
            if head != known_head or data[:overlap] != self.sample:
                size = (await self._io(os.fstat, fd)).st_size
                await self._truncated("file truncated", size)
                continue
            fresh = data[overlap:] if overlap else data
            if fresh:
                self._consume(position, fresh)
                grew = True
            if len(fresh) < chunk_bytes:
                return grew, status

    def _consume(self, start: int, fresh: bytes) -> None:
        """Feed, remember and deliver in one step (no await): snapshot() sees all of it or none."""
        before = (self.framer.state, self.head, self.sample)
        blocks = self.framer.feed(fresh)
        if len(self.head) < HEAD_BYTES and start <= len(self.head) < start + len(fresh):
            self.head += fresh[len(self.head) - start : HEAD_BYTES - start]
        if len(fresh) >= TAIL_BYTES:
            self.sample = fresh[-TAIL_BYTES:]
        else:
            self.sample = (self.sample + fresh)[-TAIL_BYTES:]
        self._checkpoint = None
        if blocks:
            try:
                self.m.deliver(self, blocks)
            except BaseException:
                # the sink refused: forget this chunk; the reopen re-reads the partial line
                self.framer = LineFramer(self.framer.max_line_bytes, before[0])
                self.head, self.sample = before[1], b""
                self.close_fd()
                raise
        self.m.count_bytes(len(fresh))

    async def _truncated(self, why: str, size: int) -> None:
        """Truncation (copytruncate): take over copies of the old content lying beside the file
        (inside the globs) at the old offset, then read the file from 0. Both in one step after
        the search, so no snapshot has the reset without the copies (a restart would send the
        copies' lines again)."""
        if self.framer.position > 0:
            lineage = self.lineage()
            known = frozenset(self.m.settled_identities())
            copies = await self._io(find_copies, list(self.names), lineage, known)
            self.m.adopt_copies(self, copies)
        self._restart_at_zero(why, size)

    def _restart_at_zero(self, why: str, size: int) -> None:
        """The old partial line is gone; read the new content from 0."""
        position = self.framer.position
        if position > 0:
            self.m.truncated(tuple(self.names), self.lineage())
        unread = max(self.size - position, 0) + self.framer.pending_bytes
        self.log.warning(
            f"{why}; reading it again from the start", old_offset=position, size=size,
            possibly_lost_bytes=unread,
        )  # fmt: skip
        self.m.count_lost(unread)
        self.framer = LineFramer(self.framer.max_line_bytes)
        self.head = self.sample = b""
        self.seed = None
        self._checkpoint = None

    # -- ending

    def finish(self, reason: str) -> None:
        """The file will not grow any more: emit its partial last line, close it, forget it."""
        blocks = self.framer.flush()
        self._checkpoint = None
        if blocks:
            self.m.deliver(self, blocks)
        self.close_fd()
        self.done = True
        self.settled.set()
        self.m.retire(self)
        self.log.info("finished file", reason=reason, offset=self.framer.position, lines=self.lines)

    def _fail(self, error: BaseException) -> None:
        text = (error.strerror if isinstance(error, OSError) else None) or str(error) or repr(error)
        if self.state != "error":
            self.log.warning("cannot read file; will retry", error=text)
        self.state, self.error = "error", text
        self.close_fd()
        self.settled.set()  # a file we cannot read must not hold up the next one at its path

    def close_fd(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.m.open_count -= 1
            os.close(fd)


# ---------------------------------------------------------------- all files


class TailManager:
    """Follows every file the sources' globs cover, exactly once, across rotation and restarts."""

    def __init__(  # noqa: PLR0917 (the service's call, as the contract gives it, is positional)
        self,
        config: Config,
        index: PathIndex,
        sink: BlockSink,
        restored: Sequence[FileCheckpoint],
        known_sources: frozenset[str],
        log: Log,
    ) -> None:
        self.config = config
        self.index = index
        self.sink = sink
        self.log = log
        self._restored = list(restored)
        self._known_sources = known_sources
        self._tailers: dict[Identity, _Tailer] = {}
        self._paths: dict[str, _Tailer] = {}  # path → the file it points at (attached tailers)
        self._retired: OrderedDict[Identity, FileCheckpoint] = OrderedDict()
        self._noted: dict[str, tuple[str, str | None]] = {}  # path → (kind, error) already logged
        self._pending_paths: set[str] = set()
        self._pending_discover = False
        self._fresh_sources: set[str] = set()  # sources new since a reload: start_at applies
        self._reconcile_wake = asyncio.Event()
        self._reconcile_lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        # (the paths it had, what it held) of files truncated lately: their copies may turn up
        self._truncations: deque[tuple[tuple[str, ...], Lineage]] = deque(maxlen=64)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_open = (
            MAX_OPEN_FILES
            if soft == resource.RLIM_INFINITY
            else min(MAX_OPEN_FILES, max(soft // 2, 16))
        )
        self.open_slots = asyncio.Semaphore(max(self.max_open // 8, 4))
        self.open_count = 0
        self._lines = self._bytes = self._lost = 0

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

    def count_bytes(self, count: int) -> None:
        self._bytes += count

    def count_lost(self, count: int) -> None:
        self._lost += count

    @property
    def grace(self) -> float:
        return max(2.0, 2 * self.config.daemon.commit_interval)

    def max_line_bytes(self, source: str) -> int:
        return self.config.sources[source].max_line_bytes

    def follows(self, source: str) -> bool:
        found = self.config.sources.get(source)
        return found is not None and found.follow_symlinks

    def _follow_map(self) -> dict[str, bool]:
        return {name: source.follow_symlinks for name, source in self.config.sources.items()}

    # -- lifecycle

    async def start(self) -> None:
        """Discover, match the restored checkpoints, and start reading."""
        discovered = await self._discover()
        checkpoints = [cp for cp in self._restored if cp.source in self.config.sources]
        plan = await asyncio.to_thread(plan_start, checkpoints, discovered, self._follow_map())
        moved_from: dict[str, _Tailer] = {}  # old path → the file that was there (read it first)
        for resume in plan.resumes:
            checkpoint = resume.checkpoint
            covered = self.index.source_of(resume.path)
            state = checkpoint.framer if resume.intact else FramerState()
            tailer = self._add(
                covered or checkpoint.source, resume.path, checkpoint.identity, state,
                attached=covered is not None and resume.path not in self._paths,
                size=checkpoint.tail_end, seed=checkpoint if resume.intact else None,
            )  # fmt: skip
            if not resume.intact:
                tailer.log.warning(
                    "file was truncated or rewritten while stopped; reading it from the start",
                    old_offset=checkpoint.framer.offset,
                )  # fmt: skip
            if resume.path != checkpoint.path:
                tailer.names = (checkpoint.path, resume.path)
                moved_from[checkpoint.path] = tailer
                if covered is None:
                    tailer.log.info("file was renamed while stopped", old_path=checkpoint.path)
        for checkpoint in plan.lost:
            self._remember(checkpoint)
            self.log.info(
                "checkpointed file not found", path=checkpoint.path, offset=checkpoint.framer.offset
            )
        for path, (original, status, start) in plan.copies.items():
            covered = discovered.get(path)
            if covered is None and start.offset >= status.size:
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
        for tailer in list(self._tailers.values()):
            self._spawn(tailer)
        self._reconciler = asyncio.create_task(
            self._reconcile_loop(), name="logwarden-tail-reconcile"
        )

    def changed(self, paths: set[str], rediscover: bool) -> None:
        """From the watcher, in the loop: wake these files' readers and check what the paths hold."""
        for path in paths:
            tailer = self._paths.get(path)
            if tailer is not None:
                tailer.wake.set()
        self._pending_paths |= paths
        self._pending_discover = self._pending_discover or rediscover
        self._reconcile_wake.set()

    async def rescan(self) -> None:
        """The safety net: rediscover, stat every tracked path, wake whatever changed."""
        await self._reconcile(set(), discover=True, full=True)

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
        successor); partial last lines stay pending."""
        for tailer in list(self._tailers.values()):
            async with tailer.lock:
                await tailer.catch_up(ending=False)

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
        for tailer in list(self._tailers.values()):
            source = self.index.source_of(tailer.path) if tailer.attached else tailer.source
            if source is None or source not in config.sources:
                self._stop(
                    tailer, "its source was removed" if source else "no longer covered by the globs"
                )
                continue
            if source != tailer.source:
                tailer.rename(source, tailer.path)
            tailer.framer.max_line_bytes = config.sources[source].max_line_bytes
        for identity, checkpoint in list(self._retired.items()):
            if checkpoint.source not in config.sources:
                del self._retired[identity]
        self._fresh_sources |= set(config.sources) - old_sources
        self._pending_discover = True
        self._reconcile_wake.set()

    def stats(self) -> list[FileStats]:
        found = [tailer.stats() for tailer in self._tailers.values()]
        for path, (kind, error) in self._noted.items():
            if kind == "error":
                source = self.index.source_of(path) or ""
                found.append(FileStats(source, path, 0, 0, 0, 0, 0, 0, "error", error))
        return found

    # -- bookkeeping

    def deliver(self, tailer: _Tailer, blocks: list[Block]) -> None:
        self.sink.accept(tailer.ref, blocks)
        lines = sum(block.line_count for block in blocks)
        tailer.lines += lines
        self._lines += lines

    def retire(self, tailer: _Tailer) -> None:
        if self._tailers.get(tailer.identity) is tailer:
            del self._tailers[tailer.identity]
        if self._paths.get(tailer.path) is tailer:
            del self._paths[tailer.path]
        self._remember(tailer.checkpoint())

    def _remember(self, checkpoint: FileCheckpoint) -> None:
        self._retired[checkpoint.identity] = checkpoint
        self._retired.move_to_end(checkpoint.identity)
        while len(self._retired) > RETIRED_MEMORY:
            self._retired.popitem(last=False)

    def truncated(self, names: tuple[str, ...], before: Lineage) -> None:
        """A file was truncated: remember what it held, a copy of it may turn up (copytruncate)."""
        self._truncations.appendleft((names, before))
        for tailer in self._tailers.values():
            if not tailer.ready:
                tailer.wake.set()

    def settled_identities(self) -> list[Identity]:
        return [identity for identity, tailer in self._tailers.items() if tailer.ready]

    def adopt_copies(self, original: _Tailer, copies: list[tuple[PathStatus, FramerState]]) -> None:
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
                continue  # outside the globs and nothing unread in it
            tailer = self._add(
                source or original.source, status.path, status.identity, start,
                attached=source is not None, size=status.size, how=f"a copy of {original.path}",
            )  # fmt: skip
            self._spawn(tailer)

    def truncation_lineages(self, path: str, dev: int) -> list[Lineage]:
        """What files whose rotation name `path` has held before their recent truncations."""
        return [
            lineage
            for names, lineage in self._truncations
            if lineage.checkpoint.dev == dev and _rotation_of(path, names)
        ]

    def live_lineages(self, path: str, dev: int) -> list[Lineage]:
        """Files whose rotation name `path` has, as they are now (their truncation may not have
        been seen yet); only files something was read from."""
        return [
            tailer.lineage()
            for tailer in self._tailers.values()
            if tailer.ready
            and tailer.dev == dev
            and tailer.path != path
            and tailer.framer.position > 0
            and _rotation_of(path, tailer.names)
        ]

    def _add(
        self, source: str, path: str, identity: Identity, state: FramerState, *, attached: bool,
        size: int, seed: FileCheckpoint | None = None, after: _Tailer | None = None,
        copy: bool = False, how: str | None = None,
    ) -> _Tailer:  # fmt: skip
        tailer = _Tailer(
            self, source, path, identity, state, attached=attached, size=size, seed=seed
        )
        tailer.after = after
        tailer.ready = not copy
        self._tailers[identity] = tailer
        if attached:
            self._paths[path] = tailer
        if how is not None:
            tailer.log.info("following file", offset=state.offset, reason=how)
        return tailer

    def _spawn(self, tailer: _Tailer) -> None:
        tailer.task = asyncio.create_task(tailer.run(), name=f"logwarden-tail:{tailer.path}")

    def _attach(self, tailer: _Tailer, path: str, source: str) -> None:
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

    def _detach(self, tailer: _Tailer, why: str) -> None:
        """The path no longer points at this file: drain it, keep it while it grows, then close."""
        if self._paths.get(tailer.path) is tailer:
            del self._paths[tailer.path]
        tailer.attached = False
        if tailer.state != "error":
            tailer.state = "draining"
        if not tailer.done:
            tailer.settled.clear()
        tailer.last_growth = time.monotonic()
        tailer.wake.set()
        tailer.log.info("file left its path; draining it", why=why)
        self._pending_discover = True  # it may have been renamed to a name the globs cover
        self._reconcile_wake.set()

    def _stop(self, tailer: _Tailer, why: str) -> None:
        """Stop tailing without finishing (a reload removed it); its checkpoint is dropped."""
        tailer.done = True
        tailer.settled.set()
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
            if previous is not None and previous[0] == "error":
                self.log.info("path is readable again", path=path)
            return True
        if status.kind == "missing":
            self._noted.pop(path, None)
            return False
        noted = (status.kind, status.error)
        if self._noted.get(path) != noted:
            self._noted[path] = noted
            if status.kind == "error":
                self.log.warning("cannot read path; will retry", path=path, error=status.error)
            elif status.kind == "symlink":
                self.log.info("skipping symlink (follow_symlinks is off)", path=path)
            else:
                self.log.info("skipping path: not a regular file", path=path)
        return False

    # -- discovery and reconciliation

    async def _discover(self) -> dict[str, str]:
        try:
            return dict(await asyncio.to_thread(self.index.discover))
        except Exception as error:  # a broken glob root must not stop the daemon
            self.log.warning("discovery failed; will retry", error=str(error))
            return {}

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_wake.wait()
            self._reconcile_wake.clear()
            paths, self._pending_paths = self._pending_paths, set()
            discover, self._pending_discover = self._pending_discover, False
            try:
                await self._reconcile(paths, discover=discover, full=False)
            except Exception:  # keep watching whatever went wrong this round
                self.log.exception("reconciling paths failed")

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
            probed = await asyncio.to_thread(
                probe_paths, targets, self._follow_map(), dict(self._retired)
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
            if full:
                self._sweep()

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
        seed, copy = None, False
        if resumable is not None and resumable.identity == status.identity:
            self._retired.pop(resumable.identity, None)
            state, how, seed = resumable.framer, "seen before; resuming", resumable
        elif path_fresh:
            state, how = (
                self._start_at(source, status),
                f"new source (start_at {self.config.sources[source].start_at})",
            )
        else:
            state, how = FramerState(), "new file"
            copy = bool(
                self.truncation_lineages(path, status.dev) or self.live_lineages(path, status.dev)
            )
        tailer = self._add(
            source, path, status.identity, state, attached=True, size=status.size,
            seed=seed, after=current, copy=copy, how=how,
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


def _rotation_of(path: str, names: Iterable[str]) -> bool:
    """`path` is named as a rotation of one of `names` (paths a file had), in the same directory:
    `app.log.1` of `app.log`, even after `app.log` itself was renamed `app.log.2`."""
    directory, name = os.path.split(path)
    return any(
        os.path.dirname(other) == directory and is_rotation_name(name, os.path.basename(other))
        for other in names
    )
