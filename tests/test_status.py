"""status.json and the STATUS= line, rendered from a counter snapshot alone (no daemon needed)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from logwarden import status_view
from logwarden.config import Config, DaemonConfig
from logwarden.counters import (
    CommitSnapshot,
    DaemonSnapshot,
    FileSnapshot,
    JournalSnapshot,
    ReloadSnapshot,
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
        reports={
            "out": ReportSnapshot(
                dir=tmp_path / "reports",
                published=6,
                active_records=7,
                last_published=tmp_path / "reports" / "out-20261125T232927Z-000006.json",
            )
        },
        files=(
            FileSnapshot(
                "src", "/l/a.log", 1, 2, 100, 150, 50, 10, "following", None, 3.25, 4.56, READ_AT
            ),
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
        rules=("a", "b", "c"),
        alerts_per_rule={"b": 1},
        lines_per_s=200.04,
        matches_last_minute={"a": 2},
        generation=3,
        last_reload=ReloadSnapshot(READ_AT, "applied", None, ("c",), ("b",), ("old",)),
    )


READ_AT = 1795649367.5  # 2026-11-25T23:29:27.5Z


CURSOR = "s=2d129a1a28794b0c9fb597edd7ddb360;i=4a;b=0123;m=1a2150a2c25;t=661222fbc70c2;x=15234"


def test_status_file_has_every_key(tmp_path: Path) -> None:
    writer = StatusWriter(tmp_path)
    first = snapshot(tmp_path, taken=time.monotonic() + 1.0, lines=0)
    writer.write(first)
    writer.write(replace(first, taken=first.taken + 2.0, lines=400, bytes=4000))
    document = orjson.loads((tmp_path / FILE_NAME).read_bytes())
    assert document.pop("pid") == os.getpid()
    assert document.pop("written").endswith("Z")
    started = datetime.fromisoformat(document.pop("started")).timestamp()
    assert abs(time.time() - 14.3 - started) < 5
    assert document == {
        "state": "running",
        "started_s_ago": 14.3,
        "config": str(tmp_path / "logwarden.toml"),
        "generation": 3,
        "last_reload": {
            "time": "2026-11-25T23:29:27.500000Z",
            "result": "applied",
            "error": None,
            "rules_added": ["c"],
            "rules_changed": ["b"],
            "rules_removed": ["old"],
        },
        "lines": 400,
        "bytes": 4000,
        "lines_per_s": 200.0,
        "matches": {"a": 3, "b": 4},
        "alerts": 1,
        "suppressed": {},
        "rule_state_evictions": {},
        "times_out_of_bounds": {},
        "lag_bytes": 50,
        "commits": 9,
        "commit_failures": 2,
        "commit_error": "disk full",
        "last_commit_ms": 12.3,
        "publish_failures": 0,
        "read_errors": 0,
        "possibly_lost_bytes": 5,
        "possibly_lost_known_bytes": 5,
        "unmeasured_truncations": 0,
        "rules": {
            "a": {"matches": 3, "last_minute": 2, "alerts": 0, "suppressed": 0},
            "b": {"matches": 4, "last_minute": 0, "alerts": 1, "suppressed": 0},
            "c": {"matches": 0, "last_minute": 0, "alerts": 0, "suppressed": 0},
        },
        "sources": {"src": {"files": 2}, "auth": {"files": 0}},
        "reports": {
            "out": {
                "published": 6,
                "dir": str(tmp_path / "reports"),
                "active_records": 7,
                "last_published": str(tmp_path / "reports" / "out-20261125T232927Z-000006.json"),
            }
        },
        "files": [
            {
                "source": "src",
                "path": "/l/a.log",
                "dev": 1,
                "inode": 2,
                "offset": 100,
                "size": 150,
                "lag_bytes": 50,
                "lag_s": 3.25,
                "lines": 10,
                "lines_per_s": 4.6,
                "last_read": "2026-11-25T23:29:27.500000Z",
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
                "lag_s": 0.0,
                "lines": 0,
                "lines_per_s": 0.0,
                "last_read": None,
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
    idle = replace(snapshot(tmp_path, taken=0.0, lines=5), lines_per_s=0.0)
    assert writer.summary(idle) == ("2 files, 0 lines/s, 7 matches, lag 50 bytes")
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
    assert re.search(r"^  auth +\(matches no file\)", shown, re.M)
    assert re.search(
        r"^  src +/l/a\.log +150 +100 +50 +3\.2 +4\.6 +\S+ ago +following$", shown, re.M
    )
    assert re.search(r"^  src +/l/b\.log .* error permission denied$", shown, re.M)
    # a journal source: its cursor abbreviated (sequence number @ seqnum id), time, lag, restarts
    assert re.search(
        r"sshd +i=74@2d129a1a +2026-11-25T23:29:27.000001Z +2.5s +11 +1  following", shown
    )


def rendered(document: dict[str, object]) -> str:
    return status_view.plain(status_view.layout(document, now=READ_AT + 5))


def test_the_suppressed_column_only_when_the_daemon_counts_it() -> None:
    """No key means "not counted": a column of zeros would say "nothing suppressed"."""
    document: dict[str, object] = {
        "running": True,
        "rules": {"a": {"matches": 3, "last_minute": 1, "alerts": 0}},
    }
    shown = rendered(document)
    assert re.search(r"^  RULE +MATCHES +LAST MIN +ALERTS$", shown, re.M), shown
    assert re.search(r"^  a +3 +1 +0$", shown, re.M)
    document["rules"] = {"a": {"matches": 3, "last_minute": 1, "alerts": 0, "suppressed": 7}}
    shown = rendered(document)
    assert re.search(r"^  RULE +MATCHES +LAST MIN +ALERTS +SUPPRESSED$", shown, re.M), shown
    assert re.search(r"^  a +3 +1 +0 +7$", shown, re.M)


def test_reloads_errors_and_log_content_in_the_header() -> None:
    document = {
        "running": True,
        "pid": 42,
        "started": "2026-11-25T22:29:27.500000Z",
        "generation": 4,
        "written": "2026-11-25T23:29:30.000000Z",
        "last_reload": {
            "time": "2026-11-25T23:29:27.500000Z",
            "result": "refused",
            "error": "x.toml:3: rules.a.mtch: unknown key",
        },
        "commit_error": "No space left on device",
        "read_errors": 2,
        "files": [{"source": "s", "path": "/l/\x1b[2Jevil.log", "offset": 0, "state": "error"}],
    }
    shown = rendered(document)
    lines = shown.splitlines()
    assert lines[0] == (
        "logwarden running (pid 42), up 1h00m, config generation 4, "
        "status written 2026-11-25T23:29:30.000000Z"
    )
    assert (
        "  last reload 2026-11-25T23:29:27.500000Z: refused: x.toml:3: rules.a.mtch: unknown key"
        in lines
    )
    assert (
        "  errors: COMMIT FAILING: No space left on device; 1 unreadable path now; "
        "2 read errors since start"
    ) in lines
    assert "\x1b" not in shown and "/l/\\x1b[2Jevil.log" in shown  # a file name is not trusted
    document["last_reload"] = {
        "time": "2026-11-25T23:29:27.500000Z",
        "result": "applied",
        "error": None,
        "rules_added": ["b", "c"],
        "rules_changed": [],
        "rules_removed": ["a"],
    }
    assert "  last reload 2026-11-25T23:29:27.500000Z: applied; rules added b, c; removed a" in (
        rendered(document).splitlines()
    )
