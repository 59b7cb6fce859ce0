"""Line framing: turn chunks of bytes into blocks of whole lines, with bounded memory.

The unit handed to the rules is a `Block`, a run of whole lines, not a single line: the rules
search a block in one RE2 pass, so the lines that match nothing cost no Python at all. Lines end at
`\\n`; one trailing `\\r` is dropped by whoever reads a line out of a block (`split_lines`).
A line longer than `max_line_bytes` is cut there and the rest skipped up to its newline, so even a
line of gigabytes without a newline holds at most `max_line_bytes` in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

NEWLINE = b"\n"


@dataclass(frozen=True, slots=True)
class Block:
    """A run of whole lines of one file.

    `data` holds one or more lines, each ending in `\\n`, except that the last line of a file read
    to its end (`LineFramer.flush`) may lack it. A `truncated` block holds exactly one line, cut
    to `max_line_bytes` (without its newline; the rest of that line was skipped).
    An `event` block holds exactly one multi-line event (`multiline.EventFramer`): its lines'
    text (each without its `\\r`) joined by `\\n`, with no final newline, matched as one line;
    `truncated` then says the event was cut (a line of it cut, or `max_lines`/`max_bytes`).
    """

    data: bytes
    offset: int  # byte offset of data[0] in the file
    line_no: int | None  # 1-based number of the first line, None when unknown
    truncated: bool = False
    # its lines, when the framer counted them already: the reader, the rules and the counters
    # each ask, and counting a megabyte of newlines four times was a tenth of a catch-up
    lines: int | None = field(default=None, compare=False)
    event: bool = False

    @property
    def end(self) -> int:
        """Offset just past this block's data (not past the skipped rest of a truncated line)."""
        return self.offset + len(self.data)

    @property
    def line_count(self) -> int:
        if self.lines is not None:
            return self.lines
        if self.truncated or not self.data.endswith(NEWLINE):
            return self.data.count(NEWLINE) + 1
        return self.data.count(NEWLINE)


@dataclass(frozen=True, slots=True)
class FramerState:
    """Where framing stands in a file: what the checkpoint stores to resume exactly there.

    `offset` is the first byte not yet part of an emitted block. When `skipping` is true, the
    framer is inside a long line whose first `max_line_bytes` were already emitted: on resume it
    must discard up to the next newline instead of emitting that tail as a new line.
    """

    offset: int = 0
    line_no: int | None = 1
    skipping: bool = False


def split_lines(block: Block) -> Iterator[tuple[int, int | None, bytes]]:
    """Yield `(offset, line_no, line)` for each line of a block, newline and one `\\r` removed.

    This is the slow path (one Python object per line): for the few candidate lines the rules
    look at, for tests, and for blocks that need per-line handling.
    """
    offset, line_no = block.offset, block.line_no
    data = block.data
    start = 0
    while start < len(data):
        end = data.find(NEWLINE, start)
        stop = len(data) if end < 0 else end
        line = data[start:stop]
        if line.endswith(b"\r"):
            line = line[:-1]
        yield offset + start, line_no, line
        if line_no is not None:
            line_no += 1
        if end < 0:
            break
        start = end + 1


def _cut(line: bytes, limit: int) -> bytes:
    """The first `limit` bytes of a line, backed off so no UTF-8 character is split."""
    cut = limit
    while cut > limit - 3 and cut > 0 and (line[cut] & 0xC0) == 0x80:
        cut -= 1
    return line[:cut]


