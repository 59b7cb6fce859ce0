"""Which paths may have changed: inotify read on the event loop, polling where inotify cannot see.

Decisions, and what they replaced:

- Watch directories, not files. A log file is replaced under its name (rotation), created after
  start, or appears in a new `**` subdirectory; a watch on the file's inode sees none of that, and
  one watch per file would spend the inotify budget that directories need. So the static root of
  each glob is watched (recursively when the glob has wildcards in a directory part), and a root
  that does not exist yet is waited for at its nearest existing ancestor (`discovery.PathIndex`).
- inotify is read on the event loop (`loop.add_reader`), not through watchdog's observer
  (`inotify.py` says why and how); polling stays watchdog's observer, on its thread.
- Content and structure are told apart. A file written to (IN_MODIFY, IN_CLOSE_WRITE) is
  `grown`: its reader reads, nothing else happens. Created, deleted, renamed, attribute changes
  are `moved`: what the path holds may have changed, so the consumer looks again. Appends are
  nearly every event on a busy host, and they cost no stat, no probe, no discovery.
- Coalescing. While events keep coming, the reader stays away from the inotify queue for
  `min_interval` after each read: the kernel folds identical unread events into one, so a file
  appended to 2,000 times a second costs at most 1/`min_interval` wake-ups, not 2,000, and the
  first change after a quiet spell is still read at once. The interval is the consumer's
  latency budget (`set_min_interval`; the daemon's choice is `service.read_hold`): 2 ms when a
  report publishes every record (write → published report p99 about 7 ms, 9 ms with 4 ms);
  25 ms otherwise, where a record waits for its report's rotation anyway. Measured at 2,000
  lines/s, one line a write: 2 ms cost 25% more CPU than 4 ms, and 25 ms half of 4 ms.
  The gate is a one-shot epoll set (`LoopInotify.gate`), not asyncio's remove/add_reader.
  Polled roots report from watchdog's thread into a pending set (a set, not a
  queue: memory bounded by distinct paths) that one delivery on the loop swaps out.
- The events watched leave out opens, reads and closes without writing (IN_OPEN, IN_ACCESS,
  IN_CLOSE_NOWRITE): the tailer's own reads of a file would otherwise wake the loop again.
- Polling as a fallback. inotify sees nothing on NFS or CIFS, so `kind="polling"` exists for them.
  And when the kernel refuses more watches or instances (ENOSPC: `fs.inotify.max_user_watches`;
  EMFILE: `fs.inotify.max_user_instances`), the remaining roots are polled: the daemon logs one
  warning and keeps going, rather than dying or watching silently less. Polling lstat()s
  (PollingObserverVFS), because PollingObserver's stat() walks symlink loops.
- Queue overflow (IN_Q_OVERFLOW) asks the consumer to rediscover at once and rebuilds the
  recursive watches. The consumer's periodic rescan stays the safety net for what no watch can
  see: NFS, and changes reached through symlinks (a followed link's target elsewhere, a symlinked
  directory inside a recursive root), which are not watched, to keep loops out.
- Roots are watched by their real path and events are reported by the configured one: with
  IN_DONT_FOLLOW, a watch on a symlinked root (`/var/log -> /data/log`) would watch the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers.api import ObservedWatch
from watchdog.observers.polling import PollingObserverVFS

from logwarden.discovery import PathIndex, is_below
from logwarden.inotify import INOTIFY_LIMITS, DirWatches, LoopInotify
from logwarden.log import get_logger

__all__ = ["Changes", "OnChange", "PathIndex", "WatchKind", "Watcher"]

log = get_logger(__name__)

WatchKind = Literal["inotify", "polling"]

# what the polling observer reports; directory events only trigger rediscovery
_POLLED_EVENTS: list[type[FileSystemEvent]] = [
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
_STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed since the last delivery (absolute paths, as configured)."""

    grown: frozenset[str]  # written to: their readers should read
    moved: frozenset[str]  # created, deleted, renamed, attributes: what the path holds may differ
    rediscover: bool  # a directory came, went or moved, or events were lost: walk the globs again

    @property
    def paths(self) -> frozenset[str]:
        return self.grown | self.moved


OnChange = Callable[[Changes], None]


