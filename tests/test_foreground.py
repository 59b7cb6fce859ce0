"""`logwarden run --foreground`, the real daemon: what a person at the console sees."""

from __future__ import annotations

import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Daemon, wait_until, write_config
from tmuxpane import Pane

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


# ---------------------------------------------------------------- on a terminal

LINES = [
    "sshd[1]: Failed password for root from 203.0.113.9 port 22",
    "sshd[1]: Failed password for root from 203.0.113.9 port 22",
    "sshd[1]: Failed password for root from 203.0.113.9 port 22",
    "sshd[1]: Failed password for \x1b]0;owned\x07ad\x1b[2Jmin from 198.51.100.1 port 22",
]
HOSTILE_SHOWN = "Failed password for \\x1b]0;owned\\x07ad\\x1b[2Jmin from 198.51.100.1"
SUMMARY = re.compile(r"· 4 lines \([0-9,]+/s\) · 4 matches · 1 alert so far · 1 files · lag 0 B$")


@pytest.fixture
def pane() -> Iterator[Pane]:
    terminal = Pane()
    yield terminal
    terminal.kill()


def start_in(pane: Pane, tmp_path: Path, *options: str) -> Path:
    """The daemon in the pane, as a person starts it; the log file it watches, still empty."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "auth.log"
    log.touch()
    config = write_config(tmp_path / "logwarden.toml", CONFIG)
    pane.start(
        f"{shlex.quote(sys.executable)} -m logwarden run -c {shlex.quote(str(config))}"
        f" {' '.join(options)}; echo EXIT=$?; sleep 60"
    )
    pane.wait_for("ready")
    return log


def test_a_terminal_gets_coloured_lines_alert_bars_and_rates_while_busy(
    tmp_path: Path, pane: Pane
) -> None:
    log = start_in(pane, tmp_path, "--foreground")
    log.write_text("".join(f"{line}\n" for line in LINES))
    screen = pane.wait_for(" lines (", timeout=20)  # the rate line, once the lines are read
    lines = [line.rstrip() for line in screen.splitlines()]
    matches = [line for line in lines if re.match(r"\d\d:\d\d:\d\d ERROR ", line)]
    assert [line[9:] for line in matches] == [
        f"ERROR    ssh auth auth.log:{n}  {LINES[0]}" for n in (1, 2, 3)
    ] + [f"ERROR    ssh auth auth.log:4  sshd[1]: {HOSTILE_SHOWN} port 22"]
    bar = " ALERT  ssh [error]  ip=203.0.113.9: 3 matches within 10m  (last auth.log:3)"
    assert lines.index(bar) == lines.index(matches[2]) + 1  # right after the match that made it
    assert [line for line in lines if SUMMARY.search(line)], lines
    colours = pane.screen(colours=True)
    # the matched part is highlighted (bold underline), the alert is white on red, full width
    assert re.search(
        r"sshd\[1\]: (\x1b\[[0-9;]*m)*\x1b\[1;4m(\x1b\[[0-9;]*m)*"
        r"Failed password for root from 203\.0\.113\.9\x1b\[",
        colours,
    ), colours
    assert re.search(r"\x1b\[[0-9;]*41m ALERT  ssh", colours), colours
    assert "owned" not in pane.title()
    # quiet while nothing happens: no second rate line over two more rate periods
    time.sleep(11)
    assert len([line for line in pane.screen().splitlines() if " lines (" in line]) == 1
    pane.keys("C-c")
    assert "EXIT=0" in pane.wait_for("EXIT=")


def test_live_shows_a_status_panel(tmp_path: Path, pane: Pane) -> None:
    log = start_in(pane, tmp_path, "--live")
    log.write_text("".join(f"{line}\n" for line in LINES))
    wait_until(
        lambda: "· 4 lines" in pane.screen() and "last alerts" in pane.screen(),
        20,
        message="the panel with the four lines and the alert",
    )
    lines = [line.rstrip() for line in pane.screen().splitlines()]
    header = next(line for line in lines if line.startswith(" logwarden "))
    assert " · 4 lines (" in header and " · 4 matches · 1 alert · " in header
    assert re.search(rf"^auth +{re.escape(str(log))} +4 +0 B$", "\n".join(lines), re.M)
    assert re.search(r"^ssh +4$", "\n".join(lines), re.M)
    recent = lines[lines.index("last matches") + 1 : lines.index("last alerts")]
    assert [line[9:] for line in recent] == [
        f"ERROR    ssh auth auth.log:{n}  {LINES[0]}" for n in (1, 2, 3)
    ] + [f"ERROR    ssh auth auth.log:4  sshd[1]: {HOSTILE_SHOWN} port 22"]
    assert " ALERT  ssh [error]  ip=203.0.113.9: 3 matches within 10m  (last auth.log:3)" in lines
    # the panel is redrawn in place, not scrolled: one header on the screen
    assert sum(line.startswith(" logwarden ") for line in lines) == 1
    assert "owned" not in pane.title()
    pane.keys("C-c")
    screen = pane.wait_for("EXIT=")
    assert "EXIT=0" in screen
    # log lines go back to the terminal for the stop
    assert re.search(r"\[info +\] stopped ", screen), screen
