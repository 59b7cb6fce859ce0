"""SIGHUP reloads of the real daemon: what a reload keeps (threshold windows) and what it says."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import Daemon, published_records, wait_until, write_config

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

[reports.out]
dir = "reports"
format = "ndjson"
rotate_interval = "1s"
keep = 1000000
"""

ADDRESSES = [f"203.0.113.{n}" for n in range(1, 11)]


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
    write_config(workdir / "logwarden.toml", text)
    daemon.start()
    with open(workdir / "logs" / "auth.log", "a") as handle:
        handle.write("sshd[1]: gone from 192.0.2.1\n")

    def reports() -> set[str]:
        document = orjson.loads((workdir / "state" / "status.json").read_bytes())
        return set(document["reports"])

    wait_until(lambda: reports() == {"out", "extra"}, message="both reports in status")
    write_config(workdir / "logwarden.toml", CONFIG)  # extra, and the rule using it, are gone
    reload(daemon)
    wait_until(lambda: "extra" not in reports(), 15, message="the removed report forgotten")
    [record] = published_records(workdir / "extra")
    assert record["captures"]["ip"] == "192.0.2.1"
    assert any("everything it held is published" in e["event"] for e in daemon.events())
    assert daemon.stop() == 0
