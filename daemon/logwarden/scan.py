"""`logwarden scan`: run the rules over whole files once and print matches as NDJSON; no state."""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import orjson

from logwarden.config import Config, SourceConfig
from logwarden.framing import Block, FramerState, LineFramer
from logwarden.globs import PathMatcher, first_matching
from logwarden.log import get_logger
from logwarden.lookahead import count_newlines, die_with_parent, prctl
from logwarden.multiline import EventFramer, make_framer
from logwarden.origin import SourceRef
from logwarden.records import RecordBuilder
from logwarden.rules import RuleSet, SourceMatcher
from logwarden.stages import MatchProcessor, Output

if TYPE_CHECKING:
    from tqdm import tqdm

READ_CHUNK = 4 * 1024 * 1024
# a file at least this large is scanned in two halves at once (`_split_at`): measured on 2 cores
SPLIT_MIN_BYTES = 64 * 1024 * 1024
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


@dataclass(frozen=True, slots=True)
class _Input:
    """One file being scanned: its descriptor, its rules, what its records say it is."""

    fd: int
    matcher: SourceMatcher
    ref: SourceRef
    max_line_bytes: int


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
                file = _Input(stream.fileno(), matcher, ref, max_line_bytes)
                split = self._split_at(file, size)
                with _progress(self.progress, path, size) as bar:
                    if split is not None:
                        self._scan_halves(file, split, framer, bar)
                    else:
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

    # -- a large file in two halves, on two cores (issue 14)

    def _split_at(self, file: _Input, size: int | None) -> int | None:
        """Where a second process should take over a large regular file (the start of the first
        line past its middle), or None to scan it in one piece: a small file or a single core,
        where a second process costs more than it saves; standard input, whose offset need not be
        0 (the halves read with pread from 0); rules with a threshold, suppression or
        carry, whose state must see every match in order in one process; and a `multiline`
        source, whose events may span the middle."""
        if size is None or size < SPLIT_MIN_BYTES or len(os.sched_getaffinity(0)) < 2:
            return None
        if file.ref.path == STDIN:  # a redirected file may be read from where its offset stands
            return None
        source = self.config.sources.get(file.ref.name) if file.ref.name else None
        if source is not None and source.multiline is not None:
            return None
        configs = [self.rules.rule(name).config for name in file.matcher.rules]
        if any(rule.threshold or rule.suppress or rule.carry for rule in configs):
            return None
        middle = size // 2
        newline = os.pread(file.fd, READ_CHUNK, middle).find(b"\n")
        if newline < 0 or middle + newline + 1 >= size:
            return None
        return middle + newline + 1

    def _scan_halves(
        self, file: _Input, split: int, framer: LineFramer | EventFramer, bar: tqdm[Any] | None
    ) -> None:
        """This process scans [0, split) into the output while a forked one scans the rest into a
        temporary file, copied out after: the same records in the same order as in one piece.
        Each reads with pread (a forked process shares the file's offset)."""
        with tempfile.TemporaryFile() as spill:
            reader, writer = os.pipe()
            self.out.flush()
            sys.stderr.flush()
            parent, call = os.getpid(), prctl()
            pid = os.fork()
            if pid == 0:  # the second half; never returns
                # SIGTERM: `scan` keeps its default action, so the half dies with the whole
                die_with_parent(parent, signal.SIGTERM, call)
                os.close(reader)
                self._second_half(file, split, spill, writer)
            os.close(writer)
            try:
                self._scan_range(file, 0, split, framer, bar)
                with os.fdopen(reader, "rb") as report:
                    summary = report.read()
                status = os.waitpid(pid, 0)[1]
                pid = 0
            finally:
                if pid:  # interrupted: stop the second half too
                    os.kill(pid, signal.SIGTERM)
                    os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0 or not summary:
                raise OSError(errno.EIO, "the scan of the file's second half failed")
            lines, matches, read = orjson.loads(summary)
            self.lines += lines
            self.matches += matches
            self.bytes += read
            if bar is not None:
                bar.update(read)
            spill.seek(0)
            shutil.copyfileobj(spill, self.out, READ_CHUNK)

    def _second_half(self, file: _Input, split: int, spill: BinaryIO, report: int) -> NoReturn:
        """In the forked process: the lines from `split` to the end, numbered from where the first
        half ends; its records to `spill`, its counts as JSON to `report`."""
        code = 1
        try:
            self.out, self.lines, self.matches, self.bytes = spill, 0, 0, 0
            first_line = 1 + count_newlines(file.fd, 0, split)
            framer = LineFramer(file.max_line_bytes, FramerState(split, first_line))
            self._scan_range(file, split, sys.maxsize, framer, None)
            spill.flush()
            lines = (framer.state.line_no or first_line) - first_line
            os.write(report, orjson.dumps([lines, self.matches, self.bytes]))
            code = 0
        except (KeyboardInterrupt, SystemExit):  # ^C or a signal: the first half says so
            pass
        except BaseException:  # whatever it was, the first half reports the file failed
            traceback.print_exc()
        finally:
            os._exit(code)  # no atexit, no flush of buffers copied from the first half

    def _scan_range(
        self,
        file: _Input,
        start: int,
        end: int,
        framer: LineFramer | EventFramer,
        bar: tqdm[Any] | None,
    ) -> None:
        position = start
        while position < end and (
            chunk := os.pread(file.fd, min(READ_CHUNK, end - position), position)
        ):
            position += len(chunk)
            self.bytes += len(chunk)
            self._emit(framer.feed(chunk), file.matcher, file.ref)
            if bar is not None:
                bar.update(len(chunk))
        self._emit(framer.flush(), file.matcher, file.ref)

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
    from tqdm import tqdm  # noqa: PLC0415 - only when a bar is shown, not every start

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
