"""One journal entry and its place: what journalctl's JSON lines turn into, and the cursors.

Parsing and framing only, no processes: `journal.py` runs the journalctl children and hands
what this module makes of their output to the rules. Facts about journalctl 252 that shape it:
a binary field comes as an array of byte values, a field given twice as an array of values,
fields come in no fixed order (the cursor may follow a huge MESSAGE), and a cursor names its
entry by seqnum id, seqnum, boot, monotonic and realtime.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from logwarden.framing import Block
from logwarden.rules import Match
from logwarden.timestamps import utc_timestamp


@dataclass(frozen=True, slots=True)
class JournalPosition:
    """Where a journal source stands: the cursor of the last entry handed on, in which journal."""

    cursor: str
    directory: str | None  # None: the system journal

    def to_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "directory": self.directory}

    @classmethod
    def from_dict(cls, item: Mapping[str, Any]) -> JournalPosition:
        directory = item.get("directory")
        return cls(str(item["cursor"]), None if directory is None else str(directory))


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry, as rules and records see it; `fields` keeps everything journalctl gave."""

    cursor: str
    realtime_us: int
    identifier: str | None
    pid: int | None
    unit: str | None
    boot_id: str | None
    hostname: str | None
    fields: Mapping[str, str]
    cut: bool = False  # its JSON line was longer than the reader takes: MESSAGE is its start

    @property
    def line(self) -> str:
        """`IDENT[PID]: MESSAGE`, as rsyslog writes it to auth.log (newlines as `#012`, too)."""
        message = self.fields.get("MESSAGE", "").replace("\n", "#012")
        if self.identifier is None:
            return message
        if self.pid is None:
            return f"{self.identifier}: {message}"
        return f"{self.identifier}[{self.pid}]: {message}"

    @property
    def realtime(self) -> str:
        return realtime_text(self.realtime_us)


def realtime_text(realtime_us: int) -> str:
    seconds, micros = divmod(realtime_us, 1_000_000)
    return utc_timestamp(datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros))


def _text(value: Any) -> str | None:
    """A field's value as text: bytes (an array of ints) decoded with replacement; of a field
    given more than once, the first value."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        if all(isinstance(byte, int) for byte in value):
            return bytes(value).decode("utf-8", "replace")
        return _text(value[0])
    return None


def _int(text: str | None) -> int | None:
    # isascii too: "²".isdigit() holds, and int("²") raises (a client sets SYSLOG_PID)
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


def parse_entry(raw: bytes) -> Entry | None:
    """An entry from one line of `journalctl -o json`, or None when the line is not one."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("__CURSOR"), str):
        return None
    fields = {key: text for key, value in document.items() if (text := _text(value)) is not None}
    return _entry(fields)


# A JSON line cut by the reader's limit cannot be parsed whole: its complete string fields and the
# start of MESSAGE are taken from what came (journalctl prints `__CURSOR` first). Quotes inside a
# value are escaped in JSON, so these never match inside another field's value.
_STRING_FIELD = re.compile(rb'"([A-Z_][A-Z0-9_]*)":"((?:[^"\\]|\\.)*)"')
_MESSAGE_START = re.compile(rb'"MESSAGE":(?:"((?:[^"\\]|\\.)*)|\[([0-9,]*))')
_CUT_ESCAPE = re.compile(rb"\\(?:u[0-9a-fA-F]{0,3})?$")


def parse_cut_entry(head: bytes, tail: bytes = b"") -> Entry | None:
    """An entry whose JSON line was longer than the reader takes, from its first and last
    bytes (`JsonLines`): matched on the start of its message like a cut file line (flagged),
    not skipped whole. None when its cursor is in neither part."""
    fields: dict[str, str] = {}
    for part in (head, tail):
        for name, value in _STRING_FIELD.findall(part):
            fields.setdefault(name.decode(), _unescape(value))
    if "__CURSOR" not in fields:
        return None
    cut = "MESSAGE" not in fields
    if cut and (start := _MESSAGE_START.search(head)) is not None:
        if start[1] is not None:
            fields["MESSAGE"] = _unescape(_CUT_ESCAPE.sub(b"", start[1]))
        else:  # bytes, as an array of numbers: the last one may be cut
            numbers = start[2].split(b",")[:-1]
            fields["MESSAGE"] = bytes(int(n) for n in numbers if n).decode("utf-8", "replace")
    return _entry(fields, cut=True)


def _unescape(value: bytes) -> str:
    """A JSON string's content as text; a surrogate cut in half becomes U+FFFD."""
    try:
        text: str = json.loads(b'"' + value + b'"')
    except ValueError:
        return value.decode("utf-8", "replace")
    return text.encode("utf-8", "replace").decode("utf-8")


def _entry(fields: dict[str, str], cut: bool = False) -> Entry:
    return Entry(
        cursor=fields["__CURSOR"],
        realtime_us=_int(fields.get("__REALTIME_TIMESTAMP")) or 0,
        identifier=fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM"),
        pid=_int(fields.get("_PID")) or _int(fields.get("SYSLOG_PID")),
        unit=fields.get("_SYSTEMD_UNIT"),
        boot_id=fields.get("_BOOT_ID"),
        hostname=fields.get("_HOSTNAME"),
        fields=fields,
        cut=cut,
    )


