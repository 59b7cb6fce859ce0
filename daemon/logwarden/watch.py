"""Which files exist and which may have changed: glob discovery, and watchdog events for asyncio.

Decisions, and what they replaced:

- Watch directories, not files. A log file is replaced under its name (rotation), created after
  start, or appears in a new `**` subdirectory; a watch on the file's inode sees none of that, and
  one watch per file would spend the inotify budget that directories need. So the static root of
  each glob is watched (recursively when the glob has wildcards in a directory part), and a root
  that does not exist yet is waited for at its nearest existing ancestor.
- A pending set, not a queue. watchdog calls handlers on its own thread; each event adds its path
  to a set under a lock, and only the add that makes the set non-empty wakes the loop
  (`call_soon_threadsafe`). One delivery then swaps the set out. A file appended to 100,000 times a
  second costs one wake-up per delivery instead of one per event, memory is bounded by the number
  of distinct paths, and the consumer learns *that* a path may have changed, which is all it needs:
  it reads the file to its end anyway. A queue of events would grow without bound while the loop
  is busy and make the consumer replay every event. Nothing is filtered by source here, so a
  tracked file moved or deleted out of its glob is still reported.
- At most one delivery per `min_interval` (2 ms, well within a 10 ms publish-latency budget).
  The first change after a quiet spell is delivered at once; under a flood of distinct events
  a free loop would otherwise be woken for nearly every one (measured: 3,000 wake-ups for
  100,000 events), and each wake-up costs the consumer a round of reads.
- The events watched leave out opens, reads and closes without writing (IN_OPEN, IN_ACCESS,
  IN_CLOSE_NOWRITE): the tailer's own reads of a file would otherwise wake the loop again.
- Polling as a fallback. inotify sees nothing on NFS or CIFS, so `kind="polling"` exists for them.
  And when the kernel refuses more watches or instances (ENOSPC: `fs.inotify.max_user_watches`;
  EMFILE: `fs.inotify.max_user_instances`), the remaining roots are polled: the daemon logs one
  warning and keeps going, rather than dying or watching silently less. watchdog swallows the
  error for a subdirectory of a recursive watch, so a hook on `InotifyFD.add_callback` notices it.
  Polling lstat()s (PollingObserverVFS), because PollingObserver's stat() walks symlink loops.
- Queue overflow. watchdog 7 reads IN_Q_OVERFLOW (wd == -1) and rebuilds its recursive watches,
  but tells no handler. `InotifyFD.handle_event` is hooked to deliver `rediscover=True`, so the
  consumer reconciles at once. The consumer's periodic rescan stays the safety net for what no
  watch can see: NFS, and changes reached through symlinks (a followed link's target elsewhere,
  a symlinked directory inside a recursive root), which are not watched, to keep loops out.
- Roots are watched by their real path and events are reported by the configured one: with
  IN_DONT_FOLLOW, a watch on a symlinked root (`/var/log -> /data/log`) would watch the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)
from watchdog.observers.polling import PollingObserverVFS

from logwarden.config import SourceConfig
from logwarden.globs import PathMatcher, first_matching, spans_subdirectories, static_root
from logwarden.log import get_logger

WatchKind = Literal["inotify", "polling"]
OnChange = Callable[[set[str], bool], None]

# the sysctl an operator raises for each inotify error, named in the one warning
_INOTIFY_LIMITS = {
    errno.ENOSPC: "fs.inotify.max_user_watches",
    errno.EMFILE: "fs.inotify.max_user_instances",
}
# Everything that can mean "a file's content or name changed". Directory events are here only to
# trigger rediscovery. Opens, reads and close-without-write are left out (see the module doc).
_EVENTS: list[type[FileSystemEvent]] = [
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


class WatchLog(Protocol):
    """The part of a structlog logger this module uses."""

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...
    def exception(self, event: str, *args: Any, **kw: Any) -> Any: ...


# ---------------------------------------------------------------- discovery


class PathIndex:
    """Which source a path belongs to, which files exist now, and which directories to watch."""

    def __init__(self, sources: Mapping[str, SourceConfig], *, log: WatchLog | None = None) -> None:
        self.sources = dict(sources)
        self._log: WatchLog = log if log is not None else get_logger("logwarden.watch")
        self._matchers = [
            (name, PathMatcher(source.paths, source.exclude)) for name, source in sources.items()
        ]
        self._follows = {name for name, source in sources.items() if source.follow_symlinks}
        self._patterns = [pattern for source in sources.values() for pattern in source.paths]
        self._unreadable: set[str] = set()  # directories already warned about
        self._unreadable_lock = threading.Lock()

    def source_of(self, path: str) -> str | None:
        """The first source (in config order) whose globs match `path` and excludes do not."""
        return first_matching(path, self._matchers)

    def _may_contain(self, directory: str, *, via_symlink: bool) -> bool:
        return any(
            matcher.may_contain(directory)
            for name, matcher in self._matchers
            if not via_symlink or name in self._follows
        )

    def discover(self) -> dict[str, str]:
        """Every existing regular file that a source covers now, as {absolute path: source}.

        Blocking: run it in a thread. Only directories that can hold a match are listed. FIFOs,
        sockets and devices are recognised from their directory entry and never opened. A symlink
        (to a file, or to a directory on the way) counts only for a source with follow_symlinks;
        the link's path is reported. The literal directories of a glob are followed as written.
        """
        found: dict[str, str] = {}
        listed: set[str] = set()
        roots = sorted({os.path.abspath(static_root(p)) for p in self._patterns})
        for root in roots:
            self._walk(root, found, listed)
        return found

    def _walk(self, root: str, found: dict[str, str], listed: set[str]) -> None:
        # (directory, reached through a symlinked directory?, (dev, inode) of its ancestors)
        stack: list[tuple[str, bool, frozenset[tuple[int, int]]]] = [(root, False, frozenset())]
        while stack:
            directory, via_symlink, ancestors = stack.pop()
            if directory in listed:
                continue
            listed.add(directory)
            try:
                status = os.stat(directory)
                identity = (status.st_dev, status.st_ino)
                if identity in ancestors:  # a symlink (or bind mount) loop
                    continue
                with os.scandir(directory) as listing:
                    entries = list(listing)
            except (FileNotFoundError, NotADirectoryError):
                continue  # a root not created yet, or a directory removed while walking
            except OSError as error:
                self._warn_unreadable(directory, error)
                continue
            self._readable(directory)
            below = ancestors | {identity}
            for entry in entries:
                self._visit(entry, via_symlink, below, found, stack)

    def _visit(
        self,
        entry: os.DirEntry[str],
        via_symlink: bool,
        ancestors: frozenset[tuple[int, int]],
        found: dict[str, str],
        stack: list[tuple[str, bool, frozenset[tuple[int, int]]]],
    ) -> None:
        path = entry.path
        try:
            if entry.is_dir(follow_symlinks=False):
                if self._may_contain(path, via_symlink=via_symlink):
                    stack.append((path, via_symlink, ancestors))
            elif entry.is_file(follow_symlinks=False):
                source = self.source_of(path)
                if source is not None and (not via_symlink or source in self._follows):
                    found[path] = source
            elif entry.is_symlink() and self._follows:
                target = os.stat(path)
                if stat.S_ISREG(target.st_mode):
                    source = self.source_of(path)
                    if source in self._follows:
                        found[path] = source
                elif stat.S_ISDIR(target.st_mode) and self._may_contain(path, via_symlink=True):
                    stack.append((path, True, ancestors))
            # anything else (FIFO, socket, device) is skipped without being opened
        except OSError:
            pass  # vanished, a dangling or looping symlink: nothing to tail

    def _warn_unreadable(self, directory: str, error: OSError) -> None:
        with self._unreadable_lock:
            if directory in self._unreadable:
                return
            self._unreadable.add(directory)
        self._log.warning(
            "cannot list directory; its files are skipped until it can be read",
            path=directory,
            error=str(error),
        )

    def _readable(self, directory: str) -> None:
        if self._unreadable:  # unlocked peek: the common case costs nothing
            with self._unreadable_lock:
                self._unreadable.discard(directory)

    def watch_roots(self) -> dict[str, bool]:
        """The directories to watch, each mapped to whether its subdirectories need watching too.

        Each glob's static root, or the nearest existing ancestor of a root not created yet
        (watched recursively, so that `mkdir -p` and a first file are seen; except `/`, which
        would mean watching the whole file system). Roots inside a recursive root are dropped.
        """
        wanted: dict[str, bool] = {}
        for pattern in self._patterns:
            root = os.path.abspath(static_root(pattern))
            recursive = spans_subdirectories(pattern)
            while not os.path.isdir(root):
                root = os.path.dirname(root)
                recursive = root != "/"
            wanted[root] = wanted.get(root, False) or recursive
        # a root inside a recursive one needs no watch of its own, unless it is only reached
        # through a symlink, which a recursive watch does not follow
        real = {root: os.path.realpath(root) for root in wanted}
        return {
            root: recursive
            for root, recursive in sorted(wanted.items())
            if not any(
                outer != root and _is_below(root, outer) and _is_below(real[root], real[outer])
                for outer, outer_recursive in wanted.items()
                if outer_recursive
            )
        }


def _is_below(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or inside it (both normalised absolute paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# ---------------------------------------------------------------- watching


class _InotifyFD(InotifyFD):
    """watchdog's inotify reader, telling the Watcher what it otherwise only logs or swallows."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__()
        self.name = "logwarden-inotify-reader"
        self._watcher = watcher

    def handle_event(self, event: InotifyEvent) -> None:
        try:
            if event.is_queue_overflow:
                self._watcher._touch((), rediscover=True)
            super().handle_event(event)
        except Exception:
            # an exception here would end the reader thread, and every watch with it
            self._watcher._reader_failed(event)

    def add_callback(
        self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId
    ) -> WatchDescriptor:
        # watchdog's own add_callback, minus its RuntimeWarning for a callback registered twice:
        # that happens whenever `mkdir -p a/b` is seen (a's creation already added a/b), is
        # harmless, and its message (a unique repr each time) would flood the log
        try:
            with self._lock:
                watch = self._get_or_create_watch(path, mask)
                watch.callbacks[id_] = callback
                return watch.wd
        except OSError as error:
            # raised for a root, but swallowed by watchdog for a subdirectory of a recursive watch
            if error.errno in _INOTIFY_LIMITS:
                self._watcher._limit_hit(os.fsdecode(path), error.errno)
            raise


