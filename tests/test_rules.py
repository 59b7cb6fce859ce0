"""Tests for logwarden.rules: compiling a config's rules and finding every match in a block."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regex
from hypothesis import example, given
from hypothesis import strategies as st

from logwarden import config
from logwarden.framing import Block
from logwarden.patterns import expand
from logwarden.problems import ConfigError
from logwarden.rules import Match, RuleSet

WriteConfig = Callable[..., Path]

HEADER = """
[daemon]
state_dir = "state"

[sources.auth]
paths = ["logs/auth.log"]

[sources.web]
paths = ["logs/web.log"]

[reports.security]
dir = "reports/security"

[reports.ops]
dir = "reports/ops"
"""


def load(write_config: WriteConfig, rules: str) -> RuleSet:
    """A rule set compiled from HEADER plus `rules` (TOML), through `config.load`."""
    path = write_config(HEADER + textwrap.dedent(rules))
    loaded, sink = config.load(path)
    return RuleSet.compile(loaded, sink)


def problems(write_config: WriteConfig, rules: str) -> list[tuple[int | None, str, str]]:
    """(line, key, message) of every problem compiling the rules raises."""
    with pytest.raises(ConfigError) as caught:
        load(write_config, rules)
    return [(p.line, p.key, p.message) for p in caught.value.problems]


def scan(rules: RuleSet, data: bytes, source: str | None = None, **block: Any) -> list[Match]:
    offset, line_no = block.pop("offset", 0), block.pop("line_no", 1)
    return rules.for_source(source).scan(Block(data, offset, line_no, **block))


def brief(matches: list[Match]) -> list[tuple[str, int | None, dict[str, str | None]]]:
    return [(m.rule, m.line_no, m.captures) for m in matches]


# ---------------------------------------------------------------- what matches


def test_any_pattern_matches_and_any_exclude_vetoes(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.ssh]
        report = "security"
        match = ['Failed password for %{user} from %{ip}', 'Invalid user %{user} from %{ip}']
        exclude = ['from 10\\.0\\.', 'from 192\\.168\\.']
        """,
    )
    data = (
        b"Failed password for root from 203.0.113.9 port 22\n"
        b"Invalid user admin from 198.51.100.7\n"
        b"Failed password for root from 10.0.0.5\n"
        b"Invalid user bob from 192.168.1.1\n"
        b"Accepted password for root from 203.0.113.9\n"
    )
    assert brief(scan(rules, data)) == [
        ("ssh", 1, {"user": "root", "ip": "203.0.113.9"}),
        ("ssh", 2, {"user": "admin", "ip": "198.51.100.7"}),
    ]


def test_match_records_where_and_what(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.boom]
        report = "ops"
        severity = "critical"
        match = ['boom (?P<what>\\w+)']
        """,
    )
    data = b"quiet\r\nboom disk\r\nquiet\n"
    assert scan(rules, data, offset=1000, line_no=41) == [
        Match(
            rule="boom",
            severity="critical",
            report="ops",
            offset=1007,
            line_no=42,
            line="boom disk",
            truncated=False,
            captures={"what": "disk"},
        ),
    ]
    assert scan(rules, data, line_no=None)[0].line_no is None


def test_sources_scope_rules(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.ssh]
        report = "security"
        sources = ["auth"]
        match = ['sshd']

        [rules.any]
        report = "ops"
        match = ['sshd|nginx']

        [rules.web]
        report = "ops"
        sources = ["web", "auth"]
        match = ['nginx|sshd']
        """,
    )
    line = b"sshd nginx\n"
    assert [m.rule for m in scan(rules, line, "auth")] == ["ssh", "any", "web"]
    assert [m.rule for m in scan(rules, line, "web")] == ["any", "web"]
    assert [m.rule for m in scan(rules, line, None)] == ["ssh", "any", "web"]  # a file of no source
    assert [m.rule for m in scan(rules, line, "elsewhere")] == ["any"]
    assert rules.for_source("auth") is rules.for_source("auth")
    assert rules.for_source("auth") is rules.for_source(None)  # same rules, one compiled matcher


