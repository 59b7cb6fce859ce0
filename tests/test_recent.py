"""Sliding-window counts: "matches in the last minute" and lines per second, on a given clock."""

from __future__ import annotations

import pytest

from logwarden.recent import RecentCounts


def test_counts_leave_the_window_a_bucket_at_a_time() -> None:
    recent = RecentCounts(window=60.0, buckets=60, now=1000.0)
    recent.add(5, 1000.2)
    recent.add(3, 1030.7)
    assert recent.total(1030.7) == 8  # right after a burst: everything is in the last minute
    assert recent.total(1059.9) == 8
    assert recent.total(1060.0) == 3  # the first bucket (1000-1001 s) has left the window
    assert recent.total(1090.9) == 0
    recent.add(2, 1200.0)  # a place reused a full turn later starts from zero
    assert recent.total(1200.0) == 2


def test_rate_over_the_window_or_the_time_since_start() -> None:
    recent = RecentCounts(window=10.0, buckets=10, now=0.0)
    recent.add(100, 0.1)
    assert recent.rate(0.1) == 100.0  # one bucket at least: not 1000 a second
    assert recent.rate(4.0) == 25.0  # younger than the window: over its age
    for second in range(20, 30):
        recent.add(50, second + 0.5)
    assert recent.rate(29.99) == pytest.approx(500 / 9.99)  # 9 whole buckets and most of one
    assert recent.rate(45.0) == 0.0
