"""File identity: (device, inode) confirmed by content, and the blocking probes that establish it.

Every function here blocks (stat, open, pread, scandir) and is meant to run in a worker thread;
`tail` decides what to do with the answers in the event loop. An inode alone is not an identity
(inodes are reused as soon as a file is deleted), so a file is also known by a fingerprint of its
first bytes (`head`) and of the bytes just before where reading stopped (`tail`): the second
catches a truncate-and-regrow past the offset whose first line happens to be the same.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from logwarden.framing import FramerState

Identity = tuple[int, int]  # (st_dev, st_ino)

HEAD_BYTES = 1024  # identity prefix, as Filebeat and OTel use (but read at once, not after 1 KiB)
TAIL_BYTES = 64  # the sample before the read position that catches truncate + regrow

# compressed rotations are never lines of text, whatever the glob says
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z", ".zip")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity confirmation by content: the sha256 of a file's first (or some) `length` bytes."""

    length: int
    digest: str

    @classmethod
    def of(cls, data: bytes) -> Fingerprint:
        return cls(len(data), hashlib.sha256(data).hexdigest())

    def matches(self, data: bytes) -> bool:
        return len(data) == self.length and hashlib.sha256(data).hexdigest() == self.digest

    def to_dict(self) -> dict[str, Any]:
        return {"length": self.length, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Any) -> Fingerprint:
        if not isinstance(d, dict):
            raise ValueError(f"a fingerprint must be an object, not {d!r}")
        digest = d.get("digest")
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"not a fingerprint: {d!r}")
        return cls(_count(d, "length"), digest)


@dataclass(frozen=True, slots=True)
class FileCheckpoint:
    """What the checkpoint stores per tracked file: who it is, and where reading resumes."""

    source: str
    path: str
    dev: int
    inode: int
    head: Fingerprint  # the first min(size, 1024) bytes, as far as they were known
    framer: FramerState  # resume point: offset of the first line not yet emitted
    tail: Fingerprint | None  # the bytes just before `tail_end` (up to 64); None at offset 0
    tail_end: int
    # a gzip rotation (`app.log.2.gz`, see `compressed.py`): `framer` is then a position in the
    # decompressed stream, while head, tail and tail_end still describe the raw file (its first
    # KiB and its last 64 bytes, the gzip trailer's CRC among them), so the identity checks
    # below confirm a compressed file exactly as they confirm a plain one
    compressed: bool = False

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.inode)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": self.path,
            "dev": self.dev,
            "inode": self.inode,
            "head": self.head.to_dict(),
            "framer": {
                "offset": self.framer.offset,
                "line_no": self.framer.line_no,
                "skipping": self.framer.skipping,
            },
            "tail": self.tail.to_dict() if self.tail is not None else None,
            "tail_end": self.tail_end,
            **({"compressed": True} if self.compressed else {}),
        }

    @classmethod
    def from_dict(cls, d: Any) -> FileCheckpoint:
        """Parse what `to_dict` wrote; ValueError on anything else (a checkpoint is never guessed)."""
        if not isinstance(d, dict):
            raise ValueError(f"a file checkpoint must be an object, not {d!r}")
        framer = d.get("framer")
        source, path, line_no = d.get("source"), d.get("path"), None
        if not isinstance(framer, dict) or not isinstance(source, str) or not isinstance(path, str):
            raise ValueError(f"not a file checkpoint: {d!r}")
        if framer.get("line_no") is not None:
            line_no = _count(framer, "line_no")
        skipping = framer.get("skipping")
        if not isinstance(skipping, bool) or line_no == 0:
            raise ValueError(f"not a file checkpoint: {d!r}")
        tail = d.get("tail")
        compressed = d.get("compressed", False)
        if not isinstance(compressed, bool):
            raise ValueError(f"not a file checkpoint: {d!r}")
        return cls(
            source=source,
            path=path,
            dev=_count(d, "dev"),
            inode=_count(d, "inode"),
            head=Fingerprint.from_dict(d.get("head")),
            framer=FramerState(_count(framer, "offset"), line_no, skipping),
            tail=None if tail is None else Fingerprint.from_dict(tail),
            tail_end=_count(d, "tail_end"),
            compressed=compressed,
        )


