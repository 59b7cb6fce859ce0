"""gzip rotations (`app.log.2.gz`): judged and read through the stdlib's `gzip`, in bounded chunks.

A compressed rotation is complete when it is found (logrotate compresses a file it has rotated
away, and a partial one is refused until it is whole), so it is read once, from where it starts,
to its end, and finished; it never grows and is never truncated.

Its progress is a position in the decompressed stream (`FileCheckpoint.framer`), while its
identity stays that of the raw file: (dev, inode), the raw file's first KiB and its last 64 bytes
(the gzip trailer, which carries the CRC-32 and length of the whole content), so a restart
confirms it with the same checks as any file and resumes by decompressing up to that position.
Rejected: a raw byte offset (a deflate stream cannot be entered in the middle) and zlib's
full-state snapshots (not portable, and large).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import zlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from logwarden.counters import FileSnapshot
from logwarden.identity import (
    HEAD_BYTES,
    TAIL_BYTES,
    FileCheckpoint,
    Fingerprint,
    find_by_identity,
    open_regular,
    read_at,
)
from logwarden.log import get_logger
from logwarden.multiline import make_framer
from logwarden.resume import CopyVerdict, Lineage
from logwarden.tailer import Tailer

log = get_logger(__name__)

# what a gzip file that is damaged, or still being written, raises while it is read
GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, OSError)


def open_gzip(path: str, identity: tuple[int, int]) -> tuple[int, gzip.GzipFile] | None:
    """Open this identity (at `path`, or renamed within its directory) as a decompressed
    stream: the raw descriptor (the caller closes it, after the stream) and the stream.
    None: gone."""
    for where in (path, find_by_identity(os.path.dirname(path), identity)):
        if where is None:
            continue
        try:
            fd, status = open_regular(where, False)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) != identity:
            os.close(fd)
            continue
        raw = io.BufferedReader(os.fdopen(fd, "rb", buffering=0, closefd=False))
        return fd, gzip.GzipFile(fileobj=raw, mode="rb")
    return None


def raw_checkpoint(fd: int, size: int) -> tuple[Fingerprint, Fingerprint]:
    """The raw file's head and last bytes, which identify a compressed file."""
    keep = min(TAIL_BYTES, size)
    return (
        Fingerprint.of(read_at(fd, 0, min(HEAD_BYTES, size))),
        Fingerprint.of(read_at(fd, size - keep, keep)),
    )


def judge_gzip(
    path: str, identity: tuple[int, int], lineages: Sequence[Lineage], chunk_bytes: int
) -> tuple[list[CopyVerdict], int, tuple[Fingerprint, Fingerprint, int]] | None:
    """Is the gzip file a compressed copy of one of the lineages' files (the usual case: logrotate
    compressed a file we read)? Decompresses it once, in chunks, keeping only the head and the
    samples the lineages need. Returns the verdicts (as `resume.judge_copy`), the decompressed
    size and the raw file's (head, tail, size); None when it is not a whole gzip file (yet)."""
    opened = open_gzip(path, identity)
    if opened is None:
        return None
    fd, stream = opened
    wanted = [
        (lineage.checkpoint.tail_end - lineage.checkpoint.tail.length, lineage.checkpoint.tail_end)
        if lineage.checkpoint.tail is not None
        else (0, 0)
        for lineage in lineages
    ]
    samples = [bytearray() for _ in lineages]
    head = bytearray()
    position = 0
    try:
        raw_size = os.fstat(fd).st_size
        if raw_size == 0:  # just created (gzip reads an empty file as whole and empty)
            return None
        raw = raw_checkpoint(fd, raw_size)
        while data := stream.read(chunk_bytes):
            end = position + len(data)
            if len(head) < HEAD_BYTES:
                head += data[: HEAD_BYTES - len(head)]
            for (start, stop), sample in zip(wanted, samples, strict=True):
                if start < end and stop > position:
                    sample.extend(data[max(start - position, 0) : stop - position])
            position = end
    except GZIP_ERRORS:
        return None
    finally:
        stream.close()
        os.close(fd)
    verdicts: list[CopyVerdict] = []
    for lineage, (_, stop), sample in zip(lineages, wanted, samples, strict=True):
        checkpoint = lineage.checkpoint
        if (
            checkpoint.tail is None
            or stop == 0
            or not checkpoint.head.matches(bytes(head[: checkpoint.head.length]))
        ):
            verdicts.append("no")
        elif position >= stop:
            verdicts.append("copy" if checkpoint.tail.matches(bytes(sample)) else "no")
        else:
            verdicts.append("maybe")  # the same start, but shorter than what was read of it
    return verdicts, position, (*raw, raw_size)


