"""Tests for logwarden.patterns: placeholder fragments, expansion, and the prefilter rewrite."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import re2
import regex
from hypothesis import given
from hypothesis import strategies as st

from logwarden import patterns
from logwarden.patterns import (
    KNOWN_TYPES,
    PLACEHOLDERS,
    PatternError,
    as_written,
    capture_names,
    compile_pattern,
    expand,
    prefilter_form,
    span_search,
    tokenize,
    written_position,
)

ENGINES = ("re2", "re", "regex")


def compile_in(engine: str, pattern: str) -> Any:
    if engine == "re2":
        return re2.compile(pattern, patterns.re2_options())
    return (re if engine == "re" else regex).compile(pattern)


# ---------------------------------------------------------------- fragments

# placeholder type → (what it must match whole, what it must not match whole)
SAMPLES: dict[str, tuple[list[str], list[str]]] = {
    "ipv4": (
        ["1.2.3.4", "0.0.0.0", "255.255.255.255", "203.0.113.9", "10.0.0.1"],
        ["256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "a.b.c.d", "1.2.3.4 "],
    ),
    "ipv6": (
        [
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "fe80::1%eth0",
            "::ffff:192.0.2.1",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "2001:db8:0:0:1::1",
            "1:2:3:4:5:6:7::",
            "2001:DB8::AbCd",
            "64:ff9b::192.0.2.33",
        ],
        ["1:2:3", "12:34:56", "1:2:3:4:5:6:7:8:9", "12345::1", "1:::2", "g::1", "1.2.3.4"],
    ),
    "ip": (
        ["1.2.3.4", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"],
        ["1.2.3", "host.example.com", "256.0.0.1", ""],
    ),
    "host": (
        ["example.com", "web-1", "a.b.c", "1.2.3.4", "::1", "2001:db8::1", "localhost"],
        ["-web", "web-", "a..b", "", "foo_bar"],
    ),
    "hostname": (["example.com", "x", "web-01.eu-west.example.org"], ["-a", "a-", "a b", ""]),
    "port": (["0", "22", "443", "8080", "65535"], ["65536", "99999", "-1", "022", ""]),
    "mac": (
        ["00:11:22:33:44:55", "AA-BB-CC-DD-EE-FF"],
        ["00:11:22:33:44", "00:11:22:33:44:55:66", "00-11:22:33:44:55", "0:1:2:3:4:5"],
    ),
    "user": (["root", "invalid", "Ad.min-1", "ü@x", "a\ufffdb"], ["", "a b", "a\tb"]),
    "notspace": (["x", "[::1]:22"], ["", " x"]),
    "word": (["abc", "a_1", "_"], ["", "a-b", "a b", "é"]),
    "int": (["0", "42", "-7", "+13", "007"], ["", "1.5", "-", "1e3", "4x"]),
    "num": (["0", "3.14", "-2.5e-3", ".5", "+1E6", "10"], ["", "1.", "e5", "1.2.3", "--1"]),
    "hex": (["ff", "0xDEADbeef", "0", "0X1"], ["", "0x", "xyz", "fg"]),
    "uuid": (
        ["123e4567-e89b-12d3-a456-426614174000"],
        ["123e4567-e89b-12d3-a456-42661417400", "123e4567e89b12d3a456426614174000"],
    ),
    "iso8601": (
        [
            "2026-11-24",
            "2026-11-24T13:19:38",
            "2026-11-24T13:19:38.120512Z",
            "2026-11-24 13:19",
            "2026-11-24T13:19:38+01:00",
            "2026-11-24T13:19:38-0500",
            "2026-11-24t13:19:38,5z",
        ],
        [
            "2026-13-01",
            "2026-11-32",
            "26-11-24",
            "2026-11-24T24:00",
            "2026/11/24",
            "2026-11-24T13:19:38+",
        ],
    ),
    "syslog_time": (
        ["Nov 24 13:19:38", "Jan  1 00:00:00", "Feb 09 23:59:60"],
        ["Nov 24 13:19", "Foo 24 13:19:38", "Nov 32 13:19:38", "Nov 24 25:00:00"],
    ),
    "http_method": (["GET", "POST", "OPTIONS", "PATCH"], ["get", "GETS", "FETCH", ""]),
    "http_status": (["200", "404", "503", "101"], ["600", "20", "2000", "099"]),
    "path": (["/", "/var/log/auth.log", "/a//b", "/x:y"], ["", "var/log", "/a b", '/a"']),
    "quoted": (['""', '"a b"', r'"say \"hi\""', r'"back\\"'], ['"', '"a', 'a"', r'"a\"']),
    "data": (["", "anything at all"], []),
    "greedydata": (["", "anything at all"], []),
}


def test_every_type_has_samples() -> None:
    assert set(SAMPLES) == set(KNOWN_TYPES)


@pytest.mark.parametrize("kind", sorted(PLACEHOLDERS))
@pytest.mark.parametrize("engine", ENGINES)
def test_fragment_accepts_good_and_rejects_bad_samples(kind: str, engine: str) -> None:
    compiled = compile_in(engine, PLACEHOLDERS[kind])
    good, bad = SAMPLES[kind]
    assert [s for s in good if compiled.fullmatch(s) is None] == []
    assert [s for s in bad if compiled.fullmatch(s) is not None] == []


@pytest.mark.parametrize("kind", sorted(PLACEHOLDERS))
def test_fragment_has_no_capture_of_its_own(kind: str) -> None:
    assert compile_in("re", PLACEHOLDERS[kind]).groups == 0


# Text made of what the fragments are about, so that random strings come close to matching.
FRAGMENT_TEXT = st.text(alphabet='0123456789abcdefABCDEFxTZz:.-/%+ _"\\\tN ov', max_size=40)


@pytest.mark.parametrize("kind", sorted(PLACEHOLDERS))
@given(text=FRAGMENT_TEXT)
def test_fragment_finds_the_same_span_in_every_engine(kind: str, text: str) -> None:
    """Unanchored, with whatever surrounds it: leftmost-first must agree, not just full matches."""
    fragment = f"(?P<it>{PLACEHOLDERS[kind]})"
    spans = set()
    for engine in ENGINES:
        found = compile_in(engine, fragment).search(text)
        spans.add(None if found is None else found.span("it" if engine != "re2" else 1))
    assert len(spans) == 1, spans


@pytest.mark.parametrize("kind", sorted(PLACEHOLDERS))
def test_fragment_does_not_backtrack_catastrophically(kind: str) -> None:
    """The backtracking engines (`regex` rules, the tests' reference) stay fast on hostile text."""
    compiled = re.compile(f"(?:{PLACEHOLDERS[kind]})!")
    hostile = [
        "1." * 300,
        "1:" * 300,
        "a-" * 300,
        "a." * 300,
        "/" * 600,
        '"\\' * 300,
        "2026-11-24T10:00:00." + "1" * 500,
        "ffff:" * 120,
        "a" * 600,
    ]
    started = time.perf_counter()
    for text in hostile:
        compiled.search(text + "?")
    assert time.perf_counter() - started < 2.0


def test_ip_in_context() -> None:
    compiled = re2.compile(expand("from %{ip} port"))
    for line, ip in [
        ("from 203.0.113.9 port", "203.0.113.9"),
        ("from ::1 port", "::1"),
        ("from fe80::1%eth0 port", "fe80::1%eth0"),
    ]:
        found = compiled.search(line)
        assert found is not None and found.group("ip") == ip
    # boundaries beyond \b are the pattern's: a longer dotted run is not an address here
    assert compiled.search("from 1.2.3.4.5 port") is None
    assert re2.search(PLACEHOLDERS["ipv4"], "x 10.0.0.256 y") is None


# ---------------------------------------------------------------- expansion


def test_expand_names_the_capture_after_the_type_or_the_given_name() -> None:
    assert expand("a %{int} b") == f"a (?P<int>{PLACEHOLDERS['int']}) b"
    assert expand("%{ip:src} > %{ip:dst}") == (
        f"(?P<src>{PLACEHOLDERS['ip']}) > (?P<dst>{PLACEHOLDERS['ip']})"
    )
    assert capture_names(expand("(?P<a>x)%{word}(?<b>y)(?:z)(?<=q)")) == ["a", "word", "b"]


def test_expand_leaves_escapes_and_classes_alone() -> None:
    assert expand(r"\%{ip} [%{ip}] 100%") == r"\%{ip} [%{ip}] 100%"


def test_unknown_type_suggests_the_close_one_and_lists_all() -> None:
    with pytest.raises(PatternError) as caught:
        expand("from %{ipp} port %{integer}")
    first, second = caught.value.problems
    assert "unknown placeholder type 'ipp' in %{ipp} (did you mean %{ip}?)" in first
    assert "known types: " + ", ".join(KNOWN_TYPES) in first
    assert "'integer'" in second
    with pytest.raises(PatternError, match=re.escape("'IP' in %{IP} (did you mean %{ip}?)")):
        expand("%{IP}")


def test_same_capture_twice_asks_for_names() -> None:
    with pytest.raises(PatternError) as caught:
        expand("%{ip} -> %{ip}")
    assert caught.value.problems == (
        "capture name 'ip' is used twice (%{ip} and %{ip}): give each its own name,"
        " e.g. %{ip:src} and %{ip:dst}",
    )
    with pytest.raises(PatternError, match="'user' is used twice"):
        expand("(?P<user>x) %{user}")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("%{ip:}", "capture name '' in %{ip:} must be letters"),
        ("%{ip:1st}", "capture name '1st'"),
        ("%{ip:a-b}", "capture name 'a-b'"),
        ("%{}", "'%{}' is not a placeholder"),
        ("%{IP address}", "is not a placeholder"),
        ("x %{ip", "is not closed"),
    ],
)
def test_malformed_placeholders(pattern: str, message: str) -> None:
    with pytest.raises(PatternError, match=re.escape(message)):
        expand(pattern)


