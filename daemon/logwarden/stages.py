"""The one match → record path, which `scan` and the daemon's pipeline both run.

A `Match` and its `Origin` go through the stages in this order:
1. **carry** (`correlate.py`): a match of a rule with `carry` takes the captures it lacks from
   an earlier match of the same key, and a match of a `from` rule is remembered for that; first,
   so that an allow-listed carried address is still ignored and a threshold counts carried keys
   (the event time is read here already, for the rules involved only);
2. **ignore**: a match whose address capture lies in the rule's `ignore` networks is dropped and
   counted (`suppressed`), before anything else sees it;
3. **event time** (`eventtime.py`), read only now, so quiet lines never pay for it;
4. **threshold** (`thresholds.py`): every match counts, by event time; a crossing adds an alert;
5. the **match record** (`records.py`), kept out of the report by `alert_only` or `records = false`;
6. **suppress** (`suppress.py`): held, or folded into the record held for its key.
What comes out is `Output`s, record bytes addressed to a report, in the order they are to be
written. The state of stages 1, 4 and 6 is one JSON document (`snapshot`/`restore`) that the
daemon commits with the offsets. Matches come in line order (within a line, rule order), so the
`from` match of an earlier line is remembered before a later line of the same block needs it.
`where` on parsed fields decides what matches, so it is part of matching (`structured.py`),
before any stage.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from logwarden.config import SourceConfig
from logwarden.correlate import Correlator
from logwarden.eventtime import EventClocks, rfc3339
from logwarden.log import get_logger
from logwarden.origin import Origin
from logwarden.records import RecordBuilder, dumps
from logwarden.rules import Match, RuleChanges, RuleSet
from logwarden.suppress import Held, Suppressor
from logwarden.thresholds import Alert, ThresholdTracker
from logwarden.timestamps import utc_timestamp

log = get_logger(__name__)

# `carry` (the memories) joined version 1 as an optional key: a reader without it ignores the key
# and loses only what would have been lent, so no version (and checkpoint) bump was needed
STATE_VERSION = 1
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Output:
    """One record to write: to which report, as which rule's match (None: an alert) and what
    made it (for the foreground console). Not mutated once made; not `frozen`, whose __init__
    costs a match about half a microsecond more (issue 14)."""

    report: str
    rule: str | None
    data: bytes
    match: Match | None = None
    alert: Alert | None = None


class _Ignore:
    """A rule's allow list: networks on one capture."""

    __slots__ = ("capture", "networks")

    def __init__(self, capture: str, networks: Iterable[Network]) -> None:
        self.capture = capture
        self.networks = tuple(networks)

    def covers(self, captures: Mapping[str, str | None]) -> Network | None:
        """The network the capture's address lies in, or None (also for a non-address)."""
        value = captures.get(self.capture)
        if value is None:
            return None
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return None
        for network in self.networks:
            if address.version == network.version and address in network:
                return network
        return None


