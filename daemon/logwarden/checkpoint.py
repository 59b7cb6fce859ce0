"""The checkpoint: one file, replaced atomically, tying tail offsets to committed journal lengths.

It is the single truth after a crash (DESIGN §5): each tailed file's identity and resume point,
each journal's committed length, and the sources the daemon has seen (so that `start_at` applies
only to a source seen for the first time). Versioned, so a later release can migrate it; a
checkpoint of a newer version is refused rather than misread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from logwarden.atomic import write_atomically
from logwarden.records import utc_timestamp
from logwarden.reports import JournalState
from logwarden.tail import FileCheckpoint

VERSION = 1
FILE_NAME = "checkpoint.json"


class CheckpointError(Exception):
    """The checkpoint exists but cannot be used; the daemon must not guess."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    files: Sequence[FileCheckpoint] = ()
    journals: Sequence[JournalState] = ()
    next_seq: Mapping[str, int] = field(default_factory=dict)
    sources: frozenset[str] = frozenset()

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
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        document = orjson.loads(data)
        version = document.get("version")
        if version != VERSION:
            raise CheckpointError(
                f"checkpoint version {version!r} is not {VERSION}; refusing to guess"
            )
        return cls(
            files=tuple(FileCheckpoint.from_dict(item) for item in document["files"]),
            journals=tuple(JournalState.from_dict(item) for item in document["journals"]),
            next_seq={str(k): int(v) for k, v in document["next_seq"].items()},
            sources=frozenset(document["sources"]),
        )


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def load(state_dir: Path) -> Checkpoint | None:
    """The last durable checkpoint, or None on a first start."""
    path = path_in(state_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Checkpoint.from_bytes(data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        # atomic replacement means this is not a torn write: something else damaged the file
        raise CheckpointError(
            f"{path} is damaged ({error}); move it away to start afresh"
        ) from error


def save(state_dir: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint durably (blocking: run it in a thread)."""
    write_atomically(path_in(state_dir), [checkpoint.to_bytes()], mode=0o640)
