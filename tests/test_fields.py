"""Structured lines (`parse = "json" | "logfmt"`): `where`, `field`, `capture_fields` and
`timestamp.field`, through the real config loader, rule set, `scan` and `explain` paths, and once
through the daemon."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import re2
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness import Daemon, published_records, wait_until, write_config
from logwarden import config, fields
from logwarden.config import Config
from logwarden.explain import Explainer
from logwarden.fields import lookup, parse_json, parse_logfmt
from logwarden.framing import Block
from logwarden.problems import ConfigError
from logwarden.rules import Match, RuleSet
from logwarden.scan import Scanner

WriteConfig = Callable[..., Path]
SCAN: list[str | Path] = [sys.executable, "-m", "logwarden", "scan", "-c"]

HEADER = """
[daemon]
state_dir = "state"

[sources.app]
paths = ["logs/app.log"]
parse = "json"
timezone = "UTC"

[sources.kv]
paths = ["logs/kv.log"]
parse = "logfmt"

[sources.plain]
paths = ["logs/plain.log"]

[reports.out]
dir = "reports"
"""

RULES = """
[rules.api-errors]
sources = ["app", "kv"]
where = { level = "error", "http.status" = { match = '^5' } }
field = "msg"
match = ['timeout|refused']
capture_fields = ["user_id", "http.path"]

[rules.slow]
sources = ["app", "kv"]
where = { duration_ms = { gt = 999, lte = 5000 } }
capture_fields = ["duration_ms"]

[rules.ssh]
match = ['Failed password for %{user}']
"""


def load(write_config: WriteConfig, rules: str, header: str = HEADER) -> tuple[Config, RuleSet]:
    path = write_config(textwrap.dedent(header) + textwrap.dedent(rules))
    loaded, sink = config.load(path, defer=True)
    return loaded, RuleSet.compile(loaded, sink)


def scan(rules: RuleSet, source: str | None, *lines: str) -> list[Match]:
    data = "".join(line + "\n" for line in lines).encode()
    return rules.for_source(source).scan(Block(data, 0, 1))


def brief(matches: list[Match]) -> list[tuple[str, int | None, dict[str, str | None]]]:
    return [(m.rule, m.line_no, m.captures) for m in matches]


def problems(write_config: WriteConfig, rules: str, header: str = HEADER) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(write_config, rules, header)
    return [str(p).removeprefix(f"{p.file.parent}/") for p in caught.value.problems]


# ---------------------------------------------------------------- parsing


def test_parse_json_takes_objects_only() -> None:
    assert parse_json('{"a": {"b": 1}}') == {"a": {"b": 1}}
    assert parse_json("  {}") == {}
    for text in ("[1, 2]", '"x"', "{broken", "plain text {", ""):
        assert parse_json(text) is None


def test_parse_logfmt_quotes_escapes_and_bare_keys() -> None:
    line = 'level=error msg="upstream \\"db\\" timed out\\n" http.status=503 retry path=/a?b=c e='
    assert parse_logfmt(line) == {
        "level": "error",
        "msg": 'upstream "db" timed out\n',
        "http.status": "503",
        "retry": True,
        "path": "/a?b=c",
        "e": "",
    }
    assert parse_logfmt("  a=1\t b=2  ") == {"a": "1", "b": "2"}
    # bare words only, broken quoting, a quote inside a bare value, text glued to a quote
    for text in ("Failed password for root", 'a="open', 'a=b"c', 'a="b"c', '="x"', ""):
        assert parse_logfmt(text) is None, text


def test_dotted_paths_read_a_dotted_key_first_then_nested_objects() -> None:
    parsed = {"http": {"status": 503, "req": {"path": "/x"}}, "a.b": 1, "list": [1]}
    assert lookup(parsed, "http.status") == 503
    assert lookup(parsed, "http.req.path") == "/x"
    assert lookup(parsed, "a.b") == 1
    assert lookup(parsed, "http.nope") is fields.MISSING
    assert lookup(parsed, "list.0") is fields.MISSING


def run_scan(
    loaded: Config, rules: RuleSet, tmp_path: Path, name: str, lines: list[str]
) -> list[dict[str, Any]]:
    """`scan`'s records (in process) for a file of `lines` under tmp_path/logs."""
    path = tmp_path / "logs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    out = io.BytesIO()
    Scanner(loaded, rules, out, progress=False).scan([str(path)])
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


