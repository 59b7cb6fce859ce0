"""`logwarden run --foreground`, the real daemon: what a person at the console sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Daemon, wait_until, write_config

pytestmark = pytest.mark.integration

CONFIG = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"
status_interval = "200ms"

[sources.auth]
paths = ["logs/auth.log"]
start_at = "beginning"

[rules.ssh]
severity = "error"
match = ['Failed password for %{user} from %{ip}']
threshold = { key = "ip", count = 3, within = "10m" }

[reports.out]
dir = "reports"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "logs").mkdir()
    config = write_config(tmp_path / "logwarden.toml", CONFIG)
    # stdout and the JSON logs share one file: the echoed lines are the ones that are not JSON
    started = Daemon(config, tmp_path / "console.log", extra_args=["--foreground"])
    yield started
    started.cleanup()


def test_threshold_alerts_are_shown_on_the_console(tmp_path: Path, daemon: Daemon) -> None:
    daemon.start()
    lines = [
        "sshd[1]: Failed password for root from 203.0.113.9 port 22",
        "sshd[1]: Failed password for admin from 198.51.100.1 port 22",
        "sshd[1]: Failed password for root from 203.0.113.9 port 22",
        "sshd[1]: Failed password for \x1b]0;owned\x07 from 203.0.113.9 port 22 \x1b[2J",
    ]
    (tmp_path / "logs" / "auth.log").write_text("".join(f"{line}\n" for line in lines))
    wait_until(lambda: "ALERT" in daemon.log_text(), 10, message="an ALERT line on stdout")
    assert daemon.stop() == 0
    console = daemon.log_text().splitlines()
    alerts = [i for i, line in enumerate(console) if line.startswith("ALERT")]
    assert len(alerts) == 1, console
    first = alerts[0]
    auth_log = tmp_path / "logs" / "auth.log"
    assert console[first] == (
        f"ALERT ssh [error] ip=203.0.113.9: 3 matches within 600s (last {auth_log}:4)"
    )
    # the line that made the count follows, indented, its control characters made visible
    assert console[first + 1] == (
        "      sshd[1]: Failed password for \\x1b]0;owned\\x07 from 203.0.113.9 port 22 \\x1b[2J"
    )
    assert [line for line in console if line.startswith("MATCH")] == [
        f"MATCH ssh [error] {auth_log}:1 user=root ip=203.0.113.9",
        f"MATCH ssh [error] {auth_log}:2 user=admin ip=198.51.100.1",
        f"MATCH ssh [error] {auth_log}:3 user=root ip=203.0.113.9",
        f"MATCH ssh [error] {auth_log}:4 user=\\x1b]0;owned\\x07 ip=203.0.113.9",
    ]
    assert not any("\x1b" in line or "\x07" in line for line in console)