class CompressedTailer(Tailer):
    """A gzip rotation: read once through gzip from its start position to its end, then finished.

    It is never attached to a path (no glob covers a compressed file), never a copy candidate and
    never a lineage. When it is a compressed copy of a file still being read (`follows`), it
    starts only once that file has ended, at the position that file reached: the lines the
    original delivered are not delivered again, and the ones it could not (it was deleted
    before it was opened) come from here.
    """

    compressed = True

    def __init__(self, *args: Any, follows: Tailer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.seed is not None, "a compressed file is known by its raw fingerprints"
        self.follows = follows
        self.ready = follows is None  # no checkpoint until its start is known
        self._stream: gzip.GzipFile | None = None

    def checkpoint(self) -> FileCheckpoint:
        assert self.seed is not None
        return replace(
            self.seed, source=self.source, path=self.home, framer=self.framer.state, compressed=True
        )

    def pending_checkpoint(self) -> FileCheckpoint | None:
        return None  # not started: a restart judges the file again against the original

    def stats(self, now: float | None = None) -> FileSnapshot:
        snapshot = super().stats(now)
        # `size` is the decompressed size when the file was judged (the raw one after a restart)
        return replace(
            snapshot,
            size=max(self.size, snapshot.offset),
            lag_bytes=max(self.size - snapshot.offset, 0),
        )

    def read_now(self) -> bool:
        return False

    async def run(self) -> None:
        try:
            if self.follows is not None:
                await self.follows.ended.wait()
                self.framer = make_framer(
                    self.settings.max_line_bytes,
                    self.settings.multiline,
                    self.follows.framer.state,
                )
                self.follows = None
                self.ready = True
                self.log.info(
                    "compressed copy: continuing from where the original ended",
                    offset=self.framer.position,
                )
            while not self.done:
                self.wake.clear()
                try:
                    async with self.lock:
                        await self.catch_up()
                except Exception as error:  # a bug here must not stop the other files
                    self.log.exception("reading compressed file failed; will retry")
                    self._fail(error)
                if not self.done:
                    await self.wake.wait()  # an error: the rescan wakes it to try again
        finally:
            self.settled.set()

    async def catch_up(self, *, ending: bool = True) -> None:
        if self.done or not self.ready:
            return
        try:
            if self._stream is None and not await self._open_stream():
                return
            while not self.done:
                await self.host.wait_for_room()
                stream = self._stream
                if stream is None:
                    return
                data = await self._io(stream.read, self.settings.chunk_bytes)
                if not data:
                    if ending:
                        self.finish("compressed rotation read to its end")
                    return
                self._consume_decompressed(data)
                await asyncio.sleep(0)
        except GZIP_ERRORS as error:
            self._fail(error)

    async def _open_stream(self) -> bool:
        opened = await self._io(open_gzip, self.path, self.identity)
        if opened is None:
            self.finish("gone (deleted or moved out of its directory)")
            return False
        self.fd, stream = opened
        self.descriptors.count += 1
        self._stream = stream
        skip = self.framer.position
        while skip > 0:  # a deflate stream is entered only from its start
            data = await self._io(stream.read, min(skip, self.settings.chunk_bytes))
            if not data:
                break
            skip -= len(data)
        return True

    def _consume_decompressed(self, data: bytes) -> None:
        before = self.framer.state
        blocks = self.framer.feed(data)
        self._checkpoint = None
        if blocks:
            try:
                self.host.deliver(self, blocks)
            except BaseException:
                self.framer = make_framer(
                    self.settings.max_line_bytes, self.settings.multiline, before
                )
                self.close_fd()  # reopened and skipped to `before` on the next round
                raise
        self.host.count(read=len(data), source=self.source)

    def close_fd(self) -> None:
        stream, self._stream = self._stream, None
        fd, self.fd = self.fd, None
        if fd is not None:
            self.descriptors.count -= 1
        if stream is not None:
            stream.close()  # the raw reader does not own the descriptor: closed here, once
        if fd is not None:
            os.close(fd)
