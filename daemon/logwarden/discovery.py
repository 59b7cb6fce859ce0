"""Which files the sources cover right now, and which directories must be watched to see more.

Globs are matched by `globs.PathMatcher`; this module walks the file system with them. Only
directories that can hold a match are listed, and nothing but regular files is ever reported:
FIFOs, sockets and devices are recognised from their directory entry and never opened (opening a
FIFO blocks). Symlinks count only for sources with `follow_symlinks`, and a symlink loop is cut
by remembering the (dev, inode) of every directory on the way down.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import Counter
from collections.abc import Mapping

from logwarden.config import SourceConfig
from logwarden.globs import PathMatcher, first_matching, spans_subdirectories, static_root
from logwarden.log import get_logger

log = get_logger(__name__)


class PathIndex:
    """Which source a path belongs to, which files exist now, and which directories to watch."""

    def __init__(self, sources: Mapping[str, SourceConfig]) -> None:
        self.sources = dict(sources)
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
        log.warning(
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
                outer != root and is_below(root, outer) and is_below(real[root], real[outer])
                for outer, outer_recursive in wanted.items()
                if outer_recursive
            )
        }


def is_below(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or inside it (both normalised absolute paths)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def unmatched_sources(sources: Mapping[str, SourceConfig], found: Mapping[str, str]) -> list[str]:
    """The sources, in config order, that no file in `found` (a `discover()` result) belongs to."""
    counts = Counter(found.values())
    return [name for name in sources if counts[name] == 0]


class Coverage:
    """Tells the operator about sources whose globs match no file: a mistyped path, or a host
    without the service that writes it, would otherwise watch nothing and say nothing.

    Warned once when a source matches nothing (at start, or once a discovery finds it so), told
    at info when it matches again; a discovery that changes nothing says nothing.
    """

    def __init__(self) -> None:
        self._unmatched: set[str] = set()

    def update(self, sources: Mapping[str, SourceConfig], found: Mapping[str, str]) -> None:
        unmatched = unmatched_sources(sources, found)
        for name in unmatched:
            if name not in self._unmatched:
                log.warning(
                    "source matches no file; watching its paths for one to appear",
                    source=name,
                    paths=list(sources[name].paths),
                )
        counts = Counter(found.values())
        for name in sources:
            if name in self._unmatched and counts[name]:
                log.info("source matches files again", source=name, files=counts[name])
        self._unmatched = set(unmatched)