# ---------------------------------------------------------------- polling


class _PolledHandler(FileSystemEventHandler):
    """Turns one polled root's events (on watchdog's thread) into paths, as configured."""

    def __init__(self, watcher: Watcher, real: str, shown: str) -> None:
        self._watcher = watcher
        self._real = real
        self._shown = shown

    def _path(self, raw: bytes | str) -> str:
        path = os.fsdecode(raw)
        if self._real != self._shown and is_below(path, self._real):
            return self._shown + path[len(self._real) :]
        return path

    def dispatch(self, event: FileSystemEvent) -> None:
        # dispatch, not on_<kind>: one call per event on watchdog's thread, kept short
        if event.is_directory:
            if isinstance(event, DirCreatedEvent | DirDeletedEvent | DirMovedEvent):
                self._watcher.add_pending((), (), rediscover=True)
            return  # a directory's own modified/attrib events say nothing about files
        if isinstance(event, FileModifiedEvent | FileClosedEvent):
            self._watcher.add_pending((self._path(event.src_path),), (), rediscover=False)
        elif isinstance(event, FileSystemMovedEvent):
            moved = [self._path(p) for p in (event.src_path, event.dest_path) if p]
            self._watcher.add_pending((), moved, rediscover=False)
        else:
            self._watcher.add_pending((), (self._path(event.src_path),), rediscover=False)


@dataclass(slots=True)
class _Scheduled:
    path: str  # as configured (what events are reported under)
    recursive: bool
    real: str  # what is watched
    identity: tuple[int, int]  # (st_dev, st_ino) of the directory when scheduled
    inotify: DirWatches | None  # one of these two
    polled: ObservedWatch | None


# ---------------------------------------------------------------- the watcher


