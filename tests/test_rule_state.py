"""Rule state in the real daemon: threshold windows and held suppression records survive SIGKILL
(committed with the offsets), ignore lists are counted in status, and the daemon's records are
`scan`'s records for the same file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import Daemon, published_records, wait_until, write_config
from logwarden.checkpoint import load

pytestmark = pytest.mark.integration
SCAN: list[str | Path] = [sys.executable, "-m", "logwarden", "scan", "-c"]

CONFIG = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"
rescan_interval = "1s"
status_interval = "100ms"

[sources.auth]
paths = ["logs/auth.log"]
start_at = "beginning"

[rules.ssh]
match = ['Failed password for %{user} from %{ip}']
threshold = { key = "ip", count = 5, within = "10m" }
ignore = ["10.0.0.0/8", "2001:db8:ffff::/48"]

[rules.disk]
match = ['EXT4-fs error \\(device %{word:device}\\)']
suppress = { key = "device", within = "SUPPRESS" }

[rules.ssh-connection]
match = ['sshd\\[%{int:pid}\\]: Connection from %{ip} port']
records = false

[rules.ssh-too-many]
match = ['sshd\\[%{int:pid}\\]: Disconnecting: Too many authentication failures']
carry = { key = "pid", from = ["ssh-connection"], within = "2m", captures = ["ip"] }
threshold = { key = "ip", count = 3, within = "10m" }

[reports.out]
dir = "reports"
format = "ndjson"
rotate_interval = "1s"
keep = 1000000
"""
BASE = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)


def line(seconds: float, text: str) -> str:
    return f"{(BASE + timedelta(seconds=seconds)).isoformat()} web1 {text}\n"


def failed(seconds: float, ip: str) -> str:
    return line(seconds, f"sshd[1]: Failed password for root from {ip} port 22 ssh2")


def disk(seconds: float, device: str = "sda1") -> str:
    return line(seconds, f"kernel: EXT4-fs error (device {device}): bad block")


def connection(seconds: float, pid: int, ip: str) -> str:
    return line(seconds, f"sshd[{pid}]: Connection from {ip} port 51353 on 192.0.2.1 port 22")


def too_many(seconds: float, pid: int) -> str:
    return line(seconds, f"sshd[{pid}]: Disconnecting: Too many authentication failures [preauth]")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    write_config(tmp_path / "logwarden.toml", CONFIG.replace("SUPPRESS", "10m"))
    return tmp_path


def append(workdir: Path, *lines: str) -> None:
    with open(workdir / "logs" / "auth.log", "a") as handle:
        handle.write("".join(lines))


def records(workdir: Path) -> list[dict[str, Any]]:
    return published_records(workdir / "reports")


def alerts(workdir: Path) -> list[dict[str, Any]]:
    return [r for r in records(workdir) if r.get("kind") == "alert"]


def committed_through(workdir: Path, size: int) -> bool:
    """The checkpoint holds the log file read to `size` (and so the rule state of those lines)."""
    try:
        saved = load(workdir / "state")
    except Exception:
        return False
    return saved is not None and any(f.framer.offset >= size for f in saved.files)


def kill_once_committed(workdir: Path, daemon: Daemon) -> None:
    size = (workdir / "logs" / "auth.log").stat().st_size
    wait_until(lambda: committed_through(workdir, size), 15, message="the lines committed")
    daemon.kill()


def test_sigkill_mid_window_neither_loses_nor_doubles_the_alert(
    workdir: Path, daemon: Daemon
) -> None:
    """3 failures, SIGKILL, restart, 2 more: the window held 3, so the 5th alerts, once; then 3
    more, SIGKILL right after the alert was committed, restart: still one alert."""
    daemon.start()
    append(workdir, *(failed(i * 30, "203.0.113.9") for i in range(3)))
    kill_once_committed(workdir, daemon)

    daemon.start()
    append(workdir, *(failed(100 + i * 30, "203.0.113.9") for i in range(2)))
    wait_until(lambda: len(alerts(workdir)) >= 1, 15, message="the alert")
    append(workdir, *(failed(200 + i * 30, "203.0.113.9") for i in range(3)))
    kill_once_committed(workdir, daemon)

    daemon.start()
    append(workdir, failed(400, "203.0.113.9"))
    wait_until(lambda: sum("kind" not in r for r in records(workdir)) == 9, 15, message="9 matches")
    assert daemon.stop() == 0
    [alert] = alerts(workdir)
    assert alert["key"] == {"ip": "203.0.113.9"} and alert["count"] == 5
    assert [s["offset"] for s in alert["samples"]] == [
        r["source"]["offset"] for r in records(workdir) if "kind" not in r
    ][:5]
    assert sum("kind" not in r for r in records(workdir)) == 9  # no line lost or repeated


