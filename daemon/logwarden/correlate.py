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

The memory is kept per `from` rule (and per key and captures), shared by every rule that carries
from it by the same key and captures: per (source, stream, key), the latest match of that rule
that had at least one of the wanted captures, so a fill is one dict lookup per `from` rule (the
one remembered last, if within `within`, lends). The shipped sshd rules carry from the same three rules in five
places; one memory per carrying rule kept five copies of the same matches, and a brute force
rewrote all of them at every commit. The memory is bounded like the threshold windows: an entry
older than the longest `within` of the rules sharing it (by the event time of the newest match
seen) is forgotten, and at most `max_keys` entries are kept, the least recently updated evicted
first (counted under the `from` rule's name). It is part of the checkpoint (`snapshot`/
`restore`), so a connection line read before a crash still lends its address to the failure line
read after the restart. Each memory caches its JSON until it changes: a commit during an attack
serialises again only the memories that the attack's lines changed.

Rejected: filling from later lines too (fail2ban reports a failure once a later line of the pid
names the address). That would hold records back until the session ends, and a record's content
would depend on lines not yet read; here a record is final when its line is read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from logwarden.config import CarryConfig, RuleConfig, key_captures
from logwarden.keys import KeyMaker
from logwarden.log import get_logger
from logwarden.problems import ProblemSink

if TYPE_CHECKING:
    from logwarden.rules import CompiledRule, Match

log = get_logger(__name__)

# per memory. sshd holds at most MaxStartups (default 100) connections before authentication,
# the only ones whose lines carry, and each for LoginGraceTime (2 minutes) at most: 1,000 keys
# cover ten such hosts in one stream-sharing source (their pids are slotted apart by file) while
# keeping a memory's JSON near 50 KB, which a commit rewrites whenever the memory changed
DEFAULT_MAX_KEYS = 1000
# 2: a slot names its stream. 3: one memory per `from` rule. An older memory is not migrated but
# dropped: a version 1 entry could not say which file lent it (guessing would lend one host's
# address to another's pid), and a version 2 one is a carrying rule's, not a `from` rule's; what is
# lost is at most `within` of memory, once, on the first start after the upgrade
SNAPSHOT_VERSION = 3

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
    seq: int  # when it was remembered, counted over all memories: the latest of them lends


MemoryId = tuple[str, tuple[str, ...], tuple[str, ...]]  # (from rule, key spec, captures)


class _Memory:
    """One `from` rule's latest matches by one key, least recently updated first."""

    def __init__(self, ident: MemoryId, within: float, max_keys: int) -> None:
        self.ident = ident
        self.rule, key, self.captures = ident
        self.keymaker = KeyMaker(key)
        self.within = within  # the longest of the rules sharing it
        self.max_keys = max_keys
        self.entries: OrderedDict[Slot, _Entry] = OrderedDict()
        self.evictions = 0
        self._json: bytes | None = None  # `snapshot()`'s, until the next change

    def remember(self, match: Match, place: tuple[str | None, str], now: float, seq: int) -> None:
        key = self.keymaker.key(match.captures)
        if key is None:
            return
        captures = match.captures
        values = {
            name: value for name in self.captures if (value := captures.get(name)) is not None
        }
        if not values:  # a `from` match naming none of them must not hide an earlier one that did
            return
        self.forget_old(now)
        slot = (*place, key)
        self.entries[slot] = _Entry(now, self.rule, values, seq)
        self.entries.move_to_end(slot)
        if len(self.entries) > self.max_keys:
            self.entries.popitem(last=False)
            self.evictions += 1
        self._json = None

    def forget_old(self, now: float) -> None:
        """Drop entries older than `within` before `now`, from the front (amortised O(1)); an
        entry updated late with an old time only stays a little longer, never goes early."""
        horizon = now - self.within
        entries = self.entries
        while entries:
            slot, entry = next(iter(entries.items()))
            if entry.moment >= horizon:
                return
            del entries[slot]
            self._json = None

    def snapshot(self) -> orjson.Fragment:
        """`{"rule", "key", "captures", "places", "entries"}`, least recently updated first; each
        entry `[place, key values, event time, capture values, seq]` (None where it had none), the
        (source, stream) pairs written once in `places`: a file's path would fill most of it."""
        if self._json is None:
            places: dict[tuple[str | None, str], int] = {}
            entries = [
                [
                    places.setdefault((source, stream), len(places)),
                    key,
                    entry.moment,
                    [entry.values.get(name) for name in self.captures],
                    entry.seq,
                ]
                for (source, stream, key), entry in self.entries.items()
            ]
            rule, key_spec, captures = self.ident
            self._json = orjson.dumps(
                {
                    "rule": rule,
                    "key": key_spec,
                    "captures": captures,
                    "places": list(places),
                    "entries": entries,
                }
            )
        return orjson.Fragment(self._json)

    def restore(self, item: Mapping[str, Any]) -> int:
        """Load a `snapshot()`; the highest seq it had (-1: none)."""
        places = [(None if s is None else str(s), str(t)) for s, t in item.get("places", ())]
        self.entries.clear()
        latest = -1
        for place, key, moment, values, seq in item.get("entries", ())[-self.max_keys :]:
            kept = {
                name: str(value)
                for name, value in zip(self.captures, values, strict=True)
                if value is not None
            }
            slot = (*places[place], tuple(str(k) for k in key))
            self.entries[slot] = _Entry(float(moment), self.rule, kept, int(seq))
            latest = max(latest, int(seq))
        self._json = None
        return latest


