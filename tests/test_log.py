"""Logging renderings as a process really produces them: journal, JSON, console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from logwarden.log import journal_attached, resolve_format


def run_scan_of_missing_file(tmp_path: Path, env: dict[str, str], args: list[str]) -> str:
    config = tmp_path / "c.toml"
    config.write_text('[sources.s]\npaths = ["/nonexistent/*.log"]\n[rules.r]\nmatch = ["x"]\n')
    stderr_path = tmp_path / "stderr"
    with open(stderr_path, "wb") as stderr:
        status = os.fstat(stderr.fileno())
        env = {
            **os.environ,
            **{k: v.format(dev=status.st_dev, ino=status.st_ino) for k, v in env.items()},
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "logwarden",
                "scan",
                "-c",
                str(config),
                *args,
                str(tmp_path / "absent.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    return stderr_path.read_text()


def test_journal_gets_priority_prefix_and_no_timestamp(tmp_path: Path) -> None:
    text = run_scan_of_missing_file(tmp_path, {"JOURNAL_STREAM": "{dev}:{ino}"}, [])
    [line] = text.splitlines()
    assert line.startswith("<3>cannot read file ")
    assert "error=" in line and "absent.log" in line
    assert "timestamp" not in line and "\x1b[" not in line


def test_json_when_not_a_terminal_nor_the_journal(tmp_path: Path) -> None:
    text = run_scan_of_missing_file(tmp_path, {"JOURNAL_STREAM": "1:2"}, [])
    [line] = text.splitlines()
    event = orjson.loads(line)
    assert event["event"] == "cannot read file" and event["level"] == "error"
    assert event["timestamp"].endswith("Z")


def test_console_when_asked(tmp_path: Path) -> None:
    text = run_scan_of_missing_file(tmp_path, {}, ["--log-format", "console"])
    assert "cannot read file" in text and "[error" in text


def test_journal_detection_compares_device_and_inode(tmp_path: Path, monkeypatch: object) -> None:
    with open(tmp_path / "f", "w") as stream:
        status = os.fstat(stream.fileno())
        os.environ["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        try:
            assert journal_attached(stream)
            assert resolve_format("auto", stream) == "journal"
            assert resolve_format("json", stream) == "json"
            os.environ["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino + 1}"
            assert not journal_attached(stream)
            assert resolve_format("auto", stream) == "json"
        finally:
            del os.environ["JOURNAL_STREAM"]


def test_a_logger_taken_before_configure_obeys_it() -> None:
    """Modules take their logger at import, before the cli configures logging: it must still
    log as configured (on stderr, never onto stdout, where `scan` writes its NDJSON)."""
    script = (
        "from logwarden.log import configure, get_logger\n"
        "log = get_logger('logwarden.early')\n"
        "configure('json')\n"
        "log.warning('early', n=1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=30, check=True
    )
    assert result.stdout == b""
    event = orjson.loads(result.stderr)
    assert (event["event"], event["level"], event["n"]) == ("early", "warning", 1)
