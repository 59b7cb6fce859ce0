"""The checkpoint: the one truth after a crash, tying tail offsets to committed journal lengths.

It holds each tailed file's identity and resume point, each journal source's cursor, each
report journal's committed length, and the sources the daemon has seen (so that `start_at`
applies only to a source seen for the first time). Versioned, so a later release can migrate
it; a checkpoint of a newer version is refused rather than misread.

It lives in two slot files, `checkpoint-a.json` and `checkpoint-b.json`, written in turn in
place: each save overwrites the older slot and makes it durable with one fdatasync, while the
other slot still holds the previous checkpoint whole. A slot is a JSON document whose header
carries a generation number and a CRC-32 of the checkpoint it wraps; loading takes the highest
generation whose CRC holds, so a save torn by a crash falls back to the one before it, which is
exactly what the journals and offsets of that crash agree with.

Rejected: one file replaced by rename (temp file, fsync, rename, fsync of the dir). Correct,
but it costs a new inode, a rename, a second fsync and a freed inode per commit; with a report
per match (`rotate_max_records = 1`) that alone was a fifth of the publish latency.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from logwarden.atomic import fsync_dir
from logwarden.journal_entries import JournalPosition
from logwarden.reports import JournalState
from logwarden.resume import CopyRead
from logwarden.tail import FileCheckpoint
from logwarden.timestamps import utc_timestamp

# 3: a journal may carry its last committed bytes (`tail`), durable only here. Version 2 (no
# tails) is read as it is; a daemon that knows only 2 refuses 3 instead of ignoring the tails.
# 4: a file may be a gzip rotation (`compressed`, its offset is in the decompressed stream);
# `rotated_after` says from when on a rotated file the checkpoint does not know may hold unread
# lines, and `copies_read` which such files are known to hold none; journal sources have their
# cursors (`cursors`). 2 and 3 are read as having none of these; a daemon that knows only 3 would
# read a gzip's raw bytes as lines and a journal again from wherever start_at says: it refuses 4.
# 5: rule state (`rule_state`: threshold windows and held suppression records, `stages.py`),
# committed with the offsets so that a restart neither repeats nor loses an alert. 2 to 4 are
# read as having none (windows start empty); a daemon that knows only 4 refuses 5 rather than
# drop the held records.
VERSION = 5
READABLE_VERSIONS = (2, 3, 4, 5)
SLOT_NAMES = ("checkpoint-a.json", "checkpoint-b.json")
_HEADER = re.compile(rb'\{"generation":(\d+),"crc32":"([0-9a-f]{8})","length":(\d+),"checkpoint":')
_TRAILER = b"}\n"


class CheckpointError(Exception):
    """The checkpoint exists but cannot be used; the daemon must not guess."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    files: Sequence[FileCheckpoint] = ()
    journals: Sequence[JournalState] = ()
    next_seq: Mapping[str, int] = field(default_factory=dict)
    sources: frozenset[str] = frozenset()
    # wall clock (ns): a rotated file (`app.log.2`) this checkpoint does not know and last modified
    # after this moment may hold lines never read; one modified before it was read and finished,
    # or deliberately left alone (`tail.TailManager.rotated_after`). None: not known (an older
    # checkpoint), and such files are left alone.
    rotated_after_ns: int | None = None
    # copies with nothing unread (copytruncate's, found beside a truncated file) modified after
    # `rotated_after_ns`: without them a restart would take such a copy, made in the last moment
    # before a crash, for a rotated file never read, and send its lines again
    copies_read: Sequence[CopyRead] = ()
    cursors: Mapping[str, JournalPosition] = field(default_factory=dict)  # per journal source
    # JSON (an orjson.Fragment when saving: serialised once per change, not per commit)
    rule_state: Any = None

    def journals_of(self, report: str) -> list[JournalState]:
        return [journal for journal in self.journals if journal.report == report]

    def to_bytes(self) -> bytes:
        document: dict[str, Any] = {
            "version": VERSION,
            "written": utc_timestamp(),
            "sources": sorted(self.sources),
            "next_seq": dict(self.next_seq),
            "journals": [journal.to_dict() for journal in self.journals],
            "files": [file.to_dict() for file in self.files],
            "rotated_after_ns": self.rotated_after_ns,
            "copies_read": [copy.to_dict() for copy in self.copies_read],
            "cursors": {name: position.to_dict() for name, position in self.cursors.items()},
            "rule_state": self.rule_state,
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        document = orjson.loads(data)
        version = document.get("version")
        if version not in READABLE_VERSIONS:
            raise CheckpointError(
                f"checkpoint version {version!r} is not one of {READABLE_VERSIONS}; "
                "refusing to guess"
            )
        return cls(
            files=tuple(FileCheckpoint.from_dict(item) for item in document["files"]),
            journals=tuple(JournalState.from_dict(item) for item in document["journals"]),
            next_seq={str(k): int(v) for k, v in document["next_seq"].items()},
            sources=frozenset(document["sources"]),
            rotated_after_ns=_optional_ns(document.get("rotated_after_ns")),
            copies_read=tuple(CopyRead.from_dict(item) for item in document.get("copies_read", ())),
            cursors={
                str(name): JournalPosition.from_dict(item)
                for name, item in document.get("cursors", {}).items()
            },
            rule_state=document.get("rule_state"),
        )


def _optional_ns(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"rotated_after_ns must be a time in ns, not {value!r}")


@dataclass(frozen=True, slots=True)
class _Slot:
    generation: int
    body: bytes  # the checkpoint's own JSON, CRC verified


def _slot_bytes(generation: int, body: bytes) -> bytes:
    header = b'{"generation":%d,"crc32":"%08x","length":%d,"checkpoint":' % (
        generation,
        zlib.crc32(body),
        len(body),
    )
    return header + body + _TRAILER


def _parse_slot(data: bytes) -> _Slot | None:
    """The slot's checkpoint, or None when it is empty or torn (its CRC does not hold)."""
    header = _HEADER.match(data)
    if header is None:
        return None
    start = header.end()
    end = start + int(header[3])
    body = data[start:end]
    if len(body) != int(header[3]) or data[end : end + len(_TRAILER)] != _TRAILER:
        return None
    if f"{zlib.crc32(body):08x}".encode() != header[2]:
        return None
    return _Slot(int(header[1]), body)


def _read_slots(state_dir: Path) -> tuple[list[_Slot | None], int]:
    """Each slot's checkpoint (None: missing, empty or torn), and how many slot files have
    content at all."""
    slots: list[_Slot | None] = []
    written = 0
    for name in SLOT_NAMES:
        try:
            data = (state_dir / name).read_bytes()
        except FileNotFoundError:
            data = b""
        written += bool(data)
        slots.append(_parse_slot(data) if data else None)
    return slots, written


def _newest(slots: list[_Slot | None]) -> tuple[int, _Slot] | None:
    valid = [(index, slot) for index, slot in enumerate(slots) if slot is not None]
    return max(valid, key=lambda item: item[1].generation, default=None)


def load(state_dir: Path) -> Checkpoint | None:
    """The last durable checkpoint, or None on a first start."""
    return _decode(state_dir, *_read_slots(state_dir))


def _decode(state_dir: Path, slots: list[_Slot | None], written: int) -> Checkpoint | None:
    newest = _newest(slots)
    if newest is None:
        if written == len(SLOT_NAMES):
            # the second slot is written only after the first save is whole, so two slots with
            # content and no valid one is damage, not a crash
            raise CheckpointError(
                f"{state_dir}/checkpoint-a.json and checkpoint-b.json are both damaged; "
                "move them away to start afresh"
            )
        return None  # a first start, or a crash during the very first save
    index, slot = newest
    try:
        return Checkpoint.from_bytes(slot.body)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{state_dir / SLOT_NAMES[index]} passes its checksum but cannot be read ({error})"
        ) from error


