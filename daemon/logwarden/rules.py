"""The compiled rule set: which lines of a block match which rules, with no Python per quiet line.

Most lines match nothing, so a block is searched whole: one RE2 regex, the *prefilter*, is the
alternation of every RE2 rule's patterns (rewritten for raw bytes by `patterns.prefilter_form`)
and runs over the block's bytes at grep speed. Only the lines it hits are cut out, decoded and
*confirmed*: an `re2.Set` of every match and exclude pattern says in one pass which rules the line
really satisfies, and only those run their capturing pattern. The prefilter may hit lines that no
rule matches (it ignores excludes, and its `$` allows for a `\\r`), never the other way round: the
per-line confirmation is the one definition of a match, and rule tests run through it.

Measured on 50 MB of sshd/nginx/app lines (5 rules, 3.6% of lines matching): about 200 MB/s
against 420 MB/s for `grep -cE` and 430 MB/s for the prefilter alone; each hit costs ~7 µs of
confirmation (Set, capturing search, Match), so with rarer matches this runs at grep speed.
Rejected: a Python loop over lines (87 MB/s there, and its cost follows the line count, not the
match count); `re2.Set` over the whole block (it says which patterns match, not where).
Hyperscan, when installed, replaces the prefilter for sources whose patterns it reads as RE2
does (accelerate.py): it names the pattern it found, so the Set is not asked (issue 14).

Two things cost Python per line. Lines that are not valid UTF-8 are confirmed one by one (RE2 in
UTF-8 mode does not match an invalid byte where the decoded text has U+FFFD); the rest of their
block still takes the fast path. Rules with `engine = "regex"` cannot be in an RE2 prefilter: they
run a `regex` search on every line of their sources, each bounded by match_timeout, while the RE2
rules beside them keep using the prefilter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import re2

from logwarden.accelerate import HyperscanPrefilter
from logwarden.config import (
    Config,
    ParseFormat,
    RuleConfig,
    RuleTest,
    default_config_path,
    key_captures,
    load,
)
from logwarden.correlate import check_carries
from logwarden.framing import Block, split_lines
from logwarden.log import get_logger
from logwarden.patterns import (
    PatternError,
    SpanSearch,
    capture_names,
    compile_pattern,
    expand,
    prefilter_form,
    re2_error_message,
    re2_options,
    set_search,
    span_search,
)
from logwarden.problems import ProblemSink

log = get_logger(__name__)

# An re2.Set cannot fall back to the NFA when its DFA runs out of memory: it reports no match.
# Lines longer than this are confirmed pattern by pattern instead (still RE2, still linear).
_SET_MAX_LINE = 8192


@dataclass(slots=True)
class Match:
    """One rule matching one line: what the report record is built from. Not mutated once made;
    not `frozen` because a frozen dataclass's __init__ costs 1 µs more per match (issue 14)."""

    rule: str
    severity: str
    report: str
    offset: int  # byte offset of the line start in the file
    line_no: int | None
    line: str  # decoded line text (what rules matched), without newline/\r
    truncated: bool
    captures: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its patterns expanded and compiled, ready to confirm one line."""

    config: RuleConfig
    name: str
    severity: str
    report: str
    uses_re2: bool  # False: engine = "regex", run on every line
    match: tuple[str, ...]  # expanded patterns, as matched against a line
    exclude: tuple[str, ...]
    matchers: tuple[Any, ...]  # re2 or regex compiled, like `match`
    excluders: tuple[Any, ...]
    searches: tuple[SpanSearch, ...]  # for RE2 rules: direct span searches, like `matchers`
    groups: tuple[tuple[tuple[str, int], ...], ...]  # per match pattern: (name, group index)

    def span(self, text: str) -> tuple[int, int] | None:
        """Where the rule's first matching pattern is in a line it matched (characters), for the
        foreground console to highlight; None if none is (or a `regex` search timed out)."""
        for matcher in self.matchers:
            try:
                found = (
                    matcher.search(text)
                    if self.uses_re2
                    else matcher.search(text, timeout=self.config.match_timeout)
                )
            except TimeoutError:
                return None
            if found is not None:
                start, end = found.span()
                return start, end
        return None

    def same_definition(self, other: CompiledRule) -> bool:
        """Whether `other` is this rule unchanged, for a reload to keep its threshold window.

        Everything the rule is made of counts (patterns, sources, engine, threshold, severity, the
        report it resolves to) except its `tests`: samples checked at load time change nothing
        about what the rule matches, and editing one should not make its alerts repeat.
        """
        return self.report == other.report and self.config.model_dump(
            exclude={"tests"}
        ) == other.config.model_dump(exclude={"tests"})


@dataclass(frozen=True, slots=True)
class RuleChanges:
    """How a reloaded rule set differs from the running one, by rule name (config order)."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """Why one rule did or did not match one line (`SourceMatcher.explain`), pattern by pattern."""

    rule: str
    prefilter: bool | None  # this rule's part of the prefilter hit the line; None: not consulted
    patterns: tuple[int, ...]  # indices of the `match` patterns found in the line
    excludes: tuple[int, ...]  # indices of the `exclude` patterns found in the line
    timed_out: bool  # engine = "regex": a search ran out of match_timeout
    captures: dict[str, str | None] | None  # the verdict of `scan`: None unless it matched
    fields: tuple[bool, str] | None = None  # rules on parsed fields: did they qualify, and why


@dataclass(frozen=True, slots=True)
class LineTrace:
    """One line as the matcher saw it and every rule's trace (`SourceMatcher.explain`)."""

    line: str  # the text the rules saw (invalid UTF-8 replaced, a final \r dropped, cut if long)
    truncated: bool
    valid_utf8: bool
    prefilter: bool | None  # the combined prefilter hit the line; None: this path does not ask it
    matches: tuple[Match, ...]  # exactly what `scan` gives for the line
    rules: tuple[RuleTrace, ...]  # every rule of this matcher, in rule order


