"""`logwarden scan` end to end: the real CLI in a subprocess, held to a plain reference.

The reference below is deliberately naive and independent of the package: it reads the config
with tomllib, splits files with `bytes.split`, and runs Python `re` line by line, rule by rule.
The scan under test frames chunks, prefilters whole blocks with RE2 and confirms candidates with
an RE2 set; the two must agree on every record, field by field, in the same order. The one piece
borrowed from the package is `patterns.expand` (the placeholder fragments are data, not logic).

RE2 and Python `re` differ on a few escapes: `\\d`, `\\w` and `\\b` are ASCII in RE2 (so `re.ASCII`
here), and RE2's `\\s` is `[\\t\\n\\f\\r ]`, without the `\\v` that `re.ASCII` adds (translated).
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import pytest

from logwarden.patterns import expand

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
SHIPPED = CONFIG_DIR / "logwarden.toml"
DEMO = CONFIG_DIR / "demo.toml"
EXAMPLES = sorted((CONFIG_DIR / "examples").glob("*.toml"))
SAMPLES = sorted((CONFIG_DIR / "examples" / "samples").glob("*.log"))
DATA = ROOT / "tests" / "data"
DATA_FILES = sorted(path for path in DATA.rglob("*") if path.is_file())

TIMEOUT = 120  # seconds for any one CLI run; a hang fails the test instead of the CI job
DEFAULT_MAX_LINE_BYTES = 64 * 1024
EX_CONFIG = 78
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

pytestmark = pytest.mark.integration


def logwarden(
    *args: object, stdin: bytes | None = None, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI as a user would (`python -m logwarden ...`), output captured, never hanging."""
    return subprocess.run(
        [sys.executable, "-m", "logwarden", *map(str, args)],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def records_of(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in result.stdout.splitlines()]


# ---------------------------------------------------------------- the reference


def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    found = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
    assert found, f"the reference does not know the size {value!r}"
    units = {"": 1, "b": 1, "kib": 1024, "mib": 1024**2, "kb": 1000, "mb": 1000**2}
    return int(found.group(1)) * units[found.group(2).lower()]


def parse_duration(value: float | str) -> float:
    if not isinstance(value, str):
        return float(value)
    found = re.fullmatch(r"(\d+)(ms|s|m|h)", value)
    assert found, f"the reference does not know the duration {value!r}"
    units = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
    unit = units[found.group(2)]
    return float(int(found.group(1)) * unit)


RE2_SPACE = r"\t\n\f\r "


def as_python(pattern: str) -> re.Pattern[str]:
    """An expanded RE2 pattern as Python `re` reads it with RE2's meaning of `\\s` and `\\S`."""
    out = []
    index, in_class = 0, False
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escape = pattern[index : index + 2]
            if escape == r"\s":
                out.append(RE2_SPACE if in_class else f"[{RE2_SPACE}]")
            elif escape == r"\S":
                assert not in_class, f"\\S inside a class is not translated: {pattern}"
                out.append(f"[^{RE2_SPACE}]")
            else:
                out.append(escape)
            index += 2
            continue
        if char == "[" and not in_class:
            in_class = True
            out.append(char)
            index += 1
            for literal in ("^]", "]", "^"):  # a leading `]` is a member, not the end
                if pattern.startswith(literal, index):
                    out.append(literal)
                    index += len(literal)
                    break
            continue
        if char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return re.compile("".join(out), re.ASCII)


def glob_matches(pattern: str, path: str) -> bool:
    """`*`, `?` and `[...]` within one path component; a `**` component spans any number."""
    return _components_match(pattern.split("/"), path.split("/"))


def _components_match(parts: list[str], names: list[str]) -> bool:
    if not parts:
        return not names
    if parts[0] == "**":
        return any(_components_match(parts[1:], names[skip:]) for skip in range(len(names) + 1))
    return (
        bool(names)
        and fnmatch.fnmatchcase(names[0], parts[0])
        and _components_match(parts[1:], names[1:])
    )


@dataclass(frozen=True)
class RefSource:
    name: str
    paths: tuple[str, ...]
    exclude: tuple[str, ...]
    max_line_bytes: int

    def covers(self, path: str) -> bool:
        if not any(glob_matches(pattern, path) for pattern in self.paths):
            return False
        for pattern in self.exclude:
            target = path if "/" in pattern else Path(path).name
            if glob_matches(pattern, target):
                return False
        return True


@dataclass(frozen=True)
class RefRule:
    name: str
    severity: str
    sources: tuple[str, ...] | None
    match: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]
    threshold: tuple[str, int, float] | None  # key, count, within (seconds)
    records: bool = True  # false: the rule only feeds (carry, threshold)
    carry: tuple[str, tuple[str, ...], float, tuple[str, ...]] | None = (
        None  # key, from, within, captures
    )

    def captures(self, text: str) -> dict[str, str | None] | None:
        for pattern in self.match:
            found = pattern.search(text)
            if found:
                break
        else:
            return None
        if any(pattern.search(text) for pattern in self.exclude):
            return None
        return found.groupdict()


