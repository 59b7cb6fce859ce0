"""`logwarden explain`: every rule's verdict on each line given, and why, from the daemon's rules.

The answer to "why didn't my rule match". Lines go through what a file's lines go through: a
`LineFramer` with the source's `max_line_bytes` (a long line is cut, a final `\\r` dropped), or
the source's `multiline` event framer (a pasted stack trace is one event, explained whole), then
`SourceMatcher.explain`, whose verdict is `scan`'s own on that line; nothing here matches a
pattern. The matches then go through the daemon's own `MatchProcessor` (ignore lists, event
time, thresholds, suppression) over the lines in the order given, so a pasted burst shows the
line that would raise the alert, counted by the times the lines carry.

A rule's verdict is a list of steps in the order the daemon takes them (source, prefilter, match,
exclude, carry, ignore, threshold; a rule on parsed fields adds `fields` after the prefilter:
whether the line parsed and which `where` condition failed); the line's event time and where it
came from head the verdicts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import orjson
from rich.console import Console
from rich.text import Text

from logwarden.config import Config, RuleConfig, key_captures
from logwarden.correlate import Carried
from logwarden.eventtime import rfc3339
from logwarden.framing import Block
from logwarden.log import get_logger
from logwarden.multiline import make_framer
from logwarden.origin import SourceRef
from logwarden.records import RecordBuilder
from logwarden.rules import CompiledRule, LineTrace, Match, RuleSet, RuleTrace
from logwarden.scan import DEFAULT_MAX_LINE_BYTES, STDIN
from logwarden.stages import MatchProcessor
from logwarden.terminal import visible
from logwarden.thresholds import key_text

log = get_logger(__name__)

Verdict = Literal[
    "matched", "ignored", "vetoed", "near-miss", "timed-out", "no-match", "not-for-source"
]
_NEAR = ("ignored", "vetoed", "near-miss", "timed-out")  # shown on a terminal without --all
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Step:
    """One check of a rule on a line, and what it said: True passed, False stopped the line there,
    None not consulted on this line's path."""

    name: str  # "source", "prefilter", "fields", "match", "exclude", "carry", "ignore", "threshold"
    ok: bool | None
    detail: str


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    rule: str
    severity: str
    verdict: Verdict
    steps: tuple[Step, ...]
    trace: RuleTrace | None  # None: the rule does not apply to the source
    threshold: dict[str, Any] | None  # the key's window after this line, for a rule with one
    would_match: bool = False  # not for this source, but it matches the line where it applies
    feeds: str | None = None  # records = false: what its matches feed instead of a record

    @property
    def near(self) -> bool:
        """Worth showing without --all: it came close, or it matches but not in this source."""
        return self.verdict in _NEAR or self.would_match

    def as_json(self) -> dict[str, Any]:
        trace = self.trace
        return {
            "rule": self.rule,
            "severity": self.severity,
            "verdict": self.verdict,
            "applies": trace is not None,
            "would_match": self.would_match,
            "records": self.feeds is None,
            "prefilter": trace.prefilter if trace else None,
            "patterns": list(trace.patterns) if trace else [],
            "excludes": list(trace.excludes) if trace else [],
            "captures": trace.captures if trace else None,
            "fields": None if trace is None or trace.fields is None else trace.fields[1],
            "threshold": self.threshold,
            "steps": [{"step": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps],
        }


@dataclass(frozen=True, slots=True)
class LineVerdict:
    """Every rule's verdict on one line; `number` counts the lines given, from 1."""

    number: int
    source: str | None
    trace: LineTrace
    notes: tuple[str, ...]  # how the line itself was treated (cut, invalid UTF-8, CR)
    rules: tuple[RuleVerdict, ...]  # in config order
    event_time: str  # RFC 3339 UTC, as a record of this line would carry it
    time_source: str  # "log" or "arrival" (no time found, or one out of bounds)

    @property
    def matched(self) -> list[str]:
        return [v.rule for v in self.rules if v.verdict == "matched"]

    def as_json(self) -> dict[str, Any]:
        return {
            "line_no": self.number,
            "line": self.trace.line,
            "source": self.source,
            "truncated": self.trace.truncated,
            "valid_utf8": self.trace.valid_utf8,
            "event_time": self.event_time,
            "time_source": self.time_source,
            "prefilter": self.trace.prefilter,
            "notes": list(self.notes),
            "matched": self.matched,
            "rules": [verdict.as_json() for verdict in self.rules],
        }


class Explainer:
    """Explains lines one after another for one source (None: every rule, as `scan` does for a
    file of no source); threshold windows carry over from line to line."""

    def __init__(self, config: Config, rules: RuleSet, source: str | None) -> None:
        self.rules = rules
        self.source = source
        self.matcher = rules.for_source(source)
        # rules scoped to other sources: does their pattern match? (the top "why not" answer)
        self.everywhere = rules.for_source(None) if source is not None else None
        self.max_line_bytes = (
            config.sources[source].max_line_bytes if source else DEFAULT_MAX_LINE_BYTES
        )
        # a multiline source frames what is given into events: a pasted stack trace is one
        self.multiline = config.sources[source].multiline if source else None
        # the daemon's own stages: ignore, event time, thresholds, over the lines in order
        self.processor = MatchProcessor(rules, config.sources, RecordBuilder(host="explain"))
        self.origin = SourceRef(source, "<explain>", 0, 0)
        self.count = 0
        # rules some `carry` names in `from`: a `records = false` rule's matches go there
        self.fed = {
            name
            for rule_name in rules.rules
            if (carry := rules.rule(rule_name).config.carry) is not None
            for name in carry.from_
        }

    def explain(self, inputs: Iterable[str]) -> Iterator[LineVerdict]:
        """Each LINE argument is one line of a file; `-` is standard input, read as a file."""
        for item in inputs:
            framer = make_framer(self.max_line_bytes, self.multiline)
            if item == STDIN:
                with os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0) as stream:
                    while chunk := stream.read(_READ_CHUNK):
                        yield from self._blocks(framer.feed(chunk))
                yield from self._blocks(framer.flush())
            else:
                # the bytes as given: argv decoding keeps invalid UTF-8 as surrogate escapes
                yield from self._blocks(framer.feed(os.fsencode(item) + b"\n"))
                yield from self._blocks(framer.flush())

    def _blocks(self, blocks: list[Block]) -> Iterator[LineVerdict]:
        for block in blocks:
            for line in _one_line_each(block):
                self.count += 1
                yield self._line(line)

    def _line(self, block: Block) -> LineVerdict:
        trace = self.matcher.explain(block)
        traces = {t.rule: t for t in trace.rules}
        elsewhere = {}
        if self.everywhere is not None and len(traces) < len(self.rules.rules):
            elsewhere = {t.rule: t for t in self.everywhere.explain(block).rules}
        # the time a record of this line would carry (read for every line here, not only matches)
        probe = Match("", "", "", block.offset, None, trace.line, trace.truncated, {})
        clock = self.processor.clocks.for_source(self.source)
        event_time, time_source = clock.read(probe, self.origin)
        correlator = self.processor.correlator
        carried = {  # what `carry` lends each match, seen before `process` remembers this line
            match.rule: correlator.preview(
                match, self.origin.name, self.origin.stream(match), event_time
            )
            for match in trace.matches
            if match.rule in correlator.rules
        }
        outputs = self.processor.process(list(trace.matches), self.origin)
        alerts = {output.alert.rule for output in outputs if output.alert is not None}
        verdicts = []
        for name in self.rules.rules:
            rule = self.rules.rule(name)
            verdict = self._verdict(
                rule, traces.get(name), event_time, name in alerts, carried.get(name),
                event=block.event,
            )  # fmt: skip
            other = elsewhere.get(name)
            if verdict.trace is None and other is not None and other.captures is not None:
                verdict = _matches_elsewhere(verdict)
            verdicts.append(verdict)
        return LineVerdict(
            self.count,
            self.source,
            trace,
            _notes(block, trace, self.max_line_bytes),
            tuple(verdicts),
            rfc3339(event_time),
            time_source,
        )

    def _verdict(
        self,
        rule: CompiledRule,
        trace: RuleTrace | None,
        now: float,
        alerted_now: bool,
        carry: tuple[Match, Carried | None] | None,
        *,
        event: bool,
    ) -> RuleVerdict:
        steps = list(_steps(rule, trace, self.source, event))
        window = None
        verdict = _classify(trace)
        if trace is not None and trace.captures is not None:
            captures = trace.captures
            if carry is not None and rule.config.carry is not None:
                captures = carry[0].captures
                steps.append(_carry_step(rule.config, carry[1], captures))
            ignore = self._ignore(rule, captures)
            if ignore is not None:
                steps.append(ignore)
                if ignore.ok is False:
                    verdict = "ignored"
            if rule.config.threshold and verdict == "matched":
                window, step = self._threshold(rule, captures, now, alerted_now)
                steps.append(step)
        feeds = None
        if not rule.config.records:
            uses = [
                *(["carry"] if rule.name in self.fed else []),
                *(["its threshold"] if rule.config.threshold else []),
            ]
            feeds = f"feeds {' and '.join(uses)} only; no record"
        return RuleVerdict(
            rule.name, rule.severity, verdict, tuple(steps), trace, window, feeds=feeds
        )

    def _ignore(self, rule: CompiledRule, captures: dict[str, str | None]) -> Step | None:
        """The rule's allow list on this match: a veto, or why not."""
        ignore = self.processor.ignores.get(rule.name)
        if ignore is None:
            return None
        value = captures.get(ignore.capture)
        network = ignore.covers(captures)
        if network is not None:
            return Step(
                "ignore", False, f"dropped: {ignore.capture}={visible(str(value))} is in {network}"
            )
        nets = len(ignore.networks)
        return Step(
            "ignore",
            True,
            f"{ignore.capture}={visible(str(value))} is in none of its {nets} networks",
        )

    def _threshold(
        self, rule: CompiledRule, captures: dict[str, str | None], now: float, alert: bool
    ) -> tuple[dict[str, Any] | None, Step]:
        """Where the match's key stands in its window, counted as the daemon counts it."""
        threshold = rule.config.threshold
        assert threshold is not None
        need, within = threshold.count, threshold.within
        standing = self.processor.thresholds.standing(rule.name, captures, now)
        if standing is None:
            missing = [k for k in threshold.key if captures.get(k.split("/")[0]) is None]
            return None, Step(
                "threshold", None, f"not counted: capture {', '.join(missing)} took no part"
            )
        shown = visible(key_text(standing.key))
        detail = f"{standing.counted} of {need} within {_duration(within)} for {shown}"
        if alert:
            detail += ": this line crosses it, ALERT"
        elif standing.alerted:
            detail += ": alerted already (again once its window has emptied)"
        window = {
            "key": standing.key,
            "count": standing.counted,
            "of": need,
            "within_s": within,
            "alert": alert,
            "alerted_before": standing.alerted and not alert,
        }
        return window, Step("threshold", True, detail)


