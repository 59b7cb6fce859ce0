"""Config problems: where each one is (file, line, key path) and how they are collected.

A config is checked whole before anything starts: every problem found is kept, placed on the line
of the TOML text that sets its key (`KeyLocator`: tomllib keeps no positions), and raised together
as one `ConfigError`. `config.py`, rule compilation and `check-config` all report through a
`ProblemSink`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config, pointing at where it is."""

    file: Path
    line: int | None
    key: str
    message: str
    # more than the message says, too long for every listing (a pattern's expansion): on request
    detail: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A config that must not start anything; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class KeyLocator:
    """Maps a key path such as `rules.ssh.match[0]` to the line of the TOML text that sets it.

    tomllib keeps no positions, so this reads the text: table headers and `key =` lines. It is a
    best effort for pointing a human at a line; a path it cannot place gets the nearest enclosing
    table's line, or no line at all.
    """

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
    _ASSIGN = re.compile(
        r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
    )
    _PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_multiline: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if raw.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            header = self._HEADER.match(raw)
            if header:
                table = self._split(header.group(1))
                self._place(table, number)
                continue
            assign = self._ASSIGN.match(raw)
            if assign:
                self._place(table + self._split(assign.group(1)), number)
            # also outside assignments: a multi-line string can open inside a multi-line array
            for quote in ('"""', "'''"):
                if raw.count(quote) % 2 == 1:
                    in_multiline = quote

    def _place(self, keys: tuple[str, ...], number: int) -> None:
        """`[sourcse.auth]` also places `sourcse` (and `a.b.c = 1` places `a` and `a.b`), so a
        problem about an enclosing table points at where it first appears, not at no line."""
        for end in range(1, len(keys) + 1):
            self.lines.setdefault(keys[:end], number)

    @classmethod
    def _split(cls, dotted: str) -> tuple[str, ...]:
        return tuple(part.strip("\"'") for part in cls._PART.findall(dotted))

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        keys = tuple(part for part in path if isinstance(part, str))
        for end in range(len(keys), 0, -1):
            if keys[:end] in self.lines:
                return self.lines[keys[:end]]
        return None


def key_path(path: Iterable[str | int]) -> str:
    """`("rules", "ssh", "match", 0)` → `rules.ssh.match[0]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass(frozen=True, slots=True)
class ProblemSink:
    """Collects problems for one config file, placing each on its line."""

    file: Path
    locator: KeyLocator
    problems: list[Problem]

    def add(self, path: tuple[str | int, ...], message: str, detail: str | None = None) -> None:
        self.problems.append(
            Problem(self.file, self.locator.line_of(path), key_path(path), message, detail)
        )

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)
