"""Rotated files beside followed ones that the daemon never read: found by name, judged by content.

A file can leave a followed path before the daemon ever opens it: rotated twice while the daemon
was stopped (`app.log` → `app.log.1`, a new `app.log` → `app.log.2`), or re-created by a writer
between logrotate's rename and its create, and then renamed by logrotate to
`app.log-2026112520.backup`. The globs do not cover those names, so discovery never sees them.
They are found here by name, as rotations (`identity.is_rotation_name`, `.gz` included) of a
path the globs cover, on start and after every rotation or rename seen at a followed path.

Which of them hold lines never read is decided, in this order:
- a file the daemon tracks, one it finished and still remembers with the same content, or a
  copytruncate copy it found holding only lines read, is not new;
- a file last modified before `after_ns` is not new: every file read and finished before the
  checkpoint was saved was last written before that (see `Checkpoint.rotated_after_ns`);
- a file whose content is a copy of a file read (the same first KiB and the same bytes before
  where that file was read: `resume.judge_copy`, through gzip for `.gz`) continues from there:
  that is logrotate compressing a rotated file, or copytruncate's copy;
- anything else is read from its start.
Every function here blocks (scandir, stat, reads, decompression) and runs in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from logwarden.compressed import judge_gzip
from logwarden.identity import (
    FileCheckpoint,
    Fingerprint,
    Identity,
    PathStatus,
    check_file,
    is_gzip_rotation,
    is_rotation_name,
    probe,
)
from logwarden.log import get_logger
from logwarden.resume import CopyVerdict, Lineage, judge_copies

log = get_logger(__name__)

SourceOf = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Sibling:
    """A rotated file that may hold lines never read, and how it compares with files read."""

    base: str  # the covered path it is a rotation of
    status: PathStatus
    compressed: bool
    verdicts: list[CopyVerdict]  # against the base's lineages, in their order
    size: int  # its content's size (decompressed, for gzip)
    raw: tuple[Fingerprint, Fingerprint, int] | None  # gzip: the raw head, tail and size


def is_rotation_of(name: str, base: str) -> bool:
    return is_rotation_name(name, base) or is_gzip_rotation(name, base)


def rotation_base(path: str, source_of: SourceOf) -> str | None:
    """The covered path that `path` is named as a rotation of (`logs/app.log` for
    `logs/app.log-2026112520.backup`), the longest such; None when `path` is covered itself or
    a rotation of nothing covered."""
    if source_of(path) is not None:
        return None
    directory, name = os.path.split(path)
    for end in range(len(name) - 1, 0, -1):
        if name[end] in ".-" and is_rotation_of(name, name[:end]):
            base = os.path.join(directory, name[:end])
            if source_of(base) is not None:
                return base
    return None


def siblings_of(bases: Iterable[str], source_of: SourceOf) -> dict[str, str]:
    """Every file named as a rotation of one of `bases` in its directory, and not covered by the
    globs itself (those are followed already): {path: base}."""
    by_directory: dict[str, set[str]] = {}
    for base in bases:
        directory, name = os.path.split(base)
        by_directory.setdefault(directory, set()).add(name)
    found: dict[str, str] = {}
    for directory, names in by_directory.items():
        try:
            with os.scandir(directory) as entries:
                listing = [entry.name for entry in entries]
        except OSError:
            continue
        for entry in listing:
            for name in names:
                path = os.path.join(directory, entry)
                if is_rotation_of(entry, name) and source_of(path) is None:
                    found[path] = os.path.join(directory, name)
    return found


def judge_siblings(
    candidates: Mapping[str, str],
    lineages: Mapping[str, Sequence[Lineage]],
    *,
    known: frozenset[Identity],
    retired: Mapping[Identity, FileCheckpoint],
    read_through: Mapping[Identity, tuple[int, int]],
    after_ns: int,
    chunk_bytes: int,
) -> list[Sibling]:
    """The candidates ({path: base}) that may hold lines never read, oldest first."""
    found = []
    for path, base in sorted(candidates.items()):
        status = probe(path, False)
        if status.kind != "file" or status.identity in known or status.mtime_ns <= after_ns:
            continue
        if read_through.get(status.identity) == (status.size, status.mtime_ns):
            continue  # a copy of lines read already (copytruncate), renamed since
        ended = retired.get(status.identity)
        # an ended file of which nothing was read proves nothing: its inode may be reused
        if (
            ended is not None
            and ended.tail is not None
            and status.size == ended.tail_end
            and check_file(path, False, ended)
        ):
            continue  # finished here already, and unchanged since (one that grew is judged
            # below against what was read of it, and read from where that ended)
        compared = list(lineages.get(base, ()))
        if is_gzip_rotation(os.path.basename(path), os.path.basename(base)):
            judged = judge_gzip(path, status.identity, compared, chunk_bytes)
            if judged is None:
                log.info("compressed file not whole (still being written?); not read", path=path)
                continue
            verdicts, size, raw = judged
            found.append(Sibling(base, status, True, verdicts, size, raw))
        else:
            verdicts, size = judge_copies(path, False, status.identity, compared)
            found.append(Sibling(base, status, False, verdicts, size, None))
    found.sort(key=lambda sibling: sibling.status.mtime_ns)
    return found
