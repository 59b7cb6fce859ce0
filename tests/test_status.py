"""status.json and the STATUS= line, rendered from a counter snapshot alone (no daemon needed)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import orjson

from logwarden.counters import CommitSnapshot, DaemonSnapshot, FileSnapshot, ReportSnapshot
from logwarden.status import FILE_NAME, StatusWriter


def snapshot(tmp_path: Path, taken: float, lines: int) -> DaemonSnapshot:
    return DaemonSnapshot(
        taken=taken,
        started=taken - 12.34,
        config_path=tmp_path / "logwarden.toml",
        lines=lines,
        bytes=lines * 10,
        matches={"a": 3, "b": 4},
        alerts=1,
        possibly_lost_bytes=5,
        commit=CommitSnapshot(
            commits=9, failures=2, last_error="disk full", last_duration_s=0.0123
        ),
        reports={"out": ReportSnapshot(dir=tmp_path / "reports", published=6, active_records=7)},
        files=(
            FileSnapshot("src", "/l/a.log", 1, 2, 100, 150, 50, 10, "following", None),
            FileSnapshot("src", "/l/b.log", 0, 0, 0, 0, 0, 0, "error", "permission denied"),
        ),
    )


def test_status_file_has_every_key(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    first = snapshot(tmp_path, taken=time.monotonic() + 1.0, lines=0)
    writer.write(first)
    writer.write(replace(first, taken=first.taken + 2.0, lines=400, bytes=4000))
    document = orjson.loads((tmp_path / FILE_NAME).read_bytes())
    assert document.pop("pid") == os.getpid()
    assert document.pop("written").endswith("Z")
    assert document == {
        "state": "running",
        "started_s_ago": 14.3,
        "config": str(tmp_path / "logwarden.toml"),
        "lines": 400,
        "bytes": 4000,
        "lines_per_s": 200.0,
        "matches": {"a": 3, "b": 4},
        "alerts": 1,
        "lag_bytes": 50,
        "commits": 9,
        "commit_failures": 2,
        "commit_error": "disk full",
        "last_commit_ms": 12.3,
        "possibly_lost_bytes": 5,
        "reports": {"out": {"published": 6, "dir": str(tmp_path / "reports"), "active_records": 7}},
        "files": [
            {
                "source": "src",
                "path": "/l/a.log",
                "dev": 1,
                "inode": 2,
                "offset": 100,
                "size": 150,
                "lag_bytes": 50,
                "state": "following",
                "error": None,
            },
            {
                "source": "src",
                "path": "/l/b.log",
                "dev": 0,
                "inode": 0,
                "offset": 0,
                "size": 0,
                "lag_bytes": 0,
                "state": "error",
                "error": "permission denied",
            },
        ],
    }
    assert writer.summary(first) == "2 files, 200 lines/s, 7 matches, lag 50 bytes"


def test_summary_before_any_rate(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    assert writer.summary(snapshot(tmp_path, taken=0.0, lines=5)) == (
        "2 files, 0 lines/s, 7 matches, lag 50 bytes"
    )
    assert not (tmp_path / FILE_NAME).exists()