def cursor_fields(cursor: str) -> dict[str, str]:
    """`s=..;i=..;b=..;m=..;t=..;x=..` as a dict."""
    return dict(part.split("=", 1) for part in cursor.split(";") if "=" in part)


def same_entry(a: str, b: str) -> bool:
    """Whether two cursors name one entry (sd_journal_test_cursor's rule: seqnum within one
    seqnum id, else boot id, monotonic and realtime, and the xor hash)."""
    if a == b:
        return True
    first, second = cursor_fields(a), cursor_fields(b)
    if first.get("s") is not None and first.get("s") == second.get("s"):
        return first.get("i") == second.get("i")
    return all(first.get(key) == second.get(key) for key in "bmtx")


def cursor_time(cursor: str) -> str | None:
    """The realtime a cursor names (its `t=`, hex microseconds), for a log line."""
    try:
        return realtime_text(int(cursor_fields(cursor)["t"], 16))
    except (KeyError, ValueError, OverflowError, OSError):
        return None


class EntryBatch:
    """The origin of a batch of entries handed on together: each match finds its own entry."""

    __slots__ = ("_entries", "_starts", "name")

    def __init__(self, name: str, entries: Sequence[Entry], starts: Sequence[int]) -> None:
        self.name = name
        self._entries = entries
        self._starts = starts  # offset of each entry's line in the batch's blocks

    def entry_of(self, match: Match) -> Entry:
        return self._entries[bisect.bisect_right(self._starts, match.offset) - 1]

    def record_source(self, match: Match) -> dict[str, Any]:
        entry = self.entry_of(match)
        return {
            "name": self.name,
            "journal": {
                "cursor": entry.cursor,
                "realtime": entry.realtime,
                "identifier": entry.identifier,
                "pid": entry.pid,
                "unit": entry.unit,
                "boot_id": entry.boot_id,
                "hostname": entry.hostname,
            },
            "line_no": None,
        }

    def where(self, match: Match) -> str:
        return f"journal {self.name} {self.entry_of(match).realtime}"

    def entry_time(self, match: Match) -> float | None:
        realtime_us = self.entry_of(match).realtime_us
        return realtime_us / 1e6 if realtime_us else None

    def sample(self, match: Match) -> dict[str, Any]:
        return {"cursor": self.entry_of(match).cursor}

    def stream(self, match: Match) -> str:
        # one journal may hold several hosts (journal-remote); a pid names one process per boot
        entry = self.entry_of(match)
        return f"{entry.hostname or ''} {entry.boot_id or ''}"


def frame_entries(entries: Sequence[Entry], max_line_bytes: int) -> tuple[list[Block], list[int]]:
    """Blocks of one line per entry (an entry's line cut to `max_line_bytes` is a block of its
    own, flagged truncated, as the file framer does) and each entry's offset in them."""
    blocks: list[Block] = []
    starts: list[int] = []
    pending: list[bytes] = []
    pending_start = offset = 0
    for entry in entries:
        data = entry.line.encode()
        starts.append(offset)
        if len(data) <= max_line_bytes and not entry.cut:
            pending.append(data + b"\n")
            offset += len(data) + 1
            continue
        if pending:
            blocks.append(Block(b"".join(pending), pending_start, None))
            pending = []
        cut = data[:max_line_bytes].decode("utf-8", "ignore").encode()
        blocks.append(Block(cut, offset, None, truncated=True))
        offset += len(cut) + 1
        pending_start = offset
    if pending:
        blocks.append(Block(b"".join(pending), pending_start, None))
    return blocks, starts


class JsonLines:
    """journalctl's output cut into JSON lines with bounded memory. A line over `limit` keeps its
    first `limit` bytes and its last `TAIL_BYTES`: journalctl prints fields in no fixed order,
    and only MESSAGE is ever large, so every other field (the cursor among them) lies whole in
    one of the two parts."""

    TAIL_BYTES = 64 * 1024

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._line = bytearray()
        self._tail = bytearray()  # of a line over the limit: its latest bytes
        self._cut = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes | None]]:
        """Whole lines: (line, None), or for a cut one (head, tail)."""
        out: list[tuple[bytes, bytes | None]] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            self._add(piece)
            if end < 0:
                return out
            out.append(
                (bytes(self._line), bytes(self._tail)) if self._cut else (bytes(self._line), None)
            )
            self._line.clear()
            self._tail.clear()
            self._cut = False
            start = end + 1

    def _add(self, piece: bytes) -> None:
        if not self._cut:
            room = self.limit - len(self._line)
            self._line += piece[:room]
            if len(piece) <= room:
                return
            self._cut = True
            piece = piece[room:]
        self._tail += piece
        del self._tail[: max(len(self._tail) - self.TAIL_BYTES, 0)]
