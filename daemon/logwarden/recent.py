"""Counts over a sliding window ("matches in the last minute", "lines per second"), in buckets.

A ring of fixed-width time buckets: adding is an index and an increment, reading sums the
buckets still inside the window. Rejected: a deque of event times (memory and work per event,
which for lines means per line) and an exponential moving average (cheap, but "in the last
minute" would then be a figure no operator can check against the log).
"""

from __future__ import annotations

import time

MATCH_WINDOW_S = 60.0  # "matches in the last minute"
RATE_WINDOW_S = 10.0  # lines per second, averaged over this much


class RecentCounts:
    """Events in the last `window` seconds, in `buckets` buckets (monotonic clock).

    The window slides a bucket at a time: `total` counts the current, partial bucket and the
    `buckets - 1` before it, so it covers between `window - width` and `window` seconds.
    """

    __slots__ = ("_counts", "_created", "_slots", "_width")

    def __init__(self, window: float, buckets: int, now: float | None = None) -> None:
        self._width = window / buckets
        self._counts = [0] * buckets
        self._slots = [-1] * buckets  # which bucket number each place holds now
        self._created = time.monotonic() if now is None else now

    def add(self, count: int, now: float) -> None:
        slot = int(now // self._width)
        place = slot % len(self._counts)
        if self._slots[place] != slot:
            self._slots[place], self._counts[place] = slot, 0
        self._counts[place] += count

    def total(self, now: float) -> int:
        oldest = int(now // self._width) - len(self._counts) + 1
        return sum(c for c, s in zip(self._counts, self._slots, strict=True) if s >= oldest)

    def rate(self, now: float) -> float:
        """Events per second over the window (or over the time since creation, if shorter)."""
        slot = int(now // self._width)
        covered = (len(self._counts) - 1) * self._width + (now - slot * self._width)
        # a burst read in the first instant is not a rate of thousands a second: one bucket at least
        span = max(min(covered, now - self._created), self._width)
        return self.total(now) / span