# ---------------------------------------------------------------- matching


def test_json_and_logfmt_lines_match_by_fields_beside_plain_lines(
    write_config: WriteConfig,
) -> None:
    _, rules = load(write_config, RULES)
    lines = [
        '{"level":"error","msg":"upstream timeout","http":{"status":503,"path":"/api"},"user_id":7}',
        "sshd[1]: Failed password for root from 192.0.2.1 timeout",  # not JSON: plain rules only
        '{"level":"info","msg":"upstream timeout","http":{"status":503}}',  # where fails
        '{"level":"error","msg":"all fine","http":{"status":503}}',  # msg does not match
        '{"level":"error","msg":"conn refused","http":{"status":404}}',  # status not 5xx
        '{"level":"error","msg":"x","note":"timeout","http":{"status":500}}',  # not in `field`
        '{"duration_ms": 1000, "msg": "slow"}',
        '{"duration_ms": 5001}',
        '{"duration_ms": "2500"}',  # a string of a number is a number
    ]
    assert brief(scan(rules, "app", *lines)) == [
        ("api-errors", 1, {"user_id": "7", "http.path": "/api"}),
        ("ssh", 2, {"user": "root"}),
        ("slow", 7, {"duration_ms": "1000"}),
        ("slow", 9, {"duration_ms": "2500"}),
    ]
    kv = [
        'level=error msg="db refused us" http.status=502 user_id=u1',
        "Failed password for admin from 192.0.2.1",
        "level=error msg=timeout http.status=404",
        "duration_ms=1200.5 path=/x",
    ]
    assert brief(scan(rules, "kv", *kv)) == [
        ("api-errors", 1, {"user_id": "u1", "http.path": None}),
        ("ssh", 2, {"user": "admin"}),
        ("slow", 4, {"duration_ms": "1200.5"}),
    ]
    # where a source does not parse, rules on fields never match; plain rules still do
    assert brief(scan(rules, None, lines[0], lines[1])) == [("ssh", 2, {"user": "root"})]


def test_where_equality_numbers_booleans_and_every_condition(write_config: WriteConfig) -> None:
    _, rules = load(
        write_config,
        """
        [rules.eq-number]
        where = { code = 503 }
        [rules.eq-text]
        where = { code = "503", "a.b.c" = "deep" }
        [rules.eq-bool]
        where = { ok = false }
        [rules.range]
        where = { n = { gte = 10, lt = 20 } }
        [rules.float-text]
        where = { ratio = { match = '^0\\.5$' } }
        """,
    )

    def which(line: str, source: str = "app") -> list[str]:
        return [m.rule for m in scan(rules, source, line)]

    assert which('{"code": 503}') == ["eq-number"]
    assert which('{"code": 503.0}') == ["eq-number"]  # equal as numbers, not as text
    assert which('{"code": "503", "a": {"b": {"c": "deep"}}}') == ["eq-number", "eq-text"]
    assert which('{"code": 503, "a": {"b": {"c": "deep"}}}') == ["eq-number", "eq-text"]
    assert which('{"code": 504, "a": {"b": {"c": "deep"}}}') == []  # every condition must hold
    assert which('{"ok": false}') == ["eq-bool"]
    assert which('{"ok": "false"}') == ["eq-bool"]
    assert which('{"ok": 0}') == []
    assert which("ok=false", "kv") == ["eq-bool"]
    assert [which(f'{{"n": {n}}}') for n in (9, 10, 19.5, 20)] == [[], ["range"], ["range"], []]
    assert which('{"n": "15"}') == ["range"]
    assert which('{"n": "fifteen"}') == []
    assert which('{"n": true}') == []  # a boolean is not a number
    assert which('{"ratio": 0.50}') == ["float-text"]  # a float reads in its shortest form
    assert which('{"ratio": 5e-1}') == ["float-text"]
    assert which('{"code": {"value": 503}}') == []  # an object matches nothing