def test_several_rules_on_one_line_in_config_order(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.zeta]
        report = "ops"
        match = ['ERROR']
        [rules.alpha]
        report = "security"
        severity = "error"
        match = ['ERROR (?P<code>E[0-9]+)']
        [rules.mid]
        report = "ops"
        match = ['nothing here']
        """,
    )
    matches = scan(rules, b"ERROR E42\nok\nERROR\n")
    assert [(m.rule, m.severity, m.report, m.line_no) for m in matches] == [
        ("zeta", "warning", "ops", 1),
        ("alpha", "error", "security", 1),
        ("zeta", "warning", "ops", 3),
    ]
    assert rules.rules == ("zeta", "alpha", "mid")


def test_captures_come_from_the_first_matching_pattern(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.login]
        report = "security"
        match = ['user (?P<name>\\w+)( from %{ip})?', 'user (?P<other>\\w+)']
        """,
    )
    assert brief(scan(rules, b"user root\nuser bob from ::1\n")) == [
        ("login", 1, {"name": "root", "ip": None}),
        ("login", 2, {"name": "bob", "ip": "::1"}),
    ]


def test_line_anchors_under_crlf_and_mid_block(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.dollar]
        report = "ops"
        match = ['done$']
        [rules.z]
        report = "ops"
        match = ['^start \\w+\\z']
        [rules.a]
        report = "ops"
        match = ['\\Aend']
        """,
    )
    data = b"x\r\ndone\r\nundone \r\nstart now\r\nend\r\nnot end\nstart later\ndone"
    assert brief(scan(rules, data)) == [
        ("dollar", 2, {}),
        ("z", 4, {}),
        ("a", 5, {}),
        ("z", 7, {}),
        ("dollar", 8, {}),
    ]
    # a line ending in two CRs keeps one: `$` is then after a CR the pattern does not allow for
    assert scan(rules, b"done\r\r\n") == []


def test_invalid_utf8_is_matched_as_replacement_characters(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.user]
        report = "security"
        match = ['Invalid user (?P<user>.+) from (?P<ip>\\S+)$']
        [rules.any]
        report = "ops"
        match = ['^x.y$']
        """,
    )
    data = (
        b"Invalid user ok from 1.1.1.1\n"
        b"Invalid user ro\xffot from 2.2.2.2\r\n"
        b"x\xc3y\n"  # a cut multibyte character is one U+FFFD too
        b"x\xc3\xa9y\n"
        b"Invalid user \xe9\xe9 from 3.3.3.3\n"
        b"x\xffy"
    )
    matches = scan(rules, data, offset=10)
    assert [(m.rule, m.line_no, m.offset, m.line, m.captures.get("user")) for m in matches] == [
        ("user", 1, 10, "Invalid user ok from 1.1.1.1", "ok"),
        ("user", 2, 39, "Invalid user ro\ufffdot from 2.2.2.2", "ro\ufffdot"),
        ("any", 3, 72, "x\ufffdy", None),
        ("any", 4, 76, "x\u00e9y", None),
        ("user", 5, 81, "Invalid user \ufffd\ufffd from 3.3.3.3", "\ufffd\ufffd"),
        ("any", 6, 110, "x\ufffdy", None),
    ]


def test_nul_bytes_are_ordinary_characters(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.nul]
        report = "ops"
        match = ['a\\x00(?P<rest>.*)$']
        """,
    )
    assert brief(scan(rules, b"\x00\x00\na\x00b\x00c\n")) == [("nul", 2, {"rest": "b\x00c"})]


def test_truncated_block_is_the_cut_line(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.long]
        report = "ops"
        match = ['^GET (?P<path>/\\S*)']
        """,
    )
    cut = b"GET /" + b"a" * 300 + b"\xe2\x82"  # cut inside a multibyte character
    (match,) = scan(rules, cut, truncated=True, line_no=None, offset=5)
    assert (match.truncated, match.offset, match.line_no) == (True, 5, None)
    assert match.line == "GET /" + "a" * 300 + "\ufffd"
    assert match.captures == {"path": "/" + "a" * 300 + "\ufffd"}


def test_regex_engine_allows_lookaround_and_backreferences(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.after]
        report = "ops"
        engine = "regex"
        match = ['(?<=user )%{user}(?! from 10\\.)']
        [rules.twice]
        report = "ops"
        engine = "regex"
        match = ['(?<!\\S)(?P<word>\\S+) (?P=word)(?!\\S)']
        [rules.plain]
        report = "ops"
        match = ['user']
        """,
    )
    data = b"user root from 1.2.3.4\nthe the end\nuser bob from 10.0.0.1\nb\xffb b\xffb\n"
    assert brief(scan(rules, data)) == [
        ("after", 1, {"user": "root"}),
        ("plain", 1, {}),
        ("twice", 2, {"word": "the"}),
        # the lookahead vetoes "bob", and backtracking finds "bo": a regex rule's own business
        ("after", 3, {"user": "bo"}),
        ("plain", 3, {}),
        ("twice", 4, {"word": "b\ufffdb"}),
    ]


def test_runaway_regex_times_out_as_no_match(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.runaway]
        report = "ops"
        engine = "regex"
        match_timeout = "20ms"
        match = ['^(a|aa)+$']
        [rules.after]
        report = "ops"
        match = ['^a']
        """,
    )
    hostile = b"a" * 80 + b"b\n"
    matches = scan(rules, hostile + b"aaaa\n" + hostile)
    assert brief(matches) == [
        ("after", 1, {}),
        ("runaway", 2, {}),
        ("after", 2, {}),
        ("after", 3, {}),
    ]
    assert rules.timeouts() == {"runaway": 2}


