"""Rule patterns: typed `%{type}` placeholders, the prefilter rewrite, and compiling for an engine.

A placeholder is a vetted fragment with a named capture: `%{ip}` becomes `(?P<ip>...)` and
`%{ip:src}` becomes `(?P<src>...)`. Every fragment is written in the common subset of RE2, Python
`re` and the `regex` package, so a rule means the same under `engine = "regex"` and in the tests'
reference matcher. That rules out `\\w`, `\\d` and `\\s` inside fragments (Unicode-aware in
`re`/`regex`, ASCII in RE2): fragments spell their classes out.

Boundaries. RE2 has no lookaround, so a fragment cannot say "not preceded by a digit or a dot".
Fragments that start or end with a digit or hex digit carry `\\b` there, which stops the common
mistakes (`10.0.0.256` is not an address, `655350` is not a port), but `1.2.3.4` is still found
inside `1.2.3.4.5`: anything beyond word boundaries is the pattern author's job (`from %{ip} `).
`\\b` is ASCII in RE2 and Unicode in `re`/`regex`; the two differ only next to a non-ASCII
letter or digit.

Backtracking. No fragment nests ambiguous quantifiers: every repeated group starts with a
character its body cannot (`(?:\\.label)*`, `(?:/segment)+`) or is bounded (`{1,4}`), so a
backtracking engine spends at most quadratic time in the line length on a fragment, never
exponential. RE2 is linear regardless.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import re2

# ---------------------------------------------------------------- fragments

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9A-Fa-f]{1,4}"


def _ipv6() -> str:
    """IPv6 in every textual form, ordered so that leftmost-first matching takes the whole address.

    The textbook alternation (`(h:){1,7}:|(h:){1,6}:h|...`) only works anchored: unanchored, it
    takes `2001:db8::` out of `2001:db8::1`. Here each compressed alternative fixes the number n of
    groups before `::` exactly, so at most one of them can match at a given start, and its greedy
    tail takes every group after `::` (at most 7 - n). Forms ending in an IPv4 address come first,
    else `::ffff:1.2.3.4` would stop at `::ffff:1`. The optional `%zone` suffix is for link-local.
    """
    forms = [rf"(?:{_H}:){{6}}{_IPV4}\b"]
    for before in range(6):  # embedded IPv4: n groups, ::, up to 5 - n groups, the address
        head = _ipv6_head(before)
        forms.append(rf"{head}::(?:{_H}:){{0,{5 - before}}}{_IPV4}\b")
    forms.append(rf"\b{_H}(?::{_H}){{7}}")
    for before in range(8):  # compressed: n groups, ::, up to 7 - n groups
        head = _ipv6_head(before)
        tail = rf"(?:{_H}(?::{_H}){{0,{6 - before}}})?" if before < 7 else ""
        forms.append(rf"{head}::{tail}")
    return "(?:" + "|".join(forms) + r")(?:%[0-9A-Za-z._~-]+)?"


def _ipv6_head(groups: int) -> str:
    """Exactly `groups` hex groups joined by colons (the part before `::`)."""
    if groups == 0:
        return ""
    return rf"\b{_H}" + (rf"(?::{_H}){{{groups - 1}}}" if groups > 1 else "")


_IPV6 = _ipv6()
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*"
# no space, tab, line break, vertical tab or form feed, spelt the same for RE2, re, regex and
# Hyperscan (whose `\v` is every vertical space, not the vertical tab alone: `accelerate.py`)
_NOT_SPACE = r"[^\t\n\x0b\f\r ]+"
_DATE = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:[.,][0-9]+)?)?"
_ZONE = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3])(?::?[0-5][0-9])?)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_HEX2 = r"[0-9A-Fa-f]{2}"

PLACEHOLDERS: dict[str, str] = {
    # addresses; `ip` tries IPv4 first: the two cannot both match at the same start
    "ipv4": rf"\b{_IPV4}\b",
    "ipv6": _IPV6,
    "ip": rf"(?:\b{_IPV4}\b|{_IPV6})",
    # a hostname's labels also spell every IPv4 address, so `host` needs only IPv6 beside it;
    # IPv6 goes first, or the hostname alternative would take `2001` out of `2001:db8::1`
    "host": rf"(?:{_IPV6}|{_HOSTNAME})",
    "hostname": _HOSTNAME,
    "port": r"\b(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
    r"|[1-9][0-9]{0,3}|0)\b",
    "mac": rf"\b(?:{_HEX2}(?::{_HEX2}){{5}}|{_HEX2}(?:-{_HEX2}){{5}})\b",
    # names: sshd and sudo log whatever the client sent, so a user is anything but whitespace
    "user": _NOT_SPACE,
    "notspace": _NOT_SPACE,
    "word": r"[A-Za-z0-9_]+",
    # numbers
    "int": r"[+-]?[0-9]+",
    "num": r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?",
    "hex": r"(?:0[xX])?[0-9A-Fa-f]+",
    "uuid": r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b",
    # times
    "iso8601": rf"\b{_DATE}(?:[Tt ]{_TIME}{_ZONE}?)?\b",
    "syslog_time": rf"\b{_MONTH} (?: [1-9]|0[1-9]|[12][0-9]|3[01]) "
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)\b",
    # web
    "http_method": r"\b(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH)\b",
    "http_status": r"\b[1-5][0-9]{2}\b",
    "path": r"(?:/[^\t\n\v\f\r \"'/]*)+",  # absolute; quotes end it, as in `"GET /x HTTP/1.1"`
    "quoted": r'"(?:[^"\\]|\\.)*"',  # a double-quoted string with backslash escapes, quotes kept
    # anything: the lazy one is what a pattern between two anchors usually wants
    "data": r".*?",
    "greedydata": r".*",
}
"""Placeholder type → fragment (non-capturing inside; the placeholder adds the named group)."""

KNOWN_TYPES = tuple(sorted(PLACEHOLDERS))

_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_CAPTURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what all three engines accept


class PatternError(ValueError):
    """A pattern that cannot be expanded or compiled; `problems` holds every reason, in full.

    `expanded` is the pattern the engine was given when it differs from the one written (it had
    placeholders): the problems quote the pattern as written, this is shown only on request.
    """

    def __init__(self, problems: list[str], expanded: str | None = None) -> None:
        self.problems = tuple(problems)
        self.expanded = expanded
        super().__init__("; ".join(problems))


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Token:
    """A piece of a pattern that rewriting treats as a unit.

    kind: "char" (one character), "escape" (`\\x`, `\\x{..}`, `\\p{..}`, `\\Q..\\E`), "class"
    (`[...]` whole), "placeholder" (`%{...}`), "group" (the opening of a named group, `(?P<n>`).
    """

    kind: str
    text: str


def tokenize(pattern: str) -> Iterator[Token]:
    """Split a pattern into units, so rewriting never touches what is inside a class or escape.

    This is not a parser: it knows just enough syntax to find top-level `$`, `^`, `\\A`, `\\z`,
    placeholders and named groups. Anything malformed is passed through for the engine to reject.
    """
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            end = _escape_end(pattern, i)
            yield Token("escape", pattern[i:end])
        elif char == "[":
            end = _class_end(pattern, i)
            yield Token("class", pattern[i:end])
        elif char == "%" and pattern.startswith("%{", i):
            close = pattern.find("}", i)
            end = n if close < 0 else close + 1
            yield Token("placeholder", pattern[i:end])
        elif char == "(" and _named_group_at(pattern, i):
            end = pattern.find(">", i) + 1
            yield Token("group", pattern[i:end])
        else:
            end = i + 1
            yield Token("char", char)
        i = end


def _escape_end(pattern: str, i: int) -> int:
    if pattern.startswith("\\Q", i):  # RE2's quoted literal runs to \E
        close = pattern.find("\\E", i + 2)
        return len(pattern) if close < 0 else close + 2
    end = min(i + 2, len(pattern))
    if end < len(pattern) and pattern[i + 1] in "xpPN" and pattern[end] == "{":
        close = pattern.find("}", end)
        return len(pattern) if close < 0 else close + 1
    return end


def _class_end(pattern: str, i: int) -> int:
    """Index just past the `]` closing the class opened at i (`[]a]`, `[^]a]`, `[[:alpha:]]`)."""
    n = len(pattern)
    j = i + 1
    if j < n and pattern[j] == "^":
        j += 1
    if j < n and pattern[j] == "]":  # a leading ] is a literal member
        j += 1
    while j < n:
        if pattern[j] == "\\":
            j += 2
        elif pattern.startswith("[:", j) and (close := pattern.find(":]", j + 2)) >= 0:
            j = close + 2
        elif pattern[j] == "]":
            return j + 1
        else:
            j += 1
    return n


def _named_group_at(pattern: str, i: int) -> bool:
    if pattern.startswith("(?P<", i):
        return pattern.find(">", i) > 0
    return (
        pattern.startswith("(?<", i)
        and not pattern.startswith(("(?<=", "(?<!"), i)
        and pattern.find(">", i) > 0
    )


def _group_name(token: Token) -> str:
    return token.text[4:-1] if token.text.startswith("(?P<") else token.text[3:-1]


# ---------------------------------------------------------------- expansion


def expand(pattern: str) -> str:
    """The pattern with every placeholder replaced by its fragment in a named group.

    Raises PatternError listing every unknown type, malformed placeholder and capture name used
    twice (RE2 would reject the duplicate too, but without saying which placeholder to rename).
    """
    problems: list[str] = []
    seen: dict[str, str] = {}  # capture name → how it was written, for the duplicate message
    out: list[str] = []
    for token in tokenize(pattern):
        if token.kind == "placeholder":
            expanded = _expand_placeholder(token.text, problems)
            if expanded is None:
                continue
            name, fragment = expanded
            _note_name(name, token.text, seen, problems)
            out.append(f"(?P<{name}>{fragment})")
        else:
            if token.kind == "group":
                _note_name(_group_name(token), token.text, seen, problems)
            out.append(token.text)
    if problems:
        raise PatternError(problems)
    return "".join(out)


def _expand_placeholder(text: str, problems: list[str]) -> tuple[str, str] | None:
    if not text.endswith("}"):
        problems.append(f"placeholder {text!r} is not closed with '}}' (write \\%{{ for a literal)")
        return None
    kind, colon, name = text[2:-1].partition(":")
    if not colon:
        name = kind
    if kind not in PLACEHOLDERS:
        if not _TYPE_NAME.fullmatch(kind):
            problems.append(f"{text!r} is not a placeholder: write %{{type}} or %{{type:name}}")
        else:
            problems.append(
                f"unknown placeholder type {kind!r} in {text}{_did_you_mean(kind)};"
                f" known types: {', '.join(KNOWN_TYPES)}"
            )
        return None
    if not _CAPTURE_NAME.fullmatch(name):
        problems.append(
            f"capture name {name!r} in {text} must be letters, digits and _,"
            " not starting with a digit"
        )
        return None
    return name, PLACEHOLDERS[kind]


def _note_name(name: str, written: str, seen: dict[str, str], problems: list[str]) -> None:
    if name in seen:
        problems.append(
            f"capture name {name!r} is used twice ({seen[name]} and {written}): give each its own"
            f" name, e.g. %{{{_type_of(written, name)}:src}} and %{{{_type_of(written, name)}:dst}}"
        )
    else:
        seen[name] = written


def _type_of(written: str, name: str) -> str:
    return written[2:-1].partition(":")[0] if written.startswith("%{") else name


def _did_you_mean(word: str) -> str:
    import difflib  # noqa: PLC0415 - 5 ms of every start, for a pattern with a typo

    close = difflib.get_close_matches(word.lower(), KNOWN_TYPES, n=1, cutoff=0.6)
    return f" (did you mean %{{{close[0]}}}?)" if close else ""


def _pieces(written: str) -> Iterator[tuple[str, str]]:
    """(as written, as expanded) for each token of a pattern that `expand` accepted."""
    for token in tokenize(written):
        expanded = _expand_placeholder(token.text, []) if token.kind == "placeholder" else None
        if expanded is None:
            yield token.text, token.text
        else:
            name, fragment = expanded
            yield token.text, f"(?P<{name}>{fragment})"


def as_written(text: str, written: str) -> str:
    """`text` (an engine's message quoting the expanded pattern) with each placeholder's
    expansion put back as the author wrote it: `%{ip}` rather than 2 KB of IPv6 syntax."""
    for source, expanded in _pieces(written):
        if source != expanded:
            text = text.replace(expanded, source)
    return text


def written_position(position: int, written: str) -> int:
    """Where `position` in the expanded pattern is in the written one (a position inside a
    placeholder's expansion is the placeholder's start)."""
    at_written = at_expanded = 0
    for source, expanded in _pieces(written):
        if position < at_expanded + len(expanded):
            return at_written + (position - at_expanded if source == expanded else 0)
        at_written += len(source)
        at_expanded += len(expanded)
    return at_written + max(position - at_expanded, 0)


def capture_names(expanded: str) -> list[str]:
    """The named groups of an expanded pattern, in order of their opening parenthesis."""
    return [_group_name(token) for token in tokenize(expanded) if token.kind == "group"]


# ---------------------------------------------------------------- the prefilter form

# Rules see a line without its `\n` and one trailing `\r`; the prefilter sees the raw block. The
# only assertions whose truth differs between the two are the ends of the line, so those are
# rewritten (each as a group with its own `m` flag, so an author's `(?-m)` cannot undo it):
#   `$`, `\z` → `(?m:\r?$)`  also before a CR that the line text does not have
#   `^`, `\A` → `(?m:^)`     the start of any line, and the search may start mid-block
# `\b` and `\B` agree already: past either end of a line, raw or stripped, is never a word char.
_LINE_END = r"(?m:\r?$)"
_LINE_START = r"(?m:^)"
_PREFILTER_REWRITES = {"$": _LINE_END, "\\z": _LINE_END, "^": _LINE_START, "\\A": _LINE_START}


def prefilter_form(expanded: str) -> str:
    """An expanded pattern rewritten to run over raw block bytes, wrapped so its flags stay inside.

    The result matches (somewhere in a line's raw bytes) every line the pattern matches in the
    line's text; it may match more, which only costs a confirmation. Its groups do not capture:
    only where a hit starts is wanted, and without submatches RE2 answers from its DFA alone
    (measured: a third faster over a block than the same alternation with the rules' captures).
    """
    tokens = list(tokenize(expanded))
    parts = []
    for index, token in enumerate(tokens):
        following = tokens[index + 1].text if index + 1 < len(tokens) else ""
        if token.kind == "group" or (token.text == "(" and following != "?"):
            parts.append("(?:")
        elif token.kind in ("char", "escape"):
            parts.append(_PREFILTER_REWRITES.get(token.text, token.text))
        else:
            parts.append(token.text)
    return "(?:" + "".join(parts) + ")"


# ---------------------------------------------------------------- compiling

# RE2's default budget is 8 MiB per regex; a prefilter or Set holds every rule of a source in one
# program, and its DFA cache is what keeps it fast, so it gets more.
_COMBINED_MAX_MEM = 64 << 20
# what RE2's error quotes when a pattern uses lookaround or a backreference
_PERL_ONLY = ("(?=", "(?!", "(?<=", "(?<!", "\\1", "\\2", "\\3", "\\g", "(?P=", "\\k")

# `search(data, pos, endpos)` → [(start, end)] of the match then of each group, (-1, -1) for none
SpanSearch = Callable[[bytes, int, int], list[tuple[int, int]]]


def re2_options(*, combined: bool = False) -> Any:
    """RE2 options for one rule's pattern, or (`combined`) for a prefilter or Set of many."""
    options = re2.Options()
    options.log_errors = False  # RE2 otherwise writes its own copy of every error to stderr
    if combined:
        options.never_nl = True  # a prefilter hit never spans lines
        options.never_capture = True  # rules may reuse capture names; the prefilter has none
        options.max_mem = _COMBINED_MAX_MEM
    return options


def compile_pattern(expanded: str, engine: str, written: str | None = None) -> Any:
    """An expanded pattern compiled for its engine; PatternError says why it cannot be, with a hint.

    `written` is the pattern as the author wrote it (default: `expanded`): error messages quote
    and count positions in it, and the PatternError carries the expansion for whoever asks.
    RE2 patterns are compiled from str, so they match UTF-8 bytes and report byte offsets.
    """
    written = expanded if written is None else written
    detail = expanded if written != expanded else None
    if engine == "regex":
        import regex  # noqa: PLC0415 - only engine = "regex" needs it, not every start

        try:
            return regex.compile(expanded)
        except regex.error as error:
            where = (
                "" if error.pos is None else f" at position {written_position(error.pos, written)}"
            )
            raise PatternError(
                [f"the regex engine cannot compile this pattern: {error.msg}{where}"], detail
            ) from None
    try:
        return re2.compile(expanded, re2_options())
    except re2.error as error:
        message = as_written(re2_error_message(error), written)
        if "\\Z" in message:
            hint = "RE2 writes the end of the text as \\z"
        elif any(sign in message for sign in _PERL_ONLY):
            hint = 'lookaround and backreferences need engine = "regex" (per line, match_timeout)'
        else:
            hint = (
                "RE2 syntax: https://github.com/google/re2/wiki/Syntax;"
                ' for lookaround or backreferences use engine = "regex"'
            )
        raise PatternError(
            [f"RE2 cannot compile this pattern: {message}; {hint}"], detail
        ) from None


def re2_error_message(error: Exception) -> str:
    """google-re2 raises with RE2's message as bytes."""
    detail = error.args[0] if error.args else error
    return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)


def set_search(compiled: Any) -> Callable[[bytes], list[int] | None]:
    """A compiled `re2.Set`'s Match, called on its pybind object when it is there: the wrapper's
    isinstance test and `or None` are a third of the call on a log line (see `span_search`)."""
    inner = getattr(compiled, "_set", None)
    if inner is not None and hasattr(inner, "Match"):
        direct: Callable[[bytes], list[int] | None] = inner.Match
        return direct
    wrapped: Callable[[bytes], list[int] | None] = compiled.Match
    return wrapped


def span_search(compiled: Any) -> SpanSearch:
    """A direct span search on a compiled RE2 regex.

    google-re2's public `search` wraps each call in a generator and a match object, about 1 µs
    of Python: as much as the search itself on a log line, and paid on every prefilter hit and
    every confirmation. Its pybind object does the same search and returns the spans, so that is
    called when it is there (a C-level partial, no Python frame); the fallback keeps working if
    a later google-re2 renames its internals.
    """
    regexp, anchor = getattr(compiled, "_regexp", None), getattr(re2, "_Anchor", None)
    if regexp is not None and anchor is not None and hasattr(regexp, "Match"):
        direct: SpanSearch = functools.partial(regexp.Match, anchor.UNANCHORED)
        return direct
    groups = compiled.groups

    def fallback(data: bytes, pos: int, endpos: int) -> list[tuple[int, int]]:
        found = compiled.search(data, pos, endpos)
        if found is None:
            return [(-1, -1)] * (groups + 1)
        return [found.span(index) for index in range(groups + 1)]

    return fallback
