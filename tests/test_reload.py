"""SIGHUP reloads of the real daemon: what a reload keeps (threshold windows) and what it says."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import Daemon, published_records, wait_until, write_config
from logwarden.checkpoint import load

pytestmark = pytest.mark.integration

CONFIG = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"
rescan_interval = "1s"
status_interval = "200ms"

[sources.auth]
paths = ["logs/auth.log"]
start_at = "beginning"

[rules.ssh]
match = ['Failed password for %{user} from %{ip}']
threshold = { key = "ip", count = 5, within = "10m" }

[rules.probe]
match = ['Invalid user %{user} from %{ip}']
threshold = { key = "ip", count = 5, within = "10m" }

[rules.gone]
match = ['gone from %{ip}']

[rules.disk]
match = ['EXT4-fs error \\(device %{word:device}\\)']
suppress = { key = "device", within = "10m" }

[reports.out]
dir = "reports"
format = "ndjson"
rotate_interval = "1s"
keep = 1000000
"""

ADDRESSES = [f"203.0.113.{n}" for n in range(1, 11)]
BASE = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    write_config(tmp_path / "logwarden.toml", CONFIG)
    return tmp_path


def append(workdir: Path, template: str, times: int) -> None:
    """`times` lines of `template` for each address, interleaved as an attack's would be."""
    lines = [template.format(ip=ip) for _ in range(times) for ip in ADDRESSES]
    with open(workdir / "logs" / "auth.log", "a") as handle:
        handle.write("".join(f"sshd[1]: {line}\n" for line in lines))


def matches(workdir: Path) -> int:
    return sum(1 for r in published_records(workdir / "reports") if "kind" not in r)


def wait_for_matches(workdir: Path, count: int) -> None:
    wait_until(lambda: matches(workdir) >= count, 15, message=f"{count} published matches")


def alerts(workdir: Path) -> Counter[tuple[str, str]]:
    """Published alerts per (rule, key value)."""
    return Counter(
        (r["rule"], r["key"]["ip"])
        for r in published_records(workdir / "reports")
        if r.get("kind") == "alert"
    )


def reloaded(daemon: Daemon) -> list[dict[str, Any]]:
    return [event for event in daemon.events() if event.get("event") == "reloaded"]


def reload(daemon: Daemon) -> dict[str, Any]:
    """SIGHUP and wait for the reload to finish; its `reloaded` log event."""
    before = len(reloaded(daemon))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(reloaded(daemon)) > before, 10, message="the reload")
    return reloaded(daemon)[-1]


def test_reloads_that_change_nothing_keep_threshold_windows(workdir: Path, daemon: Daemon) -> None:
    """Ten addresses failing 18 times each, two SIGHUPs in between: one alert per address.

    Each third (6 failures) crosses count = 5 on its own, so windows reset by a reload alert
    again for every address after every reload (30 alerts); kept windows stay quiet.
    """
    daemon.start()
    events = []
    for third in range(3):
        if third:
            events.append(reload(daemon))
        append(workdir, "Failed password for root from {ip} port 22 ssh2", 6)
        wait_for_matches(workdir, 60 * (third + 1))
    assert daemon.stop() == 0
    assert matches(workdir) == 180
    assert alerts(workdir) == Counter({("ssh", ip): 1 for ip in ADDRESSES})
    for event in events:
        assert (event["rules_added"], event["rules_changed"], event["rules_removed"]) == (
            [],
            [],
            [],
        )


def test_a_changed_rule_starts_fresh_and_the_reload_says_what_changed(
    workdir: Path, daemon: Daemon
) -> None:
    """`ssh` changes its count: its windows start over; `probe` is unchanged: its windows carry."""
    daemon.start()
    append(workdir, "Failed password for root from {ip} port 22 ssh2", 3)
    append(workdir, "Invalid user admin from {ip} port 22", 3)
    wait_for_matches(workdir, 60)

    config = workdir / "logwarden.toml"
    changed = CONFIG.replace("count = 5", "count = 4", 1).replace(
        "[rules.gone]\nmatch = ['gone from %{ip}']", "[rules.new]\nmatch = ['new from %{ip}']"
    )
    assert changed.count("count = 4") == 1 and "rules.gone" not in changed
    config.write_text(changed)
    event = reload(daemon)

    append(workdir, "Failed password for root from {ip} port 22 ssh2", 3)
    append(workdir, "Invalid user admin from {ip} port 22", 3)
    wait_for_matches(workdir, 120)
    assert daemon.stop() == 0
    # probe: 3 + 3 failures against count 5, counted across the reload: one alert per address.
    # ssh: only the 3 failures after the reload count against its new count 4: no alert.
    assert alerts(workdir) == Counter({("probe", ip): 1 for ip in ADDRESSES})
    assert event["rules_added"] == ["new"]
    assert event["rules_changed"] == ["ssh"]
    assert event["rules_removed"] == ["gone"]


