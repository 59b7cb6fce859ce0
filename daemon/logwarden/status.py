"""What the daemon is doing: a status file kept up to date in the state dir, and `logwarden status`.

The daemon replaces `status.json` atomically when it is ready, after a reload, when it stops, and
every `status_interval` while anything changes; `logwarden status` reads it (no socket to open in
a sandbox with PrivateNetwork=, and it still answers after a crash, showing the last known state
and that the process is gone). `status` exits with the LSB codes `systemctl status` uses: 0 the
daemon runs, 3 it does not, 1 the state cannot be read.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from logwarden import checkpoint
from logwarden.atomic import write_atomically
from logwarden.config import Config
from logwarden.counters import DaemonSnapshot, ReloadSnapshot
from logwarden.timestamps import utc_timestamp

if TYPE_CHECKING:  # rich is for `logwarden status` only, not the daemon writing status.json
    from rich.console import Console, RenderableType

FILE_NAME = "status.json"
EX_RUNNING = 0
EX_ERROR = 1
EX_NOT_RUNNING = 3  # LSB: "program is not running"
WATCH_INTERVAL = 1.0  # seconds between two views of `status --watch`


class StatusWriter:
    """Renders counter snapshots as status.json in the state dir and as systemd's STATUS= line.

    Every figure, rates and "last minute" counts included, is the snapshot's: status, metrics
    and the foreground console read the same numbers.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def document(self, snapshot: DaemonSnapshot) -> dict[str, Any]:
        commit = snapshot.commit
        wall = time.time()
        return {
            "pid": os.getpid(),
            "written": utc_timestamp(),
            "started": _wall_text(wall - snapshot.uptime_s),
            "started_s_ago": round(snapshot.uptime_s, 1),
            "config": str(snapshot.config_path),
            "generation": snapshot.generation,
            "last_reload": _reload(snapshot.last_reload),
            "lines": snapshot.lines,
            "bytes": snapshot.bytes,
            "lines_per_s": round(snapshot.lines_per_s, 1),
            "matches": dict(snapshot.matches),
            "alerts": snapshot.alerts,
            "suppressed": dict(snapshot.suppressed),  # per rule: matches its `ignore` dropped
            "rule_state_evictions": dict(snapshot.rule_state_evictions),  # per rule
            "times_out_of_bounds": dict(snapshot.times_out_of_bounds),  # per source
            "lag_bytes": snapshot.lag_bytes,
            "commits": commit.commits,
            "commit_failures": commit.failures,
            "commit_error": commit.last_error,
            "last_commit_ms": round(commit.last_duration_s * 1000, 2),
            "publish_failures": commit.publish_failures,
            "read_errors": snapshot.read_errors,
            # truncated before read; null when a truncation's loss could not be measured
            "possibly_lost_bytes": snapshot.lost_bytes,
            "possibly_lost_known_bytes": snapshot.possibly_lost_bytes,  # a lower bound then
            "unmeasured_truncations": snapshot.unmeasured_truncations,
            "rules": _rules(snapshot),
            "reports": {
                name: {
                    "published": report.published,
                    "dir": str(report.dir),
                    "active_records": report.active_records,
                    "last_published": (
                        None if report.last_published is None else str(report.last_published)
                    ),
                }
                for name, report in snapshot.reports.items()
            },
            "sources": {
                name: {"files": count} for name, count in snapshot.files_per_source().items()
            },
            "files": [
                {
                    "source": f.source,
                    "path": f.path,
                    "dev": f.dev,
                    "inode": f.inode,
                    "offset": f.offset,
                    "size": f.size,
                    "lag_bytes": f.lag_bytes,
                    "lag_s": round(f.lag_s, 3),
                    "lines": f.lines,
                    "lines_per_s": round(f.lines_per_s, 1),
                    "last_read": None if f.last_read is None else _wall_text(f.last_read),
                    "state": f.state,
                    "error": f.error,
                }
                for f in snapshot.files
            ],
            "journals": [
                {
                    "source": j.source,
                    "directory": j.directory,
                    "cursor": j.cursor,
                    "realtime": j.realtime,
                    "lag_s": None if j.lag_s is None else round(j.lag_s, 3),
                    "entries": j.entries,
                    "restarts": j.restarts,
                    "oversized": j.oversized,
                    "state": j.state,
                    "error": j.error,
                }
                for j in snapshot.journals
            ],
        }

    def summary(self, snapshot: DaemonSnapshot) -> str:
        """One line for systemd's STATUS=: what an operator wants from `systemctl status`."""
        return (
            f"{len(snapshot.files)} files, {snapshot.lines_per_s:.0f} lines/s, "
            f"{snapshot.match_count} matches, lag {snapshot.lag_bytes} bytes"
        )

    def write(self, snapshot: DaemonSnapshot, state: str = "running") -> None:
        """Blocking: run in a thread. `state` is "running", or "stopped" for the last write.

        Atomic (a reader sees the old document or the new one) but not fsynced, by decision: the
        file is advisory and rewritten at the next start, so two fsyncs per write (file and dir)
        would buy nothing but disk flushes on a busy host. The cost is that a power cut can leave
        it empty or torn, and `show_status` says so instead of failing on it.
        """
        document = self.document(snapshot)
        document["state"] = state
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        write_atomically(self.path, [data], mode=0o644, durable=False)


def _wall_text(seconds: float) -> str:
    return utc_timestamp(datetime.fromtimestamp(seconds, UTC))


def _reload(reload: ReloadSnapshot | None) -> dict[str, Any] | None:
    if reload is None:
        return None
    return {
        "time": _wall_text(reload.time),
        "result": reload.result,
        "error": reload.error,
        "rules_added": list(reload.rules_added),
        "rules_changed": list(reload.rules_changed),
        "rules_removed": list(reload.rules_removed),
    }


def _rules(snapshot: DaemonSnapshot) -> dict[str, dict[str, int]]:
    """Every configured rule (and any a reload removed that had counted something), with its
    matches since start, in the last minute, its threshold alerts, and the matches its `ignore`
    dropped."""
    names = dict.fromkeys(
        [*snapshot.rules, *snapshot.matches, *snapshot.alerts_per_rule, *snapshot.suppressed]
    )
    return {
        name: {
            "matches": snapshot.matches.get(name, 0),
            "last_minute": snapshot.matches_last_minute.get(name, 0),
            "alerts": snapshot.alerts_per_rule.get(name, 0),
            "suppressed": snapshot.suppressed.get(name, 0),
        }
        for name in names
    }


def _alive(pid: int) -> bool:
    """Whether `pid` is a logwarden process: after a reboot the pid of a status file left by a
    crash may well belong to something else."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False  # gone since the probe
    except OSError:
        return True  # /proc hides it (hidepid=): the signal probe is all there is
    return b"logwarden" in cmdline


def _read_document(path: Path) -> dict[str, Any] | None:
    """status.json as written, or None when it is empty or torn (a power cut: it is not
    fsynced) or not a status document at all. FileNotFoundError when there is none."""
    data = path.read_bytes()
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("pid"), int):
        return None
    return document


@dataclass(frozen=True, slots=True)
class Reading:
    """What the state dir says: a document to show (None when there is none), the exit code,
    and a message for stderr (a damaged file, a state dir never used)."""

    code: int
    document: dict[str, Any] | None
    message: str | None = None


def read_status(config: Config) -> Reading:
    """The daemon's last status (or, without one, what the checkpoint says), with `running`
    added: whether that daemon still runs. Never raises for a missing or damaged state."""
    state_dir = config.daemon.state_dir
    path = state_dir / FILE_NAME
    try:
        document = _read_document(path)
        if document is None:
            return Reading(
                EX_ERROR,
                None,
                f"logwarden: {path} is empty or damaged (a crash or power cut while it was being "
                "written?); the daemon rewrites it when it starts",
            )
        document["running"] = document.get("state") != "stopped" and _alive(document["pid"])
    except FileNotFoundError:
        try:
            saved = checkpoint.load(state_dir)
        except (OSError, checkpoint.CheckpointError) as error:
            return Reading(
                EX_ERROR, None, f"logwarden: cannot read the state in {state_dir}: {error}"
            )
        if saved is None:
            return Reading(
                EX_NOT_RUNNING,
                None,
                f"logwarden: not running; no status in {state_dir}: the daemon has never run "
                "with this state dir",
            )
        document = {
            "running": False,
            "files": [
                {"source": f.source, "path": f.path, "offset": f.framer.offset} for f in saved.files
            ],
        }
    except OSError as error:
        return Reading(EX_ERROR, None, f"logwarden: cannot read {path}: {error.strerror or error}")
    return Reading(EX_RUNNING if document["running"] else EX_NOT_RUNNING, document)


def show_status(config: Config, as_json: bool, watch: bool = False) -> int:
    """Print the daemon's status once (or, with `watch`, every second until ^C); exit 0 when
    the daemon runs, 3 when it does not, 1 when its state cannot be read. Never a traceback: an
    operator runs this when something is already wrong."""
    from rich.console import Console  # noqa: PLC0415 - 40 ms the daemon need not pay

    from logwarden import status_view  # noqa: PLC0415 - it draws with rich

    console = Console(highlight=False, markup=False)
    if watch:
        return _watch(config, console)
    reading = read_status(config)
    if reading.message:
        print(reading.message, file=sys.stderr)
    if reading.document is None:
        return reading.code
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps(reading.document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        )
        return reading.code
    try:
        view = status_view.layout(reading.document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # another version's
        print(
            f"logwarden: {config.daemon.state_dir / FILE_NAME} is not in the form this version "
            f"knows ({error!r})",
            file=sys.stderr,
        )
        return EX_ERROR
    if console.is_terminal:
        # soft wrap: a long line (a reload's error) is wrapped by the terminal, so a copy and
        # paste of it comes out whole
        console.print(status_view.rich(view), soft_wrap=True)
    else:
        print(status_view.plain(view))
    return reading.code


def _watch(config: Config, console: Console) -> int:
    """Redraw every WATCH_INTERVAL until ^C (exit 0), reading the state dir afresh each time,
    so a daemon that stops or starts meanwhile shows as it is. On a terminal the view is
    redrawn in place (rich Live); elsewhere each view is printed after the last, a blank line
    between. Rejected: a full-screen (alternate screen) view, which takes the last figures
    away from the terminal at ^C, when an operator may want to copy them."""
    from rich.live import Live  # noqa: PLC0415 - see show_status

    try:
        if not console.is_terminal:
            while True:
                print(_frame_text(config), end="\n\n", flush=True)
                time.sleep(WATCH_INTERVAL)
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                live.update(_frame(config), refresh=True)
                time.sleep(WATCH_INTERVAL)
    except KeyboardInterrupt:
        return EX_RUNNING


def _frame(config: Config) -> RenderableType:
    from rich.console import Group  # noqa: PLC0415 - see show_status
    from rich.text import Text  # noqa: PLC0415

    from logwarden import status_view  # noqa: PLC0415

    reading = read_status(config)
    footer = Text(
        f"every {WATCH_INTERVAL:g}s, ^C to quit · {time.strftime('%H:%M:%S')}", style="dim"
    )
    if reading.document is None:
        return Group(
            Text("logwarden NOT running", style="bold red"), Text(reading.message or ""), footer
        )
    try:
        return Group(status_view.rich(status_view.layout(reading.document)), footer)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return Group(Text(f"status.json is not in the form this version knows ({error!r})"), footer)


def _frame_text(config: Config) -> str:
    from logwarden import status_view  # noqa: PLC0415 - see show_status

    reading = read_status(config)
    stamp = time.strftime("%H:%M:%S")
    if reading.document is None:
        return f"logwarden NOT running\n  {reading.message or ''}\n  ({stamp})"
    try:
        return f"{status_view.plain(status_view.layout(reading.document))}\n  ({stamp})"
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return f"status.json is not in the form this version knows ({error!r})"
