"""Tests for logwarden.thresholds: one alert per window, sliding windows, bounded memory."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logwarden import config
from logwarden.framing import Block
from logwarden.rules import Match, RuleSet
from logwarden.thresholds import Alert, ThresholdTracker

CONFIG = """
[daemon]
state_dir = "state"

[sources.auth]
paths = ["logs/auth.log"]

[rules.ssh]
severity = "error"
match = ['Failed password for %{user} from %{ip}', 'Failed publickey for %{user}( from %{ip})?']
threshold = { key = "ip", count = 3, within = "10s" }

[rules.plain]
match = ['plain %{word}']
"""


@pytest.fixture
def loaded(tmp_path: Path) -> config.Config:
    path = tmp_path / "logwarden.toml"
    path.write_text(textwrap.dedent(CONFIG))
    return config.load(path)[0]


def failed(ip: str | None, user: str = "root") -> Match:
    line = f"Failed password for {user} from {ip}" if ip else f"Failed publickey for {user}"
    return Match("ssh", "error", "default", 0, 1, line, False, {"user": user, "ip": ip})


def alerts(tracker: ThresholdTracker, events: Sequence[tuple[float, str | None]]) -> list[float]:
    """The times at which observing `events` (time, ip) raised an alert."""
    return [now for now, ip in events if tracker.observe(failed(ip), now, {}) is not None]


def test_crossing_alerts_once_with_what_happened(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded)
    assert tracker.observe(failed("1.1.1.1"), 100.0, {"offset": 1}) is None
    assert tracker.observe(failed("1.1.1.1"), 101.0, {"offset": 2}) is None
    third = failed("1.1.1.1", user="admin")
    assert tracker.observe(third, 102.0, {"offset": 3}) == Alert(
        rule="ssh",
        severity="error",
        report="default",
        key={"ip": "1.1.1.1"},
        count=3,
        within_s=10.0,
        first=100.0,
        last=102.0,
        samples=[{"offset": 1}, {"offset": 2}, {"offset": 3}],
        match=third,
    )
    assert alerts(tracker, [(103.0, "1.1.1.1"), (104.0, "1.1.1.1"), (109.0, "1.1.1.1")]) == []


def test_keys_count_separately(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded)
    events = [(0.0, "a"), (1.0, "b"), (2.0, "a"), (3.0, "b"), (4.0, "c"), (5.0, "b"), (6.0, "a")]
    assert alerts(tracker, events) == [5.0, 6.0]


def test_the_window_slides(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded)
    # at 11 the match at 0 has left the window: 5 and 11 are two, not three
    assert alerts(tracker, [(0.0, "a"), (5.0, "a"), (11.0, "a"), (12.0, "a")]) == [12.0]
    # exactly `within` old is outside: the window is (now - 10, now]
    assert alerts(ThresholdTracker(loaded), [(0.0, "b"), (5.0, "b"), (10.0, "b")]) == []


def test_no_new_alert_until_the_window_has_emptied(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded)
    steady = [(float(t), "a") for t in range(0, 40, 2)]  # 5 a window, never below 3
    assert alerts(tracker, steady) == [4.0]
    # below the count but not empty: (61, 71] still holds 62 and 63, so 71 does not alert again
    assert alerts(tracker, [(60.0, "a"), (61.0, "a"), (62.0, "a"), (63.0, "a")]) == [62.0]
    assert alerts(tracker, [(71.0, "a"), (72.0, "a")]) == []
    # a pause of a whole window empties it; the next crossing is a new alert
    assert alerts(tracker, [(90.0, "a"), (91.0, "a"), (92.0, "a")]) == [92.0]


def test_matches_without_the_key_and_rules_without_threshold_are_ignored(
    loaded: config.Config,
) -> None:
    tracker = ThresholdTracker(loaded)
    assert alerts(tracker, [(0.0, None), (1.0, None), (2.0, None)]) == []
    plain = Match("plain", "warning", "default", 0, 1, "plain x", False, {"word": "x"})
    assert [tracker.observe(plain, float(t), {}) for t in range(5)] == [None] * 5
    assert tracker.keys("ssh") == 0 and tracker.keys("plain") == 0


def test_idle_keys_are_forgotten(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded)
    alerts(tracker, [(float(i), f"10.0.0.{i}") for i in range(50)])
    assert tracker.keys("ssh") == 10  # the last ten seconds' keys
    alerts(tracker, [(100.0, "late")])
    assert tracker.keys("ssh") == 1


def test_key_cap_evicts_the_least_recently_seen(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded, max_keys=3)
    assert alerts(tracker, [(0.0, "a"), (0.1, "a"), (0.2, "b"), (0.3, "c"), (0.4, "a")]) == [0.4]
    assert alerts(tracker, [(0.5, "b"), (0.6, "d")]) == []  # d evicts c, the least recent
    assert tracker.keys("ssh") == 3
    # b kept its two matches and crosses now; c starts over
    assert alerts(tracker, [(0.7, "b"), (0.8, "c"), (0.9, "c")]) == [0.7]


def test_snapshot_restores_windows_and_alerted_state(loaded: config.Config) -> None:
    tracker = ThresholdTracker(loaded)
    alerts(tracker, [(0.0, "a"), (1.0, "a"), (2.0, "a"), (3.0, "b")])
    snapshot = json.loads(json.dumps(tracker.snapshot()))
    restored = ThresholdTracker(loaded)
    restored.restore(snapshot)
    assert restored.snapshot() == tracker.snapshot()
    assert alerts(restored, [(4.0, "a"), (5.0, "b"), (6.0, "b")]) == [6.0]
    ignored = ThresholdTracker(loaded)
    ignored.restore({"v": 99, "rules": snapshot["rules"]})
    assert ignored.keys("ssh") == 0


def test_built_from_a_rule_set(loaded: config.Config, tmp_path: Path) -> None:
    rules = RuleSet.compile(loaded, config.load(tmp_path / "logwarden.toml")[1])
    tracker = ThresholdTracker(rules)
    matcher = rules.for_source("auth")
    line = b"Failed password for root from 203.0.113.9\n"
    found = [tracker.observe(m, 1.0, {}) for m in matcher.scan(Block(line * 4, 0, 1))]
    assert [a.key if a else None for a in found] == [None, None, {"ip": "203.0.113.9"}, None]
    assert ThresholdTracker(rules.only(["plain"])).observe(failed("x"), 0.0, {}) is None


@given(events=st.lists(st.tuples(st.floats(0, 6), st.sampled_from("abc")), max_size=60))
def test_matches_a_model_that_keeps_every_timestamp(events: list[tuple[float, str]]) -> None:
    """With nondecreasing time, the bounded tracker alerts exactly when a naive one would: a key
    alerts when 3 of its matches fit in the window, then not again until its window empties."""
    rule = config.RuleConfig.model_validate(
        {"name": "ssh", "match": ["x"], "threshold": {"key": "ip", "count": 3, "within": 10}}
    )
    tracker = ThresholdTracker([rule], max_keys=1000)
    seen: dict[str, list[float]] = {}
    armed: dict[str, bool] = {}
    now = 0.0
    for step, ip in events:
        now += step
        times = [t for t in seen.get(ip, []) if t > now - 10]
        if not times:
            armed[ip] = True
        times.append(now)
        seen[ip] = times
        expected = len(times) >= 3 and armed.get(ip, True)
        if expected:
            armed[ip] = False
        assert (tracker.observe(failed(ip), now, {}) is not None) == expected
