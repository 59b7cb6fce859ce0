"""Tailing on the real filesystem with real asyncio: rotation, truncation, restarts, odd files.

No mocks of the filesystem: every test writes, renames and truncates real files and drives the
manager the way the watcher and the rescan timer do (`changed`, `rescan`), with bounded waits.
"""

from __future__ import annotations

import asyncio
import glob
import gzip
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

import logwarden.tail
from logcapture import RecordingLog
from logwarden.config import Config, DaemonConfig, MultilineConfig, SourceConfig
from logwarden.framing import Block, FramerState, split_lines
from logwarden.globs import PathMatcher, first_matching
from logwarden.identity import FileCheckpoint, Fingerprint
from logwarden.origin import SourceRef
from logwarden.resume import CopyRead
from logwarden.rules import Match, SourceMatcher
from logwarden.tail import TailManager
from logwarden.watch import Changes

pytestmark = pytest.mark.usefixtures("capture_logs")

WAIT_S = 5.0
MAX_LINE_BYTES = 1024

# ---------------------------------------------------------------- test doubles (not of the filesystem)


@dataclass(frozen=True)
class Line:
    path: str
    inode: int
    offset: int
    line_no: int | None
    text: str


class Sink:
    """A BlockSink that keeps every line it was given, in order."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.room = asyncio.Event()
        self.room.set()

    def accept(self, source: SourceRef, blocks: list[Block]) -> None:
        for block in blocks:
            for offset, line_no, line in split_lines(block):
                self.lines.append(Line(source.path, source.inode, offset, line_no, line.decode()))

    def accept_matched(
        self, source: SourceRef, matches: list[Match], lines: int, block_bytes: int
    ) -> None:
        raise AssertionError("this sink has no rules: nothing is matched ahead for it")

    def matcher_ahead(self, source: str) -> SourceMatcher | None:
        return None  # lookahead is tested in test_lookahead.py, with rules

    async def wait_for_room(self) -> None:
        await self.room.wait()

    def has_room(self) -> bool:
        return self.room.is_set()

    def texts(self, path: str | None = None) -> list[str]:
        return [line.text for line in self.lines if path is None or line.path == path]


class Index:
    """Globs → source, and discovery by glob: what watch.PathIndex does, without depending on it."""

    def __init__(self, sources: dict[str, SourceConfig]) -> None:
        self.sources = sources
        self.matchers = [(name, PathMatcher(s.paths, s.exclude)) for name, s in sources.items()]

    def source_of(self, path: str) -> str | None:
        return first_matching(path, self.matchers)

    def discover(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for source in self.sources.values():
            for pattern in source.paths:
                for path in glob.glob(pattern, recursive=True):
                    name = self.source_of(path)
                    if name is not None:
                        found.setdefault(os.path.abspath(path), name)
        return found


def make_config(
    directory: Path, *patterns: str, start_at: str = "beginning", follow: bool = False,
    exclude: Sequence[str] = (), extra: dict[str, SourceConfig] | None = None,
    multiline: MultilineConfig | None = None,
) -> Config:  # fmt: skip
    source = SourceConfig(
        name="app", paths=tuple(str(directory / p) for p in patterns or ("*.log",)), exclude=tuple(exclude),
        start_at=start_at, follow_symlinks=follow, max_line_bytes=MAX_LINE_BYTES,
        multiline=multiline,
    )  # fmt: skip
    daemon = DaemonConfig(
        state_dir=directory / "state",
        commit_interval=0.05,
        rescan_interval=1.0,
        read_chunk_bytes=4096,
    )
    return Config(
        path=directory / "x.toml",
        daemon=daemon,
        sources={"app": source, **(extra or {})},
        rules={},
        reports={},
    )


@dataclass
class Rig:
    """One watched directory, a sink and a log shared by every manager started on it."""

    directory: Path
    config: Config
    sink: Sink = field(default_factory=Sink)
    log: RecordingLog = field(default_factory=RecordingLog)

    @classmethod
    def on(cls, tmp_path: Path, *patterns: str, **options: Any) -> Rig:
        directory = tmp_path / "logs"
        directory.mkdir(exist_ok=True)
        return cls(directory, make_config(directory, *patterns, **options))

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def write(self, name: str, text: str) -> str:
        path = self.path(name)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
        return path

    async def start(
        self,
        restored: Sequence[FileCheckpoint] = (),
        known: Iterable[str] = (),
        rotated_after_ns: int | None = None,
        copies_read: Sequence[CopyRead] = (),
    ) -> TailManager:
        index = Index(dict(self.config.sources))
        manager = TailManager(
            self.config, index, self.sink, restored, frozenset(known),
            rotated_after_ns=rotated_after_ns, copies_read=copies_read,
        )  # fmt: skip
        await manager.start()
        return manager

    async def restart(self, manager: TailManager) -> TailManager:
        """Stop as a crash would leave it (lines after the snapshot are cut) and start again
        from what a commit at that moment would have saved, as the daemon does."""
        snapshot = manager.snapshot()
        rotated_after = manager.rotated_after()
        copies_read = manager.copies_read(rotated_after)
        kept = len(self.sink.lines)
        await manager.close()
        del self.sink.lines[kept:]
        return await self.start(snapshot, self.config.sources, rotated_after, copies_read)

    async def nudge(self, manager: TailManager) -> None:
        paths = frozenset(self.path(name) for name in os.listdir(self.directory))
        manager.changed(Changes(frozenset(), paths, rediscover=True))
        await manager.rescan()


def grown(*paths: str) -> Changes:
    """What the watcher delivers for appends: the readers of these paths read."""
    return Changes(frozenset(paths), frozenset(), rediscover=False)


async def until(
    predicate: Callable[[], bool], what: str = "condition", limit: float = WAIT_S
) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def settle(
    rig: Rig, manager: TailManager, expected: Callable[[], bool], what: str = "lines"
) -> None:
    """Tell the manager everything may have changed, then wait (bounded) for `expected`."""
    await rig.nudge(manager)
    await until(expected, what)


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 30)

    asyncio.run(bounded())


def lines(prefix: str, count: int, start: int = 0) -> str:
    return "".join(f"{prefix}-{index}\n" for index in range(start, start + count))


def names(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{index}" for index in range(start, start + count)]


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def size_of(path: str) -> int:
    return os.stat(path).st_size


def rewrite(path: str, text: str) -> None:
    """Truncate and write in place: the same inode with other content."""
    with open(path, "r+", encoding="utf-8") as handle:
        handle.truncate(0)
        handle.write(text)


def copy_bytes(source: str, target: str, limit: int | None = None) -> None:
    with open(source, "rb") as reader, open(target, "wb") as writer:
        writer.write(reader.read(limit))


def gzip_away(path: str) -> None:
    """What logrotate's `compress` does: `path.gz` written whole, then `path` removed."""
    Path(path + ".gz").write_bytes(gzip.compress(Path(path).read_bytes()))
    os.unlink(path)


