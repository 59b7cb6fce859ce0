"""`index.json` in a report dir: every published report with its record count, times and sha256.

A shipper or an auditor reads it to tell a gap (a missing seq, records that do not add up) or a
tampered file (a digest that no longer matches). It is the one `*.json` in a report dir that is
not a report; it is replaced atomically (a `.`-temporary, fsync, rename, dir fsync) after the
publishes and deletions of a commit, so a reader sees the old index or the new one, never a part.

An entry is made when a report is staged, from the bytes written (nothing is read back). A report
published by a run that crashed before its index was written is described from its file when the
index is loaded at start-up, which also drops entries of files removed by hand: the index is
derived state, and its source of truth is the dir.

`first_time`/`last_time` are the least and greatest `time` of the report's records: when the
daemon read each line, as long as records carry no event time of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from logwarden.atomic import write_atomically
from logwarden.log import get_logger
from logwarden.sealing import ReportKey, ReportOpenError, key_id_of, layers_of, open_bytes
from logwarden.timestamps import utc_timestamp

log = get_logger(__name__)

INDEX_NAME = "index.json"
INDEX_VERSION = 1
SEQ_WIDTH = 8
# orjson writes a record's keys in the order records.py builds them: "v", then "time"
_TIME = re.compile(rb'^\{"v":\d+,"time":"([^"]*)"')
# the same within one line of many (`add_text`), and after each newline: a literal prefix, which
# re finds fast (`^` with MULTILINE is tried at every byte, a thousand times slower)
_LINE_TIME = re.compile(rb'\{"v":\d+,"time":"([^"\n]*)"')
_NEXT_TIMES = re.compile(rb"\n" + _LINE_TIME.pattern)


def published_name_pattern(report: str) -> re.Pattern[str]:
    """A published report's name; group 1 is its journal id. `index.json` never matches."""
    return re.compile(
        rf"^({re.escape(report)}-\d{{8}}T\d{{6}}Z-\d{{{SEQ_WIDTH}}})"
        rf"\.(?:json|ndjson)(?:\.gz|\.zst)?(?:\.enc)?$"
    )


class RecordTally:
    """Counts a report's records and their earliest and latest `time`, line by line."""

    def __init__(self) -> None:
        self.records = 0
        self.first: str | None = None
        self.last: str | None = None

    def add_text(self, text: bytes) -> bool:
        """`add` for each non-empty line of `text` (whole lines, each ending in a newline), in
        two regex passes when every line is a record as records.py writes them, which this
        returns (a Python step per record was what staging a large report cost)."""
        count = text.count(b"\n")
        first = _LINE_TIME.match(text)
        times = _NEXT_TIMES.findall(text)
        if first is None or len(times) != count - 1:  # an empty line, or not as records.py writes
            for line in text.split(b"\n"):
                if line:
                    self.add(line)
            return False
        times.append(first[1])
        self.records += count
        least, greatest = min(times).decode(), max(times).decode()
        if self.first is None or least < self.first:
            self.first = least
        if self.last is None or greatest > self.last:
            self.last = greatest
        return True

    def add(self, line: bytes) -> None:
        self.records += 1
        found = _TIME.match(line)
        if found:
            moment = found[1].decode()
        else:  # not as records.py writes them: parse it (a hand-made journal, a future field order)
            try:
                value = orjson.loads(line).get("time")
            except (orjson.JSONDecodeError, AttributeError):
                return
            if not isinstance(value, str):
                return
            moment = value
        if self.first is None or moment < self.first:
            self.first = moment
        if self.last is None or moment > self.last:
            self.last = moment


def entry(
    name: str,
    tally: RecordTally | None,
    *,
    size: int,
    sha256: str,
    opened: str | None,
    closed: str | None,
    key: ReportKey | None = None,
) -> dict[str, Any]:
    return {
        "file": name,
        "records": tally.records if tally else None,
        "first_time": tally.first if tally else None,
        "last_time": tally.last if tally else None,
        "opened": opened,
        "closed": closed,
        "bytes": size,
        "sha256": sha256,
        **({"key_id": key.id.hex()} if key is not None else {}),
    }