def test_matcher_without_rules(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.auth-only]
        report = "ops"
        sources = ["auth"]
        match = ['x']
        """,
    )
    assert rules.for_source("web").rules == ()
    assert scan(rules, b"x\n" * 10, "web") == []
    assert scan(rules, b"", "auth") == []


def test_only_restricts_and_names_what_exists(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.a]
        report = "ops"
        match = ['x']
        [rules.b]
        report = "ops"
        match = ['x']
        [rules.c]
        report = "ops"
        match = ['x']
        """,
    )
    assert rules.only(["c", "a"]).rules == ("a", "c")
    assert [m.rule for m in scan(rules.only(["b"]), b"x\n")] == ["b"]
    with pytest.raises(KeyError, match="no rule named 'd'; known rules: a, b, c"):
        rules.only(["a", "d"])


def test_long_lines_skip_the_set_and_match_the_same(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        """
        [rules.tail]
        report = "ops"
        match = ['(?P<end>end)$']
        exclude = ['^skip']
        [rules.head]
        report = "ops"
        match = ['^begin']
        """,
    )
    long = b"begin " + b"x" * 20000 + b" end\n"
    matches = scan(rules, long + b"skip" + long)
    assert brief(matches) == [("tail", 1, {"end": "end"}), ("head", 1, {})]


# ---------------------------------------------------------------- what is wrong with a config


def test_re2_compile_failure_suggests_the_regex_engine(write_config: WriteConfig) -> None:
    found = problems(
        write_config,
        """
        [rules.look]
        report = "ops"
        match = ['ok', '(?<=user )\\w+']
        """,
    )
    assert found == [
        (
            18,
            "rules.look.match[1]",
            "RE2 cannot compile this pattern: invalid perl operator: (?<=; lookaround and"
            ' backreferences need engine = "regex" (per line, match_timeout)',
        )
    ]


def test_re2_errors_do_not_reach_stderr(
    write_config: WriteConfig, capfd: pytest.CaptureFixture[str]
) -> None:
    problems(
        write_config,
        """
        [rules.bad]
        report = "ops"
        match = ['(unclosed']
        """,
    )
    assert capfd.readouterr().err == ""


def test_every_problem_is_reported_at_once(write_config: WriteConfig) -> None:
    found = problems(
        write_config,
        """
        [rules.typo]
        report = "ops"
        match = ['from %{ipp}']
        [rules.twice]
        report = "ops"
        match = ['%{ip} to %{ip}']
        exclude = ['(']
        [rules.count]
        report = "security"
        match = ['login %{user}']
        threshold = { key = "ip", count = 3, within = "1m" }
        [rules.fine]
        report = "ops"
        match = ['ok (?P<n>\\d+)']
        tests = [ { line = "ok 7", expect = { n = "8" } } ]
        """,
    )
    assert [(line, key) for line, key, _ in found] == [
        (18, "rules.typo.match[0]"),
        (21, "rules.twice.match[0]"),
        (22, "rules.twice.exclude[0]"),
        (26, "rules.count.threshold.key"),
        (30, "rules.fine.tests[0]"),
    ]
    messages = [message for _, _, message in found]
    assert "did you mean %{ip}?" in messages[0]
    assert "e.g. %{ip:src} and %{ip:dst}" in messages[1]
    assert messages[3] == "match[0] has no capture named 'ip' to count by (its captures: user)"
    assert messages[4] == "captures differ: n = '7' (expected '8')"


def test_rule_tests_pass_through_the_real_path(write_config: WriteConfig) -> None:
    rules = load(
        write_config,
        r"""
        [rules.ssh]
        report = "security"
        match = ['Failed password for (invalid user )?%{user} from %{ip}$']
        exclude = ['from 10\.']
        [[rules.ssh.tests]]
        line = "sshd[1]: Failed password for root from 203.0.113.9"
        expect = { user = "root", ip = "203.0.113.9" }
        [[rules.ssh.tests]]
        line = "sshd[1]: Failed password for invalid user x from ::1\r"
        expect = { user = "x" }
        [[rules.ssh.tests]]
        line = "sshd[1]: Failed password for root from 10.0.0.1"
        expect = false
        [[rules.ssh.tests]]
        line = "sshd[1]: Failed password for root from 203.0.113.9"
        expect = {}
        """,
    )
    assert rules.rules == ("ssh",)


