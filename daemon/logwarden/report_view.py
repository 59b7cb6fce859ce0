"""`logwarden report show|summary|decrypt`: what published reports hold, for a person or a script.

The numbers are computed once into a plain document (`summarize`), which `--json` prints as is and
the terminal rendering lays out with rich. Everything that came from a log line (captures, rule
names of a hand-made report, alert keys) goes through `terminal.visible` before it is shown, and into
rich as `Text`, never as markup: a log line is attacker-controlled, and must neither move the
cursor nor style the output.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson

from logwarden.report_index import INDEX_NAME
from logwarden.sealing import ReportKey, ReportOpenError, layers_of, open_report
from logwarden.terminal import visible

TOP = 10
SPARK_WIDTH = 60
SPARKS = " ▁▂▃▄▅▆▇█"
_REPORT_NAME = re.compile(r"^.+-\d{8}T\d{6}Z-\d+\.(?:json|ndjson)(?:\.gz|\.zst)?(?:\.enc)?$")


def report_files(directory: Path) -> list[Path]:
    """The published reports of a dir, in publish order: not index.json, not temporaries."""
    names = [
        entry.name
        for entry in directory.iterdir()
        if _REPORT_NAME.match(entry.name) and not entry.name.startswith(".")
    ]
    return [directory / name for name in sorted(names, key=lambda n: n.split(".", 1)[0][-8:])]


def read_records(path: Path, keys: Sequence[ReportKey] = ()) -> list[dict[str, Any]]:
    """The records of one published report, whatever its format and sealing."""
    try:
        layers = layers_of(path.name)
    except ValueError as error:
        raise ReportOpenError(str(error)) from error
    try:
        data = open_report(path, keys)
        if layers.format == "ndjson":
            return [orjson.loads(line) for line in data.splitlines() if line.strip()]
        records = orjson.loads(data)["records"]
    except OSError as error:
        raise ReportOpenError(f"{path}: {error.strerror or error}") from error
    except (orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise ReportOpenError(f"{path}: not a valid report: {error}") from error
    if not isinstance(records, list):
        raise ReportOpenError(f"{path}: not a valid report: records is not a list")
    return records


@dataclass
class Summary:
    """What a set of reports holds, counted record by record."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    rules: Counter[str] = field(default_factory=Counter)
    severities: Counter[str] = field(default_factory=Counter)
    captures: dict[str, Counter[str]] = field(default_factory=dict)
    minutes: Counter[str] = field(default_factory=Counter)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    first: str | None = None
    last: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        # a match's event time; an alert's is its `last`, the match that made the count
        moment = record.get("event_time") or record.get("last") or record.get("time")
        if isinstance(moment, str):
            self.first = moment if self.first is None else min(self.first, moment)
            self.last = moment if self.last is None else max(self.last, moment)
        rule = str(record.get("rule"))
        if record.get("kind") == "alert":
            key, count, within = record.get("key"), record.get("count"), record.get("within_s")
            if "threshold" in record:  # an alert as 0.1.0 wrote it: `threshold: {key, value}`
                old = record.get("threshold") or {}
                key = {str(old.get("key")): old.get("value")}
                count, within = old.get("count"), old.get("within_s")
            self.alerts.append(
                {
                    "time": moment,
                    "rule": rule,
                    "severity": record.get("severity"),
                    "key": key if isinstance(key, dict) else {},
                    "count": count,
                    "within_s": within,
                    "first": record.get("first"),
                    "samples": len(record.get("samples") or ()),
                }
            )
            return
        self.rules[rule] += 1
        self.severities[str(record.get("severity"))] += 1
        if isinstance(moment, str) and len(moment) >= 16:
            self.minutes[moment[:16]] += 1  # yyyy-mm-ddThh:mm
        captures = record.get("captures")
        if isinstance(captures, dict):
            for name, value in captures.items():
                if value is not None:
                    self.captures.setdefault(str(name), Counter())[str(value)] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": self.records,
            "matches": sum(self.rules.values()),
            "rules": dict(self.rules.most_common()),
            "severities": dict(self.severities.most_common()),
            "top": {
                name: [[value, n] for value, n in counter.most_common(TOP)]
                for name, counter in sorted(self.captures.items())
            },
            "per_minute": sorted([minute, n] for minute, n in self.minutes.items()),
            "first_time": self.first,
            "last_time": self.last,
            "alerts": self.alerts,
        }


def summarize(paths: Iterable[Path], keys: Sequence[ReportKey]) -> tuple[Summary, list[str]]:
    """Count every record of every report; returns the summary and the files that failed."""
    summary, problems = Summary(), []
    for path in paths:
        try:
            records = read_records(path, keys)
        except ReportOpenError as error:
            problems.append(str(error))
            continue
        summary.files.append(path.name)
        for record in records:
            if isinstance(record, dict):
                summary.add(record)
    return summary, problems