@dataclass(frozen=True)
class RefLine:
    offset: int
    line_no: int
    text: str
    truncated: bool


def cut(line: bytes, limit: int) -> bytes:
    """The first `limit` bytes, backed off (at most 3 bytes) so no UTF-8 character is split."""
    end = limit
    while end > limit - 3 and end > 0 and (line[end] & 0xC0) == 0x80:
        end -= 1
    return line[:end]


def reference_lines(data: bytes, max_line_bytes: int) -> Iterator[RefLine]:
    """Lines end at `\\n` (a last line without one is still a line); one `\\r` is dropped."""
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    offset = 0
    for number, part in enumerate(parts, start=1):
        line = part[:-1] if part.endswith(b"\r") else part
        truncated = len(line) > max_line_bytes
        if truncated:
            line = cut(line, max_line_bytes)
        yield RefLine(offset, number, line.decode("utf-8", "replace"), truncated)
        offset += len(part) + 1


class Reference:
    """What `logwarden scan` must print for a config, computed the obvious way."""

    def __init__(self, config: Path, only: Sequence[str] = ()) -> None:
        document = tomllib.loads(config.read_text(encoding="utf-8"))
        base = config.resolve().parent
        self.sources = {
            name: RefSource(
                name,
                # a journal source has no paths: it covers no file
                tuple(os.path.normpath(base / path) for path in table.get("paths", ())),
                tuple(table.get("exclude", ())),
                parse_size(table.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)),
            )
            for name, table in document["sources"].items()
        }
        self.rules = []
        wanted = set(only)
        feeders: set[str] = set()  # `scan --rule` brings the rules they carry from along
        pending = list(wanted)
        while pending:
            for name in document["rules"][pending.pop()].get("carry", {}).get("from", []):
                if name not in wanted | feeders:
                    feeders.add(name)
                    pending.append(name)
        for name, table in document["rules"].items():
            if only and name not in wanted | feeders:
                continue
            feeder = name in feeders
            match = table["match"] if isinstance(table["match"], list) else [table["match"]]
            exclude = table.get("exclude", [])
            exclude = exclude if isinstance(exclude, list) else [exclude]
            threshold = None if feeder else table.get("threshold")
            carry = table.get("carry")
            self.rules.append(
                RefRule(
                    name=name,
                    severity=table.get("severity", "warning"),
                    sources=tuple(table["sources"]) if "sources" in table else None,
                    match=tuple(as_python(expand(p)) for p in match),
                    exclude=tuple(as_python(expand(p)) for p in exclude),
                    threshold=(
                        threshold["key"],
                        threshold["count"],
                        parse_duration(threshold["within"]),
                    )
                    if threshold
                    else None,
                    records=table.get("records", True) and not feeder,
                    carry=(
                        carry["key"],
                        tuple(carry["from"]),
                        parse_duration(carry["within"]),
                        tuple(carry["captures"]),
                    )
                    if carry
                    else None,
                )
            )
        self.thresholds = ThresholdModel()
        # per carrying rule: (source, key value) → (time, rule, captures) of its latest `from` match
        self.memory: dict[str, dict[tuple[str | None, str], tuple[float, str, dict[str, str]]]] = {
            rule.name: {} for rule in self.rules if rule.carry
        }

    def source_for(self, path: str) -> str | None:
        absolute = os.path.normpath(Path(path).absolute())
        covering = (name for name, source in self.sources.items() if source.covers(absolute))
        return next(covering, None)

    def scan(
        self, path: str, data: bytes, source: str | None, identity: tuple[int, int] | None
    ) -> list[dict[str, Any]]:
        """The records for one file (`identity` is (dev, inode), None for standard input)."""
        limit = self.sources[source].max_line_bytes if source else DEFAULT_MAX_LINE_BYTES
        rules = [r for r in self.rules if not (source and r.sources) or source in r.sources]
        dev, inode = identity or (None, None)
        records = []
        for line in reference_lines(data, limit):
            for rule in rules:
                captures = rule.captures(line.text)
                if captures is None:
                    continue
                moment = self.thresholds.line_time(line.text)
                carried = self.carry(rule, captures, source, moment)
                record = {
                    "v": 1,
                    "rule": rule.name,
                    "severity": rule.severity,
                    "source": {
                        "name": source,
                        "path": path,
                        "dev": dev,
                        "inode": inode,
                        "offset": line.offset,
                        "line_no": line.line_no,
                    },
                    "line": line.text,
                    "truncated": line.truncated,
                    "captures": captures,
                }
                if carried:
                    record["carried"] = carried
                if rule.records:
                    records.append(record)
                alert = self.thresholds.observe(rule, record)
                if alert is not None:
                    records.append(alert)
        return records

    def carry(
        self, rule: RefRule, captures: dict[str, str | None], source: str | None, moment: float
    ) -> dict[str, Any] | None:
        """Fill what `rule` carries from its memory (in place), then remember this match for the
        rules that carry from it; what was carried, as the record shows it."""
        carried = None
        if rule.carry is not None:
            key, _, within, wanted = rule.carry
            missing = [name for name in wanted if captures.get(name) is None]
            entry = self.memory[rule.name].get((source, str(captures.get(key))))
            if missing and captures.get(key) is not None and entry is not None:
                when, lender, values = entry
                lent = [name for name in missing if name in values]
                if abs(moment - when) <= within and lent:
                    captures.update({name: values[name] for name in lent})
                    stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                    carried = {"captures": lent, "rule": lender, "event_time": stamp}
        for carrier in self.rules:
            if carrier.carry is None or rule.name not in carrier.carry[1]:
                continue
            key, _, _, wanted = carrier.carry
            values = {n: v for n in wanted if (v := captures.get(n)) is not None}
            if captures.get(key) is not None and values:
                slot = (source, str(captures[key]))
                self.memory[carrier.name][slot] = (moment, rule.name, values)
        return carried

    def scan_files(self, files: Iterable[Path], source: str | None = None) -> list[dict[str, Any]]:
        """The records of one `scan` over `files` in that order (`source`: as with --source)."""
        records = []
        for file in files:
            status = file.stat()
            path = os.path.normpath(file.absolute())
            chosen = source or self.source_for(path)
            records += self.scan(path, file.read_bytes(), chosen, (status.st_dev, status.st_ino))
        return records


