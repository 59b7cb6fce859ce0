"""Line framing against a naive reference: any chunking, any restart point, bounded memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logwarden.framing import Block, FramerState, LineFramer, split_lines

FRAGMENTS = [
    b"a",
    b"bc",
    b"\n",
    b"\r\n",
    b"\r",
    b"x" * 10,
    "é".encode(),
    b"\xff\xfe",
    b"\0",
    "€".encode(),
]


def reference(data: bytes, limit: int) -> list[tuple[int, int, bytes, bool]]:
    """Split on \\n, drop one \\r, a last line without newline is still a line, cut long lines."""
    lines = []
    offset = 0
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    for number, part in enumerate(parts, start=1):
        line = part[:-1] if part.endswith(b"\r") else part
        lines.append((offset, number, line, len(line) > limit))
        offset += len(part) + 1
    return lines


def flatten(blocks: list[Block]) -> list[tuple[int, int | None, bytes, bool]]:
    out: list[tuple[int, int | None, bytes, bool]] = []
    for block in blocks:
        if block.truncated:
            out.append((block.offset, block.line_no, block.data, True))
        else:
            out.extend((offset, number, line, False) for offset, number, line in split_lines(block))
    return out


def frame(data: bytes, limit: int, cuts: list[int], restarts: set[int]) -> list[Block]:
    """Feed `data` in pieces; at each restart point resume a new framer from the old one's state."""
    framer = LineFramer(limit)
    blocks: list[Block] = []
    position = 0
    for index, cut in enumerate([*sorted(set(cuts)), len(data)]):
        if index in restarts:
            framer = LineFramer(limit, framer.state)
            position = framer.state.offset  # a restarted framer re-reads its pending partial line
        blocks += framer.feed(data[position:cut] if cut > position else b"")
        position = max(position, cut)
    return blocks + framer.flush()


def assert_agrees(data: bytes, limit: int, blocks: list[Block]) -> None:
    got = flatten(blocks)
    expected = reference(data, limit)
    assert [(o, n, t) for o, n, _, t in got] == [(o, n, t) for o, n, _, t in expected]
    for (_, _, line, truncated), (_, _, full, _) in zip(got, expected, strict=True):
        if truncated:
            assert full.startswith(line) and limit - 3 <= len(line) <= limit
        else:
            assert line == full


@settings(max_examples=400)
@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS), max_size=60),
    limit=st.integers(min_value=4, max_value=24),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=12),
    restarts=st.sets(st.integers(min_value=0, max_value=12), max_size=4),
)
def test_framing_matches_reference(
    pieces: list[bytes], limit: int, cuts: list[int], restarts: set[int]
) -> None:
    data = b"".join(pieces)
    assert_agrees(data, limit, frame(data, limit, [c for c in cuts if c <= len(data)], restarts))


def test_partial_line_waits_for_its_newline() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"abc") == []
    assert framer.state == FramerState(0, 1, False)
    [block] = framer.feed(b"def\nnext")
    assert block == Block(b"abcdef\n", 0, 1)
    assert framer.state == FramerState(7, 2, False)
    assert framer.flush() == [Block(b"next", 7, 2)]


def test_crlf_split_across_chunks() -> None:
    framer = LineFramer(5)
    blocks = framer.feed(b"hello\r") + framer.feed(b"\nworld\r\n")
    assert flatten(blocks) == [(0, 1, b"hello", False), (7, 2, b"world", False)]


def test_giant_line_is_cut_and_memory_stays_bounded() -> None:
    limit = 64 * 1024
    framer = LineFramer(limit)
    chunk = b"y" * (1024 * 1024)
    blocks = framer.feed(b"start\n" + chunk)
    for _ in range(200):  # 200 MiB of one line, never more than `limit` held
        blocks += framer.feed(chunk)
        assert framer.pending_bytes <= limit + 1
    blocks += framer.feed(b"tail\nafter\n")
    lines = flatten(blocks)
    assert lines[0] == (0, 1, b"start", False)
    assert lines[1][1:] == (2, b"y" * limit, True)
    assert lines[2] == (6 + 201 * 1024 * 1024 + 5, 3, b"after", False)


def test_cut_never_splits_a_utf8_character() -> None:
    framer = LineFramer(5)
    [block] = framer.feed("abcd€€€\n".encode())
    assert block.truncated and block.data == b"abcd"
    assert block.data.decode() == "abcd"


def test_resume_while_skipping_a_long_line() -> None:
    framer = LineFramer(4)
    blocks = framer.feed(b"0123456789")
    assert blocks == [Block(b"0123", 0, 1, truncated=True)]
    resumed = LineFramer(4, framer.state)
    assert framer.state == FramerState(10, 1, True)
    assert flatten(resumed.feed(b"abc\nok\n")) == [(14, 2, b"ok", False)]


def test_line_numbers_unknown_stay_unknown() -> None:
    framer = LineFramer(100, FramerState(50, None, False))
    [block] = framer.feed(b"a\nb\n")
    assert flatten([block]) == [(50, None, b"a", False), (52, None, b"b", False)]