def test_expanded_placeholders_compile_in_every_engine() -> None:
    pattern = expand(" ".join(f"%{{{kind}}}" for kind in KNOWN_TYPES))
    for engine in ENGINES:
        assert set(compile_in(engine, pattern).groupindex) == set(KNOWN_TYPES)


# ---------------------------------------------------------------- tokens and the prefilter form


def test_tokenize_keeps_classes_and_escapes_whole() -> None:
    pattern = r"a[]$]b[^]x]c[[:alpha:]$]\$\Q$^\E\x{24}\p{Greek}(?P<n>.)%{ip}$"
    kinds = [(t.kind, t.text) for t in tokenize(pattern)]
    assert kinds == [
        ("char", "a"),
        ("class", "[]$]"),
        ("char", "b"),
        ("class", "[^]x]"),
        ("char", "c"),
        ("class", "[[:alpha:]$]"),
        ("escape", r"\$"),
        ("escape", r"\Q$^\E"),
        ("escape", r"\x{24}"),
        ("escape", r"\p{Greek}"),
        ("group", "(?P<n>"),
        ("char", "."),
        ("char", ")"),
        ("placeholder", "%{ip}"),
        ("char", "$"),
    ]
    assert "".join(t.text for t in tokenize(pattern)) == pattern


def test_prefilter_form_rewrites_only_line_anchors() -> None:
    assert prefilter_form(r"^a$") == r"(?:(?m:^)a(?m:\r?$))"
    assert prefilter_form(r"\Aa\z") == r"(?:(?m:^)a(?m:\r?$))"
    untouched = r"[$^][]$][^]$]\$\^\Q$\E[[:alpha:]^]x\b\B"
    assert prefilter_form(untouched) == f"(?:{untouched})"