def write_bytes(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------- following


def test_live_appends_are_read_in_order(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", lines("a", 3))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == names("a", 3))
        rig.write("app.log", lines("a", 200, 3))
        manager.changed(grown(path))
        await until(lambda: len(rig.sink.lines) == 203)
        assert rig.sink.texts() == names("a", 203)
        assert [line.line_no for line in rig.sink.lines] == list(range(1, 204))
        offsets = [line.offset for line in rig.sink.lines]
        assert offsets[1] == len("a-0\n")
        stats = manager.stats()
        assert [(s.path, s.state, s.lines, s.lag_bytes) for s in stats] == [
            (path, "following", 203, 0)
        ]
        assert manager.total_lines == 203
        assert manager.total_bytes == size_of(path)
        await manager.close()

    run(main)


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "first\nabc")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["first"])
        await asyncio.sleep(0.05)
        assert rig.sink.texts() == ["first"]
        rig.write("app.log", "def\n")
        manager.changed(grown(path))
        await until(lambda: len(rig.sink.lines) == 2)
        assert rig.sink.lines[1] == Line(path, os.stat(path).st_ino, 6, 2, "abcdef")
        await manager.close()

    run(main)


def test_partial_line_waits_across_a_restart(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    rig.write("app.log", "first\nabc")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["first"])
        snapshot = manager.snapshot()
        assert [cp.framer for cp in snapshot] == [FramerState(6, 2, False)]  # at the line start
        manager = await rig.restart(manager)
        rig.write("app.log", "def\n")
        await settle(rig, manager, lambda: len(rig.sink.lines) == 2)
        assert rig.sink.texts() == ["first", "abcdef"]
        assert rig.sink.lines[1].line_no == 2
        await manager.close()

    run(main)


def test_drain_reads_to_the_end_but_keeps_the_partial_line(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        rig.write("app.log", lines("x", 50) + "part")
        await manager.drain()  # no event: drain must find the data itself
        assert rig.sink.texts() == ["one", *names("x", 50)]
        assert manager.snapshot()[0].framer.offset == size_of(path) - len("part")
        await manager.close()

    run(main)


def test_snapshot_is_exactly_what_was_delivered(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    rig.write("a.log", "")
    rig.write("b.log", "")

    def check(snapshot: list[FileCheckpoint]) -> None:
        for checkpoint in snapshot:
            mine = [line for line in rig.sink.lines if line.inode == checkpoint.inode]
            end = mine[-1].offset + len(mine[-1].text) + 1 if mine else 0
            assert checkpoint.framer.offset == end
            assert checkpoint.framer.line_no == len(mine) + 1

    async def main() -> None:
        manager = await rig.start()
        for round_ in range(40):
            rig.write("a.log", lines(f"a{round_}", 37) + "tail-a")
            rig.write("b.log", "x" * 300 + "\n" + lines(f"b{round_}", 5))
            rig.write("a.log", "\n")
            manager.changed(grown(rig.path("a.log"), rig.path("b.log")))
            for _ in range(3):
                await asyncio.sleep(0)
                check(manager.snapshot())
        await until(lambda: len(rig.sink.lines) == 40 * (38 + 6))
        check(manager.snapshot())
        await manager.close()

    run(main)


# ---------------------------------------------------------------- rotation


def test_rename_rotation_while_far_behind_drains_the_old_file_first(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)  # *.log: the rotated app.log.1 is outside the globs
    path = rig.write("app.log", "start\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["start"])
        rig.write("app.log", lines("old", 3000) + "unterminated")  # ~30 KiB behind, no event
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", lines("new", 100))
        await settle(rig, manager, lambda: len(rig.sink.lines) >= 3101)
        assert rig.sink.texts()[:3101] == ["start", *names("old", 3000), *names("new", 100)]
        # the old file closes once quiet for the grace period; its partial line is its last
        await until(lambda: "unterminated" in rig.sink.texts(), "the old file's last line", limit=5)
        assert [s.path for s in manager.stats()] == [path]
        assert Counter(rig.sink.texts()).most_common(1)[0][1] == 1
        await manager.close()

    run(main)


def test_two_rotations_between_checks(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, "app.log*")
    path = rig.write("app.log", lines("A", 10))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 10)
        rig.write("app.log", lines("A", 10, 10))
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", lines("B", 20))
        os.rename(rig.path("app.log.1"), rig.path("app.log.2"))
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", lines("C", 5))
        await settle(rig, manager, lambda: len(rig.sink.lines) == 45)
        texts = rig.sink.texts()
        assert sorted(texts) == sorted(names("A", 20) + names("B", 20) + names("C", 5))
        for prefix, count in (("A", 20), ("B", 20), ("C", 5)):
            assert [t for t in texts if t.startswith(prefix)] == names(prefix, count)
        by_path = {s.path: s.inode for s in manager.stats()}
        assert set(by_path) == {path, rig.path("app.log.1"), rig.path("app.log.2")}
        await manager.close()

    run(main)


def test_rotation_while_stopped_drains_the_renamed_file_from_its_offset(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", lines("old", 5))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 5)
        snapshot = manager.snapshot()
        await manager.close()
        rig.write("app.log", lines("old", 5, 5))
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", lines("new", 3))
        manager = await rig.start(snapshot, known={"app"})
        await until(lambda: len(rig.sink.lines) == 13)
        assert rig.sink.texts() == names("old", 10) + names("new", 3)
        await manager.close()

    run(main)


def test_deleted_file_is_drained_and_its_partial_line_emitted(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        before = open_fds()
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        rig.write("app.log", "two\nthree")
        os.unlink(path)
        await settle(rig, manager, lambda: len(rig.sink.lines) == 3)
        assert rig.sink.texts() == ["one", "two", "three"]
        await until(lambda: manager.stats() == [], "the deleted file to be closed")
        assert open_fds() == before
        assert manager.snapshot() == []
        await manager.close()

    run(main)


# ---------------------------------------------------------------- truncation


def test_copytruncate_with_the_copy_outside_the_globs_restarts_at_zero(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)  # *.log: app.log.1 is outside the globs
    path = rig.write("app.log", lines("a", 20))
    copy = rig.path("app.log.1")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 20)
        rig.write("app.log", lines("unread", 3) + "partial")  # written after the last read
        shutil.copy(path, copy)
        rig.write("app.log", lines("gap", 2))  # between the copy and the truncation: lost
        os.truncate(path, 0)
        rig.write("app.log", lines("b", 4))
        await settle(rig, manager, lambda: len(rig.sink.lines) >= 27)
        assert rig.sink.texts(path) == names("a", 20) + names("b", 4)
        assert [line.line_no for line in rig.sink.lines if line.path == path][20:] == [1, 2, 3, 4]
        # the copy is drained from where the file was read, and closed once quiet
        assert rig.sink.texts(copy)[:3] == names("unread", 3)
        await until(lambda: rig.sink.texts(copy) == [*names("unread", 3), "partial"], limit=5)
        assert manager.stats()[0].path == path and len(manager.stats()) == 1
        [warning] = [kw for level, event, kw in rig.log.events if "truncated" in event]
        assert warning["old_offset"] == len(lines("a", 20)) and warning["path"] == path
        await manager.close()

    run(main)


def test_copytruncate_with_the_copy_inside_the_globs_sends_nothing_twice(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, "app.log*")
    path = rig.write("app.log", lines("a", 20))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 20)
        rig.write("app.log", lines("a", 5, 20) + "part")  # not read yet: the copy has it
        shutil.copy(path, rig.path("app.log.1"))
        os.truncate(path, 0)
        rig.write("app.log", lines("b", 4))
        await settle(rig, manager, lambda: len(rig.sink.lines) >= 29)
        await asyncio.sleep(0.1)
        texts = rig.sink.texts()
        assert sorted(texts) == sorted(names("a", 25) + names("b", 4))
        copy_lines = [line for line in rig.sink.lines if line.path == rig.path("app.log.1")]
        assert [line.text for line in copy_lines] == names("a", 5, 20)
        assert copy_lines[0].line_no == 21  # the copy continues the original's numbering
        await manager.close()

    run(main)


@pytest.mark.parametrize("copy", [False, True], ids=["no copy", "copy inside the globs"])
def test_a_truncation_hands_on_the_open_multiline_event_once(tmp_path: Path, copy: bool) -> None:
    """The open event's lines were read before the truncation: without a copy they go out as
    the event they are; with a copy (copytruncate) the copy, read from the event's start,
    carries them, and the original's framer drops them: exactly once either way. (The copy is
    followed at its own path: its event ends by its timeout.)"""
    rig = Rig.on(tmp_path, "app.log*" if copy else "*.log")
    rig.config = make_config(
        rig.directory, "app.log*" if copy else "*.log",
        multiline=MultilineConfig(start="^2026", timeout=1.0 if copy else 3600),
    )  # fmt: skip
    path = rig.write("app.log", "2026 a\n  b\n")

    async def main() -> None:
        manager = await rig.start()
        [tailer] = manager._tailers.values()
        await until(lambda: tailer.framer.position == os.path.getsize(path), "the event read")
        assert rig.sink.lines == []  # open: nothing handed on yet
        if copy:
            shutil.copy(path, rig.path("app.log.1"))
        os.truncate(path, 0)
        rig.write("app.log", "2026 c\n2026 d\n")
        expected = ["  b", "2026 a", "2026 c", *(["2026 d"] if copy else [])]  # d: timed out
        await settle(rig, manager, lambda: len(rig.sink.lines) >= len(expected))
        await asyncio.sleep(0.1)
        assert sorted(rig.sink.texts()) == expected
        await manager.close()

    run(main)


class HeldSink(Sink):
    """A sink that has no room after its first lines, until the test makes some: the reader
    stops one chunk in, having seen the file's size but not read that far (a daemon behind)."""

    def accept(self, source: SourceRef, blocks: list[Block]) -> None:
        first = not self.lines
        super().accept(source, blocks)
        if first:
            self.room.clear()


def padded(prefix: str, count: int, start: int = 0) -> str:
    """Lines of exactly 100 bytes."""
    return "".join(
        f"{prefix}-{index:04d} ".ljust(99, "x") + "\n" for index in range(start, start + count)
    )


def test_copytruncate_while_behind_counts_what_neither_was_read_nor_is_in_the_copy(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path / "logs", make_config(tmp_path / "logs", "*.log"), sink=HeldSink())
    rig.directory.mkdir()
    path = rig.write("app.log", padded("a", 120))  # 12,000 bytes; chunks of 4096

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 40)  # one chunk: 40 lines and 96 bytes more
        copy_bytes(path, rig.path("app.log.1"), 6000)  # a copy of less than the file held
        os.truncate(path, 0)
        rig.write("app.log", padded("b", 2))
        rig.sink.room.set()
        await settle(rig, manager, lambda: len(rig.sink.lines) == 40 + 20 + 2)
        assert rig.sink.texts(rig.path("app.log.1")) == [line[:-1] for line in
            padded("a", 20, 40).splitlines(keepends=True)]  # fmt: skip
        # bytes 6000 to 12000: seen in the file, never read, not in the copy
        assert manager.possibly_lost_bytes == 6000
        assert manager.unmeasured_truncations == 0
        [(level, _, fields)] = [e for e in rig.log.events if "truncated" in e[1]]
        assert level == "warning" and fields["possibly_lost_bytes"] == 6000
        await manager.close()

    run(main)


def test_copytruncate_with_nothing_lost_is_routine(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)  # *.log: app.log.1 is outside the globs
    path = rig.write("app.log", lines("a", 20))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 20)
        rig.write("app.log", lines("a", 5, 20))  # not read yet: the copy holds it
        shutil.copy(path, rig.path("app.log.1"))
        os.truncate(path, 0)
        rig.write("app.log", lines("b", 2))
        await settle(rig, manager, lambda: len(rig.sink.lines) == 27)
        assert rig.log.warnings() == []
        assert rig.log.count("info", "its copy holds what was not read") == 1
        assert manager.possibly_lost_bytes == 0 and manager.unmeasured_truncations == 0
        await manager.close()

    run(main)