def _count(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be a count, not {value!r}")
    return value


# ---------------------------------------------------------------- probes (blocking)

PathKind = Literal["file", "missing", "other", "symlink", "error"]


@dataclass(frozen=True, slots=True)
class PathStatus:
    """What a path holds right now, seen through the source's symlink policy."""

    path: str
    kind: PathKind  # "other": FIFO, directory, socket, device; "symlink": not followed
    dev: int = 0
    inode: int = 0
    size: int = 0
    mtime_ns: int = 0
    error: str | None = None

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.inode)


def probe(path: str, follow_symlinks: bool) -> PathStatus:
    """lstat a path (stat through a symlink when the source follows them); never opens it."""
    try:
        status = os.lstat(path)
        if stat.S_ISLNK(status.st_mode):
            if not follow_symlinks:
                return PathStatus(path, "symlink")
            status = os.stat(path)
    except FileNotFoundError as error:
        if os.path.islink(path):  # a dangling symlink that should be followed: worth a warning
            return PathStatus(path, "error", error=f"symlink target missing: {error.strerror}")
        return PathStatus(path, "missing")
    except NotADirectoryError:
        return PathStatus(path, "missing")
    except OSError as error:
        return PathStatus(path, "error", error=error.strerror or str(error))
    if not stat.S_ISREG(status.st_mode):
        return PathStatus(path, "other")
    return PathStatus(
        path, "file", status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns
    )


class NotRegularError(OSError):
    """The path no longer holds a regular file (it was swapped for a FIFO, directory, ...)."""


def open_regular(path: str, follow_symlinks: bool) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without ever blocking on a FIFO; return (fd, fstat).

    O_NONBLOCK makes opening a FIFO return at once (it is then refused by fstat); it has no
    effect on reads of a regular file. O_NOFOLLOW keeps a symlink swapped in after the probe out.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):  # a symlink refused, or a socket
            raise NotRegularError(error.errno, "not a regular file", path) from error
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotRegularError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, status


def read_at(fd: int, offset: int, length: int) -> bytes:
    """Up to `length` bytes at `offset` (fewer only at the end of the file), in one `pread`.

    Not a loop of preads: a regular file returns short only at its end, and a second call after
    a truncation and rewrite would join old bytes to new ones into a line that never existed.
    """
    return os.pread(fd, length, offset) if length > 0 else b""


def read_checked(
    fd: int, head_length: int, offset: int, length: int
) -> tuple[os.stat_result, bytes, bytes]:
    """The file's status, up to `length` bytes at `offset`, then its first `head_length` bytes:
    one thread hop for a read that also re-reads what identifies the file (the head, and the
    sample before the position, which the caller puts at the start of the range). The head is
    read after the data so a truncation racing with the reads shows in the head rather than
    passing unseen."""
    status = os.fstat(fd)
    data = read_at(fd, offset, length)
    return status, read_at(fd, 0, head_length), data


def content_matches(fd: int, size: int, checkpoint: FileCheckpoint) -> bool:
    """Whether a file still holds what the checkpoint saw: its head and the bytes before tail_end."""
    head = checkpoint.head
    if size < head.length or not head.matches(read_at(fd, 0, head.length)):
        return False
    tail = checkpoint.tail
    if tail is None:
        return size >= checkpoint.tail_end
    if size < checkpoint.tail_end:
        return False
    return tail.matches(read_at(fd, checkpoint.tail_end - tail.length, tail.length))


def check_file(path: str, follow_symlinks: bool, checkpoint: FileCheckpoint) -> bool | None:
    """True when `path` is the checkpointed file with its content intact, False when it is that
    inode with other content (truncated, rewritten, or the inode reused), None when it is not
    that inode at all (or cannot be read)."""
    try:
        fd, status = open_regular(path, follow_symlinks)
    except OSError:
        return None
    try:
        if (status.st_dev, status.st_ino) != checkpoint.identity:
            return None
        return content_matches(fd, status.st_size, checkpoint)
    except OSError:
        return None
    finally:
        os.close(fd)


def find_by_identity(
    directory: str, identity: Identity, listings: dict[str, dict[int, list[str]]] | None = None
) -> str | None:
    """The path in `directory` (not below it) of the file with this (dev, inode), if any.

    Where a renamed file went when no event said so: rotation renames within the directory.
    `listings` caches each directory's inodes when many files are looked for (a start).
    """
    listing = None if listings is None else listings.get(directory)
    if listing is None:
        listing = {}
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):  # inode() is free: it comes from getdents
                        listing.setdefault(entry.inode(), []).append(entry.path)
        except OSError:
            pass
        if listings is not None:
            listings[directory] = listing
    for path in listing.get(identity[1], ()):
        try:
            status = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode) and (status.st_dev, status.st_ino) == identity:
            return path
    return None