def test_a_held_record_survives_sigkill_and_publishes_its_repeats_once(
    workdir: Path, daemon: Daemon
) -> None:
    daemon.start()
    append(workdir, *(disk(i) for i in range(40)))
    kill_once_committed(workdir, daemon)  # held: nothing of `disk` published yet
    assert not [r for r in records(workdir) if r.get("rule") == "disk"]

    daemon.start()
    append(workdir, *(disk(40 + i) for i in range(60)))
    kill_once_committed(workdir, daemon)

    # a shorter window in the config: the held record is published by the wall clock
    write_config(workdir / "logwarden.toml", CONFIG.replace("SUPPRESS", "1s"))
    daemon.start()
    wait_until(
        lambda: any(r.get("rule") == "disk" for r in records(workdir)), 15, message="the record"
    )
    assert daemon.stop() == 0
    [record] = [r for r in records(workdir) if r.get("rule") == "disk"]
    assert record["repeats"] == 100 and record["source"]["offset"] == 0
    assert record["last"] == (BASE + timedelta(seconds=99)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_ignore_is_counted_in_status_and_metrics(workdir: Path, daemon: Daemon) -> None:
    daemon.start()
    append(workdir, failed(0, "10.1.2.3"), failed(1, "2001:db8:ffff:1::9"), failed(2, "192.0.2.1"))
    wait_until(lambda: len(records(workdir)) >= 1, 15, message="the one record")
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "status", "-c", workdir / "logwarden.toml", "--json"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    status = json.loads(result.stdout)
    wait_until(lambda: _status(workdir)["suppressed"] == {"ssh": 2}, 10, message="status")
    assert status["matches"]["ssh"] == 1
    text = subprocess.run(
        [sys.executable, "-m", "logwarden", "status", "-c", workdir / "logwarden.toml"],
        capture_output=True,
        timeout=30,
        check=False,
    ).stdout.decode()
    header, row = (
        line.split() for line in text.splitlines() if line.split()[:1] in (["RULE"], ["ssh"])
    )
    assert dict(zip(header[-1:], row[-1:], strict=True)) == {"SUPPRESSED": "2"}
    assert daemon.stop() == 0
    assert [r["captures"]["ip"] for r in records(workdir)] == ["192.0.2.1"]


def test_a_time_far_ahead_is_counted_and_arrival_is_used(workdir: Path, daemon: Daemon) -> None:
    """A line stamped a week ahead (a clock gone wrong) is not trusted: the record says
    `arrival`, and status counts it per source, so an operator sees it happening."""
    daemon.start()
    append(workdir, failed(7 * 24 * 3600, "192.0.2.9"))
    wait_until(lambda: len(records(workdir)) >= 1, 15, message="the record")
    [record] = records(workdir)
    assert record["time_source"] == "arrival"
    wait_until(lambda: _status(workdir)["times_out_of_bounds"] == {"auth": 1}, 10, message="status")
    assert _status(workdir)["rule_state_evictions"] == {}
    assert daemon.stop() == 0


def test_a_connection_lends_its_address_across_sigkill_and_a_reload(
    workdir: Path, daemon: Daemon
) -> None:
    """The connection line is committed, the daemon killed and restarted: the failure line of the
    same pid still gets the address (the memory is in the checkpoint). Then a connection, a
    SIGHUP that changes nothing, the failure: the reload kept the memory too."""
    daemon.start()
    append(workdir, connection(0, 26713, "115.249.163.77"))
    kill_once_committed(workdir, daemon)

    daemon.start()
    append(workdir, too_many(3, 26713))
    wait_until(lambda: len(records(workdir)) == 1, 15, message="the first record")
    append(workdir, connection(10, 26714, "198.51.100.7"))
    size = (workdir / "logs" / "auth.log").stat().st_size
    wait_until(lambda: committed_through(workdir, size), 15, message="the connection read")
    before = len([e for e in daemon.events() if e.get("event") == "reloaded"])
    daemon.signal(signal.SIGHUP)
    wait_until(
        lambda: len([e for e in daemon.events() if e.get("event") == "reloaded"]) > before,
        10,
        message="the reload",
    )
    append(workdir, too_many(12, 26714))
    wait_until(lambda: len(records(workdir)) == 2, 15, message="the second record")
    assert daemon.stop() == 0
    first, second = records(workdir)
    assert first["captures"] == {"pid": "26713", "ip": "115.249.163.77"}
    assert first["carried"]["rule"] == "ssh-connection"
    assert second["captures"] == {"pid": "26714", "ip": "198.51.100.7"}


def _status(workdir: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "status", "-c", workdir / "logwarden.toml", "--json"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def comparable(record: dict[str, Any]) -> bytes:
    """A record without what differs between any two runs: `time` (when it was written), and the
    `event_time` of a line without a time of its own (when it was read)."""
    differ = {"time", "event_time"} if record.get("time_source") == "arrival" else {"time"}
    kept = {k: v for k, v in record.items() if k not in differ}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def test_scan_gives_the_daemons_records(workdir: Path, daemon: Daemon) -> None:
    """One file, read by the daemon and by `scan`: the same records, alerts and folds included."""
    write_config(workdir / "logwarden.toml", CONFIG.replace("SUPPRESS", "1s"))
    lines = [failed(i * 20, f"203.0.113.{i % 2}") for i in range(14)]
    lines += [failed(300, "10.9.9.9"), disk(310), disk(310), disk(310), disk(400, "sdb")]
    lines += ["a line without a time: sshd[2]: Failed password for x from 192.0.2.9 port 1\n"]
    # sessions whose failure line names no address: 3 carried from one address alert
    for n in range(4):
        lines += [connection(500 + n, 700 + n, "198.51.100.9"), too_many(510 + n, 700 + n)]
    lines += [too_many(520, 799)]  # no connection line for this pid: no address
    append(workdir, *lines)
    daemon.start()
    wait_until(
        lambda: sum(r.get("rule") == "disk" for r in records(workdir)) == 2, 15, message="records"
    )
    assert daemon.stop() == 0
    from_daemon = records(workdir)
    result = subprocess.run(
        [*SCAN, workdir / "logwarden.toml", workdir / "logs" / "auth.log"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    from_scan = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sorted(map(comparable, from_scan)) == sorted(map(comparable, from_daemon))
    assert len([r for r in from_scan if r.get("kind") == "alert"]) == 3
    carried = [r for r in from_scan if r.get("rule") == "ssh-too-many" and "kind" not in r]
    assert [r["captures"].get("ip") for r in carried] == ["198.51.100.9"] * 4 + [None]
    assert {r["time_source"] for r in from_scan if "kind" not in r} == {"log", "arrival"}
