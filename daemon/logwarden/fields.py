"""Structured lines: JSON and logfmt parsed into fields, read by dotted path, and `where` tested.

A source with `parse = "json"` or `"logfmt"` gives its rules fields to test (`where`), to match
(`field`) and to copy into captures (`capture_fields`). A line that does not parse (not a JSON
object; no `key=value` pair, or broken quoting) has no fields: rules that need them do not match
it, every other rule sees it as plain text.

How values read, so that JSON's types and logfmt's strings compare alike:
- the *text* of a value (what `match` patterns and equality with a string see): a string as it
  is; a number as JSON writes it (an integer as written, a float in its shortest form: `1.50`
  reads `1.5`); `true`, `false`, `null`. An object or array has no text: it matches nothing
  (name a leaf with a dotted path), and a capture of it holds its compact JSON.
- the *number* of a value (what `gt`/`gte`/`lt`/`lte` and equality with a number see): a JSON
  number, or a string that is a decimal number (`"503"`, logfmt's `status=503`); anything else
  is not a number and fails those conditions.
- a dotted path `http.status` reads a key of that name if there is one (logfmt keys often hold
  dots), else walks nested objects. A missing field fails every condition on it.

This module knows nothing of rules or blocks; `structured.py` runs it over blocks.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import re2

from logwarden.config import FieldCondition, ParseFormat, RuleConfig
from logwarden.log import get_logger
from logwarden.patterns import expand, prefilter_form, re2_options, tokenize

log = get_logger(__name__)

Fields = Mapping[str, Any]
Parser = Callable[[str], Fields | None]


# ---------------------------------------------------------------- parsing


def parse_json(text: str) -> Fields | None:
    """A JSON object's members; None for anything else (plain text, an array, a broken line)."""
    if not text.lstrip().startswith("{"):  # the common plain line: no exception to pay for
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# key, then `=` and a quoted or bare value, or nothing (a bare key); a token ends at a blank
_LOGFMT_TOKEN = re.compile(
    r'[ \t]*([^ \t="]+)(?:(=)(?:"((?:[^"\\]|\\.)*)"|([^ \t"]*)))?(?=[ \t]|$)'
)


def parse_logfmt(text: str) -> Fields | None:
    """`key=value key="quoted value" flag` as fields; None when the line is not logfmt.

    A bare key reads as `true`; a quoted value takes JSON's escapes (`\\"`, `\\\\`, `\\n`,
    `\\u00e9`). A line is logfmt when every token parses and at least one is `key=value`: so
    `Failed password for root` (bare words only) stays plain text. Written here because the
    logfmt parsers on PyPI are unmaintained (`logfmt`, last release 2018) or brand new.

    A multi-line event (`multiline`) is parsed from its first line: logfmt is one line a record,
    and what follows it (a stack trace) would otherwise end its last value and add its words as
    bare keys (`user=bob\n  at com.x.Y` read `user` as `"bob\n"`, `at` as a key).
    """
    newline = text.find("\n")
    if newline >= 0:
        text = text[:newline]
    fields: dict[str, Any] = {}
    pairs, position, end = 0, 0, len(text)
    while position < end:
        found = _LOGFMT_TOKEN.match(text, position)
        if found is None:
            if text[position:].strip(" \t"):
                return None
            break
        key, equals, quoted, bare = found.groups()
        if equals is None:
            fields[key] = True
        elif quoted is None:
            fields[key], pairs = bare, pairs + 1
        else:
            if "\\" in quoted:
                try:
                    quoted = orjson.loads(f'"{quoted}"')
                except orjson.JSONDecodeError:
                    return None
            fields[key], pairs = quoted, pairs + 1
        position = found.end()
    return fields if pairs else None


_PARSERS: dict[str, Parser] = {"json": parse_json, "logfmt": parse_logfmt}


def parser_for(kind: ParseFormat) -> Parser | None:
    """The parser of a source's `parse`; None for "none"."""
    return _PARSERS.get(kind)


# ---------------------------------------------------------------- reading values

MISSING: Any = object()