class LineFramer:
    """Frames one file's byte stream into Blocks; keeps at most `max_line_bytes` of a partial line.

    Feed it chunks in file order; it returns the blocks completed so far. `state` is the exact
    resume point (what a checkpoint stores); a framer built from a state continues where the old
    one stopped. The partial last line is held until its newline arrives (`abc`, later `def\\n`
    is one line `abcdef`), or until `flush` says the file will not grow any more.
    """

    def __init__(
        self, max_line_bytes: int, state: FramerState | None = None, held: bytes = b""
    ) -> None:
        """`held`: the partial line already fed past `state.offset` (a framer handed over
        whole, as `lookahead` does; a checkpoint resumes without it and reads it again)."""
        state = state or FramerState()
        self.max_line_bytes = max_line_bytes
        self._offset = state.offset  # file offset of the first byte not yet in an emitted block
        self._line_no = state.line_no
        self._skipping = state.skipping
        self._pending = (
            held  # the partial line at self._offset: at most max_line_bytes (+1 for a \r)
        )

    @property
    def state(self) -> FramerState:
        return FramerState(self._offset, self._line_no, self._skipping)

    # a line framer never holds an event open (`multiline.EventFramer` does): nothing to time out
    deadline: float | None = None

    def close_event(self) -> list[Block]:
        return []

    def expire(self, now: float) -> list[Block]:
        return []

    @property
    def position(self) -> int:
        """File offset of the next byte to feed."""
        return self._offset + len(self._pending)

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    @property
    def held(self) -> bytes:
        """The partial line fed but not emitted yet (what `position` is ahead of `state` by)."""
        return self._pending

    def feed(self, chunk: bytes) -> list[Block]:
        """Frame the next chunk of the file; return the blocks it completes."""
        blocks: list[Block] = []
        start = 0
        if self._skipping:
            newline = chunk.find(NEWLINE)
            if newline < 0:
                self._offset += len(chunk)
                return blocks
            start = newline + 1
            self._offset += start
            self._skipping = False
            self._advance_lines(1)
        last_newline = chunk.rfind(NEWLINE, start)
        if last_newline < 0:
            self._hold(chunk[start:], blocks)
            return blocks
        if self._pending or start or last_newline + 1 < len(chunk):
            # one copy: the held partial line and the chunk's whole lines, joined in place
            data = b"".join((self._pending, memoryview(chunk)[start : last_newline + 1]))
        else:
            data = chunk
        self._pending = b""
        self._emit_lines(data, blocks)
        self._hold(chunk[last_newline + 1 :], blocks)
        return blocks

    def flush(self) -> list[Block]:
        """The file ends here (scan, or a rotated-away file): emit the partial line as the last."""
        blocks: list[Block] = []
        if self._pending:
            data, self._pending = self._pending, b""
            self._emit_lines(data, blocks)
        self._skipping = False
        return blocks

    def _hold(self, tail: bytes, blocks: list[Block]) -> None:
        """Keep a partial line; once it outgrows the limit, emit its cut and skip the rest."""
        if not tail:
            return
        pending = self._pending + tail if self._pending else tail
        # a trailing "\r" may be the first half of a CRLF, which does not count toward the limit
        if len(pending) - pending.endswith(b"\r") <= self.max_line_bytes:
            self._pending = pending
            return
        blocks.append(
            Block(_cut(pending, self.max_line_bytes), self._offset, self._line_no, truncated=True)
        )
        self._offset += len(pending)
        self._pending = b""
        self._skipping = True

    def _emit_lines(self, data: bytes, blocks: list[Block]) -> None:
        """Emit whole lines as blocks, splitting out any line over the limit as a truncated block.

        A line longer than the limit contains an aligned window of half the limit with no newline
        in it, so a few `find` calls per block rule long lines out without visiting every line.
        """
        limit = self.max_line_bytes
        stride = max(limit // 2, 1)
        start = 0
        window = 0
        while window < len(data):
            if data.find(NEWLINE, window, window + stride) >= 0:
                window += stride
                continue
            line_start = data.rfind(NEWLINE, start, window) + 1 if window > start else start
            line_end = data.find(NEWLINE, window)
            line_stop = len(data) if line_end < 0 else line_end
            length = (
                line_stop - line_start - (1 if data[line_start:line_stop].endswith(b"\r") else 0)
            )
            next_start = len(data) if line_end < 0 else line_end + 1
            if length > limit:
                if line_start > start:
                    self._emit(data[start:line_start], blocks)
                line = data[line_start:line_stop]
                blocks.append(Block(_cut(line, limit), self._offset, self._line_no, truncated=True))
                self._offset += next_start - line_start
                self._advance_lines(1)
                start = next_start
            window = max(window + stride, next_start)
        if start < len(data):
            self._emit(data[start:] if start else data, blocks)

    def _emit(self, data: bytes, blocks: list[Block]) -> None:
        lines = data.count(NEWLINE) + (0 if data.endswith(NEWLINE) else 1)
        blocks.append(Block(data, self._offset, self._line_no, lines=lines))
        self._offset += len(data)
        self._advance_lines(lines)

    def _advance_lines(self, count: int) -> None:
        if self._line_no is not None:
            self._line_no += count