def test_truncation_without_a_copy_is_an_unknown_loss(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", lines("a", 20) + "partial")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 20)
        os.truncate(path, 0)
        rig.write("app.log", lines("b", 2))
        await settle(rig, manager, lambda: len(rig.sink.lines) == 22)
        # the partial line was read but never became a line; what came after it is unknown
        [(level, _, fields)] = [e for e in rig.log.events if "truncated" in e[1]]
        assert level == "warning" and fields["possibly_lost_bytes"] == "unknown"
        assert fields["lost_bytes_known"] == len("partial")
        assert manager.possibly_lost_bytes == len("partial")
        assert manager.unmeasured_truncations == 1
        await manager.close()

    run(main)


@pytest.mark.parametrize("same_start", ["", "first line", "whole head"])
def test_truncate_and_regrow_past_the_offset_is_caught_by_content(
    tmp_path: Path, same_start: str
) -> None:
    # "whole head": the first 1 KiB is identical too, so only the bytes before the offset differ
    prefix = {"": "", "first line": "header\n", "whole head": lines("same", 200)}[same_start]
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", (prefix or "HEADER\n") + lines("old", 10))
    before = len((prefix or "HEADER\n").splitlines()) + 10

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == before)
        fresh = (prefix or "header\n") + lines("new", 30)
        assert len(fresh) > size_of(path)
        rewrite(path, fresh)  # same inode: truncated and regrown past the offset in one go
        after = before + len(fresh.splitlines())
        await settle(rig, manager, lambda: len(rig.sink.lines) == after)
        assert rig.sink.texts()[before:] == fresh.splitlines()
        assert rig.sink.lines[before].offset == 0 and rig.sink.lines[before].line_no == 1
        await manager.close()

    run(main)


