"""How `logwarden status` lays out a status document: rich tables on a terminal, plain text else.

Both renderings come from one layout (`layout`: header lines and tables of cells), so a terminal
and a script see the same rows and figures; only the drawing differs. Plain text is what scripts
and tests read: columns aligned by content width, two spaces apart, no colour, no wrapping, so
it stays stable for `grep` and `awk`. Everything that can come from outside (paths, error
messages, rule names of a removed rule) goes through `terminal.visible` and into rich as `Text`,
never as markup: a file name can hold an escape sequence.

The document is status.json as the daemon wrote it (plus `running`), or the few fields a
checkpoint gives when there is no status file; every field is read with a default, so a document
of an older version shows what it has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from logwarden.terminal import visible

Cell = tuple[str, str]  # (text, rich style)


@dataclass
class Section:
    """A table: its column names, which of them are figures (right-justified), and rows."""

    title: str
    columns: list[str]
    figures: set[str]
    rows: list[list[Cell]] = field(default_factory=list)


@dataclass
class Layout:
    lines: list[Cell]  # header lines
    sections: list[Section]


def layout(document: dict[str, Any], now: float | None = None) -> Layout:
    """The rows and figures of `document`, as of `now` (wall clock: ages, uptime)."""
    now = time.time() if now is None else now
    sections = [_files(document, now), _journals(document), _rules(document), _reports(document)]
    return Layout(_header(document, now), [s for s in sections if s.rows])


# ---------------------------------------------------------------- the two drawings


def plain(view: Layout) -> str:
    """Aligned text: each table after a blank line, its header in capitals, then its rows."""
    out = [text for text, _ in view.lines]
    for section in view.sections:
        out.append("")
        cells = [section.columns, *([text for text, _ in row] for row in section.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(section.columns))]
        for row in cells:
            parts = [
                text.rjust(width) if name in section.figures else text.ljust(width)
                for name, text, width in zip(section.columns, row, widths, strict=True)
            ]
            out.append(("  " + "  ".join(parts)).rstrip())
    return "\n".join(out)


def rich(view: Layout) -> Group:
    """Coloured, compact tables for a person at a terminal."""
    parts: list[Text | Table] = [Text(text, style=style) for text, style in view.lines]
    for section in view.sections:
        table = Table(
            title=section.title,
            title_justify="left",
            title_style="bold",
            header_style="bold dim",
            box=None,
            pad_edge=False,
            padding=(0, 2, 0, 0),
        )
        for name in section.columns:
            figure = name in section.figures
            table.add_column(
                name, justify="right" if figure else "left", overflow="fold", no_wrap=figure
            )
        for row in section.rows:
            table.add_row(*(Text(text, style=style) for text, style in row))
        parts.append(table)
    return Group(*parts)


# ---------------------------------------------------------------- the parts


def _header(document: dict[str, Any], now: float) -> list[Cell]:
    pid = document.get("pid", "?")
    written = document.get("written", "?")
    if document.get("running"):
        started = _parse(document.get("started"))
        up = f", up {_duration(now - started)}" if started is not None else ""
        generation = document.get("generation")
        gen = f", config generation {generation}" if generation is not None else ""
        lines = [(f"logwarden running (pid {pid}){up}{gen}, status written {written}", "bold")]
    else:
        lines = [(f"logwarden NOT running (pid {pid}), status written {written}", "bold red")]
    if "config" in document:
        lines.append((f"  config {visible(document['config'])}", "dim"))
    if "lines" in document:
        matches = sum(document.get("matches", {}).values())
        lines.append(
            (
                f"  lines {document['lines']}  ({document.get('lines_per_s', 0)}/s)"
                f"  matches {matches}  alerts {document.get('alerts', 0)}"
                f"  lag {document.get('lag_bytes', 0)} bytes  commits {document.get('commits', 0)}",
                "",
            )
        )
    if "last_reload" in document:
        lines.append(_reload(document["last_reload"]))
    if "commit_error" in document or "read_errors" in document:
        lines.append(_errors(document))
    loss = _loss(document)
    if loss is not None:
        lines.append(loss)
    return lines


def _reload(reload: dict[str, Any] | None) -> Cell:
    if reload is None:
        return ("  last reload: none since start", "dim")
    head = f"  last reload {reload['time']}: {reload['result']}"
    if reload["result"] != "applied":
        return (f"{head}: {visible(reload.get('error') or '?')}", "red")
    changes = [
        f"{what} {', '.join(visible(name) for name in names)}"
        for what, names in (
            ("added", reload.get("rules_added", [])),
            ("changed", reload.get("rules_changed", [])),
            ("removed", reload.get("rules_removed", [])),
        )
        if names
    ]
    return (f"{head}; rules {'; '.join(changes) if changes else 'unchanged'}", "")


def _errors(document: dict[str, Any]) -> Cell:
    """Whatever is failing now or failed since start; "errors: none" says it was looked at."""
    found = []
    if document.get("commit_error"):
        found.append(f"COMMIT FAILING: {visible(document['commit_error'])}")
    unreadable = sum(1 for f in document.get("files", []) if f.get("state") == "error")
    if unreadable:
        found.append(f"{unreadable} unreadable path{'s' if unreadable != 1 else ''} now")
    for key, what in (
        ("read_errors", "read errors"),
        ("commit_failures", "failed commits"),
        ("publish_failures", "failed publishes"),
    ):
        if document.get(key):
            found.append(f"{document[key]} {what} since start")
    if not found:
        return ("  errors: none", "dim")
    return (f"  errors: {'; '.join(found)}", "bold red")


def _loss(document: dict[str, Any]) -> Cell | None:
    """What truncations lost: a figure, or "unknown" (never a 0 that only means "not counted")."""
    if "possibly_lost_known_bytes" not in document:
        return None
    known, unmeasured = document["possibly_lost_known_bytes"], document["unmeasured_truncations"]
    if document["possibly_lost_bytes"] is None:
        plural = "s" if unmeasured != 1 else ""
        return (
            f"  possibly lost to truncation: unknown ({unmeasured} truncation{plural} without a "
            f"copy of the old content; {known} bytes known lost)",
            "yellow",
        )
    return (f"  possibly lost to truncation: {known} bytes", "yellow" if known else "dim")


def _files(document: dict[str, Any], now: float) -> Section:
    """Each tracked file, and a row for each source that matches no file (it must not vanish)."""
    section = Section(
        "files",
        ["SOURCE", "PATH", "SIZE", "OFFSET", "LAG", "LAG S", "LINES/S", "LAST READ", "STATE"],
        {"SIZE", "OFFSET", "LAG", "LAG S", "LINES/S"},
    )
    for f in document.get("files", []):
        lag = f.get("lag_bytes")
        state = f.get("state", "")
        if f.get("error"):
            state = f"{state} {f['error']}"
        section.rows.append(
            [
                (visible(f.get("source", "")), "cyan"),
                (visible(f["path"]), ""),
                (_figure(f.get("size")), ""),
                (_figure(f.get("offset")), ""),
                (_figure(lag), "yellow" if lag else ""),
                ("-" if "lag_s" not in f else f"{f['lag_s']:.1f}", "yellow" if lag else ""),
                (_figure(f.get("lines_per_s")), ""),
                (_ago(f.get("last_read"), now), "dim"),
                (visible(state), "red" if f.get("state") == "error" else ""),
            ]
        )
    for name, source in document.get("sources", {}).items():
        if source.get("files") == 0:
            empty = [("-", "")] * 6 + [("", "")]
            section.rows.append([(visible(name), "cyan"), ("(matches no file)", "yellow"), *empty])
    return section


def abbreviate_cursor(cursor: str | None) -> str:
    """A cursor for a table: its entry's sequence number and seqnum id's start (`i=4@2d129a1a`);
    `status --json` has it whole."""
    if cursor is None:
        return "-"
    fields = dict(part.split("=", 1) for part in cursor.split(";") if "=" in part)
    if "i" in fields and "s" in fields:
        return f"i={int(fields['i'], 16)}@{fields['s'][:8]}"
    return cursor[:20] + ("..." if len(cursor) > 20 else "")


def _journals(document: dict[str, Any]) -> Section:
    """Journal sources: the cursor (abbreviated), the last entry's time, its age, restarts."""
    section = Section(
        "journals",
        ["JOURNAL", "CURSOR", "LAST ENTRY", "LAG", "ENTRIES", "RESTARTS", "STATE"],
        {"LAG", "ENTRIES", "RESTARTS"},
    )
    for j in document.get("journals", []):
        state = j.get("state", "")
        if j.get("error"):
            state = f"{state} {j['error']}"
        restarts = j.get("restarts", 0)
        section.rows.append(
            [
                (visible(j["source"]), "cyan"),
                (visible(abbreviate_cursor(j.get("cursor"))), ""),
                (visible(j.get("realtime") or "-"), ""),
                ("-" if j.get("lag_s") is None else f"{j['lag_s']:.1f}s", ""),
                (str(j.get("entries", 0)), ""),
                (str(restarts), "yellow" if restarts else ""),
                (visible(state), "red" if j.get("state") == "error" else ""),
            ]
        )
    return section