def renamed_within(old: str, new: str) -> bool:
    """`new` is `old` or a rotation of it: where a file that changed content may still be ours."""
    return new == old or is_rotation_name(os.path.basename(new), os.path.basename(old))


def is_rotation_name(name: str, base: str) -> bool:
    """`app.log.1`, `app.log-20261124` are rotations of `app.log`; `app.log.2.gz` is not read."""
    return (
        len(name) > len(base) + 1
        and name.startswith(base)
        and name[len(base)] in ".-"
        and not name.endswith(_COMPRESSED)
    )


def is_gzip_rotation(name: str, base: str) -> bool:
    """`app.log.2.gz`, `app.log-20261124.gz`: a rotation of `app.log` compressed by gzip (the
    only compression read; the others are skipped)."""
    return name.endswith(".gz") and is_rotation_name(name[:-3], base)


# ---------------------------------------------------------------- what tail runs in threads


@dataclass(frozen=True, slots=True)
class Opened:
    fd: int
    path: str  # where the file was found (its path, or where it was renamed to)
    size: int
    intact: bool  # the bytes we knew (head, sample before the position) are still there
    head: bytes
    sample: bytes


@dataclass(frozen=True, slots=True)
class Known:
    """What a tailer knows of its file's content, to confirm it is unchanged when reopening."""

    position: int
    head: bytes = b""  # bytes read from the start (up to HEAD_BYTES, never past position)
    sample: bytes = b""  # the bytes just before position
    checkpoint: FileCheckpoint | None = None  # digests to check when no bytes were read yet


def open_tailed(path: str, follow: bool, identity: Identity, known: Known) -> Opened | None:
    """Open this identity (at `path`, or renamed within its directory) and check what we knew.

    None: the file is gone (deleted, or moved out of its directory).
    """
    where = path
    try:
        fd, status = open_regular(path, follow)
    except (FileNotFoundError, NotRegularError):
        fd = -1
    if fd >= 0 and (status.st_dev, status.st_ino) != identity:
        os.close(fd)
        fd = -1
    if fd < 0:
        found = find_by_identity(os.path.dirname(path), identity)
        if found is None:
            return None
        try:
            fd, status = open_regular(found, False)
        except (FileNotFoundError, NotRegularError):
            return None
        if (status.st_dev, status.st_ino) != identity:
            os.close(fd)
            return None
        where = found
    try:
        size, position = status.st_size, known.position
        # the bytes kept are the bytes compared: a truncation racing with these reads shows as
        # short reads or a mismatch, never as an empty head or sample taken for the truth
        keep = min(TAIL_BYTES, position)
        head = read_at(fd, 0, min(HEAD_BYTES, position))
        sample = read_at(fd, position - keep, keep)
        intact = (
            size >= position
            and len(head) == min(HEAD_BYTES, position)
            and len(sample) == keep
            and head.startswith(known.head)
            and sample.endswith(known.sample)
        )
        if intact and known.checkpoint is not None:
            intact = content_matches(fd, size, known.checkpoint)
            intact = intact and read_at(fd, 0, len(head)) == head  # and still the same file
        if not intact and not renamed_within(path, where):
            os.close(fd)  # the inode was reused by an unrelated file: ours is gone
            return None
        if not intact:
            return Opened(fd, where, size, False, b"", b"")
        return Opened(fd, where, size, True, head, sample)
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True, slots=True)
class Probed:
    statuses: dict[str, PathStatus]
    resumable: dict[str, FileCheckpoint]  # path → the ended file found there, content intact


def probe_paths(
    targets: Mapping[str, str],
    follows: Mapping[str, bool],
    retired: Mapping[Identity, FileCheckpoint],
) -> Probed:
    statuses: dict[str, PathStatus] = {}
    resumable: dict[str, FileCheckpoint] = {}
    for path, source in targets.items():
        follow = follows.get(source, False)
        status = probe(path, follow)
        statuses[path] = status
        ended = retired.get(status.identity) if status.kind == "file" else None
        if ended is not None and ended.compressed:
            ended = None  # a gzip file is never followed as lines
        # an ended file of which nothing was read proves nothing: its inode may be reused
        if ended is not None and ended.tail is not None and check_file(path, follow, ended):
            resumable[path] = ended
    return Probed(statuses, resumable)