class ThresholdModel:
    """Thresholds as `scan` sees them, counted by the time at the start of each line.

    Per rule and key value: a list of every match's time; a match alerts when `count` of them lie
    in (t - within, t] and the key has not alerted since its window last emptied. Before each
    match, the keys least recently seen whose newest time is a window behind the match's are
    forgotten, up to the first that is not (so files scanned out of time order start such keys
    afresh, as the tracker does). A line with no time at its start counts at arrival (now). A
    match without the key capture is not counted.
    """

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], list[float]] = {}
        self.alerted: set[tuple[str, str]] = set()
        self.now = datetime.now().timestamp()

    def observe(self, rule: RefRule, record: dict[str, Any]) -> dict[str, Any] | None:
        if rule.threshold is None:
            return None
        key, count, within = rule.threshold
        value = record["captures"].get(key)
        if value is None:
            return None
        moment = self.line_time(record["line"])
        for seen in [k for k in self.times if k[0] == rule.name]:  # least recently seen first
            if max(self.times[seen]) > moment - within:
                break
            del self.times[seen]
            self.alerted.discard(seen)
        times = self.times.pop((rule.name, value), [])  # put back last: the most recently seen
        if times and max(times) <= moment - within:
            times = []
            self.alerted.discard((rule.name, value))
        times = [t for t in times if t > moment - within]
        if not times:
            self.alerted.discard((rule.name, value))
        times.append(moment)
        self.times[(rule.name, value)] = times
        if len(times) < count or (rule.name, value) in self.alerted:
            return None
        self.alerted.add((rule.name, value))
        return {
            "v": 1,
            "kind": "alert",
            "rule": rule.name,
            "severity": record["severity"],
            "key": {key: value},
            "count": count,
            "within_s": within,
        }

    def line_time(self, line: str) -> float:
        """ISO 8601 or syslog (the year nearest now) at the line's start, else now."""
        iso = re.match(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-][\d:]{4,5})?", line)
        if iso:
            return datetime.fromisoformat(iso.group()).timestamp()
        syslog = re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d", line)
        if syslog:
            year = datetime.now().year
            candidates = [
                datetime.strptime(f"{y} {syslog.group()}", "%Y %b %d %H:%M:%S").timestamp()
                for y in (year - 1, year, year + 1)
            ]
            return min(candidates, key=lambda t: abs(t - self.now))
        return self.now


# ---------------------------------------------------------------- comparing


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields only the run decides (when, where), after checking their form."""
    assert STAMP.fullmatch(record["time"]), record["time"]
    assert record["host"] == socket.gethostname()
    skip: tuple[str, ...]
    if record.get("kind") == "alert":  # the reference counts keys, not when or where they were
        assert STAMP.fullmatch(record["first"]) and STAMP.fullmatch(record["last"]), record
        assert 0 < len(record["samples"]) <= 10, record
        skip = ("time", "host", "first", "last", "samples")
    else:  # event time has tests of its own (test_eventtime.py)
        assert STAMP.fullmatch(record["event_time"]), record["event_time"]
        assert record["time_source"] in ("log", "journal", "arrival"), record["time_source"]
        skip = ("time", "host", "event_time", "time_source")
    return {key: value for key, value in record.items() if key not in skip}


def assert_same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Record by record, so a difference is reported as the first record that differs."""
    got = [comparable(record) for record in got]
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=False)):
        assert mine == theirs, f"record {index} differs (scan, then reference)"
    assert len(got) == len(expected), (
        f"scan printed {len(got)} records, the reference {len(expected)}"
    )