@dataclass(slots=True)
class _Counters:
    """Mutable run statistics shared by a rule set's matchers."""

    timeouts: dict[str, int] = field(default_factory=dict)

    def timed_out(self, rule: str) -> None:
        count = self.timeouts.get(rule, 0) + 1
        self.timeouts[rule] = count
        if count & (count - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
            log.warning("rule_match_timeout", rule=rule, timeouts=count)


# ---------------------------------------------------------------- one source's matcher


class SourceMatcher:
    """The rules that apply to one source, compiled into one prefilter and one Set."""

    def __init__(self, rules: Sequence[CompiledRule], counters: _Counters) -> None:
        self._rules = tuple(rules)
        self._counters = counters
        self._every_line = any(not rule.uses_re2 for rule in rules)
        self._regex_rules = frozenset(i for i, rule in enumerate(rules) if not rule.uses_re2)
        # Set index → position of the rule it belongs to; per rule, its match and exclude indices
        self._owner: list[int] = []
        self._ids: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        patterns: list[str] = []
        for position, rule in enumerate(rules):
            first = len(patterns)
            if rule.uses_re2:
                patterns += rule.match + rule.exclude
            middle = first + len(rule.match) if rule.uses_re2 else first
            self._ids.append((tuple(range(first, middle)), tuple(range(middle, len(patterns)))))
            self._owner += [position] * (len(patterns) - first)
        # Set index → (rule, its capturing search, its groups) when the index is a match pattern
        # of a rule without excludes: a line the Set finds that one pattern in needs nothing else
        self._alone: list[tuple[CompiledRule, SpanSearch, tuple[tuple[str, int], ...]] | None] = []
        for rule in rules:
            if rule.uses_re2:
                for search, groups in zip(rule.searches, rule.groups, strict=True):
                    self._alone.append(None if rule.exclude else (rule, search, groups))
                self._alone += [None] * len(rule.exclude)
        self._prefilter: SpanSearch | None = None
        self._event_prefilter: SpanSearch | None = None  # `_scan_event`'s, compiled on first use
        self._alternatives = [prefilter_form(p) for r in rules if r.uses_re2 for p in r.match]
        self._set: Any = None
        self._explain_prefilters: dict[int, SpanSearch] = {}  # filled by `explain` only
        if patterns:
            # No global (?m): the rewrite already scopes `m` to each anchor it emits.
            combined = re2.compile("|".join(self._alternatives), re2_options(combined=True))
            self._prefilter = span_search(combined)
        # the optional accelerator, given each match pattern with its Set index to report it by
        numbered = [(index, patterns[index]) for matches, _ in self._ids for index in matches]
        self._hyperscan = None if self._every_line else HyperscanPrefilter.build(numbered)
        if len(patterns) > 1:
            self._set = re2.Set.SearchSet(re2_options(combined=True))
            for pattern in patterns:
                self._set.Add(pattern)
            self._set.Compile()

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self._rules)

    @property
    def counts_nothing(self) -> bool:
        """Whether `scan` leaves no trace but its result (RE2 rules only: a `regex` rule counts
        its timeouts), so that a forked worker may run it (`lookahead.py`)."""
        return all(rule.uses_re2 for rule in self._rules)

    def scan(self, block: Block) -> list[Match]:
        """Every match in a block: by line, and by rule order within a line."""
        out: list[Match] = []
        if not self._rules or not block.data:
            pass
        elif block.event:  # one multi-line event, matched whole
            self._scan_event(block, out)
        elif block.truncated:  # one cut line, taken as split_lines gives it (a final CR dropped)
            self._scan_slowly(block, out, truncated=True)
        elif self._every_line:
            self._scan_every_line(block, out)
        else:
            line_no = block.line_no
            for lo, hi, valid in _utf8_runs(block.data):
                if valid and lo == 0 and hi == len(block.data):
                    self._scan_run(
                        block, lo, hi, line_no, out
                    )  # the common case: nothing to count on
                    break
                if valid:
                    self._scan_run(block, lo, hi, line_no, out)
                else:
                    part = Block(block.data[lo:hi], block.offset + lo, line_no)
                    self._scan_slowly(part, out, truncated=False)
                if line_no is not None:
                    line_no += block.data.count(b"\n", lo, hi)
        return out

    def _scan_event(self, block: Block, out: list[Match]) -> None:
        """A multi-line event (`multiline.py`) is one candidate line: its whole text, lines joined
        by `\\n`, so `^` and `$` are the event's start and end (`(?m)` makes them per line).

        The combined prefilter and Set are compiled with `never_nl`: they cannot see a match
        that spans lines (`\\s`, `[^x]`, `\\n`). Events take a prefilter compiled without it,
        still a superset of the rules (its `(?m:^)` holds at every line start), and confirm rule
        by rule rather than through the Set.
        """
        line = block.data
        if not line.isascii():
            try:
                line.decode()
            except UnicodeDecodeError:
                line = line.decode("utf-8", "replace").encode()
        if self._event_prefilter is None and self._alternatives:
            options = re2_options(combined=True)
            options.never_nl = False
            compiled = re2.compile("|".join(self._alternatives), options)
            self._event_prefilter = span_search(compiled)
        search = self._event_prefilter
        candidate = search is not None and search(line, 0, len(line))[0][0] >= 0
        self._confirm(
            line, None, candidate, out, offset=block.offset, line_no=block.line_no,
            truncated=block.truncated, whole=True,
        )  # fmt: skip

    def explain(self, block: Block) -> LineTrace:
        """Every rule's trace on a block of exactly one line, for `logwarden explain`.

        The verdict is `scan`'s own, run on the block; the rest says why, from the same compiled
        prefilter, Set members and searches, in the order the hot path consults them. Nothing here
        runs on the daemon's path: a rule's own slice of the prefilter is compiled on first use.
        """
        matches = tuple(self.scan(block))
        raw = block.data if block.event else next(split_lines(block))[2]
        try:
            text = raw.decode()
            valid = True
        except UnicodeDecodeError:
            text, valid = raw.decode("utf-8", "replace"), False
        line = text.encode()
        # truncated and invalid lines take the slow path, where RE2 rules confirm without asking
        # (a multi-line event's own prefilter is not traced rule by rule: shown as not consulted)
        asked = self._prefilter is not None and valid and not block.truncated and not block.event
        hit = asked and any(True for _ in self._candidates(block.data, 0, len(block.data)))
        found = {match.rule: match.captures for match in matches}
        traces = []
        for position, rule in enumerate(self._rules):
            prefilter = None
            if asked and rule.uses_re2:
                prefilter = (
                    self._rule_prefilter(position)(block.data, 0, len(block.data))[0][0] >= 0
                )
            try:
                patterns, excludes = _found_patterns(rule, line, text)
                timed_out = False
            except TimeoutError:
                patterns, excludes, timed_out = (), (), True
            traces.append(
                RuleTrace(rule.name, prefilter, patterns, excludes, timed_out, found.get(rule.name))
            )
        return LineTrace(
            text, block.truncated, valid, hit if asked else None, matches, tuple(traces)
        )

    def _rule_prefilter(self, position: int) -> SpanSearch:
        """One rule's alternatives of the combined prefilter, compiled alone (explain only)."""
        search = self._explain_prefilters.get(position)
        if search is None:
            rule = self._rules[position]
            alternatives = "|".join(prefilter_form(p) for p in rule.match)
            search = span_search(re2.compile(alternatives, re2_options(combined=True)))
            self._explain_prefilters[position] = search
        return search

    def _candidates(self, data: bytes, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """(start, end) of each line in data[lo:hi] the prefilter hits; end excludes the newline.

        After a hit the search resumes at the next line, never at the hit's end: one hit per line
        is all a line needs, and it keeps every search starting at a line start.
        """
        search = self._prefilter
        assert search is not None
        pos = lo
        while pos < hi:
            start = search(data, pos, hi)[0][0]
            if start < 0 or start >= hi:
                return
            newline = data.rfind(b"\n", pos, start)
            line_start = pos if newline < 0 else newline + 1
            line_end = data.find(b"\n", start, hi)
            if line_end < 0:
                yield line_start, hi
                return
            yield line_start, line_end
            pos = line_end + 1

    def _scan_run(
        self, block: Block, lo: int, hi: int, line_no: int | None, out: list[Match]
    ) -> None:
        """The fast path, over a run of whole lines of valid UTF-8.

        The prefilter's candidate lines, and `_confirm` inlined for the common case: a line in
        which one pattern of a rule without excludes is found goes straight to that pattern's
        capturing search. RE2's prefilter names no pattern, so the Set is asked which; Hyperscan's
        names every pattern whose match ends in the line (perhaps one that only started on an
        earlier line: its search says so). Per match this was most of scan's time (issue 14).
        """
        data, base = block.data, block.offset
        alone, accelerated = self._alone, self._hyperscan
        in_set = set_search(self._set) if self._set is not None else None
        confirm, append = self._confirm, out.append
        candidates: Iterable[tuple[int, int, list[int] | None]] = (
            accelerated.lines(data, lo, hi)
            if accelerated is not None
            else ((start, end, None) for start, end in self._candidates(data, lo, hi))
        )
        counted = lo
        for line_start, line_end, named in candidates:
            if line_no is not None:
                line_no += data.count(b"\n", counted, line_start)
                counted = line_start
            line = data[line_start:line_end]
            if line.endswith(b"\r"):
                line = line[:-1]
            hits = named
            if hits is None:
                if in_set is None or len(line) > _SET_MAX_LINE:
                    confirm(line, None, True, out, offset=base + line_start, line_no=line_no)
                    continue
                hits = in_set(line)
                if not hits:
                    continue  # a prefilter false positive: the common miss
            one = alone[hits[0]] if len(hits) == 1 else None
            if one is None:  # several patterns, or excludes to consult: the full confirmation
                asked = hits if named is None else None  # only the Set's answer is exact
                confirm(
                    line, None, True, out, offset=base + line_start, line_no=line_no, hits=asked
                )
                continue
            rule, capture, groups = one
            spans = capture(line, 0, len(line))
            if spans[0][0] < 0:
                continue  # Hyperscan's guess; never after the Set, which said it matches
            captures: dict[str, str | None] = {}
            for name, index in groups:
                begin, end = spans[index]
                captures[name] = None if begin < 0 else line[begin:end].decode()
            append(
                Match(
                    rule.name,
                    rule.severity,
                    rule.report,
                    base + line_start,
                    line_no,
                    line.decode(),
                    False,
                    captures,
                )
            )

    def _scan_slowly(self, block: Block, out: list[Match], *, truncated: bool) -> None:
        """Line by line, decoded with replacement: for what the prefilter cannot see exactly."""
        for offset, line_no, raw in split_lines(block):
            text = raw.decode("utf-8", "replace")
            self._confirm(
                text.encode(), text, True, out, offset=offset, line_no=line_no, truncated=truncated
            )

    def _scan_every_line(self, block: Block, out: list[Match]) -> None:
        """With `regex` rules every line is visited; RE2 rules still only look at prefilter hits."""
        hits: set[int] = set()
        if self._prefilter is not None:
            hits = {start for start, _ in self._candidates(block.data, 0, len(block.data))}
        for offset, line_no, raw in split_lines(block):
            try:
                text = raw.decode()
                line, candidate = raw, (offset - block.offset) in hits
            except UnicodeDecodeError:  # the prefilter may have missed it: RE2 rules must look
                text = raw.decode("utf-8", "replace")
                line, candidate = text.encode(), True
            self._confirm(line, text, candidate, out, offset=offset, line_no=line_no)

    def _confirm(
        self,
        line: bytes,
        text: str | None,
        candidate: bool,
        out: list[Match],
        *,
        offset: int,
        line_no: int | None,
        truncated: bool = False,
        whole: bool = False,
        hits: list[int] | None = None,
    ) -> None:
        """Run the rules on one line: `line` is its valid UTF-8, `text` the same decoded if known,
        `candidate` whether RE2 rules may match (False: the prefilter said no); `whole`: a
        multi-line event, which the Set (`never_nl`) cannot judge; `hits` the Set's answer for
        the line when the caller asked it already.

        This is the definition of a match: every path, and every rule test, ends here (`_scan_run`
        inlines its common case: one Set hit, on a rule without excludes).
        """
        found: set[int] | None = None  # the Set's answer; None: search each RE2 rule directly
        due: Iterable[int]  # positions of the rules worth running, in rule order
        if not candidate:
            due = sorted(self._regex_rules)
        elif self._set is not None and len(line) <= _SET_MAX_LINE and not whole:
            found = set((self._set.Match(line) if hits is None else hits) or ())
            if not found and not self._every_line:
                return  # a prefilter false positive: the common miss
            owner = self._owner
            due = sorted({owner[index] for index in found} | self._regex_rules)
        else:
            due = range(len(self._rules))
        for position in due:
            rule = self._rules[position]
            if rule.uses_re2:
                captures = _confirm_re2(rule, line, found, *self._ids[position])
            else:
                text = line.decode() if text is None else text
                captures = self._confirm_regex(rule, text)
            if captures is not None:
                text = line.decode() if text is None else text
                out.append(
                    Match(
                        rule.name,
                        rule.severity,
                        rule.report,
                        offset,
                        line_no,
                        text,
                        truncated,
                        captures,
                    )
                )

    def _confirm_regex(self, rule: CompiledRule, text: str) -> dict[str, str | None] | None:
        timeout = rule.config.match_timeout
        try:
            for matcher, groups in zip(rule.matchers, rule.groups, strict=True):
                found = matcher.search(text, timeout=timeout)
                if found is not None:
                    if any(ex.search(text, timeout=timeout) is not None for ex in rule.excluders):
                        return None
                    return {name: found.group(index) for name, index in groups}
        except TimeoutError:
            # A runaway pattern on a hostile line counts as no match: one line is not worth a
            # stalled daemon, and the counter makes it visible in logs and status.
            self._counters.timed_out(rule.name)
        return None


def _confirm_re2(
    rule: CompiledRule,
    line: bytes,
    hits: set[int] | None,
    match_ids: tuple[int, ...],
    exclude_ids: tuple[int, ...],
) -> dict[str, str | None] | None:
    """Captures of an RE2 rule on a line, or None; `hits` is the Set's answer, None to search."""
    if hits is not None:
        for which, index in enumerate(match_ids):
            if index in hits:
                if exclude_ids and not hits.isdisjoint(exclude_ids):
                    return None
                spans = rule.searches[which](line, 0, len(line))
                return _captures(line, spans, rule.groups[which])
        return None
    for search, groups in zip(rule.searches, rule.groups, strict=True):
        spans = search(line, 0, len(line))
        if spans[0][0] >= 0:
            if any(excluder.search(line) is not None for excluder in rule.excluders):
                return None
            return _captures(line, spans, groups)
    return None


def _found_patterns(
    rule: CompiledRule, line: bytes, text: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Which of a rule's match and exclude patterns occur in a line (explain: every one, not the
    first); a `regex` rule's searches keep their timeout, whose TimeoutError is the caller's."""
    if rule.uses_re2:
        return (
            tuple(i for i, find in enumerate(rule.searches) if find(line, 0, len(line))[0][0] >= 0),
            tuple(
                i for i, excluder in enumerate(rule.excluders) if excluder.search(line) is not None
            ),
        )
    timeout = rule.config.match_timeout
    return (
        tuple(
            i for i, m in enumerate(rule.matchers) if m.search(text, timeout=timeout) is not None
        ),
        tuple(
            i for i, m in enumerate(rule.excluders) if m.search(text, timeout=timeout) is not None
        ),
    )


def _captures(
    line: bytes, spans: list[tuple[int, int]], groups: tuple[tuple[str, int], ...]
) -> dict[str, str | None]:
    captures: dict[str, str | None] = {}
    for name, index in groups:
        start, end = spans[index]
        captures[name] = None if start < 0 else line[start:end].decode()
    return captures


def _utf8_runs(data: bytes) -> Iterator[tuple[int, int, bool]]:
    """Split a block into (start, end, valid) runs of whole lines; invalid runs are single lines.

    Each failed decode stops at the first bad byte and the next attempt starts after its line, so
    the whole block is decoded about once however many bad lines it has.
    """
    if data.isascii():
        yield 0, len(data), True
        return
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        try:
            str(view[pos:], "utf-8")
        except UnicodeDecodeError as error:
            bad = pos + error.start
            newline = data.rfind(b"\n", pos, bad)
            line_start = pos if newline < 0 else newline + 1
            line_end = data.find(b"\n", bad)
            stop = len(data) if line_end < 0 else line_end + 1
            if line_start > pos:
                yield pos, line_start, True
            yield line_start, stop, False
            pos = stop
        else:
            yield pos, len(data), True
            return


# ---------------------------------------------------------------- the rule set


class RuleSet:
    """Every rule of a config, compiled once; hands out a cached matcher per source."""

    def __init__(
        self, rules: Sequence[CompiledRule], parse: Mapping[str, ParseFormat] | None = None
    ) -> None:
        self._rules = tuple(rules)
        self._by_name = {rule.name: rule for rule in self._rules}
        self._counters = _Counters()
        self._parse = dict(parse or {})  # each source's `parse`, for rules on fields
        self._matchers: dict[str | None, SourceMatcher] = {}
        self._by_rules: dict[tuple[str, ...], SourceMatcher] = {}

    @classmethod
    def compile(cls, config: Config, sink: ProblemSink) -> RuleSet:
        """Compile and self-test every rule; every problem goes to `sink`, raised at the end."""
        compiled = [_compile_rule(config, rule, sink) for rule in config.rules.values()]
        parse = {name: source.parse for name, source in config.sources.items()}
        ruleset = cls([rule for rule in compiled if rule is not None], parse)
        try:
            everything = ruleset.for_source(None)
        except re2.error as error:  # each rule compiled alone, so only their sum can be too big
            sink.add(
                ("rules",),
                "the rules together are too large for one RE2 program"
                f" ({re2_error_message(error)})",
            )
        else:
            for rule in ruleset._rules:
                _run_tests(ruleset._test_matcher(rule, everything), rule, sink)
        check_carries(ruleset._rules, sink)
        sink.raise_if_any()
        return ruleset

    @property
    def rules(self) -> tuple[str, ...]:
        """Rule names, in config order."""
        return tuple(self._by_name)

    def rule(self, name: str) -> CompiledRule:
        return self._by_name[name]

    def changes_since(self, old: RuleSet) -> RuleChanges:
        """Which rules a reload from `old` to this set adds, changes, removes and leaves alone."""
        added, changed, unchanged = [], [], []
        for rule in self._rules:
            before = old._by_name.get(rule.name)
            if before is None:
                added.append(rule.name)
            elif before.same_definition(rule):
                unchanged.append(rule.name)
            else:
                changed.append(rule.name)
        removed = [name for name in old._by_name if name not in self._by_name]
        return RuleChanges(tuple(added), tuple(changed), tuple(removed), tuple(unchanged))

    def timeouts(self) -> dict[str, int]:
        """How many `regex` searches each rule lost to match_timeout (rules with none omitted)."""
        return dict(self._counters.timeouts)

    def only(self, names: Iterable[str]) -> RuleSet:
        """The same rules restricted to `names` (kept in config order), for `scan --rule`.

        The rules they `carry` from come along as feeders only (no records, no threshold), so
        that a rule's records are the same whether it is scanned alone or with the others.
        """
        wanted = set(names)
        if unknown := sorted(wanted - self._by_name.keys()):
            raise KeyError(
                f"no rule named {', '.join(map(repr, unknown))};"
                f" known rules: {', '.join(self._by_name)}"
            )
        feeders: set[str] = set()
        pending = list(wanted)
        while pending:
            carry = self._by_name[pending.pop()].config.carry
            for name in carry.from_ if carry else ():
                if name in self._by_name and name not in wanted | feeders:
                    feeders.add(name)
                    pending.append(name)
        return RuleSet(
            [
                rule if rule.name in wanted else _feeder_only(rule)
                for rule in self._rules
                if rule.name in wanted | feeders
            ],
            self._parse,
        )

    def for_source(self, source: str | None) -> SourceMatcher:
        """The matcher for one source's files (None: a file of no source, which gets every rule)."""
        matcher = self._matchers.get(source)
        if matcher is None:
            rules = [rule for rule in self._rules if _applies(rule, source)]
            parse = self._parse.get(source, "none") if source is not None else "none"
            key = (*(rule.name for rule in rules), f"parse={parse}")
            matcher = self._by_rules.get(key)
            if matcher is None:  # sources with the same rules share one compiled prefilter
                matcher = self._by_rules[key] = self._matcher(rules, parse)
            self._matchers[source] = matcher
        return matcher

    def _matcher(self, rules: list[CompiledRule], parse: ParseFormat) -> SourceMatcher:
        if any(rule.config.reads_fields for rule in rules):
            # `structured` extends this module's SourceMatcher, so it is imported once that exists
            from logwarden.structured import StructuredMatcher  # noqa: PLC0415

            return StructuredMatcher(rules, self._counters, parse)
        return SourceMatcher(rules, self._counters)

    def _test_matcher(self, rule: CompiledRule, everything: SourceMatcher) -> SourceMatcher:
        """Where a rule's tests run: `everything`, or for a rule on fields its first source that
        parses lines (the samples are parsed as that source parses them)."""
        if rule.config.reads_fields:
            for source, parse in self._parse.items():
                if parse != "none" and _applies(rule, source):
                    return self.for_source(source)
        return everything


def _feeder_only(rule: CompiledRule) -> CompiledRule:
    config = rule.config.model_copy(update={"records": False, "threshold": None, "suppress": None})
    return replace(rule, config=config)


def _applies(rule: CompiledRule, source: str | None) -> bool:
    return source is None or rule.config.sources is None or source in rule.config.sources


# ---------------------------------------------------------------- compiling


def _compile_rule(config: Config, rule: RuleConfig, sink: ProblemSink) -> CompiledRule | None:
    where = ("rules", rule.name)
    problems_before = len(sink.problems)
    match = _expand_all(rule.match, (*where, "match"), sink)
    exclude = _expand_all(rule.exclude, (*where, "exclude"), sink)
    matchers = _compile_all(rule.match, match, rule, (*where, "match"), sink)
    excluders = _compile_all(rule.exclude, exclude, rule, (*where, "exclude"), sink)
    groups = []
    for index, (pattern, matcher) in enumerate(zip(match, matchers, strict=True)):
        if pattern is None or matcher is None:
            continue
        numbers: Mapping[str, int] = matcher.groupindex
        groups.append(tuple((name, numbers[name]) for name in capture_names(pattern)))
        carried = rule.carry.captures if rule.carry else ()  # a match may take them from another
        for table, needed, purpose in _needed_captures(rule):
            if missing := [
                name
                for name in needed
                if name not in numbers and name not in rule.capture_fields and name not in carried
            ]:
                sink.add(
                    (*where, *table),
                    f"match[{index}] has no capture named {', '.join(map(repr, missing))}"
                    f" {purpose} (its captures: {', '.join(numbers) or 'none'})",
                )
    if len(sink.problems) > problems_before:
        return None
    return CompiledRule(
        config=rule,
        name=rule.name,
        severity=rule.severity,
        report=config.report_for(rule).name,
        uses_re2=rule.engine == "re2",
        match=tuple(p for p in match if p is not None),  # all of them: there were no problems
        exclude=tuple(p for p in exclude if p is not None),
        matchers=tuple(matchers),
        excluders=tuple(excluders),
        groups=tuple(groups),
        searches=tuple(span_search(m) for m in matchers) if rule.engine == "re2" else (),
    )


def _needed_captures(
    rule: RuleConfig,
) -> list[tuple[tuple[str, ...], tuple[str, ...], str]]:
    """The captures every match pattern must have: a threshold's or suppression's key, and the
    capture an ignore list looks at; each with the key path its problem is reported under."""
    needed: list[tuple[tuple[str, ...], tuple[str, ...], str]] = []
    if rule.threshold is not None:
        needed.append((("threshold", "key"), key_captures(rule.threshold.key), "to count by"))
    if rule.suppress is not None:
        needed.append((("suppress", "key"), key_captures(rule.suppress.key), "to fold by"))
    if rule.ignore is not None:
        needed.append((("ignore",), (rule.ignore.capture,), "for its ignore list to look at"))
    return needed


def _expand_all(
    patterns: tuple[str, ...], where: tuple[str, ...], sink: ProblemSink
) -> list[str | None]:
    """Each pattern expanded, None where it cannot be (the problem is in `sink`)."""
    expanded: list[str | None] = []
    for index, pattern in enumerate(patterns):
        try:
            expanded.append(expand(pattern))
        except PatternError as error:
            expanded.append(None)
            for problem in error.problems:
                sink.add((*where, index), problem)
    return expanded


def _compile_all(
    written: tuple[str, ...],
    expanded: list[str | None],
    rule: RuleConfig,
    where: tuple[str, ...],
    sink: ProblemSink,
) -> list[Any]:
    """Each expanded pattern compiled, None where it cannot be; problems quote it as written and
    carry the expansion as their detail (`check-config --verbose`)."""
    compiled: list[Any] = []
    for index, (source, pattern) in enumerate(zip(written, expanded, strict=True)):
        if pattern is None:
            compiled.append(None)
            continue
        try:
            compiled.append(compile_pattern(pattern, rule.engine, source))
        except PatternError as error:
            compiled.append(None)
            detail = None if error.expanded is None else f"expanded: {error.expanded}"
            for problem in error.problems:
                sink.add((*where, index), problem, detail)
    return compiled


# ---------------------------------------------------------------- rule tests


def _run_tests(matcher: SourceMatcher, rule: CompiledRule, sink: ProblemSink) -> None:
    """Each sample goes through `scan`, the path real blocks take, and must come out as expected."""
    for index, test in enumerate(rule.config.tests):
        where = ("rules", rule.name, "tests", index)
        if "\n" in test.line:
            sink.add(where, "a test line is one line: it cannot contain a newline")
            continue
        block = Block(test.line.encode() + b"\n", 0, 1)
        found = [match for match in matcher.scan(block) if match.rule == rule.name]
        on_fields = rule.config.where is not None or rule.config.field is not None
        if not found and test.expect is not False and on_fields:  # say which field failed
            trace = next(t for t in matcher.explain(block).rules if t.rule == rule.name)
            if trace.fields is not None and not trace.fields[0]:
                sink.add(where, f"expected a match, but {trace.fields[1]}")
                continue
        if problem := _judge(test, found[0].captures if found else None, rule):
            sink.add(where, problem)


def _judge(
    test: RuleTest, captures: dict[str, str | None] | None, rule: CompiledRule
) -> str | None:
    """What is wrong with a sample's outcome, or None when it is what the test expects."""
    if test.expect is False:
        if captures is None:
            return None
        return f"expected no match, but it matched with captures {captures}"
    if captures is None:
        why = _why_not(test.line, rule)
        return f"expected a match with {test.expect}, but the line did not match{why}"
    wrong = [
        f"{key} = {captures[key]!r} (expected {want!r})"
        for key, want in test.expect.items()
        if key in captures and captures[key] != want
    ]
    if missing := [repr(key) for key in test.expect if key not in captures]:
        wrong.append(
            f"no capture named {', '.join(missing)}"
            f" (the captures are {', '.join(captures) or 'none'})"
        )
    return f"captures differ: {'; '.join(wrong)}" if wrong else None


def _why_not(line: str, rule: CompiledRule) -> str:
    """A hint for a failing sample: did a match pattern hit, only to be vetoed by an exclude?"""
    if not rule.uses_re2:
        return ""
    data = line.encode()
    if any(matcher.search(data) for matcher in rule.matchers):
        vetoes = [i for i, excluder in enumerate(rule.excluders) if excluder.search(data)]
        if vetoes:
            return f" (exclude[{vetoes[0]}] vetoed it)"
    return ""


def load_config(path: Path | None) -> tuple[Config, RuleSet]:
    """Load, validate and compile a config (rule samples included); ConfigError lists every
    problem of the tables and of the rules together."""
    config, sink = load(path or default_config_path(), defer=True)
    return config, RuleSet.compile(config, sink)
