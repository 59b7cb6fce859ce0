"""The watcher on real files and real inotify (and polling), with bounded waits; and discovery."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD, WatchDescriptor

from logcapture import RecordingLog
from logwarden.config import Config, SourceConfig, load
from logwarden.discovery import PathIndex
from logwarden.service import BATCH_READ_HOLD_S, LATENCY_READ_HOLD_S, read_hold
from logwarden.watch import Changes as Delivered
from logwarden.watch import Watcher, WatchKind

pytestmark = pytest.mark.usefixtures("capture_logs")

WAIT_S = 5.0  # the most any single wait may take
POLL_INTERVAL_S = 0.1
KINDS: list[WatchKind] = ["inotify", "polling"]


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """One event loop per test, with an overall bound."""
    asyncio.run(asyncio.wait_for(coroutine, timeout=20))


def source(
    name: str, *paths: Path | str, exclude: tuple[str, ...] = (), follow: bool = False
) -> SourceConfig:
    return SourceConfig(
        name=name, paths=tuple(str(p) for p in paths), exclude=exclude, follow_symlinks=follow
    )


def index_of(*sources: SourceConfig) -> PathIndex:
    return PathIndex({s.name: s for s in sources})


class Changes:
    """Records on_change calls; waits for a condition on them, bounded."""

    def __init__(self) -> None:
        self.calls: list[tuple[set[str], bool]] = []
        self.grown: list[set[str]] = []  # of each call, the paths only written to
        self.threads: set[int] = set()
        self._arrived = asyncio.Event()

    def __call__(self, delivered: Delivered) -> None:
        self.calls.append((set(delivered.paths), delivered.rediscover))
        self.grown.append(set(delivered.grown))
        self.threads.add(threading.get_ident())
        self._arrived.set()

    @property
    def paths(self) -> set[str]:
        return set().union(*(paths for paths, _ in self.calls))

    @property
    def rediscovered(self) -> bool:
        return any(rediscover for _, rediscover in self.calls)

    def clear(self) -> None:
        self.calls.clear()

    async def until(self, condition: Callable[[], bool], what: str = "") -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"waited {WAIT_S}s for {what or 'a change'}; got {self.calls}")
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def seen(self, *paths: Path) -> None:
        wanted = {str(p) for p in paths}
        await self.until(lambda: wanted <= self.paths, f"paths {sorted(wanted)}")

    async def quiet(self, seconds: float) -> None:
        """Let `seconds` pass; for asserting that nothing arrives."""
        await asyncio.sleep(seconds)


@asynccontextmanager
async def watching(index: PathIndex, kind: WatchKind) -> AsyncIterator[tuple[Watcher, Changes]]:
    changes = Changes()
    watcher = Watcher(index, kind, changes, poll_interval=POLL_INTERVAL_S)
    await watcher.start()
    try:
        yield watcher, changes
    finally:
        await watcher.stop()


def append(path: Path, text: str = "line\n") -> None:
    with path.open("a") as stream:
        stream.write(text)


# ---------------------------------------------------------------- events


@pytest.mark.parametrize("kind", KINDS)
def test_append_create_delete(tmp_path: Path, kind: WatchKind) -> None:
    existing = tmp_path / "a.log"
    existing.write_text("")

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), kind) as (_, changes):
            append(existing)
            await changes.seen(existing)

            created = tmp_path / "b.log"
            created.write_text("first\n")
            await changes.seen(created)

            changes.clear()
            existing.unlink()
            await changes.seen(existing)
            assert threading.get_ident() in changes.threads and len(changes.threads) == 1

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_rename_reports_both_paths(tmp_path: Path, kind: WatchKind) -> None:
    current = tmp_path / "app.log"
    current.write_text("old\n")

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "app.log")), kind) as (_, changes):
            rotated = tmp_path / "app.log.1"
            current.rename(rotated)
            await changes.seen(current, rotated)  # the rotated name is reported though unmatched

    run(body())


def test_move_out_of_the_watched_directory_reports_the_old_path(tmp_path: Path) -> None:
    """inotify sees only IN_MOVED_FROM; watchdog holds it 0.5 s for a pair, then says deleted."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "archive").mkdir()
    log = tmp_path / "logs" / "a.log"
    log.write_text("x\n")

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "logs/*.log")), "inotify") as (_, ch):
            log.rename(tmp_path / "archive" / "a.log")
            await ch.seen(log)

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_new_subdirectory_under_double_star(tmp_path: Path, kind: WatchKind) -> None:
    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "**/*.log")), kind) as (_, changes):
            (tmp_path / "web").mkdir()
            await changes.until(lambda: changes.rediscovered, "rediscover")
            new = tmp_path / "web" / "access.log"
            new.write_text("GET /\n")
            await changes.seen(new)

            # and a whole tree at once, as `mkdir -p` and a first write do
            deep = tmp_path / "a" / "b" / "c" / "d" / "e" / "f"
            deep.mkdir(parents=True)
            (deep / "x.log").write_text("x\n")
            await changes.seen(deep / "x.log")

    run(body())