def _carry_step(
    config: RuleConfig, carried: Carried | None, captures: dict[str, str | None]
) -> Step:
    """What the rule's `carry` lent this match, or why nothing."""
    assert config.carry is not None
    key = " ".join(f"{k}={visible(str(captures.get(k)))}" for k in key_captures(config.carry.key))
    if carried is not None:
        lent = " ".join(f"{name}={visible(str(captures[name]))}" for name in carried.captures)
        return Step("carry", True, f"{lent} from {carried.rule} ({key})")
    wanted = ", ".join(config.carry.captures)
    if all(captures.get(name) is not None for name in config.carry.captures):
        return Step("carry", None, f"the line has {wanted} itself")
    within = _duration(config.carry.within)
    sources = ", ".join(config.carry.from_)
    return Step(
        "carry", None, f"nothing to carry: no match of {sources} with {key} within {within}"
    )


def _matches_elsewhere(verdict: RuleVerdict) -> RuleVerdict:
    steps = (
        *verdict.steps,
        Step("match", None, "its patterns match this line where the rule applies"),
    )
    return RuleVerdict(
        verdict.rule, verdict.severity, verdict.verdict, steps, None, None, would_match=True
    )


def _one_line_each(block: Block) -> Iterator[Block]:
    """A block cut into blocks of one line each, the `\\r` kept: the prefilter reads raw bytes.
    A multi-line event stays whole: it is one candidate line to the rules."""
    if block.truncated or block.event:
        yield block
        return
    data, start, line_no = block.data, 0, block.line_no
    while start < len(data):
        end = data.find(b"\n", start)
        stop = len(data) if end < 0 else end + 1
        yield Block(data[start:stop], block.offset + start, line_no)
        line_no = None if line_no is None else line_no + 1
        start = stop