def test_prefilter_form_captures_nothing() -> None:
    """Without groups RE2 finds a hit from its DFA alone; escaped and class parens stay."""
    pattern = r"a(b)c(?P<x>d)(?<y>e)(?:f)(?i:g)(?i)\(h\)[(]\Q(\E"
    form = prefilter_form(pattern)
    assert form == r"(?:a(?:b)c(?:d)(?:e)(?:f)(?i:g)(?i)\(h\)[(]\Q(\E)"
    assert re2.compile(form).groups == 0
    assert re2.compile(form).search("abcdefG(h)((") is not None


def test_prefilter_form_keeps_flags_scoped() -> None:
    combined = re2.compile("|".join(prefilter_form(p) for p in ["(?i)abc", "def"]))
    assert combined.search("ABC") is not None
    assert combined.search("DEF") is None


def test_prefilter_form_finds_the_line_in_raw_crlf_bytes() -> None:
    options = patterns.re2_options(combined=True)
    combined = re2.compile(prefilter_form(expand(r"^done %{int}$")), options)
    found = combined.search(b"x\r\ndone 42\r\ny\r\n")
    assert found is not None and found.span() == (3, 11)
    assert combined.search(b"x\r\nundone 42\r\n") is None


# ---------------------------------------------------------------- compiling


