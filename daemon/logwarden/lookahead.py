"""Matching ahead: a forked process frames and matches a large backlog while the daemon's main
process turns the matches into records and commits them (issue 14).

Catching up on a backlog, one process did it all: framing and matching (about half the CPU) and
records, journals and commits (the other half). Python runs one thread at a time, so on a host
with two cores the second sat idle. A tailer with at least `LOOKAHEAD_MIN_BYTES` unread now forks
a worker that frames and matches chunk after chunk and sends each chunk's matches through a pipe;
the tailer adopts them in order. The worker starts a share of the backlog further on
(`DAEMON_SHARE`, at a line start): the daemon reads and matches up to there itself meanwhile,
since the worker's part of the work costs more than the daemon's (measured on the bench corpus:
0.9 s of CPU against 0.75 s), and would otherwise leave the daemon waiting.

Exactly-once rests on three things:
- The worker only reads. It reads exactly as the tailer does (`read_checked`: the 64 bytes before
  the position again with each chunk, and the head), and stops at the first difference; the
  tailer then reads itself from where it stands, which checks again and handles the truncation.
- Each chunk says where it starts: the framer's state there (line number, held partial line) and
  the 64 bytes before it as the worker read them. The tailer adopts it only if its own framer and
  sample are exactly those, which links the worker's reads to the tailer's where they meet.
- The tailer adopts a chunk (its framer after the chunk, the sample, the matches) in one
  synchronous step, as `Tailer._consume` does with what it read, so a checkpoint sees all of a
  chunk or none of it. Chunks the worker sent but the tailer did not adopt are simply read again.
- A reload that changes the rules ends the worker: matches of the old rules are not adopted.

Why fork rather than a fresh interpreter: the worker needs the compiled rules and the framer with
its held partial line, and a fresh one would spend 0.3 s importing and compiling. The daemon has
threads (the observer, the committer, executor workers), and only the forking thread survives in
the child, so the child touches nothing another thread may have held a lock on: no logging, no
asyncio, no `print`; it reads with `pread`, runs the framer and the matcher (used only by the
event loop's thread), writes to its pipe with `os.write` and leaves with `os._exit`. It resets the
signals the daemon handles (their wake-up descriptor belongs to the daemon's loop) and asks the
kernel for SIGKILL when the daemon dies.

Not for multi-line sources (the worker would hold open events and their timers), gzip rotations,
or sources with `engine = "regex"` rules (their timeouts are counted in the daemon); nor on one
core, where the worker would only take turns with the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import gc
import marshal
import os
import signal
import struct
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

from logwarden.framing import FramerState, LineFramer
from logwarden.identity import TAIL_BYTES, read_checked
from logwarden.log import get_logger
from logwarden.rules import Match, SourceMatcher

log = get_logger(__name__)

# a backlog at least this large is matched ahead: scan's threshold for its two halves; a followed
# file rarely has this much unread, and smaller backlogs were not measured
LOOKAHEAD_MIN_BYTES = 64 * 1024 * 1024
# the share of the backlog the daemon matches itself before the worker's part, so that neither
# waits for the other long. Measured on the bench corpus, one session, start → lag 0: 0.0 gave
# 1.28-1.29 s, 0.1 gave 1.23-1.26 s, 0.2 gave 1.18-1.31 s (the daemon then the slower side)
DAEMON_SHARE = 0.1
_SEARCH_BYTES = 64 * 1024  # how far a line start is looked for past the split point
_COUNT_BYTES = 4 * 1024 * 1024  # the reads that count lines up to the worker's start
_PIPE_BYTES = 1024 * 1024  # a few chunks' matches in flight, so neither side waits for the other
_HEADER = struct.Struct("<Q")
_PR_SET_PDEATHSIG = 1  # prctl(2)
_F_SETPIPE_SZ = 1031  # fcntl(2), Linux
# signals the daemon handles: blocked across the fork (the child's handlers are the daemon's
# until it resets them, and they write to the daemon's wake-up descriptor); in the child they
# act as by default, but SIGINT: a ^C to a foreground daemon reaches its whole process group,
# and the worker must end with its daemon (the parent-death signal), not before it
_DAEMON_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
_running: set[int] = set()  # the workers alive (their pids)


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """What the worker works from: the tailer's open file, head and framer, where to start."""

    fd: int
    head: bytes  # the file's first bytes (whole: the worker checks them with every read)
    state: FramerState  # the tailer's framer state, which the worker counts lines from
    max_line_bytes: int
    start: int  # a line start past the tailer's position: the worker's first byte
    chunk_bytes: int