def test_field_patterns_captures_and_excludes_read_the_field(write_config: WriteConfig) -> None:
    _, rules = load(
        write_config,
        """
        [rules.login]
        field = "event.msg"
        match = ['^login failed for %{user}$']
        exclude = ['for guest$']
        capture_fields = ["src", "event", "tags", "missing"]
        """,
    )
    line = '{"event":{"msg":"login failed for bob"},"src":"192.0.2.7","tags":["a","b"]}'
    assert brief(scan(rules, "app", line)) == [
        (
            "login",
            1,
            {
                "user": "bob",
                "src": "192.0.2.7",
                "event": '{"msg":"login failed for bob"}',
                "tags": '["a","b"]',
                "missing": None,
            },
        )
    ]
    assert scan(rules, "app", '{"event":{"msg":"login failed for guest"}}') == []
    # the pattern is anchored to the field, not to the line
    assert scan(rules, "app", '{"x":"login failed for bob","event":{"msg":"a login"}}') == []


def test_capture_fields_alone_keep_a_rule_plain(write_config: WriteConfig) -> None:
    """A rule with only `capture_fields` matches unparsed lines too, with null captures."""
    _, rules = load(
        write_config,
        """
        [rules.any-error]
        match = ['ERROR']
        capture_fields = ["req"]
        """,
    )
    matches = scan(rules, "app", '{"msg":"ERROR x","req":"r1"}', "ERROR plain", "quiet")
    assert brief(matches) == [("any-error", 1, {"req": "r1"}), ("any-error", 2, {"req": None})]


def test_capture_fields_can_key_thresholds(write_config: WriteConfig, tmp_path: Path) -> None:
    loaded, rules = load(
        write_config,
        """
        [rules.denied]
        where = { action = "deny" }
        capture_fields = ["client.ip"]
        threshold = { key = "client.ip", count = 3, within = "1m" }
        """,
    )
    lines = [f'{{"action":"deny","client":{{"ip":"192.0.2.{i % 2}"}}}}' for i in range(6)]
    out = run_scan(loaded, rules, tmp_path, "app.log", lines)
    alerts = [r for r in out if r.get("kind") == "alert"]
    assert [a["key"] for a in alerts] == [{"client.ip": "192.0.2.0"}, {"client.ip": "192.0.2.1"}]


def test_hostile_values_never_stop_a_file(write_config: WriteConfig, tmp_path: Path) -> None:
    """A number past `int()`'s 4,300 digits, past a double's range, an object nested past what
    orjson writes, a list where a number is wanted: each line gets a verdict, the next line too."""
    loaded, rules = load(
        write_config,
        """
        [rules.server-error]
        sources = ["app", "kv"]
        where = { status = { gte = 500 } }
        capture_fields = ["deep"]
        [rules.exact]
        sources = ["app", "kv"]
        where = { status = { eq = 503 }, code = { lt = 10 } }
        """,
    )
    huge = "9" * 5000
    deep = "[" * 600 + "]" * 600  # orjson reads 1,024 levels, writes 255
    kv = [f"level=error status={huge}", f"level=error status=1e999 code=-{huge}", "status=503"]
    assert [
        (r["rule"], r["source"]["line_no"]) for r in run_scan(loaded, rules, tmp_path, "kv.log", kv)
    ] == [
        ("server-error", 1),
        ("server-error", 2),
        ("server-error", 3),
    ]
    app = [
        f'{{"status":"{huge}","deep":{deep}}}',
        '{"status":[503],"code":1}',
        f'{{"status":"{"1" * 400}","deep":{{"a":1}}}}',
        '{"status":503,"code":1}',
    ]
    out = run_scan(loaded, rules, tmp_path, "app.log", app)
    assert [(r["rule"], r["source"]["line_no"], r["captures"]) for r in out] == [
        ("server-error", 1, {"deep": None}),
        ("server-error", 3, {"deep": '{"a":1}'}),
        ("server-error", 4, {"deep": None}),
        ("exact", 4, {}),
    ]


