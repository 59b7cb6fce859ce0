"""Start, stop, reload and `status` at the awkward moments: the daemon as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import LOGWARDEN, Daemon, published_records, wait_until, write_config
from test_daemon import CONFIG, assert_exactly_once, expected_seqs, seqs, write_lines

pytestmark = pytest.mark.integration


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    write_config(tmp_path / "logwarden.toml", CONFIG)
    return tmp_path


def status(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*LOGWARDEN, "status", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def status_json(config: Path) -> tuple[int, dict[str, Any]]:
    result = status(config, "--json")
    return result.returncode, orjson.loads(result.stdout)


# ---------------------------------------------------------------- status (issue 10, item 5)


def test_status_is_this_run_right_after_ready_and_exits_3_once_stopped(
    workdir: Path, daemon: Daemon
) -> None:
    """status.json used to be first written one `status_interval` after ready: meanwhile
    `status` showed the previous run's pid as NOT running (and exited 0 for it)."""
    config = workdir / "logwarden.toml"
    write_config(config, CONFIG.replace('status_interval = "200ms"', 'status_interval = "1h"'))
    assert status(config).returncode == 3, "never run: not running"
    daemon.start()
    first_pid = daemon.pid
    assert daemon.stop() == 0
    code, document = status_json(config)
    assert (code, document["running"], document["pid"]) == (3, False, first_pid)

    daemon.start()
    code, document = status_json(config)  # at once: no status_interval has passed
    assert (code, document["running"], document["pid"]) == (0, True, daemon.pid)
    table = status(config)
    assert table.returncode == 0 and f"logwarden running (pid {daemon.pid})" in table.stdout
    assert daemon.stop() == 0
    assert status(config).returncode == 3


@pytest.mark.parametrize("content", [b"", b'{\n  "pid": 12', b"\0\0\0\0", b"[1, 2]"])
def test_status_with_an_empty_or_torn_status_file(
    workdir: Path, daemon: Daemon, content: bytes
) -> None:
    """status.json is not fsynced (by decision), so a power cut can leave it empty or torn."""
    daemon.start()
    assert daemon.stop() == 0
    (workdir / "state" / "status.json").write_bytes(content)
    for args in ((), ("--json",)):
        result = status(workdir / "logwarden.toml", *args)
        assert result.returncode == 1
        assert "status.json is empty or damaged" in result.stderr
    daemon.start()  # the next start rewrites it at once
    assert status(workdir / "logwarden.toml").returncode == 0
    assert daemon.stop() == 0


def test_status_with_a_broken_config_still_shows_the_daemon(workdir: Path, daemon: Daemon) -> None:
    """After a refused reload the daemon runs on its old config while the file on disk is
    broken: exactly when an operator runs `status`. It used to exit 78 showing nothing."""
    config = workdir / "logwarden.toml"
    daemon.start()
    config.write_text(CONFIG.replace("match =", "mtch ="))  # one invalid rule
    result = status(config)
    assert result.returncode == 0, result.stderr
    assert f"logwarden running (pid {daemon.pid})" in result.stdout
    assert "the config is broken (2 problems" in result.stderr  # unknown `mtch`, no `match`
    assert str(workdir / "state") in result.stderr

    # not even TOML: the default state dir ($STATE_DIRECTORY here) is the one looked at
    config.write_text("[daemon\n")
    result = status(config, "--json", env={"STATE_DIRECTORY": str(workdir / "state")})
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["pid"] == daemon.pid
    assert "the config is broken" in result.stderr
    assert daemon.stop() == 0
    result = status(config, env={"STATE_DIRECTORY": str(workdir / "state")})
    assert result.returncode == 3 and "NOT running" in result.stdout


# ---------------------------------------------------------------- a stop during start-up (item 6)


def importing(pid: int) -> bool:
    """Whether the daemon is importing its dependencies yet (pydantic's core is mapped)."""
    try:
        return "_pydantic_core" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_sigterm_at_any_moment_of_start_up_is_a_clean_stop(workdir: Path, daemon: Daemon) -> None:
    """systemd sends SIGTERM whenever it likes: while Python imports, while journals are
    recovered, during the first commit. Each is a clean stop (exit 0, not -15), and what the
    short lives leave adds up to every match exactly once."""
    logs = workdir / "logs"
    for n in range(200):  # many files: discovery and the first reads take a while
        write_lines(logs / f"f{n}.log", n * 10, 10)
    written = 2000
    daemon.start()
    time.sleep(0.3)
    daemon.kill()  # leaves journals and a checkpoint for the next start to recover
    before_ready = 0
    for moment in (0.0, 0.0, 0.05, 0.15, "loop", "recovery", 0.3, 0.5, 0.8):
        write_lines(logs / "late.log", written, 30)
        written += 30
        daemon.start(wait_ready=False)
        # Python's own start-up (before any line of ours runs) cannot be covered from Python;
        # from the first imports on, it is
        wait_until(lambda: importing(daemon.pid), 30, 0.001, "the first imports")
        if moment == "loop":  # asyncio's first line: start-up proper is beginning
            wait_until(lambda: daemon.logged("Using selector: EpollSelector"), 30, 0.001)
        elif moment == "recovery":
            wait_until(lambda: daemon.logged("recovering journals"), 30, 0.001)
        else:
            time.sleep(float(moment))
        code = daemon.stop(timeout=30)
        assert code == 0, f"SIGTERM at {moment}: exit {code}\n{daemon.log_text()}"
        assert "Traceback" not in daemon.log_text()
        before_ready += not daemon.logged("ready")
    assert before_ready >= 2, "the stops were meant to land before ready"
    daemon.start()
    expected = expected_seqs(0, written)
    wait_until(lambda: set(seqs(published_records(workdir / "reports"))) >= expected, 30)
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected)


