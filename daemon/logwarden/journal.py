"""Journal sources: one `journalctl` child per source, its JSON entries turned into syslog lines.

Why the host's `journalctl` and not a library: no binding installs from PyPI without a compiler
and libsystemd headers (`systemd-python`); `cysystemd` bundles its own libsystemd, which reads
nothing from a journal written in a newer format; libsystemd in-process crashed Filebeat with
SIGBUS during journal rotation before systemd 255 (Debian 12 has 252). The host's journalctl
always reads the host's format, and a crash kills the child, not the daemon.

The cursor is the offset. It moves in the same synchronous step as `sink.accept` (the entries it
covers are in the report buffers), so a checkpoint snapshot holds a cursor and journals that
agree, exactly like a file offset. What journalctl 252 does, found by experiment:
- `--after-cursor C` with C gone from the journal (vacuumed, rotated away) seeks to where C would
  be and then skips one entry, *the first one after C*, which was never read. So a child is
  always started with `--cursor C` (at C when it exists, else at the first entry after C's
  position) and an entry that is C itself is dropped here.
- `--follow --cursor C` shows only ten entries unless `--no-tail` is given; `--cursor C -n 1`
  shows the one entry at or after C (how the start is probed).
- `--output-fields` always adds `__CURSOR`, `__REALTIME_TIMESTAMP`, `__MONOTONIC_TIMESTAMP` and
  `_BOOT_ID`; without `--all` a field over 4 KiB comes as null, so `--all` is passed.
- A binary field (non-UTF-8) comes as an array of byte values; a field given twice, as an array
  of values. journalctl exits by itself once its stdout is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from logwarden.config import Config, SourceConfig
from logwarden.counters import JournalSnapshot
from logwarden.framing import Block
from logwarden.journal_entries import (
    Entry,
    EntryBatch,
    JournalPosition,
    JsonLines,
    cursor_time,
    frame_entries,
    parse_cut_entry,
    parse_entry,
    realtime_text,
    same_entry,
)
from logwarden.log import get_logger

log = get_logger(__name__)

# journalctl prints every field it is asked for; these are what lines and records are built from
# plus what structured rules will want. The four always-present ones are added by journalctl.
OUTPUT_FIELDS = (
    "MESSAGE",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_PID",
    "SYSLOG_FACILITY",
    "PRIORITY",
    "_PID",
    "_UID",
    "_COMM",
    "_EXE",
    "_SYSTEMD_UNIT",
    "_HOSTNAME",
    "_TRANSPORT",
)
READ_CHUNK = 1024 * 1024
PROBE_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long resets the backoff
STDERR_LINE_BYTES = 4096


class Sink(Protocol):
    """Where entries go (the pipeline), as `tail.BlockSink`."""

    def accept(self, source: Any, blocks: list[Block]) -> None: ...

    async def wait_for_room(self) -> None: ...


class JournalReader:
    """One journal source: plans where to start, runs its journalctl, restarts it when it ends."""

    def __init__(
        self,
        config: SourceConfig,
        sink: Sink,
        position: JournalPosition | None,
        fresh: bool,
        on_change: Any,
    ) -> None:
        assert config.journal is not None
        self.config = config
        self.name = config.name
        self.directory = None if config.journal.directory is None else str(config.journal.directory)
        self.sink = sink
        self.position = position
        self.fresh = fresh  # a source never seen: start_at applies
        self._changed = on_change
        self.entries = self.restarts = self.oversized = 0
        self.last_realtime_us: int | None = None
        self.state: str = "starting"
        self.error: str | None = None
        self._args: list[str] | None = None  # where the next child starts; None: plan first
        self._skip: str | None = None  # an entry that is this cursor was handed on already
        self._process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    # -- planning: where the next child starts

    def _base(self) -> list[str]:
        journalctl = shutil.which("journalctl")
        if journalctl is None:
            raise FileNotFoundError("journalctl not found on PATH")
        args = [journalctl, "--output=json", "--all", "--no-pager"]
        if self.directory is not None:
            args.append(f"--directory={self.directory}")
        return args

    def _matches(self) -> list[str]:
        assert self.config.journal is not None
        return ["--", *self.config.journal.matches] if self.config.journal.matches else []

    async def _probe(self, *args: str) -> Entry | None:
        """The first entry journalctl prints with these arguments (no --follow), or None."""
        process = await asyncio.create_subprocess_exec(
            *self._base(),
            "--output-fields=__CURSOR",
            *args,
            *self._matches(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            line = await asyncio.wait_for(process.stdout.readline(), PROBE_TIMEOUT)
            if not line:
                await asyncio.wait_for(process.wait(), PROBE_TIMEOUT)
                if process.returncode:
                    error = (await process.stderr.read(4096)).decode("utf-8", "replace").strip()
                    raise OSError(f"journalctl exited with {process.returncode}: {error}")
            return parse_entry(line)
        finally:
            await _end(process)

    async def plan(self) -> bool:
        """Decide where the next child starts; False (logged, state "error") when journalctl
        cannot be run or cannot read the journal."""
        try:
            self._args, self._skip = await self._plan()
        except (OSError, ValueError, TimeoutError) as error:
            self._fail(f"cannot read the journal: {error}")
            return False
        self.fresh = False
        return True

    async def _plan(self) -> tuple[list[str], str | None]:
        position = self.position
        if position is None:
            if self.fresh and self.config.start_at == "end":
                newest = await self._probe("--lines=1")
                if newest is not None:
                    self._moved(newest)
                    return ["--cursor", newest.cursor], newest.cursor
            return [], None  # from the oldest entry
        cursor = position.cursor
        first = await self._probe("--cursor", cursor, "--lines=1")
        if first is not None and same_entry(first.cursor, cursor):
            return ["--cursor", cursor], cursor
        if first is not None:
            oldest = await self._probe()
            log.warning(
                "journal cursor is gone from the journal (vacuumed or rotated away); resuming at "
                "the oldest entry after its time; entries in between, if any, are lost",
                source=self.name,
                cursor_time=cursor_time(cursor),
                journal_starts=None if oldest is None else oldest.realtime,
                resuming_at=first.realtime,
            )
            return ["--cursor", first.cursor], None
        newest = await self._probe("--lines=1")
        if newest is None:
            log.warning(
                "journal cursor is gone and the journal holds no entries; reading from its start",
                source=self.name,
                cursor_time=cursor_time(cursor),
            )
            return [], None
        # every entry is older than the cursor: the clock went back, or another journal is here
        log.warning(
            "journal cursor is later than every entry in the journal (clock moved back?); "
            "reading new entries from its end",
            source=self.name,
            cursor_time=cursor_time(cursor),
            newest_entry=newest.realtime,
        )
        self._moved(newest)
        return ["--cursor", newest.cursor], newest.cursor

    def _moved(self, entry: Entry) -> None:
        """A position taken without handing anything on (start_at end, a cursor from the future)."""
        self.position = JournalPosition(entry.cursor, self.directory)
        self.last_realtime_us = entry.realtime_us
        self._changed()

    def _fail(self, error: str) -> None:
        if self.error != error:
            log.warning("journal source cannot read; will retry", source=self.name, error=error)
        self.state, self.error = "error", error
        self._changed()

    # -- running

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"logwarden-journal:{self.name}")

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            if self._args is None and not await self.plan():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            started, entries = time.monotonic(), self.entries
            try:
                returncode = await self._follow()
            except Exception as error:  # a defect here must not end the source unseen
                log.exception("reading the journal failed; restarting it", source=self.name)
                self._fail(f"reading the journal failed: {error!r}")
                returncode = None
            self._args = None  # each restart plans again from the position
            self.restarts += 1
            # a child that read something, or ran a while, was healthy: start the backoff over
            if self.entries > entries or time.monotonic() - started >= HEALTHY_AFTER:
                backoff = BACKOFF_FIRST
            log.warning(
                "journalctl exited; restarting it",
                source=self.name,
                returncode=returncode,
                restarts=self.restarts,
                in_s=backoff,
            )
            self.state = "restarting"
            self._changed()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _follow(self) -> int | None:
        """Run one child until it exits; its entries go to the sink, its stderr to our log."""
        assert self._args is not None
        try:
            self._process = process = await asyncio.create_subprocess_exec(
                *self._base(),
                "--follow",
                "--no-tail",
                f"--output-fields={','.join(OUTPUT_FIELDS)}",
                *self._args,
                *self._matches(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # its own session: a Ctrl-C at a terminal reaches the daemon, which stops it
                start_new_session=True,
            )
        except OSError as error:
            self._fail(f"cannot run journalctl: {error}")
            return None
        self.state, self.error = "following", None
        self._changed()
        log.info("reading the journal", source=self.name, pid=process.pid, start=self._args)
        assert process.stdout is not None and process.stderr is not None
        stderr = asyncio.create_task(self._forward(process.stderr, process.pid))
        lines = JsonLines(self._json_limit())
        try:
            while True:
                await self.sink.wait_for_room()  # no room: the pipe fills and journalctl waits
                chunk = await process.stdout.read(READ_CHUNK)
                if not chunk:
                    break
                self._take(lines.feed(chunk))
            return await process.wait()
        finally:
            stderr.cancel()
            await asyncio.gather(stderr, return_exceptions=True)
            await _end(process)
            self._process = None

    def _json_limit(self) -> int:
        # a JSON line holds the message (binary: up to 4 characters a byte) and a few fields
        return 4 * self.config.max_line_bytes + 64 * 1024

    async def _forward(self, stream: asyncio.StreamReader, pid: int) -> None:
        """journalctl's stderr into our log, a line at a time (cut at 4 KiB). Read in chunks,
        not `readline`, which gives up on a line over its limit and would leave journalctl
        blocked on a full stderr pipe."""
        pending = b""
        while chunk := await stream.read(READ_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > STDERR_LINE_BYTES:
                lines.append(pending)
                pending = b""
            for line in lines:
                self._say(line[:STDERR_LINE_BYTES], pid)
        self._say(pending[:STDERR_LINE_BYTES], pid)

    def _say(self, line: bytes, pid: int) -> None:
        text = line.decode("utf-8", "replace").strip()
        if text:
            log.warning("journalctl says", source=self.name, pid=pid, message=text)

    def _take(self, lines: list[tuple[bytes, bytes | None]]) -> None:
        """Parse JSON lines and hand the entries on, moving the cursor in the same step."""
        entries: list[Entry] = []
        for raw, tail in lines:
            entry = parse_entry(raw) if tail is None else parse_cut_entry(raw, tail)
            if tail is not None:
                self._oversized(entry is None)
            if entry is None:
                if raw.strip():
                    log.debug("not a journal entry", source=self.name, line=raw[:200])
                continue
            if self._skip is not None:
                skip, self._skip = self._skip, None
                if same_entry(entry.cursor, skip):
                    continue
            entries.append(entry)
        if not entries:
            return
        blocks, starts = frame_entries(entries, self.config.max_line_bytes)
        self.sink.accept(EntryBatch(self.name, entries, starts), blocks)
        last = entries[-1]
        self.position = JournalPosition(last.cursor, self.directory)
        self.last_realtime_us = last.realtime_us
        self.entries += len(entries)
        self._changed()

    def _oversized(self, lost: bool) -> None:
        """An entry longer than the reader takes: matched on its start, or (when not even its
        cursor came) skipped; said at 1, 2, 4... of them, seen but not flooding the log."""
        self.oversized += 1
        if self.oversized & (self.oversized - 1) == 0:
            log.warning(
                "journal entry too large; skipped" if lost else "journal entry too large; cut",
                source=self.name,
                limit_bytes=self._json_limit(),
                oversized=self.oversized,
            )

    async def stop(self) -> None:
        """Stop the child (by its pid: SIGTERM, then SIGKILL after a bounded wait) and the task."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def stats(self, now: float) -> JournalSnapshot:
        realtime = self.last_realtime_us
        return JournalSnapshot(
            source=self.name,
            directory=self.directory,
            cursor=None if self.position is None else self.position.cursor,
            realtime=None if realtime is None else realtime_text(realtime),
            lag_s=None if realtime is None else max(0.0, now - realtime / 1e6),
            entries=self.entries,
            restarts=self.restarts,
            oversized=self.oversized,
            state=self.state,
            error=self.error,
        )


