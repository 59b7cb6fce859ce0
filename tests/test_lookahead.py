"""A backlog matched ahead in a forked worker (`lookahead.py`): the same matches as reading it in
the daemon, each once and in order, whatever happens meanwhile to the file (truncation), to the
rules (a reload), to the worker (killed) or to the daemon (a crash, a SIGKILL).

In-process tests drive the real `TailManager` on real files (test_tail's rig) with a sink that
matches with real compiled rules; the worker is a real forked process. A small threshold
(`LOGWARDEN_LOOKAHEAD_MIN_BYTES`) and 4 KiB reads give each backlog many chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import Daemon, published_records, wait_until, write_config
from logcapture import RecordingLog
from logwarden import config
from logwarden.config import MultilineConfig
from logwarden.framing import Block, LineFramer
from logwarden.origin import SourceRef
from logwarden.rules import Match, RuleSet, SourceMatcher
from logwarden.tail import TailManager
from logwarden.tailer import Tailer
from test_daemon import CONFIG, assert_exactly_once, expected_seqs, seqs, start_writer, write_lines
from test_tail import MAX_LINE_BYTES, Index, Line, Rig, Sink, grown, run, settle, size_of, until

pytestmark = pytest.mark.usefixtures("capture_logs")

EVERY_LINE = r"^(?P<text>.*\S.*)$"  # every line with a visible character: lines = matches


def matcher_for(tmp_path: Path, pattern: str, name: str = "rules.toml") -> SourceMatcher:
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(f"""\
        [sources.app]
        paths = ["{tmp_path}/logs/*.log"]
        [rules.line]
        match = ['{pattern}']
        [reports.out]
        dir = "{tmp_path}/reports"
        """)
    )
    loaded, problems = config.load(path)
    return RuleSet.compile(loaded, problems).for_source("app")


class MatchingSink(Sink):
    """Keeps every match, whether the tailer matched it here or a worker matched it ahead."""

    def __init__(self, matcher: SourceMatcher) -> None:
        super().__init__()
        self.matcher = matcher
        self.offer = True  # whether to offer the matcher to a worker at all
        self.chunks_ahead = 0
        self.lines_ahead = 0
        self.after_chunk: Callable[[], None] | None = None  # what a test does after each one
        self.after_block: Callable[[], None] | None = None  # the same, for lines read here

    def accept(self, source: SourceRef, blocks: list[Block]) -> None:
        for block in blocks:
            self.keep(source, self.matcher.scan(block))
        if self.after_block is not None:
            self.after_block()

    def accept_matched(
        self, source: SourceRef, matches: list[Match], lines: int, block_bytes: int
    ) -> None:
        self.chunks_ahead += 1
        self.lines_ahead += lines
        self.keep(source, matches)
        if self.after_chunk is not None:
            self.after_chunk()

    def matcher_ahead(self, source: str) -> SourceMatcher | None:
        return self.matcher if self.offer else None

    def keep(self, source: SourceRef, matches: list[Match]) -> None:
        for match in matches:
            self.lines.append(
                Line(source.path, source.inode, match.offset, match.line_no, match.line)
            )


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGWARDEN_LOOKAHEAD_MIN_BYTES", "16384")
    monkeypatch.delenv("LOGWARDEN_LOOKAHEAD", raising=False)


def rig_for(tmp_path: Path, pattern: str = EVERY_LINE) -> Rig:
    rig = Rig.on(tmp_path)
    rig.sink = MatchingSink(matcher_for(tmp_path, pattern))
    return rig


def sink_of(rig: Rig) -> MatchingSink:
    assert isinstance(rig.sink, MatchingSink)
    return rig.sink


def backlog(count: int, prefix: str = "seq") -> bytes:
    """Lines with what framing must get right: CRLF, invalid UTF-8, NUL, blank and long lines."""
    parts = []
    for n in range(count):
        if n % 97 == 5:
            parts.append(b"%s=%d crlf\r\n" % (prefix.encode(), n))
        elif n % 89 == 7:
            parts.append(b"%s=%d bad \xff\xfe utf-8 \x00 nul\n" % (prefix.encode(), n))
        elif n % 83 == 3:
            parts.append(b"\n")
        elif n % 211 == 11:
            parts.append(b"%s=%d long %s\n" % (prefix.encode(), n, b"x" * 3000))  # > max_line
        else:
            parts.append(b"%s=%d %s\n" % (prefix.encode(), n, b"ok" * (n % 7)))
    return b"".join(parts)


def write_bytes(path: str, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def read_here(tmp_path: Path, data: bytes, pattern: str = EVERY_LINE) -> list[Line]:
    """The matches of `data` as the tailer gives them reading it itself (framing does not
    depend on how the bytes come in chunks): what matching ahead must give."""
    matcher = matcher_for(tmp_path, pattern, "reference.toml")
    found = []
    for block in LineFramer(MAX_LINE_BYTES).feed(data):
        found += [Line("", 0, m.offset, m.line_no, m.line) for m in matcher.scan(block)]
    return found


def without_path(found: list[Line]) -> list[Line]:
    return [Line("", 0, line.offset, line.line_no, line.text) for line in found]


def workers() -> list[int]:
    """This process's children: the workers still running (or not yet reaped)."""
    children = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as handle:
            children += [int(pid) for pid in handle.read().split()]
    return children