# ---------------------------------------------------------------- I/O error in recovery (item 7)


def test_an_io_error_during_recovery_is_a_clean_cannot_start(workdir: Path, daemon: Daemon) -> None:
    """A real I/O error in `recover_journals`: a directory where a journal file is expected
    (unlinking it fails with EISDIR). One `cannot start` line naming the path, exit 1."""
    write_lines(workdir / "logs" / "a.log", 0, 30)
    daemon.start()
    assert daemon.stop() == 0
    in_the_way = workdir / "state" / "journals" / "out" / "stray.ndjson"
    in_the_way.mkdir()
    daemon.start(wait_ready=False)
    assert daemon.process is not None
    assert daemon.process.wait(30) == 1
    failures = [e for e in daemon.events() if e.get("event") == "cannot start"]
    assert len(failures) == 1, daemon.log_text()
    assert failures[0]["path"] == str(in_the_way)
    assert "Traceback" not in daemon.log_text()
    assert not daemon.logged("ready")
    in_the_way.rmdir()
    daemon.start()  # and once the fault is gone, it starts
    assert daemon.stop() == 0


# ---------------------------------------------------------------- reloads one at a time (item 9)


def test_a_burst_of_sighups_reloads_one_at_a_time(workdir: Path, daemon: Daemon) -> None:
    """Each SIGHUP used to start a reload task of its own (kept forever in `_tasks`), and reloads
    ran side by side. Now: one at a time, and SIGHUPs during a reload make one more after it.
    systemd's RELOADING=1 / READY=1 pairs show it: they must never nest."""
    path = workdir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)
        daemon.env.update({"NOTIFY_SOCKET": str(path)})
        daemon.start()
        messages: list[dict[str, str]] = []

        def pump(quiet_for: float) -> None:
            """Collect messages until none came for `quiet_for` seconds."""
            last = time.monotonic()
            while time.monotonic() - last < quiet_for:
                try:
                    data = sock.recv(4096).decode()
                except TimeoutError:
                    continue
                messages.append(dict(line.split("=", 1) for line in data.splitlines()))
                last = time.monotonic()

        pump(0.5)
        messages.clear()
        sent = 40
        for _ in range(sent):  # spaced, so the kernel does not merge them into one
            time.sleep(0.001)
            last_sent_usec = time.monotonic_ns() // 1000
            daemon.signal(signal.SIGHUP)
        pump(3.0)
        write_lines(workdir / "logs" / "a.log", 0, 3)
        wait_until(lambda: 0 in seqs(published_records(workdir / "reports")), 10)
        assert daemon.stop() == 0
    reloads = [m for m in messages if "RELOADING" in m or "READY" in m]
    kinds = ["RELOADING" if "RELOADING" in m else "READY" for m in reloads]
    assert kinds[:1] == ["RELOADING"] and kinds == ["RELOADING", "READY"] * (len(kinds) // 2), (
        f"reloads overlapped: {kinds}"
    )
    count = len(kinds) // 2
    assert 1 <= count <= sent  # how many the kernel and the reloader fold together varies
    # the last SIGHUP, whether it came during a reload or not, was followed by a reload
    last_start = max(int(m["MONOTONIC_USEC"]) for m in reloads if "RELOADING" in m)
    assert last_start >= last_sent_usec
    events = daemon.events()
    assert sum(e.get("event") == "reloaded" for e in events) == count
    signals = sum(int(e["signals"]) for e in events if e.get("event") == "reloading (SIGHUP)")
    assert count <= signals <= sent


def test_sighup_and_sigusr1_while_stopping_do_not_kill_it(workdir: Path, daemon: Daemon) -> None:
    """logrotate's postrotate reloads whenever it likes, also while systemd stops the daemon:
    a SIGHUP or SIGUSR1 that arrives during the stop must not end it by the default action."""
    write_lines(workdir / "logs" / "app.log", 0, 3000)
    daemon.start()
    daemon.signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    assert daemon.process is not None
    while daemon.process.poll() is None and time.monotonic() < deadline:
        for signum in (signal.SIGHUP, signal.SIGUSR1):
            try:
                daemon.signal(signum)
            except ProcessLookupError:
                break
        time.sleep(0.0005)
    assert daemon.stop() == 0, daemon.log_text()
    assert_exactly_once(workdir, expected_seqs(0, 3000))