class _InotifyObserver(BaseObserver):
    """watchdog's InotifyObserver, on an `_InotifyFD` of our own."""

    def __init__(self, inotify_fd: _InotifyFD) -> None:
        self.inotify_fd = inotify_fd
        super().__init__(InotifyEmitter, inotify_fd=inotify_fd)
        self.name = "logwarden-inotify"

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self.inotify_fd.stop()
        if self.inotify_fd.is_alive():
            self.inotify_fd.join(_STOP_TIMEOUT_S)


class _Handler(FileSystemEventHandler):
    """Turns one watch's events into paths (under the root's configured name) for the Watcher."""

    def __init__(self, watcher: Watcher, real: str, shown: str) -> None:
        self._watcher = watcher
        self._real = real
        self._shown = shown

    def _path(self, raw: bytes | str) -> str:
        path = os.fsdecode(raw)
        if self._real != self._shown and _is_below(path, self._real):
            return self._shown + path[len(self._real) :]
        return path

    def dispatch(self, event: FileSystemEvent) -> None:
        # dispatch, not on_<kind>: one call per event on watchdog's thread, kept short
        if event.is_directory:
            if isinstance(event, DirCreatedEvent | DirDeletedEvent | DirMovedEvent):
                self._watcher._touch((), rediscover=True)
            return  # a directory's own modified/attrib events say nothing about files
        if isinstance(event, FileSystemMovedEvent):
            paths = [self._path(p) for p in (event.src_path, event.dest_path) if p]
            self._watcher._touch(paths, rediscover=False)
        else:
            self._watcher._touch_one(self._path(event.src_path))