def test_failing_rule_tests_say_what_came_out(write_config: WriteConfig) -> None:
    found = problems(
        write_config,
        r"""
        [rules.ssh]
        report = "security"
        match = ['Failed password for %{user} from %{ip}']
        exclude = ['from 10\.']
        tests = [
          { line = "Failed password for root from 10.0.0.1", expect = { user = "root" } },
          { line = "Failed password for root from 1.2.3.4", expect = false },
          { line = "Failed password for root from 1.2.3.4", expect = { user = "al", host = "x" } },
          { line = "Accepted password for root from 1.2.3.4", expect = {} },
          { line = "two\nlines", expect = false },
        ]
        """,
    )
    assert [(key, message) for _, key, message in found] == [
        (
            "rules.ssh.tests[0]",
            "expected a match with {'user': 'root'}, but the line did not match"
            " (exclude[0] vetoed it)",
        ),
        (
            "rules.ssh.tests[1]",
            "expected no match, but it matched with captures {'user': 'root', 'ip': '1.2.3.4'}",
        ),
        (
            "rules.ssh.tests[2]",
            "captures differ: user = 'root' (expected 'al'); no capture"
            " named 'host' (the captures are user, ip)",
        ),
        ("rules.ssh.tests[3]", "expected a match with {}, but the line did not match"),
        ("rules.ssh.tests[4]", "a test line is one line: it cannot contain a newline"),
    ]
    assert {line for line, _, _ in found} == {20}


# ---------------------------------------------------------------- the fast path is the definition

# Fragments of lines, chosen to meet the traps: CR before LF, invalid and cut UTF-8, NUL, empty
# lines, and text around the patterns' anchors and classes.
FRAGMENTS = [
    b"\n",
    b"\n",
    b"\r",
    b"\r\n",
    b"",
    b" ",
    b"foo",
    b"bar",
    b"ERROR ",
    b"E42",
    b"user=",
    b"root",
    b"1.2.3.4",
    b"::1",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\x00",
    b"x",
    b"b",
    b"ab",
    b"oo",
    "\u00fc".encode(),
    b"\xe2\x82\xac",
]

# anchors, `.` and a negated class: the start of the property rules, and of test_accelerate's
ANCHOR_RULES = r"""
[rules.end]
report = "ops"
match = ['foo$', 'bar\z']
[rules.start]
report = "ops"
match = ['^bar(?P<rest>.?)', '\Afoo']
exclude = ['^barb']
[rules.dot]
report = "ops"
match = ['o.b', 'b[^a]r']
"""
PROPERTY_RULES = (
    ANCHOR_RULES
    + r"""[rules.error]
report = "security"
match = ['ERROR (?P<code>E[0-9]+)?']
[rules.user]
report = "security"
match = ['user=%{user}', '(?i)ROOT%{ip}?']
exclude = ['user=root\r']
[rules.empty]
report = "ops"
match = ['^$']
[rules.look]
report = "ops"
engine = "regex"
sources = ["web"]
match = ['(?<=foo)bar', '(o)\1(?P<after>.)']
"""
)


@pytest.fixture(scope="module")
def property_rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path = tmp_path_factory.mktemp("rules") / "logwarden.toml"
    path.write_text(textwrap.dedent(HEADER) + PROPERTY_RULES)
    loaded, sink = config.load(path)
    return RuleSet.compile(loaded, sink)


def reference(rules: RuleSet, source: str, block: Block) -> list[tuple[Any, ...]]:
    """The definition, line by line in Python `re` (`regex` for regex rules), no prefilter."""
    out = []
    lines = block.data.split(b"\n")
    if block.data.endswith(b"\n"):
        lines.pop()
    offset, line_no = block.offset, block.line_no
    for raw in lines if block.data else []:
        text = (raw[:-1] if raw.endswith(b"\r") else raw).decode("utf-8", "replace")
        for name in rules.for_source(source).rules:
            rule = rules.rule(name)
            engine: Any = regex if rule.config.engine == "regex" else re
            flags = 0 if engine is regex else re.ASCII  # RE2's \w, \s and \b are ASCII
            found = None
            for pattern in rule.config.match:
                found = engine.search(expand(pattern).replace(r"\z", r"\Z"), text, flags)
                if found:
                    break
            if found and not any(engine.search(x, text, flags) for x in rule.config.exclude):
                out.append((name, offset, line_no, text, found.groupdict()))
        offset += len(raw) + 1
        line_no = None if line_no is None else line_no + 1
    return out