def test_a_backlog_matched_ahead_gives_what_reading_it_gives(tmp_path: Path) -> None:
    data = backlog(6000) + b"seq=partial without its newline"
    expected = read_here(tmp_path, data)
    rig = rig_for(tmp_path)
    path = rig.path("app.log")
    write_bytes(path, data)

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: manager.total_bytes == len(data), "the backlog read")
        assert sink_of(rig).chunks_ahead > 10  # the worker matched most of it
        assert without_path(rig.sink.lines) == expected
        assert manager.total_lines == data.count(b"\n")
        # the partial line the worker held was handed over with its framer
        write_bytes(path, b" and the rest\n")
        manager.changed(grown(path))
        await until(lambda: rig.sink.lines[-1].text.endswith("and the rest"), "the partial line")
        assert rig.sink.lines[-1].text == "seq=partial without its newline and the rest"
        assert rig.sink.lines[-1].offset == data.rindex(b"\n") + 1
        assert manager.snapshot()[0].framer.offset == size_of(path)
        await manager.close()
        await until(lambda: not workers(), "the worker reaped")

    run(main)


@pytest.mark.parametrize("same_head", [False, True], ids=["new head", "same head, new sample"])
def test_a_truncation_while_matching_ahead_sends_no_line_twice(
    tmp_path: Path, same_head: bool
) -> None:
    """The worker reads on while the daemon has no room (backpressure); the file is truncated
    and rewritten meanwhile. What the worker read before is a valid read of the old content; it
    stops at the change; the tailer's own read then sees the truncation and reads the new content
    from 0. So: a prefix of the old lines, then every new line, each once."""
    old = backlog(250000, "old")  # 3.6 MB: more than the worker can send ahead unread
    head = old[:2048] if same_head else b""
    new = head + backlog(3000, "new")
    expected_new = [line.text for line in read_here(tmp_path, new)]
    old_texts = [line.text for line in read_here(tmp_path, old)]
    rig = rig_for(tmp_path)
    path = rig.path("app.log")
    write_bytes(path, old)
    sink = sink_of(rig)
    sink.after_chunk = sink.room.clear  # backpressure from the first chunk on

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: sink.chunks_ahead == 1, "the first chunk matched ahead")
        await asyncio.sleep(0.2)  # the worker reads on until the pipe is full
        rewrite_bytes(path, new)
        sink.after_chunk = None
        sink.room.set()
        await settle(rig, manager, lambda: texts_end_with(rig, expected_new), "the new content")
        texts = rig.sink.texts()
        restart = len(texts) - len(expected_new)
        assert texts[:restart] == old_texts[:restart]  # a prefix of the old content, in order
        assert 0 < restart < len(old_texts)
        assert texts[restart:] == expected_new
        await manager.close()
        await until(lambda: not workers(), "the worker reaped")

    run(main)


def rewrite_bytes(path: str, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(0)
        handle.write(data)


def texts_end_with(rig: Rig, expected: list[str]) -> bool:
    return rig.sink.texts()[-len(expected) :] == expected


def test_a_reload_that_changes_the_rules_ends_the_worker(tmp_path: Path) -> None:
    """Matches of the old rules are not adopted once the rules changed: every line after the
    change is matched with the new ones (which here match only lines ending in 0)."""
    data = backlog(30000)
    rig = rig_for(tmp_path)
    path = rig.path("app.log")
    write_bytes(path, data)
    sink = sink_of(rig)
    newer = matcher_for(tmp_path, r"^seq=(?P<n>[0-9]*0) ", "newer.toml")
    changed_after: list[int] = []

    def reload_after_two_chunks() -> None:
        if sink.chunks_ahead == 2:
            sink.matcher = newer
            changed_after.append(len(sink.lines))

    sink.after_chunk = reload_after_two_chunks

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: manager.total_bytes == len(data), "the backlog read")
        await manager.close()

    run(main)
    kept = changed_after[0]
    after = rig.sink.lines[kept:]
    assert after, "the change came before the end"
    assert all(line.text.split(" ")[0].endswith("0") for line in after)
    every = read_here(tmp_path, data)
    boundary = rig.sink.lines[kept - 1].offset
    assert [line.text for line in after] == [
        line.text
        for line in every
        if line.offset > boundary and line.text.split(" ")[0].endswith("0")
    ]


