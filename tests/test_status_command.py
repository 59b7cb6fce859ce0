"""`logwarden status` against the real daemon: `--json` figure by figure against the work done,
the table in a terminal (tmux) as a person reads it, a stopped daemon, and `--watch`."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import LOGWARDEN, Daemon, wait_until, write_config
from test_daemon import write_lines
from tmuxpane import Pane

pytestmark = pytest.mark.integration

CONFIG = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"
status_interval = "100ms"

[sources.app]
paths = ["logs/*.log"]
start_at = "beginning"

[sources.auth]
paths = ["auth/auth.log"]

[rules.hit]
match = ['seq=%{int:seq} FAIL']

[reports.out]
dir = "reports"
format = "ndjson"
rotate_max_records = 40
"""

WITH_A_NEW_RULE = (
    CONFIG
    + """
[rules.fine]
match = ['seq=%{int:seq} ok$']
report = "out"
"""
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    write_config(tmp_path / "logwarden.toml", CONFIG)
    return tmp_path


@pytest.fixture
def pane() -> Iterator[Pane]:
    terminal = Pane(width=140, height=40)
    yield terminal
    terminal.kill()


def status(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*LOGWARDEN, "status", "-c", str(workdir / "logwarden.toml"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def status_json(workdir: Path) -> dict[str, Any]:
    done = status(workdir, "--json")
    assert done.returncode in (0, 3), done.stderr
    document: dict[str, Any] = orjson.loads(done.stdout)
    return document


def status_command(workdir: Path, *args: str) -> str:
    """`logwarden status` as typed at a shell prompt, its exit code printed after it."""
    config = shlex.quote(str(workdir / "logwarden.toml"))
    command = f"{shlex.quote(sys.executable)} -m logwarden status -c {config} {' '.join(args)}"
    return f"{command}; echo EXIT=$?; sleep 60"


def report_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "reports").glob("out-*.ndjson"))


def test_status_figures_match_the_work_done(workdir: Path, daemon: Daemon, pane: Pane) -> None:
    log = workdir / "logs" / "app.log"
    daemon.start()
    write_lines(log, 0, 300)  # 100 lines match (every third)
    wait_until(lambda: status_json(workdir)["lines"] == 300, 15, message="the lines read")
    # the reports: 40 + 40 published, 20 in the active journal (rotate_interval is 1h)
    wait_until(lambda: len(report_files(workdir)) == 2, 15, message="two reports published")
    wait_until(
        lambda: status_json(workdir)["reports"]["out"]["published"] == 2, 15, message="status"
    )
    done = status(workdir, "--json")
    assert done.returncode == 0
    document = orjson.loads(done.stdout)
    assert document["running"] is True and document["pid"] == daemon.pid
    [shown] = document["files"]
    stat = os.stat(log)
    assert (shown["source"], shown["path"]) == ("app", str(log))
    assert (shown["dev"], shown["inode"]) == (stat.st_dev, stat.st_ino)
    assert shown["size"] == shown["offset"] == stat.st_size
    assert (shown["lag_bytes"], shown["lag_s"], shown["lines"]) == (0, 0.0, 300)
    assert shown["state"] == "following" and shown["error"] is None
    last_read = datetime.fromisoformat(shown["last_read"]).timestamp()
    assert time.time() - 60 < last_read <= time.time()
    assert shown["lines_per_s"] > 0  # read within the last ten seconds
    # right after the burst every match of it is within the last minute
    assert document["rules"] == {
        "hit": {"matches": 100, "last_minute": 100, "alerts": 0, "suppressed": 0}
    }
    assert document["matches"] == {"hit": 100}
    assert document["reports"]["out"] == {
        "published": 2,
        "active_records": 20,
        "dir": str(workdir / "reports"),
        "last_published": str(report_files(workdir)[-1]),
    }
    assert document["sources"] == {"app": {"files": 1}, "auth": {"files": 0}}
    assert (document["generation"], document["last_reload"]) == (1, None)
    assert document["commit_error"] is None and document["read_errors"] == 0
    assert document["possibly_lost_bytes"] == 0

    # a reload that adds a rule, then one that is refused
    write_config(workdir / "logwarden.toml", WITH_A_NEW_RULE)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: status_json(workdir)["generation"] == 2, 15, message="the reload")
    reload = status_json(workdir)["last_reload"]
    assert reload["result"] == "applied" and reload["error"] is None
    assert (reload["rules_added"], reload["rules_changed"], reload["rules_removed"]) == (
        ["fine"],
        [],
        [],
    )
    write_lines(log, 300, 30)  # 20 lines for `fine`, 10 for `hit`
    wait_until(lambda: status_json(workdir)["lines"] == 330, 15, message="the new lines")
    rules = status_json(workdir)["rules"]
    assert rules["fine"] == {"matches": 20, "last_minute": 20, "alerts": 0, "suppressed": 0}
    assert rules["hit"]["matches"] == rules["hit"]["last_minute"] == 110

    (workdir / "logwarden.toml").write_text(WITH_A_NEW_RULE.replace("match =", "mtch =", 1))
    daemon.signal(signal.SIGHUP)
    wait_until(
        lambda: (status_json(workdir)["last_reload"] or {}).get("result") == "refused",
        15,
        message="the refused reload in the status",
    )
    document = status_json(workdir)
    assert document["generation"] == 2
    assert "mtch" in document["last_reload"]["error"]

    # the same figures in a terminal
    pane.start(status_command(workdir))
    screen = pane.wait_for("EXIT=")
    assert "EXIT=0" in screen
    assert re.search(
        rf"^logwarden running \(pid {daemon.pid}\), up \S+, config generation 2, status written ",
        screen,
        re.M,
    ), screen
    assert re.search(r"^  lines 330 +\(\S+/s\) +matches 130 +alerts 0 +lag 0 bytes", screen, re.M)
    assert re.search(r"^  last reload \S+: refused: .*mtch", screen, re.M), screen
    assert "  errors: none" in screen
    size = log.stat().st_size
    assert re.search(
        rf"^app +{re.escape(str(log))} +{size} +{size} +0 +0\.0 +\S+ +\d+s ago +following",
        screen,
        re.M,
    ), screen
    assert re.search(r"^auth +\(matches no file\)", screen, re.M), screen
    assert re.search(r"^RULE +MATCHES +LAST MIN +ALERTS +SUPPRESSED$", screen, re.M), screen
    assert re.search(r"^fine +20 +20 +0 +0$", screen, re.M), screen
    assert re.search(r"^hit +110 +110 +0 +0$", screen, re.M), screen
    assert re.search(rf"^out +3 +10 +{re.escape(str(report_files(workdir)[-1]))}", screen, re.M)
    pane.kill()

    # stopped: exit 3, NOT running, the last figures still there
    assert daemon.stop() == 0
    plain = status(workdir)
    assert plain.returncode == 3
    assert plain.stdout.startswith(f"logwarden NOT running (pid {daemon.pid})")
    assert re.search(r"^  hit +110 +110 +0 +0$", plain.stdout, re.M), plain.stdout
    stopped = Pane(width=140, height=40)
    try:
        stopped.start(status_command(workdir))
        screen = stopped.wait_for("EXIT=")
        assert "EXIT=3" in screen and f"logwarden NOT running (pid {daemon.pid})" in screen
    finally:
        stopped.kill()