def test_file_created_written_and_deleted_at_once_is_reported(tmp_path: Path) -> None:
    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (_, ch):
            brief = tmp_path / "brief.log"
            brief.write_text("here and gone\n")
            brief.unlink()
            await ch.seen(brief)

    run(body())


def test_many_appends_coalesce(tmp_path: Path) -> None:
    """10,000 appends as fast as a thread can write cost a handful of deliveries."""
    hot = tmp_path / "hot.log"
    hot.write_text("")
    marker = tmp_path / "marker.log"

    def write_many() -> None:
        fd = os.open(hot, os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(10_000):
                os.write(fd, b"x\n")
        finally:
            os.close(fd)
        marker.write_text("")  # after every append, in the same directory: delivered last

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (_, ch):
            await asyncio.to_thread(write_many)
            await ch.seen(marker)
            calls_with_hot = [paths for paths, _ in ch.calls if str(hot) in paths]
            assert 1 <= len(ch.calls) <= 200, len(ch.calls)
            assert len(calls_with_hot) >= len(ch.calls) - 1  # only the marker's may lack it
            assert ch.paths == {str(hot), str(marker)}

    run(body())


def test_a_longer_hold_reads_a_steady_writer_less_often(tmp_path: Path) -> None:
    """A line every millisecond for half a second: with the 25 ms hold a daemon whose reports
    wait for rotation uses (`service.read_hold`), at most one delivery per hold, plus the first."""
    hot = tmp_path / "hot.log"
    hot.write_text("")

    def write_steadily() -> None:
        fd = os.open(hot, os.O_WRONLY | os.O_APPEND)
        try:
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                os.write(fd, b"x\n")
                time.sleep(0.001)
        finally:
            os.close(fd)

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (w, ch):
            w.set_min_interval(0.025)
            await asyncio.to_thread(write_steadily)
            await ch.seen(hot)
            await ch.quiet(0.1)
            assert 1 <= len(ch.calls) <= 0.6 / 0.025 + 2, len(ch.calls)

    run(body())


def test_read_hold_is_short_only_where_a_report_publishes_every_record(tmp_path: Path) -> None:
    def config(report: str) -> Config:
        path = tmp_path / "logwarden.toml"
        path.write_text(
            f'''
[daemon]
state_dir = "{tmp_path}/state"
[sources.app]
paths = ["{tmp_path}/*.log"]
[reports.a]
dir = "{tmp_path}/a"
[reports.b]
dir = "{tmp_path}/b"
{report}
[rules.r]
match = ['x']
report = "a"
'''
        )
        return load(path)[0]

    assert read_hold(config("")) == BATCH_READ_HOLD_S == 0.025
    assert read_hold(config("rotate_max_records = 100")) == BATCH_READ_HOLD_S
    assert read_hold(config("rotate_max_records = 1")) == LATENCY_READ_HOLD_S == 0.002


def test_a_flood_of_events_costs_few_wake_ups(tmp_path: Path) -> None:
    """The kernel already merges repeated events; the pending set must hold up without it.

    watchdog's thread is stood in for by a thread dispatching 100,000 modified events over 1,000
    files straight to the watcher's handler, as fast as it can.
    """
    from watchdog.events import FileModifiedEvent

    from logwarden.watch import _PolledHandler

    names = [str(tmp_path / f"f{n}.log") for n in range(1000)]

    async def body() -> None:
        changes = Changes()
        watcher = Watcher(index_of(source("app", tmp_path / "*.log")), "inotify", changes)
        wake_ups = 0
        deliver = watcher._deliver

        def counting_deliver() -> None:
            nonlocal wake_ups
            wake_ups += 1
            deliver()

        watcher._deliver = counting_deliver  # type: ignore[method-assign]
        await watcher.start()
        try:
            handler = _PolledHandler(watcher, str(tmp_path), str(tmp_path))

            def flood() -> None:
                for round_ in range(100):
                    for name in names:
                        handler.dispatch(FileModifiedEvent(name))
                    if round_ == 50:
                        time.sleep(0.01)  # let a delivery happen mid-flood

            await asyncio.to_thread(flood)
            await changes.until(lambda: changes.paths == set(names), "every path")
        finally:
            await watcher.stop()
        assert wake_ups <= 200, wake_ups
        assert len(changes.calls) <= wake_ups
        assert all(len(paths) <= len(names) for paths, _ in changes.calls)

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_own_reads_do_not_wake_the_loop(tmp_path: Path, kind: WatchKind) -> None:
    """The tailer reading a file must not report that file again (no open/read/close events)."""
    log = tmp_path / "a.log"
    log.write_text("x\n" * 100)

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), kind) as (_, ch):
            for _ in range(20):
                with log.open("rb") as stream:
                    stream.read()
            await ch.quiet(3 * POLL_INTERVAL_S)
            assert ch.calls == []

    run(body())