def test_re2_rejects_lookaround_with_a_hint() -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern(r"(?<=user )\w+", "re2")
    (problem,) = caught.value.problems
    assert problem.startswith("RE2 cannot compile this pattern: invalid perl operator: (?<")
    assert 'engine = "regex"' in problem
    with pytest.raises(PatternError, match=r"RE2 writes the end of the text as \\z"):
        compile_pattern(r"a\Z", "re2")
    with pytest.raises(PatternError, match=r"RE2 syntax: https://github.com/google/re2"):
        compile_pattern(r"a(b", "re2")


def test_regex_engine_errors_are_problems() -> None:
    assert compile_pattern(r"(?<=user )\w+", "regex").search("user root").group() == "root"
    with pytest.raises(PatternError, match="the regex engine cannot compile this pattern"):
        compile_pattern(r"a(b", "regex")


def test_re2_errors_do_not_reach_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PatternError):
        compile_pattern(r"(?!x)y", "re2")
    assert capfd.readouterr().err == ""


@given(text=st.binary(max_size=30), pos=st.integers(0, 30))
def test_span_search_agrees_with_the_public_search(text: bytes, pos: int) -> None:
    compiled = re2.compile(r"(?P<a>[a-c]+)(?P<b>x)?", patterns.re2_options())
    found = compiled.search(text, pos, len(text))
    spans = span_search(compiled)(text, pos, len(text))
    if found is None:
        assert spans[0] == (-1, -1)
    else:
        assert spans == [found.span(0), found.span(1), found.span(2)]


def test_errors_are_mapped_back_to_the_pattern_as_written() -> None:
    written = r"a %{ip} b %{int:n} c"
    expanded = expand(written)
    assert as_written(f"quoting: {expanded[1:]}", written) == r"quoting:  %{ip} b %{int:n} c"
    assert written_position(0, written) == 0
    assert written_position(expanded.index("(?P<ip>") + 40, written) == written.index("%{ip}")
    assert written_position(expanded.index(" b "), written) == written.index(" b ")
    assert written_position(len(expanded), written) == len(written)
    with pytest.raises(PatternError) as caught:
        compile_pattern(expand(written + "("), "re2", written + "(")
    assert caught.value.expanded == expand(written + "(")
    assert "%{ip}" in caught.value.problems[0] and "(?P<ip>" not in caught.value.problems[0]
    with pytest.raises(PatternError) as caught:
        compile_pattern("plain(", "re2")
    assert caught.value.expanded is None