@dataclass(slots=True)
class Chunk:
    """One chunk as the worker read, framed and matched it: what the tailer adopts at once."""

    start: int  # the file offset of its first byte: the framer's position before it
    began: FramerState  # the framer's state before it
    held: bytes  # the partial line the framer held before it
    before: bytes  # the bytes just before `start`, as the worker read them
    read: int  # bytes of the file it consumed (the framer's position moved by this much)
    size: int  # the file's size at that read
    mtime: float
    framer: LineFramer  # the worker's framer after the chunk, partial line included
    sample: bytes  # the bytes just before the framer's position (up to TAIL_BYTES)
    lines: int
    block_bytes: int  # bytes of the whole lines framed (what a block sink counts)
    matches: list[Match]


def prctl() -> Any:
    """libc's prctl(2), resolved before a fork (dlopen in a forked child of a threaded process
    may wait for a lock another thread held); None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(parent: int, sig: signal.Signals, call: Any) -> None:
    """In a forked process: be sent `sig` when `parent` exits, so no worker runs on for nobody.
    `call` is `prctl()`, from before the fork; without it the worker finishes its work alone."""
    if call is not None:
        call(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # it exited before the request took effect
        os._exit(1)


def lookahead_min_bytes() -> int | None:
    """The unread bytes that start a worker; None: never. Never on one core, where it would only
    take turns with the daemon, or with `LOGWARDEN_LOOKAHEAD=0` (to compare, or to rule it out);
    `LOGWARDEN_LOOKAHEAD_MIN_BYTES` moves the threshold (the tests use a small one)."""
    cores = len(os.sched_getaffinity(0))
    if os.environ.get("LOGWARDEN_LOOKAHEAD") == "0" or cores < 2:
        return None
    if len(_running) >= cores - 1:  # several large files: one worker per spare core at a time
        return None
    try:
        return int(os.environ.get("LOGWARDEN_LOOKAHEAD_MIN_BYTES", LOOKAHEAD_MIN_BYTES))
    except ValueError:
        return LOOKAHEAD_MIN_BYTES


class Lookahead:
    """The daemon's end of one worker: the chunks it sends, in order, and its stopping."""

    def __init__(self, pid: int, stream: asyncio.StreamReader, transport: asyncio.BaseTransport,
                 *, matcher: SourceMatcher, where: ReadFrom, logger: Any) -> None:  # fmt: skip
        self.pid = pid
        self.log = logger.bind(worker=pid)
        self.matcher = matcher  # the rules it matches with: a reload that changes them ends it
        self.takes_over = where.start  # the tailer reads up to here itself
        self._stream = stream
        self._transport = transport
        self.max_line_bytes = where.max_line_bytes  # its framing: a reload may change the tailer's
        self._closed = False
        self.failed = False  # it died or failed: the tailer starts no other for its file

    @classmethod
    async def start(cls, where: ReadFrom, matcher: SourceMatcher, logger: Any) -> Lookahead:
        """Fork a worker that reads on from `where` and matches with `matcher`; `logger` names
        the file in what the daemon logs about it."""
        reader, writer = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # an older kernel keeps the default 64 KiB
            fcntl.fcntl(writer, _F_SETPIPE_SZ, _PIPE_BYTES)
        parent, call = os.getpid(), prctl()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _DAEMON_SIGNALS)
        try:
            with warnings.catch_warnings():  # Python 3.12 warns of fork with threads: see above
                warnings.filterwarnings("ignore", ".* is multi-threaded", DeprecationWarning)
                pid = os.fork()
        except OSError:
            os.close(reader)
            os.close(writer)
            raise
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if pid == 0:  # never returns
            os.close(reader)
            _work(parent, call, blocked, out=writer, where=where, matcher=matcher)
        _running.add(pid)
        os.close(writer)
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=_PIPE_BYTES)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(reader, "rb", buffering=0)
            )
        except BaseException:
            _reap(pid)
            raise
        return cls(pid, stream, transport, matcher=matcher, where=where, logger=logger)

    async def next(self) -> Chunk | None:
        """The next chunk, or None when the worker has ended: at the end of the file, at a change
        of its head or sample (truncation), or at a failure (logged). The tailer then reads on
        itself from where it stands."""
        try:
            header = await self._stream.readexactly(_HEADER.size)
            message: Any = marshal.loads(await self._stream.readexactly(*_HEADER.unpack(header)))
        except (asyncio.IncompleteReadError, OSError) as error:
            if not self._closed:  # (closed: the tailer stopped it, and knows)
                self.failed = True
                self.log.warning(
                    "the worker matching ahead ended without a word; reading on here",
                    error=None if isinstance(error, asyncio.IncompleteReadError) else str(error),
                )
            return None
        kind = message[0]
        if kind == "chunk":
            _, start, began, held, before, read, size, mtime, sample, state, pending = message[:11]
            lines, block_bytes, found = message[11:]
            framer = LineFramer(self.max_line_bytes, FramerState(*state), pending)
            matches = [Match(*fields) for fields in found]
            return Chunk(
                start, FramerState(*began), held, before, read, size, mtime, framer, sample,
                lines, block_bytes, matches,
            )  # fmt: skip
        if kind == "error":
            self.failed = True
            self.log.error("the worker matching ahead failed; reading on here", error=message[1])
        else:  # "end": the file's end, or a change the tailer's own read then handles
            self.log.debug("the worker matching ahead ended", reason=message[1])
        return None

    def close(self) -> None:
        """Stop the worker (if it still runs) and release the pipe."""
        self._closed = True
        self._transport.close()
        _reap(self.pid)