@dataclass(slots=True)
class _Scheduled:
    path: str  # as configured (what events are reported under)
    recursive: bool
    real: str  # what the observer watches
    identity: tuple[int, int]  # (st_dev, st_ino) of the directory when scheduled
    observer: BaseObserver
    watch: ObservedWatch


class Watcher:
    """Watches the index's roots and tells `on_change`, on the loop's thread, which paths moved.

    `on_change(paths, rediscover)`: the absolute file paths touched since the last call (written,
    created, deleted, moved from or to, closed after writing); `rediscover` when a directory came,
    went or moved under a watch, or events may have been lost, so globs must be evaluated again.
    Directory changes also make the Watcher `refresh()` itself before telling the consumer, so a
    new watch is in place before the consumer walks the directories.
    """

    def __init__(
        self,
        index: PathIndex,
        kind: WatchKind,
        on_change: OnChange,
        log: WatchLog,
        *,
        poll_interval: float = 1.0,
        min_interval: float = 0.002,
    ) -> None:
        self._index = index
        self._kind = kind
        self._on_change = on_change
        self._log = log
        self._poll_interval = poll_interval
        self._min_interval = min_interval

        # written by watchdog's threads, read by the loop's: all under `_lock`
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._rediscover = False
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # the loop's alone: when the last delivery went, and the timer of a held-back one
        self._last_delivery = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._limit_hits: list[tuple[str, int]] = []

        # the loop's (or one refresh's) alone, under `_schedule_lock`
        self._schedule_lock = threading.Lock()
        self._inotify: _InotifyObserver | None = None
        self._polling: PollingObserverVFS | None = None
        self._inotify_exhausted = False  # a limit was hit: new roots are polled
        self._watches: dict[str, _Scheduled] = {}
        self._unwatchable: set[str] = set()  # warned about once, until a watch succeeds
        self._refresh_again = False
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Watch every root of the index; changes are delivered on the running loop."""
        if self._closed or self._loop is not None:
            raise RuntimeError("a Watcher is started once")
        with self._lock:
            self._loop = asyncio.get_running_loop()
        if self._kind == "inotify":
            self._start_inotify()
        # adding watches walks recursive roots (and polling takes a first snapshot): not on the loop
        try:
            await asyncio.to_thread(self.refresh)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop watching and join watchdog's threads, waiting at most a few seconds."""
        with self._schedule_lock:
            self._closed = True
            observers = [obs for obs in (self._inotify, self._polling) if obs is not None]
            self._inotify = self._polling = None
            self._watches.clear()
        with self._lock:
            self._loop = None
            self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not observers:
            return
        # observer.stop() joins each emitter without a timeout, and a poll stuck on a dead NFS
        # server would hang it: so it runs on a daemon thread of its own that is waited for with a
        # bound (not in the default executor, which asyncio.run would wait for at exit)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def stop_all() -> None:
            try:
                for observer in observers:
                    observer.stop()
                for observer in observers:
                    if observer.is_alive():
                        observer.join(_STOP_TIMEOUT_S)
            finally:
                with contextlib.suppress(RuntimeError):  # the loop is gone; nobody is waiting
                    loop.call_soon_threadsafe(_set_done, done)

        stopper = threading.Thread(target=stop_all, name="logwarden-watch-stop", daemon=True)
        stopper.start()
        try:
            await asyncio.wait_for(asyncio.shield(done), _STOP_TIMEOUT_S + 1)
        except TimeoutError:
            self._log.warning("file watcher threads did not stop in time; leaving them behind")
        else:
            stopper.join(1.0)  # it has done its last act (waking us): returns at once

    def refresh(self, index: PathIndex | None = None) -> None:
        """Match the watches to the index's roots again (after a directory appeared, on reload).

        With `index`, adopt it first (a reload with new sources). Blocking while new watches are
        added; safe from any thread.
        """
        with self._schedule_lock:
            if index is not None:
                self._index = index
            self._refresh_locked()

    def _refresh_soon(self) -> None:
        """Refresh now, or have the refresh already running (`start`'s, in a thread) go again."""
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
    def index(self) -> PathIndex:
        """The index whose roots are watched; set a new one on reload, then `refresh()`."""
        return self._index

    @index.setter
    def index(self, index: PathIndex) -> None:
        with self._schedule_lock:
            self._index = index

    @property
    def watched(self) -> dict[str, tuple[bool, WatchKind]]:
        """What is watched now: {directory: (recursive, "inotify" or "polling")}."""
        with self._schedule_lock:
            return {
                path: (w.recursive, "inotify" if w.observer is self._inotify else "polling")
                for path, w in self._watches.items()
            }

    # ------------------------------------------------------------ (un)scheduling

    def _schedule(self, path: str, recursive: bool) -> None:
        real = os.path.realpath(path)
        try:
            status = os.stat(real)
        except OSError:
            return  # gone again since watch_roots(); the next refresh looks again
        handler = _Handler(self, real, path)
        observer = self._observer_for_new_root()
        try:
            watch = observer.schedule(handler, real, recursive=recursive, event_filter=_EVENTS)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone again: the same
        except OSError as error:
            if observer is self._inotify and error.errno in _INOTIFY_LIMITS:
                self._inotify_limit_reached(error.errno, path)
                self._schedule(path, recursive)  # on the polling observer now
            elif path not in self._unwatchable:
                self._unwatchable.add(path)
                self._log.warning("cannot watch directory; retrying", path=path, error=str(error))
            return
        self._unwatchable.discard(path)
        self._watches[path] = _Scheduled(
            path, recursive, real, (status.st_dev, status.st_ino), observer, watch
        )
        self._log.debug("watching", path=path, recursive=recursive, real=real)

    def _unschedule(self, scheduled: _Scheduled) -> None:
        del self._watches[scheduled.path]
        with contextlib.suppress(KeyError):  # already gone with its emitter
            scheduled.observer.unschedule(scheduled.watch)
        self._log.debug("stopped watching", path=scheduled.path)

    def _observer_for_new_root(self) -> BaseObserver:
        if self._inotify is not None and not self._inotify_exhausted:
            return self._inotify
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

        A watch's emitter stops when its directory is deleted, and an inotify watch follows the
        inode when its directory is renamed, so a new directory under the old name goes unseen.
        """
        alive = any(
            emitter.watch == scheduled.watch
            and emitter.is_alive()
            and not emitter.stopped_event.is_set()
            for emitter in scheduled.observer.emitters
        )
        if not alive:
            return False
        try:
            status = os.stat(scheduled.path)
        except OSError:
            return False
        same_inode = (status.st_dev, status.st_ino) == scheduled.identity
        return same_inode and os.path.realpath(scheduled.path) == scheduled.real

    def _start_inotify(self) -> None:
        try:
            inotify_fd = _InotifyFD(self)
        except OSError as error:
            self._inotify_unavailable(error)
            return
        inotify_fd.start()
        self._inotify = _InotifyObserver(inotify_fd)
        self._inotify.start()

    def _revive_inotify(self) -> None:
        """Replace inotify threads that died, so that the daemon does not go deaf for good."""
        observer = self._inotify
        if observer is None or (observer.is_alive() and observer.inotify_fd.is_alive()):
            return
        self._log.warning("the inotify reader stopped; starting a new one")
        for scheduled in list(self._watches.values()):
            if scheduled.observer is observer:
                del self._watches[scheduled.path]  # scheduled again below, on the new reader
        self._inotify = None
        observer.stop()
        if observer.is_alive():
            observer.join(_STOP_TIMEOUT_S)
        self._start_inotify()

    def _move_limited_roots(self) -> None:
        """Move roots whose (recursive) inotify watch hit a kernel limit to polling."""
        with self._lock:
            hits, self._limit_hits = self._limit_hits, []
        for failed, error_number in hits:
            self._inotify_limit_reached(error_number, failed)
            for scheduled in list(self._watches.values()):
                if scheduled.observer is not self._inotify:
                    continue
                if failed == scheduled.real or (
                    scheduled.recursive and _is_below(failed, scheduled.real)
                ):
                    self._unschedule(scheduled)

    def _inotify_limit_reached(self, error_number: int, path: str) -> None:
        if self._inotify_exhausted:
            return
        self._inotify_exhausted = True
        limit = _INOTIFY_LIMITS[error_number]
        self._log.warning(
            f"inotify limit reached ({limit}); polling the remaining directories instead",
            path=path,
            limit=limit,
            hint=f"raise it with: sysctl -w {limit}=<more>",
        )

    def _inotify_unavailable(self, error: OSError) -> None:
        self._inotify_exhausted = True
        if error.errno in _INOTIFY_LIMITS:
            limit = _INOTIFY_LIMITS[error.errno]
            message = f"inotify limit reached ({limit}); polling every directory instead"
            self._log.warning(message, limit=limit, hint=f"raise it with: sysctl -w {limit}=<more>")
        else:
            self._log.warning("inotify is not available; polling instead", error=str(error))

    # ------------------------------------------------------------ from watchdog's threads

    def _touch_one(self, path: str) -> None:
        """The hot path: one file event."""
        with self._lock:
            self._pending.add(path)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
            loop = self._loop
        self._wake(loop)

    def _touch(self, paths: Iterable[str], *, rediscover: bool) -> None:
        with self._lock:
            self._pending.update(paths)
            self._rediscover = self._rediscover or rediscover
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
            loop = self._loop
        self._wake(loop)

    def _wake(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None:
            return  # stopped: nobody to tell
        # a closed loop raises; `_wake_scheduled` then stays set, so this is not tried again
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver)

    def _reader_failed(self, event: InotifyEvent) -> None:
        self._log.exception("handling an inotify event failed", inotify_event=repr(event))
        self._touch((), rediscover=True)

    def _limit_hit(self, path: str, error_number: int) -> None:
        with self._lock:
            self._limit_hits.append((path, error_number))
        self._touch((), rediscover=True)

    # ------------------------------------------------------------ on the loop's thread

    def _deliver(self) -> None:
        if self._closed:
            return
        # At most one delivery per `min_interval`: the first after a quiet spell goes at once, and
        # under a flood the rest wait out the interval (`_wake_scheduled` stays set meanwhile, so
        # watchdog's threads add to the set without waking the loop).
        loop = asyncio.get_running_loop()
        wait = self._last_delivery + self._min_interval - loop.time()
        if wait > 0 and self._timer is None:
            self._timer = loop.call_later(wait, self._deliver)
            return
        self._timer = None
        self._last_delivery = loop.time()
        with self._lock:
            paths, self._pending = self._pending, set()
            rediscover, self._rediscover = self._rediscover, False
            self._wake_scheduled = False
        if not (paths or rediscover):
            return
        if rediscover:
            try:
                self._refresh_soon()
            except Exception:  # a failed refresh must not cost the consumer its delivery
                self._log.exception("re-evaluating watched directories failed")
        try:
            self._on_change(paths, rediscover)
        except Exception:
            self._log.exception("file change consumer failed", paths=len(paths))


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
