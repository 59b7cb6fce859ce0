"""Keyed thresholds: one alert when a rule matches `count` times for one key within a window.

`threshold = {key = "ip", count = 5, within = "10m"}` counts a rule's matches per distinct value
of the capture `ip`. When a value's matches inside the sliding window reach `count`, one alert is
emitted; the value is then *armed* again only once its count has dropped below `count` (old
matches left the window), so a sustained attack yields one alert per crossing, not one per line.

Memory is bounded three ways: a key keeps at most its last `count` timestamps (enough to know
whether `count` of them fit in the window), a key idle for longer than the window is forgotten
(its state equals a fresh key's), and each rule keeps at most `max_keys` keys, evicting the one
seen longest ago. An evicted key starts over: it may alert later than it would have, or alert
again. That is the price of a daemon that cannot be made to grow without bound by an attacker
cycling source addresses.

Time is passed in (seconds as a float): the wall clock today, a line's own event time later. The
state is plain data (`snapshot`/`restore`) so a checkpoint can carry it across restarts.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from logwarden.config import Config, RuleConfig, ThresholdConfig
from logwarden.rules import Match, RuleSet

DEFAULT_MAX_KEYS = 100_000
SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Alert:
    """A key crossing a rule's threshold; `match` is the match that made the count."""

    rule: str
    severity: str
    report: str
    key: str  # the capture name counted by
    value: str  # that capture's value
    count: int
    within_s: float
    match: Match


@dataclass(slots=True)
class _KeyState:
    times: deque[float]  # newest last, at most `count` of them
    alerted: bool = False


class _RuleWindow:
    """One rule's keys, least recently seen first (so expiry and eviction pop from the front)."""

    def __init__(self, threshold: ThresholdConfig, max_keys: int) -> None:
        self.threshold = threshold
        self.max_keys = max_keys
        self.keys: OrderedDict[str, _KeyState] = OrderedDict()

    def observe(self, value: str, now: float) -> bool:
        """Count one match for `value` at `now`; True when this match makes the crossing."""
        count, within = self.threshold.count, self.threshold.within
        self._forget_idle(now)
        state = self.keys.get(value)
        if state is None:
            state = self.keys[value] = _KeyState(deque(maxlen=count))
            if len(self.keys) > self.max_keys:
                self.keys.popitem(last=False)
        else:
            self.keys.move_to_end(value)
        times = state.times
        while times and times[0] <= now - within:
            times.popleft()
        if len(times) < count:
            state.alerted = False  # dropped below: the next crossing alerts again
        _insert(times, now)
        if len(times) >= count and times[0] > now - within and not state.alerted:
            state.alerted = True
            return True
        return False

    def _forget_idle(self, now: float) -> None:
        """Drop keys whose newest match left the window; amortised O(1) per observation.

        The front key is the one seen longest ago, but "seen" is wall order: with out-of-order
        event times a key's newest timestamp may be older than the front's, which only delays its
        removal, never removes a live key (a key is removed only when its newest time expired).
        """
        horizon = now - self.threshold.within
        keys = self.keys
        while keys:
            value, state = next(iter(keys.items()))
            if state.times and state.times[-1] > horizon:
                return
            del keys[value]


def _insert(times: deque[float], moment: float) -> None:
    """Keep the timestamps sorted: appends in the usual case, inserts an out-of-order time."""
    if not times or moment >= times[-1]:
        times.append(moment)  # a full deque drops its oldest, which is what the window wants
        return
    if len(times) == times.maxlen:
        if moment <= times[0]:
            return  # older than everything kept: it cannot change whether `count` fit
        times.popleft()
    times.insert(bisect.bisect_right(times, moment), moment)


class ThresholdTracker:
    """Threshold state for every rule that has one; `observe` each match, in order."""

    def __init__(
        self, rules: RuleSet | Config | Iterable[RuleConfig], max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self.max_keys = max_keys
        self._windows: dict[str, _RuleWindow] = {}
        for rule in _rule_configs(rules):
            if rule.threshold is not None:
                self._windows[rule.name] = _RuleWindow(rule.threshold, max_keys)

    def observe(self, match: Match, now: float) -> Alert | None:
        """Count a match; the Alert when it makes its key cross the rule's threshold.

        A match whose key capture is missing or None (an optional group that did not take part)
        is not counted: there is no key to count it under.
        """
        window = self._windows.get(match.rule)
        if window is None:
            return None
        threshold = window.threshold
        value = match.captures.get(threshold.key)
        if value is None or not window.observe(value, now):
            return None
        return Alert(
            match.rule,
            match.severity,
            match.report,
            threshold.key,
            value,
            threshold.count,
            threshold.within,
            match,
        )

    def keep_windows(self, previous: ThresholdTracker, rules: Iterable[str]) -> None:
        """Take over `previous`'s windows of `rules` (on a reload: the rules that did not change),
        so that keys counted before the reload are still counted, and alerted keys stay quiet.

        A window is taken only when its threshold is the same; a rule not named starts fresh.
        """
        for name in rules:
            mine, theirs = self._windows.get(name), previous._windows.get(name)
            if mine is not None and theirs is not None and mine.threshold == theirs.threshold:
                self._windows[name] = theirs

    def standing(self, rule: str, value: str, now: float) -> tuple[int, bool]:
        """A key's matches inside its window at `now` (at most `count`: no more are kept) and
        whether it has alerted and is not yet armed again; for `logwarden explain`."""
        window = self._windows.get(rule)
        state = window.keys.get(value) if window is not None else None
        if window is None or state is None:
            return 0, False
        horizon = now - window.threshold.within
        return sum(1 for moment in state.times if moment > horizon), state.alerted

    def keys(self, rule: str) -> int:
        """How many keys a rule is tracking now (for status and tests)."""
        window = self._windows.get(rule)
        return len(window.keys) if window else 0

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data, for a checkpoint."""
        return {
            "v": SNAPSHOT_VERSION,
            "rules": {
                name: [
                    [value, list(state.times), state.alerted]
                    for value, state in window.keys.items()
                ]
                for name, window in self._windows.items()
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Load a `snapshot()`: rules since removed are dropped, a changed count keeps the newest.

        An unknown version is ignored (windows start over): an old checkpoint never blocks a start.
        """
        if snapshot.get("v") != SNAPSHOT_VERSION:
            return
        for name, entries in snapshot.get("rules", {}).items():
            window = self._windows.get(name)
            if window is None:
                continue
            window.keys.clear()
            for value, times, alerted in entries[-self.max_keys :]:
                kept = deque(sorted(float(t) for t in times), maxlen=window.threshold.count)
                window.keys[str(value)] = _KeyState(kept, bool(alerted))


def _rule_configs(rules: RuleSet | Config | Iterable[RuleConfig]) -> Iterable[RuleConfig]:
    if isinstance(rules, RuleSet):
        return [rules.rule(name).config for name in rules.rules]
    if isinstance(rules, Config):
        return rules.rules.values()
    return rules