class MatchProcessor:
    """Match + Origin → record bytes, for one rule set; the counters `status` shows."""

    def __init__(
        self,
        rules: RuleSet,
        sources: Mapping[str, SourceConfig],
        builder: RecordBuilder,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.builder = builder
        self.now = now
        self.clocks = EventClocks(sources, now)
        configs = [rules.rule(name).config for name in rules.rules]
        self.thresholds = ThresholdTracker(configs)
        self.suppressor = Suppressor(configs)
        self.correlator = Correlator(configs)
        self.ignores = {
            rule.name: _Ignore(rule.ignore.capture, rule.ignore.networks())
            for rule in configs
            if rule.ignore is not None
        }
        self.alert_only = frozenset(  # rules that write no match records
            rule.name
            for rule in configs
            if not rule.records or (rule.threshold and rule.threshold.alert_only)
        )
        self._stateful = frozenset(rule.name for rule in configs if rule.threshold or rule.suppress)
        self.matches: Counter[str] = Counter()
        self.alerts_per_rule: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()  # dropped by `ignore`
        # the cached JSON of the windows and held records; None: changed since. The carry
        # memories cache their own, so a feeder match does not serialise these again
        self._state: tuple[bytes, bytes] | None = None

    # ------------------------------------------------------------------ the stages

    def process(self, matches: list[Match], origin: Origin) -> list[Output]:
        """The records of a block's matches, in order."""
        out: list[Output] = []
        stamp = utc_timestamp()
        clock = self.clocks.for_source(origin.name)
        arrival = self.now()
        read_at: tuple[int, float, str, str] | None = None  # one line's time serves all its rules
        stateful, alert_only, ignores = self._stateful, self.alert_only, self.ignores
        correlated = self.correlator.rules
        for found in matches:
            rule = found.rule
            match, carried = found, None
            if rule in correlated:
                if read_at is None or read_at[0] != found.offset:
                    read_at = (found.offset, *clock.stamped(found, origin))
                match, carried = self.correlator.apply(
                    found, origin.name, origin.stream(found), read_at[1]
                )
            if ignores:
                ignore = ignores.get(rule)
                if ignore is not None and ignore.covers(match.captures) is not None:
                    self.suppressed[rule] += 1
                    continue
            if read_at is None or read_at[0] != match.offset:
                read_at = (match.offset, *clock.stamped(match, origin))
            event_time = read_at[1]
            self.matches[rule] += 1
            alert = None
            if rule in stateful:
                self._state = None
                alert = self.thresholds.observe(match, event_time, origin.sample(match))
            if rule not in alert_only:
                record = self.builder.match(match, origin, stamp, read_at[3], read_at[2])
                if carried is not None:
                    record["carried"] = {
                        "captures": list(carried.captures),
                        "rule": carried.rule,
                        "event_time": rfc3339(carried.event_time),
                    }
                held = False
                if rule in stateful and self.suppressor.applies(rule):
                    held, closed = self.suppressor.offer(
                        rule,
                        match.captures,
                        match.report,
                        record,
                        event_time=event_time,
                        arrived=arrival,
                    )
                    out += self._published(closed)
                if not held:
                    out.append(Output(match.report, rule, dumps(record), match))
            if alert is not None:
                self.alerts_per_rule[alert.rule] += 1
                out.append(
                    Output(alert.report, None, dumps(self.builder.alert(alert, stamp)), alert=alert)
                )
        return out

    def tick(self) -> list[Output]:
        """Held records whose window the wall clock closed (the daemon calls this every second)."""
        closed = self.suppressor.due(self.now())
        if closed:
            self._state = None
        return self._published(closed)

    def finish(self) -> list[Output]:
        """Every held record, published now: the end of `scan`'s input."""
        return self._published(self.suppressor.everything())

    def _published(self, held: Iterable[Held]) -> list[Output]:
        out = []
        for record in held:
            published = record.published(rfc3339(record.last))
            out.append(Output(record.report, published["rule"], dumps(published)))
        return out

    # ------------------------------------------------------------------ reload and restart

    def reconfigure(
        self, rules: RuleSet, sources: Mapping[str, SourceConfig]
    ) -> tuple[MatchProcessor, RuleChanges, list[Output]]:
        """The processor of a reloaded config; unchanged rules keep their windows and held
        records (a reset window would alert again for an attack already reported); held records
        of changed and removed rules come back as outputs, published now rather than lost."""
        changes = rules.changes_since(self.rules)
        fresh = MatchProcessor(rules, sources, self.builder, self.now)
        fresh.thresholds.keep_windows(self.thresholds, changes.unchanged)
        fresh.correlator.keep_memories(self.correlator)
        released = fresh.suppressor.keep_holds(self.suppressor, changes.unchanged)
        for name in ("matches", "alerts_per_rule", "suppressed"):
            setattr(fresh, name, getattr(self, name))
        return fresh, changes, self._published(released)

    def snapshot(self) -> orjson.Fragment:
        """Threshold windows, held records and carry memories as one JSON value, for the
        checkpoint. Each part is serialised again only after it changed (commits without
        matches of stateful rules reuse the windows', a carry memory the lines of a commit did
        not touch reuses its own); the rest is copied as it is."""
        if self._state is None:
            self._state = (
                orjson.dumps(self.thresholds.snapshot()),
                orjson.dumps(self.suppressor.snapshot()),
            )
        thresholds, suppress = self._state
        return orjson.Fragment(
            orjson.dumps(
                {
                    "v": STATE_VERSION,
                    "thresholds": orjson.Fragment(thresholds),
                    "suppress": orjson.Fragment(suppress),
                    "carry": self.correlator.snapshot(),
                }
            )
        )

    def restore(self, state: Mapping[str, Any] | None) -> list[Output]:
        """Load a checkpoint's `snapshot()`; held records of rules that no longer suppress come
        back as outputs. An unknown version or none (an older checkpoint) starts afresh."""
        if not state or state.get("v") != STATE_VERSION:
            return []
        self.thresholds.restore(state.get("thresholds", {}))
        orphans = self.suppressor.restore(state.get("suppress", {}))
        self.correlator.restore(state.get("carry", {}))  # none before carry existed: empty
        self._state = None
        return self._published(orphans)

    def evictions(self) -> dict[str, int]:
        """Keys each rule's windows, held records and carry memory (under the `from` rule's name)
        dropped to stay bounded; a rule with more than one of them, their sum."""
        counts = self.thresholds.evictions()
        counts.update(self.suppressor.evictions)
        counts.update(self.correlator.evictions())
        return dict(counts)
