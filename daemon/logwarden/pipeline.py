"""The stage between tail and reports: blocks in, match (and alert) records out into journals.

It runs synchronously inside the event loop, right after a tailer feeds its framer, so a
checkpoint snapshot taken between two awaits sees tail offsets and journal contents that agree.
Backpressure lives here too: when the committer cannot keep up (slow or full disk), the memory
held in journals grows, and `wait_for_room` makes the tailers stop reading until it shrinks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping

from logwarden.console import Echo
from logwarden.framing import Block
from logwarden.origin import Origin
from logwarden.recent import MATCH_WINDOW_S, RATE_WINDOW_S, RecentCounts
from logwarden.records import RecordBuilder, dumps
from logwarden.reports import ReportWriter
from logwarden.rules import Match, RuleChanges, RuleSet
from logwarden.thresholds import ThresholdTracker
from logwarden.timestamps import utc_timestamp

MAX_PENDING_BYTES = 64 * 1024 * 1024


class Pipeline:
    """Implements tail's BlockSink: rules → records → report journals."""

    def __init__(
        self,
        rules: RuleSet,
        writers: Mapping[str, ReportWriter],
        builder: RecordBuilder,
        on_records: Callable[[], None],
        echo: Echo | None = None,
    ) -> None:
        self.rules = rules
        self.writers = writers
        self.builder = builder
        self.thresholds = ThresholdTracker(rules)
        self.on_records = on_records  # wakes the committer
        self.echo = echo  # foreground mode: every match and alert on the console
        self.lines = 0
        self.bytes = 0
        self.matches: Counter[str] = Counter()
        self.alerts_per_rule: Counter[str] = Counter()
        # for status: lines per second, and each rule's matches in the last minute
        self.recent_lines = RecentCounts(RATE_WINDOW_S, int(RATE_WINDOW_S))
        self.recent_matches: dict[str, RecentCounts] = {}
        self._room = asyncio.Event()
        self._room.set()

    def reconfigure(self, rules: RuleSet, writers: Mapping[str, ReportWriter]) -> RuleChanges:
        """A reload: new rules and reports from the next block on; what changed in the rules.

        A rule whose definition did not change keeps its threshold window (its keys, their counts
        and whether they alerted): a config management tool reloads often, and a reset window
        would alert again for an attack it already reported. Changed and new rules start fresh.
        """
        changes = rules.changes_since(self.rules)
        thresholds = ThresholdTracker(rules)
        thresholds.keep_windows(self.thresholds, changes.unchanged)
        self.rules, self.writers, self.thresholds = rules, writers, thresholds
        return changes

    @property
    def alerts(self) -> int:
        return self.alerts_per_rule.total()

    @property
    def pending_bytes(self) -> int:
        """Bytes of records waiting for a commit, over every report."""
        return sum(writer.pending_bytes for writer in self.writers.values())

    def accept(self, source: Origin, blocks: list[Block]) -> None:
        matcher = self.rules.for_source(source.name)
        found = False
        for block in blocks:
            self.lines += block.line_count
            self.bytes += len(block.data)
            matches = matcher.scan(block)
            if matches:
                self._record(matches, source)
                found = True
        self.recent_lines.add(sum(block.line_count for block in blocks), time.monotonic())
        if found:
            if self.pending_bytes >= MAX_PENDING_BYTES:
                self._room.clear()
            self.on_records()

    def _record(self, matches: list[Match], source: Origin) -> None:
        stamp = utc_timestamp()
        now, clock = time.time(), time.monotonic()
        for match in matches:
            writer = self.writers[match.report]
            writer.append(dumps(self.builder.match(match, source, stamp)), match.rule)
            self.matches[match.rule] += 1
            self._recent(match.rule).add(1, clock)
            if self.echo is not None:
                self.echo.match(match, source, self.rules.rule(match.rule))
            alert = self.thresholds.observe(match, now)
            if alert is not None:
                self.writers[alert.report].append(
                    dumps(self.builder.alert(alert, source, stamp)), None
                )
                self.alerts_per_rule[alert.rule] += 1
                if self.echo is not None:
                    self.echo.alert(alert, source)

    def _recent(self, rule: str) -> RecentCounts:
        recent = self.recent_matches.get(rule)
        if recent is None:
            recent = self.recent_matches[rule] = RecentCounts(MATCH_WINDOW_S, int(MATCH_WINDOW_S))
        return recent

    def matches_last_minute(self, now: float) -> dict[str, int]:
        """Per rule that ever matched; 0 once its last match is a minute old."""
        return {rule: recent.total(now) for rule, recent in self.recent_matches.items()}

    async def wait_for_room(self) -> None:
        await self._room.wait()

    def has_room(self) -> bool:
        return self._room.is_set()

    def room_made(self) -> None:
        """The committer made journals durable and freed memory: let the tailers read again."""
        if self.pending_bytes < MAX_PENDING_BYTES // 2:
            self._room.set()
