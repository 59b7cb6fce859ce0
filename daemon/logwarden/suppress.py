"""Suppression: repeats of one key within a window fold into the first record, with a count.

`suppress = { key = "ip", within = "1m" }`: the first match of a key is *held*; every further
match of that key whose event time is less than `within` after the first one is folded into it
(`repeats` counts the matches the record stands for, the first included; `last` is the event time
of the newest). Once the window closes the record is published with those two fields, so
repetition stays visible: Vector's dedupe hides repeats forever, which an operator reading a
report cannot tell from silence.

A window closes when event time moves past it (a later match of the rule, any key) or, for a
quiet host, when the wall clock is `within` past the moment the first match was read; `scan`
publishes what it still holds at the end of its input. A held record is state that a crash must
not lose or publish twice: it is part of the checkpoint (`snapshot`/`restore`), committed in the
same step as the offsets of the lines folded into it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from logwarden.config import RuleConfig, SuppressConfig
from logwarden.keys import KeyMaker

SNAPSHOT_VERSION = 1
DEFAULT_MAX_HELD = 2000

Key = tuple[str, ...]


@dataclass(slots=True)
class Held:
    """A record waiting for its window to close."""

    report: str
    record: dict[str, Any]
    first: float  # event time of the first match
    last: float  # and of the newest folded in
    arrived: float  # wall clock when the first was read
    repeats: int = 1

    def published(self, last_text: str) -> dict[str, Any]:
        return self.record | {"repeats": self.repeats, "last": last_text}


class _RuleHolds:
    def __init__(self, config: SuppressConfig, max_held: int) -> None:
        self.config = config
        self.keymaker = KeyMaker(config.key)
        self.max_held = max_held
        self.held: OrderedDict[Key, Held] = OrderedDict()  # oldest first


class Suppressor:
    """Held records of every rule with `suppress`; `offer` each match record, `due` on a tick."""

    def __init__(self, rules: Iterable[RuleConfig], max_held: int = DEFAULT_MAX_HELD) -> None:
        self.max_held = max_held
        self._rules = {
            rule.name: _RuleHolds(rule.suppress, max_held)
            for rule in rules
            if rule.suppress is not None
        }
        self.folded: dict[str, int] = {}
        self.evictions: dict[str, int] = {}

    def applies(self, rule: str) -> bool:
        return rule in self._rules

    def offer(
        self,
        rule: str,
        captures: dict[str, str | None],
        report: str,
        record: dict[str, Any],
        *,
        event_time: float,
        arrived: float,
    ) -> tuple[bool, list[Held]]:
        """Take a match record of a suppressing rule: (whether it was held or folded, so the
        caller must not write it; the held records whose window this event time closed)."""
        holds = self._rules[rule]
        closed = list(self._close(holds, event_time, None))
        key = holds.keymaker.key(captures)
        if key is None:
            return False, closed  # no key to fold by: written as it is
        held = holds.held.get(key)
        if held is not None:
            held.repeats += 1
            held.last = max(held.last, event_time)
            self.folded[rule] = self.folded.get(rule, 0) + 1
            return True, closed
        holds.held[key] = Held(report, record, event_time, event_time, arrived)
        if len(holds.held) > self.max_held:  # the oldest goes out early, not lost
            closed.append(holds.held.popitem(last=False)[1])
            self.evictions[rule] = self.evictions.get(rule, 0) + 1
        return True, closed

    def due(self, wall_now: float) -> list[Held]:
        """Held records whose window the wall clock has closed (a quiet host's publish)."""
        return [
            held for holds in self._rules.values() for held in self._close(holds, None, wall_now)
        ]

    def everything(self) -> list[Held]:
        """Every held record, oldest first, and nothing held any more (`scan`'s end of input)."""
        out = [held for holds in self._rules.values() for held in holds.held.values()]
        for holds in self._rules.values():
            holds.held.clear()
        return sorted(out, key=lambda held: held.arrived)

    def release(self, rules: Iterable[str]) -> list[Held]:
        """Give up the held records of `rules` (removed or changed by a reload)."""
        out: list[Held] = []
        for name in rules:
            holds = self._rules.pop(name, None)
            if holds is not None:
                out += holds.held.values()
        return out

    def keep_holds(self, previous: Suppressor, rules: Iterable[str]) -> list[Held]:
        """Take over `previous`'s held records of unchanged `rules`; the rest, to be published."""
        unchanged = set(rules)
        for name in unchanged:
            mine, theirs = self._rules.get(name), previous._rules.get(name)
            if mine is not None and theirs is not None and mine.config == theirs.config:
                self._rules[name] = theirs
        return previous.release(set(previous._rules) - {n for n in unchanged if n in self._rules})

    def _close(
        self, holds: _RuleHolds, event_now: float | None, wall_now: float | None
    ) -> Iterator[Held]:
        """Held records closed by event time or wall clock, oldest first. The scan stops at the
        first one still open: records are held in arrival order, so wall-clock closing is in order,
        and event times are too but for lines out of order, which only publish a little late."""
        within = holds.config.within
        while holds.held:
            key, held = next(iter(holds.held.items()))
            if (event_now is not None and event_now >= held.first + within) or (
                wall_now is not None and wall_now >= held.arrived + within
            ):
                del holds.held[key]
                yield held
            else:
                return

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "rules": {
                name: [
                    [list(key), h.report, h.record, h.first, h.last, h.arrived, h.repeats]
                    for key, h in holds.held.items()
                ]
                for name, holds in self._rules.items()
                if holds.held
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> list[Held]:
        """Load a `snapshot()`; held records of rules that no longer suppress are returned, to be
        published rather than lost."""
        orphans: list[Held] = []
        if snapshot.get("v") != SNAPSHOT_VERSION:
            return orphans
        for name, entries in snapshot.get("rules", {}).items():
            holds = self._rules.get(name)
            for key, report, record, first, last, arrived, repeats in entries:
                held = Held(str(report), dict(record), float(first), float(last), float(arrived))
                held.repeats = int(repeats)
                if holds is None:
                    orphans.append(held)
                else:
                    holds.held[tuple(str(part) for part in key)] = held
        return orphans