def scan_agrees(
    config: Path,
    files: Sequence[Path],
    *extra: str,
    only: Sequence[str] = (),
    source: str | None = None,
) -> list[dict[str, Any]]:
    """Scan `files` with the CLI and check the output against the reference; return the records."""
    args = ["scan", "-c", config, *extra, *(f"--rule={name}" for name in only)]
    if source:
        args.append(f"--source={source}")
    result = logwarden(*args, *files)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"Traceback" not in result.stderr
    got = records_of(result)
    assert_same(got, Reference(config, only).scan_files(files, source))
    return got


# ---------------------------------------------------------------- the command line


def test_version() -> None:
    result = logwarden("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"logwarden {version('logwarden')}"


@pytest.mark.parametrize("config", [SHIPPED, DEMO, *EXAMPLES], ids=lambda path: path.name)
def test_check_config_accepts_the_shipped_configs(config: Path) -> None:
    result = logwarden("check-config", "-c", config)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith(f"{config}: ok: ")
    # only warnings, about sources whose paths (a real host's) match no file here, and about
    # a journal this machine does not let us read
    for line in result.stderr.decode().splitlines():
        assert re.fullmatch(
            r"logwarden: warning: .*: sources\.\S+\.(paths: matches no file now"
            r"|journal: no journal file can be read now) .*",
            line,
        )


def problems_of(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert result.returncode == EX_CONFIG, result.stderr.decode()
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert re.fullmatch(r"logwarden: invalid config \(\d+ problems?\):", lines[0])
    assert b"Traceback" not in result.stderr
    return [line.strip() for line in lines[1:]]


def test_check_config_lists_every_problem_of_the_tables(write_config: Any) -> None:
    path = write_config("""
        [daemon]
        state_dir = "state"
        comit_interval = "200ms"

        [sources.auth]
        paths = ["/var/log/auth.log"]
        max_line_bytes = "64 parsecs"
        start_at = "middle"

        [rules.ssh]
        sources = ["auht"]
        match = ['Failed password']
        severity = "dire"
        threshold = { key = "ip", count = 0, within = "5m" }
    """)
    problems = problems_of(logwarden("check-config", "-c", path))
    expected = [
        (3, "daemon.comit_interval: unknown key (did you mean 'commit_interval'?)"),
        (7, "sources.auth.max_line_bytes: "),
        (8, "sources.auth.start_at: "),
        (11, "rules.ssh.sources[0]: no source named 'auht' (did you mean 'auth'?)"),
        (13, "rules.ssh.severity: "),
        (14, "rules.ssh.threshold.count: "),
    ]
    assert len(problems) == len(expected), problems
    for line, start in expected:
        assert any(p.startswith(f"{path}:{line}: {start}") for p in problems), (line, problems)


def test_check_config_lists_every_problem_of_the_rules(write_config: Any) -> None:
    path = write_config("""
        [sources.auth]
        paths = ["/var/log/auth.log"]

        [rules.lookahead]
        match = ['Failed (?=password)']

        [rules.unknown-placeholder]
        match = ['from %{ipv5}']

        [rules.failing-sample]
        match = ['Failed password for %{user} from %{ip}']
        tests = [{ line = "Failed password for root from 192.0.2.1", expect = { user = "bob" } }]

        [rules.no-such-key]
        match = ['Accepted']
        threshold = { key = "ip", count = 3, within = "1m" }

        [rules.matching-negative]
        match = ['Accepted']
        tests = [{ line = "Accepted publickey for alice", expect = false }]
    """)
    problems = problems_of(logwarden("check-config", "-c", path))
    expected = [
        (5, "rules.lookahead.match[0]: RE2 cannot compile this pattern"),
        (8, "rules.unknown-placeholder.match[0]: unknown placeholder type 'ipv5'"),
        (12, "rules.failing-sample.tests[0]: captures differ: user = 'root' (expected 'bob')"),
        (16, "rules.no-such-key.threshold.key: match[0] has no capture named 'ip'"),
        (20, "rules.matching-negative.tests[0]: expected no match"),
    ]
    assert len(problems) == len(expected), problems
    for line, start in expected:
        assert any(p.startswith(f"{path}:{line}: {start}") for p in problems), (line, problems)


def test_check_config_quotes_patterns_as_written_and_expands_them_on_request(
    write_config: Any,
) -> None:
    """A bad pattern's problem shows `%{ip}` as the operator wrote it, not 2 KB of IPv6 syntax;
    `check-config --verbose` adds the expansion under it."""
    path = write_config("""
        [sources.auth]
        paths = ["/var/log/auth.log"]

        [rules.ssh]
        match = ['Failed password for %{user} from %{ip} (port']

        [rules.slow]
        engine = "regex"
        match = ['from %{ip} (port']
    """)
    ssh_expanded = expand("Failed password for %{user} from %{ip} (port")
    slow_expanded = expand("from %{ip} (port")
    result = logwarden("check-config", "-c", path)
    problems = problems_of(result)
    assert problems[:2] == [
        f"{path}:5: rules.ssh.match[0]: RE2 cannot compile this pattern: missing ):"
        " Failed password for %{user} from %{ip} (port; RE2 syntax:"
        " https://github.com/google/re2/wiki/Syntax;"
        ' for lookaround or backreferences use engine = "regex"',
        f"{path}:9: rules.slow.match[0]: the regex engine cannot compile this pattern:"
        " missing ) at position 16",
    ]
    assert problems[2:] == [
        "(patterns are quoted as written; `logwarden check-config --verbose` also shows them"
        " with their placeholders expanded)"
    ]
    stderr = result.stderr.decode()
    assert "(?P<ip>" not in stderr and len(stderr) < 1000

    verbose = problems_of(logwarden("check-config", "--verbose", "-c", path))
    assert verbose == [
        problems[0],
        f"expanded: {ssh_expanded}",
        problems[1],
        f"expanded: {slow_expanded}",
    ]


def test_check_config_lists_table_and_rule_problems_together(write_config: Any) -> None:
    path = write_config("""
        [daemon]
        comit_interval = "1s"

        [sources.auth]
        paths = ["/var/log/auth.log"]

        [rules.lookahead]
        match = ['Failed (?=password)']
    """)
    problems = problems_of(logwarden("check-config", "-c", path))
    assert any(p.startswith(f"{path}:2: daemon.comit_interval: unknown key") for p in problems)
    assert any(p.startswith(f"{path}:8: rules.lookahead.match[0]: RE2") for p in problems)


# ---------------------------------------------------------------- agreement with the reference


def test_data_is_small_and_varied() -> None:
    """The committed logs stay small, and hold what the shipped rules are about."""
    assert sum(path.stat().st_size for path in DATA_FILES) < 1024 * 1024
    names = {path.name for path in DATA_FILES}
    assert {
        "auth.log",
        "syslog",
        "kern.log",
        "nginx-access.log",
        "nginx-error.log",
        "apache-error.log",
        "postgresql-15-main.log",
        "app.log",
    } <= names


def test_shipped_config_on_all_data_agrees_with_the_reference() -> None:
    """Files of no source get every rule; every shipped rule fires somewhere in tests/data (a
    rule with `records = false` by lending its captures to another's record)."""
    got = scan_agrees(SHIPPED, DATA_FILES)
    fired = {record["rule"] for record in got}
    rules = tomllib.loads(SHIPPED.read_text())["rules"]
    feeding = {name for name, table in rules.items() if table.get("records") is False}
    assert feeding == {"ssh-connection"}
    assert fired == set(rules) - feeding
    assert feeding <= {record["carried"]["rule"] for record in got if "carried" in record}
    assert any(record.get("kind") == "alert" for record in got)


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("auth", "auth.log"),
        ("auth", "auth-traditional.log"),
        ("syslog", "syslog"),
        ("kern", "kern.log"),
        ("nginx-access", "nginx-access.log"),
        ("nginx-error", "nginx-error.log"),
        ("apache-access", "apache-other_vhosts_access.log"),
        ("apache-error", "apache-error.log"),
    ],
)
def test_shipped_config_with_source_agrees_with_the_reference(source: str, name: str) -> None:
    """`--source` scopes the rules: kernel lines in syslog are for the kern source only."""
    got = scan_agrees(SHIPPED, [DATA / name], source=source)
    assert got, f"no shipped rule for source {source} matched {name}"
    assert {record["source"]["name"] for record in got if "source" in record} == {source}