@settings(max_examples=300, deadline=None)
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(alphabet="-0123456789.eE+ ", max_size=400)
        | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=2)
            | st.dictionaries(st.text(max_size=2), children, max_size=2)
        ),
        max_leaves=8,
    ),
    repeat=st.integers(1, 5000),
)
def test_reading_a_value_never_raises(value: Any, repeat: int) -> None:
    """Every reading of a field (text, number, capture, condition, explain) takes any value."""
    if isinstance(value, str):
        value = value * (repeat // max(len(value), 1) + 1)
    spec = config.FieldCondition.model_validate({"eq": 5, "gt": 1, "match": "5"})
    fields.Condition.compile("v", spec).why_not({"v": value})
    fields.text_of(value)
    fields.capture_text(value)
    fields.shown(value)
    number = fields.number_of(value)
    assert number is None or not math.isnan(number)


# ---------------------------------------------------------------- the prefilter


def counting_parsers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    for kind, parse in list(fields._PARSERS.items()):

        def counted(text: str, parse: fields.Parser = parse) -> fields.Fields | None:
            seen.append(text)
            return parse(text)

        monkeypatch.setitem(fields._PARSERS, kind, counted)
    return seen


def test_lines_no_rule_can_match_are_never_parsed(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = counting_parsers(monkeypatch)
    _, rules = load(
        write_config,
        """
        [rules.api-errors]
        where = { level = "error", status = { gte = 500 } }
        field = "msg"
        match = ['timeout']
        [rules.fatal]
        where = { level = "fatal" }
        """,
    )
    quiet = [f'{{"level":"info","msg":"ok {i}","status":200}}' for i in range(500)]
    hits = ['{"level":"error","msg":"timeout","status":503}', '{"level":"fatal"}']
    matches = scan(rules, "app", *quiet[:250], *hits, *quiet[250:])
    assert [m.rule for m in matches] == ["api-errors", "fatal"]
    assert parsed == hits
    parsed.clear()
    escaped = '{"level":"error","msg":"time\\u006fut","status":503}'  # an escape: parsed
    respelt = '{"level":"info","msg":"ok","took":1.50}'  # a float that reads back otherwise
    assert [m.rule for m in scan(rules, "app", escaped, respelt, quiet[0])] == ["api-errors"]
    assert parsed == [escaped, respelt]


def test_a_rule_without_a_requirement_parses_every_line(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = counting_parsers(monkeypatch)
    _, rules = load(write_config, "[rules.big]\nwhere = { bytes = { gt = 1000 } }\n")
    assert [m.line_no for m in scan(rules, "app", '{"bytes":5}', '{"bytes":5000}', "x")] == [2]
    assert len(parsed) == 3


_TEXTS = st.text(alphabet=st.sampled_from('abt\\"é/ 0.5e-'), max_size=6)
_NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.tuples(st.integers(-999, 999), st.integers(0, 9999), st.integers(-30, 30)).map(
        lambda t: f"{t[0]}.{t[1]}e{t[2]}"
    ),
    st.tuples(st.integers(0, 99), st.text(alphabet="0123456789", min_size=1, max_size=20)).map(
        lambda t: f"{t[0]}.{t[1]}"
    ),
    st.sampled_from(["-0", "-0.0", "1.50", "0.0000001", "1E3", "100000000000000000.0"]),
)
_PATTERNS = ["5", "0", "e-", r"\bt", "1000", "a", "é", r"\.5", "/", r'"', r"1\.5\b", "a/b"]


@pytest.fixture(scope="module")
def property_rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    """One rule per pattern, each alone in a JSON source of its own (its prefilter alone)."""
    body = "".join(
        f'[sources.s{i}]\npaths = ["s{i}.log"]\nparse = "json"\n'
        f'[rules.p{i}]\nsources = ["s{i}"]\nfield = "v"\nmatch = [\'{p}\']\n'
        for i, p in enumerate(_PATTERNS)
    )
    path = tmp_path_factory.mktemp("fields") / "logwarden.toml"
    path.write_text(textwrap.dedent(HEADER) + body)
    loaded, sink = config.load(path, defer=True)
    return RuleSet.compile(loaded, sink)


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(_TEXTS.map(lambda t: orjson.dumps(t).decode()), _NUMBERS),
    spelling=st.sampled_from(["plain", "escaped", "spaced"]),
)
@example(value="1e3", spelling="plain")
@example(value="1.50", spelling="plain")
@example(value='"a\\/b"', spelling="plain")
@example(value='"\\u0035"', spelling="plain")
def test_the_field_prefilter_never_skips_a_line_that_matches(
    property_rules: RuleSet, value: str, spelling: str
) -> None:
    """Whatever a value's spelling (escapes, exponents, trailing zeros, long numbers), the scan
    agrees with parsing every line and searching each pattern in the field's text."""
    if spelling == "escaped" and value.startswith('"'):  # every character as \uXXXX
        value = '"' + "".join(f"\\u{ord(c):04x}" for c in orjson.loads(value)) + '"'
    line = {"plain": f'{{"v":{value}}}', "spaced": f'{{ "v" : {value} }}'}.get(
        spelling, f'{{"u":"a\\/b","v":{value}}}'
    )
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:  # a number out of a double's range
        assert not any(scan(property_rules, f"s{i}", line) for i in range(len(_PATTERNS)))
        return
    text = fields.text_of(parsed["v"])
    for i, pattern in enumerate(_PATTERNS):
        expected = text is not None and re2.search(pattern, text) is not None
        assert bool(scan(property_rules, f"s{i}", line)) == expected, (line, text, pattern)


_LOGFMT_PATTERNS = [*_PATTERNS, "true", "ru", "^t", "e$", "x"]
_LOGFMT_VALUES = st.one_of(
    st.just("v"),  # a bare key: reads true
    st.text(alphabet="abtrue05./-\\é", max_size=6).map(lambda t: f"v={t}"),
    _TEXTS.map(lambda t: "v=" + orjson.dumps(t).decode()),
)


@pytest.fixture(scope="module")
def logfmt_rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    """Per pattern, two logfmt sources of one rule each: `field = "v"` and `where` on v."""
    body = "".join(
        f'[sources.f{i}]\npaths = ["f{i}.log"]\nparse = "logfmt"\n'
        f'[rules.f{i}]\nsources = ["f{i}"]\nfield = "v"\nmatch = [\'{p}\']\n'
        f'[sources.w{i}]\npaths = ["w{i}.log"]\nparse = "logfmt"\n'
        f"[rules.w{i}]\nsources = [\"w{i}\"]\nwhere = {{ v = {{ match = '{p}' }} }}\n"
        for i, p in enumerate(_LOGFMT_PATTERNS)
    )
    path = tmp_path_factory.mktemp("fields") / "logwarden.toml"
    path.write_text(textwrap.dedent(HEADER) + body)
    loaded, sink = config.load(path, defer=True)
    return RuleSet.compile(loaded, sink)


@settings(max_examples=300, deadline=None)
@given(value=_LOGFMT_VALUES, before=st.booleans())
@example(value="v", before=True)
@example(value="v", before=False)
def test_the_logfmt_prefilter_never_skips_a_line_that_matches(
    logfmt_rules: RuleSet, value: str, before: bool
) -> None:
    """Bare keys (`debug` reads true), bare and quoted values: the scan agrees with parsing
    every line and searching each pattern in v's text, for `field` and for `where.match`."""
    line = f"level=info {value} msg=hello" if before else f"{value} level=info"
    parsed = parse_logfmt(line)
    text = None if parsed is None else fields.text_of(lookup(parsed, "v"))
    for i, pattern in enumerate(_LOGFMT_PATTERNS):
        expected = text is not None and re2.search(pattern, text) is not None
        for kind in "fw":
            found = scan(logfmt_rules, f"{kind}{i}", line)
            assert bool(found) == expected, (line, text, pattern, kind)


# ---------------------------------------------------------------- event time from a field

NOW = datetime.now(UTC).replace(microsecond=0)


def test_timestamp_from_a_field_epoch_and_iso(write_config: WriteConfig, tmp_path: Path) -> None:
    header = HEADER.replace('parse = "json"\n', 'parse = "json"\ntimestamp = { field = "ts" }\n')
    header = header.replace('parse = "logfmt"\n', 'parse = "logfmt"\ntimestamp = { field = "t" }\n')
    loaded, rules = load(write_config, '[rules.any]\nmatch = ["hit"]\n', header)
    when = NOW - timedelta(hours=2)
    epoch = when.timestamp()
    lines = [
        f'{{"ts":{int(epoch)},"m":"hit"}}',
        f'{{"ts":{int(epoch * 1000) + 250},"m":"hit"}}',
        f'{{"ts":{epoch + 0.5},"m":"hit"}}',
        f'{{"ts":"{when.isoformat()}","m":"hit"}}',
        f'{{"ts":"{when.replace(tzinfo=None).isoformat()}","m":"hit"}}',  # no offset: timezone
        '{"m":"hit"}',  # no field: arrival
        "not json hit 2020-01-01T00:00:00Z",  # not parsed: arrival, not the text's time
        f'{{"ts":"{(NOW + timedelta(days=30)).isoformat()}","m":"hit"}}',  # out of bounds
    ]
    records = run_scan(loaded, rules, tmp_path, "app.log", lines)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S")
    assert [(r["event_time"], r["time_source"]) for r in records[:5]] == [
        (f"{stamp}.000000Z", "log"),
        (f"{stamp}.250000Z", "log"),
        (f"{stamp}.500000Z", "log"),
        (f"{stamp}.000000Z", "log"),
        (f"{stamp}.000000Z", "log"),
    ]
    assert [r["time_source"] for r in records[5:]] == ["arrival"] * 3
    kv = run_scan(loaded, rules, tmp_path, "kv.log", [f"t={int(epoch)} m=hit"])
    assert kv[0]["event_time"] == f"{stamp}.000000Z"


def test_field_times_feed_thresholds(write_config: WriteConfig, tmp_path: Path) -> None:
    header = HEADER.replace('parse = "json"\n', 'parse = "json"\ntimestamp = { field = "ts" }\n')
    rule = """
    [rules.denied]
    where = { action = "deny" }
    capture_fields = ["ip"]
    threshold = { key = "ip", count = 3, within = "10m" }
    """
    loaded, rules = load(write_config, rule, header)
    start = (NOW - timedelta(hours=3)).timestamp()

    def lines(spacing: float) -> list[str]:
        return [
            f'{{"ts":{start + i * spacing},"action":"deny","ip":"192.0.2.9"}}' for i in range(3)
        ]

    # read one after another, the lines are an attack only if their own times are close
    assert [r.get("kind") for r in run_scan(loaded, rules, tmp_path, "app.log", lines(60))] == [
        None,
        None,
        None,
        "alert",
    ]
    spread = run_scan(loaded, rules, tmp_path, "app.log", lines(1800))
    assert [r.get("kind") for r in spread] == [None, None, None]


# ---------------------------------------------------------------- config errors


def test_bad_where_keys_are_config_errors_with_their_line(write_config: WriteConfig) -> None:
    found = problems(
        write_config,
        """
        [rules.typo]
        where = { status = { gtee = 500 } }
        [rules.dotted]
        where = { http.status = 500 }
        [rules.pattern]
        where = { level = { match = '(' } }
        [rules.operand]
        where = { n = { gt = "5" }, b = { lt = true } }
        [rules.shape]
        where = ["level"]
        [rules.field-alone]
        field = "msg"
        where = { a = 1 }
        [rules.nothing]
        severity = "error"
        [rules.path]
        capture_fields = ["a..b"]
        match = ['x']
        """,
    )
    assert found == [
        "logwarden.toml:20: rules.typo.where: 'status': unknown condition 'gtee' (did you mean"
        " 'gte'?) (conditions: a value to equal, or { eq, match, gt, gte, lt, lte })",
        "logwarden.toml:22: rules.dotted.where: 'http': unknown condition 'status'; a dotted path"
        ' is one quoted key: "http.status" = ... (conditions: a value to equal, or'
        " { eq, match, gt, gte, lt, lte })",
        "logwarden.toml:24: rules.pattern.where: 'level': match: RE2 cannot compile this pattern:"
        " missing ): (; RE2 syntax: https://github.com/google/re2/wiki/Syntax; for lookaround or"
        ' backreferences use engine = "regex"',
        "logwarden.toml:26: rules.operand.where: 'n': gt takes a number, e.g. { gt = 499 }",
        "logwarden.toml:28: rules.shape.where: must be a table of conditions on fields, e.g."
        ' { level = "error", "http.status" = { gte = 500 } }',
        "logwarden.toml:29: rules.field-alone: `field` says what `match` reads: give `match`"
        " patterns too",
        "logwarden.toml:32: rules.nothing.match: is required",
        "logwarden.toml:35: rules.path.capture_fields: 'a..b' is not a field path: use a name or"
        ' a dotted path, e.g. "http.status"',
    ]


def test_source_errors_for_parse_and_timestamp_field(write_config: WriteConfig) -> None:
    header = """
    [daemon]
    state_dir = "state"
    [sources.app]
    paths = ["logs/app.log"]
    timestamp = { field = "ts" }
    [sources.both]
    paths = ["logs/b.log"]
    parse = "json"
    timestamp = { field = "ts", capture = "when" }
    [sources.jd]
    journal = { matches = ["SYSLOG_IDENTIFIER=app"] }
    parse = "json"
    [sources.odd]
    paths = ["logs/o.log"]
    parse = "yaml"
    [rules.r]
    match = ['x']
    [rules.keyed]
    where = { a = "b" }
    threshold = { key = "ip", count = 2, within = "1m" }
    [rules.unparsed]
    sources = ["plain"]
    field = "msg"
    match = ['x']
    [sources.plain]
    paths = ["logs/plain.log"]
    [rules.copies]
    sources = ["plain"]
    match = ['denied']
    capture_fields = ["user"]
    threshold = { key = "user", count = 2, within = "1m" }
    """
    found = problems(write_config, "", header)
    assert found == [
        'logwarden.toml:3: sources.app: timestamp.field needs parse = "json" or "logfmt" on'
        " this source: only parsed lines have fields",
        "logwarden.toml:9: sources.both.timestamp: give `field` or `capture`, not both: the time"
        " is read from one",
        "logwarden.toml:12: sources.jd.parse: applies to file sources (`paths`) only",
        "logwarden.toml:15: sources.odd.parse: Input should be 'json', 'logfmt' or 'none'",
        "logwarden.toml:18: rules.keyed: threshold uses 'ip', which no capture_fields name (a rule"
        " without `match` has only those captures)",
        "logwarden.toml:23: rules.unparsed.field: reads fields, but none of its sources parses"
        ' its lines: give one parse = "json" or "logfmt"',
        "logwarden.toml:30: rules.copies.capture_fields: reads fields, but none of its sources"
        ' parses its lines: give one parse = "json" or "logfmt"',
    ]


def test_capture_fields_of_every_source_need_one_parsed_source(write_config: WriteConfig) -> None:
    """A rule without `sources` applies to every source: it is an error only when none parses
    (on a config of mixed sources its fields are read where there are some)."""
    plain = """
    [daemon]
    state_dir = "state"
    [sources.plain]
    paths = ["logs/plain.log"]
    [reports.out]
    dir = "reports"
    """
    rule = '[rules.any]\nmatch = ["denied"]\ncapture_fields = ["user"]\n'
    assert problems(write_config, rule, plain) == [
        "logwarden.toml:9: rules.any.capture_fields: reads fields, but none of its sources"
        ' parses its lines: give one parse = "json" or "logfmt"',
    ]
    mixed = plain + '[sources.kv]\npaths = ["logs/kv.log"]\nparse = "logfmt"\n'
    loaded, _ = load(write_config, rule, mixed)
    assert loaded.rules["any"].capture_fields == ("user",)


def test_rule_tests_run_parsed_and_say_which_condition_failed(write_config: WriteConfig) -> None:
    rules = """
    [rules.api]
    sources = ["kv"]
    where = { level = "error", code = { gte = 500 } }
    field = "msg"
    match = ['timeout after %{int:ms}ms']
    capture_fields = ["code"]
    tests = [
      { line = 'level=error code=503 msg="timeout after 30ms"', expect = { ms = "30", code = "503" } },
      { line = 'level=error code=404 msg="timeout after 30ms"', expect = false },
      { line = 'level=error code=404 msg="timeout after 30ms"' },
    ]
    """
    assert problems(write_config, rules) == [
        'logwarden.toml:25: rules.api.tests[2]: expected a match, but where: code is "404": not'
        " >= 500"
    ]


# ---------------------------------------------------------------- explain


def test_explain_says_which_where_condition_failed(write_config: WriteConfig) -> None:
    loaded, rules = load(write_config, RULES)
    explainer = Explainer(loaded, rules, "app")
    lines = [
        '{"level":"error","msg":"upstream timeout","http":{"status":404}}',
        "upstream timeout, not JSON",
        '{"level":"error","msg":"upstream timeout","http":{"status":503,"path":"/a"}}',
    ]
    verdicts = [{v.rule: v for v in line.rules}["api-errors"] for line in explainer.explain(lines)]
    assert [v.verdict for v in verdicts] == ["near-miss", "no-match", "matched"]
    steps = [{s.name: (s.ok, s.detail) for s in v.steps} for v in verdicts]
    assert steps[0]["fields"] == (False, "where: http.status is 404: no match for '^5'")
    assert steps[1]["fields"] == (False, "the line does not parse: this rule reads fields")
    assert steps[2]["fields"] == (
        True,
        "parsed as json; where holds (level, http.status); match reads field msg",
    )
    assert verdicts[2].as_json()["captures"] == {"user_id": None, "http.path": "/a"}


# ---------------------------------------------------------------- the daemon


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    header = HEADER.replace(
        'paths = ["logs/app.log"]', 'paths = ["logs/app.log"]\nstart_at = "beginning"'
    )
    header = header.replace('state_dir = "state"', 'state_dir = "state"\ncommit_interval = "50ms"')
    header = header.replace(
        'dir = "reports"', 'dir = "reports"\nformat = "ndjson"\nrotate_interval = "1s"'
    )
    write_config(tmp_path / "logwarden.toml", textwrap.dedent(header) + textwrap.dedent(RULES))
    return tmp_path


@pytest.mark.integration
def test_scan_gives_the_daemons_records(workdir: Path, daemon: Daemon) -> None:
    lines = [
        '{"level":"error","msg":"upstream timeout","http":{"status":503,"path":"/api"},"user_id":7}',
        "2026-11-25T10:00:00Z sshd[1]: Failed password for root from 192.0.2.1",
        '{"level":"info","msg":"upstream timeout","http":{"status":503}}',
        '{"duration_ms": 1200, "msg": "slow"}',
        '{"level":"error","msg":"conn refused","http":{"status":502}}',
    ]
    (workdir / "logs" / "app.log").write_text("".join(line + "\n" for line in lines))
    daemon.start()
    reports = workdir / "reports"
    wait_until(lambda: len(published_records(reports)) == 4, 15, message="4 records")
    assert daemon.stop() == 0
    result = subprocess.run(
        [*SCAN, workdir / "logwarden.toml", workdir / "logs" / "app.log"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    from_scan = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [comparable(r) for r in from_scan] == [comparable(r) for r in published_records(reports)]
    assert [(r["rule"], r["captures"]) for r in from_scan] == [
        ("api-errors", {"user_id": "7", "http.path": "/api"}),
        ("ssh", {"user": "root"}),
        ("slow", {"duration_ms": "1200"}),
        ("api-errors", {"user_id": None, "http.path": None}),
    ]


def comparable(record: dict[str, Any]) -> bytes:
    differ = {"time", "event_time"} if record.get("time_source") == "arrival" else {"time"}
    return orjson.dumps({k: v for k, v in record.items() if k not in differ})