def test_missing_root_is_picked_up_when_created(tmp_path: Path) -> None:
    pattern = tmp_path / "later" / "app" / "*.log"
    index = index_of(source("app", pattern))
    assert index.watch_roots() == {str(tmp_path): True}

    async def body() -> None:
        async with watching(index, "inotify") as (watcher, ch):
            (tmp_path / "later" / "app").mkdir(parents=True)
            await ch.until(lambda: ch.rediscovered, "rediscover")
            assert watcher.watched == {str(tmp_path / "later" / "app"): (False, "inotify")}
            log = tmp_path / "later" / "app" / "x.log"
            log.write_text("x\n")
            await ch.seen(log)

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_root_deleted_and_recreated(tmp_path: Path, kind: WatchKind) -> None:
    root = tmp_path / "logs"
    root.mkdir()

    async def body() -> None:
        async with watching(index_of(source("app", root / "*.log")), kind) as (watcher, ch):
            root.rmdir()
            await ch.until(lambda: ch.rediscovered, "rediscover after the root went")
            root.mkdir()
            await ch.until(lambda: str(root) in watcher.watched, "the root watched again")
            ch.clear()
            log = root / "a.log"
            log.write_text("x\n")
            await ch.seen(log)

    run(body())


def test_root_replaced_before_the_loop_looks(tmp_path: Path) -> None:
    """The old inotify watch dies with its directory; a new one under the same name is watched."""
    root = tmp_path / "logs"
    root.mkdir()

    async def body() -> None:
        async with watching(index_of(source("app", root / "*.log")), "inotify") as (watcher, ch):
            root.rmdir()
            root.mkdir()  # no await in between: the watcher sees both changes at once
            await ch.until(lambda: ch.rediscovered, "rediscover")
            log = root / "a.log"
            log.write_text("x\n")
            await ch.seen(log)
            assert str(root) in watcher.watched

    run(body())


def test_symlinked_root_reports_configured_paths(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "logs").symlink_to(real)
    (real / "a.log").write_text("")

    async def body() -> None:
        index = index_of(source("app", tmp_path / "logs" / "*.log"))
        async with watching(index, "inotify") as (_, ch):
            append(real / "a.log")
            await ch.seen(tmp_path / "logs" / "a.log")
            assert str(real / "a.log") not in ch.paths

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_symlink_loops_in_a_recursive_root_are_not_walked(tmp_path: Path, kind: WatchKind) -> None:
    (tmp_path / "loop").symlink_to(tmp_path)  # tmp/loop/loop/... would be 40 levels deep

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "**/*.log")), kind) as (_, ch):
            log = tmp_path / "x.log"
            log.write_text("")
            await ch.seen(log)
            await ch.quiet(3 * POLL_INTERVAL_S)
            assert ch.paths == {str(log)}

    run(body())


