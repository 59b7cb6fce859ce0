"""Multi-line events: a source's lines grouped into events by a `start` pattern (stack traces).

`EventFramer` wraps the `LineFramer` and holds the open event the way the line framer holds a
partial line: its `state.offset` is the open event's first byte, so the checkpoint never moves
past the start of an event still open, and a restart (after a SIGKILL too) reads the whole event
again instead of losing its head or sending it twice. Peers get this wrong in both directions:
Filebeat's journald input with multiline never advances its cursor, Fluent Bit holds the last
event until another line arrives (a quiet file keeps it for ever).

An event starts at a line `start` matches (RE2, searched in the line without its `\\r`); any other
line continues the open event. Lines before a file's first start line form an event of their
own, and so does the first line read after a resume point, a timeout or a cut event: whatever
opens an event is the first line seen with no event open. The open event ends at the next start
line, when no line arrived for `timeout` (`expire`, driven by the tailer's timer), when the file
ends (`flush`: rotated away and finished, deleted, `scan`'s end of file), or on request
(`close_event`: a stop, a truncation). The partial last line stays with the line framer meanwhile.

Limits. An event that would pass `max_lines` or `max_bytes` is emitted there, `truncated`, and
the lines that follow (up to the next start line) form a continuation event of their own, with
the same limits. Rejected: dropping that rest (Filebeat's `max_lines`), which loses whatever a
rule would have found in it ("Caused by: ...") and needs one more flag in the checkpoint; a
continuation is visible, matchable and bounded the same way. So an open event holds at most
`max_bytes`, and a line longer than that is cut at it.

Output. A single-line event is a line, so runs of them go out as ordinary line blocks (raw bytes,
sliced without copying where possible): the rules' whole-block prefilter stays the fast path for
the lines of a multiline source that are not part of a longer event. Only events of two or more
lines (and cut ones) go out as `event` blocks, one each.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import re2

from logwarden.config import MultilineConfig
from logwarden.framing import Block, FramerState, LineFramer, _cut
from logwarden.patterns import SpanSearch, expand, re2_options, span_search

NEWLINE = b"\n"


def make_framer(
    max_line_bytes: int,
    multiline: MultilineConfig | None,
    state: FramerState | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> LineFramer | EventFramer:
    """The framer a source's settings call for, resuming at `state`."""
    if multiline is None:
        return LineFramer(max_line_bytes, state)
    return EventFramer(max_line_bytes, multiline, state, clock)


def reframe(
    framer: LineFramer | EventFramer, max_line_bytes: int, multiline: MultilineConfig | None
) -> tuple[LineFramer | EventFramer, list[Block]]:
    """A reload's new settings on a framer in use: the blocks that must go out first (the open
    event, when multiline is switched off or changed) and the framer to continue with. It
    continues at the same `position`, so the reads already made are not made again."""
    if isinstance(framer, EventFramer):
        if framer.multiline == multiline:
            framer.max_line_bytes = max_line_bytes
            return framer, []
        blocks = framer.close_event()
        lines = framer.lines
    else:
        blocks, lines = [], framer
    lines.max_line_bytes = max_line_bytes
    if multiline is None:
        return lines, blocks
    return EventFramer(max_line_bytes, multiline, clock=time.monotonic, lines=lines), blocks


@functools.lru_cache(maxsize=64)
def _start_search(pattern: str) -> SpanSearch:
    """`start` as written, placeholders expanded (checked at load: `MultilineConfig`)."""
    return span_search(re2.compile(expand(pattern), re2_options()))