def test_a_file_rotated_away_is_followed_while_it_grows(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        before = open_fds()
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", "new\n")
        await rig.nudge(manager)
        for number in range(5):  # a writer that has not reopened yet
            await asyncio.sleep(0.3)
            rig.write("app.log.1", f"late-{number}\n")
            await rig.nudge(manager)
        await until(lambda: "late-4" in rig.sink.texts())
        assert [t for t in rig.sink.texts() if t.startswith("late")] == names("late", 5)
        assert {s.state for s in manager.stats()} == {"following", "draining"}
        await until(lambda: len(manager.stats()) == 1, "the rotated file to close", limit=5)
        assert open_fds() == before + 1
        await manager.close()

    run(main)


def test_a_copy_found_read_through_is_not_read_again_after_a_crash(tmp_path: Path) -> None:
    # copytruncate, the copy found holding only lines read, then a crash within the moment that
    # `rotated_after` leaves open: the checkpoint's `copies_read` keeps the copy from being taken
    # for a rotated file never read (found by the tailer model: its line was delivered twice)
    rig = Rig.on(tmp_path)

    async def main() -> None:
        manager = await rig.start()
        path = rig.write("a.log", "a1:\n")
        await rig.nudge(manager)
        await until(lambda: rig.sink.texts() == ["a1:"])
        shutil.copy(path, rig.path("a.log.1.bak"))
        os.truncate(path, 0)
        rig.write("a.log", "a2:\n")
        await rig.nudge(manager)
        await until(lambda: "a2:" in rig.sink.texts())  # the truncation was handled
        manager = await rig.restart(manager)
        await rig.nudge(manager)
        rig.write("a.log", "a3:\n")
        await rig.nudge(manager)
        await until(lambda: "a3:" in rig.sink.texts())
        assert rig.sink.texts() == ["a1:", "a2:", "a3:"]
        await manager.close()

    run(main)


def test_a_late_write_to_a_finished_rotated_file_is_read_at_the_next_rotation(
    tmp_path: Path,
) -> None:
    # a writer that reopens late writes to the rotated file after it was finished (quiet for
    # the grace period): the next rotation's search beside the path reads just those lines
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", "two\n")
        await rig.nudge(manager)
        await until(lambda: "two" in rig.sink.texts())
        await until(lambda: len(manager.stats()) == 1, "the rotated file to finish", limit=5)
        rig.write("app.log.1", "late\n")
        os.rename(path, rig.path("app.log.2"))
        rig.write("app.log", "three\n")
        await rig.nudge(manager)
        await until(lambda: {"late", "three"} <= set(rig.sink.texts()))
        assert sorted(rig.sink.texts()) == ["late", "one", "three", "two"]
        await manager.close()

    run(main)


@pytest.mark.parametrize("covered", [True, False])
def test_copytruncate_while_stopped(tmp_path: Path, covered: bool) -> None:
    # inside the globs the copy is followed from the checkpoint; outside, drained from there
    rig = Rig.on(tmp_path, "app.log*" if covered else "*.log")
    path = rig.write("app.log", lines("a", 20))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 20)
        snapshot = manager.snapshot()
        await manager.close()
        rig.write("app.log", lines("a", 5, 20))
        shutil.copy(path, rig.path("app.log.1"))
        os.truncate(path, 0)
        rig.write("app.log", lines("b", 3))
        manager = await rig.start(snapshot, known={"app"})
        await until(lambda: len(rig.sink.lines) == 28)
        await asyncio.sleep(0.1)
        assert sorted(rig.sink.texts()) == sorted(names("a", 25) + names("b", 3))
        assert rig.sink.texts(rig.path("app.log.1")) == names("a", 5, 20)
        assert rig.log.warnings() == []  # the copy holds what was not read: routine
        assert rig.log.count("info", "truncated while stopped; its copy holds") == 1
        assert manager.unmeasured_truncations == 0
        await manager.close()

    run(main)


def test_a_copy_still_being_written_is_recognised(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, "app.log*")
    path = rig.write("app.log", lines("a", 2000))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 2000)
        copy = rig.path("app.log.1")
        copy_bytes(path, copy, 3000)  # logrotate is half way through the copy
        manager.changed(grown(copy))
        await asyncio.sleep(0.2)
        assert "copy" not in " ".join(event for _, event, _ in rig.log.events)
        copy_bytes(path, copy)
        os.truncate(path, 0)
        rig.write("app.log", lines("b", 2))
        await settle(rig, manager, lambda: len(rig.sink.lines) == 2002)
        await asyncio.sleep(0.1)
        assert rig.sink.texts() == names("a", 2000) + names("b", 2)
        assert rig.log.count("info", "is a copy") == 1
        await manager.close()

    run(main)