def test_status_right_after_ready_lists_every_rule_and_file(workdir: Path, daemon: Daemon) -> None:
    """The document written before the ready line already has a row for each rule (at 0) and
    each file found at start, so a script polling right after start-up sees the full shape."""
    write_config(
        workdir / "logwarden.toml",
        CONFIG.replace('status_interval = "100ms"', 'status_interval = "1h"'),
    )
    (workdir / "logs" / "app.log").touch()
    daemon.start()
    done = status(workdir, "--json")
    assert done.returncode == 0, done.stderr
    document = orjson.loads(done.stdout)
    assert document["running"] is True and document["pid"] == daemon.pid
    assert document["rules"] == {
        "hit": {"matches": 0, "last_minute": 0, "alerts": 0, "suppressed": 0}
    }
    assert [(f["path"], f["offset"], f["lag_bytes"]) for f in document["files"]] == [
        (str(workdir / "logs" / "app.log"), 0, 0)
    ]
    assert document["reports"]["out"] == {
        "published": 0,
        "active_records": 0,
        "dir": str(workdir / "reports"),
        "last_published": None,
    }
    assert daemon.stop() == 0


def test_watch_redraws_until_ctrl_c_across_a_restart(
    workdir: Path, daemon: Daemon, pane: Pane
) -> None:
    log = workdir / "logs" / "app.log"
    write_lines(log, 0, 30)
    daemon.start()
    pane.start(status_command(workdir, "--watch"))
    pane.wait_for("lines 30 ", 15)
    write_lines(log, 30, 30)
    screen = pane.wait_for("lines 60 ", 15)  # redrawn: the figure changed on the same screen
    assert screen.count("logwarden running") == 1, screen  # in place, not scrolled
    assert "lines 30 " not in screen

    assert daemon.stop() == 0
    screen = pane.wait_for("logwarden NOT running", 15)
    assert "logwarden running" not in screen
    daemon.start()
    pane.wait_for(f"logwarden running (pid {daemon.pid})", 15)
    pane.keys("C-c")
    screen = pane.wait_for("EXIT=", 15)
    assert "EXIT=0" in screen and "Traceback" not in screen
    assert daemon.stop() == 0
