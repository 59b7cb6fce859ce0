"""Source globs: which paths a source covers, with `**` spanning directories.

`glob.translate` (which knows `**`) arrives only in Python 3.13, so the translation is here: a
small, well-tested function beats a dependency for ten lines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property


def translate(pattern: str) -> str:
    """A regex for a path glob: `*` and `?` stay within a directory, `**/` spans any depth."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:[^/]*/)*")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            close = pattern.find(
                "]", index + 2 if pattern[index + 1 : index + 2] in ("!", "]") else index + 1
            )
            if close < 0:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : close]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                index = close
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def static_root(pattern: str) -> str:
    """The deepest directory of a glob that holds no wildcard: where a watch must start."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(char in part for char in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


def is_recursive(pattern: str) -> bool:
    """Whether files below the static root may match: a wildcard in a directory part.

    A `**` in the last part (`/var/log/**`) also spans directories but is not counted here; see
    `spans_subdirectories`, which does count it.
    """
    root = static_root(pattern)
    rest = pattern[len(root) :].lstrip("/")
    return "/" in rest


def spans_subdirectories(pattern: str) -> bool:
    """Whether files in subdirectories of the static root may match (`is_recursive`, or a `**`)."""
    return is_recursive(pattern) or "**" in pattern.rpartition("/")[2]


def directory_prefix(pattern: str) -> str:
    """A regex for the directories that may hold a match of `pattern` somewhere below them.

    `/var/log/app-*/*.log` gives one accepting `/`, `/var`, `/var/log` and `/var/log/app-1`, but
    not `/var/log/nginx` nor `/var/log/app-1/old`: a directory walk uses it to prune. A part with
    `**` accepts everything below it. Over-approximates (never rejects a directory that can hold a
    match); the root directory is written as the empty string, as in `/`.join.
    """
    parts = pattern.split("/")
    directories = parts[:-1]
    if "**" in parts[-1]:
        directories.append("**")  # `/var/log/**` and `/var/log/x**` reach any depth

    def below(index: int) -> str:
        if index == len(directories):
            return ""
        part = directories[index]
        if "**" in part:
            return "(?:/.*)?"
        return f"(?:/{translate(part)}{below(index + 1)})?"

    if not directories:  # a bare file name: only the current directory
        return ""
    first = directories[0]
    if "**" in first:
        return ".*"
    return f"{translate(first)}{below(1)}"


@dataclass(frozen=True)
class PathMatcher:
    """Include globs minus exclude globs; an exclude without a `/` applies to the file name."""

    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()

    @cached_property
    def _include(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{translate(p)})" for p in self.include) or "(?!)")

    @cached_property
    def _exclude_path(self) -> re.Pattern[str]:
        paths = [translate(p) for p in self.exclude if "/" in p]
        return re.compile("|".join(f"(?:{p})" for p in paths) or "(?!)")

    @cached_property
    def _exclude_name(self) -> re.Pattern[str]:
        names = [translate(p) for p in self.exclude if "/" not in p]
        return re.compile("|".join(f"(?:{p})" for p in names) or "(?!)")

    def matches(self, path: str) -> bool:
        path = os.path.normpath(path)
        if not self._include.fullmatch(path):
            return False
        if self._exclude_path.fullmatch(path):
            return False
        # os.path on str, not pathlib: this runs once per file on every discovery pass
        return not self._exclude_name.fullmatch(os.path.basename(path))

    @cached_property
    def _directories(self) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{directory_prefix(p)})" for p in self.include) or "(?!)")

    def may_contain(self, directory: str) -> bool:
        """Whether a file somewhere below `directory` may match (excludes are not consulted)."""
        directory = os.path.normpath(directory)
        return bool(self._directories.fullmatch("" if directory == "/" else directory))

    def roots(self) -> set[str]:
        return {static_root(pattern) for pattern in self.include}


def first_matching(path: str, matchers: Iterable[tuple[str, PathMatcher]]) -> str | None:
    """The name of the first matcher whose globs cover `path`."""
    absolute = os.path.abspath(path)
    for name, matcher in matchers:
        if matcher.matches(absolute):
            return name
    return None