def test_truncated_while_stopped_is_read_from_the_start(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", lines("old", 10))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 10)
        snapshot = manager.snapshot()
        await manager.close()
        rewrite(path, lines("new", 30))
        manager = await rig.start(snapshot, known={"app"})
        await until(lambda: len(rig.sink.lines) == 40)
        assert rig.sink.texts()[10:] == names("new", 30)
        assert rig.log.count("warning", "truncated or rewritten while stopped") == 1
        assert manager.unmeasured_truncations == 1  # what it held past the offset is unknown
        await manager.close()

    run(main)


# ---------------------------------------------------------------- identity


def test_inode_reused_while_stopped_reads_the_new_file_from_zero(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", lines("old", 10))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 10)
        [checkpoint] = manager.snapshot()
        await manager.close()
        os.unlink(path)
        rig.write("app.log", lines("new", 12))
        # the kernel may or may not hand the inode out again; make the checkpoint say it did
        status = os.stat(path)
        reused = replace(checkpoint, dev=status.st_dev, inode=status.st_ino)
        manager = await rig.start([reused], known={"app"})
        await until(lambda: len(rig.sink.lines) == 22)
        assert rig.sink.texts()[10:] == names("new", 12)
        await manager.close()

    run(main)


def test_tiny_identical_files_are_both_read(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    rig.write("a.log", "same\n")
    rig.write("b.log", "same\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 2)
        rig.write("c.log", "same\n")
        await settle(rig, manager, lambda: len(rig.sink.lines) == 3)
        await asyncio.sleep(0.05)
        assert sorted(line.path for line in rig.sink.lines) == [
            rig.path(n) for n in ("a.log", "b.log", "c.log")
        ]
        await manager.close()

    run(main)


# ---------------------------------------------------------------- odd files


def test_fifo_and_directory_matching_the_glob_are_skipped_without_blocking(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    os.mkfifo(rig.path("pipe.log"))
    os.mkdir(rig.path("dir.log"))
    rig.write("real.log", "ok\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["ok"])
        await rig.nudge(manager)
        await rig.nudge(manager)
        assert [s.path for s in manager.stats()] == [rig.path("real.log")]
        assert rig.log.count("info", "not a regular file") == 2  # once per path, not per rescan
        await manager.close()

    run(main)


@pytest.mark.parametrize("follow", [False, True])
def test_symlinks_are_followed_only_when_asked(tmp_path: Path, follow: bool) -> None:
    rig = Rig.on(tmp_path, follow=follow)
    target = tmp_path / "target.txt"
    target.write_text("through the link\n")
    os.symlink(target, rig.path("link.log"))
    rig.write("plain.log", "plain\n")

    async def main() -> None:
        manager = await rig.start()
        expected = {"plain", "through the link"} if follow else {"plain"}
        await settle(rig, manager, lambda: set(rig.sink.texts()) == expected)
        await asyncio.sleep(0.05)
        assert sorted(rig.sink.texts()) == sorted(expected)
        if follow:
            [linked] = [s for s in manager.stats() if s.path == rig.path("link.log")]
            assert linked.inode == target.stat().st_ino
        else:
            assert rig.log.count("info", "symlink") == 1
        await manager.close()

    run(main)


def test_a_followed_symlink_swapped_to_another_target(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, follow=True)
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("one\n")
    second.write_text("two\n")
    link = rig.path("app.log")
    os.symlink(first, link)

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        append(first, "one more\n")  # written before the swap: read before the new target
        os.unlink(link)
        os.symlink(second, link)
        await settle(rig, manager, lambda: len(rig.sink.lines) == 3)
        assert rig.sink.texts() == ["one", "one more", "two"]
        assert [line.inode for line in rig.sink.lines] == [first.stat().st_ino] * 2 + [
            second.stat().st_ino
        ]
        await manager.close()

    run(main)


def test_unreadable_path_is_reported_once_and_retried(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, follow=True)
    target = tmp_path / "later.txt"
    os.symlink(target, rig.path("dangling.log"))

    async def main() -> None:
        manager = await rig.start()
        for _ in range(3):
            await rig.nudge(manager)
        assert rig.log.count("warning", "cannot read") == 1
        [stat] = manager.stats()
        assert stat.state == "error" and stat.error and "missing" in stat.error
        target.write_text("finally\n")
        await settle(rig, manager, lambda: rig.sink.texts() == ["finally"])
        assert rig.log.count("info", "readable again") == 1
        assert [s.state for s in manager.stats()] == ["following"]
        await manager.close()

    run(main)


def test_read_errors_are_reported_once_and_do_not_stop_other_files(tmp_path: Path) -> None:
    # /proc/self/mem is a regular file that even root cannot read at offset 0 (EIO)
    rig = Rig.on(tmp_path, follow=True)
    os.symlink("/proc/self/mem", rig.path("broken.log"))
    good = rig.write("good.log", "fine\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["fine"])
        for _ in range(3):
            await rig.nudge(manager)
            await asyncio.sleep(0.02)
        broken = [s for s in manager.stats() if s.path == rig.path("broken.log")]
        assert [s.state for s in broken] == ["error"]
        assert rig.log.count("warning", "cannot read") == 1
        rig.write("good.log", "still\n")
        manager.changed(grown(good))
        await until(lambda: rig.sink.texts() == ["fine", "still"])
        await manager.close()

    run(main)


# ---------------------------------------------------------------- where to start


def test_start_at_end_for_a_new_source(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, start_at="end")
    path = rig.write("app.log", lines("before", 5))

    async def main() -> None:
        manager = await rig.start()
        rig.write("app.log", "after\n")
        await settle(rig, manager, lambda: rig.sink.texts() == ["after"])
        assert rig.sink.lines[0].line_no is None
        rig.write("late.log", "created while running\n")  # new files are read from 0
        await settle(rig, manager, lambda: len(rig.sink.lines) == 2)
        assert rig.sink.lines[1] == Line(
            rig.path("late.log"),
            os.stat(rig.path("late.log")).st_ino,
            0,
            1,
            "created while running",
        )
        assert path
        await manager.close()

    run(main)


def test_start_at_beginning_and_known_sources(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, start_at="end")
    rig.write("app.log", lines("x", 3))

    async def main() -> None:
        # a source the daemon watched before: a file without checkpoint appeared while stopped
        manager = await rig.start(known={"app"})
        await until(lambda: rig.sink.texts() == names("x", 3))
        await manager.close()
        beginning = Rig(rig.directory, make_config(rig.directory, start_at="beginning"))
        manager = await beginning.start()
        await until(lambda: beginning.sink.texts() == names("x", 3))
        await manager.close()

    run(main)


# ---------------------------------------------------------------- lifecycle


def test_reconfigure_keeps_offsets_and_drops_removed_sources(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path, "*.log")
    rig.write("app.log", lines("a", 3))
    rig.write("other.txt", lines("o", 2))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 3)
        extra = SourceConfig(name="txt", paths=(rig.path("*.txt"),), start_at="beginning")
        config = make_config(rig.directory, "*.log", extra={"txt": extra})
        manager.reconfigure(config, Index(dict(config.sources)))
        rig.write("app.log", lines("a", 2, 3))
        await settle(rig, manager, lambda: len(rig.sink.lines) == 7)
        assert rig.sink.texts("app.log") == [] and rig.sink.texts(rig.path("app.log")) == names(
            "a", 5
        )
        assert rig.sink.texts(rig.path("other.txt")) == names("o", 2)
        only_txt = Config(
            path=config.path, daemon=config.daemon, sources={"txt": extra}, rules={}, reports={}
        )
        manager.reconfigure(only_txt, Index({"txt": extra}))
        await until(lambda: [s.path for s in manager.stats()] == [rig.path("other.txt")])
        assert [cp.source for cp in manager.snapshot()] == ["txt"]
        await manager.close()

    run(main)


def test_idle_descriptors_are_closed_and_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logwarden.tail

    monkeypatch.setattr(logwarden.tail, "IDLE_CLOSE_SECONDS", 0.0)
    rig = Rig.on(tmp_path)
    for number in range(30):
        rig.write(f"f{number}.log", f"line-{number}\n")

    async def main() -> None:
        before = open_fds()
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 30)
        await manager.rescan()
        assert open_fds() == before  # every idle descriptor given back
        rig.write("f7.log", "more\n")
        manager.changed(grown(rig.path("f7.log")))
        await until(lambda: rig.sink.texts()[-1] == "more")
        os.rename(
            rig.path("f8.log"), rig.path("f8.log.1")
        )  # renamed while closed: found by identity
        rig.write("f8.log.1", "after rename\n")
        rig.write("f8.log", "new file\n")
        await settle(rig, manager, lambda: {"after rename", "new file"} <= set(rig.sink.texts()))
        assert rig.sink.texts().index("after rename") < rig.sink.texts().index("new file")
        await manager.close()
        assert open_fds() == before

    run(main)


def test_descriptors_stay_bounded_with_many_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logwarden.tail

    monkeypatch.setattr(logwarden.tail, "MAX_OPEN_FILES", 20)
    rig = Rig.on(tmp_path)
    for number in range(200):
        rig.write(f"f{number}.log", f"line-{number}\n")

    async def main() -> None:
        before = open_fds()
        index = Index(dict(rig.config.sources))
        manager = TailManager(rig.config, index, rig.sink, (), frozenset())
        peak = 0

        async def watch_fds() -> None:
            nonlocal peak
            while True:
                peak = max(peak, open_fds() - before)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch_fds())
        await manager.start()
        await until(lambda: len(rig.sink.lines) == 200)
        watcher.cancel()
        assert open_fds() - before <= 20
        assert peak <= 20 + 4 + 4  # the cap, the concurrent openers, and a thread's transient fds
        await manager.close()

    run(main)


def test_backpressure_pauses_reading(tmp_path: Path) -> None:
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 1)
        rig.sink.room.clear()
        rig.write("app.log", "two\n")
        manager.changed(grown(path))
        await asyncio.sleep(0.1)
        assert rig.sink.texts() == ["one"]
        assert manager.snapshot()[0].framer.offset == 4
        rig.sink.room.set()
        await until(lambda: rig.sink.texts() == ["one", "two"])
        await manager.close()

    run(main)


def test_file_checkpoint_round_trips_and_rejects_garbage() -> None:
    checkpoint = FileCheckpoint(
        "app", "/var/log/app.log", 2049, 131075, Fingerprint.of(b"head"), FramerState(10, None, True),
        Fingerprint.of(b"tail"), 12,
    )  # fmt: skip
    assert FileCheckpoint.from_dict(checkpoint.to_dict()) == checkpoint
    no_tail = replace(checkpoint, tail=None, framer=FramerState())
    assert FileCheckpoint.from_dict(no_tail.to_dict()) == no_tail
    for broken in ({}, {**checkpoint.to_dict(), "dev": -1}, {**checkpoint.to_dict(), "head": None},
                   {**checkpoint.to_dict(), "framer": {"offset": 1, "line_no": 0, "skipping": False}}):  # fmt: skip
        with pytest.raises(ValueError):
            FileCheckpoint.from_dict(broken)


# ---------------------------------------------------------------- model-based


@dataclass
class Generation:
    """One file identity as the writer sees it: its completed lines and its partial last line."""

    name: str
    lines: list[str] = field(default_factory=list)
    partial: str = ""
    observed: bool = False  # existed at its path when the manager last caught up


class TailMachine(RuleBasedStateMachine):
    """Random writes, rotations, truncations, deletions and restarts against a model of which
    lines must arrive: each completed line exactly once, in order per file, except lines a
    truncation or deletion destroyed before the manager could read them (those at most once)."""

    NAMES = ("a", "b")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="logwarden-tail-"))
        self.rig = Rig.on(self.tmp)  # *.log: rotated (a.log.N) and copied files are outside
        self.loop = asyncio.new_event_loop()
        self.manager: TailManager | None = None
        self.active: dict[str, Generation] = {}
        self.generations: list[Generation] = []
        self.optional: set[str] = set()  # may arrive (at most once) or not
        self.serial = 0
        self.rotations = 0

    def _run(self, coroutine: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 20))

    @initialize()
    def begin(self) -> None:
        self.manager = self._run(self.rig.start())

    def _file(self, name: str) -> Generation:
        if name not in self.active:
            self.active[name] = Generation(name)
            self.generations.append(self.active[name])
            self.rig.write(f"{name}.log", "")
        return self.active[name]

    def _delivered(self) -> Counter[str]:
        return Counter(self.rig.sink.texts())

    @staticmethod
    def shown(line: str) -> str:
        """What a line looks like delivered: cut at max_line_bytes (the lines are ASCII)."""
        return line[:MAX_LINE_BYTES]

    def _lose_unread(self, generation: Generation) -> None:
        """The bytes are gone: whatever the manager has not delivered yet may never arrive."""
        delivered = self._delivered()
        self.optional.update(
            self.shown(line) for line in generation.lines if self.shown(line) not in delivered
        )
        if generation.partial:
            self.optional.add(self.shown(generation.partial))

    @rule(
        name=st.sampled_from(NAMES),
        count=st.integers(1, 4),
        newline=st.booleans(),
        pad=st.integers(0, 900),
    )
    def write(self, name: str, count: int, newline: bool, pad: int) -> None:
        generation = self._file(name)
        pieces = []
        for _ in range(count):
            self.serial += 1
            pieces.append(f"{name}{self.serial}:" + "x" * (pad % 97 * (self.serial % 11)))
        text = "\n".join(pieces) + ("\n" if newline else "")
        self.rig.write(f"{name}.log", text)
        *complete, generation.partial = (generation.partial + text).split("\n")
        generation.lines.extend(complete)

    @rule(name=st.sampled_from(NAMES), covered=st.booleans())
    def rotate(self, name: str, covered: bool) -> None:
        """logrotate's create: rename away (outside the globs, or to a name they cover) and
        create the file anew."""
        generation = self._file(name)
        self.rotations += 1
        suffix = ".log" if covered else ""
        os.rename(
            self.rig.path(f"{name}.log"), self.rig.path(f"{name}.log.{self.rotations}{suffix}")
        )
        if not covered and not generation.observed:  # never seen at its path: nothing finds it
            self._lose_unread(generation)
        elif generation.partial:
            # outside: emitted when the file closes, maybe later; covered: waits for ever
            self.optional.add(self.shown(generation.partial))
        del self.active[name]
        self._file(name)

    @rule(name=st.sampled_from(NAMES))
    def copytruncate_covered(self, name: str) -> None:
        """copytruncate with the copy inside the globs: the copy carries the unread lines."""
        generation = self._file(name)
        path = self.rig.path(f"{name}.log")
        self.rotations += 1
        shutil.copy(path, self.rig.path(f"{name}.log.{self.rotations}.log"))
        os.truncate(path, 0)
        if generation.partial:
            self.optional.add(self.shown(generation.partial))
        self._continue(name, generation)

    @rule(name=st.sampled_from(NAMES), keep_copy=st.booleans())
    def truncate(self, name: str, keep_copy: bool) -> None:
        """copytruncate (the copy outside the globs), or a plain truncation. What was not read
        may be lost; the manager drains a copy from where it read the file, though."""
        generation = self._file(name)
        path = self.rig.path(f"{name}.log")
        if keep_copy:
            self.rotations += 1
            shutil.copy(path, self.rig.path(f"{name}.log.{self.rotations}.bak"))
        os.truncate(path, 0)
        self._lose_unread(generation)
        self._continue(name, generation)

    def _continue(self, name: str, generation: Generation) -> None:
        """The file goes on as a new sequence of lines (free to interleave with a copy's)."""
        self.active[name] = Generation(name, observed=generation.observed)
        self.generations.append(self.active[name])

    @rule(name=st.sampled_from(NAMES))
    def truncate_and_regrow(self, name: str) -> None:
        """Truncate, then write past the old size before anyone looks: only content tells."""
        generation = self._file(name)
        path = self.rig.path(f"{name}.log")
        old_size = os.path.getsize(path)
        os.truncate(path, 0)
        self._lose_unread(generation)
        self._continue(name, generation)
        generation = self.active[name]
        written = 0
        while written <= old_size:
            self.serial += 1
            line = f"{name}{self.serial}:" + "y" * 200
            self.rig.write(f"{name}.log", line + "\n")
            generation.lines.append(line)
            written += len(line) + 1

    @rule(name=st.sampled_from(NAMES))
    def delete_and_recreate(self, name: str) -> None:
        generation = self._file(name)
        os.unlink(self.rig.path(f"{name}.log"))
        self._lose_unread(generation)
        del self.active[name]
        self._file(name)

    @rule()
    def tick(self) -> None:
        """Let the manager run a moment on a partial view (events for the active paths only)."""
        assert self.manager is not None
        self.manager.changed(grown(*(self.rig.path(f"{name}.log") for name in self.active)))
        self._run(asyncio.sleep(0.005))

    @rule()
    def restart(self) -> None:
        assert self.manager is not None
        self.manager = self._run(self.rig.restart(self.manager))

    @rule()
    def catch_up(self) -> None:
        assert self.manager is not None
        required = {self.shown(line) for g in self.generations for line in g.lines} - self.optional

        async def wait() -> None:
            assert self.manager is not None
            await self.rig.nudge(self.manager)
            await until(
                lambda: required <= set(self.rig.sink.texts()), "every required line", limit=5
            )

        self._run(wait())
        for generation in self.active.values():
            generation.observed = True
        self.check()

    def check(self) -> None:
        delivered = self.rig.sink.texts()
        twice = [text for text, count in Counter(delivered).items() if count > 1]
        assert not twice, f"delivered more than once: {twice[:5]}"
        owner = {
            self.shown(line): (index, position)
            for index, g in enumerate(self.generations)
            for position, line in enumerate([*g.lines, g.partial])
            if position < len(g.lines) or len(line) > MAX_LINE_BYTES  # a long one is cut early
        }
        unknown = [text for text in delivered if text not in owner and text not in self.optional]
        assert not unknown, f"delivered lines never written: {unknown[:5]}"
        last: dict[int, int] = {}
        for text in delivered:
            if text in owner:
                generation, position = owner[text]
                assert position > last.get(generation, -1), f"out of order: {text}"
                last[generation] = position

    def teardown(self) -> None:
        try:
            if self.manager is not None:
                self.catch_up()
        finally:
            if self.manager is not None:
                self._run(self.manager.close())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


TailMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
test_tail_model = TailMachine.TestCase


class MultilineTailMachine(TailMachine):
    """The same model through the multi-line event framer (`multiline.py`), with every line an
    event of its own (`start = '^'`): what arrives is unchanged, but each file's last line is
    an open event, held back (the checkpoint's offset at its start) until the next line, its
    timeout, the file's rotation or end, so every restart, rotation and truncation above also
    runs with an event open."""

    def __init__(self) -> None:
        super().__init__()
        self.rig.config = make_config(
            self.rig.directory, multiline=MultilineConfig(start="^", timeout=0.05)
        )


MultilineTailMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=30, deadline=None
)
test_tail_model_with_multiline_events = MultilineTailMachine.TestCase


def test_a_file_deleted_and_finished_on_the_fast_path_leaves_no_task(tmp_path: Path) -> None:
    """`changed` reads a grown file right away (no task switch); when that read finds the file
    deleted and finishes it, its parked task must end too, not wait for ever."""
    rig = Rig.on(tmp_path)
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        [tailer] = manager._tailers.values()
        rig.write("app.log", "two\n")
        os.unlink(path)  # the descriptor still reads it; its link count is 0
        manager.changed(grown(path))  # as the watcher delivers the append
        assert rig.sink.texts() == ["one", "two"]  # read at once, in the call
        assert tailer.task is not None
        await asyncio.wait_for(tailer.task, WAIT_S)  # the task ended by itself
        assert manager.stats() == []
        await manager.close()

    run(main)


