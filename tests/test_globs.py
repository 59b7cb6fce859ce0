"""Globs: translation, `**`, static roots, excludes, and the pruning that discovery relies on."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logwarden.globs import (
    PathMatcher,
    directory_prefix,
    first_matching,
    is_recursive,
    spans_subdirectories,
    static_root,
    translate,
)


def glob_matches(pattern: str, path: str) -> bool:
    return re.fullmatch(translate(pattern), path) is not None


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/var/log/*.log", "/var/log/syslog.log", True),
        ("/var/log/*.log", "/var/log/nginx/access.log", False),  # `*` stays in its directory
        ("/var/log/?.log", "/var/log/a.log", True),
        ("/var/log/?.log", "/var/log/ab.log", False),
        ("/var/log/app.[0-9]", "/var/log/app.7", True),
        ("/var/log/app.[!0-9]", "/var/log/app.x", True),
        ("/var/log/app.[!0-9]", "/var/log/app.7", False),
        ("/var/log/**/*.log", "/var/log/a.log", True),  # `**/` may be no directory at all
        ("/var/log/**/*.log", "/var/log/a/b/c.log", True),
        ("/var/log/**/*.log", "/var/log/a/b/c.txt", False),
        ("/var/log/**", "/var/log/a/b/c.txt", True),  # a last `**` spans directories
        ("/var/log/app-*/x.log", "/var/log/app-1/x.log", True),
        ("/var/log/app-*/x.log", "/var/log/app-1/deeper/x.log", False),
        ("/var/log/a+b (1).log", "/var/log/a+b (1).log", True),  # regex characters are literal
        ("/var/log/[ab", "/var/log/[ab", True),  # an unclosed bracket is literal
    ],
)
def test_translate(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


@pytest.mark.parametrize(
    ("pattern", "root", "recursive", "spans"),
    [
        ("/var/log/auth.log", "/var/log", False, False),
        ("/var/log/*.log", "/var/log", False, False),
        ("/var/log/nginx/*access*.log", "/var/log/nginx", False, False),
        ("/var/log/**/*.log", "/var/log", True, True),
        ("/var/log/app-*/x.log", "/var/log", True, True),
        ("/var/log/**", "/var/log", False, True),  # is_recursive keeps its narrower meaning
        ("/x.log", "/", False, False),
        ("/*/x.log", "/", True, True),
    ],
)
def test_static_root_and_recursion(pattern: str, root: str, recursive: bool, spans: bool) -> None:
    assert static_root(pattern) == root
    assert is_recursive(pattern) is recursive
    assert spans_subdirectories(pattern) is spans


def test_excludes_without_a_slash_apply_to_the_file_name() -> None:
    matcher = PathMatcher(("/var/log/**",), exclude=("*.gz", "*.[0-9]"))
    assert matcher.matches("/var/log/auth.log")
    assert matcher.matches("/var/log/app/app.log")
    assert not matcher.matches("/var/log/auth.log.1")
    assert not matcher.matches("/var/log/app/app.log.2.gz")
    assert matcher.matches("/var/log/app/app.log.1x")


def test_excludes_with_a_slash_apply_to_the_whole_path() -> None:
    matcher = PathMatcher(("/var/log/**/*.log",), exclude=("/var/log/old/**", "**/tmp/*.log"))
    assert matcher.matches("/var/log/new/a.log")
    assert not matcher.matches("/var/log/old/a.log")
    assert not matcher.matches("/var/log/old/deeper/a.log")
    assert not matcher.matches("/var/log/x/tmp/a.log")
    assert matcher.matches("/var/log/tmp.log")  # the path exclude needs its directory
    # a path exclude is a whole-path glob: `*` does not span the leading directories
    assert PathMatcher(("/var/log/**/*.log",), exclude=("*/tmp/*.log",)).matches(
        "/var/log/tmp/a.log"
    )


def test_matches_normalises_the_path() -> None:
    matcher = PathMatcher(("/var/log/*.log",))
    assert matcher.matches("/var/log/./a.log")
    assert matcher.matches("/var/log/nginx/../a.log")


def test_first_matching_is_in_order() -> None:
    matchers = [
        ("nginx", PathMatcher(("/var/log/nginx/*.log",), exclude=("error*",))),
        ("all", PathMatcher(("/var/log/**/*.log",))),
    ]
    assert first_matching("/var/log/nginx/access.log", matchers) == "nginx"
    assert first_matching("/var/log/nginx/error.log", matchers) == "all"  # excluded by the first
    assert first_matching("/etc/passwd", matchers) is None


@pytest.mark.parametrize(
    ("pattern", "directory", "expected"),
    [
        ("/var/log/app-*/*.log", "/", True),
        ("/var/log/app-*/*.log", "/var", True),
        ("/var/log/app-*/*.log", "/var/log", True),
        ("/var/log/app-*/*.log", "/var/log/app-1", True),
        ("/var/log/app-*/*.log", "/var/log/nginx", False),
        ("/var/log/app-*/*.log", "/var/log/app-1/old", False),
        ("/var/log/app-*/*.log", "/etc", False),
        ("/var/log/*.log", "/var/log/nginx", False),  # non-recursive: only the root is listed
        ("/var/log/**/*.log", "/var/log/a/b/c", True),
        ("/var/log/**/*.log", "/var/lib", False),
        ("/var/log/**", "/var/log/a/b", True),
        ("/var/log/x**", "/var/log/a/b", True),
        ("/srv/*/logs/*.log", "/srv/web/logs", True),
        ("/srv/*/logs/*.log", "/srv/web/cache", False),
    ],
)
def test_may_contain(pattern: str, directory: str, expected: bool) -> None:
    assert PathMatcher((pattern,)).may_contain(directory) is expected


def test_may_contain_is_any_of_the_includes() -> None:
    matcher = PathMatcher(("/var/log/a/*.log", "/srv/b/*.log"))
    assert matcher.may_contain("/srv/b")
    assert matcher.may_contain("/var/log/a")
    assert not matcher.may_contain("/srv/a")
    assert PathMatcher(()).may_contain("/") is False


def test_directory_prefix_is_a_regex() -> None:
    assert re.fullmatch(directory_prefix("/var/log/*.log"), "/var/log")
    assert not re.fullmatch(directory_prefix("/var/log/*.log"), "/var/log/x")


# Property: discovery prunes with `may_contain`, so it must never reject a directory on the way
# to a path the globs match.
_SEGMENTS = st.sampled_from(["a", "b", "ab", "a.log", "b.log"])
_GLOB_SEGMENTS = st.sampled_from(["a", "b", "*", "?", "a*", "[ab]", "**", "*.log", "[!a]*"])


@given(
    pattern_parts=st.lists(_GLOB_SEGMENTS, min_size=1, max_size=5),
    path_parts=st.lists(_SEGMENTS, min_size=1, max_size=6),
)
def test_may_contain_never_prunes_a_match(pattern_parts: list[str], path_parts: list[str]) -> None:
    pattern = "/" + "/".join(pattern_parts)
    path = "/" + "/".join(path_parts)
    matcher = PathMatcher((pattern,))
    if not matcher.matches(path):
        return
    for depth in range(len(path_parts)):
        directory = "/" + "/".join(path_parts[:depth])
        assert matcher.may_contain(directory), (pattern, path, directory)