def memory_id(rule: str, carry: CarryConfig) -> MemoryId:
    return (rule, carry.key, carry.captures)


class Correlator:
    """The `carry` stage for every rule that has one; `apply` each match, in order."""

    def __init__(self, rules: Iterable[RuleConfig], max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.seq = 0  # the next remembered match's
        carries = {rule.name: rule.carry for rule in rules if rule.carry is not None}
        within: dict[MemoryId, float] = {}
        for carry in carries.values():
            for source in carry.from_:
                ident = memory_id(source, carry)
                within[ident] = max(within.get(ident, 0.0), carry.within)
        self._memories = {ident: _Memory(ident, w, max_keys) for ident, w in within.items()}
        # a carrying rule: its config, and the memories of its `from` rules, in `from` order
        self._carriers = {
            name: (carry, tuple(self._memories[memory_id(s, carry)] for s in carry.from_))
            for name, carry in carries.items()
        }
        feeds: dict[str, list[_Memory]] = {}
        for memory in self._memories.values():
            feeds.setdefault(memory.rule, []).append(memory)
        self._feeds = {name: tuple(memories) for name, memories in feeds.items()}
        # the rules this stage looks at: a match of any other passes untouched, at no cost
        self.rules = frozenset(self._carriers) | frozenset(self._feeds)

    def apply(
        self, match: Match, source: str | None, stream: str, event_time: float
    ) -> tuple[Match, Carried | None]:
        """The match with what it lacks filled in (a new Match only when something was), and
        what was carried; then remembered for the rules that carry from its rule."""
        carried = None
        place = (source, stream)
        carrier = self._carriers.get(match.rule)
        if carrier is not None:
            match, carried = self._fill(carrier, match, place, event_time)
        for memory in self._feeds.get(match.rule, ()):
            memory.remember(match, place, event_time, self.seq)
        self.seq += 1
        return match, carried

    def preview(
        self, match: Match, source: str | None, stream: str, event_time: float
    ) -> tuple[Match, Carried | None]:
        """What `apply` would fill in, remembering nothing (for `logwarden explain`)."""
        carrier = self._carriers.get(match.rule)
        if carrier is None:
            return match, None
        return self._fill(carrier, match, (source, stream), event_time)

    @staticmethod
    def _fill(
        carrier: tuple[CarryConfig, tuple[_Memory, ...]],
        match: Match,
        place: tuple[str | None, str],
        now: float,
    ) -> tuple[Match, Carried | None]:
        config, memories = carrier
        captures = match.captures
        missing = [name for name in config.captures if captures.get(name) is None]
        if not missing:
            return match, None
        key = memories[0].keymaker.key(captures)  # the memories share the carrier's key
        if key is None:
            return match, None
        slot = (*place, key)
        entry = None
        for memory in memories:
            memory.forget_old(now)
            found = memory.entries.get(slot)
            # a `from` line stamped a little after this one (clock skew between processes) counts
            if (
                found is not None
                and abs(now - found.moment) <= config.within
                and (entry is None or found.seq > entry.seq)
            ):
                entry = found
        if entry is None:
            return match, None
        lent: dict[str, str | None] = {
            name: entry.values[name] for name in missing if name in entry.values
        }
        if not lent:
            return match, None
        filled = replace(match, captures=captures | lent)
        return filled, Carried(tuple(lent), entry.rule, entry.moment)

    # ------------------------------------------------------------------ reload and restart

    def keep_memories(self, previous: Correlator) -> None:
        """Take over `previous`'s memories that this config still has (a reload): the same
        `from` rule, key and captures. The same test as `restore`'s, so a restart keeps what a
        reload keeps; a changed `within` keeps the memory (each fill checks its own)."""
        self.seq = previous.seq
        for ident, memory in self._memories.items():
            theirs = previous._memories.get(ident)
            if theirs is not None:
                theirs.within, theirs.max_keys = memory.within, memory.max_keys
                self._memories[ident] = theirs
        for name, (config, memories) in self._carriers.items():
            self._carriers[name] = (config, tuple(self._memories[m.ident] for m in memories))
        self._feeds = {
            name: tuple(self._memories[m.ident] for m in memories)
            for name, memories in self._feeds.items()
        }

    def entries(self, rule: str) -> int:
        """How many keys the memories of a `from` rule hold now (for tests)."""
        return sum(len(memory.entries) for memory in self._feeds.get(rule, ()))

    def evictions(self) -> dict[str, int]:
        """Keys each `from` rule's memories dropped to stay within `max_keys` (rules with none
        omitted)."""
        counts: dict[str, int] = {}
        for memory in self._memories.values():
            if memory.evictions:
                counts[memory.rule] = counts.get(memory.rule, 0) + memory.evictions
        return counts

    def snapshot(self) -> dict[str, Any]:
        """The memories that hold something, each its cached JSON (see `_Memory.snapshot`)."""
        return {
            "v": SNAPSHOT_VERSION,
            "memories": [m.snapshot() for m in self._memories.values() if m.entries],
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Load a `snapshot()`: a memory this config no longer has (no rule carries from that
        rule by that key and captures) is dropped, the newest kept at most `max_keys`. An
        unknown version is ignored: an old checkpoint never blocks a start."""
        if snapshot.get("v") != SNAPSHOT_VERSION:
            return
        for item in snapshot.get("memories", ()):
            ident = (
                str(item["rule"]),
                tuple(str(part) for part in item["key"]),
                tuple(str(name) for name in item["captures"]),
            )
            memory = self._memories.get(ident)
            if memory is not None:
                self.seq = max(self.seq, memory.restore(item) + 1)


# ---------------------------------------------------------------- checked at load


def check_carries(rules: Sequence[CompiledRule], sink: ProblemSink) -> None:
    """What a `carry` names must exist: its key is a capture of every pattern of the rule and of
    each `from` rule, its captures are captures of each `from` rule (a regex group or one of its
    `capture_fields`); a `from` rule must be another rule, reading some of the same sources. A
    rule with `records = false` must feed something (a threshold, or another rule's carry), or
    its matches would vanish, and takes no `suppress` or `alert_only`, which act on records."""
    by_name = {rule.name: rule for rule in rules}
    fed = {source for rule in rules if rule.config.carry for source in rule.config.carry.from_}
    for rule in rules:
        where = ("rules", rule.name)
        _check_records(rule, fed, sink)
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
            if source is rule:
                sink.add(place, "a rule cannot carry from itself: name the rules whose lines lend")
                continue
            mine, theirs = rule.config.sources, source.config.sources
            if mine is not None and theirs is not None and not set(mine) & set(theirs):
                sink.add(
                    place,
                    f"{name!r} reads none of this rule's sources ({', '.join(theirs)} against"
                    f" {', '.join(mine)}): carry lends only within a source, so it never would",
                )
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


def _check_records(rule: CompiledRule, fed: set[str], sink: ProblemSink) -> None:
    config = rule.config
    if config.records:
        return
    where = ("rules", rule.name)
    if config.threshold is None and rule.name not in fed:
        sink.add(
            (*where, "records"),
            "records = false writes nothing, and nothing uses this rule's matches: no"
            " threshold, and no rule's `carry` names it in `from`",
        )
    if config.suppress is not None:
        sink.add(
            (*where, "suppress"),
            "records = false writes no records, so there are none to fold: drop `suppress`",
        )
    if config.threshold is not None and config.threshold.alert_only:
        sink.add(
            (*where, "threshold", "alert_only"),
            "records = false already keeps the matches out of the report: drop `alert_only`",
        )


def _pattern_captures(rule: CompiledRule) -> list[tuple[str, ...]]:
    """Each pattern's captures, with the rule's `capture_fields` (which every match of a line
    that parses has); a rule on fields without patterns, those alone."""
    fields = rule.config.capture_fields
    if not rule.groups:
        return [fields]
    return [(*(name for name, _ in groups), *fields) for groups in rule.groups]