class Watcher:
    """Watches the index's roots and tells `on_change`, on the loop's thread, what changed.

    Directory changes also make the Watcher refresh its watches before telling the consumer, so
    a new watch is in place before the consumer walks the directories.
    """

    def __init__(
        self,
        index: PathIndex,
        kind: WatchKind,
        on_change: OnChange,
        *,
        poll_interval: float = 1.0,
        min_interval: float = 0.004,
    ) -> None:
        self._index = index
        self._kind = kind
        self._on_change = on_change
        self._poll_interval = poll_interval
        self._min_interval = min_interval

        # written from the loop and from watchdog's polling thread: under `_lock`
        self._lock = threading.Lock()
        self._grown: set[str] = set()
        self._moved: set[str] = set()
        self._rediscover = False
        self._wake_scheduled = False
        self._limit_hits: list[tuple[str, int]] = []
        self._refresh_again = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # the loop's alone
        self._loop_thread: int | None = None
        self._last_delivery = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._in_reader = False  # `_readable` is handling events: it delivers at the end
        self._opened_at = float("-inf")  # when the inotify gate was last opened
        self._reader_broken = False

        # the loop's (or one refresh thread's), under `_schedule_lock`
        self._schedule_lock = threading.Lock()
        self._inotify: LoopInotify | None = None
        self._polling: PollingObserverVFS | None = None
        self._inotify_exhausted = False  # a limit was hit: new roots are polled
        self._watches: dict[str, _Scheduled] = {}
        self._unwatchable: set[str] = set()  # warned about once, until a watch succeeds
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Watch every root of the index; changes are delivered on the running loop."""
        if self._closed or self._loop is not None:
            raise RuntimeError("a Watcher is started once")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._kind == "inotify":
            self._start_inotify()
        try:
            await self.refresh()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop watching; watchdog's polling thread, if any, is waited for a few seconds at most."""
        with self._schedule_lock:
            self._closed = True
            inotify, polling = self._inotify, self._polling
            self._inotify = self._polling = None
            self._watches.clear()
        for timer in (self._resume, self._timer):
            if timer is not None:
                timer.cancel()
        self._resume = self._timer = None
        if inotify is not None:
            self._stop_reading(inotify)
        with self._lock:
            self._loop = None
            self._grown.clear()
            self._moved.clear()
        if polling is None:
            return
        # observer.stop() joins each emitter without a timeout, and a poll stuck on a dead NFS
        # server would hang it: so it runs on a daemon thread of its own, waited for with a bound
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def stop_polling() -> None:
            try:
                polling.stop()
                if polling.is_alive():
                    polling.join(_STOP_TIMEOUT_S)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone; nobody is waiting
                    loop.call_soon_threadsafe(_set_done, done)

        stopper = threading.Thread(target=stop_polling, name="logwarden-watch-stop", daemon=True)
        stopper.start()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S + 1):
                await asyncio.shield(done)
        except TimeoutError:
            log.warning("file watcher threads did not stop in time; leaving them behind")
        else:
            stopper.join(1.0)  # it has done its last act (waking us): returns at once

    def set_min_interval(self, seconds: float) -> None:
        """How long a busy queue is left alone after each read (see the module doc); a reload
        may change it, and it applies from the next read on."""
        self._min_interval = seconds

    async def refresh(self) -> None:
        """Match the watches to the index's roots again (after a rescan, or a reload). Adding
        watches walks recursive roots (and polling takes a first snapshot): in a thread."""
        await asyncio.to_thread(self._refresh)

    async def reconfigure(self, index: PathIndex) -> None:
        """A reload: watch the new index's roots."""
        with self._schedule_lock:
            self._index = index
        await self.refresh()

    def _refresh(self) -> None:
        with self._schedule_lock:
            self._refresh_locked()

    def _refresh_soon(self) -> None:
        """Refresh now, or have the refresh already running (in a thread) go again."""
        if not self._schedule_lock.acquire(blocking=False):
            with self._lock:
                self._refresh_again = True
            return
        try:
            self._refresh_locked()
        finally:
            self._schedule_lock.release()

    def _refresh_locked(self) -> None:
        # a recursive watch that hit an inotify limit while being added is moved to polling and
        # the roots evaluated again; bounded, since after a limit every new watch is a poll
        for _ in range(3):
            with self._lock:
                self._refresh_again = False
            if self._closed or self._loop is None:
                return
            self._revive_inotify()
            self._move_limited_roots()
            wanted = self._index.watch_roots()
            for path, scheduled in list(self._watches.items()):
                if wanted.get(path) != scheduled.recursive or not self._healthy(scheduled):
                    self._unschedule(scheduled)
            for path, recursive in wanted.items():
                if path not in self._watches:
                    self._schedule(path, recursive)
            with self._lock:
                if not self._limit_hits and not self._refresh_again:
                    return

    @property
    def watched(self) -> dict[str, tuple[bool, WatchKind]]:
        """What is watched now: {directory: (recursive, "inotify" or "polling")}."""
        with self._schedule_lock:
            return {
                path: (w.recursive, "inotify" if w.inotify is not None else "polling")
                for path, w in self._watches.items()
            }

    # ------------------------------------------------------------ (un)scheduling

    def _schedule(self, path: str, recursive: bool) -> None:
        real = os.path.realpath(path)
        try:
            status = os.stat(real)
        except OSError:
            return  # gone again since watch_roots(); the next refresh looks again
        identity = (status.st_dev, status.st_ino)
        inotify = self._inotify if not self._inotify_exhausted else None
        try:
            if inotify is not None:
                watches = DirWatches(inotify, self, real, path, recursive)
                try:
                    watches.add_all()
                except BaseException:
                    watches.remove_all()
                    raise
                scheduled = _Scheduled(path, recursive, real, identity, watches, None)
            else:
                handler = _PolledHandler(self, real, path)
                watch = self._polling_observer().schedule(
                    handler, real, recursive=recursive, event_filter=_POLLED_EVENTS
                )
                scheduled = _Scheduled(path, recursive, real, identity, None, watch)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone again: the same
        except OSError as error:
            if inotify is not None and error.errno in INOTIFY_LIMITS:
                self._inotify_limit_reached(error.errno, path)
                with self._lock:  # this root is polled now: no need to move it again
                    self._limit_hits.clear()
                self._schedule(path, recursive)
            elif path not in self._unwatchable:
                self._unwatchable.add(path)
                log.warning("cannot watch directory; retrying", path=path, error=str(error))
            return
        self._unwatchable.discard(path)
        self._watches[path] = scheduled
        log.debug("watching", path=path, recursive=recursive, real=real)

    def _unschedule(self, scheduled: _Scheduled) -> None:
        del self._watches[scheduled.path]
        if scheduled.inotify is not None:
            scheduled.inotify.remove_all()
        elif scheduled.polled is not None and self._polling is not None:
            with contextlib.suppress(KeyError):  # already gone with its emitter
                self._polling.unschedule(scheduled.polled)
        log.debug("stopped watching", path=scheduled.path)

    def _polling_observer(self) -> PollingObserverVFS:
        if self._polling is None:
            # PollingObserver's snapshots os.stat every entry and so walk into symlinked
            # directories with no loop check: `a -> .` and `b -> .` make a tree of 2**40 paths.
            # lstat sees the links themselves, as inotify's IN_DONT_FOLLOW does.
            self._polling = PollingObserverVFS(
                os.lstat, os.scandir, polling_interval=self._poll_interval
            )
            self._polling.name = "logwarden-polling"
            self._polling.start()
        return self._polling

    def _healthy(self, scheduled: _Scheduled) -> bool:
        """Whether the watch still watches the directory its path names now.

        A watch goes when its directory is deleted, and an inotify watch follows the inode when
        its directory is renamed, so a new directory under the old name would go unseen.
        """
        if scheduled.inotify is not None:
            if not scheduled.inotify.alive:
                return False
        elif self._polling is None or not any(
            emitter.watch == scheduled.polled
            and emitter.is_alive()
            and not emitter.stopped_event.is_set()
            for emitter in self._polling.emitters
        ):
            return False
        try:
            status = os.stat(scheduled.path)
        except OSError:
            return False
        same_inode = (status.st_dev, status.st_ino) == scheduled.identity
        return same_inode and os.path.realpath(scheduled.path) == scheduled.real

    def _start_inotify(self) -> None:
        if self._closed or self._loop is None:
            return  # stopped meanwhile (a revival racing with stop): nothing to read for
        try:
            inotify = LoopInotify(self)
        except OSError as error:
            self._inotify_unavailable(error)
            return
        assert self._loop is not None
        self._inotify = inotify
        self._reader_broken = False
        self._loop.add_reader(inotify.gate, self._readable)

    def _stop_reading(self, inotify: LoopInotify) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):  # loop closing
                self._loop.remove_reader(inotify.gate)
        with contextlib.suppress(OSError):
            inotify.close()

    def _revive_inotify(self) -> None:
        """Replace an inotify descriptor that failed, so that the daemon does not go deaf."""
        inotify = self._inotify
        if inotify is None or not self._reader_broken:
            return
        log.warning("the inotify reader stopped; starting a new one")
        for scheduled in list(self._watches.values()):
            if scheduled.inotify is not None:
                del self._watches[scheduled.path]  # scheduled again below, on the new one
        self._inotify = None
        loop = self._loop
        assert loop is not None
        # on the loop's thread: add_reader and remove_reader are not thread-safe
        if threading.get_ident() == self._loop_thread:
            self._stop_reading(inotify)
            self._start_inotify()
        else:
            done = threading.Event()

            def swap() -> None:
                try:
                    self._stop_reading(inotify)
                    self._start_inotify()
                finally:
                    done.set()

            loop.call_soon_threadsafe(swap)
            done.wait(_STOP_TIMEOUT_S)

    def _move_limited_roots(self) -> None:
        """Move roots whose (recursive) inotify watch hit a kernel limit to polling."""
        with self._lock:
            hits, self._limit_hits = self._limit_hits, []
        for failed, error_number in hits:
            self._inotify_limit_reached(error_number, failed)
            for scheduled in list(self._watches.values()):
                if scheduled.inotify is None:
                    continue
                if failed == scheduled.real or (
                    scheduled.recursive and is_below(failed, scheduled.real)
                ):
                    self._unschedule(scheduled)

    def _inotify_limit_reached(self, error_number: int, path: str) -> None:
        if self._inotify_exhausted:
            return
        self._inotify_exhausted = True
        limit = INOTIFY_LIMITS[error_number]
        log.warning(
            f"inotify limit reached ({limit}); polling the remaining directories instead",
            path=path,
            limit=limit,
            hint=f"raise it with: sysctl -w {limit}=<more>",
        )

    def _inotify_unavailable(self, error: OSError) -> None:
        self._inotify_exhausted = True
        if error.errno in INOTIFY_LIMITS:
            limit = INOTIFY_LIMITS[error.errno]
            message = f"inotify limit reached ({limit}); polling every directory instead"
            log.warning(message, limit=limit, hint=f"raise it with: sysctl -w {limit}=<more>")
        else:
            log.warning("inotify is not available; polling instead", error=str(error))

    # ------------------------------------------------------------ reading inotify (the loop)

    def _readable(self) -> None:
        """The inotify queue has events: read them and deliver. While events keep coming, step
        away from the queue for `min_interval`: the kernel folds repeated events meanwhile. After
        a quiet spell the gate is opened again at once, so a lone event costs one wake-up, not a
        second one for a timer."""
        inotify, loop = self._inotify, self._loop
        if inotify is None or loop is None:
            return
        # busy: this event came within an interval of the gate's last opening (at the end of a
        # hold, it was waiting already); then the gate stays shut for the next interval
        busy = loop.time() - self._opened_at < self._min_interval
        try:
            inotify.take()
            events = inotify.read_now()
        except OSError:
            log.exception("reading inotify failed; rediscovering, and replacing the reader")
            self._reader_broken = True
            self.add_pending((), (), rediscover=True)
            return
        if busy:  # `_resume_reading` comes back to the queue when the interval is over
            self._resume = loop.call_later(self._min_interval, self._resume_reading, inotify)
        else:
            self._resume_reading(inotify)
        self._in_reader = True
        try:
            for event in events:
                try:
                    inotify.handle_event(event)
                except Exception:
                    log.exception("handling an inotify event failed", inotify_event=repr(event))
                    self.add_pending((), (), rediscover=True)
        finally:
            self._in_reader = False
        if self._wake_scheduled:
            self._deliver()

    def _resume_reading(self, inotify: LoopInotify) -> None:
        self._resume = None
        if inotify is self._inotify and not self._closed and self._loop is not None:
            self._opened_at = self._loop.time()
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile: nothing to read
                inotify.rearm()

    # ------------------------------------------------------------ pending changes

    def add_pending(self, grown: Iterable[str], moved: Iterable[str], *, rediscover: bool) -> None:
        """From any thread: note changes; the first note since the last delivery schedules the
        next one (on the loop: after every event read in this round has been noted)."""
        with self._lock:
            self._grown.update(grown)
            self._moved.update(moved)
            self._rediscover = self._rediscover or rediscover
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
            loop = self._loop
        if loop is None:
            return  # stopped: nobody to tell
        # a closed loop raises; `_wake_scheduled` then stays set, so this is not tried again
        with contextlib.suppress(RuntimeError):
            if threading.get_ident() != self._loop_thread:
                loop.call_soon_threadsafe(self._deliver)
            elif not self._in_reader:  # the reader delivers when it has handled every event
                loop.call_soon(self._deliver)

    def limit_hit(self, path: str, error_number: int) -> None:
        with self._lock:
            self._limit_hits.append((path, error_number))
        self.add_pending((), (), rediscover=True)

    def _deliver(self) -> None:
        if self._closed or self._loop is None:
            return
        # At most one delivery per `min_interval`. The inotify reader spaces itself already
        # (a little early is fine); this holds back a flood from the polling thread, which adds
        # to the pending set meanwhile without waking the loop (`_wake_scheduled` stays set).
        now = self._loop.time()
        wait = self._last_delivery + self._min_interval / 2 - now
        if wait > 0:
            if self._timer is None:
                self._timer = self._loop.call_later(wait, self._deliver)
            return
        self._timer = None
        self._last_delivery = now
        with self._lock:
            grown, self._grown = self._grown, set()
            moved, self._moved = self._moved, set()
            rediscover, self._rediscover = self._rediscover, False
            self._wake_scheduled = False
        if not (grown or moved or rediscover):
            return
        if rediscover:
            try:
                self._refresh_soon()
            except Exception:  # a failed refresh must not cost the consumer its delivery
                log.exception("re-evaluating watched directories failed")
        try:
            self._on_change(Changes(frozenset(grown - moved), frozenset(moved), rediscover))
        except Exception:
            log.exception("file change consumer failed", paths=len(grown) + len(moved))


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
