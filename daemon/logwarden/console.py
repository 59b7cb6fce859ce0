"""What `run --foreground` shows: each match and alert as it happens, and rates while busy.

Three renderings of the same events, chosen once at start:
- `PlainEcho` when stdout is not a terminal (a pipe, a file, a test): `MATCH`/`ALERT` lines with the
  log line indented beneath, and the `rates` log event every few seconds. Scripts read this, so
  it does not change with the terminal renderings.
- `TerminalEcho`: one coloured line per match (time, severity, rule, source, the line with the
  matched part highlighted), each alert a full-width bar, and a one-line summary every few
  seconds, only while lines are being read.
- `LiveEcho` (`--live`): a status panel redrawn in place (rich Live) instead of scrolling output:
  totals, files, rules, the last matches, alerts and log events.

Every piece of log content (lines, captures, paths) goes through `terminal.visible`: a log line is
attacker-controlled, and an escape sequence in it must not reach the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from logwarden.counters import DaemonSnapshot
from logwarden.log import get_logger
from logwarden.origin import Origin, SourceRef
from logwarden.rules import CompiledRule, Match
from logwarden.terminal import visible
from logwarden.thresholds import Alert, key_text

log = get_logger(__name__)

RATE_EVERY = 5.0  # seconds between two rate lines
LIVE_REFRESH = 0.2  # at most this often a burst of matches redraws the panel

SEVERITY_STYLES = {
    "debug": "dim",
    "info": "blue",
    "notice": "cyan",
    "warning": "yellow",
    "error": "red",
    "critical": "bold red",
    "alert": "bold red",
    "emergency": "bold red",
}


class Echo(Protocol):
    """The foreground console, as the pipeline and the daemon's status loop see it."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def match(self, match: Match, source: Origin, rule: CompiledRule) -> None: ...
    def alert(self, alert: Alert, source: Origin) -> None: ...
    def tick(self, snapshot: DaemonSnapshot) -> None:
        """Called about once a second with the daemon's counters."""


def foreground_echo(live: bool, stream: TextIO | None = None) -> Echo:
    """The rendering for `stream` (stdout): plain unless a person is watching."""
    stream = stream or sys.stdout
    if not stream.isatty():
        if live:
            log.warning("--live needs a terminal on stdout; echoing plain lines instead")
        return PlainEcho(stream)
    return LiveEcho(stream) if live else TerminalEcho(stream)


def _where(source: Origin, match: Match) -> str:
    return source.where(match)


class _Rates:
    """Lines per second between two snapshots at least RATE_EVERY apart."""

    def __init__(self) -> None:
        self.lines, self.matches, self.taken = 0, 0, time.monotonic()

    def due(self, snapshot: DaemonSnapshot) -> bool:
        return snapshot.taken - self.taken >= RATE_EVERY

    def take(self, snapshot: DaemonSnapshot) -> tuple[float, int, int]:
        """(lines/s, new lines, new matches) since the last take."""
        elapsed = max(snapshot.taken - self.taken, 1e-9)
        lines, matches = snapshot.lines - self.lines, snapshot.match_count - self.matches
        self.lines, self.matches, self.taken = snapshot.lines, snapshot.match_count, snapshot.taken
        return lines / elapsed, lines, matches


# ---------------------------------------------------------------- not a terminal


class PlainEcho:
    """MATCH and ALERT lines on stdout and a `rates` log event: what scripts and tests read."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.rates = _Rates()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def match(self, match: Match, source: Origin, rule: CompiledRule) -> None:
        captures = " ".join(f"{key}={value}" for key, value in match.captures.items())
        self._print(
            f"MATCH {match.rule} [{match.severity}] {_where(source, match)} {captures}",
            match.line,
        )

    def alert(self, alert: Alert, source: Origin) -> None:
        """A threshold crossing, right after the match that made it."""
        self._print(
            f"ALERT {alert.rule} [{alert.severity}] {key_text(alert.key)}:"
            f" {alert.count} matches within {alert.within_s:g}s"
            f" (last {_where(source, alert.match)})",
            alert.match.line,
        )

    def tick(self, snapshot: DaemonSnapshot) -> None:
        if not self.rates.due(snapshot):
            return
        rate, lines, matches = self.rates.take(snapshot)
        if not (lines or matches):
            return
        log.info(
            "rates",
            lines_per_s=round(rate, 1),
            lines=snapshot.lines,
            matches=snapshot.match_count,
            files=len(snapshot.files),
            commits=snapshot.commit.commits,
        )

    def _print(self, head: str, line: str) -> None:
        """One event: its summary, then the log line indented beneath it."""
        print(f"{visible(head)}\n      {visible(line)}", file=self.stream, flush=True)


# ---------------------------------------------------------------- a terminal


class TerminalEcho:
    """One coloured line per match, a bar per alert, a summary line while busy."""

    def __init__(self, stream: TextIO) -> None:
        self.console = Console(file=stream, soft_wrap=True, highlight=False, markup=False)
        self.rates = _Rates()
        self.alerts = 0

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def match(self, match: Match, source: Origin, rule: CompiledRule) -> None:
        self.console.print(match_line(match, source, rule))

    def alert(self, alert: Alert, source: Origin) -> None:
        self.alerts += 1
        self.console.print(alert_bar(alert, source, self.console.width))

    def tick(self, snapshot: DaemonSnapshot) -> None:
        if not self.rates.due(snapshot):
            return
        rate, lines, matches = self.rates.take(snapshot)
        if lines or matches:  # quiet while nothing happens
            self.console.print(summary_line(snapshot, rate, lines, matches), style="dim")


def match_line(match: Match, source: Origin, rule: CompiledRule) -> Text:
    """`12:00:01 WARNING ssh-failed auth auth.log:4  the line`, the matched part highlighted."""
    style = SEVERITY_STYLES.get(match.severity, "")
    text = Text(time.strftime("%H:%M:%S "), style="dim")
    text.append(f"{match.severity.upper():<8} ", style=style)
    text.append(visible(match.rule), style="bold")
    text.append(f" {visible(source.name or '-')} ", style="cyan")
    text.append(f"{visible(_short_where(source, match))}  ", style="dim")
    line = match.line
    span = rule.span(line)
    if span is None:
        text.append(visible(line))
    else:
        start, end = span
        text.append(visible(line[:start]))
        text.append(visible(line[start:end]), style=f"bold underline {style}".strip())
        text.append(visible(line[end:]))
    if match.truncated:
        text.append(" [cut]", style="dim")
    return text


def _short_where(source: Origin, match: Match) -> str:
    """A file by its base name (`auth.log:12`); a journal entry as the origin says it."""
    if isinstance(source, SourceRef):
        return f"{os.path.basename(source.path) or source.name or '-'}:{match.line_no or '?'}"
    return source.where(match)


def alert_bar(alert: Alert, source: Origin, width: int) -> Text:
    """A full-width white-on-red bar: an alert must not scroll by unseen among matches."""
    text = Text(
        visible(
            f" ALERT  {alert.rule} [{alert.severity}]  {key_text(alert.key)}:"
            f" {alert.count} matches within {_duration(alert.within_s)}"
            f"  (last {_short_where(source, alert.match)}) "
        ),
        style="bold white on red",
    )
    text.pad_right(max(0, width - len(text.plain)))
    return text


def summary_line(snapshot: DaemonSnapshot, rate: float, lines: int, matches: int) -> str:
    lag = snapshot.lag_bytes
    return (
        f"{time.strftime('%H:%M:%S')} · {lines:,} lines ({rate:,.0f}/s) · {matches:,} matches"
        f" · {snapshot.alerts:,} alert{'s' if snapshot.alerts != 1 else ''} so far"
        f" · {len(snapshot.files)} files · lag {lag:,} B"
    )


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- --live


class LiveEcho(TerminalEcho):
    """A status panel redrawn in place; log events land in its last lines instead of scrolling.

    Drawn only from the event loop (auto_refresh off: no refresh thread touching our state);
    log records from other threads are only appended to a deque, drawn at the next refresh.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.recent: deque[Text] = deque(maxlen=8)
        self.recent_alerts: deque[Text] = deque(maxlen=4)
        self.logs: deque[Text] = deque(maxlen=5)
        self.snapshot: DaemonSnapshot | None = None
        self.drawn = 0.0
        self.live = Live(
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            vertical_overflow="crop",
        )
        self._handlers: list[logging.Handler] = []

    def open(self) -> None:
        """Start drawing; log records go to the panel until `close`."""
        root = logging.getLogger()
        self._handlers = root.handlers[:]
        formatter = self._handlers[0].formatter if self._handlers else None
        root.handlers[:] = [_PanelHandler(self.logs, formatter)]
        self.live.start(refresh=False)
        self._draw()

    def close(self) -> None:
        """Stop drawing (the last panel stays on screen); logs go back to stderr."""
        if self.live.is_started:
            self._draw()
            self.live.stop()
        if self._handlers:
            logging.getLogger().handlers[:] = self._handlers

    def match(self, match: Match, source: Origin, rule: CompiledRule) -> None:
        self.recent.append(match_line(match, source, rule))
        self._draw(eager=False)

    def alert(self, alert: Alert, source: Origin) -> None:
        self.alerts += 1
        self.recent_alerts.append(alert_bar(alert, source, 0))
        self._draw()

    def tick(self, snapshot: DaemonSnapshot) -> None:
        self.snapshot = snapshot
        self._draw()

    def _draw(self, eager: bool = True) -> None:
        now = time.monotonic()
        if not self.live.is_started or (not eager and now - self.drawn < LIVE_REFRESH):
            return  # a burst of matches: the next tick or alert draws them
        self.drawn = now
        self.live.update(self._panel(), refresh=True)

    def _panel(self) -> Group:
        parts: list[Text | Table] = [self._header()]
        snapshot = self.snapshot
        if snapshot is not None:
            files = Table(box=None, pad_edge=False, header_style="bold")
            for column in ("source", "file", "lines", "lag"):
                files.add_column(column, justify="right" if column in ("lines", "lag") else "left")
            for file in sorted(snapshot.files, key=lambda f: -f.lag_bytes)[:8]:
                files.add_row(
                    visible(file.source),
                    visible(file.path),
                    f"{file.lines:,}",
                    f"{file.lag_bytes:,} B",
                )
            parts.append(files)
            rules = Table(box=None, pad_edge=False, header_style="bold")
            rules.add_column("rule")
            rules.add_column("matches", justify="right")
            top = sorted(snapshot.matches.items(), key=lambda item: -item[1])[:8]
            for name, count in top:
                rules.add_row(visible(name), f"{count:,}")
            if top:
                parts.append(rules)
        parts.append(Text("last matches", style="bold"))
        parts.extend(self.recent or [Text("  none yet", style="dim")])
        if self.recent_alerts:
            parts.append(Text("last alerts", style="bold"))
            parts.extend(self.recent_alerts)
        if self.logs:
            parts.append(Text("log", style="bold"))
            parts.extend(self.logs)
        return Group(*parts)

    def _header(self) -> Text:
        snapshot = self.snapshot
        text = Text(" logwarden ", style="bold reverse")
        if snapshot is None:
            return text.append("  starting", style="dim")
        uptime = int(snapshot.uptime_s)
        text.append(
            f"  up {uptime // 3600}:{uptime // 60 % 60:02d}:{uptime % 60:02d}"
            f" · {snapshot.lines:,} lines ({snapshot.lines_per_s:,.0f}/s) · {snapshot.match_count:,} matches"
            f" · {snapshot.alerts:,} alert{'s' if snapshot.alerts != 1 else ''}"
            f" · {snapshot.commit.commits:,} commits"
            f" · lag {snapshot.lag_bytes:,} B"
        )
        if snapshot.commit.last_error:
            text.append(f"  commit failing: {visible(snapshot.commit.last_error)}", style="red")
        return text


class _PanelHandler(logging.Handler):
    """Log records, rendered by the console formatter, kept for the panel's last lines."""

    def __init__(self, sink: deque[Text], formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.sink = sink
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            rendered = self.format(record).splitlines()[0]
        except Exception:  # a log record that cannot be rendered must not stop the daemon
            self.handleError(record)
            return
        # from_ansi keeps the renderer's colours; anything else that is a control goes visible
        self.sink.append(Text.from_ansi(rendered))
