"""The matcher of a source whose rules read parsed fields (`where`, `field`, `capture_fields`).

It is a `SourceMatcher` for the rules that read no fields, their prefilter and Set as before, and
a second pass for the rules that do (`where` or `field`):
- its own prefilter runs over the whole block: the alternation of each such rule's
  `fields.Requirement` (what its raw line must contain), plus any backslash and, for JSON, any
  number that may read back otherwise, for requirements on a field's text. A line it does not hit
  is never parsed. A rule from which no requirement follows (only numeric conditions, only
  anchored patterns on a field, `engine = "regex"` with a `field`) makes every line a candidate,
  as does a block that is cut or not valid UTF-8;
- each candidate line is parsed once, for every rule that reads fields, and their `where`,
  `field` and patterns are tried in rule order.
A rule with `capture_fields` alone matches on the plain path; a line it matched is parsed (once)
to copy the fields in. Both passes' matches come out in line order, rule order within a line.

Rejected: parsing every line of a structured source (the prefilter is what keeps quiet lines at
grep speed), and putting field rules into the plain Set (its hits are raw-line matches; a field
rule's patterns read a field, so a Set hit could not be trusted as the verdict).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import re2

from logwarden.config import ParseFormat
from logwarden.fields import (
    ESCAPE,
    RESPELT_NUMBER,
    Fields,
    FieldSpec,
    Requirement,
    parser_for,
    requirement,
)
from logwarden.framing import Block, split_lines
from logwarden.log import get_logger
from logwarden.patterns import SpanSearch, re2_options, span_search
from logwarden.rules import (
    CompiledRule,
    LineTrace,
    Match,
    RuleTrace,
    SourceMatcher,
    _confirm_re2,
    _Counters,
    _found_patterns,
)

log = get_logger(__name__)


class StructuredMatcher(SourceMatcher):
    """A source's rules, some of them on parsed fields; `scan` and `explain` as a plain one's."""

    def __init__(
        self, rules: Sequence[CompiledRule], counters: _Counters, parse: ParseFormat
    ) -> None:
        self._specs = {rule.name: FieldSpec.of(rule.config) for rule in rules}
        self._on_fields = tuple(rule for rule in rules if self._specs[rule.name].needs_fields)
        on_fields = {rule.name for rule in self._on_fields}
        super().__init__([rule for rule in rules if rule.name not in on_fields], counters)
        self._everything = tuple(rules)
        self._order = {rule.name: position for position, rule in enumerate(rules)}
        self._kind = parse
        self._parse = parser_for(parse)
        self._enriched = frozenset(
            rule.name
            for rule in rules
            if rule.name not in on_fields and self._specs[rule.name].capture_fields
        )
        requirements = [self._requirement(rule) for rule in self._on_fields]
        self._search = self._compile(requirements)  # None: every line is a candidate
        self._rule_searches: dict[str, SpanSearch | None] = {}  # explain only

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self._everything)

    @property
    def counts_nothing(self) -> bool:
        """Over every rule, those on fields included (the base class sees only the others)."""
        return all(rule.uses_re2 for rule in self._everything)

    def scan(self, block: Block) -> list[Match]:
        out = super().scan(block)
        if out and self._enriched:
            out = self._enrich(out)
        if self._on_fields and self._parse is not None and block.data:
            found: list[Match] = []
            for offset, line_no, raw in self._lines(block):
                text = raw.decode("utf-8", "replace")
                fields = self._parse(text)
                for rule in self._on_fields:
                    captures = self._confirm_fields(rule, fields, text)
                    if captures is not None:
                        found.append(
                            Match(
                                rule.name,
                                rule.severity,
                                rule.report,
                                offset,
                                line_no,
                                text,
                                block.truncated,
                                captures,
                            )
                        )
            if found:
                order = self._order
                out = sorted(out + found, key=lambda match: (match.offset, order[match.rule]))
        return out

    def explain(self, block: Block) -> LineTrace:
        """The plain rules' traces, and for each rule on fields what its fields said."""
        plain = super().explain(block)  # its verdicts are this class's `scan`
        found = {match.rule: match.captures for match in plain.matches}
        fields = self._parse(plain.line) if self._parse is not None else None
        traces = {trace.rule: trace for trace in plain.rules}
        hits = []
        for rule in self._on_fields:
            traces[rule.name] = self._trace(rule, block, plain.line, fields, found.get(rule.name))
            hits.append(traces[rule.name].prefilter)
        for name in self._enriched:
            trace = traces[name]
            detail = self._parsed(fields) + "; captures the fields it has"
            traces[name] = dataclasses.replace(trace, fields=(True, detail))
        line_hit = plain.prefilter
        if line_hit is not True and self._on_fields:
            line_hit = True if any(hits) else (None if None in hits else line_hit)
        return dataclasses.replace(
            plain,
            prefilter=line_hit,
            rules=tuple(traces[rule.name] for rule in self._everything),
        )

    # ------------------------------------------------------------------ the field pass

    def _requirement(self, rule: CompiledRule) -> Requirement | None:
        spec = self._specs[rule.name]
        return requirement(spec, rule.match, rule.uses_re2, bare_keys=self._kind == "logfmt")

    def _compile(self, requirements: list[Requirement | None]) -> SpanSearch | None:
        """One search for the rules' requirements, and what makes a line a candidate anyway."""
        if not requirements or any(r is None for r in requirements):
            return None
        alternatives = [a for r in requirements if r is not None for a in r.alternatives]
        if any(r is not None and r.on_text for r in requirements):
            alternatives.append(ESCAPE)
            if self._kind == "json":
                alternatives.append(RESPELT_NUMBER)
        return span_search(re2.compile("|".join(alternatives), re2_options(combined=True)))

    def _lines(self, block: Block) -> Iterator[tuple[int, int | None, bytes]]:
        """(offset, line_no, line) of each line the field prefilter hits (every line without one,
        and in a cut or not UTF-8 block), newline and one `\\r` removed, as `split_lines` gives."""
        data = block.data
        if block.event:  # a multi-line event is one line: its whole text is parsed (pretty JSON)
            yield block.offset, block.line_no, data
            return
        search = self._search
        if search is None or block.truncated or not _utf8(data):
            yield from split_lines(block)
            return
        pos = counted = 0
        line_no = block.line_no
        while pos < len(data):
            start = search(data, pos, len(data))[0][0]
            if start < 0:
                return
            newline = data.rfind(b"\n", pos, start)
            line_start = pos if newline < 0 else newline + 1
            line_end = data.find(b"\n", start)
            line_end = len(data) if line_end < 0 else line_end
            if line_no is not None:
                line_no += data.count(b"\n", counted, line_start)
                counted = line_start
            line = data[line_start:line_end]
            yield block.offset + line_start, line_no, line[:-1] if line.endswith(b"\r") else line
            pos = line_end + 1

    def _confirm_fields(
        self, rule: CompiledRule, fields: Fields | None, text: str
    ) -> dict[str, str | None] | None:
        """The captures of a rule on fields on one parsed line, or None: `where`, then its
        patterns on the text `field` names (or the line), then `capture_fields` added."""
        spec = self._specs[rule.name]
        if spec.why_not(fields) is not None:
            return None
        subject = spec.subject(fields, text)
        if subject is None:
            return None
        captures = self._confirm_text(rule, subject) if rule.match else {}
        if captures is not None and spec.capture_fields:
            captures.update(spec.captures(fields))
        return captures

    def _confirm_text(self, rule: CompiledRule, text: str) -> dict[str, str | None] | None:
        """A rule's match and exclude patterns on a text, as the plain path confirms a line."""
        if rule.uses_re2:
            return _confirm_re2(rule, text.encode(), None, (), ())
        return self._confirm_regex(rule, text)

    def _enrich(self, matches: list[Match]) -> list[Match]:
        """Plain matches of rules with `capture_fields`, the fields of their line added."""
        parsed: dict[int, Fields | None] = {}
        out = []
        for match in matches:
            if match.rule not in self._enriched:
                out.append(match)
                continue
            if match.offset not in parsed:
                parsed[match.offset] = self._parse(match.line) if self._parse else None
            more = self._specs[match.rule].captures(parsed[match.offset])
            out.append(dataclasses.replace(match, captures={**match.captures, **more}))
        return out

    # ------------------------------------------------------------------ explain

    def _trace(
        self,
        rule: CompiledRule,
        block: Block,
        line: str,
        fields: Fields | None,
        captures: dict[str, str | None] | None,
    ) -> RuleTrace:
        spec = self._specs[rule.name]
        problem = spec.why_not(fields)
        if self._parse is None:
            problem = "its source does not parse lines (no `parse`): this rule reads fields"
        verdict = (False, problem) if problem else (True, self._parsed(fields) + _holds(spec))
        subject = spec.subject(fields, line)
        patterns: tuple[int, ...] = ()
        excludes: tuple[int, ...] = ()
        timed_out = False
        if subject is not None:
            try:
                patterns, excludes = _found_patterns(rule, subject.encode(), subject)
            except TimeoutError:
                timed_out = True
        return RuleTrace(
            rule.name,
            self._rule_hit(rule, block),
            patterns,
            excludes,
            timed_out,
            captures,
            fields=verdict,
        )

    def _rule_hit(self, rule: CompiledRule, block: Block) -> bool | None:
        """Whether this rule's own requirement hits the line; None: it has none, or the line
        is cut or not UTF-8 (every line is parsed then)."""
        if rule.name not in self._rule_searches:
            needed = self._requirement(rule)
            self._rule_searches[rule.name] = None if needed is None else self._compile([needed])
        search = self._rule_searches[rule.name]
        if search is None or block.truncated or not _utf8(block.data):
            return None
        return search(block.data, 0, len(block.data))[0][0] >= 0

    def _parsed(self, fields: Fields | None) -> str:
        return f"parsed as {self._kind}" if fields is not None else "the line does not parse"


def _holds(spec: FieldSpec) -> str:
    parts = []
    if spec.where:
        parts.append(f"where holds ({', '.join(c.path for c in spec.where)})")
    if spec.field is not None:
        parts.append(f"match reads field {spec.field}")
    return "; " + "; ".join(parts) if parts else ""


def _utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
