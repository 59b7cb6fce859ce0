"""Test harness: the real daemon as a subprocess, real files, bounded waits, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from logwarden.report_index import INDEX_NAME
from logwarden.sealing import ReportKey, layers_of, open_report

LOGWARDEN = [sys.executable, "-m", "logwarden"]


def wait_until(
    predicate: Callable[[], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Daemon:
    """`logwarden run` in a subprocess with JSON logs in a file; always stopped by the test."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.config = config
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, wait_ready: bool = True, timeout: float = 20.0) -> Daemon:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *LOGWARDEN,
                    "run",
                    "-c",
                    str(self.config),
                    "--log-format",
                    "json",
                    "--log-level",
                    "debug",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if wait_ready:
            wait_until(
                lambda: (
                    self.logged("ready") or self.process is None or self.process.poll() is not None
                ),
                timeout,
                message="the daemon's ready line",
            )
            assert self.process.poll() is None, f"daemon exited early:\n{self.log_text()}"
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        events = []
        for line in self.log_path.read_bytes()[self._log_offset :].splitlines():
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                events.append({"event": line.decode(errors="replace")})
        return events

    def logged(self, event: str) -> bool:
        return any(item.get("event") == event for item in self.events())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:] if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"daemon did not stop within {timeout}s:\n{self.log_text()}"
            ) from None
        return code

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def published_records(report_dir: Path, keys: Sequence[ReportKey] = ()) -> list[dict[str, Any]]:
    """Every record of every published report, each report checked to be complete, valid JSON;
    compressed and encrypted reports are opened (with `keys`). index.json is not a report."""
    records: list[dict[str, Any]] = []
    if not report_dir.exists():
        return records
    for path in sorted(report_dir.iterdir()):
        if path.name.startswith(".") or path.name == INDEX_NAME:
            continue
        try:
            layers = layers_of(path.name)
        except ValueError:
            raise AssertionError(f"unexpected file in a report dir: {path}") from None
        data = open_report(path, keys)
        if layers.format == "json":
            document = orjson.loads(data)
            assert set(document) == {"report", "host", "opened", "closed", "counts", "records"}, (
                path
            )
            assert sum(document["counts"].values()) == sum(
                1 for r in document["records"] if "kind" not in r
            )
            records.extend(document["records"])
        else:
            records.extend(orjson.loads(line) for line in data.splitlines())
    return records


def counts_by(
    records: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> Counter[Any]:
    return Counter(key(record) for record in records)
