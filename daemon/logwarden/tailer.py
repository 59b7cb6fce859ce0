"""One tailed file: its descriptor, its framer, and the task that reads it and hands lines on.

Decisions, and what was rejected:
- Wake-ups are events, not timers: an idle file costs a parked task and nothing else. Only files
  renamed away from their path (their grace period) and possible copies being written carry a
  timer, and only until they are settled.
- Reads are positional (`pread` of the last bytes already read plus the next chunk, then the
  head) rather than `seek` + `read`: no shared file position, and the re-read of the head and of
  the 64 bytes before the offset catches a truncate-and-regrow past the offset in the same call
  that reads the new data. A size check alone misses that (Vector #26334).
- Reads run on the event loop while they are fast, and in a worker thread (aiofiles) once one
  was slow (`Tailer._read`): a thread hop costs more than reading a few KiB from the page cache.
  Opening, probing and the copy search touch directories and stay in threads.
- Everything that changes what the checkpoint sees (framer, head and sample) changes in one
  synchronous step with the delivery of the lines it corresponds to (`_consume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar

import aiofiles.os

from logwarden.config import MultilineConfig
from logwarden.counters import FileSnapshot
from logwarden.framing import Block, FramerState, LineFramer
from logwarden.identity import (
    HEAD_BYTES,
    TAIL_BYTES,
    FileCheckpoint,
    Fingerprint,
    Identity,
    Known,
    Opened,
    PathStatus,
    open_tailed,
    read_checked,
)
from logwarden.log import get_logger
from logwarden.lookahead import (
    DAEMON_SHARE,
    Chunk,
    Lookahead,
    ReadFrom,
    line_start_after,
    lookahead_min_bytes,
)
from logwarden.multiline import make_framer, reframe
from logwarden.origin import SourceRef
from logwarden.recent import RATE_WINDOW_S, RecentCounts
from logwarden.resume import Lineage, copy_start, find_copies, judge_copies
from logwarden.rules import Match, SourceMatcher

log = get_logger(__name__)

TailState = Literal["following", "draining", "error"]

MAX_NAMES = 4  # paths a file is remembered under, for naming its copies
SLOW_READ_S = 0.010  # a read on the loop slower than this sends the file's reads to a thread
THREADED_FOR_S = 30.0  # for this long, before the loop tries again
MAX_SIGHTINGS = 16  # growth sightings kept per file to date its oldest unread byte

_T = TypeVar("_T")
_read_checked = aiofiles.os.wrap(read_checked)  # the slow path: pread in aiofiles' executor


@dataclass(frozen=True, slots=True)
class TailSettings:
    """What a tailer needs of its source's config (replaced as a whole on reload)."""

    max_line_bytes: int
    follow_symlinks: bool
    chunk_bytes: int  # one read's size
    grace: float  # a file rotated away and quiet this long is finished
    multiline: MultilineConfig | None = None  # events of several lines (`multiline.py`)