def _steps(
    rule: CompiledRule, trace: RuleTrace | None, source: str | None, event: bool
) -> Iterator[Step]:
    """The checks before the threshold, in the daemon's order; each says what it saw."""
    config = rule.config
    if trace is None:
        scope = ", ".join(config.sources or ())
        yield Step("source", False, f"not for source {source} (only for: {scope})")
        return
    if source is None:
        yield Step("source", True, "no --source given: every rule applies")
    else:
        yield Step("source", True, "every source" if config.sources is None else f"for {source}")
    on_fields = config.where is not None or config.field is not None
    if on_fields and trace.prefilter is None:
        yield Step("prefilter", None, "nothing to look for in the raw line: every line is parsed")
    elif not rule.uses_re2:
        yield Step("prefilter", None, 'engine = "regex": not in the prefilter, runs on every line')
    elif trace.prefilter is None and event:
        yield Step("prefilter", None, "a multi-line event: its own search, not traced per rule")
    elif trace.prefilter is None:
        yield Step("prefilter", None, "not asked on this line (it is cut or not valid UTF-8)")
    elif trace.prefilter:
        yield Step("prefilter", True, "its patterns' prefilter hits the line")
    else:
        yield Step("prefilter", False, "no hit: none of its patterns can be in the line")
        if not trace.patterns:  # the daemon looks no further (were one found, it would show)
            return
    if trace.fields is not None:
        yield Step("fields", trace.fields[0], trace.fields[1])
        if not trace.fields[0]:
            return
    if not config.match:
        return  # `where` alone says what matches
    if trace.timed_out:
        yield Step("match", False, f"a search ran out of match_timeout ({config.match_timeout}s)")
        return
    if not trace.patterns:
        detail = f"no match pattern found ({_patterns(config, 'match')})"
        if trace.prefilter:
            detail += (
                "; the prefilter reads the raw bytes (a CRLF line's \\r too) and may hit"
                " lines the patterns do not match"
            )
        yield Step("match", False, detail)
        return
    which = trace.patterns[0]
    found = f"match[{which}] '{visible(config.match[which])}'"
    if trace.captures:
        found += ": " + " ".join(f"{k}={visible(str(v))}" for k, v in trace.captures.items())
    yield Step("match", True, found)
    if trace.excludes:
        index = trace.excludes[0]
        yield Step(
            "exclude", False, f"vetoed by exclude[{index}] '{visible(config.exclude[index])}'"
        )
    elif config.exclude:
        yield Step("exclude", True, f"no exclude found ({_patterns(config, 'exclude')})")


