"""What the daemon is doing: a status file kept up to date in the state dir, and `logwarden status`.

The daemon replaces `status.json` atomically every `status_interval`; `logwarden status` reads it
(no socket to open in a sandbox with PrivateNetwork=, and it still answers after a crash, showing
the last known state and that the process is gone).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from logwarden import checkpoint
from logwarden.atomic import write_atomically
from logwarden.config import Config
from logwarden.timestamps import utc_timestamp

if TYPE_CHECKING:
    from logwarden.service import Daemon

FILE_NAME = "status.json"


class StatusWriter:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._last_lines = 0
        self._last_time = time.monotonic()
        self.lines_per_s = 0.0

    def document(self) -> dict[str, Any]:
        daemon = self.daemon
        now = time.monotonic()
        lines = daemon.pipeline.lines
        if now > self._last_time:
            self.lines_per_s = (lines - self._last_lines) / (now - self._last_time)
        self._last_lines, self._last_time = lines, now
        files = [
            {
                "source": f.source,
                "path": f.path,
                "dev": f.dev,
                "inode": f.inode,
                "offset": f.offset,
                "size": f.size,
                "lag_bytes": f.lag,
                "state": f.state,
                "error": f.error,
            }
            for f in daemon.tails.stats()
        ]
        return {
            "pid": os.getpid(),
            "written": utc_timestamp(),
            "started_s_ago": round(now - daemon.started, 1),
            "config": str(daemon.config.path),
            "lines": lines,
            "bytes": daemon.pipeline.bytes,
            "lines_per_s": round(self.lines_per_s, 1),
            "matches": dict(daemon.pipeline.matches),
            "alerts": daemon.pipeline.alerts,
            "lag_bytes": sum(f["lag_bytes"] for f in files),
            "commits": daemon.commit_stats.commits,
            "commit_failures": daemon.commit_stats.failures,
            "commit_error": daemon.commit_stats.last_error,
            "last_commit_ms": round(daemon.commit_stats.last_duration * 1000, 2),
            "possibly_lost_bytes": daemon.tails.possibly_lost_bytes,  # truncated before read
            "reports": {
                name: {
                    "published": writer.published,
                    "dir": str(writer.config.dir),
                    "active_records": writer.active.records if writer.active else 0,
                }
                for name, writer in daemon.writers.items()
            },
            "files": files,
        }

    def summary(self) -> str:
        """One line for systemd's STATUS=: what an operator wants from `systemctl status`."""
        daemon = self.daemon
        stats = daemon.tails.stats()
        lag = sum(f.lag for f in stats)
        return (
            f"{len(stats)} files, {self.lines_per_s:.0f} lines/s, "
            f"{sum(daemon.pipeline.matches.values())} matches, lag {lag} bytes"
        )

    def write(self) -> None:
        """Blocking: run in a thread. Not fsynced: status is advisory, replaced every few seconds."""
        data = orjson.dumps(self.document(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        write_atomically(
            self.daemon.config.daemon.state_dir / FILE_NAME, [data], mode=0o644, durable=False
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def show_status(config: Config, as_json: bool) -> int:
    """Print the daemon's last status (or, without one, what the checkpoint says); exit 0, or 1
    when there is nothing to show."""
    state_dir = config.daemon.state_dir
    path = state_dir / FILE_NAME
    try:
        document: dict[str, Any] = orjson.loads(path.read_bytes())
        document["running"] = _alive(int(document.get("pid", 0)))
    except FileNotFoundError:
        saved = checkpoint.load(state_dir)
        if saved is None:
            print(
                f"logwarden: no status in {state_dir}: the daemon has never run with this config",
                file=sys.stderr,
            )
            return 1
        document = {
            "running": False,
            "files": [
                {"source": f.source, "path": f.path, "offset": f.framer.offset} for f in saved.files
            ],
        }
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        )
        return 0
    _print_table(document, path)
    return 0


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
    for rule, count in sorted(document.get("matches", {}).items()):
        print(f"  rule {rule:<32} {count:>10}")
    for name, report in sorted(document.get("reports", {}).items()):
        published, active = report["published"], report["active_records"]
        print(f"  report {name:<30} published {published:>6}  active {active:>6}  {report['dir']}")
    files = document.get("files", [])
    if files:
        width = max(len(f["path"]) for f in files)
        print(f"  {'FILE':<{width}}  {'SOURCE':<12} {'OFFSET':>12} {'LAG':>10}  STATE")
        for f in files:
            print(
                f"  {f['path']:<{width}}  {f['source']:<12} {f['offset']:>12} {f.get('lag_bytes', ''):>10}  "
                f"{f.get('state', '')}{' ' + f['error'] if f.get('error') else ''}"
            )
