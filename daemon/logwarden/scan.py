"""`logwarden scan`: run the rules over whole files once and print matches as NDJSON; no state."""

from __future__ import annotations

import os
import select
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from tqdm import tqdm

from logwarden.config import Config, SourceConfig
from logwarden.framing import Block, LineFramer
from logwarden.globs import PathMatcher, first_matching
from logwarden.log import get_logger
from logwarden.multiline import EventFramer, make_framer
from logwarden.origin import SourceRef
from logwarden.records import RecordBuilder
from logwarden.rules import RuleSet, SourceMatcher
from logwarden.stages import MatchProcessor, Output

READ_CHUNK = 4 * 1024 * 1024
DEFAULT_MAX_LINE_BYTES = SourceConfig.model_fields["max_line_bytes"].default
STDIN = "-"

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ScanSummary:
    files: int
    failed: int
    bytes: int
    lines: int
    matches: int


def source_for(path: str, config: Config) -> str | None:
    """The first source whose globs cover `path` (DESIGN §2), or None for a file of no source."""
    matchers = (
        (name, PathMatcher(source.paths, source.exclude)) for name, source in config.sources.items()
    )
    return first_matching(path, matchers)


class Scanner:
    """Scans files one after another into one NDJSON stream."""

    def __init__(self, config: Config, rules: RuleSet, out: BinaryIO, progress: bool) -> None:
        self.config = config
        self.rules = rules
        self.out = out
        self.progress = progress
        # the daemon's own match → record path, so both give the same records for a file
        self.processor = MatchProcessor(rules, config.sources, RecordBuilder())
        self.lines = self.matches = self.bytes = 0

    def scan(self, paths: Sequence[str], source_override: str | None = None) -> ScanSummary:
        failed = 0
        for path in paths:
            source = source_override or (None if path == STDIN else source_for(path, self.config))
            if not self._scan_one(path, source):
                failed += 1
        self._write(self.processor.finish())  # records still held by `suppress`
        return ScanSummary(len(paths), failed, self.bytes, self.lines, self.matches)

    def _scan_one(self, path: str, source: str | None) -> bool:
        """Scan one file; False (after logging one clear error) when it cannot be read."""
        settings = self.config.sources[source] if source else None
        max_line_bytes = settings.max_line_bytes if settings else DEFAULT_MAX_LINE_BYTES
        matcher = self.rules.for_source(source)
        try:
            with _open(path) as (stream, status):
                ref = SourceRef(
                    source,
                    path if path == STDIN else os.path.abspath(path),
                    status.st_dev,
                    status.st_ino,
                )
                framer = make_framer(max_line_bytes, settings.multiline if settings else None)
                size = status.st_size if stat.S_ISREG(status.st_mode) else None
                with _progress(self.progress, path, size) as bar:
                    while chunk := self._read(stream, framer, size is None, matcher, ref):
                        self.bytes += len(chunk)
                        self._emit(framer.feed(chunk), matcher, ref)
                        if bar is not None:
                            bar.update(len(chunk))
                    self._emit(framer.flush(), matcher, ref)
                self.lines += (framer.state.line_no or 1) - 1  # the framer counted them
        except OSError as error:
            log.error("cannot read file", path=path, error=error.strerror or str(error))
            return False
        return True

    def _read(
        self,
        stream: BinaryIO,
        framer: LineFramer | EventFramer,
        live: bool,
        matcher: SourceMatcher,
        ref: SourceRef,
    ) -> bytes:
        """The next chunk (empty at the end). On a pipe (`tail -f x | logwarden scan -`) the open
        multi-line event also ends at its `timeout`, as in the daemon: the input may never end.
        A regular file's end comes soon: its events end there (and at start lines) only."""
        if live:  # what matched so far goes out before waiting for more (stdout may be a pipe)
            self.out.flush()
        while live and (deadline := framer.deadline) is not None:
            wait = max(deadline - time.monotonic(), 0.0)
            if select.select([stream], [], [], wait)[0]:
                break
            self._emit(framer.expire(time.monotonic()), matcher, ref)
            self.out.flush()
        return stream.read(READ_CHUNK)

    def _emit(self, blocks: list[Block], matcher: SourceMatcher, ref: SourceRef) -> None:
        for block in blocks:
            matches = matcher.scan(block)
            if matches:
                self._write(self.processor.process(matches, ref))

    def _write(self, outputs: list[Output]) -> None:
        if outputs:
            self.matches += len(outputs)
            self.out.write(b"".join(output.data for output in outputs))


@contextmanager
def _open(path: str) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    if path == STDIN:
        # unbuffered: a read returns what a pipe holds now, so `tail -f x | logwarden scan -`
        # prints matches as they come instead of once 4 MiB have piled up
        with os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0) as stream:
            yield stream, os.fstat(stream.fileno())
        return
    # O_NONBLOCK: a FIFO named on the command line must not hang the open; reads still block
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    status = os.fstat(descriptor)
    if stat.S_ISDIR(status.st_mode):
        os.close(descriptor)
        raise IsADirectoryError(21, "is a directory", path)
    os.set_blocking(descriptor, True)
    with os.fdopen(descriptor, "rb", buffering=0) as stream:
        yield stream, status


@contextmanager
def _progress(enabled: bool, path: str, total: int | None) -> Iterator[tqdm[Any] | None]:
    """A progress bar on stderr when a person is watching and the file is big enough to wait for."""
    if not enabled or (total is not None and total < 64 * 1024 * 1024):
        yield None
        return
    with tqdm(
        total=total,
        desc=os.path.basename(path),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
    ) as bar:
        yield bar