def test_refresh_adopts_a_new_index(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()

    async def body() -> None:
        async with watching(index_of(source("a", tmp_path / "one/*.log")), "inotify") as (w, ch):
            await w.reconfigure(index_of(source("b", tmp_path / "two/*.log")))  # a reload
            assert set(w.watched) == {str(tmp_path / "two")}
            (tmp_path / "one" / "x.log").write_text("")
            (tmp_path / "two" / "y.log").write_text("")
            await ch.seen(tmp_path / "two" / "y.log")
            assert str(tmp_path / "one" / "x.log") not in ch.paths
            await w.reconfigure(index_of(source("c", tmp_path / "one/*.log")))
            assert set(w.watched) == {str(tmp_path / "one")}

    run(body())


# ---------------------------------------------------------------- failures


def test_queue_overflow_asks_for_rediscovery(tmp_path: Path) -> None:
    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "**/*.log")), "inotify") as (w, ch):
            # the kernel's IN_Q_OVERFLOW, as watchdog 7 reads it (wd -1); forcing a real one
            # would mean outrunning the reader thread, which is not reliable in a test
            overflow = InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b"")
            assert w._inotify is not None
            w._inotify.handle_event(overflow)
            await ch.until(lambda: ch.rediscovered, "rediscover")
            log = tmp_path / "after.log"  # and watching goes on
            log.write_text("")
            await ch.seen(log)

    run(body())


def test_a_failing_inotify_event_does_not_end_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle_event = InotifyFD.handle_event
    failures = [ValueError("a watchdog bug")]

    def failing_once(self: InotifyFD, event: InotifyEvent) -> None:
        if failures:
            raise failures.pop()
        handle_event(self, event)

    monkeypatch.setattr(InotifyFD, "handle_event", failing_once)
    log = RecordingLog()

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (_, ch):
            (tmp_path / "lost.log").write_text("")  # its event is the one that fails
            await ch.until(lambda: ch.rediscovered, "rediscover after the failure")
            log_file = tmp_path / "after.log"
            log_file.write_text("")
            await ch.seen(log_file)
        assert log.warnings() == ["handling an inotify event failed"]

    run(body())


def test_a_directory_registered_twice_warns_nothing(tmp_path: Path) -> None:
    """`mkdir -p a/b` makes watchdog add a/b's watch twice (a's creation already walked into b);
    watchdog warns about it with a unique message each time, which would flood the log."""
    from watchdog.observers.inotify_c import CallbackId, Mask

    class Callback:
        def on_event(self, event: InotifyEvent) -> None: ...
        def on_watch_deleted(self, wd: WatchDescriptor) -> None: ...
        def on_queue_overflow(self) -> None: ...

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (w, _):
            assert w._inotify is not None
            inotify_fd = w._inotify
            mask, callback, id_ = Mask(InotifyConstants.IN_CREATE), Callback(), CallbackId(7)
            wd = inotify_fd.add_callback(bytes(tmp_path), mask, callback, id_)
            assert inotify_fd.add_callback(bytes(tmp_path), mask, callback, id_) == wd
            inotify_fd.remove_callbacks([(wd, id_)])

    run(body())  # a warning fails the test (filterwarnings = error)


def test_a_failing_inotify_reader_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from logwarden.inotify import LoopInotify as _InotifyFD

    read_now = _InotifyFD.read_now
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_once(self: _InotifyFD) -> list[InotifyEvent]:
        if failures:
            raise failures.pop()
        return read_now(self)

    monkeypatch.setattr(_InotifyFD, "read_now", failing_once)
    log = RecordingLog()

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (w, ch):
            assert w._inotify is not None
            dead = w._inotify
            (tmp_path / "lost.log").write_text("")  # reading its event fails
            await ch.until(lambda: ch.rediscovered, "rediscover after the failure")
            assert w._inotify is not dead and w.watched == {str(tmp_path): (False, "inotify")}
            log_file = tmp_path / "a.log"
            log_file.write_text("")
            await ch.seen(log_file)
        assert log.warnings() == [
            "reading inotify failed; rediscovering, and replacing the reader",
            "the inotify reader stopped; starting a new one",
        ]

    run(body())