def test_a_worker_killed_midway_is_replaced_by_reading_on(tmp_path: Path) -> None:
    data = backlog(30000)
    expected = read_here(tmp_path, data)
    rig = rig_for(tmp_path)
    write_bytes(rig.path("app.log"), data)
    sink = sink_of(rig)
    killed: list[int] = []
    tailers: list[Tailer] = []

    def kill_the_first_worker() -> None:
        ahead = tailers[0].ahead
        if not killed and ahead is not None:
            killed.append(ahead.pid)
            os.kill(ahead.pid, signal.SIGKILL)

    sink.after_chunk = kill_the_first_worker

    async def main() -> None:
        manager = await rig.start()
        tailers.extend(manager._tailers.values())
        await until(lambda: manager.total_bytes == len(data), "the backlog read")
        await manager.close()

    run(main)
    assert len(killed) == 1
    assert without_path(rig.sink.lines) == expected


def test_crashes_while_matching_ahead_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """A restart from the snapshot at a random moment (what a commit then would have saved),
    again and again: in the end every line exactly once, in order."""
    data = backlog(40000)
    expected = read_here(tmp_path, data)
    rig = rig_for(tmp_path)
    write_bytes(rig.path("app.log"), data)
    rng = random.Random(20261126)

    async def main() -> None:
        manager = await rig.start()
        for _ in range(8):
            target = min(len(rig.sink.lines) + rng.randrange(1, 4000), len(expected))
            await until(lambda: len(rig.sink.lines) >= target, "progress")  # noqa: B023
            manager = await rig.restart(manager)
        await settle(rig, manager, lambda: len(rig.sink.lines) >= len(expected), "the rest")
        await manager.close()

    run(main)
    assert sink_of(rig).chunks_ahead > 0
    assert without_path(rig.sink.lines) == expected
    assert workers() == []


@pytest.mark.parametrize("why", ["LOGWARDEN_LOOKAHEAD=0", "multiline", "no matcher offered"])
def test_no_worker_where_it_does_not_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    data = backlog(6000)
    rig = rig_for(tmp_path)
    if why == "LOGWARDEN_LOOKAHEAD=0":
        monkeypatch.setenv("LOGWARDEN_LOOKAHEAD", "0")
    elif why == "multiline":
        rig = Rig.on(tmp_path, multiline=MultilineConfig(start="^seq="))
        rig.sink = MatchingSink(matcher_for(tmp_path, EVERY_LINE))
    else:
        sink_of(rig).offer = False
    write_bytes(rig.path("app.log"), data)

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: manager.total_bytes == len(data), "the backlog read")
        await manager.close()

    run(main)
    assert sink_of(rig).chunks_ahead == 0
    assert rig.sink.lines


def test_sigkill_of_the_daemon_while_its_worker_matches_ahead(tmp_path: Path) -> None:
    """The real daemon, SIGKILL at random moments while its worker matches a backlog ahead and a
    writer appends: every match in exactly one published report, and no worker outlives its
    daemon (the kernel kills it with its parent)."""
    (tmp_path / "logs").mkdir()
    config_path = write_config(
        tmp_path / "logwarden.toml",
        CONFIG.replace("rotate_max_records = 50", "rotate_max_records = 2000").replace(
            "[daemon]\n", '[daemon]\nread_chunk_bytes = "16KiB"\n'
        ),
    )
    daemon = Daemon(
        config_path, tmp_path / "daemon.log", env={"LOGWARDEN_LOOKAHEAD_MIN_BYTES": "65536"}
    )
    log = tmp_path / "logs" / "app.log"
    batch, live, live_from = 60000, 5000, 10_000_000
    rng = random.Random(26112026)
    writer = start_writer(log, live_from, live, rate=1000)
    killed_with_a_worker = 0
    try:
        for run_number in range(4):
            write_lines(log, run_number * batch, batch)  # a fresh backlog for each start
            daemon.start(timeout=30)
            with contextlib.suppress(AssertionError):  # it may have caught up before a worker
                wait_until(lambda: daemon.logged(WORKER_STARTED), 5, message="a worker")
            time.sleep(rng.uniform(0.0, 0.3))
            worker = [pid for pid in running_with(config_path) if pid != daemon.pid]
            if worker and run_number == 1:  # stopped: only the parent-death signal ends it
                # once it reads (it asked for that signal before), or it would never ask
                pid = worker[0]
                wait_until(lambda: bytes_read(pid) > 0, 5, message="the worker reading")  # noqa: B023
                os.kill(worker[0], signal.SIGSTOP)
            daemon.kill()
            killed_with_a_worker += bool(worker)
            wait_until(lambda: not running_with(config_path), 5, message="no worker left")
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        daemon.cleanup()
        for pid in running_with(config_path):
            os.kill(pid, signal.SIGKILL)
    assert killed_with_a_worker >= 2, "the kills should have come while a worker matched ahead"
    expected = expected_seqs(0, 4 * batch) | expected_seqs(live_from, live)
    daemon.start(timeout=30)
    try:
        wait_until(
            lambda: len(set(seqs(published_records(tmp_path / "reports")))) >= len(expected),
            60,
            message="catch-up after the last restart",
        )
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    assert_exactly_once(tmp_path, expected)