def test_a_backlog_is_read_with_the_loop_free_between_chunks(tmp_path: Path) -> None:
    """Reads from the page cache run on the loop and never yield by themselves: a backlog of
    many chunks must still let the rest of the daemon run between chunks (commits, signals,
    watchdog pings), not hold the loop until the file's end."""
    rig = Rig.on(tmp_path)
    rig.write("app.log", lines("x", 20_000))  # about 200 KiB: 50 chunks of 4 KiB

    async def main() -> None:
        turns_while_reading = 0

        async def bystander() -> None:
            nonlocal turns_while_reading
            while len(rig.sink.lines) < 20_000:
                if rig.sink.lines:
                    turns_while_reading += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(bystander())
        manager = await rig.start()
        await until(lambda: len(rig.sink.lines) == 20_000)
        await other
        assert turns_while_reading >= 20, turns_while_reading
        await manager.close()

    run(main)


def test_a_compressed_copy_judged_while_its_original_reads_on_sends_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # logrotate's `compress`: a.log → a.log.1, then a.log.1.gz written and a.log.1 removed. The
    # search that judges the .gz runs in a thread on what was read when it began; if the original
    # reads on to its end and finishes meanwhile, the .gz continues where the original ended, not
    # where the search saw it (found under load: `test_logrotate_...[create 0644 compress]` sent
    # the lines read in that window twice)
    rig = Rig.on(tmp_path)
    path = rig.write("a.log", lines("a", 10))
    judge = logwarden.siblings.judge_siblings
    loop: asyncio.AbstractEventLoop | None = None

    def judge_while_the_original_reads_on(*args: Any, **kwargs: Any) -> list[Any]:
        found = judge(*args, **kwargs)
        assert loop is not None
        loop.call_soon_threadsafe(rig.sink.room.set)  # the original reads on to its end
        deadline = time.monotonic() + WAIT_S
        while "b-9" not in rig.sink.texts() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # and finishes: its file is gone
        return found

    monkeypatch.setattr("logwarden.tail.judge_siblings", judge_while_the_original_reads_on)

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == names("a", 10))
        rig.sink.room.clear()  # the original reads nothing more until the search has begun
        os.rename(path, rig.path("a.log.1"))
        rig.write("a.log.1", lines("b", 10))
        gzip_away(rig.path("a.log.1"))
        rig.write("a.log", lines("c", 3))
        await rig.nudge(manager)
        await until(lambda: "c-2" in rig.sink.texts() and "b-9" in rig.sink.texts())
        await asyncio.sleep(0.5)  # whatever the .gz would add
        texts = rig.sink.texts()
        assert sorted(texts) == sorted(names("a", 10) + names("b", 10) + names("c", 3)), texts
        await manager.close()

    run(main)


