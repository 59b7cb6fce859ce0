"""Fixtures for every test: no leaked threads, no inherited environment, config files on disk.

Leaked warnings need no fixture here: pyproject's `filterwarnings = ["error"]` already turns
every warning into a failure of the test that caused it.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import settings

from harness import Daemon
from logcapture import capture_logs  # noqa: F401 (the fixture, for every test module)

# Real-filesystem properties (tailing, checkpoints) cannot keep hypothesis' 200 ms deadline on a
# loaded CI machine, and a deadline failure there says nothing about the code.
settings.register_profile("logwarden", deadline=None)
settings.load_profile("logwarden")

# How long a thread that is already shutting down gets before it counts as leaked: threads are
# usually joined, but an observer asked to stop may take a moment to notice.
THREAD_GRACE_S = 2.0

# Variables that change what the daemon does; one set on the machine running the tests must not
# leak in (NOTIFY_SOCKET would have a daemon under test talk to the real systemd).
DAEMON_ENVIRONMENT = (
    "LOGWARDEN_CONFIG",
    "CONFIGURATION_DIRECTORY",
    "STATE_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread running (an observer not stopped, an executor not shut)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + THREAD_GRACE_S
    leaked = [thread for thread in threading.enumerate() if thread not in before]
    while leaked and time.monotonic() < deadline:
        leaked[0].join(timeout=max(0.0, deadline - time.monotonic()))
        leaked = [thread for thread in leaked if thread.is_alive()]
    if leaked:
        pytest.fail(f"test leaked threads: {sorted(thread.name for thread in leaked)}")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without the daemon's environment variables; tests set what they need."""
    for name in DAEMON_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fsync_spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record what each `os.fsync` synced (by its descriptor's path), and still sync it.

    A spy, not a mock: a power cut cannot be simulated here, so the test checks that the
    directory entries a power cut could lose are the ones synced.
    """
    synced: list[Path] = []
    real_fsync = os.fsync

    def spy(descriptor: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


class WriteConfig(Protocol):
    def __call__(self, text: str, name: str = ..., directory: Path | None = ...) -> Path: ...


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """`write_config(text)` writes a config into tmp_path and returns its path.

    The text is dedented and one leading newline dropped, so that a triple-quoted string's first
    line is line 1 of the file and line numbers in assertions match what the test shows.
    """

    def write(text: str, name: str = "logwarden.toml", directory: Path | None = None) -> Path:
        path = (directory or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).removeprefix("\n"), encoding="utf-8")
        return path

    return write


MINIMAL_CONFIG = """
[daemon]
state_dir = "state"
commit_interval = "50ms"
rescan_interval = "1s"

[sources.app]
paths = ["logs/*.log"]
start_at = "beginning"

[rules.error]
match = ['ERROR (?P<what>.*)']
"""


@pytest.fixture
def minimal_config(write_config: WriteConfig) -> Path:
    """A small valid config whose state, logs and default report all live under tmp_path."""
    return write_config(MINIMAL_CONFIG)


@pytest.fixture
def daemon(workdir: Path) -> Iterator[Daemon]:
    """`logwarden run` on the `workdir` of the test's module (its config and state), stopped by
    PID after the test whatever happened."""
    started = Daemon(workdir / "logwarden.toml", workdir / "daemon.log")
    yield started
    started.cleanup()