@contextmanager
def inotify_watch_limit(
    monkeypatch: pytest.MonkeyPatch, when: Callable[[bytes], bool]
) -> Iterator[list[bytes]]:
    """Make adding an inotify watch fail with ENOSPC for the paths `when` accepts.

    Lowering fs.inotify.max_user_watches instead would starve every other process of the user.
    """
    refused: list[bytes] = []
    get_or_create_watch = InotifyFD._get_or_create_watch

    def limited(self: InotifyFD, path: bytes, mask: Any) -> Any:
        if when(path):
            refused.append(path)
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return get_or_create_watch(self, path, mask)

    monkeypatch.setattr(InotifyFD, "_get_or_create_watch", limited)
    yield refused


def test_watch_limit_on_a_root_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    index = index_of(source("app", *(tmp_path / name / "*.log" for name in ("a", "b", "c"))))
    log = RecordingLog()

    async def body() -> None:
        with inotify_watch_limit(monkeypatch, lambda path: path.endswith(b"/b")):
            async with watching(index, "inotify") as (watcher, ch):
                kinds = {path: kind for path, (_, kind) in watcher.watched.items()}
                assert kinds == {
                    str(tmp_path / "a"): "inotify",  # scheduled before the limit: kept
                    str(tmp_path / "b"): "polling",
                    str(tmp_path / "c"): "polling",  # the rest: polled without trying again
                }
                (tmp_path / "b" / "x.log").write_text("")
                (tmp_path / "c" / "y.log").write_text("")
                await ch.seen(tmp_path / "b" / "x.log", tmp_path / "c" / "y.log")
        assert len(log.warnings()) == 1
        assert "fs.inotify.max_user_watches" in log.warnings()[0]

    run(body())


def test_watch_limit_inside_a_recursive_root_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchdog swallows the error for a subdirectory; the watcher must still notice."""
    (tmp_path / "shallow").mkdir()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    log = RecordingLog()

    async def body() -> None:
        with inotify_watch_limit(monkeypatch, lambda path: path.endswith(b"/er")) as refused:
            index = index_of(source("app", tmp_path / "**/*.log"))
            async with watching(index, "inotify") as (watcher, ch):
                assert refused
                assert watcher.watched == {str(tmp_path): (True, "polling")}
                deep_log = tmp_path / "deep" / "er" / "x.log"
                deep_log.write_text("")
                await ch.seen(deep_log)
        assert len(log.warnings()) == 1
        assert "fs.inotify.max_user_watches" in log.warnings()[0]

    run(body())


def test_instance_limit_falls_back_to_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_instance(cls: type[InotifyFD]) -> int:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(InotifyFD, "_create_inotify_fd", classmethod(no_instance))
    log = RecordingLog()

    async def body() -> None:
        async with watching(index_of(source("app", tmp_path / "*.log")), "inotify") as (w, ch):
            assert w.watched == {str(tmp_path): (False, "polling")}
            (tmp_path / "a.log").write_text("")
            await ch.seen(tmp_path / "a.log")
        assert len(log.warnings()) == 1
        assert "fs.inotify.max_user_instances" in log.warnings()[0]

    run(body())


def test_events_after_the_loop_closed_do_not_raise(tmp_path: Path) -> None:
    """watchdog's thread may still report after the loop is gone: nothing may raise there."""
    log = tmp_path / "a.log"
    log.write_text("")
    watcher = Watcher(index_of(source("app", log)), "inotify", lambda delivered: None)

    async def start() -> None:
        await watcher.start()

    asyncio.run(start())  # the loop is closed when this returns; the watcher still runs
    append(log)
    (tmp_path / "b.log").write_text("")
    time.sleep(0.3)  # let the handler run against the closed loop (a raise fails the test)

    async def stop() -> None:
        await watcher.stop()

    asyncio.run(stop())


def test_on_change_failure_does_not_stop_deliveries(tmp_path: Path) -> None:
    log = RecordingLog()
    changes = Changes()

    def flaky(delivered: Delivered) -> None:
        changes(delivered)
        if len(changes.calls) == 1:
            raise ValueError("a consumer bug")

    async def body() -> None:
        watcher = Watcher(index_of(source("app", tmp_path / "*.log")), "inotify", flaky)
        await watcher.start()
        try:
            (tmp_path / "a.log").write_text("")
            await changes.until(lambda: len(changes.calls) >= 1)
            (tmp_path / "b.log").write_text("")
            await changes.seen(tmp_path / "b.log")
        finally:
            await watcher.stop()
        assert "file change consumer failed" in log.warnings()

    run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_stop_leaves_no_thread(tmp_path: Path, kind: WatchKind) -> None:
    (tmp_path / "sub").mkdir()
    before = set(threading.enumerate())

    async def body() -> None:
        watcher = Watcher(index_of(source("app", tmp_path / "**/*.log")), kind, Changes())
        await watcher.start()
        assert set(threading.enumerate()) - before  # it did start threads
        await watcher.stop()
        await watcher.stop()  # twice is harmless

    run(body())
    assert set(threading.enumerate()) <= before  # not merely "within a grace period"