@pytest.mark.parametrize(
    "compressed_lines", [300, 200], ids=["all it held", "what it held when compressed"]
)
def test_a_compressed_copy_judged_after_its_original_inode_went_to_another_file_sends_nothing_twice(
    tmp_path: Path, compressed_lines: int
) -> None:
    # logrotate's `compress` removes a.log.1 once a.log.1.gz is written, and the next file
    # created may get its inode. The .gz, judged after that (under load a search can come a
    # rotation late), continued where the file now holding that (dev, inode) stood when it
    # ended, and sent the .gz's last lines twice (found under load:
    # `test_logrotate_...[create 0644 compress]`, runs of 10-16 lines); a .gz holding only lines
    # read was also judged again at every later search, against a memory of its original that
    # the other file's, once it ended, replaced (it was then read whole, again). Here the inode
    # goes to another file deterministically: the rotated file, once finished, is rewritten in
    # place and renamed into the globs. The .gz holds all that file held, or only its first
    # lines (the writer added to the rotated file after gzip had read it).
    rig = Rig.on(tmp_path)
    path = rig.write("a.log", lines("a", 300))  # more than the KiB a file's head is known by

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == names("a", 300))
        rotated = rig.path("a.log.1")
        os.rename(path, rotated)
        rig.write("a.log", lines("b", 3))
        await settle(rig, manager, lambda: "b-2" in rig.sink.texts())
        # the rotated file ends (quiet for the grace period): remembered by identity and content
        inode = os.stat(rotated).st_ino
        await until(
            lambda: all(tailer.inode != inode for tailer in manager._tailers.values()),
            "the original finished", 10,
        )  # fmt: skip
        compressed = gzip.compress(lines("a", compressed_lines).encode())
        rewrite(rotated, lines("d", 1))  # its inode is another file's now
        os.rename(rotated, rig.path("d.log"))
        await settle(rig, manager, lambda: "d-0" in rig.sink.texts())
        write_bytes(rotated + ".gz", compressed)  # lines of a.log, every one read already
        await rig.nudge(manager)
        await manager.rescan()  # queued behind the search the nudge set off: the .gz is judged
        os.unlink(rig.path("d.log"))  # the file with that inode ends
        await settle(
            rig, manager,
            lambda: all(tailer.inode != inode for tailer in manager._tailers.values()),
            "the other file finished",
        )  # fmt: skip
        await rig.nudge(manager)  # and the next search for rotated files
        await asyncio.sleep(0.5)  # whatever the .gz would add
        texts = rig.sink.texts()
        assert sorted(texts) == sorted(names("a", 300) + names("b", 3) + ["d-0"]), Counter(
            texts
        ).most_common(3)
        await manager.close()

    run(main)


def test_the_file_at_a_path_waits_for_an_open_event_of_its_predecessor_only_so_long(
    tmp_path: Path,
) -> None:
    """A writer that keeps adding to the rotated file through its old descriptor keeps its event
    open for good; the file that took the path waits for it at most twice the grace period (4 s
    here), not until that writer stops (found in review: the new file's lines starved)."""
    rig = Rig.on(tmp_path)
    rig.config = make_config(
        rig.directory, "*.log", multiline=MultilineConfig(start="^2026", timeout=3600)
    )
    path = rig.write("app.log", "2026 a\n")

    async def main() -> None:
        manager = await rig.start()
        [tailer] = manager._tailers.values()
        await until(lambda: tailer.framer.position == os.path.getsize(path), "the event read")
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", "2026 new\n2026 next\n")
        await rig.nudge(manager)
        deadline = asyncio.get_running_loop().time() + 8.0
        number = 0
        while asyncio.get_running_loop().time() < deadline and "2026 new" not in rig.sink.texts():
            rig.write("app.log.1", f"2026 old-{number}\n")  # each a start line: always one open
            number += 1
            await rig.nudge(manager)
            await asyncio.sleep(0.2)
        assert "2026 new" in rig.sink.texts(), "the new file still waits for the old one"
        assert number < 30, number  # within twice the grace period and a few reads
        await manager.close()

    run(main)


def test_a_file_renamed_while_stopped_keeps_its_stream(tmp_path: Path) -> None:
    """`carry` keys its memory by the stream a line comes from: for a file, the path it was read
    under. A file rotated while the daemon was stopped is still that stream after the restart
    (found in review: it became `app.log.1`, so the address a connection line lent before the
    stop was not found after it)."""
    homes: list[str] = []
    rig = Rig.on(tmp_path)
    accept = rig.sink.accept

    def recording(source: SourceRef, blocks: list[Block]) -> None:
        homes.extend(source.home or source.path for block in blocks for _ in split_lines(block))
        accept(source, blocks)

    rig.sink.accept = recording  # type: ignore[method-assign]
    path = rig.write("app.log", "one\n")

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == ["one"])
        snapshot, after = manager.snapshot(), manager.rotated_after()
        await manager.close()
        rig.write("app.log", "two\n")
        os.rename(path, rig.path("app.log.1"))
        rig.write("app.log", "three\n")
        manager = await rig.start(snapshot, rig.config.sources, after)
        await settle(rig, manager, lambda: {"two", "three"} <= set(rig.sink.texts()))
        assert homes == [path, path, path]
        await manager.close()

    run(main)


@pytest.mark.parametrize("noticed", ["truncation first", "gzip first"])
def test_a_compressed_rotation_of_a_copytruncated_file_sends_nothing_twice(
    tmp_path: Path, noticed: str
) -> None:
    """logrotate's `copytruncate` + `compress`: the copy is gzipped (and the copy removed) after
    the truncation, so its original's content is only in the memory of the truncation: the
    `.gz` is a copy of that, whether the daemon saw the truncation before the gzip or not. When it
    saw it first, it read the lines it had not read yet from the copy beside the file: the `.gz`
    then goes on from where that copy was read, not from where the truncated file was."""
    rig = Rig.on(tmp_path)
    path = rig.write("a.log", lines("a", 300))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == names("a", 300))
        rig.write("a.log", lines("a", 20, 300))  # not read before the rotation
        shutil.copyfile(path, rig.path("a.log.1"))
        os.truncate(path, 0)
        rig.write("a.log", lines("b", 3))
        if noticed == "truncation first":
            await settle(rig, manager, lambda: "b-2" in rig.sink.texts())
        gzip_away(rig.path("a.log.1"))
        await settle(rig, manager, lambda: "b-2" in rig.sink.texts())
        await rig.nudge(manager)  # a search after the .gz appeared
        await asyncio.sleep(0.3)
        await manager.close()

    run(main)
    assert sorted(rig.sink.texts()) == sorted(names("a", 320) + names("b", 3))


def test_copytruncate_with_delaycompress_sends_no_generation_twice(tmp_path: Path) -> None:
    """The stock `copytruncate compress delaycompress`: at the second rotation `.1` becomes
    `.2`, is gzipped and removed, and the file is copied and truncated again. The `.gz` holds
    the first generation, read before the first truncation."""
    rig = Rig.on(tmp_path)
    path = rig.write("a.log", lines("a", 300))

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: rig.sink.texts() == names("a", 300))
        shutil.copyfile(path, rig.path("a.log.1"))
        os.truncate(path, 0)
        rig.write("a.log", lines("b", 300))
        await settle(rig, manager, lambda: "b-299" in rig.sink.texts())
        os.rename(rig.path("a.log.1"), rig.path("a.log.2"))
        gzip_away(rig.path("a.log.2"))
        shutil.copyfile(path, rig.path("a.log.1"))
        os.truncate(path, 0)
        rig.write("a.log", lines("c", 3))
        await settle(rig, manager, lambda: "c-2" in rig.sink.texts())
        await rig.nudge(manager)
        await asyncio.sleep(0.3)
        await manager.close()

    run(main)
    assert sorted(rig.sink.texts()) == sorted(names("a", 300) + names("b", 300) + names("c", 3))