def _reap(pid: int) -> None:
    """SIGKILL, and collect its exit without blocking the loop: a worker stuck in a read of a
    failing disk dies only once the read returns, and the loop must go on (commits, watchdog)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (tests, or after it closed): just wait
                os.waitpid(pid, 0)
            else:
                loop.run_in_executor(None, _wait, pid)
                return
    _running.discard(pid)


def _wait(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    _running.discard(pid)


# ---------------------------------------------------------------- in the worker


def _work(
    parent: int, call: Any, mask: Iterable[int], *, out: int, where: ReadFrom,
    matcher: SourceMatcher,
) -> NoReturn:  # fmt: skip
    """The worker's whole life: chunks to `out` until the end, a change, or a failure."""
    code = 1
    try:
        # no collection: it would run finalizers of the daemon's objects (coroutines, tasks)
        # here, and touch every page of the heap, copying it
        gc.disable()
        signal.set_wakeup_fd(-1)  # the daemon's loop's, shared: a signal here must not wake it
        for sig in _DAEMON_SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGINT else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        die_with_parent(parent, signal.SIGKILL, call)
        _send(out, ("end", _read_ahead(out, where, matcher)))
        code = 0
    except BaseException:
        with contextlib.suppress(BaseException):
            _send(out, ("error", traceback.format_exc(limit=-3)))
    finally:
        os._exit(code)  # no atexit handlers, no flushing of buffers copied from the daemon


def _read_ahead(out: int, where: ReadFrom, matcher: SourceMatcher) -> str:
    """Read, frame and match chunk after chunk as `Tailer._read_to_end` does; why it stopped."""
    fd, head, chunk_bytes = where.fd, where.head, where.chunk_bytes
    state = where.state
    line_no = state.line_no
    if line_no is not None:
        line_no += count_newlines(fd, state.offset, where.start)
    framer = LineFramer(where.max_line_bytes, FramerState(where.start, line_no))
    sample: bytes | None = None  # the bytes before the position: unknown before the first read
    while True:
        position = framer.position
        overlap = min(TAIL_BYTES, position) if sample is None else len(sample)
        status, now_head, data = read_checked(
            fd, len(head), position - overlap, overlap + chunk_bytes
        )
        before = data[:overlap]
        if now_head != head or (sample is not None and before != sample):
            return "changed"
        fresh = data[overlap:]
        if not fresh:
            return "end of file"
        began, held = framer.state, framer.held
        blocks = framer.feed(fresh)
        sample = fresh[-TAIL_BYTES:] if len(fresh) >= TAIL_BYTES else (before + fresh)[-TAIL_BYTES:]
        found = []
        lines = block_bytes = 0
        for block in blocks:
            lines += block.line_count
            block_bytes += len(block.data)
            for match in matcher.scan(block):
                found.append((
                    match.rule, match.severity, match.report, match.offset, match.line_no,
                    match.line, match.truncated, match.captures,
                ))  # fmt: skip
        state = framer.state
        _send(out, (
            "chunk", position, (began.offset, began.line_no, began.skipping), held, before,
            len(fresh), status.st_size, status.st_mtime, sample,
            (state.offset, state.line_no, state.skipping), framer.held, lines, block_bytes, found,
        ))  # fmt: skip
        if len(fresh) < chunk_bytes:
            return "end of file"


def count_newlines(fd: int, start: int, end: int) -> int:
    """Newlines in the file's bytes [start, end): the lines that end there."""
    count, position = 0, start
    while position < end and (chunk := os.pread(fd, min(_COUNT_BYTES, end - position), position)):
        count += chunk.count(b"\n")
        position += len(chunk)
    return count


def line_start_after(fd: int, offset: int) -> int | None:
    """The first line start at or after `offset`, looked for within `_SEARCH_BYTES`."""
    newline = os.pread(fd, _SEARCH_BYTES, offset - 1).find(b"\n")
    return None if newline < 0 else offset + newline


def _send(out: int, message: tuple[Any, ...]) -> None:
    body = marshal.dumps(message)
    view = memoryview(_HEADER.pack(len(body)) + body)
    while view:
        view = view[os.write(out, view) :]
