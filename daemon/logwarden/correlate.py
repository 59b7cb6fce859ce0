"""Correlation: a match takes the captures its line lacks from an earlier line of the same session.

`carry = { key = "pid", from = ["ssh-connection"], within = "2m", captures = ["ip"] }` on a rule:
when one of its matches has no `ip`, the most recent match of the `from` rules with the same
`pid` (in the same stream of the same source, at most `within` apart by event time) lends its
`ip`. A stream is one file (its lines after a rotation included) or one host's boot in a journal:
the same pid on another host, or in another file of a source whose glob reads many hosts' logs,
is another process. sshd names the
client once, on "Connection from ADDR port N" (at LogLevel VERBOSE) or on its first failure, and
then logs lines such as "Disconnecting: Too many authentication failures for root" or
"kex_exchange_identification: ..." under the same `sshd[PID]` without it. fail2ban ties these by
the whole line prefix (its `mlfid`); CrowdSec does not tie them at all, so those lines count for
no address.

The record says what was lent: `"carried": {"captures": ["ip"], "rule": "ssh-connection",
"event_time": "..."}`. A carried capture is a capture like any other for the stages after this one:
an `ignore` list drops an allow-listed carried address, a threshold keyed on `ip` counts the line.

Each carrying rule remembers, per (source, stream, key), the latest `from` match that had at least one of
the wanted captures: a fill is one dict lookup. The memory is bounded like the threshold windows:
an entry older than `within` (by the event time of the newest match seen) is forgotten, and at
most `max_keys` entries are kept, the least recently updated evicted first (counted). It is part
of the checkpoint (`snapshot`/`restore`), so a connection line read before a crash still lends its
address to the failure line read after the restart. Memory is per carrying rule, not per `from`
rule, because two carrying rules may key the same `from` rule differently.

Rejected: filling from later lines too (fail2ban reports a failure once a later line of the pid
names the address). That would hold records back until the session ends, and a record's content
would depend on lines not yet read; here a record is final when its line is read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from logwarden.config import CarryConfig, ProblemSink, RuleConfig, key_captures
from logwarden.keys import KeyMaker
from logwarden.log import get_logger

if TYPE_CHECKING:
    from logwarden.rules import CompiledRule, Match

log = get_logger(__name__)

DEFAULT_MAX_KEYS = 4000
# 2: a slot names its stream. A version 1 memory is not migrated but dropped: its entries could
# not say which file lent them, and guessing would lend one host's address to another's pid; what
# is lost is at most `within` of memory, once
SNAPSHOT_VERSION = 2

Key = tuple[str, ...]
Slot = tuple[str | None, str, Key]  # (source name, stream, key values)


@dataclass(frozen=True, slots=True)
class Carried:
    """What a match took from an earlier one: for the record's `carried`."""

    captures: tuple[str, ...]
    rule: str  # the `from` rule whose match lent them
    event_time: float  # that match's


@dataclass(slots=True)
class _Entry:
    moment: float  # event time of the `from` match
    rule: str
    values: dict[str, str]


class _Memory:
    """One carrying rule's latest `from` matches, least recently updated first."""

    def __init__(self, config: CarryConfig, max_keys: int) -> None:
        self.config = config
        self.keymaker = KeyMaker(config.key)
        self.max_keys = max_keys
        self.entries: OrderedDict[Slot, _Entry] = OrderedDict()
        self.evictions = 0

    def remember(self, slot: Slot, entry: _Entry) -> None:
        self.entries[slot] = entry
        self.entries.move_to_end(slot)
        if len(self.entries) > self.max_keys:
            self.entries.popitem(last=False)
            self.evictions += 1

    def forget_old(self, now: float) -> None:
        """Drop entries older than `within` before `now`, from the front (amortised O(1)); an
        entry updated late with an old time only stays a little longer, never goes early."""
        horizon = now - self.config.within
        entries = self.entries
        while entries:
            slot, entry = next(iter(entries.items()))
            if entry.moment >= horizon:
                return
            del entries[slot]