@given(
    data=st.lists(st.sampled_from(FRAGMENTS), max_size=40).map(b"".join),
    offset=st.integers(0, 10**6),
    line_no=st.none() | st.integers(1, 1000),
    source=st.sampled_from(["auth", "web"]),
)
@example(data=b"foo\r\nbar\r", offset=0, line_no=1, source="auth")
@example(data=b"x\xff\nfoo\nfoo\xff\n\nbar\n", offset=0, line_no=1, source="auth")
@example(data=b"foobar\r\nooo\xff\n", offset=0, line_no=1, source="web")
def test_scan_equals_the_line_by_line_definition(
    property_rules: RuleSet, data: bytes, offset: int, line_no: int | None, source: str
) -> None:
    block = Block(data, offset, line_no)
    found = [
        (m.rule, m.offset, m.line_no, m.line, m.captures)
        for m in property_rules.for_source(source).scan(block)
    ]
    assert found == reference(property_rules, source, block)


@given(data=st.lists(st.sampled_from([f for f in FRAGMENTS if b"\n" not in f]), max_size=20))
def test_truncated_scan_equals_the_definition(property_rules: RuleSet, data: list[bytes]) -> None:
    block = Block(b"".join(data), 7, None, truncated=True)
    found = [
        (m.rule, m.offset, m.line_no, m.line, m.captures)
        for m in property_rules.for_source("web").scan(block)
    ]
    assert found == reference(property_rules, "web", block)
    assert all(m.truncated for m in property_rules.for_source("web").scan(block))


def test_changes_since_names_added_changed_and_removed_rules(write_config: WriteConfig) -> None:
    """A reload keeps the threshold windows of `unchanged` rules; test samples do not count."""
    before = load(
        write_config,
        """
        [rules.same]
        match = ['a %{word}']
        report = "ops"
        [rules.samples]
        match = ['b %{word}']
        report = "ops"
        [rules.count]
        match = ['c %{ip}']
        report = "ops"
        threshold = { key = "ip", count = 5, within = "1m" }
        [rules.moved]
        match = ['d %{word}']
        report = "ops"
        [rules.gone]
        match = ['e %{word}']
        report = "ops"
        """,
    )
    after = load(
        write_config,
        """
        [rules.same]
        match = ['a %{word}']
        report = "ops"
        [rules.samples]
        match = ['b %{word}']
        report = "ops"
        tests = [{ line = "b x", expect = { word = "x" } }]
        [rules.count]
        match = ['c %{ip}']
        report = "ops"
        threshold = { key = "ip", count = 6, within = "1m" }
        [rules.moved]
        match = ['d %{word}']
        report = "security"
        [rules.new]
        match = ['f %{word}']
        report = "ops"
        """,
    )
    changes = after.changes_since(before)
    assert changes.added == ("new",)
    assert changes.changed == ("count", "moved")
    assert changes.removed == ("gone",)
    assert changes.unchanged == ("same", "samples")
    assert before.changes_since(before).unchanged == before.rules


def test_explain_agrees_with_scan_on_the_shipped_rules_and_corpora() -> None:
    """`SourceMatcher.explain` on every line of the attack corpora: its verdict is scan's, and its
    why (patterns found, excludes found, prefilter) never contradicts that verdict."""
    from logwarden.framing import split_lines
    from logwarden.rules import load_config

    root = Path(__file__).resolve().parent.parent
    _, rules = load_config(root / "config" / "logwarden.toml")
    matcher = rules.for_source(None)
    lines = [
        raw
        for corpus in sorted((root / "tests" / "data").glob("attack-*.log"))
        for _, _, raw in split_lines(Block(corpus.read_bytes(), 0, 1))
    ]
    assert len(lines) > 100
    matched = 0
    for raw in lines:
        trace = matcher.explain(Block(raw + b"\n", 0, 1))
        assert trace.matches == tuple(matcher.scan(Block(raw + b"\n", 0, 1)))
        found = {match.rule: match.captures for match in trace.matches}
        assert [t.rule for t in trace.rules] == list(matcher.rules)
        for rule in trace.rules:
            assert rule.captures == found.get(rule.rule)
            if rule.captures is not None:
                matched += 1
                assert rule.patterns and not rule.excludes and trace.prefilter is not False
            else:
                assert not rule.patterns or rule.excludes
            if rule.patterns:  # the prefilter never misses what a pattern finds
                assert rule.prefilter is not False and trace.prefilter is not False
    assert matched > 50
