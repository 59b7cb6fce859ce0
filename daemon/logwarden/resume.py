"""Where reading resumes: the start plan after a restart, and copies of truncated files.

A restart matches each checkpointed file to what is on disk now: at its path, or renamed within
its directory while the daemon was down (rotation), confirmed by content (`identity`). copytruncate
leaves a copy of the old content beside a file that starts again from 0; the copy is recognised by
content too, and read from where the original was read, so its lines are neither lost nor sent
twice. Every function here blocks and runs in a worker thread; `FileMemory` is the manager's record
of files that ended and of recent truncations, which those searches consult.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from logwarden.framing import FramerState
from logwarden.identity import (
    HEAD_BYTES,
    FileCheckpoint,
    Identity,
    PathStatus,
    check_file,
    content_matches,
    find_by_identity,
    is_rotation_name,
    open_regular,
    probe,
    read_at,
    renamed_within,
)

RETIRED_MEMORY = 4096  # ended files remembered, in case they reappear under a covered name
TRUNCATIONS_MEMORY = 64  # recent truncations whose copies may still turn up


@dataclass(frozen=True, slots=True)
class Lineage:
    """What a tracked file looked like, for recognising a copy of it (copytruncate).

    `head` holds the bytes when they are known (a live tailer), so that a copy still being written
    can be recognised as a prefix; a checkpoint restored from disk has only digests.
    """

    checkpoint: FileCheckpoint
    head: bytes | None = None


CopyVerdict = Literal["copy", "maybe", "no"]


def judge_copy(fd: int, size: int, lineage: Lineage) -> CopyVerdict:
    """Is the open file a copy of the lineage's file, up to where that file was read?

    "copy": same head, at least as long as the read position, same bytes before it.
    "maybe": shorter than the read position but so far the same bytes (a copy being written, or
    a copy of less than was read).
    "no": anything else; it is a file of its own.
    """
    checkpoint = lineage.checkpoint
    if checkpoint.tail is None or checkpoint.tail_end == 0:
        return "no"  # nothing was read from the original: there is nothing to skip
    if size >= checkpoint.tail_end:
        return "copy" if content_matches(fd, size, checkpoint) else "no"
    if lineage.head is not None:
        known = min(size, len(lineage.head))
        return "maybe" if read_at(fd, 0, known) == lineage.head[:known] else "no"
    head = checkpoint.head  # only digests (a restored checkpoint): the whole head must be there
    return "maybe" if size >= head.length and head.matches(read_at(fd, 0, head.length)) else "no"


def judge_copies(
    path: str, follow_symlinks: bool, identity: Identity, lineages: Sequence[Lineage]
) -> tuple[list[CopyVerdict], int]:
    """`judge_copy` against each lineage, and the file's size; all "no" when it cannot be read."""
    verdicts: list[CopyVerdict] = ["no"] * len(lineages)
    try:
        fd, status = open_regular(path, follow_symlinks)
    except OSError:
        return verdicts, 0
    try:
        if (status.st_dev, status.st_ino) != identity:
            return verdicts, status.st_size
        return [judge_copy(fd, status.st_size, lineage) for lineage in lineages], status.st_size
    except OSError:
        return verdicts, 0
    finally:
        os.close(fd)


def copy_start(
    verdicts: Sequence[CopyVerdict], lineages: Sequence[Lineage], size: int
) -> FramerState | None:
    """Where to start reading a copy that is complete: at the original's resume point, or at its
    end when it holds only bytes that were read already (at least a whole head of them, so that
    a small file that merely starts alike is never skipped). None: a file of its own."""
    if "copy" in verdicts:
        return lineages[verdicts.index("copy")].checkpoint.framer
    if "maybe" in verdicts and size >= HEAD_BYTES:
        return FramerState(size, None, False)
    return None