def test_stop_without_start(tmp_path: Path) -> None:
    async def body() -> None:
        watcher = Watcher(index_of(source("app", tmp_path / "*.log")), "inotify", Changes())
        await watcher.stop()

    run(body())


# ---------------------------------------------------------------- discovery


def test_discover_double_star_and_excludes(tmp_path: Path) -> None:
    for rel in ("a.log", "a.log.1", "b.log.2.gz", "x/c.log", "x/y/d.log", "x/y/d.txt", "z.log.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    index = index_of(source("app", tmp_path / "**/*.log*", exclude=("*.gz", "*.[0-9]")))
    assert index.discover() == {
        str(tmp_path / "a.log"): "app",
        str(tmp_path / "x/c.log"): "app",
        str(tmp_path / "x/y/d.log"): "app",
    }


def test_discover_first_source_wins(tmp_path: Path) -> None:
    (tmp_path / "auth.log").write_text("")
    (tmp_path / "kern.log").write_text("")
    index = index_of(source("auth", tmp_path / "auth.log"), source("all", tmp_path / "*.log"))
    assert index.discover() == {
        str(tmp_path / "auth.log"): "auth",
        str(tmp_path / "kern.log"): "all",
    }
    assert index.source_of(str(tmp_path / "auth.log")) == "auth"
    assert index.source_of(str(tmp_path / "nested" / "auth.log")) is None


def test_discover_lists_only_directories_that_can_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rel in (
        "flat/a.log",
        "flat/sub/b.log",
        "tree/app-1/c.log",
        "tree/app-1/old/d.log",
        "tree/db/e.log",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    listed: list[str] = []
    scandir = os.scandir

    def spy(path: str) -> Any:
        listed.append(str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", spy)
    index = index_of(
        source("flat", tmp_path / "flat/*.log"), source("tree", tmp_path / "tree/app-*/*.log")
    )
    assert index.discover() == {
        str(tmp_path / "flat/a.log"): "flat",
        str(tmp_path / "tree/app-1/c.log"): "tree",
    }
    assert sorted(listed) == sorted(str(tmp_path / rel) for rel in ("flat", "tree", "tree/app-1"))


def test_discover_skips_fifos_and_directories_without_opening(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.log")  # no writer: opening it would block forever
    (tmp_path / "dir.log").mkdir()
    (tmp_path / "real.log").write_text("")
    index = index_of(source("app", tmp_path / "*.log", follow=True))
    (tmp_path / "link-to-pipe.log").symlink_to(tmp_path / "pipe.log")

    result: dict[str, str] = {}
    thread = threading.Thread(target=lambda: result.update(index.discover()))
    thread.start()
    thread.join(WAIT_S)
    if thread.is_alive():  # it opened the FIFO: free the thread by opening the other end
        os.close(os.open(tmp_path / "pipe.log", os.O_WRONLY | os.O_NONBLOCK))
        thread.join(WAIT_S)
        pytest.fail("discover() blocked on a FIFO")
    assert result == {str(tmp_path / "real.log"): "app"}


@pytest.mark.parametrize("follow", [False, True])
def test_discover_symlinks_only_when_followed(tmp_path: Path, follow: bool) -> None:
    logs = tmp_path / "logs"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "dir").mkdir(parents=True)
    logs.mkdir()
    (elsewhere / "target.log").write_text("")
    (elsewhere / "dir" / "inner.log").write_text("")
    (logs / "link.log").symlink_to(elsewhere / "target.log")
    (logs / "dangling.log").symlink_to(tmp_path / "nowhere.log")
    (logs / "linked-dir").symlink_to(elsewhere / "dir")
    (logs / "loop").symlink_to(logs)  # a cycle: logs/loop/loop/... must not be walked forever
    (logs / "plain.log").write_text("")

    index = index_of(source("app", logs / "**/*.log", follow=follow))
    expected = {str(logs / "plain.log"): "app"}
    if follow:
        expected[str(logs / "link.log")] = "app"
        expected[str(logs / "linked-dir" / "inner.log")] = "app"
    assert index.discover() == expected