def lookup(fields: Fields, path: str) -> Any:
    """The value at a dotted path: a key spelt so, else nested objects walked; MISSING if none."""
    value = fields.get(path, MISSING)
    if value is not MISSING or "." not in path:
        return value
    current: Any = fields
    for part in path.split("."):
        if not isinstance(current, dict):
            return MISSING
        current = current.get(part, MISSING)
        if current is MISSING:
            return MISSING
    return current


def text_of(value: Any) -> str | None:
    """A value's text as patterns and string equality see it; None for an object or array."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list) or value is MISSING:
        return None
    return orjson.dumps(value).decode()  # true, false, null, 503, 1.5


def capture_text(value: Any) -> str | None:
    """A value as a capture holds it: its text, an object or array as compact JSON; None if
    missing, or nested deeper than orjson writes (255 levels; it reads 1,024)."""
    if value is MISSING:
        return None
    text = text_of(value)
    if text is not None:
        return text
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return None


_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# integers up to this many digits read exactly; longer ones as a float (infinite past ~1e308):
# `int()` refuses more than 4,300 digits, and a huge int does not divide into a float (epoch time)
_EXACT_DIGITS = 300


def number_of(value: Any) -> int | float | None:
    """A value as a number: a JSON number, or a string spelling a decimal number; else None.
    A string may spell a number too big for a double: it reads as infinity (`5e999 > 500`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        text = value.strip()
        if len(text) <= _EXACT_DIGITS and text.lstrip("-").isdigit():
            return int(text)
        return float(text)
    return None


def shown(value: Any) -> str:
    """A value for a person (explain): JSON, cut at 60 characters."""
    if value is MISSING:
        text = "missing"
    else:
        try:
            text = orjson.dumps(value, default=str).decode()
        except orjson.JSONEncodeError:  # nested deeper than orjson writes
            text = "a value nested too deeply to show"
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- where


@dataclass(frozen=True, slots=True)
class Condition:
    """One field's compiled conditions: `why_not` says which fails, every one must hold."""

    path: str
    spec: FieldCondition
    pattern: Any  # RE2, compiled from spec.match; None without one

    @classmethod
    def compile(cls, path: str, spec: FieldCondition) -> Condition:
        pattern = None
        if spec.match is not None:
            pattern = re2.compile(expand(spec.match), re2_options())
        return cls(path, spec, pattern)

    def why_not(self, fields: Fields) -> str | None:
        """None when the field meets every condition; else what it is and what was wanted."""
        value = lookup(fields, self.path)
        if value is MISSING:
            return f"{self.path} is missing"
        spec = self.spec
        if spec.eq is not None:
            if isinstance(spec.eq, int | float) and not isinstance(spec.eq, bool):
                same = number_of(value) == spec.eq
            else:
                want = spec.eq if isinstance(spec.eq, str) else ("true" if spec.eq else "false")
                same = text_of(value) == want
            if not same:
                return f"{self.path} is {shown(value)}, not {shown(spec.eq)}"
        if self.pattern is not None:
            text = text_of(value)
            if text is None or self.pattern.search(text) is None:
                return f"{self.path} is {shown(value)}: no match for '{spec.match}'"
        for name, bound, holds in (
            ("gt", spec.gt, operator.gt),
            ("gte", spec.gte, operator.ge),
            ("lt", spec.lt, operator.lt),
            ("lte", spec.lte, operator.le),
        ):
            if bound is not None:
                number = number_of(value)
                if number is None:
                    return f"{self.path} is {shown(value)}: not a number ({name} {bound})"
                if not holds(number, bound):
                    return f"{self.path} is {shown(value)}: not {_SIGNS[name]} {bound}"
        return None


_SIGNS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What one rule reads of a parsed line: its `where`, its `field` and its `capture_fields`."""

    where: tuple[Condition, ...]
    field: str | None
    capture_fields: tuple[str, ...]

    @classmethod
    def of(cls, rule: RuleConfig) -> FieldSpec:
        where = tuple(Condition.compile(p, c) for p, c in (rule.where or {}).items())
        return cls(where, rule.field, rule.capture_fields)

    @property
    def needs_fields(self) -> bool:
        """A rule with `where` or `field` matches parsed lines only; one with `capture_fields`
        alone matches as a plain rule and copies what fields the line has."""
        return bool(self.where) or self.field is not None

    def why_not(self, fields: Fields | None) -> str | None:
        """None when a line's fields meet the rule's `where` (and have its `field`)."""
        if fields is None:
            return "the line does not parse: this rule reads fields"
        for condition in self.where:
            problem = condition.why_not(fields)
            if problem is not None:
                return f"where: {problem}"
        if self.field is not None and text_of(lookup(fields, self.field)) is None:
            return f"field {self.field} is {shown(lookup(fields, self.field))}: nothing to match"
        return None

    def subject(self, fields: Fields | None, line: str) -> str | None:
        """What the rule's `match` patterns read: its field's text, or the whole line."""
        if self.field is None:
            return line
        return None if fields is None else text_of(lookup(fields, self.field))

    def captures(self, fields: Fields | None) -> dict[str, str | None]:
        """`capture_fields`, named by their paths as written; None where a line lacks one."""
        if fields is None:
            return dict.fromkeys(self.capture_fields)
        return {path: capture_text(lookup(fields, path)) for path in self.capture_fields}


# ---------------------------------------------------------------- the prefilter

# A JSON number whose text (as orjson writes it back) may differ from how the line spells it:
# an exponent, a fraction ending in 0 (`1.50`), many digits, `-0`, a tiny fraction (`0.000001`
# reads 1e-6). Lines holding one are candidates whatever a field pattern says (see `requirement`).
RESPELT_NUMBER = (
    r"[:,\[][ \t\r]*(?:-?[0-9][0-9.]*[eE]|-?[0-9]*\.[0-9]*[0-9]0(?:[^0-9]|(?m:$))"
    r"|-0(?:[^.0-9eE]|(?m:$))|-?[0-9.]{16}|-?0\.0000)"
)
# a line with a backslash may hold an escape: a string's text is then not its raw spelling
ESCAPE = r"\\"


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a rule's raw line must contain for the rule to possibly match its parsed form."""

    alternatives: tuple[str, ...]  # prefilter forms: one of them hits the raw line...
    on_text: bool  # ...unless, when these read a field's text, the line has an escape or a
    #                respelt number (then it is a candidate anyway)


def requirement(
    spec: FieldSpec, match: tuple[str, ...], uses_re2: bool, *, bare_keys: bool = False
) -> Requirement | None:
    """A necessary condition on the raw line for a rule with `where`/`field`, or None when none
    can be derived (then every line of its sources is parsed). `bare_keys`: the source is
    logfmt, where a bare key reads `true` without the word in the line, so a pattern on a field
    that finds something in `true` requires nothing of the line.

    Sound because a string field's text is a substring of an escape-free raw line (JSON and
    logfmt alike), with a non-word character or the line's end on either side, so an unanchored
    RE2 pattern (`\\b` included) found in the text is found in the line too; only `^`, `$`, `\\A`
    and `\\z` see the difference, so patterns with those give no requirement. Numbers other than
    respelt ones, `true`, `false` and `null` read as written.
    """
    if match and uses_re2 and spec.field is None:  # patterns on the whole line: the plain rule's
        return Requirement(tuple(prefilter_form(p) for p in match), on_text=False)
    if match and uses_re2 and not any(_anchored(p) or _reads_true(p, bare_keys) for p in match):
        return Requirement(tuple(prefilter_form(p) for p in match), on_text=True)
    for condition in spec.where:
        eq, pattern = condition.spec.eq, condition.spec.match
        # not `true`: a bare logfmt key reads true without the word in the line
        if isinstance(eq, str) and eq and eq != "true":
            return Requirement((re2.escape(eq),), on_text=True)
        if pattern is None:
            continue
        expanded = expand(pattern)
        if not _anchored(expanded) and not _reads_true(expanded, bare_keys):
            return Requirement((prefilter_form(expanded),), on_text=True)
    return None


def _reads_true(expanded: str, bare_keys: bool) -> bool:
    """Whether a pattern on a field finds something in a bare logfmt key's text, `true`."""
    return bare_keys and re2.search(expanded, "true", re2_options()) is not None


def _anchored(expanded: str) -> bool:
    return any(
        token.kind in ("char", "escape") and token.text in ("^", "$", "\\A", "\\z")
        for token in tokenize(expanded)
    )