class EventFramer:
    """Frames one file's byte stream into line blocks and event blocks (see the module doc).

    The same interface as `LineFramer` (`feed`, `flush`, `state`, `position`, `pending_bytes`),
    plus the open event's end: `deadline` (on `clock`), `expire` and `close_event`.
    """

    def __init__(
        self,
        max_line_bytes: int,
        multiline: MultilineConfig,
        state: FramerState | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        lines: LineFramer | None = None,
    ) -> None:
        self.lines = lines if lines is not None else LineFramer(max_line_bytes, state)
        self.multiline = multiline
        self._is_start = _start_search(multiline.start)
        self._clock = clock
        # the open event: its lines' text (no `\r`), first line's offset and number, its size
        # as joined, whether it was cut, when its last line came, and its first line as read
        # (data, start, end), for as long as it is a single whole line (see `_close`)
        self._parts: list[bytes] = []
        self._offset = 0
        self._line_no: int | None = None
        self._size = 0
        self._truncated = False
        self._touched = 0.0
        self._raw: tuple[bytes, int, int] | None = None
        # closed single-line events not emitted yet: (data, start, end) slices, in file order
        self._run: list[tuple[bytes, int, int]] = []
        self._run_offset = 0
        self._run_line_no: int | None = None
        self._run_lines = 0

    @property
    def max_line_bytes(self) -> int:
        return self.lines.max_line_bytes

    @max_line_bytes.setter
    def max_line_bytes(self, value: int) -> None:
        self.lines.max_line_bytes = value

    @property
    def state(self) -> FramerState:
        """The resume point: the open event's first line, else where the line framer stands."""
        if self._parts:
            return FramerState(self._offset, self._line_no, False)
        return self.lines.state

    @property
    def position(self) -> int:
        return self.lines.position

    @property
    def pending_bytes(self) -> int:
        return self.lines.pending_bytes + self._size

    @property
    def deadline(self) -> float | None:
        """When the open event times out (on `clock`); None when no event is open."""
        return self._touched + self.multiline.timeout if self._parts else None

    def feed(self, chunk: bytes) -> list[Block]:
        return self._group(self.lines.feed(chunk), end=False)

    def flush(self) -> list[Block]:
        """The file ends here: the partial last line is a line, and the open event ends."""
        return self._group(self.lines.flush(), end=True)

    def close_event(self) -> list[Block]:
        """End the open event now (a stop, a rotated file drained); the partial line stays."""
        return self._group([], end=True)

    def expire(self, now: float) -> list[Block]:
        """The open event, if no line came for `timeout` before `now`."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        return self.close_event()

    # -- grouping

    def _group(self, blocks: list[Block], *, end: bool) -> list[Block]:
        out: list[Block] = []
        if blocks:
            self._touched = self._clock()
        for block in blocks:
            if block.truncated:  # one line, cut by the line framer
                self._line(block.data, None, block.offset, block.line_no, out, cut=True)
                continue
            data, line_no, start = block.data, block.line_no, 0
            while start < len(data):
                newline = data.find(NEWLINE, start)
                stop = len(data) if newline < 0 else newline
                after = len(data) if newline < 0 else newline + 1
                text = data[start:stop]
                if text.endswith(b"\r"):
                    text = text[:-1]
                self._line(text, (data, start, after), block.offset + start, line_no, out)
                if line_no is not None:
                    line_no += 1
                start = after
        if end:
            self._close(out, truncated=False)
        elif self._raw is not None and len(self._raw[0]) > self._raw[2] - self._raw[1]:
            # keep the open line's own bytes, not the whole chunk it came in (memory bound)
            data, start, stop = self._raw
            self._raw = (data[start:stop], 0, stop - start)
        self._emit_run(out)
        return out

    def _line(
        self,
        text: bytes,
        raw: tuple[bytes, int, int] | None,
        offset: int,
        line_no: int | None,
        out: list[Block],
        *,
        cut: bool = False,
    ) -> None:
        starts = self._starts(text)
        if self._parts and not starts:
            fits = (
                len(self._parts) < self.multiline.max_lines
                and self._size + 1 + len(text) <= self.multiline.max_bytes
            )
            if fits:
                self._parts.append(text)
                self._size += 1 + len(text)
                self._truncated = self._truncated or cut
                self._raw = None
                return
            self._close(out, truncated=True)  # the rest is a continuation event
        elif self._parts:
            self._close(out, truncated=False)
        if len(text) > self.multiline.max_bytes:
            text, cut = _cut(text, self.multiline.max_bytes), True
        self._parts = [text]
        self._size = len(text)
        self._offset, self._line_no = offset, line_no
        self._truncated = cut
        self._raw = None if cut else raw

    def _starts(self, text: bytes) -> bool:
        if not text.isascii():
            try:
                text.decode()
            except UnicodeDecodeError:  # as the rules see it: invalid bytes replaced
                text = text.decode("utf-8", "replace").encode()
        return self._is_start(text, 0, len(text))[0][0] >= 0

    def _close(self, out: list[Block], *, truncated: bool) -> None:
        """Emit the open event: a single whole line joins the run of lines, anything else is an
        event block of its own."""
        parts = self._parts
        if not parts:
            return
        truncated = truncated or self._truncated
        if len(parts) == 1 and not truncated and self._raw is not None:
            data, start, stop = self._raw
            run = self._run
            if run and run[-1][0] is data and run[-1][2] == start:
                run[-1] = (data, run[-1][1], stop)
            else:
                if not run:
                    self._run_offset, self._run_line_no = self._offset, self._line_no
                run.append(self._raw)
            self._run_lines += 1
        else:
            self._emit_run(out)
            out.append(
                Block(
                    NEWLINE.join(parts),
                    self._offset,
                    self._line_no,
                    truncated=truncated,
                    lines=len(parts),
                    event=True,
                )
            )
        self._parts = []
        self._size = 0
        self._truncated = False
        self._raw = None

    def _emit_run(self, out: list[Block]) -> None:
        run = self._run
        if not run:
            return
        if len(run) == 1 and run[0][1] == 0 and run[0][2] == len(run[0][0]):
            data = run[0][0]
        else:
            data = b"".join(memoryview(part)[start:stop] for part, start, stop in run)
        out.append(Block(data, self._run_offset, self._run_line_no, lines=self._run_lines))
        self._run = []
        self._run_lines = 0
