"""Hyperscan as the block prefilter, when the optional `hyperscan` package is installed (issue 14).

`pip install logwarden[hyperscan]`. RE2's prefilter (rules.py) says where the first line of a
block's remaining bytes hits *some* rule, and an `re2.Set` then says which; Hyperscan searches the
whole block for every match pattern in one call and says which pattern ended where, so a line that
one pattern hits goes straight to that pattern's capturing search (still RE2: Hyperscan captures
nothing). Measured on the bench corpus (240 MB, 72,055 matching lines, plain.toml): the prefilter
pass 0.47 s with RE2, 0.34 s with Hyperscan, and no Set call per matching line.

The answer must be RE2's, byte for byte: Hyperscan only chooses which lines RE2 looks at, so it
may name more lines than match (a match that runs over a newline ends on the next line; that line
is confirmed and dropped), never fewer. That holds where the two engines agree on what a pattern
matches, so a source gets Hyperscan only if *every* one of its match patterns is in the plain
subset where they do (ASCII, no `(?i)`: RE2 folds case with Unicode's tables and Hyperscan without
`HS_FLAG_UCP` with ASCII's; no `\\s` or `\\v`: Hyperscan's `\\s` takes the vertical tab, RE2's
does not, and its `\\v` is every vertical space, RE2's the vertical tab alone, so `\\S`,
`[^\\s]` and `[^\\v]` are narrower in Hyperscan and it would miss lines; no `\\p`, `\\C`,
octal escapes or `\\x` beyond ASCII) and compiles; anything else keeps the RE2 prefilter for the whole
source (bench.toml's `%{ip}` does: Hyperscan refuses its IPv6 repeats). Hyperscan is given only
runs of valid UTF-8 (rules.py's fast path), as HS_FLAG_UTF8 requires.

`LOGWARDEN_HYPERSCAN=0` in the environment turns it off whatever is installed: the agreement
tests run both ways, and so can anyone who suspects it. A database has one scratch space, so one
thread scans with it at a time: the daemon scans on its event loop only.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Sequence
from typing import Any

from logwarden.log import get_logger
from logwarden.patterns import prefilter_form, tokenize

log = get_logger(__name__)

ENV = "LOGWARDEN_HYPERSCAN"
# syntax on which RE2 and Hyperscan (UTF-8, no UCP) may disagree about a line: not accelerated
_UNSAFE = re.compile(r"\\[SsvpPC0-7]|\\x(?![0-7][0-9a-fA-F])|\(\?[-a-zA-Z]*i|[^\x00-\x7f]")
_QUANTIFIERS = frozenset("*+?}")

hyperscan: Any
try:  # the optional extra
    hyperscan = importlib.import_module("hyperscan")
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    hyperscan = None


def enabled() -> bool:
    """Whether Hyperscan is installed and not turned off by LOGWARDEN_HYPERSCAN=0."""
    return hyperscan is not None and os.environ.get(ENV, "1") != "0"


def hyperscan_form(expanded: str) -> str | None:
    """`prefilter_form` of a pattern for Hyperscan, or None when it is outside the safe subset.

    A trailing `x+` becomes `x`: a line holds a match of `...x+` exactly when it holds one of
    `...x`, and Hyperscan reports every end of every match, so `port [0-9]+` would call back once
    per digit.
    """
    if _UNSAFE.search(expanded):
        return None
    tokens = list(tokenize(prefilter_form(expanded)))
    end = len(tokens)
    while end > 0 and tokens[end - 1].text == ")":
        end -= 1
    if end >= 2 and tokens[end - 1].text == "+" and tokens[end - 1].kind == "char":
        atom = tokens[end - 2]
        simple = atom.kind == "class" or (atom.kind == "escape" and len(atom.text) == 2)
        if simple or (
            atom.kind == "char" and atom.text not in "()|" and atom.text not in _QUANTIFIERS
        ):
            del tokens[end - 1]
    return "".join(token.text for token in tokens)


class HyperscanPrefilter:
    """Every match pattern of a source in one Hyperscan block-mode database."""

    def __init__(self, database: Any) -> None:
        self._database = database

    @classmethod
    def build(cls, patterns: Sequence[tuple[int, str]]) -> HyperscanPrefilter | None:
        """A prefilter for (id, expanded pattern) pairs, or None: Hyperscan absent or off, or a
        pattern it cannot take exactly (then the source keeps RE2's prefilter)."""
        if not enabled() or not patterns:
            return None
        forms = [hyperscan_form(pattern) for _, pattern in patterns]
        if any(form is None for form in forms):
            return None
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        flags = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_MULTILINE
        try:
            database.compile(
                expressions=[form.encode() for form in forms if form is not None],
                ids=[identity for identity, _ in patterns],
                elements=len(patterns),
                flags=[flags] * len(patterns),
            )
        except hyperscan.error as error:  # e.g. a pattern that can match the empty string
            log.debug("hyperscan cannot take these patterns; RE2 prefilters", error=str(error))
            return None
        return cls(database)

    def lines(self, data: bytes, lo: int, hi: int) -> list[tuple[int, int, list[int]]]:
        """(start, end, pattern ids) of each line of data[lo:hi] in which a pattern's match ends,
        in order; end excludes the newline.

        A match is put on the line of its last byte. One that ends just after a newline might
        also be empty (`^$` on an empty line): without its start, it counts for both lines.
        """
        view = data if lo == 0 and hi == len(data) else data[lo:hi]
        ends: list[tuple[int, int]] = []
        found = ends.append

        def on_match(identity: int, _start: int, end: int, _flags: int, _context: Any) -> None:
            found((end, identity))

        self._database.scan(view, match_event_handler=on_match)
        ends.sort()  # by end, which Hyperscan mostly reports in order already
        out: list[tuple[int, int, list[int]]] = []
        line_end = -1  # of the last line in `out`: the index of its newline (or hi)
        for end, identity in ends:
            position = lo + end
            empty_too = position == lo or data[position - 1] == 10  # just after a newline
            for index in (position - 1, position) if empty_too else (position - 1,):
                if index < lo or index >= hi:
                    continue
                if index <= line_end:
                    if identity not in out[-1][2]:
                        out[-1][2].append(identity)
                    continue
                newline = data.rfind(b"\n", lo, index)
                line_end = data.find(b"\n", index, hi)
                if line_end < 0:
                    line_end = hi
                out.append((lo if newline < 0 else newline + 1, line_end, [identity]))
        return out