def test_files_take_the_first_source_whose_globs_cover_them(tmp_path: Path) -> None:
    """The shipped config moved under tmp_path: each file finds its source by path alone."""
    text = SHIPPED.read_text().replace('"/var/log/', f'"{tmp_path}/var/log/')
    config = tmp_path / "logwarden.toml"
    config.write_text(text)
    placed = {
        "var/log/auth.log": "auth.log",
        "var/log/auth.log.1": "auth-traditional.log",  # rotated: excluded, so no source
        "var/log/syslog": "syslog",
        "var/log/kern.log": "kern.log",
        "var/log/nginx/access.log": "nginx-access.log",
        "var/log/nginx/shop.example.com-error.log": "nginx-error.log",
        "var/log/apache2/other_vhosts_access.log": "apache-other_vhosts_access.log",
        "var/log/apache2/error.log": "apache-error.log",
        "var/log/messages": "syslog",  # no source: every rule, kernel ones too
    }
    files = []
    for target, name in placed.items():
        path = tmp_path / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((DATA / name).read_bytes())
        files.append(path)
    got = scan_agrees(config, files)
    by_path = {r["source"]["path"]: r["source"]["name"] for r in got if "source" in r}
    assert by_path[str(tmp_path / "var/log/auth.log")] == "auth"
    assert by_path[str(tmp_path / "var/log/auth.log.1")] is None
    assert by_path[str(tmp_path / "var/log/nginx/shop.example.com-error.log")] == "nginx-error"
    assert by_path[str(tmp_path / "var/log/messages")] is None
    kernel = {r["source"]["name"] for r in got if r["rule"].startswith("kernel-")}
    assert kernel == {"kern", None}  # from kern.log and messages, never from syslog