def _patterns(config: RuleConfig, which: Literal["match", "exclude"]) -> str:
    patterns = config.match if which == "match" else config.exclude
    return f"{len(patterns)} pattern{'s' if len(patterns) != 1 else ''}"


def _classify(trace: RuleTrace | None) -> Verdict:
    if trace is None:
        return "not-for-source"
    if trace.captures is not None:
        return "matched"
    if trace.fields is not None and not trace.fields[0]:
        return "near-miss" if trace.patterns else "no-match"  # its patterns hit, `where` failed
    if trace.timed_out:
        return "timed-out"
    if trace.patterns and trace.excludes:
        return "vetoed"
    if trace.prefilter:
        return "near-miss"  # the prefilter hit and no pattern matched
    return "no-match"


def _notes(block: Block, trace: LineTrace, max_line_bytes: int) -> tuple[str, ...]:
    notes = []
    if block.event:
        notes.append(
            f"a multi-line event of {block.line_count} lines (the source's multiline): matched"
            " as one line, ^ and $ at its start and end"
            + ("; cut at max_lines/max_bytes or a long line" if trace.truncated else "")
        )
    elif trace.truncated:
        notes.append(
            f"longer than max_line_bytes ({max_line_bytes}): cut there, the rest skipped;"
            " the record says truncated = true; the prefilter is not asked"
        )
    if not trace.valid_utf8:
        notes.append(
            "not valid UTF-8: bad bytes read as U+FFFD (the record's line shows them so);"
            " the prefilter is not asked, every rule confirms the line"
        )
    if block.data.endswith(b"\r\n") or (block.data.endswith(b"\r") and not block.truncated):
        notes.append("a final \\r dropped (CRLF line end), as in a file")
    if trace.prefilter is False:
        if any(rule.prefilter is None for rule in trace.rules):  # engine = "regex" rules
            notes.append("the prefilter has no hit: no RE2 rule can match, only regex rules look")
        else:
            notes.append(
                "the prefilter has no hit: no RE2 rule can match, the daemon skips the line"
            )
    return tuple(notes)


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- output

