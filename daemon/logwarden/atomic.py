"""Durable, atomic file replacement: a reader sees the old file or the new one, never a part.

The recipe (RESEARCH, "Output files"): create the temporary in the same directory (a rename is
atomic only within one filesystem) with O_EXCL and a name starting with `.`, write, fsync the
file (without it a crash can leave the new name pointing at an empty file), set the mode
(mkstemp would create 0600), rename, fsync the directory (without it the rename itself can be
lost). python-atomicwrites did this and was archived in favour of plain os.replace, which alone
is not durable; so these dozen lines live here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

TEMP_PREFIX = ".logwarden-tmp-"


def fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_dirs(directory: Path, mode: int = 0o750) -> None:
    """`mkdir -p`, durably: each directory created here is fsynced into its parent.

    A new directory's entry lives in its parent, and on a filesystem that does not order
    metadata a power cut can lose it even after files inside it were fsynced (a journal dir lost
    that way makes every later seal fail). Existing directories cost one stat and no fsync.
    """
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            if not path.is_dir():
                raise
            # created meanwhile by someone else, durably or not: the fsync below settles it
        fsync_dir(path.parent)


def write_atomically(
    path: Path, chunks: Iterable[bytes], mode: int = 0o640, durable: bool = True
) -> None:
    """Publish `chunks` as `path` atomically (and durably unless told otherwise); on any error the
    temporary is removed and `path` untouched."""
    # the random part last: a temporary must not end like the real name (`.json`, `.prom`),
    # since Go's filepath.Glob("*.prom") of node_exporter matches names starting with a dot
    temp = path.parent / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}"
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(descriptor, "wb", buffering=1024 * 1024) as stream:
            for chunk in chunks:
                stream.write(chunk)
            stream.flush()
            os.fchmod(stream.fileno(), mode)
            if durable:
                os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def remove_stale_temporaries(directory: Path) -> int:
    """Temporaries left by a crash mid-publish; they were never visible under a real name."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX):
            Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed
