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
from pathlib import Path
from typing import Any

import orjson

from logwarden import checkpoint
from logwarden.atomic import write_atomically
from logwarden.config import Config
from logwarden.counters import DaemonSnapshot
from logwarden.timestamps import utc_timestamp

FILE_NAME = "status.json"
EX_RUNNING = 0
EX_ERROR = 1
EX_NOT_RUNNING = 3  # LSB: "program is not running"


class StatusWriter:
    """Renders counter snapshots as status.json in the state dir and as systemd's STATUS= line.

    It keeps one thing between snapshots, the previous line count, to report a rate.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._last_lines = 0
        self._last_time = time.monotonic()
        self.lines_per_s = 0.0

    def document(self, snapshot: DaemonSnapshot) -> dict[str, Any]:
        if snapshot.taken > self._last_time:
            self.lines_per_s = (snapshot.lines - self._last_lines) / (
                snapshot.taken - self._last_time
            )
        self._last_lines, self._last_time = snapshot.lines, snapshot.taken
        commit = snapshot.commit
        return {
            "pid": os.getpid(),
            "written": utc_timestamp(),
            "started_s_ago": round(snapshot.uptime_s, 1),
            "config": str(snapshot.config_path),
            "lines": snapshot.lines,
            "bytes": snapshot.bytes,
            "lines_per_s": round(self.lines_per_s, 1),
            "matches": dict(snapshot.matches),
            "alerts": snapshot.alerts,
            "suppressed": dict(snapshot.suppressed),  # per rule: matches its `ignore` dropped
            "lag_bytes": snapshot.lag_bytes,
            "commits": commit.commits,
            "commit_failures": commit.failures,
            "commit_error": commit.last_error,
            "last_commit_ms": round(commit.last_duration_s * 1000, 2),
            # truncated before read; null when a truncation's loss could not be measured
            "possibly_lost_bytes": snapshot.lost_bytes,
            "possibly_lost_known_bytes": snapshot.possibly_lost_bytes,  # a lower bound then
            "unmeasured_truncations": snapshot.unmeasured_truncations,
            "reports": {
                name: {
                    "published": report.published,
                    "dir": str(report.dir),
                    "active_records": report.active_records,
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
            f"{len(snapshot.files)} files, {self.lines_per_s:.0f} lines/s, "
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


def show_status(config: Config, as_json: bool) -> int:
    """Print the daemon's last status (or, without one, what the checkpoint says); exit 0 when
    the daemon runs, 3 when it does not, 1 when its state cannot be read. Never a traceback: an
    operator runs this when something is already wrong."""
    state_dir = config.daemon.state_dir
    path = state_dir / FILE_NAME
    try:
        document = _read_document(path)
        if document is None:
            print(
                f"logwarden: {path} is empty or damaged (a crash or power cut while it was being "
                "written?); the daemon rewrites it when it starts",
                file=sys.stderr,
            )
            return EX_ERROR
        document["running"] = document.get("state") != "stopped" and _alive(document["pid"])
    except FileNotFoundError:
        try:
            saved = checkpoint.load(state_dir)
        except (OSError, checkpoint.CheckpointError) as error:
            print(f"logwarden: cannot read the state in {state_dir}: {error}", file=sys.stderr)
            return EX_ERROR
        if saved is None:
            print(
                f"logwarden: not running; no status in {state_dir}: the daemon has never run "
                "with this state dir",
                file=sys.stderr,
            )
            return EX_NOT_RUNNING
        document = {
            "running": False,
            "files": [
                {"source": f.source, "path": f.path, "offset": f.framer.offset} for f in saved.files
            ],
        }
    except OSError as error:
        print(f"logwarden: cannot read {path}: {error.strerror or error}", file=sys.stderr)
        return EX_ERROR
    code = EX_RUNNING if document["running"] else EX_NOT_RUNNING
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        )
        return code
    try:
        _print_table(document, path)
    except (KeyError, TypeError, ValueError) as error:  # a document of another version
        print(
            f"logwarden: {path} is not in the form this version knows ({error!r})", file=sys.stderr
        )
        return EX_ERROR
    return code


def _print_table(document: dict[str, Any], path: Path) -> None:
    state = "running" if document.get("running") else "NOT running"
    print(
        f"logwarden {state} (pid {document.get('pid', '?')}), status written {document.get('written', '?')}"
    )
    if "lines" in document:
        print(
            f"  lines {document['lines']}  ({document['lines_per_s']}/s)  matches {sum(document['matches'].values())}"
            f"  alerts {document['alerts']}  lag {document['lag_bytes']} bytes  commits {document['commits']}"
        )
    if document.get("commit_error"):
        print(f"  COMMIT FAILING: {document['commit_error']}")
    _print_loss(document)
    matches, suppressed = document.get("matches", {}), document.get("suppressed", {})
    for rule in sorted({*matches, *suppressed}):
        ignored = f"  suppressed {suppressed[rule]}" if suppressed.get(rule) else ""
        print(f"  rule {rule:<32} {matches.get(rule, 0):>10}{ignored}")
    for name, report in sorted(document.get("reports", {}).items()):
        published, active = report["published"], report["active_records"]
        print(f"  report {name:<30} published {published:>6}  active {active:>6}  {report['dir']}")
    _print_sources(document)
    files = document.get("files", [])
    if files:
        width = max(len(f["path"]) for f in files)
        print(f"  {'FILE':<{width}}  {'SOURCE':<12} {'OFFSET':>12} {'LAG':>10}  STATE")
        for f in files:
            print(
                f"  {f['path']:<{width}}  {f['source']:<12} {f['offset']:>12} {f.get('lag_bytes', ''):>10}  "
                f"{f.get('state', '')}{' ' + f['error'] if f.get('error') else ''}"
            )
    _print_journals(document.get("journals", []))


def abbreviate_cursor(cursor: str | None) -> str:
    """A cursor for a table: its entry's sequence number and seqnum id's start (`i=4@2d129a1a`);
    `status --json` has it whole."""
    if cursor is None:
        return "-"
    fields = dict(part.split("=", 1) for part in cursor.split(";") if "=" in part)
    if "i" in fields and "s" in fields:
        return f"i={int(fields['i'], 16)}@{fields['s'][:8]}"
    return cursor[:20] + ("..." if len(cursor) > 20 else "")


def _print_journals(journals: list[dict[str, Any]]) -> None:
    """Journal sources: the cursor (abbreviated), the last entry's time, its age, restarts."""
    if not journals:
        return
    print(
        f"  {'JOURNAL':<16} {'CURSOR':<20} {'LAST ENTRY':<28} {'LAG':>9} {'ENTRIES':>9}"
        f" {'RESTARTS':>8}  STATE"
    )
    for j in journals:
        lag = "-" if j.get("lag_s") is None else f"{j['lag_s']:.1f}s"
        print(
            f"  {j['source']:<16} {abbreviate_cursor(j.get('cursor')):<20}"
            f" {j.get('realtime') or '-':<28} {lag:>9} {j.get('entries', 0):>9}"
            f" {j.get('restarts', 0):>8}  {j.get('state', '')}"
            f"{' ' + j['error'] if j.get('error') else ''}"
        )


def _print_loss(document: dict[str, Any]) -> None:
    """What truncations lost: a figure, or "unknown" (never a 0 that only means "not counted")."""
    if "possibly_lost_known_bytes" not in document:
        return
    known, unmeasured = document["possibly_lost_known_bytes"], document["unmeasured_truncations"]
    if document["possibly_lost_bytes"] is None:
        plural = "s" if unmeasured != 1 else ""
        print(
            f"  possibly lost to truncation: unknown ({unmeasured} truncation{plural} without a "
            f"copy of the old content; {known} bytes known lost)"
        )
    else:
        print(f"  possibly lost to truncation: {known} bytes")


def _print_sources(document: dict[str, Any]) -> None:
    """Every source with its file count: one that matches nothing must show, not vanish."""
    for name, source in document.get("sources", {}).items():
        count = source["files"]
        files = f"{count} file{'s' if count != 1 else ''}"
        note = "  (matches no file)" if count == 0 else ""
        print(f"  source {name:<30} {files:>12}{note}")