WORKER_STARTED = "matching the backlog ahead in a worker process"


def running_with(config_path: Path) -> list[int]:
    """Processes whose command line names the config: a daemon, or a worker it forked."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if str(config_path).encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_reload_that_changes_the_framing_ends_the_worker(tmp_path: Path) -> None:
    """The worker frames with the settings it was forked with: a reload of `max_line_bytes`
    stops it, and the lines after it are cut at the new limit."""
    data = backlog(30000)
    rig = rig_for(tmp_path)
    write_bytes(rig.path("app.log"), data)
    sink = sink_of(rig)

    def no_room_after_two_chunks() -> None:
        if sink.chunks_ahead == 2:
            sink.room.clear()

    sink.after_chunk = no_room_after_two_chunks
    source = rig.config.sources["app"]
    wider = rig.config.model_copy(
        update={"sources": {"app": source.model_copy(update={"max_line_bytes": 2048})}}
    )

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: not sink.room.is_set(), "two chunks matched ahead")
        boundary = len(rig.sink.lines)
        manager.reconfigure(wider, Index(dict(wider.sources)))
        sink.room.set()
        await until(lambda: manager.total_bytes == len(data), "the backlog read")
        await manager.close()
        long_before = {len(t) for t in rig.sink.texts()[:boundary] if " long " in t}
        long_after = {len(t) for t in rig.sink.texts()[boundary:] if " long " in t}
        assert long_before == {1024}
        assert long_after == {2048}

    run(main)
    assert workers() == []


def test_a_rewrite_before_the_worker_takes_over_is_read_here(tmp_path: Path) -> None:
    """The daemon reads up to where the worker started; the bytes just before that point link
    the two reads. Here the file is rewritten in place (same length, same head) after the worker
    read its part and before the daemon got there: the daemon reads the new content up to that
    point, the worker's chunks (old content) no longer fit, and the daemon reads on itself. So
    what comes out is the new content, not new lines joined to old ones."""
    old = backlog(30000)
    # the same length, and every 64 bytes differ (the long lines' x too)
    new = old[:8192] + old[8192:].replace(b"seq=", b"SEQ=").replace(b"x", b"y")
    expected = read_here(tmp_path, new)
    rig = rig_for(tmp_path)
    path = rig.path("app.log")
    write_bytes(path, old)
    sink = sink_of(rig)
    sink.after_block = sink.room.clear  # the daemon waits after its first chunk

    async def main() -> None:
        manager = await rig.start()
        await until_read_ahead(manager, 65536)
        await rewrite_and_read_on(manager, sink, path, new)

    run(main)
    assert without_path(rig.sink.lines) == expected


class FailingMatcher(SourceMatcher):
    """Fails in the worker: what a bug there looks like."""

    def scan(self, block: Block) -> list[Match]:
        raise RuntimeError("a bug in the worker")


def test_a_worker_that_fails_is_logged_and_not_started_again(tmp_path: Path) -> None:
    data = backlog(30000)
    expected = read_here(tmp_path, data)
    log = RecordingLog()
    rig = rig_for(tmp_path)
    write_bytes(rig.path("app.log"), data)
    sink = sink_of(rig)
    failing = FailingMatcher.__new__(FailingMatcher)
    sink.matcher_ahead = lambda source: failing  # type: ignore[method-assign]

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: manager.total_bytes == len(data), "the backlog read")
        await manager.close()

    run(main)
    assert without_path(rig.sink.lines) == expected  # read here instead
    failures = [fields for level, event, fields in log.events if "worker matching ahead" in event]
    assert len(failures) == 1  # and not forked again at every chunk
    assert "a bug in the worker" in failures[0]["error"]


async def until_read_ahead(manager: TailManager, past_start: int) -> None:
    """Until the file's worker has read `past_start` bytes beyond where it started (its reads,
    as /proc counts them, include counting the lines up to there)."""
    [tailer] = manager._tailers.values()
    await until(lambda: tailer.ahead is not None, "a worker")
    ahead = tailer.ahead
    assert ahead is not None
    await until(lambda: bytes_read(ahead.pid) >= ahead.takes_over + past_start, "its reads")


async def rewrite_and_read_on(
    manager: TailManager, sink: MatchingSink, path: str, new: bytes
) -> None:
    """Overwrite the file in place (the same inode, no truncation), let the daemon read on from
    where it waits, until it has read as much as the file holds; then stop."""
    with open(path, "r+b") as handle:  # noqa: ASYNC230 (a test's one write)
        handle.write(new)
    sink.after_block = None
    sink.room.set()
    await until(lambda: manager.total_bytes >= len(new), "the file read")
    await manager.close()


def bytes_read(pid: int) -> int:
    """What a process read so far (/proc/PID/io's rchar); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/io") as handle:
            return int(handle.read().split("rchar:")[1].split()[0])
    except (OSError, IndexError):
        return 0


def test_a_line_count_that_changed_before_the_worker_takes_over_is_read_here(
    tmp_path: Path,
) -> None:
    """The worker numbers its lines from a count it made at its start. The file is rewritten in
    place (same length, same bytes near the junction) with one more line before that point: the
    daemon's line number there differs from the worker's, so its chunks do not fit."""
    old = backlog(30000)
    rig = rig_for(tmp_path)
    path = rig.path("app.log")
    write_bytes(path, old)
    sink = sink_of(rig)
    sink.after_block = sink.room.clear
    found: list[bytes] = []

    async def main() -> None:
        manager = await rig.start()
        await until_read_ahead(manager, 65536)
        [tailer] = manager._tailers.values()
        assert tailer.ahead is not None
        split = old.index(b" ", 8192)  # long before the junction: its 64 bytes stay the same
        assert split < tailer.ahead.takes_over - 4096
        new = old[:split] + b"\n" + old[split + 1 :]
        found.append(new)
        await rewrite_and_read_on(manager, sink, path, new)

    run(main)
    assert without_path(rig.sink.lines) == read_here(tmp_path, found[0])


@pytest.mark.parametrize("what", ["drain", "rename", "delete"])
def test_a_stop_or_a_rotation_while_matching_ahead(tmp_path: Path, what: str) -> None:
    """Drain (a stop) waits for the file's reader, which takes the worker's chunks to the end; a
    rename or a delete leaves the open file readable: every line once, no worker left."""
    data = backlog(30000)
    expected = read_here(tmp_path, data)
    rig = rig_for(tmp_path)
    path = rig.path("app.log")
    write_bytes(path, data)
    sink = sink_of(rig)

    async def main() -> None:
        manager = await rig.start()
        await until(lambda: sink.chunks_ahead > 0, "a chunk matched ahead")
        if what == "drain":
            await manager.drain()
        else:
            if what == "rename":
                os.rename(path, path + ".1")  # out of the globs (*.log): read through
            else:
                os.unlink(path)
            await rig.nudge(manager)
            await until(lambda: manager.total_bytes == len(data), "the backlog read")
        await manager.close()
        await until(lambda: not workers(), "the worker reaped")

    run(main)
    assert without_path(rig.sink.lines) == expected


@pytest.mark.parametrize("engine", ["re2", "regex"])
def test_a_field_rule_on_the_regex_engine_keeps_its_source_in_the_daemon(
    tmp_path: Path, engine: str
) -> None:
    """`engine = "regex"` rules count their timeouts in the daemon: a source with one, on fields
    or on lines, is not matched in a worker."""
    path = tmp_path / "fields.toml"
    path.write_text(
        textwrap.dedent(f"""\
        [sources.app]
        paths = ["{tmp_path}/logs/*.log"]
        parse = "json"
        [rules.plain]
        match = ['boom']
        [rules.on-field]
        field = "msg"
        engine = "{engine}"
        match = ['^fail']
        [reports.out]
        dir = "{tmp_path}/reports"
        """)
    )
    loaded, problems = config.load(path)
    matcher = RuleSet.compile(loaded, problems).for_source("app")
    assert matcher.counts_nothing is (engine == "re2")