class CheckpointStore:
    """The daemon's handle on its checkpoint: loads the newest slot once, then saves in turn.

    Both slot files stay open for the daemon's life, so a save is one pwrite and one fdatasync.
    A slot is padded with spaces to its previous length instead of truncated: a shorter
    checkpoint then changes no file size, so fdatasync has no metadata to commit.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        slots, written = _read_slots(state_dir)
        self.restored = _decode(state_dir, slots, written)
        newest = _newest(slots)
        self._generation = newest[1].generation if newest else 0
        self._next = 1 - newest[0] if newest else 0  # the older slot is overwritten first
        self._descriptors: list[int] = []
        self._lengths: list[int] = []
        try:
            for name in SLOT_NAMES:
                descriptor = os.open(state_dir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
                self._descriptors.append(descriptor)
                self._lengths.append(os.fstat(descriptor).st_size)
            fsync_dir(state_dir)  # the slots' names are durable before any save relies on them
        except OSError as error:
            self.close()
            raise CheckpointError(
                f"cannot open the checkpoint in {state_dir}: {error.strerror or error}"
            ) from error

    def save(self, checkpoint: Checkpoint) -> None:
        """Make `checkpoint` the durable one (blocking: run it in a thread)."""
        generation = self._generation + 1
        data = _slot_bytes(generation, checkpoint.to_bytes())
        index = self._next
        padding = self._lengths[index] - len(data)
        if padding > 0:
            data += b" " * padding
        descriptor = self._descriptors[index]
        view = memoryview(data)
        offset = 0
        try:
            while offset < len(data):
                offset += os.pwrite(descriptor, view[offset:], offset)
            os.fdatasync(descriptor)
        except BaseException:
            self._lengths[index] = os.fstat(descriptor).st_size  # whatever a failure left
            raise
        self._lengths[index] = max(self._lengths[index], len(data))
        self._generation, self._next = generation, 1 - index

    def close(self) -> None:
        for descriptor in self._descriptors:
            with contextlib.suppress(OSError):
                os.close(descriptor)
        self._descriptors = []