@pytest.mark.parametrize("config", [DEMO, *EXAMPLES], ids=lambda path: path.name)
def test_example_configs_agree_with_the_reference(config: Path) -> None:
    got = scan_agrees(config, [*DATA_FILES, *SAMPLES])
    assert got, f"{config.name} matched nothing in tests/data"


def test_samples_feed_the_demo() -> None:
    """`make run` must show something: the demo's rules match the samples it copies."""
    got = scan_agrees(DEMO, SAMPLES)
    counts = {
        rule: sum(r["rule"] == rule for r in got) for rule in ("ssh-failed-password", "app-error")
    }
    assert all(count >= 5 for count in counts.values()), counts


def test_rule_restricts_the_output() -> None:
    only = ("ssh-failed-password", "kernel-oom-kill")
    got = scan_agrees(SHIPPED, DATA_FILES, only=only)
    assert {record["rule"] for record in got} == set(only)


def test_unknown_rule_is_a_usage_error() -> None:
    result = logwarden("scan", "-c", SHIPPED, "--rule", "ssh-failed-pasword", DATA / "auth.log")
    assert result.returncode == 2
    assert result.stdout == b""
    message = result.stderr.decode()
    assert "ssh-failed-pasword" in message
    assert "Traceback" not in message


def test_unknown_source_is_a_usage_error() -> None:
    result = logwarden("scan", "-c", SHIPPED, "--source", "authlog", DATA / "auth.log")
    assert result.returncode == 2
    assert result.stdout == b""
    assert "authlog" in result.stderr.decode()


# ---------------------------------------------------------------- edge cases

EDGE_CONFIG = """
[sources.edge]
paths = ["edge/*.log"]
max_line_bytes = 256

[rules.ssh-failed-password]
match = ['Failed password for (?:invalid user )?%{user} from %{ip} port %{int:port}']

[rules.any-x]
match = ['(?P<xs>x{3,})']
exclude = ['NOT-THIS']

[rules.line-end]
match = ['(?P<last>[a-z]+)$']
sources = ["edge"]

[rules.line-start]
match = ['^(?P<first>[A-Za-z]+)']

[rules.euros]
match = ['^(?P<three>€€€)']
"""

FAIL = "sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2"


def edge_files(directory: Path) -> list[Path]:
    """Files that stress framing and decoding; names say what each holds."""
    long_euro = ("€" * 30_000).encode()  # 90,000 bytes: the 64 KiB cut falls inside a character
    contents = {
        "empty.log": b"",
        "crlf.log": f"{FAIL}\r\nplain line xxx\r\n\r\n{FAIL}\r\r\nlast\r\n".encode(),
        "no-final-newline.log": f"first\n{FAIL}\nend of file without newline xxxx".encode(),
        "invalid-utf8.log": (
            b"caf\xe9 xxx\n\xff\xfe" + FAIL.encode() + b"\n\xe2\x82 half a euro xxx\nok\xc3\n"
        ),
        "nul-bytes.log": b"\0\0\0\0xxx\0\n" + FAIL.encode() + b"\0\n" + b"\0" * 4096 + b"\n",
        "only-newlines.log": b"\n\n\n\r\n\n",
        "lone-cr.log": b"a\rb xxx\r" + FAIL.encode() + b"\rc\n",
        "long-lines.log": (
            FAIL.encode()
            + b" "
            + b"y" * 70_000
            + b"xxx\n"  # cut: the match is in the first 64 KiB
            + b"x" * 100_000
            + b"\n"  # cut; the capture is the cut text
            + long_euro
            + b"\n"
            + FAIL.encode()
            + b"\n"  # line numbers and offsets continue after a cut
            + b"z" * DEFAULT_MAX_LINE_BYTES
            + b"\r\n"  # exactly the limit (\r does not count)
            + b"w" * (DEFAULT_MAX_LINE_BYTES + 1)
            + b"\r\n"  # one over
            + FAIL.encode()
            + b" "
            + b"q" * 80_000  # the last line: long and without newline
        ),
        "mixed.log": b"\n".join(
            line.encode()
            for line in (
                FAIL,
                f"{FAIL} NOT-THIS xxxx",
                "xxxx NOT-THIS",
                "trailing word",
                "  ",
                "ünïcödé xxx ü",
                "sshd[2]: Failed password for invalid user ö from 2001:db8::1 port 65535 ssh2",
                "sshd[3]: Failed password for root from 999.1.1.1 port 1 ssh2",
                "\v vertical\vtab xxx\t",
            )
        )
        + b"\n",
    }
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in contents.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_edge_cases_agree_with_the_reference_under_the_shipped_config(tmp_path: Path) -> None:
    files = edge_files(tmp_path / "edge")
    got = [r for r in scan_agrees(SHIPPED, files) if r.get("kind") != "alert"]
    assert any(record["truncated"] for record in got)
    assert any(record["line"].startswith("\ufffd\ufffdsshd[1]") for record in got)
    cut_record = next(r for r in got if r["truncated"] and r["line"].startswith("sshd[1]"))
    assert len(cut_record["line"].encode()) == DEFAULT_MAX_LINE_BYTES


