"""Reports: an append-only journal per report in the state dir, sealed and published atomically.

Matches land first in memory (`Journal.pending`), then in the journal file when the committer
writes and fsyncs it, and only then does the checkpoint record the journal's committed length
together with the tail offsets that produced it (DESIGN §5).

A journal is sealed at a commit (size, record count, age, SIGUSR1 or stop). That commit renders
the whole report, the journal file's committed part plus the records still in memory, into a
staged file in the report dir (`.logwarden-staged-<id>.json`, fsynced, and the dir too), and
only then writes the checkpoint that lists the journal as sealed. Publishing is then a rename
of the staged file to its final name, derived from the journal's id, so a publish interrupted by
a crash is simply done again, or recognised as done, on restart. A report opened and sealed in
one commit (every `rotate_max_records = 1` report) never touches a journal file at all.

Rejected: writing reports directly in the report dir and renaming at rotation. A reader could
then see nothing of the current report, but a crash would leave matches only in a temp file, and
the offsets could not be tied to what a reader will eventually see.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from logwarden import report_index
from logwarden.atomic import fsync_dir, make_dirs, remove_stale_temporaries
from logwarden.config import ReportConfig
from logwarden.report_index import SEQ_WIDTH, RecordTally, ReportIndex, published_name_pattern
from logwarden.sealing import ReportKey, SealingWriter, layers_of, sealed_suffix
from logwarden.timestamps import utc_timestamp

# A commit's appends stay durable through the checkpoint alone until a journal's unsynced tail
# would pass this: one fdatasync a commit instead of two (see `write_batches`)
INLINE_TAIL_BYTES = 16 * 1024
READ_CHUNK = 1024 * 1024
STAGED_PREFIX = ".logwarden-staged-"
_UNLIMITED = 2**62  # records or bytes a journal without that limit has room for


class ReportDirError(Exception):
    """A report dir that cannot be created or written: start-up stops with this."""


@dataclass(frozen=True, slots=True)
class JournalState:
    """A journal as the checkpoint knows it: what is committed of it and whether it is sealed."""

    report: str
    seq: int
    opened: str  # UTC timestamp when the journal was opened: part of the published name
    length: int = 0  # committed bytes
    records: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)  # match records per rule
    closed: str | None = None  # set when sealed
    # where a sealed journal's report goes, fixed at sealing: a reload that changes the report's
    # dir or format applies to the journals sealed after it, not to one already staged
    publish_to: str | None = None
    # The last committed bytes, when they are durable only here, in the checkpoint: the journal
    # file holds them too, but unsynced. `length - len(tail)` bytes of the file are fsynced.
    tail: bytes = b""

    @property
    def id(self) -> str:
        stamp = datetime.strptime(self.opened, "%Y-%m-%dT%H:%M:%S.%fZ").strftime("%Y%m%dT%H%M%SZ")
        return f"{self.report}-{stamp}-{self.seq:0{SEQ_WIDTH}d}"

    def to_dict(self) -> dict[str, Any]:
        document = {
            "report": self.report,
            "seq": self.seq,
            "opened": self.opened,
            "length": self.length,
            "records": self.records,
            "counts": dict(self.counts),
            "closed": self.closed,
            "publish_to": self.publish_to,
        }
        if self.tail:  # records are orjson's output: always valid UTF-8
            document["tail"] = self.tail.decode()
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JournalState:
        if data.get("closed") is not None and not data.get("publish_to"):
            raise ValueError(f"sealed journal {data.get('seq')} has no publish_to")
        return cls(
            report=str(data["report"]),
            seq=int(data["seq"]),
            opened=str(data["opened"]),
            length=int(data["length"]),
            records=int(data["records"]),
            counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
            closed=data.get("closed"),
            publish_to=data.get("publish_to"),
            tail=str(data.get("tail", "")).encode(),
        )


class Journal:
    """One journal file: committed part on disk, written-not-committed part, pending in memory."""

    def __init__(self, state: JournalState, directory: Path) -> None:
        self.state = state  # as of the last commit
        self.path = directory / f"{state.id}.ndjson"
        self.pending = bytearray()
        self.pending_records = 0
        self.pending_counts: dict[str, int] = {}
        self.inflight_bytes = 0  # taken by a commit that has not settled yet
        self.inflight_records = 0
        self.opened_monotonic = time.monotonic()
        self.closed = state.closed  # set in memory at sealing; durable once a checkpoint holds it
        # its report is rendered in the report dir, waiting for its rename (a checkpoint lists a
        # journal as sealed only once it is staged, so every restored sealed journal is)
        self.staged = state.closed is not None
        # fixed with its report's name at sealing (a reload after it changes neither)
        self.seal_key: ReportKey | None = None
        self.index_entry: dict[str, Any] | None = None  # made at staging, listed at publishing

    @property
    def length(self) -> int:
        """Length including what is in flight and pending: what it will be once all is durable."""
        return self.state.length + self.inflight_bytes + len(self.pending)

    @property
    def records(self) -> int:
        return self.state.records + self.inflight_records + self.pending_records

    def append(self, record: bytes, rule: str | None) -> None:
        self.pending += record
        self.pending_records += 1
        if rule is not None:
            self.pending_counts[rule] = self.pending_counts.get(rule, 0) + 1


@dataclass(slots=True)
class CommitBatch:
    """What one commit writes for one journal: taken from memory at the snapshot instant."""

    writer: ReportWriter
    journal: Journal
    data: bytes
    target: JournalState  # the state the checkpoint will record once `data` is durable
    staged_now: bool = False  # this commit staged the report (undone if the commit fails)

    @property
    def sealed(self) -> bool:
        return self.target.closed is not None


class ReportWriter:
    """One report: its active journal, its sealed journals awaiting publication, its dir."""

    def __init__(
        self,
        config: ReportConfig,
        journal_dir: Path,
        host: str,
        restored: list[JournalState],
        next_seq: int,
    ) -> None:
        self.config = config
        self.journal_dir = journal_dir
        self.host = host
        self.sealed: list[Journal] = []
        self.active: Journal | None = None
        self.next_seq = next_seq
        self.rotate_requested = False
        self.published = 0
        self._indexes: dict[Path, ReportIndex] = {}  # per report dir, loaded at first use
        # records and bytes the active journal takes before it is full under `_room_for`: what
        # `append` checks instead of `_full_with` (only appends add to a journal; commits move
        # its bytes from pending to committed). 0, or another config: ask `_full_with`
        self._room_records = self._room_bytes = 0
        self._room_for: ReportConfig | None = None
        for state in sorted(restored, key=lambda s: s.seq):
            journal = Journal(state, journal_dir)
            if state.closed is None:
                self.active = journal
            else:
                self.sealed.append(journal)
            self.next_seq = max(self.next_seq, state.seq + 1)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def active_records(self) -> int:
        """Records in the journal not yet sealed."""
        return self.active.records if self.active is not None else 0

    @property
    def last_published(self) -> Path | None:
        """The newest report in the report dir, by its index (so also one from before a restart)."""
        index = self._indexes.get(self.config.dir)
        if index is None or not index.entries:
            return None
        return self.config.dir / next(reversed(index.entries))

    @property
    def pending_bytes(self) -> int:
        """Records appended and not yet taken by a commit, in bytes: memory held for them."""
        pending = sum(len(journal.pending) for journal in self.sealed)
        return pending + (len(self.active.pending) if self.active is not None else 0)

    def append(self, record: bytes, rule: str | None) -> None:
        """Append a record, sealing the active journal first if the record would overfill it.

        Size and count limits are enforced here, record by record, so a catch-up that matches
        thousands of lines between two commits still yields reports of the configured size.
        """
        size = len(record)
        journal = self.active
        if (
            journal is not None
            and self._room_records > 0
            and self._room_bytes >= size
            and self._room_for is self.config
        ):
            self._room_records -= 1
            self._room_bytes -= size
            journal.append(record, rule)
            return
        if journal is not None and self._full_with(size):
            self.seal_active()
        if self.active is None:
            self.active = Journal(
                JournalState(self.name, self.next_seq, utc_timestamp()), self.journal_dir
            )
            self.next_seq += 1
        journal = self.active
        journal.append(record, rule)
        config = self._room_for = self.config
        records, size_limit = config.rotate_max_records, config.rotate_max_bytes
        self._room_records = _UNLIMITED if records is None else records - journal.records
        self._room_bytes = _UNLIMITED if size_limit is None else size_limit - journal.length

    def _full_with(self, extra_bytes: int) -> bool:
        journal, config = self.active, self.config
        if journal is None or journal.records == 0:
            return False
        return (
            config.rotate_max_records is not None and journal.records >= config.rotate_max_records
        ) or (
            config.rotate_max_bytes is not None
            and journal.length + extra_bytes > config.rotate_max_bytes
        )

    def seal_active(self) -> None:
        """Close the active journal to new records; the next commit makes the seal durable."""
        if self.active is None or self.active.records == 0:
            return
        self._room_records = self._room_bytes = 0
        self.active.closed = utc_timestamp()
        self.sealed.append(self.active)
        self.active = None

    def due_for_rotation(self, now: float) -> bool:
        journal = self.active
        if journal is None or journal.records == 0:
            return False
        config = self.config
        return (
            self.rotate_requested
            or (config.rotate_max_bytes is not None and journal.length >= config.rotate_max_bytes)
            or (
                config.rotate_max_records is not None
                and journal.records >= config.rotate_max_records
            )
            or (
                config.rotate_interval is not None
                and now - journal.opened_monotonic >= config.rotate_interval
            )
        )

    def reconfigure(self, config: ReportConfig) -> None:
        """A reload: the new settings apply from the next record and the next sealing on (a
        journal already sealed keeps the dir and format it was sealed for)."""
        self.config = config

    def request_rotation(self) -> None:
        """Seal the active journal at the next commit (SIGUSR1, a report removed by a reload)."""
        self.rotate_requested = True

    def take_batches(self, seal: bool) -> list[CommitBatch]:
        """At the snapshot instant: seal the active journal if asked, then move every pending
        buffer into a batch whose target is the state the checkpoint will record."""
        if seal:
            self.seal_active()
            self.rotate_requested = False
        batches = []
        for journal in [*self.sealed, *([self.active] if self.active else [])]:
            tail = journal.state.tail + journal.pending
            target = replace(
                journal.state,
                length=journal.length,
                records=journal.records,
                counts=_add_counts(journal.state.counts, journal.pending_counts),
                closed=journal.closed,
                publish_to=journal.state.publish_to
                or (str(self._new_report_path(journal.state)) if journal.closed else None),
                # small appends ride in the checkpoint (see `write_batches`); a sealed journal is
                # rendered into its staged report instead, which is fsynced
                tail=bytes(tail) if len(tail) <= INLINE_TAIL_BYTES and not journal.closed else b"",
            )
            if journal.closed and journal.state.publish_to is None:  # named now, from this config
                encrypt = self.config.encrypt
                journal.seal_key = encrypt.key if encrypt is not None else None
            batches.append(CommitBatch(self, journal, bytes(journal.pending), target))
            journal.inflight_bytes, journal.inflight_records = (
                len(journal.pending),
                journal.pending_records,
            )
            journal.pending.clear()
            journal.pending_records = 0
            journal.pending_counts = {}
        return batches

    def states(self) -> list[JournalState]:
        return [
            journal.state for journal in [*self.sealed, *([self.active] if self.active else [])]
        ]

    def publishable(self) -> list[Journal]:
        """Sealed journals whose whole content is committed (nothing pending)."""
        return [j for j in self.sealed if j.state.closed is not None and not j.pending]

    # ------------------------------------------------------------ blocking I/O, run in a thread

    def _new_report_path(self, state: JournalState) -> Path:
        config = self.config
        suffix = sealed_suffix(config.compress, config.encrypt is not None)
        return config.dir / f"{state.id}.{config.format}{suffix}"

    def stage(self, batch: CommitBatch) -> None:
        """Render a sealed journal's whole report (its journal file's committed part, then the
        batch) into its staged file, compressed and encrypted as its name says, and fsync it; the
        caller fsyncs the dir. Only sealed bytes ever reach the report dir."""
        journal, target = batch.journal, batch.target
        path = staged_path(target)
        layers = layers_of(path.name)
        key = journal.seal_key if layers.encrypted else None
        if layers.encrypted and key is None:
            raise OSError(f"{path.name}: no key to seal it with")
        tally = RecordTally()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        descriptor = os.open(path, flags, 0o600)
        try:
            with os.fdopen(descriptor, "wb", buffering=READ_CHUNK) as stream:
                sealer = SealingWriter(stream, layers.compress, key)
                buffer = bytearray()
                for piece in self._render(
                    journal.path, journal.state.length, batch.data, target, tally
                ):
                    if not buffer and len(piece) >= READ_CHUNK:  # a journal chunk: as it is
                        sealer.write(piece)
                        continue
                    buffer += piece
                    if len(buffer) >= READ_CHUNK:
                        sealer.write(buffer)
                        buffer.clear()
                sealer.write(buffer)
                sealer.close()
                stream.flush()
                os.fchmod(stream.fileno(), self.config.file_mode)
                os.fsync(stream.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        journal.index_entry = report_index.entry(
            report_path(target).name,
            tally,
            size=sealer.size,
            sha256=sealer.sha256,
            opened=target.opened,
            closed=target.closed,
            key=key,
        )
        journal.staged = batch.staged_now = True

    def publish(self, journal: Journal, state: JournalState) -> Path:
        """Rename a staged report to its final name, once the checkpoint sealing it is durable
        (the committer passes the state it has just made durable, before `settle` adopts it).

        Idempotent: a crash after the rename is recognised by the final name. The caller fsyncs
        the report dir.
        """
        final = report_path(state)
        index = self.index_of(final.parent)  # loaded before the rename: it lists the dir
        if not final.exists():
            os.rename(staged_path(state), final)
        if final.name not in index.entries:
            index.add(
                journal.index_entry or report_index.describe(final, self._keys(), state.records)
            )
        journal.path.unlink(missing_ok=True)
        self.published += 1
        return final

    def _keys(self) -> list[ReportKey]:
        return [self.config.encrypt.key] if self.config.encrypt is not None else []

    def index_of(self, directory: Path) -> ReportIndex:
        """The index of a report dir, read and reconciled with the dir at first use (blocking;
        start-up calls it for the report's dir, so the first publish does not pay for it)."""
        index = self._indexes.get(directory)
        if index is None:
            index = ReportIndex.load(directory, self.name, self.config.file_mode, self._keys())
            self._indexes[directory] = index
        return index

    def write_indexes(self) -> None:
        """Replace each index.json that changed since it was last written (blocking)."""
        for index in self._indexes.values():
            if index.dirty:
                index.write()

    def forget_published(self, journal: Journal) -> None:
        self.sealed.remove(journal)

    def _render(
        self, path: Path, committed: int, tail: bytes, state: JournalState, tally: RecordTally
    ) -> Iterator[bytes]:
        """The report of `state`: the first `committed` bytes of the journal at `path`, then
        `tail`, as NDJSON or wrapped in one JSON document, as its name says; each record is
        counted into `tally` on the way."""
        chunks = itertools.chain(_read_prefix(path, committed), [tail] if tail else [])
        ndjson = layers_of(report_path(state).name).format == "ndjson"
        if not ndjson:
            header = {
                "report": self.name,
                "host": self.host,
                "opened": state.opened,
                "closed": state.closed,
                "counts": dict(state.counts),
            }
            yield orjson.dumps(header)[:-1] + b',"records":['
        held = b""  # json: the last records so far, each followed by `,\n`: the last one's goes
        for piece in _whole_lines(chunks):
            if tally.add_text(piece):  # all records (so no empty line): the piece as it is
                lines = piece
            else:
                lines = b"".join(line + b"\n" for line in piece.split(b"\n") if line)
                if not lines:
                    continue
            if ndjson:
                yield lines
            else:
                if held:
                    yield held
                held = lines.replace(b"\n", b",\n")
        if not ndjson:
            yield held[:-2] + b"]}\n"

    def apply_retention(self, protected: set[str], now: float | None = None) -> list[Path]:
        """Delete the oldest published reports beyond `keep`, older than `keep_days`, or beyond
        `max_total_bytes` in all; never one still listed in a checkpoint (`protected` journal
        ids), which the next start must recognise as published. Each deletion leaves the index.

        Works on the index, not a listing: a publish costs no directory scan however large `keep`
        is. No dir fsync: a deletion lost in a crash only means an old report is deleted again.
        """
        config = self.config
        index = self.index_of(config.dir)
        names = list(index.entries)  # oldest first
        total = sum(int(item.get("bytes") or 0) for item in index.entries.values())
        cutoff = None
        if config.keep_days is not None:
            cutoff = utc_timestamp(
                datetime.fromtimestamp((now or time.time()) - config.keep_days * 86400, UTC)
            )
        pattern = published_name_pattern(self.name)
        removed = []
        for position, name in enumerate(names):
            item = index.entries[name]
            over_count = len(names) - position > config.keep
            too_old = cutoff is not None and str(item.get("closed") or "") < cutoff
            too_big = config.max_total_bytes is not None and total > config.max_total_bytes
            if not (over_count or too_old or too_big):
                break  # the rest are newer, and what is left fits
            found = pattern.match(name)
            if found and found[1] in protected:
                continue
            path = config.dir / name
            path.unlink(missing_ok=True)
            index.remove([name])
            total -= int(item.get("bytes") or 0)
            removed.append(path)
        return removed


def report_path(state: JournalState) -> Path:
    """Where a sealed journal is published."""
    if state.publish_to is None:
        raise ValueError(f"journal {state.id} is not sealed")
    return Path(state.publish_to)


def staged_path(state: JournalState) -> Path:
    """Where a sealed journal's report waits for its rename: hidden, beside its final name."""
    final = report_path(state)
    return final.with_name(STAGED_PREFIX + final.name)


def write_batches(batches: list[CommitBatch]) -> None:
    """Make every batch durable before the checkpoint that counts it (blocking; run in a thread).

    An open journal's batch goes into its journal file at its own offset, then fsync: it starts
    where the committed part ends, so a commit retried after a failure (disk full, here or at the
    checkpoint after it) overwrites what the failed attempt left instead of appending it twice.
    A sealed journal's report is staged in its report dir instead. Then each dir holding a new
    file is fsynced. On failure, `cut_back` undoes it all, so the caller can put the data back in
    memory and retry.
    """
    new_entries: set[Path] = set()
    try:
        for batch in batches:
            journal = batch.journal
            if batch.sealed:
                if not journal.staged:
                    batch.writer.stage(batch)
                    new_entries.add(report_path(batch.target).parent)
                continue
            if not batch.data:
                continue
            descriptor = os.open(journal.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                offset = journal.state.length
                view = memoryview(batch.data)
                while view:
                    done = os.pwrite(descriptor, view, offset)
                    view, offset = view[done:], offset + done
                if not batch.target.tail:  # too much to carry in the checkpoint: sync the file
                    os.fsync(descriptor)
                    if journal.state.length == len(journal.state.tail):  # its first fsync
                        new_entries.add(journal.path.parent)
            finally:
                os.close(descriptor)
        for directory in new_entries:
            fsync_dir(directory)
    except OSError:
        cut_back(batches)
        raise


def cut_back(batches: list[CommitBatch]) -> None:
    """Undo what a failed commit wrote: journals back to their committed length, reports it
    staged removed. If even this fails, recovery on restart does it."""
    for batch in batches:
        with contextlib.suppress(OSError):
            if batch.staged_now:
                staged_path(batch.target).unlink(missing_ok=True)
                batch.journal.staged = batch.staged_now = False
            elif batch.data and not batch.sealed and batch.journal.path.exists():
                os.truncate(batch.journal.path, batch.journal.state.length)


def publish_sealed(
    batches: list[CommitBatch],
) -> tuple[list[tuple[ReportWriter, Journal, Path]], OSError | None]:
    """Once the checkpoint sealing them is durable: publish every sealed journal of the commit,
    then fsync each report dir once.

    Returns the reports whose rename is durable, and the error that stopped the rest, if any:
    those stay sealed and listed, and the next commit publishes them (or finds them published).
    """
    renamed: list[tuple[ReportWriter, Journal, Path]] = []
    error: OSError | None = None
    for batch in batches:
        if not batch.sealed:
            continue
        try:
            renamed.append(
                (batch.writer, batch.journal, batch.writer.publish(batch.journal, batch.target))
            )
        except OSError as failure:
            error = failure
            break
    published = []
    for directory in {path.parent for _, _, path in renamed}:
        try:
            fsync_dir(directory)
        except OSError as failure:
            error = error or failure
            continue
        published += [item for item in renamed if item[2].parent == directory]
    return published, error


def give_back(batches: list[CommitBatch]) -> None:
    """A commit failed: put each batch's data back in front of what arrived since."""
    for batch in batches:
        journal = batch.journal
        journal.inflight_bytes = journal.inflight_records = 0
        if batch.data:
            journal.pending[:0] = batch.data
            journal.pending_records += batch.target.records - journal.state.records
            for rule, count in batch.target.counts.items():
                extra = count - journal.state.counts.get(rule, 0)
                if extra:
                    journal.pending_counts[rule] = journal.pending_counts.get(rule, 0) + extra


def settle(batches: list[CommitBatch]) -> None:
    """The checkpoint holding these batches' targets is durable: they are the committed state."""
    for batch in batches:
        batch.journal.state = batch.target
        batch.journal.inflight_bytes = batch.journal.inflight_records = 0


def prepare_dirs(reports: Mapping[str, ReportConfig], journal_root: Path) -> None:
    """Create report and journal dirs and prove they are writable; ReportDirError says which is not."""
    for report in reports.values():
        for directory in (report.dir, journal_root / report.name):
            try:
                make_dirs(directory)
                probe = directory / f".logwarden-probe-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as error:
                raise ReportDirError(
                    f"report {report.name!r}: cannot write to {directory}: {error.strerror or error}"
                ) from error
        remove_stale_temporaries(report.dir)


def recover_journals(
    journal_root: Path, report: ReportConfig, states: list[JournalState]
) -> list[JournalState]:
    """On start, make the journal and report dirs agree with the checkpoint's `states`.

    An open journal longer than its committed length holds records of lines whose offsets were
    never committed: those lines will be read again, so the records must go. A journal or a staged
    report the checkpoint does not list (as open, or as sealed) was written by a commit that never
    completed: the same holds for all of it. Returns the sealed journals whose report is neither
    published nor staged (removed by hand): they cannot be published and are dropped.
    """
    directory = journal_root / report.name
    known = {f"{state.id}.ndjson": state for state in states}
    for entry in list(os.scandir(directory)) if directory.exists() else []:
        state = known.get(entry.name)
        if state is None:
            Path(entry.path).unlink(missing_ok=True)
        elif state.closed is None and not state.tail and entry.stat().st_size != state.length:
            os.truncate(entry.path, state.length)
    for state in states:
        if state.closed is None and state.tail:
            _restore_tail(directory / f"{state.id}.ndjson", state)
    sealed = {state.id: state for state in states if state.closed is not None}
    staged = re.compile(
        rf"^{re.escape(STAGED_PREFIX)}({re.escape(report.name)}-\d{{8}}T\d{{6}}Z-\d{{{SEQ_WIDTH}}})"
        rf"\.(json|ndjson)(\.gz|\.zst)?(\.enc)?$"
    )
    directories = {report.dir} | {report_path(state).parent for state in sealed.values()}
    for directory in directories:
        for entry in list(os.scandir(directory)) if directory.exists() else []:
            match = staged.match(entry.name)
            if match and match[1] not in sealed:
                Path(entry.path).unlink(missing_ok=True)
    return [
        state
        for state in sealed.values()
        if not report_path(state).exists() and not staged_path(state).exists()
    ]


def _restore_tail(path: Path, state: JournalState) -> None:
    """Put back the part of an open journal that only the checkpoint held durably (a power cut
    may have taken it, or the whole file), and make the file durable to its committed length."""
    synced = state.length - len(state.tail)  # what an earlier commit fsynced into the file
    created = not path.exists()
    if (0 if created else path.stat().st_size) < synced:
        raise ReportDirError(
            f"journal {path} is shorter than the {synced} bytes fsynced into it (removed or cut "
            "by hand?); its records cannot be recovered"
        )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        offset = synced
        view = memoryview(state.tail)
        while view:
            done = os.pwrite(descriptor, view, offset)
            view, offset = view[done:], offset + done
        os.ftruncate(descriptor, state.length)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    if created:
        fsync_dir(path.parent)


def _whole_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A stream of chunks cut at line ends: pieces of whole lines, each ending in a newline (a
    last line without one is given one). A report is rendered a piece at a time: a Python step
    per record (split, join) was most of what staging a large report cost."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n") + 1
        piece, carry = data[:end], data[end:]
        if piece:
            yield piece
    if carry:
        yield carry + b"\n"


def _read_prefix(path: Path, length: int) -> Iterator[bytes]:
    if length == 0:  # a journal sealed in the commit that opened it has no file
        return
    with open(path, "rb", buffering=0) as stream:
        remaining = length
        while remaining > 0:
            chunk = stream.read(min(READ_CHUNK, remaining))
            if not chunk:
                raise OSError(f"journal {path} is shorter than its committed length {length}")
            remaining -= len(chunk)
            yield chunk


def _add_counts(base: Mapping[str, int], extra: Mapping[str, int]) -> dict[str, int]:
    total = dict(base)
    for rule, count in extra.items():
        total[rule] = total.get(rule, 0) + count
    return total
