"""status.json and the STATUS= line, rendered from a counter snapshot alone (no daemon needed)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from logwarden.config import Config, DaemonConfig
from logwarden.counters import (
    CommitSnapshot,
    DaemonSnapshot,
    FileSnapshot,
    JournalSnapshot,
    ReportSnapshot,
)
from logwarden.status import FILE_NAME, StatusWriter, show_status


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
        unmeasured_truncations=0,
        commit=CommitSnapshot(
            commits=9, failures=2, last_error="disk full", last_duration_s=0.0123
        ),
        reports={"out": ReportSnapshot(dir=tmp_path / "reports", published=6, active_records=7)},
        files=(
            FileSnapshot("src", "/l/a.log", 1, 2, 100, 150, 50, 10, "following", None),
            FileSnapshot("src", "/l/b.log", 0, 0, 0, 0, 0, 0, "error", "permission denied"),
        ),
        sources=("src", "auth"),
        journals=(
            JournalSnapshot(
                "sshd",
                None,
                CURSOR,
                "2026-11-25T23:29:27.000001Z",
                2.5,
                11,
                1,
                0,
                "following",
                None,
            ),
        ),
    )


CURSOR = "s=2d129a1a28794b0c9fb597edd7ddb360;i=4a;b=0123;m=1a2150a2c25;t=661222fbc70c2;x=15234"


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
        "suppressed": {},
        "lag_bytes": 50,
        "commits": 9,
        "commit_failures": 2,
        "commit_error": "disk full",
        "last_commit_ms": 12.3,
        "possibly_lost_bytes": 5,
        "possibly_lost_known_bytes": 5,
        "unmeasured_truncations": 0,
        "sources": {"src": {"files": 2}, "auth": {"files": 0}},
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
        "journals": [
            {
                "source": "sshd",
                "directory": None,
                "cursor": CURSOR,
                "realtime": "2026-11-25T23:29:27.000001Z",
                "lag_s": 2.5,
                "entries": 11,
                "restarts": 1,
                "oversized": 0,
                "state": "following",
                "error": None,
            }
        ],
    }
    assert writer.summary(first) == "2 files, 200 lines/s, 7 matches, lag 50 bytes"


def test_summary_before_any_rate(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    assert writer.summary(snapshot(tmp_path, taken=0.0, lines=5)) == (
        "2 files, 0 lines/s, 7 matches, lag 50 bytes"
    )
    assert not (tmp_path / FILE_NAME).exists()


def test_a_loss_that_could_not_be_measured_is_null_and_shown_as_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0 must mean nothing was lost: with a truncation whose loss is unknown, the figure is
    null (never a number that reads as zero), and the known part a lower bound beside it."""
    writer = StatusWriter(tmp_path)
    writer.write(
        replace(snapshot(tmp_path, taken=time.monotonic(), lines=3), unmeasured_truncations=2)
    )
    document = orjson.loads((tmp_path / FILE_NAME).read_bytes())
    assert document["possibly_lost_bytes"] is None
    assert document["possibly_lost_known_bytes"] == 5
    assert document["unmeasured_truncations"] == 2
    config = Config(
        path=tmp_path / "x.toml",
        daemon=DaemonConfig(state_dir=tmp_path),
        sources={},
        rules={},
        reports={},
    )
    show_status(config, as_json=False)
    shown = capsys.readouterr().out
    assert "possibly lost to truncation: unknown (2 truncations" in shown
    assert "5 bytes known lost" in shown
    assert re.search(r"source auth +0 files +\(matches no file\)", shown)
    assert re.search(r"source src +2 files", shown)
    # a journal source: its cursor abbreviated (sequence number @ seqnum id), time, lag, restarts
    assert re.search(
        r"sshd +i=74@2d129a1a +2026-11-25T23:29:27.000001Z +2.5s +11 +1  following", shown
    )