@dataclass(frozen=True, slots=True)
class CopyRead:
    """A copy found holding only lines already read, as it was then (`FileMemory.read_through`)."""

    dev: int
    inode: int
    size: int
    mtime_ns: int

    def to_dict(self) -> dict[str, int]:
        return {"dev": self.dev, "inode": self.inode, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CopyRead:
        values = [data[key] for key in ("dev", "inode", "size", "mtime_ns")]
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            raise ValueError(
                f"a copy read through needs integer dev, inode, size, mtime_ns: {data}"
            )
        return cls(*values)  # type: ignore[arg-type]


class FileMemory:
    """Files that ended, by identity (a file that shows up again under a covered name resumes
    where it stopped instead of being read twice), and what recently truncated files held (a
    copy of one may turn up beside it)."""

    def __init__(self) -> None:
        self.retired: OrderedDict[Identity, FileCheckpoint] = OrderedDict()
        # copies (copytruncate) holding only lines read already, never opened: (size, mtime_ns)
        # as last seen, which a rename keeps and a file reusing the inode would not
        self.copies_read: OrderedDict[Identity, tuple[int, int]] = OrderedDict()
        # (the paths it had, what it held) of files truncated lately
        self._truncations: deque[tuple[tuple[str, ...], Lineage]] = deque(maxlen=TRUNCATIONS_MEMORY)

    def remember(self, checkpoint: FileCheckpoint) -> None:
        self.retired[checkpoint.identity] = checkpoint
        self.retired.move_to_end(checkpoint.identity)
        while len(self.retired) > RETIRED_MEMORY:
            self.retired.popitem(last=False)

    def copies_read_after(self, after_ns: int) -> list[CopyRead]:
        """The copies read through that a search from `after_ns` on would look at: what the
        checkpoint must carry for a restart to leave them alone too."""
        return [
            CopyRead(identity[0], identity[1], size, mtime_ns)
            for identity, (size, mtime_ns) in self.copies_read.items()
            if mtime_ns >= after_ns
        ]

    def restore_copies_read(self, copies: Iterable[CopyRead]) -> None:
        for copy in copies:
            self.copies_read[(copy.dev, copy.inode)] = (copy.size, copy.mtime_ns)

    def read_through(self, status: PathStatus) -> None:
        """A copy with nothing unread in it, left alone: not to be read as a rotated file."""
        self.copies_read[status.identity] = (status.size, status.mtime_ns)
        while len(self.copies_read) > RETIRED_MEMORY:
            self.copies_read.popitem(last=False)

    def forget(self, identity: Identity) -> None:
        self.retired.pop(identity, None)

    def forget_sources(self, kept: Iterable[str]) -> None:
        """A reload removed sources: their ended files are of no interest any more."""
        keep = set(kept)
        for identity, checkpoint in list(self.retired.items()):
            if checkpoint.source not in keep:
                del self.retired[identity]

    def truncated(self, names: tuple[str, ...], before: Lineage) -> None:
        self._truncations.appendleft((names, before))

    def truncated_at(self, path: str) -> list[Lineage]:
        """What the files that had `path` held before their recent truncations, newest first."""
        return [lineage for names, lineage in self._truncations if path in names]

    def truncation_lineages(self, path: str, dev: int) -> list[Lineage]:
        """What files whose rotation name `path` has held before their recent truncations."""
        return [
            lineage
            for names, lineage in self._truncations
            if lineage.checkpoint.dev == dev and rotation_of(path, names)
        ]


def rotation_of(path: str, names: Iterable[str]) -> bool:
    """`path` is named as a rotation of one of `names` (paths a file had), in the same directory:
    `app.log.1` of `app.log`, even after `app.log` itself was renamed `app.log.2`."""
    directory, name = os.path.split(path)
    return any(
        os.path.dirname(other) == directory and is_rotation_name(name, os.path.basename(other))
        for other in names
    )


# ---------------------------------------------------------------- the start plan


@dataclass(frozen=True, slots=True)
class Resume:
    checkpoint: FileCheckpoint
    path: str  # where it is now
    intact: bool


@dataclass(frozen=True, slots=True)
class StartPlan:
    resumes: list[Resume]
    lost: list[FileCheckpoint]
    statuses: dict[str, PathStatus]
    # copies (copytruncate while stopped) of checkpointed files, with where to start reading
    copies: dict[str, tuple[FileCheckpoint, PathStatus, FramerState]]


def plan_start(
    checkpoints: Sequence[FileCheckpoint],
    discovered: Mapping[str, str],
    follows: Mapping[str, bool],
) -> StartPlan:
    """Match checkpoints to files (at their path, or renamed within their directory while we were
    down) and probe every discovered path; all the blocking work of a start, in one thread."""
    resumes: list[Resume] = []
    lost: list[FileCheckpoint] = []
    unusable: list[FileCheckpoint] = []  # truncated, rewritten or gone: their copies may exist
    claimed: set[Identity] = set()
    listings: dict[str, dict[int, list[str]]] = {}
    for checkpoint in checkpoints:
        follow = follows.get(checkpoint.source, False)
        status = probe(checkpoint.path, follow)
        where: str | None = checkpoint.path
        if status.kind != "file" or status.identity != checkpoint.identity:
            where = find_by_identity(
                os.path.dirname(checkpoint.path), checkpoint.identity, listings
            )
            follow = False
        verdict = None if where is None else check_file(where, follow, checkpoint)
        if (
            where is None
            or verdict is None
            or (not verdict and not renamed_within(checkpoint.path, where))
            or (not verdict and checkpoint.compressed)
        ):
            lost.append(checkpoint)  # gone, unreadable, or its inode reused by an unrelated file
            if not checkpoint.compressed:  # a gzip file has no plain copies to look for
                unusable.append(checkpoint)
            continue
        # other content under the same inode at its path or a rotation of it: truncated and
        # rewritten (then maybe rotated), or the inode reused by a newer file of the same
        # rotation; either way those lines were never read: read from 0
        resumes.append(Resume(checkpoint, where, verdict))
        claimed.add(checkpoint.identity)
        if not verdict:
            unusable.append(checkpoint)
    copies: dict[str, tuple[FileCheckpoint, PathStatus, FramerState]] = {}
    for checkpoint in unusable:
        for status, start in find_copies(
            [checkpoint.path], Lineage(checkpoint), frozenset(claimed)
        ):
            copies[status.path] = (checkpoint, status, start)
            claimed.add(status.identity)
    statuses = {
        path: probe(path, follows.get(source, False)) for path, source in discovered.items()
    }
    return StartPlan(resumes, lost, statuses, copies)


def find_copies(
    names: Sequence[str], lineage: Lineage, known: frozenset[Identity]
) -> list[tuple[PathStatus, FramerState]]:
    """Copies of the lineage's file lying beside it (what copytruncate leaves when it truncates a
    file), each with where to start reading it; files in `known` are not considered.

    A file named as a rotation of one of `names` (the paths the file had) is judged by content;
    so is any other file of those directories once the original was read past a whole head (a
    kibibyte that matches, and the bytes before the offset, do not happen by chance; fewer
    might), but then only an exact copy counts, never one that merely starts alike.
    """
    loose = lineage.checkpoint.tail_end >= HEAD_BYTES
    candidates: dict[str, bool] = {}  # path → named as a rotation
    for directory in {os.path.dirname(name) for name in names}:
        bases = [os.path.basename(name) for name in names if os.path.dirname(name) == directory]
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    named = any(is_rotation_name(entry.name, base) for base in bases)
                    if (named or loose) and entry.name not in bases:
                        candidates[entry.path] = named
        except OSError:
            continue
    found = []
    for path, named in sorted(candidates.items()):
        status = probe(path, False)
        if (
            status.kind != "file"
            or status.identity in known
            or status.dev != lineage.checkpoint.dev
            or not (named or status.size >= lineage.checkpoint.tail_end)
        ):
            continue
        verdicts, size = judge_copies(path, False, status.identity, [lineage])
        start = copy_start(verdicts, [lineage], size) if named or verdicts == ["copy"] else None
        if start is not None:
            found.append((status, start))
    return found