def test_edge_cases_agree_with_the_reference_under_a_small_line_limit(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(EDGE_CONFIG)
    files = edge_files(tmp_path / "edge")
    got = scan_agrees(config, files)
    assert {record["source"]["name"] for record in got} == {"edge"}
    truncated = [record for record in got if record["truncated"]]
    assert truncated
    assert all(len(record["line"].encode()) <= 256 for record in truncated)
    euro = next(r for r in truncated if r["line"].startswith("€"))
    assert len(euro["line"].encode()) == 255  # backed off to a character boundary
    rules = {"ssh-failed-password", "any-x", "line-end", "line-start", "euros"}
    assert {record["rule"] for record in got} == rules


def test_edge_cases_with_the_same_rules_outside_their_source(tmp_path: Path) -> None:
    """Outside the source's globs: the default line limit, and every rule, scoped ones too."""
    config = tmp_path / "edge.toml"
    config.write_text(EDGE_CONFIG)
    files = edge_files(tmp_path / "elsewhere")
    got = scan_agrees(config, files)
    assert {record["source"]["name"] for record in got} == {None}
    assert "line-end" in {record["rule"] for record in got}
    cut = [len(record["line"].encode()) for record in got if record["truncated"]]
    assert cut
    assert all(DEFAULT_MAX_LINE_BYTES - 3 <= length <= DEFAULT_MAX_LINE_BYTES for length in cut)


def test_standard_input(tmp_path: Path) -> None:
    """A pipe delivers small reads, so lines, CRLFs and long lines cross every read boundary."""
    long_lines = next(path for path in edge_files(tmp_path) if path.name == "long-lines.log")
    data = (DATA / "auth.log").read_bytes() + long_lines.read_bytes()
    for extra, source in (((), None), (("--source", "auth"), "auth")):
        result = logwarden("scan", "-c", SHIPPED, *extra, "-", stdin=data)
        assert result.returncode == 0, result.stderr.decode()
        got = records_of(result)
        for record in got:  # the identity of a pipe is whatever fstat says
            if record.get("kind") == "alert":
                continue
            assert isinstance(record["source"]["dev"], int)
            assert isinstance(record["source"]["inode"], int)
            record["source"]["dev"] = record["source"]["inode"] = None
        expected = Reference(SHIPPED).scan("-", data, source, None)
        assert_same(got, expected)
        assert got


MiB = 1024 * 1024


@pytest.mark.slow  # the reference takes seconds over 16 MiB; the scan under one
def test_read_chunk_boundaries_agree_with_the_reference(tmp_path: Path) -> None:
    """A file of several read chunks (scan reads 4 MiB at a time), with a hard case across each
    boundary: a CRLF split between \r and \n, a character split between its bytes, a long line
    cut before the boundary and its rest skipped after it, a line held short before the boundary
    and found long after it; and a long last line without newline."""
    noise = [line + b"\n" for path in DATA_FILES for line in path.read_bytes().splitlines()]
    data = bytearray()

    def fill_to(target: int) -> None:
        index = 0
        while len(data) < target:
            line = noise[index % len(noise)]
            index += 1
            room = target - len(data)
            data.extend(line if len(line) < room else b"x" * (room - 1) + b"\n")

    fail = FAIL.encode()
    fill_to(4 * MiB - len(fail) - 1)
    data.extend(fail + b"\r\n" + fail + b"\n")  # the \r ends the first chunk, \n starts the next
    fill_to(8 * MiB - len(fail) - 2)
    data.extend(fail + b" " + "€ xxx".encode() + b"\n")  # € = e2|82 ac: split by the boundary
    fill_to(12 * MiB - 70_000)
    data.extend(fail + b" " + b"z" * 200_000 + b"\r\n" + fail + b"\n")  # cut, rest skipped
    fill_to(16 * MiB - 10_000)
    data.extend(fail + b" " + b"w" * 80_000 + b"\n")  # held whole up to the boundary, then cut
    fill_to(16 * MiB + 200_000)
    data.extend(fail + b" " + b"q" * 100_000)  # the last line: long, no newline
    assert data[4 * MiB - 1 : 4 * MiB + 1] == b"\r\n"
    assert data[8 * MiB - 1 : 8 * MiB + 2] == "€".encode()
    path = tmp_path / "chunks.log"
    path.write_bytes(data)
    got = [r for r in scan_agrees(SHIPPED, [path]) if r.get("kind") != "alert"]
    assert sum(record["truncated"] for record in got) == 3
    assert any("€ xxx" in record["line"] for record in got)


# ---------------------------------------------------------------- files that cannot be read


def test_unreadable_files_are_reported_and_skipped(tmp_path: Path) -> None:
    """One plain error line per bad file, exit 1, and the good files are still scanned."""
    missing = tmp_path / "missing.log"
    if os.geteuid() == 0:  # root reads a chmod 000 file; it cannot read a directory as a file
        unreadable = tmp_path / "a-directory.log"
        unreadable.mkdir()
    else:
        unreadable = tmp_path / "secret.log"
        unreadable.write_text(FAIL + "\n")
        unreadable.chmod(0)
    good = DATA / "auth.log"
    result = logwarden("scan", "-c", SHIPPED, missing, good, unreadable)
    assert result.returncode == 1
    errors = result.stderr.decode().splitlines()
    assert "Traceback" not in result.stderr.decode()
    assert len(errors) == 2, errors
    assert str(missing) in errors[0]
    assert str(unreadable) in errors[1]
    assert_same(records_of(result), Reference(SHIPPED).scan_files([good]))


# ---------------------------------------------------------------- bounded memory


# wait4's peak RSS for a child of pytest is not the child's own: Linux carries the RSS of the
# forked parent (all of pytest) into the child's maximum when it execs. So a small fresh Python
# forks the command and reports what wait4 says about it: a floor of about 10 MiB, not pytest's.
RSS_PROBE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(command: Sequence[str], out: Path, err: Path) -> tuple[int, int]:
    """Run `command` with stdout and stderr to files; its exit status and peak RSS in bytes."""
    peak = out.with_suffix(".rss")
    with out.open("wb") as stdout, err.open("wb") as stderr:
        probe = subprocess.Popen(
            [sys.executable, "-c", RSS_PROBE, str(peak), *command],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            status = probe.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(probe.pid, signal.SIGKILL)  # the probe and the command it forked
            probe.wait()
            pytest.fail(f"{command} did not finish within {TIMEOUT}s")
    return status, int(peak.read_text())


def test_rss_probe_measures_the_command_alone(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    _, small = run_measured([sys.executable, "-c", "pass"], out, err)
    _, large = run_measured([sys.executable, "-c", "b = bytearray(200 << 20)"], out, err)
    assert small < 50 * MiB
    assert 200 * MiB < large < 260 * MiB


def test_a_100_mib_line_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A line of 100 MiB without newline: cut at 64 KiB, reported as truncated, RSS stays small."""
    huge = tmp_path / "huge.log"
    head = f"{FAIL} ".encode()
    filler = b"A" * MiB
    with huge.open("wb") as stream:
        stream.write(head)
        for _ in range(100):
            stream.write(filler)
    out, err = tmp_path / "out.ndjson", tmp_path / "err.log"
    command = [sys.executable, "-m", "logwarden", "scan", "-c", str(SHIPPED), str(huge)]
    status, peak = run_measured(command, out, err)
    assert status == 0, err.read_text()
    assert peak < 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [record["rule"] for record in records] == ["ssh-failed-password"]
    record = records[0]
    assert record["truncated"] is True
    assert record["line"] == (head + filler)[:DEFAULT_MAX_LINE_BYTES].decode()
    assert record["source"]["offset"] == 0
    assert record["source"]["line_no"] == 1
    captures = {"pid": "1", "method": "password", "user": "root", "ip": "203.0.113.9", "port": "22"}
    assert record["captures"] == captures


def test_reference_helpers() -> None:
    """The reference's own pieces, so a disagreement is not blamed on the wrong side."""
    assert as_python(r"a\sb").pattern == r"a[\t\n\f\r ]b"
    assert as_python(r"[^\s\]]\S").pattern == r"[^\t\n\f\r \]][^\t\n\f\r ]"
    assert not as_python(r"\s").search("\v")
    lines = reference_lines(b"a\r\n\nb", 10)
    assert [(line.offset, line.line_no, line.text) for line in lines] == [
        (0, 1, "a"),
        (3, 2, ""),
        (4, 3, "b"),
    ]
    assert cut("ab€".encode(), 3) == b"ab"
    assert glob_matches("/var/log/nginx/*access*.log", "/var/log/nginx/access.log")
    assert not glob_matches("/var/log/*.log", "/var/log/nginx/access.log")
    assert glob_matches("/srv/**/*.log", "/srv/a.log")
    assert glob_matches("/srv/**/*.log", "/srv/a/b/c.log")
    assert not glob_matches("/srv/**/*.log", "/srv/a/b/c.txt")