def _rules(document: dict[str, Any]) -> Section:
    """Per rule: matches since start, in the last minute, alerts; SUPPRESSED only when the
    daemon counts it (a missing figure is not a 0)."""
    rules: dict[str, dict[str, Any]] = document.get("rules") or {
        name: {"matches": count} for name, count in document.get("matches", {}).items()
    }
    suppressed = any("suppressed" in rule for rule in rules.values())
    section = Section(
        "rules",
        ["RULE", "MATCHES", "LAST MIN", "ALERTS", *(["SUPPRESSED"] if suppressed else [])],
        {"MATCHES", "LAST MIN", "ALERTS", "SUPPRESSED"},
    )
    for name, rule in sorted(rules.items()):
        recent = rule.get("last_minute")
        row = [
            (visible(name), "bold"),
            (str(rule.get("matches", 0)), ""),
            (_figure(recent), "bold green" if recent else "dim"),
            (_figure(rule.get("alerts")), "bold red" if rule.get("alerts") else ""),
        ]
        if suppressed:
            row.append((_figure(rule.get("suppressed")), ""))
        section.rows.append(row)
    return section


def _reports(document: dict[str, Any]) -> Section:
    section = Section(
        "reports", ["REPORT", "PUBLISHED", "ACTIVE", "LAST PUBLISHED"], {"PUBLISHED", "ACTIVE"}
    )
    for name, report in sorted(document.get("reports", {}).items()):
        last = report.get("last_published")
        section.rows.append(
            [
                (visible(name), "bold"),
                (str(report["published"]), ""),
                (str(report["active_records"]), ""),
                (visible(last) if last else f"none yet ({visible(report['dir'])})", ""),
            ]
        )
    return section


# ---------------------------------------------------------------- figures


def _figure(value: Any) -> str:
    return "-" if value is None else str(value)


def _parse(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def _ago(stamp: Any, now: float) -> str:
    """`4s ago`: an age reads faster than a timestamp; `-` when it never happened."""
    moment = _parse(stamp)
    return "-" if moment is None else f"{_duration(now - moment)} ago"


def _duration(seconds: float) -> str:
    """`3s`, `4m05s`, `2h03m`, `3d04h`."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