class Correlator:
    """The `carry` stage for every rule that has one; `apply` each match, in order."""

    def __init__(self, rules: Iterable[RuleConfig], max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._memories: dict[str, _Memory] = {}
        feeds: dict[str, list[str]] = {}
        for rule in rules:
            if rule.carry is not None:
                self._memories[rule.name] = _Memory(rule.carry, max_keys)
                for source in rule.carry.from_:
                    feeds.setdefault(source, []).append(rule.name)
        self._feeds = {name: tuple(carriers) for name, carriers in feeds.items()}
        # the rules this stage looks at: a match of any other passes untouched, at no cost
        self.rules = frozenset(self._memories) | frozenset(self._feeds)

    def apply(
        self, match: Match, source: str | None, stream: str, event_time: float
    ) -> tuple[Match, Carried | None]:
        """The match with what it lacks filled in (a new Match only when something was), and
        what was carried; then remembered for the rules that carry from its rule."""
        carried = None
        memory = self._memories.get(match.rule)
        if memory is not None:
            match, carried = self._fill(memory, match, (source, stream), event_time)
        for carrier in self._feeds.get(match.rule, ()):
            self._remember(self._memories[carrier], match, (source, stream), event_time)
        return match, carried

    def preview(
        self, match: Match, source: str | None, stream: str, event_time: float
    ) -> tuple[Match, Carried | None]:
        """What `apply` would fill in, remembering nothing (for `logwarden explain`)."""
        memory = self._memories.get(match.rule)
        if memory is None:
            return match, None
        return self._fill(memory, match, (source, stream), event_time)

    def _fill(
        self, memory: _Memory, match: Match, place: tuple[str | None, str], now: float
    ) -> tuple[Match, Carried | None]:
        memory.forget_old(now)
        captures = match.captures
        missing = [name for name in memory.config.captures if captures.get(name) is None]
        if not missing:
            return match, None
        key = memory.keymaker.key(captures)
        entry = None if key is None else memory.entries.get((*place, key))
        # a `from` line stamped a little after this one (clock skew between processes) counts too
        if entry is None or abs(now - entry.moment) > memory.config.within:
            return match, None
        lent: dict[str, str | None] = {
            name: entry.values[name] for name in missing if name in entry.values
        }
        if not lent:
            return match, None
        filled = replace(match, captures=captures | lent)
        return filled, Carried(tuple(lent), entry.rule, entry.moment)

    @staticmethod
    def _remember(memory: _Memory, match: Match, place: tuple[str | None, str], now: float) -> None:
        key = memory.keymaker.key(match.captures)
        if key is None:
            return
        values = {
            name: value
            for name in memory.config.captures
            if (value := match.captures.get(name)) is not None
        }
        if values:  # a `from` match naming none of them must not hide an earlier one that did
            memory.forget_old(now)
            memory.remember((*place, key), _Entry(now, match.rule, values))

    # ------------------------------------------------------------------ reload and restart

    def keep_memories(self, previous: Correlator, rules: Iterable[str]) -> None:
        """Take over `previous`'s memory of unchanged carrying `rules` (a reload)."""
        for name in rules:
            mine, theirs = self._memories.get(name), previous._memories.get(name)
            if mine is not None and theirs is not None and mine.config == theirs.config:
                self._memories[name] = theirs

    def entries(self, rule: str) -> int:
        """How many keys a carrying rule remembers now (for tests)."""
        memory = self._memories.get(rule)
        return len(memory.entries) if memory else 0

    def evictions(self) -> dict[str, int]:
        """Keys each carrying rule dropped to stay within `max_keys` (rules with none omitted)."""
        return {name: m.evictions for name, m in self._memories.items() if m.evictions}

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "rules": {
                name: [
                    [source, stream, list(key), entry.moment, entry.rule, entry.values]
                    for (source, stream, key), entry in memory.entries.items()
                ]
                for name, memory in self._memories.items()
                if memory.entries
            },
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Load a `snapshot()`; rules that no longer carry are dropped, the newest kept at most
        `max_keys`. An unknown version is ignored: an old checkpoint never blocks a start."""
        if snapshot.get("v") != SNAPSHOT_VERSION:
            return
        for name, entries in snapshot.get("rules", {}).items():
            memory = self._memories.get(name)
            if memory is None:
                continue
            memory.entries.clear()
            for source, stream, key, moment, rule, values in entries[-self.max_keys :]:
                slot = (
                    None if source is None else str(source),
                    str(stream),
                    tuple(str(k) for k in key),
                )
                kept = {str(k): str(v) for k, v in values.items()}
                memory.entries[slot] = _Entry(float(moment), str(rule), kept)


# ---------------------------------------------------------------- checked at load


def check_carries(rules: Sequence[CompiledRule], sink: ProblemSink) -> None:
    """What a `carry` names must exist: its key is a capture of every pattern of the rule and of
    each `from` rule, its captures are captures of each `from` rule. A rule with `records = false`
    must feed something (a threshold, or another rule's carry), or its matches would vanish."""
    by_name = {rule.name: rule for rule in rules}
    fed = {source for rule in rules if rule.config.carry for source in rule.config.carry.from_}
    for rule in rules:
        where = ("rules", rule.name)
        if not rule.config.records and rule.config.threshold is None and rule.name not in fed:
            sink.add(
                (*where, "records"),
                "records = false writes nothing, and nothing uses this rule's matches: no"
                " threshold, and no rule's `carry` names it in `from`",
            )
        carry = rule.config.carry
        if carry is None:
            continue
        key = key_captures(carry.key)
        for index, names in enumerate(_pattern_captures(rule)):
            if missing := [name for name in key if name not in names]:
                sink.add(
                    (*where, "carry", "key"),
                    f"match[{index}] has no capture named {', '.join(map(repr, missing))}"
                    f" to carry by (its captures: {', '.join(names) or 'none'})",
                )
        for index, name in enumerate(carry.from_):
            source = by_name.get(name)
            if source is None:
                continue  # an unknown rule is reported by config.py; a broken one, by itself
            place = (*where, "carry", "from", index)
            for position, names in enumerate(_pattern_captures(source)):
                if missing := [part for part in key if part not in names]:
                    sink.add(
                        place,
                        f"{name!r}'s match[{position}] has no capture named"
                        f" {', '.join(map(repr, missing))}: the key must be a capture of"
                        " both rules",
                    )
            offered = {n for names in _pattern_captures(source) for n in names}
            if missing := [capture for capture in carry.captures if capture not in offered]:
                sink.add(
                    place,
                    f"{name!r} has no capture named {', '.join(map(repr, missing))} to carry"
                    f" (its captures: {', '.join(sorted(offered)) or 'none'})",
                )


def _pattern_captures(rule: CompiledRule) -> list[tuple[str, ...]]:
    return [tuple(name for name, _ in groups) for groups in rule.groups]