async def _end(process: asyncio.subprocess.Process) -> None:
    """A child of ours ends: SIGTERM by its pid, a bounded wait, then SIGKILL."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


class JournalManager:
    """Every journal source of the config, each with its reader; positions for the checkpoint."""

    def __init__(
        self,
        config: Config,
        sink: Sink,
        restored: Mapping[str, JournalPosition],
        known_sources: frozenset[str],
        configured: frozenset[str] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        # positions no reader holds now: restored ones not taken yet, and those of sources
        # stopped for a while (a change being applied, a fallback standing in). They stay in
        # every snapshot while their source is configured: a checkpoint without a known
        # source's cursor would read its journal again from the oldest entry
        self._restored = dict(restored)
        self._configured = frozenset(config.sources) if configured is None else configured
        self._known = known_sources
        self.readers: dict[str, JournalReader] = {}
        self.version = 0  # bumped by every change `stats()` would show

    def _changed(self) -> None:
        self.version += 1

    def _reader(self, source: SourceConfig, known: bool) -> JournalReader:
        position = self._restored.pop(source.name, None)
        directory = None if source.journal is None else source.journal.directory
        if position is not None and position.directory != (
            None if directory is None else str(directory)
        ):
            log.info(
                "journal source reads another journal now; its old cursor is dropped",
                source=source.name,
            )
            position, known = None, False
        return JournalReader(source, self.sink, position, not known, self._changed)

    async def start(self) -> None:
        """Plan each source's start (start_at needs the journal's newest entry now), then run."""
        for name, source in self.config.journal_sources.items():
            self.readers[name] = self._reader(source, name in self._known)
        await asyncio.gather(*(reader.plan() for reader in self.readers.values()))
        for reader in self.readers.values():
            reader.start()

    def snapshot(self) -> dict[str, JournalPosition]:
        """Each source's cursor, as of the entries handed to the sink so far; a configured
        source without a reader now keeps the cursor it had."""
        positions = {
            name: position for name, position in self._restored.items() if name in self._configured
        }
        for name, reader in self.readers.items():
            if reader.position is not None:
                positions[name] = reader.position
        return positions

    def stats(self) -> list[JournalSnapshot]:
        now = time.time()
        return [reader.stats(now) for reader in self.readers.values()]

    async def reconfigure(self, config: Config, configured: frozenset[str] | None = None) -> None:
        """A reload: a removed source stops, a new one starts (start_at applies), a changed one
        restarts at its cursor; an unchanged one keeps its child. `config` holds the sources
        that run; `configured`, every source of the config (a journal source a fallback stands
        in for keeps its cursor for when its journal can be read again)."""
        old = self.config.journal_sources
        new = config.journal_sources
        self.config = config
        self._configured = frozenset(config.sources) if configured is None else configured
        stopped, started = [], []
        for name, reader in list(self.readers.items()):
            if name not in new or new[name] != reader.config:
                stopped.append(reader)
        # listed while they stop (a snapshot meanwhile has their cursors), then parked: a
        # changed source restarts at its last cursor, and none is missing from a checkpoint
        await asyncio.gather(*(reader.stop() for reader in stopped))
        for reader in stopped:
            if reader.position is not None:
                self._restored[reader.name] = reader.position
            del self.readers[reader.name]
        for name, source in new.items():
            if name not in self.readers:
                self.readers[name] = reader = self._reader(source, name in old)
                started.append(reader)
                log.info("journal source " + ("changed" if name in old else "added"), source=name)
        await asyncio.gather(*(reader.plan() for reader in started))
        for reader in started:
            reader.start()
        for reader in stopped:
            if reader.name not in new:
                log.info("journal source removed", source=reader.name)
        self.version += 1

    async def close(self) -> None:
        await asyncio.gather(*(reader.stop() for reader in self.readers.values()))


def journal_dirs(directory: Path | None) -> list[Path]:
    """Where a journal's files are: the directory given, or the system journal's two places."""
    if directory is not None:
        return [directory]
    return [Path("/var/log/journal"), Path("/run/log/journal")]


def journal_readable(directory: Path | None) -> bool:
    """Whether journalctl exists and at least one journal file there can be read by us."""
    if shutil.which("journalctl") is None:
        return False
    for root in journal_dirs(directory):
        for pattern in ("*.journal", "*/*.journal"):
            try:
                for path in root.glob(pattern):
                    try:
                        with open(path, "rb"):
                            return True
                    except OSError:
                        continue
            except OSError:
                continue
    return False