def describe(path: Path, keys: Sequence[ReportKey], records: int | None = None) -> dict[str, Any]:
    """An entry for a published file nothing was remembered about (a crash came between its
    rename and the index): its digest, and what its content says if it can be opened."""
    import hashlib  # noqa: PLC0415 - only on this rare path

    data = path.read_bytes()
    layers = layers_of(path.name)
    tally: RecordTally | None = RecordTally()
    opened = closed = None
    try:
        plain = open_bytes(path.name, data, keys)
        if layers.format == "ndjson":
            lines = plain.splitlines()
        else:
            document = orjson.loads(plain)
            opened, closed = document.get("opened"), document.get("closed")
            lines = [orjson.dumps(record) for record in document.get("records", [])]
        for line in lines:
            if line and tally is not None:
                tally.add(line)
    except (ReportOpenError, orjson.JSONDecodeError, AttributeError) as error:
        log.warning("cannot read a published report to index it", path=str(path), error=str(error))
        tally = None
    if closed is None:  # ndjson carries no header: the file's time is when it was sealed
        closed = utc_timestamp(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    found = entry(
        path.name,
        tally,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        opened=opened,
        closed=closed,
    )
    if tally is None and records is not None:
        found["records"] = records
    key_id = key_id_of(data) if layers.encrypted else None
    if key_id is not None:
        found["key_id"] = key_id.hex()
    return found


class ReportIndex:
    """The index of one report dir, held in memory and written whole when it changed."""

    def __init__(self, directory: Path, report: str, file_mode: int) -> None:
        self.directory = directory
        self.report = report
        self.file_mode = file_mode
        self.entries: dict[str, dict[str, Any]] = {}  # file name → entry, oldest first
        self.dirty = False

    @classmethod
    def load(
        cls, directory: Path, report: str, file_mode: int, keys: Sequence[ReportKey]
    ) -> ReportIndex:
        """The dir's index.json, reconciled with the files the dir holds (blocking)."""
        index = cls(directory, report, file_mode)
        pattern = published_name_pattern(report)
        try:
            present = sorted(
                (entry.name for entry in os.scandir(directory) if pattern.match(entry.name)),
                key=_seq_of,
            )
        except FileNotFoundError:
            present = []
        written: dict[str, dict[str, Any]] = {}
        try:
            document = orjson.loads((directory / INDEX_NAME).read_bytes())
            written = {item["file"]: item for item in document["files"]}
        except FileNotFoundError:
            pass
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as error:
            log.warning(
                "index.json unreadable; rebuilding it", dir=str(directory), error=str(error)
            )
        for name in present:
            index.entries[name] = written.get(name) or describe(directory / name, keys)
        index.dirty = list(index.entries) != list(written)
        return index

    def add(self, item: dict[str, Any]) -> None:
        self.entries[item["file"]] = item
        self.dirty = True

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            if self.entries.pop(name, None) is not None:
                self.dirty = True

    def write(self) -> None:
        """Replace index.json atomically and durably (blocking)."""
        document = {
            "v": INDEX_VERSION,
            "report": self.report,
            "updated": utc_timestamp(),
            "time_field": "time",  # first_time/last_time: the records' arrival time
            "files": list(self.entries.values()),
        }
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        write_atomically(self.directory / INDEX_NAME, [data], mode=self.file_mode)
        self.dirty = False


_SEQ = re.compile(rf"-(\d{{{SEQ_WIDTH}}})\.(?:json|ndjson)(?:\.|$)")


def _seq_of(name: str) -> str:
    """The publish order of a published report's name: its seq, whatever the report's name
    holds (`sec.v2-20261125T120000Z-00000007.json.gz`: a report name may contain dots)."""
    found = _SEQ.search(name)
    return found[1] if found else name