class Descriptors:
    """The open-descriptor budget every tailer shares."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.slots = asyncio.Semaphore(max(limit // 8, 4))  # opens at once, while thousands start

    @property
    def over_budget(self) -> bool:
        return self.count > self.limit


class TailerHost(Protocol):
    """What a tailer hands on and asks of the rest: the manager implements it."""

    def deliver(self, tailer: Tailer, blocks: list[Block]) -> None:
        """Lines read, in order; raises when the sink refuses them."""

    def deliver_matched(
        self, tailer: Tailer, matches: list[Match], lines: int, block_bytes: int
    ) -> None:
        """The matches of lines a worker framed and matched ahead (`lookahead.py`), as `deliver`."""

    def matcher_ahead(self, source: str) -> SourceMatcher | None:
        """The matcher a worker may match `source`'s lines with ahead, or None: not this one."""

    async def wait_for_room(self) -> None:
        """Returns when the sink has room for more lines (backpressure)."""

    def has_room(self) -> bool:
        """Whether `wait_for_room` would return at once."""

    def count(
        self,
        *,
        read: int = 0,
        lost: int = 0,
        unmeasured: int = 0,
        read_errors: int = 0,
        source: str | None = None,
    ) -> None:
        """Bytes read (of `source`), bytes known lost to a truncation, truncations whose loss is
        unknown, and the file becoming unreadable."""

    def lineages_for(self, path: str, dev: int) -> tuple[list[Lineage], list[Lineage]]:
        """What `path` may be a copy of: files recently truncated, and live files."""

    def settled_identities(self) -> frozenset[Identity]:
        """Files known for sure (not candidates for being a copy)."""

    def truncated(self, tailer: Tailer, before: Lineage) -> None:
        """The file was truncated; `before` is what it held."""

    def adopt_copies(self, tailer: Tailer, copies: list[tuple[PathStatus, FramerState]]) -> None:
        """Copies of the truncated file were found beside it: read them from `FramerState`."""

    def finished(self, tailer: Tailer) -> None:
        """The file ended (deleted, or rotated away and quiet): forget it, remember its place."""

    def state_changed(self, tailer: Tailer) -> None:
        """Its state (following, draining, error) or error changed."""