def test_a_report_removed_by_a_reload_is_published_then_forgotten(
    workdir: Path, daemon: Daemon
) -> None:
    """What a removed report held is published, then it leaves status (and retention)."""
    text = CONFIG + '\n[reports.extra]\ndir = "extra"\nformat = "ndjson"\n'
    text = text.replace("[rules.gone]\n", '[rules.gone]\nreport = "extra"\n')
    text = text.replace("[rules.ssh]\n", '[rules.ssh]\nreport = "out"\n')
    text = text.replace("[rules.probe]\n", '[rules.probe]\nreport = "out"\n')
    text = text.replace("[rules.disk]\n", '[rules.disk]\nreport = "out"\n')
    write_config(workdir / "logwarden.toml", text)
    daemon.start()
    with open(workdir / "logs" / "auth.log", "a") as handle:
        handle.write("sshd[1]: gone from 192.0.2.1\n")

    def reports() -> set[str]:
        document = orjson.loads((workdir / "state" / "status.json").read_bytes())
        return set(document["reports"])

    def gone_matches() -> int:
        document = orjson.loads((workdir / "state" / "status.json").read_bytes())
        return int(document["matches"].get("gone", 0))

    wait_until(lambda: reports() == {"out", "extra"}, message="both reports in status")
    # the line is read before the reload (after it, its rule is gone and it matches nothing)
    wait_until(lambda: gone_matches() == 1, message="the line matched")
    write_config(workdir / "logwarden.toml", CONFIG)  # extra, and the rule using it, are gone
    reload(daemon)
    wait_until(lambda: "extra" not in reports(), 15, message="the removed report forgotten")
    [record] = published_records(workdir / "extra")
    assert record["captures"]["ip"] == "192.0.2.1"
    assert any("everything it held is published" in e["event"] for e in daemon.events())
    assert daemon.stop() == 0


def disk_errors(workdir: Path, seconds: range) -> None:
    """One `EXT4-fs error` line per second of `seconds` (event time), then wait until the daemon
    has read and committed them, so that a reload after this finds them held."""
    path = workdir / "logs" / "auth.log"
    with open(path, "a") as handle:
        for second in seconds:
            when = (BASE + timedelta(seconds=second)).isoformat()
            handle.write(f"{when} web1 kernel: EXT4-fs error (device sda1): bad block\n")
    size = path.stat().st_size

    def committed() -> bool:
        saved = load(workdir / "state")
        return saved is not None and any(f.framer.offset >= size for f in saved.files)

    wait_until(committed, 15, message="the lines read and committed")


def disk_records(workdir: Path) -> list[dict[str, Any]]:
    return [r for r in published_records(workdir / "reports") if r.get("rule") == "disk"]


def test_a_record_held_across_a_reload_of_an_unchanged_rule_is_published_once(
    workdir: Path, daemon: Daemon
) -> None:
    """40 repeats held, a SIGHUP that leaves `disk` alone, 60 more: one record, `repeats` 100,
    published when a line past the window closes it (not at the reload, not twice)."""
    daemon.start()
    disk_errors(workdir, range(40))
    event = reload(daemon)
    assert event["rules_changed"] == []
    assert disk_records(workdir) == []  # still held
    disk_errors(workdir, range(40, 100))
    disk_errors(workdir, range(700, 701))  # 11m40s after the first: closes its window
    wait_until(lambda: bool(disk_records(workdir)), 15, message="the folded record")
    assert daemon.stop() == 0
    [record] = disk_records(workdir)  # the line that closed it is held in the checkpoint
    assert record["repeats"] == 100 and record["source"]["offset"] == 0
    assert record["last"] == (BASE + timedelta(seconds=99)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_a_record_held_by_a_rule_a_reload_changes_is_published_at_the_reload(
    workdir: Path, daemon: Daemon
) -> None:
    """The reload changes `disk`'s window: the 40 repeats held are published at once, not lost;
    the 60 after it fold into a new record under the new window."""
    daemon.start()
    disk_errors(workdir, range(40))
    write_config(
        workdir / "logwarden.toml",
        CONFIG.replace('"device", within = "10m"', '"device", within = "15m"'),
    )
    event = reload(daemon)
    assert event["rules_changed"] == ["disk"]
    wait_until(lambda: bool(disk_records(workdir)), 15, message="the record released by the reload")
    disk_errors(workdir, range(40, 100))
    disk_errors(workdir, range(1000, 1001))  # past the new 15m window of the second record
    wait_until(lambda: len(disk_records(workdir)) == 2, 15, message="the second record")
    assert daemon.stop() == 0
    first, second = disk_records(workdir)
    assert (first["repeats"], second["repeats"]) == (40, 60)
    assert first["source"]["offset"] == 0 and second["source"]["offset"] > 0
