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
from typing import TYPE_CHECKING, Any

import orjson

from logwarden.config import SourceConfig
from logwarden.framing import Block
from logwarden.log import get_logger
from logwarden.origin import Origin
from logwarden.recent import MATCH_WINDOW_S, RATE_WINDOW_S, RecentCounts
from logwarden.records import RecordBuilder
from logwarden.reports import ReportWriter
from logwarden.rules import Match, RuleChanges, RuleSet, SourceMatcher
from logwarden.stages import MatchProcessor, Output

if TYPE_CHECKING:
    from logwarden.console import Echo  # only a foreground daemon imports it (rich)

MAX_PENDING_BYTES = 64 * 1024 * 1024

log = get_logger(__name__)


class Pipeline:
    """Implements tail's BlockSink: rules → `MatchProcessor` (the records) → report journals."""

    def __init__(
        self,
        rules: RuleSet,
        sources: Mapping[str, SourceConfig],
        writers: Mapping[str, ReportWriter],
        *,
        builder: RecordBuilder,
        on_records: Callable[[], None],
        echo: Echo | None = None,
    ) -> None:
        self.rules = rules
        self.writers = writers
        self.processor = MatchProcessor(rules, sources, builder)
        self.on_records = on_records  # wakes the committer
        self.echo = echo  # foreground mode: every match and alert on the console
        self.lines = 0
        self.bytes = 0
        # for status: lines per second, and each rule's matches in the last minute
        self.recent_lines = RecentCounts(RATE_WINDOW_S, int(RATE_WINDOW_S))
        self.recent_matches: dict[str, RecentCounts] = {}
        self._room = asyncio.Event()
        self._room.set()

    def reconfigure(
        self,
        rules: RuleSet,
        sources: Mapping[str, SourceConfig],
        writers: Mapping[str, ReportWriter],
    ) -> RuleChanges:
        """A reload: new rules and reports from the next block on; what changed in the rules.

        A rule whose definition did not change keeps its threshold window (its keys, their counts
        and whether they alerted) and its held records: a config management tool reloads often,
        and a reset window would alert again for an attack it already reported. Changed and new
        rules start fresh; records a changed rule held are published now.
        """
        self.processor, changes, released = self.processor.reconfigure(rules, sources)
        self.rules, self.writers = rules, writers
        self._write(released)
        return changes

    def restore(self, state: Any) -> None:
        """Threshold windows and held records from the checkpoint the daemon started from."""
        self._write(self.processor.restore(state))

    def state(self) -> orjson.Fragment:
        """The processor's state for the checkpoint: taken in the same synchronous step as the
        offsets, so the two agree."""
        return self.processor.snapshot()

    @property
    def matches(self) -> Counter[str]:
        return self.processor.matches

    @property
    def alerts_per_rule(self) -> Counter[str]:
        return self.processor.alerts_per_rule

    @property
    def suppressed(self) -> Counter[str]:
        return self.processor.suppressed

    @property
    def alerts(self) -> int:
        return self.alerts_per_rule.total()

    @property
    def pending_bytes(self) -> int:
        """Bytes of records waiting for a commit, over every report."""
        return sum(writer.pending_bytes for writer in self.writers.values())

    def accept(self, source: Origin, blocks: list[Block]) -> None:
        matcher = self.rules.for_source(source.name)
        lines = 0
        for block in blocks:
            lines += block.line_count
            self.bytes += len(block.data)
            matches = matcher.scan(block)
            if matches:
                self._write(self.processor.process(matches, source), source)
        self.lines += lines
        self.recent_lines.add(lines, time.monotonic())

    def accept_matched(
        self, source: Origin, matches: list[Match], lines: int, block_bytes: int
    ) -> None:
        """`accept` for lines a worker already framed and matched (`lookahead.py`)."""
        self.bytes += block_bytes
        if matches:
            self._write(self.processor.process(matches, source), source)
        self.lines += lines
        self.recent_lines.add(lines, time.monotonic())

    def matcher_ahead(self, source: str) -> SourceMatcher | None:
        """The matcher a worker may match `source`'s backlog with: one that keeps no count
        of its own (`engine = "regex"` rules count their timeouts here)."""
        matcher = self.rules.for_source(source)
        return matcher if matcher.counts_nothing else None

    def tick(self) -> None:
        """Publish held records whose window closed while nothing arrived (once a second)."""
        self._write(self.processor.tick())

    def _write(self, outputs: list[Output], source: Origin | None = None) -> None:
        if not outputs:
            return
        clock = time.monotonic()
        for output in outputs:
            writer = self.writers.get(output.report)
            if writer is None:  # a held record whose report a reload removed
                log.warning("record dropped: its report is gone", report=output.report)
                continue
            writer.append(output.data, output.rule)
            if output.match is not None:
                self._recent(output.match.rule).add(1, clock)
            if self.echo is not None and source is not None:
                if output.match is not None:
                    self.echo.match(output.match, source, self.rules.rule(output.match.rule))
                if output.alert is not None:
                    self.echo.alert(output.alert, source)
        if self.pending_bytes >= MAX_PENDING_BYTES:
            self._room.clear()
        self.on_records()

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