class Tailer:
    """One file identity: its descriptor, framer and content samples, read by its own task.

    It knows the rest of the daemon only through `host` (where lines go, and the questions about
    other files that only the manager can answer), `settings` and the shared descriptor budget.
    """

    compressed = False  # a gzip rotation (`compressed.CompressedTailer`)

    def __init__(
        self,
        host: TailerHost,
        *,
        settings: TailSettings,
        descriptors: Descriptors,
        source: str,
        path: str,
        identity: Identity,
        state: FramerState,
        attached: bool,
        size: int,
        seed: FileCheckpoint | None = None,
    ) -> None:
        self.host = host
        self.settings = settings
        self.descriptors = descriptors
        self.source = source
        self.path = path
        self.names: tuple[str, ...] = (path,)  # the paths it had (copies are named after them)
        self.dev, self.inode = identity
        self.attached = attached  # the path is known to point at this file
        self.framer = make_framer(settings.max_line_bytes, settings.multiline, state)
        # wakes the task when the framer's open multi-line event is due to time out
        self._event_timer: asyncio.TimerHandle | None = None
        self.seed = seed  # the verified checkpoint we resumed from, until we read the file
        self.head = b""  # the file's first bytes, up to HEAD_BYTES
        self.sample = b""  # the bytes just before framer.position, up to TAIL_BYTES
        self.fd: int | None = None
        self.size = size
        self.mtime_ns = 0
        # (file size, wall time it was first seen) at each read that found the file grown; what
        # `unread_since` dates the oldest unread byte by. A few entries: a read consumes them.
        self._sightings: deque[tuple[int, float]] = deque()
        self.lines = 0
        self.recent_lines = RecentCounts(RATE_WINDOW_S, int(RATE_WINDOW_S))  # lines/s for status
        self.last_read: float | None = None  # wall clock of the last delivery
        self.state: TailState = "following" if attached else "draining"
        self.error: str | None = None
        self.done = False
        now = time.monotonic()
        self.last_active = now  # last read that found data (idle close)
        self.last_growth = now  # same, for the grace period of a file rotated away
        self.left_path_at = now  # when it was last rotated away (`_settle` bounds the wait by it)
        self.wake = asyncio.Event()
        self.settled = asyncio.Event()  # read to its end since it was last rotated away
        self.ended = asyncio.Event()  # finished or stopped: it will read nothing more
        self.lock = asyncio.Lock()  # one reader at a time (its task, or drain)
        self.after: Tailer | None = None  # the file that was at this path before: read it first
        self.ready = True  # False while deciding whether it is a copy of a tracked file
        self.copy_guess: Lineage | None = None  # what it matched when last judged
        self.inflight: asyncio.Future[Any] | None = None
        self.ahead: Lookahead | None = None  # the worker matching a backlog ahead, if any
        # a fork or a worker failed: this file is matched in the daemon only from then on
        self._no_lookahead = False
        self._threaded_until = 0.0  # reads go to a thread until then (see `_read`)
        self.task: asyncio.Task[None] | None = None
        self._checkpoint: FileCheckpoint | None = None
        # (the whole head, its fingerprint): see `_head_fingerprint`
        self._head_digest: tuple[bytes, Fingerprint] | None = None
        self.ref = SourceRef(source, path, self.dev, self.inode)
        self.log = log.bind(source=source, path=path, inode=self.inode)

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
                    head=self._head_fingerprint(position),
                    framer=self.framer.state,
                    tail=Fingerprint.of(self.sample) if self.sample else None,
                    tail_end=position,
                )
        return self._checkpoint

    def _head_fingerprint(self, position: int) -> Fingerprint:
        """Of the head bytes already read; once the head is whole it no longer changes, so it
        is hashed once and not at every commit."""
        if len(self.head) < HEAD_BYTES or position < HEAD_BYTES:
            return Fingerprint.of(self.head[:position])
        if self._head_digest is None or self._head_digest[0] is not self.head:
            self._head_digest = (self.head, Fingerprint.of(self.head))
        return self._head_digest[1]

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

    def stats(self, now: float | None = None) -> FileSnapshot:
        """As of `now` (wall clock, for the lag in seconds; read once for a walk of every file)."""
        offset = self.framer.state.offset
        lag = max(self.size - offset, 0)
        since = self.unread_since() if lag else None
        lag_s = max((time.time() if now is None else now) - since, 0.0) if since else 0.0
        return FileSnapshot(
            self.source, self.path, self.dev, self.inode, offset, self.size,
            lag, self.lines, self.state, self.error, lag_s,
            self.recent_lines.rate(time.monotonic()), self.last_read,
        )  # fmt: skip

    def _sighted(self, status: os.stat_result) -> None:
        self._sighted_at(status.st_size, status.st_mtime)

    def _sighted_at(self, size: int, mtime: float) -> None:
        """Notes when bytes up to the file's end were first seen: at this read, or at the file's
        mtime if earlier (bytes written while nobody looked, such as before a restart)."""
        end = max(size, self.framer.position)
        sightings = self._sightings
        if sightings and end < sightings[-1][0]:
            sightings.clear()  # truncated: those bytes are gone
        if sightings and end == sightings[-1][0]:
            return
        seen = min(time.time(), mtime)
        if len(sightings) >= MAX_SIGHTINGS:
            # merge into the last entry, keeping its older time: the age errs on the high side
            sightings[-1] = (end, sightings[-1][1])
        else:
            sightings.append((end, seen))

    def unread_since(self) -> float | None:
        """When the oldest byte not yet framed into a line was first seen (wall clock seconds).

        It was written between the previous sighting and this one; the daemon reads as soon as
        inotify tells it a file grew, so sightings follow writes closely, and the figure is a
        lower bound of the byte's age. Without a sighting past the offset (the size came from a
        rescan), the file's mtime is the best date known. None when nothing is known.
        """
        offset = self.framer.state.offset
        sightings = self._sightings
        while sightings and sightings[0][0] <= offset:
            sightings.popleft()
        if sightings:
            return sightings[0][1]
        return self.mtime_ns / 1e9 if self.mtime_ns else None

    def reconfigure(self, settings: TailSettings) -> None:
        """A reload: the source's settings from the next read on (an event open under the old
        `multiline` settings ends first). A worker matching ahead frames with the old settings
        and matches with the old rules: it stops, and the next whole chunk starts a new one."""
        self.end_ahead()
        self.settings = settings
        self.framer, blocks = reframe(self.framer, settings.max_line_bytes, settings.multiline)
        if blocks:
            self._checkpoint = None
            self.host.deliver(self, blocks)
            self._settle()

    def current_path(self) -> str | None:
        """Where the open file is now, from `/proc/self/fd`: after a rename rotation, logs and
        status name the file by its new name (`app.log.1`), whether or not the globs cover it.
        None when it is closed or deleted, or the name cannot be read."""
        if self.fd is None:
            return None
        try:
            target = os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            return None
        if not target.startswith("/") or target.endswith(" (deleted)"):
            return None
        return target

    def set_names(self, names: tuple[str, ...]) -> None:
        """The paths it had, as a restart found it (renamed while stopped): `home`, and with it
        the stream `carry` keys by, stays the one it had before the stop."""
        self.names = names
        self.ref = SourceRef(self.source, self.path, self.dev, self.inode, self.home)
        self._checkpoint = None

    def rename(self, source: str, path: str) -> None:
        if path != self.path:
            self.names = (*self.names[-(MAX_NAMES - 1) :], path)
        self.source, self.path = source, path
        # `home`: the lines read after a rotation continue the same stream for `carry`
        self.ref = SourceRef(source, path, self.dev, self.inode, self.home)
        self.log = log.bind(source=source, path=path, inode=self.inode)
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
                        self._expire()
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
        if seconds is None:  # the common case (a followed file): no timer to set up
            await self.wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    def _grace_left(self) -> float | None:
        """Only a file rotated away has a timer: it closes once quiet for the grace period."""
        if self.attached or self.state == "error":
            return None
        return max(self.settings.grace - (time.monotonic() - self.last_growth), 0.0) + 0.01

    async def _read(
        self, fd: int, head_length: int, offset: int, length: int
    ) -> tuple[os.stat_result, bytes, bytes]:
        """`read_checked`, on the loop while reads of this file are fast, else in a thread.

        A read from the page cache takes microseconds; the hop to a worker thread and back costs
        tens of them, and was most of the live path's CPU. But a read can block (NFS, a failing
        disk), and the loop must not: a read that took longer than `SLOW_READ_S` sends this
        file's reads to a thread for `THREADED_FOR_S`, and then it is tried on the loop again.
        """
        if time.monotonic() < self._threaded_until:
            return await self._shielded(_read_checked(fd, head_length, offset, length))
        started = time.perf_counter()
        result = read_checked(fd, head_length, offset, length)
        self._note_read_time(time.perf_counter() - started)
        return result

    def _note_read_time(self, seconds: float) -> None:
        if seconds > SLOW_READ_S:
            self._threaded_until = time.monotonic() + THREADED_FOR_S
            self.log.info("slow reads; reading this file in a worker thread for a while")

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
        self._cancel_timeout()
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
        follow = self.settings.follow_symlinks
        last_size, last_change = -1, time.monotonic()
        while not self.ready:
            records, live = self.host.lineages_for(self.path, self.dev)
            verdicts, size = await self._io(
                judge_copies, self.path, follow, self.identity, records + live
            )
            if self.ready or self.done:
                return
            now = time.monotonic()
            if size != last_size:
                last_size, last_change = size, now
            quiet = now - last_change >= self.settings.grace
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
                await self._sleep(self.settings.grace - (now - last_change) + 0.01)

    def resolve_copy(self, start: FramerState, what: str) -> None:
        """It is a copy: start where the original was read (or at its end when it holds only
        bytes already read)."""
        self.framer = make_framer(self.settings.max_line_bytes, self.settings.multiline, start)
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
            async with self.descriptors.slots:  # bounds descriptors while thousands of files start
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
                open_tailed, self.path, self.settings.follow_symlinks, self.identity, known
            )
        except OSError as error:
            self._fail(error)
            return False
        if opened is None:
            self.finish("gone (deleted or moved out of its directory)")
            return False
        self.fd = opened.fd
        self.descriptors.count += 1
        if opened.path != self.path and not self.attached:
            self.rename(self.source, opened.path)
        if opened.intact:
            self.size = opened.size
            self.head, self.sample = opened.head, opened.sample
            self._checkpoint = None
        else:  # (its size is the new content's: the loss is figured on the size seen before)
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
            self._settle()
            return
        self._read_done(grew, status, ending)

    def _read_done(self, grew: bool, status: os.stat_result, ending: bool) -> None:
        """After reading to the end: note what the file looks like, and close it if it ended."""
        self.mtime_ns = status.st_mtime_ns
        self._sighted(status)
        self.size = max(status.st_size, self.framer.position)
        if self.state == "error":
            self.log.info("file is readable again")
            self.state, self.error = ("following" if self.attached else "draining"), None
            self.host.state_changed(self)
        self._settle()
        now = time.monotonic()
        if grew:
            self.last_active = self.last_growth = now
        if not ending:
            return
        if status.st_nlink == 0:
            self.finish("deleted")
        elif not self.attached and now - self.last_growth >= self.settings.grace:
            self.finish("rotated away and no longer written")
        elif self.attached and self.descriptors.over_budget:
            self.close_fd()

    async def _read_to_end(self) -> tuple[bool, os.stat_result | None]:
        """Read chunks until a short read; each re-reads the sample first, to catch truncation.
        Returns whether the file grew, and its status as of the last read (None: none was made)."""
        chunk_bytes = self.settings.chunk_bytes
        grew = False
        status: os.stat_result | None = None
        while True:
            await self.host.wait_for_room()
            fd = self.fd
            if fd is None or self.done:
                return grew, status
            ahead = self.ahead
            if ahead is not None and self.framer.position >= ahead.takes_over:
                # a chunk the worker matched; once it has ended, the file is read here again
                if await self._adopt_ahead():
                    grew = True
                    await asyncio.sleep(0)  # chunks it sent ahead come without a wait
                continue
            # up to where the worker started, while it works on
            wanted = (
                chunk_bytes
                if ahead is None
                else min(chunk_bytes, ahead.takes_over - self.framer.position)
            )
            position, known_head, offset, length = self._next_read(wanted)
            status, head, data = await self._read(fd, len(known_head), offset, length)
            fresh = self._take(position, known_head, head, data)
            if fresh < 0:
                await self._truncated("file truncated", status.st_size)
                continue
            # the size seen while catching up: if the file is truncated before it is read that
            # far, the difference is the figure of what was lost
            self.size = max(self.size, status.st_size)
            self._sighted(status)
            grew = grew or fresh > 0
            if fresh < wanted:
                self.end_ahead()  # shorter than where the worker started: it will not fit
                return grew, status
            minimum = lookahead_min_bytes()
            if ahead is None and minimum is not None and status.st_size - position >= minimum:
                await self._look_ahead(fd, status.st_size)
            # a whole chunk: more is waiting. Let the loop run between chunks (commits, other
            # files, signals, watchdog pings): reads on the loop never yield by themselves, and
            # a backlog of gigabytes would otherwise hold it for minutes
            await asyncio.sleep(0)

    def read_now(self) -> bool:
        """Read what is new right away, without waking the task: the hot path of a followed file
        that grew. Only when nothing needs waiting for (no thread, no backpressure, no copy or
        predecessor to settle, no truncation to handle); False: the task must be woken.

        The task costs a wake-up and a resumption of five nested coroutines per read, which at a
        few hundred reads a second was a tenth of the live path's CPU.
        """
        fd = self.fd
        if (
            fd is None
            or not self.attached
            or not self.ready
            or self.done
            or self.after is not None
            or self.state == "error"
            or self.lock.locked()
            or self.ahead is not None
            or not self.host.has_room()
            or time.monotonic() < self._threaded_until
        ):
            return False
        chunk_bytes = self.settings.chunk_bytes
        try:
            position, known_head, offset, length = self._next_read(chunk_bytes)
            started = time.perf_counter()
            status, head, data = read_checked(fd, len(known_head), offset, length)
            self._note_read_time(time.perf_counter() - started)
            fresh = self._take(position, known_head, head, data)
        except Exception as error:  # as in the task: a file that fails must not stop the rest
            if not isinstance(error, OSError):
                self.log.exception("tailing failed; will retry")
            self._fail(error)
            return True
        if fresh < 0:
            return False  # truncated: the task handles it (it reads the change again)
        if fresh >= chunk_bytes:
            return False  # one chunk at a time here: the task reads the rest, yielding between
        self._read_done(fresh > 0, status, ending=True)
        return True

    # -- a backlog matched ahead in a worker process (`lookahead.py`)

    async def _look_ahead(self, fd: int, size: int) -> None:
        """Start a worker on the backlog, when this file and its rules allow one: `DAEMON_SHARE`
        of the backlog further on, where a line starts."""
        framer = self.framer
        if (
            self.ahead is not None
            or self._no_lookahead
            or self.compressed
            or type(framer) is not LineFramer
            or len(self.head) < HEAD_BYTES  # the worker checks the whole head, as reads do
        ):
            return
        matcher = self.host.matcher_ahead(self.source)
        if matcher is None:
            return
        position = framer.position
        try:
            start = line_start_after(fd, position + 1 + int((size - position) * DAEMON_SHARE))
            if start is None:  # no line starts near there: try again at the next chunk
                return
            where = ReadFrom(
                fd, self.head, framer.state, framer.max_line_bytes, start, self.settings.chunk_bytes
            )
            ahead = await Lookahead.start(where, matcher, self.log)
        except OSError as error:
            self._no_lookahead = True
            self.log.warning(
                "cannot start a worker to match the backlog ahead; matching it here",
                error=error.strerror or str(error),
            )
            return
        # the fork's await let a reload, a truncation or a stop in: then the worker is stale
        if (
            self.framer is not framer
            or framer.max_line_bytes != where.max_line_bytes
            or self.fd != fd
            or self.done
        ):
            ahead.close()
            return
        self.ahead = ahead
        self.log.info(
            "matching the backlog ahead in a worker process",
            offset=position, worker_from=start, unread_bytes=size - position, pid=ahead.pid,
        )  # fmt: skip

    async def _adopt_ahead(self) -> bool:
        """Take the worker's next chunk as if this tailer had read it (`_consume`); False when
        the worker ended, or what it sent no longer applies (a reload changed the rules or the
        framing): the worker is stopped, and the file is read here again from where it stands."""
        ahead, framer = self.ahead, self.framer
        assert ahead is not None
        chunk = await ahead.next()
        if (
            chunk is None
            or ahead is not self.ahead
            or framer is not self.framer
            or self.fd is None
            or self.done
            or not isinstance(framer, LineFramer)
            or framer.max_line_bytes != ahead.max_line_bytes
            # where it starts, as the worker read it, is where this tailer stands
            or (chunk.start, chunk.began, chunk.held)
            != (framer.position, framer.state, framer.held)
            or chunk.before != self.sample
            or self.host.matcher_ahead(self.source) is not ahead.matcher
        ):
            self._no_lookahead = self._no_lookahead or ahead.failed  # no retry at every chunk
            self.end_ahead()
            return False
        self._take_chunk(chunk)
        return True

    def _take_chunk(self, chunk: Chunk) -> None:
        """`_consume` for a chunk read, framed and matched by the worker: one synchronous step."""
        before = self.framer.state
        self.framer, self.sample = chunk.framer, chunk.sample
        self._checkpoint = None
        try:
            if chunk.lines:  # (none: the chunk was the middle of a long line)
                self.host.deliver_matched(self, chunk.matches, chunk.lines, chunk.block_bytes)
        except BaseException:
            # as in `_consume`: forget the chunk; the reopen re-reads from the last whole line
            self.framer = make_framer(self.settings.max_line_bytes, None, before)
            self.sample = b""
            self.close_fd()
            raise
        self.host.count(read=chunk.read, source=self.source)
        self.size = max(self.size, chunk.size)
        if not self._sightings or chunk.size >= self._sightings[-1][0]:  # (it read earlier)
            self._sighted_at(chunk.size, chunk.mtime)

    def end_ahead(self) -> None:
        """Stop the worker, if one runs."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead.close()

    def _next_read(self, chunk_bytes: int) -> tuple[int, bytes, int, int]:
        """(position, the head as known, offset, length) of the next read: the sample before
        the position again, then a chunk; and the head, as far as it was read."""
        position = self.framer.position
        overlap = len(self.sample)
        known_head = self.head[:position]  # not what lies past the position: it may change
        return position, known_head, position - overlap, overlap + chunk_bytes

    def _take(self, position: int, known_head: bytes, head: bytes, data: bytes) -> int:
        """Check a read against what was known and consume its new bytes; their count, or -1
        when the head or the sample differ (the file was truncated)."""
        overlap = len(self.sample)
        if head != known_head or data[:overlap] != self.sample:
            return -1
        fresh = data[overlap:] if overlap else data
        if fresh:
            self._consume(position, fresh)
        return len(fresh)

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
                self.host.deliver(self, blocks)
            except BaseException:
                # the sink refused: forget this chunk; the reopen re-reads the partial line
                self.framer = make_framer(
                    self.settings.max_line_bytes, self.settings.multiline, before[0]
                )
                self.head, self.sample = before[1], b""
                self.close_fd()
                raise
        self.host.count(read=len(fresh), source=self.source)
        self._arm_timeout()

    # -- the open multi-line event (`multiline.py`)

    def end_event(self) -> None:
        """End the framer's open event now and hand it on (a stop, a truncation)."""
        blocks = self.framer.close_event()
        if blocks:
            self._checkpoint = None
            self.host.deliver(self, blocks)

    def _expire(self) -> None:
        """Hand on the open event if no line came for its `timeout`; time the next one."""
        if self.done or not self.ready:
            return
        blocks = self.framer.expire(time.monotonic())
        if blocks:
            self._checkpoint = None
            self.host.deliver(self, blocks)
            self._settle()
        self._arm_timeout()

    def _settle(self) -> None:
        """Read to its end: the file at its path may be read now. Not while a file rotated away
        holds an open event: the writer may still add to it through its old descriptor (logrotate's
        `create` until postrotate), so the event ends at its timeout or when the file finishes
        (quiet for the grace period, deleted), and its successor's lines come after it.
        Rejected: ending the event at every drained read, which cut such an event in two where
        `scan` of the rotated file sees one."""
        if self.attached or self.framer.deadline is None or self._waited_long_enough():
            self.settled.set()

    def _waited_long_enough(self) -> bool:
        """Whether the file at its path has waited for this one's open event long enough: twice
        the grace period since the rotation. A writer that reopens its file (logrotate's
        postrotate) leaves the rotated one quiet, so it finishes, and its event ends, within a
        grace period of its last line; one that keeps adding start lines through its old
        descriptor keeps an event open for good, and the new file's lines must not wait for
        that (they then come before that event's end)."""
        return time.monotonic() - self.left_path_at >= 2 * self.settings.grace

    def _arm_timeout(self) -> None:
        """One timer per file with an open event, set once per timeout rather than per read
        (`read_now` delivers without the task; the timer wakes it). It may fire early, when
        lines came since it was set: `_expire` then finds nothing due and sets it again. The
        loop's clock is the monotonic one the framer's deadline is on."""
        deadline = self.framer.deadline
        if deadline is None or self._event_timer is not None or self.done:
            return
        self._event_timer = asyncio.get_running_loop().call_at(deadline, self._event_due)

    def _event_due(self) -> None:
        self._event_timer = None
        self.wake.set()

    def _cancel_timeout(self) -> None:
        if self._event_timer is not None:
            self._event_timer.cancel()
            self._event_timer = None

    async def _truncated(self, why: str, size: int) -> None:
        """Truncation (copytruncate): take over copies of the old content lying beside the file
        (inside the globs) at the old offset, then read the file from 0. Both in one step after
        the search, so no snapshot has the reset without the copies (a restart would send the
        copies' lines again)."""
        copies: list[tuple[PathStatus, FramerState]] = []
        if self.framer.position > 0:
            lineage = self.lineage()
            known = self.host.settled_identities()
            copies = await self._io(find_copies, list(self.names), lineage, known)
            self.host.adopt_copies(self, copies)
        self._restart_at_zero(why, size, copies)

    def _restart_at_zero(
        self, why: str, size: int, copies: list[tuple[PathStatus, FramerState]]
    ) -> None:
        """The old partial line is gone; read the new content from 0. Count what was lost.
        The open event (whole lines, read) goes out first, unless a copy is read from its start."""
        self.end_ahead()  # it reads the old content
        if not copies:
            self.end_event()
        position = self.framer.position
        if position > 0:
            self.host.truncated(self, self.lineage())
        lost = self._lost_bytes(copies)
        if copies and lost == 0:  # copytruncate as it should go: the copy holds what was unread
            self.log.info(
                f"{why}; its copy holds what was not read yet; reading the file from the start",
                old_offset=position, size=size, copies=[status.path for status, _ in copies],
            )  # fmt: skip
        elif copies:
            self.log.warning(
                f"{why}; bytes seen in the file but neither read nor in its copy are lost",
                old_offset=position, size=size, possibly_lost_bytes=lost,
            )  # fmt: skip
        else:
            self.log.warning(
                f"{why}; reading it again from the start; no copy of the old content was "
                "found, so what was written after the last read is unknown (possibly lost)",
                old_offset=position, size=size, possibly_lost_bytes="unknown",
                lost_bytes_known=lost,
            )  # fmt: skip
        self.host.count(lost=lost, unmeasured=0 if copies else 1)
        self.framer = make_framer(self.settings.max_line_bytes, self.settings.multiline)
        self.head = self.sample = b""
        self.size = 0  # the next read's status says (`size` may predate the truncation)
        self.seed = None
        self._checkpoint = None

    def _lost_bytes(self, copies: list[tuple[PathStatus, FramerState]]) -> int:
        """Bytes the file was seen to hold past what became lines, less what a copy holds from
        where it is read.

        Without a copy, this is a lower bound: what a writer appended after the last read and
        before the truncation was never seen. With one, it is what the daemon could know: only
        what was written between the copy and the truncation and never seen is beyond it (copy
        and truncation are a few system calls apart in logrotate).
        """
        delivered = self.framer.state.offset
        seen = max(self.size, self.framer.position)
        covered = max(
            (
                max(min(seen, status.size) - max(delivered, start.offset), 0)
                for status, start in copies
            ),
            default=0,
        )
        return max(seen - delivered - covered, 0)

    # -- ending

    def finish(self, reason: str) -> None:
        """The file will not grow any more: emit its partial last line, close it, forget it."""
        blocks = self.framer.flush()
        self._checkpoint = None
        if blocks:
            self.host.deliver(self, blocks)
        self.close_fd()
        self._cancel_timeout()
        self.done = True
        self.settled.set()
        self.ended.set()
        self.wake.set()  # finished outside its task (`read_now`): the task must see it and end
        self.host.finished(self)
        self.log.info("finished file", reason=reason, offset=self.framer.position, lines=self.lines)

    def _fail(self, error: BaseException) -> None:
        text = (error.strerror if isinstance(error, OSError) else None) or str(error) or repr(error)
        if self.state != "error":
            self.log.warning("cannot read file; will retry", error=text)
            self.host.count(read_errors=1)
        self.state, self.error = "error", text
        self.host.state_changed(self)
        self.close_fd()
        self.settled.set()  # a file we cannot read must not hold up the next one at its path

    def close_fd(self) -> None:
        self.end_ahead()  # it reads through the same open file
        if self.fd is not None:
            fd, self.fd = self.fd, None
            self.descriptors.count -= 1
            os.close(fd)
