"""The match → record stages (logwarden.stages) through `logwarden scan` on sample files: keyed
thresholds by event time, suppression, ignore lists; and their config errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

SCAN: list[str | Path] = [sys.executable, "-m", "logwarden", "scan", "-c"]
HEAD = """\
[daemon]
state_dir = "state"

[sources.auth]
paths = ["auth.log"]

[reports.out]
dir = "reports"
"""
# a recent day, so that the lines' times are inside the default bounds (a year back)
BASE = (datetime.now(UTC) - timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)


def stamp(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat()


def failed(seconds: float, ip: str, user: str = "root") -> str:
    return f"{stamp(seconds)} web1 sshd[1]: Failed password for {user} from {ip} port 22 ssh2\n"


def scan(tmp_path: Path, rules: str, lines: list[str]) -> list[dict[str, Any]]:
    (tmp_path / "logwarden.toml").write_text(HEAD + textwrap.dedent(rules))
    (tmp_path / "auth.log").write_text("".join(lines))
    result = subprocess.run(
        [*SCAN, tmp_path / "logwarden.toml", tmp_path / "auth.log"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def alerts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "alert"]


SSH = """
[rules.ssh]
match = ['Failed password for %{user} from %{ip}']
threshold = { key = "ip", count = 5, within = "10m" }
"""


def test_seven_failures_and_three_within_ten_minutes_give_one_alert(tmp_path: Path) -> None:
    lines = [failed(i * 60, "203.0.113.9") for i in range(7)]
    lines[1:1] = [failed(30 + i * 60, "198.51.100.4") for i in range(3)]  # interleaved
    records = scan(tmp_path, SSH, lines)
    [alert] = alerts(records)
    assert set(alert) == {"v", "time", "kind", "rule", "severity", "host", "key", "count"} | {
        "within_s",
        "first",
        "last",
        "samples",
    }
    assert (alert["rule"], alert["key"], alert["count"], alert["within_s"]) == (
        "ssh",
        {"ip": "203.0.113.9"},
        5,
        600.0,
    )
    # first and last are the event times of the counted lines, not when they were read
    assert alert["first"] == (BASE).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert alert["last"] == (BASE + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    offsets = [
        r["source"]["offset"] for r in records if r.get("captures", {}).get("ip") == "203.0.113.9"
    ]
    path = str(tmp_path / "auth.log")
    assert alert["samples"] == [{"path": path, "offset": o} for o in offsets[:5]]
    # the alert follows the match that made the count; every match has its record
    assert records.index(alert) == 1 + next(
        i for i, r in enumerate(records) if r.get("source", {}).get("offset") == offsets[4]
    )
    assert sum("kind" not in r for r in records) == 10
    assert all(r["time_source"] == "log" for r in records if "kind" not in r)


def test_the_same_seven_spread_over_an_hour_give_none(tmp_path: Path) -> None:
    lines = [failed(i * 600, "203.0.113.9") for i in range(7)]  # one every 10 minutes
    records = scan(tmp_path, SSH, lines)
    assert alerts(records) == []
    assert len(records) == 7


def test_a_list_key_counts_each_pair(tmp_path: Path) -> None:
    rules = SSH.replace('key = "ip"', 'key = ["user", "ip"]').replace("count = 5", "count = 3")
    lines = [failed(i, "203.0.113.9", user="root") for i in range(2)]
    lines += [failed(10 + i, "203.0.113.9", user="admin") for i in range(3)]
    [alert] = alerts(scan(tmp_path, rules, lines))
    assert alert["key"] == {"user": "admin", "ip": "203.0.113.9"}


def test_a_prefix_key_groups_an_ipv6_64_and_an_ipv4_24(tmp_path: Path) -> None:
    rules = SSH.replace('key = "ip"', 'key = "ip/64"').replace("count = 5", "count = 4")
    rotating = [failed(i, f"2001:db8:1:2::{i + 1:x}") for i in range(4)]  # one /64, 4 addresses
    other = [failed(5 + i, f"2001:db8:1:3::{i + 1:x}") for i in range(3)]  # another /64
    v4 = [failed(10 + i, "203.0.113.9") for i in range(4)]  # /64 of IPv4: the address itself
    found = alerts(scan(tmp_path, rules, rotating + other + v4))
    assert [a["key"] for a in found] == [{"ip": "2001:db8:1:2::/64"}, {"ip": "203.0.113.9/32"}]

    rules = SSH.replace('key = "ip"', 'key = "ip/24"').replace("count = 5", "count = 3")
    lines = [failed(i, f"198.51.100.{i + 1}") for i in range(3)]
    assert [a["key"] for a in alerts(scan(tmp_path, rules, lines))] == [{"ip": "198.51.100.0/24"}]


def test_alert_only_keeps_single_matches_out(tmp_path: Path) -> None:
    rules = SSH.replace('within = "10m"', 'within = "10m", alert_only = true')
    records = scan(tmp_path, rules, [failed(i, "203.0.113.9") for i in range(6)])
    assert [r.get("kind") for r in records] == ["alert"]


def test_suppression_folds_100_repeats_into_one_record(tmp_path: Path) -> None:
    rules = """
    [rules.disk]
    match = ['kernel: EXT4-fs error \\(device %{word:device}\\)']
    suppress = { key = "device", within = "10m" }
    """
    day = [f"{stamp(i)} web1 kernel: EXT4-fs error (device sda1): bad block\n" for i in range(100)]
    other = [f"{stamp(50)} web1 kernel: EXT4-fs error (device sdb1): bad block\n"]
    later = [f"{stamp(3600)} web1 kernel: EXT4-fs error (device sda1): bad block\n"]
    records = scan(tmp_path, rules, day[:50] + other + day[50:] + later)
    assert [(r["captures"]["device"], r["repeats"]) for r in records] == [
        ("sda1", 100),
        ("sdb1", 1),
        ("sda1", 1),  # an hour later: a new window, a record of its own
    ]
    first = records[0]
    assert first["event_time"] == BASE.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert first["last"] == (BASE + timedelta(seconds=99)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert first["source"]["offset"] == 0  # the first line's record, the repeats folded in


def test_ignore_drops_listed_addresses_and_networks(tmp_path: Path) -> None:
    rules = SSH + 'ignore = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]\n'
    lines = [
        failed(0, "10.1.2.3"),
        failed(1, "192.0.2.7"),
        failed(2, "192.0.2.8"),
        failed(3, "2001:db8::1"),
        failed(4, "2001:db9::1"),
    ]
    records = scan(tmp_path, rules, lines)
    assert [r["captures"]["ip"] for r in records] == ["192.0.2.8", "2001:db9::1"]


def test_ignore_on_another_capture(tmp_path: Path) -> None:
    rules = """
    [rules.login]
    match = ['login from %{ip:src}']
    ignore = { capture = "src", nets = ["203.0.113.0/24"] }
    """
    lines = [f"{stamp(0)} login from 203.0.113.5\n", f"{stamp(1)} login from 198.51.100.5\n"]
    assert [r["captures"]["src"] for r in scan(tmp_path, rules, lines)] == ["198.51.100.5"]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (
            'ignore = ["10.0.0.0/8", "gateway.local"]',
            "'gateway.local' is not an IP address or CIDR range",
        ),
        ('ignore = ["10.0.0.0/33"]', "'10.0.0.0/33' is not an IP address or CIDR range"),
        ('ignore = { capture = "src", nets = ["10.0.0.1"] }', "no capture named 'src'"),
        ('threshold = { key = "ip/129", count = 2, within = "1m" }', "at most 128"),
        (
            'threshold = { key = ["ip", "port"], count = 2, within = "1m" }',
            "no capture named 'port'",
        ),
        ('suppress = { key = "host", within = "1m" }', "no capture named 'host' to fold by"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, rule: str, problem: str) -> None:
    config = tmp_path / "logwarden.toml"
    config.write_text(
        HEAD + "\n[rules.ssh]\nmatch = ['Failed password for %{user} from %{ip}']\n" + rule + "\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "check-config", "-c", config],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    output = result.stderr.decode() + result.stdout.decode()
    assert problem in output, output
    line = HEAD.count("\n") + 4  # the rule's key line
    assert f"{config}:{line}" in output, output


def test_timestamp_field_needs_parse(tmp_path: Path) -> None:
    config = tmp_path / "logwarden.toml"
    text = HEAD.replace(
        'paths = ["auth.log"]', 'paths = ["auth.log"]\ntimestamp = { field = "ts" }'
    )
    config.write_text(text + "\n[rules.x]\nmatch = ['x']\n")
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "check-config", "-c", config],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert 'timestamp.field needs parse = "json" or "logfmt"' in result.stderr.decode()


def test_explain_shows_event_time_ignore_and_threshold_standing(tmp_path: Path) -> None:
    config = tmp_path / "logwarden.toml"
    config.write_text(HEAD + SSH + 'ignore = ["10.0.0.0/8"]\n')
    lines = [failed(0, "10.1.2.3").rstrip("\n"), failed(60, "192.0.2.1").rstrip("\n")]
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "explain", "-c", config, "--json", *lines],
        capture_output=True,
        timeout=60,
        check=False,
    )
    ignored, counted = (orjson.loads(line) for line in result.stdout.splitlines())
    assert ignored["time_source"] == "log"
    assert ignored["event_time"] == BASE.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    [rule] = ignored["rules"]
    assert rule["verdict"] == "ignored"
    assert rule["steps"][-1] == {
        "step": "ignore",
        "ok": False,
        "detail": "dropped: ip=10.1.2.3 is in 10.0.0.0/8",
    }
    [rule] = counted["rules"]
    assert rule["verdict"] == "matched"
    assert rule["threshold"]["key"] == {"ip": "192.0.2.1"} and rule["threshold"]["count"] == 1
    text = subprocess.run(
        [sys.executable, "-m", "logwarden", "explain", "-c", config, lines[0]],
        capture_output=True,
        timeout=60,
        check=False,
    ).stdout.decode()
    assert f"event time {ignored['event_time']} (from the line)" in text
    assert "ignore: dropped: ip=10.1.2.3 is in 10.0.0.0/8" in text