def test_discover_follows_only_for_the_source_that_allows_it(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("")
    (tmp_path / "a.log").symlink_to(tmp_path / "target")
    (tmp_path / "b.txt").symlink_to(tmp_path / "target")
    index = index_of(
        source("logs", tmp_path / "*.log"), source("texts", tmp_path / "*.txt", follow=True)
    )
    assert index.discover() == {str(tmp_path / "b.txt"): "texts"}


def test_discover_missing_root(tmp_path: Path) -> None:
    index = index_of(source("app", tmp_path / "not-yet" / "**" / "*.log"))
    assert index.discover() == {}


def test_discover_unreadable_directory_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tests may run as root, for whom chmod 000 hides nothing: the refusal is injected
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "s.log").write_text("")
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "o.log").write_text("")
    scandir = os.scandir

    def refusing(path: str) -> Any:
        if str(path).endswith("secret"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    log = RecordingLog()
    index = index_of(source("app", tmp_path / "**/*.log"))
    assert index.discover() == {str(tmp_path / "open" / "o.log"): "app"}
    assert index.discover() == {str(tmp_path / "open" / "o.log"): "app"}
    assert len(log.warnings()) == 1

    monkeypatch.setattr(os, "scandir", scandir)
    assert str(tmp_path / "secret" / "s.log") in index.discover()


def test_watch_roots(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    (tmp_path / "tree" / "inner").mkdir(parents=True)
    flat = source("flat", tmp_path / "flat/*.log", tmp_path / "flat/x.log")
    tree = source("tree", tmp_path / "tree/**/*.log", tmp_path / "tree/inner/*.log")
    assert index_of(flat, tree).watch_roots() == {
        str(tmp_path / "flat"): False,
        str(tmp_path / "tree"): True,  # tree/inner is inside it
    }
    # a root not created yet is awaited at its nearest existing ancestor, recursively (so that
    # `mkdir -p` is seen), which here holds the other roots too
    later = source("later", tmp_path / "missing/deeper/*.log")
    assert index_of(flat, tree, later).watch_roots() == {str(tmp_path): True}


def test_watch_roots_nested_and_symlinked(tmp_path: Path) -> None:
    (tmp_path / "tree" / "inner").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "tree" / "link").symlink_to(tmp_path / "outside")
    index = index_of(
        source("tree", tmp_path / "tree/**/*.log"),
        source("inner", tmp_path / "tree/inner/*.log"),
        source("link", tmp_path / "tree/link/*.log"),  # a recursive watch does not follow links
    )
    assert index.watch_roots() == {str(tmp_path / "tree"): True, str(tmp_path / "tree/link"): False}


def test_watch_roots_never_watches_the_whole_file_system() -> None:
    index = index_of(source("app", "/logwarden-test-missing-dir/x/*.log"))
    assert index.watch_roots() == {"/": False}


def test_a_directory_moved_out_of_a_recursive_root_is_no_longer_watched(tmp_path: Path) -> None:
    """Its watch follows the inode: without dropping it, writes at the new place would be
    reported under the old name, and watches of archived directories would pile up."""
    root, archive = tmp_path / "root", tmp_path / "archive"
    (root / "d").mkdir(parents=True)
    archive.mkdir()

    async def body() -> None:
        async with watching(index_of(source("app", root / "**/*.log")), "inotify") as (w, ch):
            assert w._inotify is not None and len(w._inotify._watch_for_wd) == 2
            os.rename(root / "d", archive / "d")
            await ch.until(lambda: ch.rediscovered, "the move")
            ch.clear()
            append(archive / "d" / "x.log")
            marker = root / "marker.log"
            append(marker)  # something the watcher must report, to know it has caught up
            await ch.seen(marker)
            assert str(root / "d" / "x.log") not in ch.paths
            assert w._inotify is not None
            assert len(w._inotify._watch_for_wd) == 1  # the root's, not the moved directory's

    run(body())
