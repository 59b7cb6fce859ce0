"""inotify read on the event loop: watchdog's `InotifyFD` used as a library, and the watches
of one watched root.

An event used to cross three of watchdog's threads (its inotify reader, its emitter, its
dispatcher) before it reached the loop; a profile at 200 lines/s showed that chain, and the hops
around it, as most of the daemon's CPU. watchdog still does the inotify work that is easy to get
wrong (the ctypes calls, parsing the event buffer, watch bookkeeping, IN_IGNORED, IN_Q_OVERFLOW);
`LoopInotify` is never started as a thread, and the loop reads it when its gate says so. What
watchdog's `InotifyWatchGroup` did (one watch per directory of a recursive root, mapping a watch
descriptor back to its path) is `DirWatches` here, without its move pairing, which held a
rename's first half for 0.5 s and is not needed: the consumer learns that both paths changed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections.abc import Iterable
from typing import Protocol

from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)

from logwarden.discovery import is_below

# the sysctl an operator raises for each inotify error
INOTIFY_LIMITS = {
    errno.ENOSPC: "fs.inotify.max_user_watches",
    errno.EMFILE: "fs.inotify.max_user_instances",
}
_I = InotifyConstants
_CONTENT = _I.IN_MODIFY | _I.IN_CLOSE_WRITE
# no IN_OPEN, IN_ACCESS, IN_CLOSE_NOWRITE: see the module doc
_MASK = Mask(
    _CONTENT
    | _I.IN_ATTRIB
    | _I.IN_CREATE
    | _I.IN_DELETE
    | _I.IN_MOVED_FROM
    | _I.IN_MOVED_TO
    | _I.IN_DELETE_SELF
    | _I.IN_MOVE_SELF
    | _I.IN_DONT_FOLLOW
    | _I.IN_ONLYDIR
)
_GATE_EVENTS = select.EPOLLIN | select.EPOLLONESHOT
_READ_BYTES = 64 * 1024  # one read of the inotify queue: about 2,000 events


class ChangeSink(Protocol):
    """Where the watches report (the Watcher): changed paths, and kernel limits hit."""

    def add_pending(self, grown: Iterable[str], moved: Iterable[str], *, rediscover: bool) -> None:
        """Paths written to (`grown`), paths whose entry changed (`moved`), and whether the
        globs must be walked again."""

    def limit_hit(self, path: str, error_number: int) -> None:
        """Adding a watch for `path` hit an inotify limit (ENOSPC or EMFILE)."""


class LoopInotify(InotifyFD):
    """watchdog's inotify wrapper, used as a library: read on the loop, never run as a thread."""

    def __init__(self, sink: ChangeSink) -> None:
        super().__init__()
        self._sink = sink
        self._is_reading = False  # no thread reads it: close() releases the descriptor itself
        os.set_blocking(self._inotify_fd, False)
        # The loop watches this gate, not the inotify descriptor: an epoll set holding only the
        # inotify descriptor, one-shot, so it goes quiet once it reported events until `rearm`.
        # Stepping away from the queue that way is one epoll_ctl; asyncio's remove_reader and
        # add_reader cost a measured tenth of the live path's CPU.
        try:
            self._gate = select.epoll()
            self._gate.register(self._inotify_fd, _GATE_EVENTS)
        except BaseException:
            super()._close_resources()  # no descriptor left behind (EMFILE, say)
            raise

    @property
    def gate(self) -> int:
        """The descriptor the loop reads: readable when armed and inotify has events."""
        return self._gate.fileno()

    def take(self) -> None:
        """Consume the gate's report, which disarms it."""
        self._gate.poll(0)

    def rearm(self) -> None:
        self._gate.modify(self._inotify_fd, _GATE_EVENTS)

    def _close_resources(self) -> None:
        self._gate.close()
        super()._close_resources()

    def read_now(self) -> list[InotifyEvent]:
        """The events queued now (none when the queue is empty); never blocks."""
        try:
            buffer = os.read(self._inotify_fd, _READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return []
        return [
            InotifyEvent(wd, mask, cookie, name)
            for wd, mask, cookie, name in InotifyFD._parse_event_buffer(buffer)
            # the kernel reports IN_Q_OVERFLOW with wd -1; other events without a watch are stale
            if wd != -1 or mask & _I.IN_Q_OVERFLOW
        ]

    def add_callback(
        self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId
    ) -> WatchDescriptor:
        # watchdog's own add_callback, minus its RuntimeWarning for a callback registered twice
        # (a directory seen created while its parent was being walked): harmless, and its
        # message, a unique repr each time, would flood the log
        try:
            with self._lock:
                watch = self._get_or_create_watch(path, mask)
                watch.callbacks[id_] = callback
                return watch.wd
        except OSError as error:
            if error.errno in INOTIFY_LIMITS:
                self._sink.limit_hit(os.fsdecode(path), error.errno)
            raise


class DirWatches:
    """One watched root on inotify: a watch per directory (below it too, when recursive), and
    the translation of its events into changed paths. Implements watchdog's `WatchCallback`."""

    def __init__(
        self, inotify: LoopInotify, sink: ChangeSink, real: str, shown: str, recursive: bool
    ) -> None:
        self._inotify = inotify
        self._sink = sink
        self._real = real
        self._shown = shown
        self.recursive = recursive
        self._id = CallbackId(id(self))
        self._lock = threading.Lock()  # added to by a refresh thread, read by the loop
        self._paths: dict[WatchDescriptor, bytes] = {}  # watch → the real directory it watches
        self._root_wd: WatchDescriptor | None = None
        self.stale = False  # events were lost (overflow): rebuild on the next refresh

    def add_all(self) -> None:
        """Watch the root (raising if that fails) and, when recursive, every directory below."""
        root = os.fsencode(self._real)
        self._root_wd = self._add(root)
        if self.recursive:
            self._add_below(root)

    def _add(self, directory: bytes) -> WatchDescriptor:
        wd = self._inotify.add_callback(directory, _MASK, self, self._id)
        with self._lock:
            self._paths[wd] = directory
        return wd

    def _add_below(self, top: bytes) -> list[bytes]:
        """Watch every directory below `top`; return the files found on the way."""
        files: list[bytes] = []
        # symlinked directories are not walked into (os.walk's default): loops stay out
        for root, directories, names in os.walk(top):
            files += (os.path.join(root, name) for name in names)
            for name in directories:
                with contextlib.suppress(OSError):  # gone or unreadable since the listing
                    self._add(os.path.join(root, name))
        return files

    def _forget_below(self, moved: bytes) -> None:
        """A directory moved away: its watches (and its subdirectories') follow the inodes, so
        they would report the new place under the old names and pile up. Drop them; a move
        within the root is a create at the new name, watched again from there."""
        prefix = moved + b"/"
        with self._lock:
            gone = [
                wd for wd, path in self._paths.items() if path == moved or path.startswith(prefix)
            ]
            for wd in gone:
                del self._paths[wd]
        with contextlib.suppress(OSError, KeyError):
            self._inotify.remove_callbacks([(wd, self._id) for wd in gone])

    def remove_all(self) -> None:
        with self._lock:
            watches, self._paths = list(self._paths), {}
        with contextlib.suppress(OSError, KeyError):
            self._inotify.remove_callbacks([(wd, self._id) for wd in watches])

    @property
    def alive(self) -> bool:
        """Whether the root's own watch is still in place (it goes when the directory does)."""
        with self._lock:
            return not self.stale and self._root_wd in self._paths

    # -- watchdog's WatchCallback, called on the loop's thread

    def on_event(self, event: InotifyEvent) -> None:
        with self._lock:
            directory = self._paths.get(event.wd)
        if directory is None:
            return
        mask = event.mask
        if not event.name:  # the watched directory itself was deleted or moved
            self._sink.add_pending((), (), rediscover=True)
            return
        raw = os.path.join(directory, event.name)
        if mask & _I.IN_ISDIR:
            found: list[str] = []
            if mask & _I.IN_MOVED_FROM:
                self._forget_below(raw)
            elif self.recursive and mask & (_I.IN_CREATE | _I.IN_MOVED_TO):
                # watched before the consumer lists it, so nothing created in it later is
                # missed; what was created before its watch (`mkdir -p a/b && touch a/b/f`) is
                # reported from the walk. A new directory in a log tree is small and rare enough
                # to walk on the loop.
                with contextlib.suppress(OSError):
                    self._add(raw)
                    found = [self._path(path) for path in self._add_below(raw)]
            self._sink.add_pending((), found, rediscover=True)
            return
        path = self._path(raw)
        if mask & _CONTENT:
            self._sink.add_pending((path,), (), rediscover=False)
        else:
            self._sink.add_pending((), (path,), rediscover=False)

    def on_watch_deleted(self, wd: WatchDescriptor) -> None:
        with self._lock:
            self._paths.pop(wd, None)

    def on_queue_overflow(self) -> None:
        self.stale = self.recursive  # a directory created meanwhile may have no watch
        self._sink.add_pending((), (), rediscover=True)

    def _path(self, raw: bytes) -> str:
        path = os.fsdecode(raw)
        if self._real != self._shown and is_below(path, self._real):
            return self._shown + path[len(self._real) :]
        return path
