"""`logwarden report show|summary` on reports a real daemon published: --json and a terminal."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from harness import LOGWARDEN, Daemon, published_records, wait_until
from logwarden.sealing import ReportKey
from test_report_sealing import NAMES, access_lines, cli, sealed_dir

pytestmark = pytest.mark.integration

__all__ = ["sealed_dir"]  # the fixture, shared with test_report_sealing


@pytest.fixture
def published(sealed_dir: tuple[Path, Daemon, ReportKey]) -> Iterator[tuple[Path, ReportKey]]:
    """Each report dir holding the same 60 matches (and no alerts: no thresholds)."""
    workdir, daemon, key = sealed_dir
    (workdir / "logs" / "access.log").write_bytes(access_lines(60))
    daemon.start()
    assert daemon.stop() == 0
    yield workdir, key


def test_json_numbers_match_the_records(published: tuple[Path, ReportKey]) -> None:
    workdir, _ = published
    records = published_records(workdir / "reports" / "plain")
    assert len(records) == 60
    for name in NAMES:
        directory = workdir / "reports" / name
        result = cli(
            "report", "summary", "--json", "--key", str(workdir / "report.key"), str(directory)
        )
        assert result.returncode == 0, result.stderr
        summary = orjson.loads(result.stdout)
        assert summary["records"] == 60
        assert summary["rules"] == {name: 60}
        assert summary["severities"] == {"warning": 60}
        ips = Counter(r["captures"]["ip"] for r in records)
        assert summary["top"]["ip"] == [list(item) for item in ips.most_common(10)]
        assert dict(summary["top"]["user"]) == dict(Counter(r["captures"]["user"] for r in records))
        assert len(summary["top"]["path"]) == 10
        assert sum(n for _, n in summary["per_minute"]) == 60
        assert summary["index"] == {
            "listed": len(summary["files"]),
            "sha256_mismatch": [],
            "missing": [],
            "unlisted": [],
        }
    # show on chosen files: the same numbers, for those files only
    first = sorted((workdir / "reports" / "gzip").glob("*.json.gz"))[0]
    shown = orjson.loads(cli("report", "show", "--json", str(first)).stdout)
    assert shown["files"] == [first.name] and shown["records"] == 7
    # an encrypted report without its key: said plainly, exit 1
    sealed = sorted((workdir / "reports" / "sealed").glob("*.enc"))[0]
    refused = cli("report", "show", str(sealed))
    assert refused.returncode == 1 and b"give its key file with --key" in refused.stderr


def test_a_tampered_report_is_named_by_summary(published: tuple[Path, ReportKey]) -> None:
    workdir, _ = published
    directory = workdir / "reports" / "plain"
    victim = sorted(directory.glob("plain-*.json"))[1]
    document = orjson.loads(victim.read_bytes())
    document["records"] = document["records"][1:]
    victim.write_bytes(orjson.dumps(document))  # a record removed: still valid JSON
    summary = orjson.loads(cli("report", "summary", "--json", str(directory)).stdout)
    assert summary["index"]["sha256_mismatch"] == [victim.name]
    assert summary["records"] == 59


def test_on_a_terminal_a_readable_table_and_no_raw_escape(
    published: tuple[Path, ReportKey], tmp_path: Path
) -> None:
    workdir, _ = published
    assert shutil.which("tmux"), "tmux is in the Makefile's DEBIAN_TEST_PACKAGES"
    session = f"lw-report-{time.monotonic_ns()}"
    out = tmp_path / "rc"
    command = " ".join(
        [
            *LOGWARDEN,
            "report",
            "summary",
            "--key",
            str(workdir / "report.key"),
            str(workdir / "reports" / "sealed"),
            f"; echo rc=$? > {out}",
        ]
    )
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "80",
            command + "; sleep 30",
        ],
        check=True,
        timeout=10,
    )
    try:
        wait_until(
            lambda: out.exists() and out.read_text().strip() != "", 30, message="the summary"
        )
        screen = subprocess.run(
            ["tmux", "capture-pane", "-p", "-e", "-t", session],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, timeout=10)
    assert out.read_text().strip() == "rc=0"
    lines = screen.splitlines()
    assert any("60 records: 60 matches, 0 alerts" in line for line in lines), screen
    assert any(line.split() == ["sealed", "60"] for line in map(strip_ansi, lines)), screen
    assert any("top ip" in line for line in lines)
    # the escape of a log line is shown as text; the only escapes on screen are rich's own styles
    assert "\\x1b[31mred0" in screen
    assert "[31m" not in screen.replace("\\x1b[31m", "")


def strip_ansi(line: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", line)