_TIME_SOURCES = {
    "log": "from the line",
    "journal": "the journal entry's",
    "arrival": "arrival: no time found in the line, or one out of bounds",
}
_MARKS: dict[Verdict, tuple[str, str]] = {
    "matched": ("✔", "bold green"),
    "ignored": ("✘", "yellow"),
    "vetoed": ("✘", "yellow"),
    "near-miss": ("~", "yellow"),
    "timed-out": ("!", "red"),
    "no-match": ("·", "dim"),
    "not-for-source": ("-", "dim"),
}


def print_json(verdict: LineVerdict, out: BinaryIO) -> None:
    out.write(orjson.dumps(verdict.as_json(), option=orjson.OPT_APPEND_NEWLINE))
    out.flush()


def print_text(verdict: LineVerdict, console: Console, show_all: bool) -> None:
    """A block per line: its matches, then its near misses, then how many did not match."""
    trace = verdict.trace
    head = Text(f"line {verdict.number}: ", style="bold")
    head.append(visible(trace.line))
    console.print(head)
    console.print(Text(f"  event time {verdict.event_time} ({_TIME_SOURCES[verdict.time_source]})"))
    for note in verdict.notes:
        console.print(Text(f"  {note}", style="italic"))
    quiet = []
    for rule in verdict.rules:
        if rule.verdict == "matched" or rule.near or show_all:
            console.print(_rule_text(rule))
        else:
            quiet.append(rule)
    if quiet:
        others = sum(r.verdict == "not-for-source" for r in quiet)
        summary = f"  {_rules(len(quiet) - others)} did not match"
        if others:
            summary += f"; {_rules(others)} not for source {verdict.source}"
        console.print(Text(f"{summary} (--all lists them)", style="dim"))
    console.print()


def _rules(count: int) -> str:
    return f"{count} rule{'s' if count != 1 else ''}"


def _rule_text(rule: RuleVerdict) -> Text:
    mark, style = _MARKS[rule.verdict]
    text = Text(f"  {mark} ", style=style)
    text.append(rule.rule, style=style if rule.verdict != "matched" else "bold")
    text.append(f" [{rule.severity}] {rule.verdict}", style="dim")
    if rule.feeds is not None and rule.verdict == "matched":
        text.append(f" ({rule.feeds})", style="dim")
    for step in rule.steps:
        if step.ok is True and (step.name == "source" or rule.verdict == "no-match"):
            continue  # a miss shows where it stopped, not what it passed on the way
        colour = {True: "green", False: "red", None: "dim"}[step.ok]
        text.append(f"\n      {step.name}: ", style=colour)
        text.append(step.detail)
    return text


def text_console() -> Console:
    """Colours on a terminal only; lines never wrapped into the output (soft wrap), no guessing
    at what to highlight in log text."""
    return Console(soft_wrap=True, highlight=False, emoji=False, markup=False)