def verify_index(directory: Path) -> dict[str, Any] | None:
    """Check each file index.json lists against its sha256, and find files it does not list."""
    try:
        listed = orjson.loads((directory / INDEX_NAME).read_bytes())["files"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    present = {path.name for path in report_files(directory)}
    changed, missing = [], []
    for item in listed:
        path = directory / str(item.get("file"))
        if not path.exists():
            missing.append(path.name)
        elif hashlib.sha256(path.read_bytes()).hexdigest() != item.get("sha256"):
            changed.append(path.name)
    names = {str(item.get("file")) for item in listed}
    return {
        "listed": len(listed),
        "sha256_mismatch": changed,
        "missing": missing,
        "unlisted": sorted(present - names),
    }


def sparkline(minutes: Counter[str]) -> tuple[str, str, str]:
    """Matches per minute from the first minute to the last, squeezed into SPARK_WIDTH columns:
    the line, its first and last minute."""
    if not minutes:
        return "", "", ""
    from datetime import datetime  # noqa: PLC0415 - only when rendering

    start = datetime.fromisoformat(min(minutes))
    end = datetime.fromisoformat(max(minutes))
    span = int((end - start).total_seconds() // 60) + 1
    per_column = -(-span // SPARK_WIDTH)  # minutes a column stands for, rounded up
    columns = [0] * (-(-span // per_column))
    for minute, n in minutes.items():
        offset = int((datetime.fromisoformat(minute) - start).total_seconds() // 60)
        columns[offset // per_column] += n
    peak = max(columns)
    line = "".join(
        SPARKS[0] if n == 0 else SPARKS[max(1, round(n / peak * (len(SPARKS) - 1)))]
        for n in columns
    )
    return line, start.strftime("%Y-%m-%d %H:%M"), end.strftime("%H:%M")


def render(summary: Summary, index: dict[str, Any] | None, out: TextIO = sys.stdout) -> None:
    """The summary laid out for a person: tables on a terminal, the same as plain text in a pipe."""
    from rich import box  # noqa: PLC0415 - only the terminal rendering needs rich
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    console = Console(file=out, highlight=False, emoji=False, soft_wrap=False)
    plain = not console.is_terminal
    table_box = box.ASCII if plain else box.SIMPLE_HEAD

    def safe(value: object) -> Text:
        return Text(visible(str(value)))

    matches = sum(summary.rules.values())
    head = Text(
        f"{len(summary.files)} report{'s' if len(summary.files) != 1 else ''}, "
        f"{summary.records} records: {matches} matches, {len(summary.alerts)} alerts"
    )
    if summary.first and summary.last:
        head.append(f", {summary.first[:19]}Z → {summary.last[:19]}Z")
    console.print(head, style=None if plain else "bold")

    rules = Table(box=table_box, title=None, show_edge=False)
    rules.add_column("rule")
    rules.add_column("matches", justify="right")
    for rule, n in summary.rules.most_common():
        rules.add_row(safe(rule), str(n))
    severities = Table(box=table_box, show_edge=False)
    severities.add_column("severity")
    severities.add_column("matches", justify="right")
    for severity, n in summary.severities.most_common():
        severities.add_row(safe(severity), str(n))
    console.print(rules)
    console.print(severities)

    for name, counter in sorted(summary.captures.items()):
        top = Table(box=table_box, show_edge=False)
        top.add_column(Text(f"top {visible(name)}"))
        top.add_column("matches", justify="right")
        for value, n in counter.most_common(TOP):
            top.add_row(safe(value), str(n))
        console.print(top)

    line, first, last = sparkline(summary.minutes)
    if line:
        console.print(
            Text(
                f"matches per minute, {first} → {last} UTC (peak {max(summary.minutes.values())}):"
            )
        )
        console.print(Text(f"  {line}"))

    if summary.alerts:
        alerts = Table(box=table_box, show_edge=False, title=None)
        for column in ("alert time", "rule", "key", "count", "within"):
            alerts.add_column(column)
        for alert in summary.alerts:
            alerts.add_row(
                safe(alert["time"]),
                safe(alert["rule"]),
                safe(" ".join(f"{k}={v}" for k, v in alert["key"].items())),
                safe(alert["count"]),
                safe(f"{alert['within_s']}s"),
            )
        console.print(alerts)

    if index is not None:
        verdict = (
            "every file matches its sha256"
            if not (index["sha256_mismatch"] or index["missing"] or index["unlisted"])
            else (
                f"sha256 mismatch: {', '.join(index['sha256_mismatch']) or 'none'}; "
                f"missing: {', '.join(index['missing']) or 'none'}; "
                f"not listed: {', '.join(index['unlisted']) or 'none'}"
            )
        )
        console.print(safe(f"index.json: {index['listed']} files listed; {verdict}"))
