"""Keyed thresholds: one alert when a rule matches `count` times for one key within a window.

`threshold = {key = "ip", count = 5, within = "10m"}` counts a rule's matches per key (one capture,
several, or an address prefix: `keys.py`) by their *event time*. When a key's matches inside the
sliding window reach `count`, one alert is emitted; the key stays quiet until its window has
emptied (no match of it for `within`), so a sustained attack yields one alert, not one per line
or one per crossing.

Memory is bounded three ways: a key keeps at most its last `count` timestamps (enough to know
whether `count` of them fit in the window) and 10 samples, a key idle for longer than the window
is forgotten (its state equals a fresh key's), and each rule keeps at most `max_keys` keys,
evicting the one seen longest ago (counted in `evictions`). An evicted key starts over: it may
alert later than it would have, or alert again. That is the price of a daemon that cannot be made
to grow without bound by an attacker cycling source addresses; the bound is also what keeps the
state small enough to ride in every checkpoint (`snapshot`/`restore`), which is how a window
survives a crash or restart without losing or doubling an alert.
"""

from __future__ import annotations

import bisect
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from logwarden.config import Config, RuleConfig, ThresholdConfig
from logwarden.keys import KeyMaker
from logwarden.rules import Match, RuleSet

DEFAULT_MAX_KEYS = 2000
MAX_SAMPLES = 10
SNAPSHOT_VERSION = 2

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Alert:
    """A key crossing a rule's threshold; `match` is the match that made the count."""

    rule: str
    severity: str
    report: str
    key: dict[str, str]  # capture → value (a network for a prefix key)
    count: int
    within_s: float
    first: float  # event time (epoch seconds) of the oldest match counted
    last: float  # and of the newest
    samples: list[dict[str, Any]]  # where some of the counted matches are: path+offset or cursor
    match: Match


def key_text(key: dict[str, str]) -> str:
    """`ip=203.0.113.9 user=root`: a key as a person reads it."""
    return " ".join(f"{capture}={value}" for capture, value in key.items())


@dataclass(slots=True)
class _KeyState:
    times: deque[float]  # newest last, at most `count` of them
    samples: deque[tuple[float, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=MAX_SAMPLES)
    )
    alerted: bool = False


class _RuleWindow:
    """One rule's keys, least recently seen first (so expiry and eviction pop from the front)."""

    def __init__(self, threshold: ThresholdConfig, max_keys: int) -> None:
        self.threshold = threshold
        self.keymaker = KeyMaker(threshold.key)
        self.max_keys = max_keys
        self.keys: OrderedDict[Key, _KeyState] = OrderedDict()
        self.evictions = 0

    def observe(self, key: Key, now: float, sample: dict[str, Any]) -> _KeyState | None:
        """Count one match for `key` at event time `now`; its state when this match makes the
        crossing, else None."""
        count, within = self.threshold.count, self.threshold.within
        self._forget_idle(now)
        state = self.keys.get(key)
        if state is None:
            state = self.keys[key] = _KeyState(deque(maxlen=count))
            if len(self.keys) > self.max_keys:
                self.keys.popitem(last=False)
                self.evictions += 1
        else:
            self.keys.move_to_end(key)
        times = state.times
        if times and times[-1] <= now - within:
            times.clear()  # the window emptied: the next crossing alerts again
            state.samples.clear()
            state.alerted = False
        while times and times[0] <= now - within:
            times.popleft()
        _insert(times, now)
        state.samples.append((now, sample))
        if len(times) >= count and times[0] > now - within and not state.alerted:
            state.alerted = True
            return state
        return None

    def _forget_idle(self, now: float) -> None:
        """Drop keys whose newest match left the window; amortised O(1) per observation.

        The front key is the one seen longest ago, but "seen" is arrival order: with out-of-order
        event times a key's newest timestamp may be older than the front's, which only delays its
        removal, never removes a live key (a key is removed only when its newest time expired).
        """
        horizon = now - self.threshold.within
        keys = self.keys
        while keys:
            key, state = next(iter(keys.items()))
            if state.times and state.times[-1] > horizon:
                return
            del keys[key]


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

    def observe(self, match: Match, now: float, sample: dict[str, Any]) -> Alert | None:
        """Count a match at event time `now`; the Alert when it makes its key cross the rule's
        threshold. `sample` says where the match is, for the alert's `samples`.

        A match missing a key capture (an optional group that did not take part) is not counted:
        there is no key to count it under.
        """
        window = self._windows.get(match.rule)
        if window is None:
            return None
        key = window.keymaker.key(match.captures)
        if key is None:
            return None
        state = window.observe(key, now, sample)
        if state is None:
            return None
        threshold = window.threshold
        horizon = now - threshold.within
        times = [moment for moment in state.times if moment > horizon]
        return Alert(
            match.rule,
            match.severity,
            match.report,
            window.keymaker.as_dict(key),
            len(times),
            threshold.within,
            times[0],
            times[-1],
            [where for moment, where in sorted(state.samples, key=_first) if moment > horizon],
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

    def standing(self, rule: str, captures: dict[str, str | None], now: float) -> Standing | None:
        """Where a match's key stands in its rule's window at `now`, for `logwarden explain`;
        None when the rule has no threshold or the match no key."""
        window = self._windows.get(rule)
        if window is None:
            return None
        key = window.keymaker.key(captures)
        if key is None:
            return None
        state = window.keys.get(key)
        horizon = now - window.threshold.within
        counted = 0 if state is None else sum(1 for moment in state.times if moment > horizon)
        return Standing(window.keymaker.as_dict(key), counted, state is not None and state.alerted)

    def keys(self, rule: str) -> int:
        """How many keys a rule is tracking now (for status and tests)."""
        window = self._windows.get(rule)
        return len(window.keys) if window else 0

    def evictions(self) -> Counter[str]:
        """Keys each rule dropped to stay within `max_keys` (rules with none omitted)."""
        return Counter({name: w.evictions for name, w in self._windows.items() if w.evictions})

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-able data, for a checkpoint."""
        return {
            "v": SNAPSHOT_VERSION,
            "rules": {
                name: [
                    [list(key), list(state.times), state.alerted, [list(s) for s in state.samples]]
                    for key, state in window.keys.items()
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
            for key, times, alerted, samples in entries[-self.max_keys :]:
                kept = deque(sorted(float(t) for t in times), maxlen=window.threshold.count)
                state = _KeyState(kept, alerted=bool(alerted))
                state.samples.extend((float(t), dict(where)) for t, where in samples)
                window.keys[tuple(str(part) for part in key)] = state


@dataclass(frozen=True, slots=True)
class Standing:
    """A key's place in its window: what `explain` shows after each line."""

    key: dict[str, str]
    counted: int  # matches inside the window (at most `count`: no more are kept)
    alerted: bool  # it alerted and stays quiet until its window has emptied


def _first(item: tuple[float, dict[str, Any]]) -> float:
    return item[0]


def _rule_configs(rules: RuleSet | Config | Iterable[RuleConfig]) -> Iterable[RuleConfig]:
    if isinstance(rules, RuleSet):
        return [rules.rule(name).config for name in rules.rules]
    if isinstance(rules, Config):
        return rules.rules.values()
    return rules
