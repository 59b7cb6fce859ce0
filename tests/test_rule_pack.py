"""The shipped rule pack, line by line: the real `logwarden scan` over corpora of attack lines.

Each corpus in tests/data (attack-sshd.log, attack-pam.log, ...) has a sidecar in
tests/rule_pack/ with one row per log line, `RULE key=value ... | LINE` or `- | LINE`: the rule
that must fire on that line (exactly one, or none) and captures it must have. `key=` wants an
empty capture, `!key` wants none at all (None: no address where a line names a host only). The
sidecar repeats each line so that a failure reads on its own; the first test holds the two equal.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "logwarden.toml"
EXAMPLES = ROOT / "config" / "examples"
DATA = ROOT / "tests" / "data"
SIDECARS = ROOT / "tests" / "rule_pack"
TIMEOUT = 120

# corpus → the config whose rules it is about
CORPORA = {
    "attack-sshd": SHIPPED,
    "attack-pam": SHIPPED,
    "attack-nginx-error": SHIPPED,
    "attack-apache-error": SHIPPED,
    "attack-postfix": EXAMPLES / "postfix.toml",
    "attack-dovecot": EXAMPLES / "dovecot.toml",
}

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Expected:
    """One sidecar row: the rule that must fire (None: no rule) and the captures it must have."""

    row: int  # line number in the sidecar, for messages
    rule: str | None
    captures: dict[str, str | None]
    line: str


_CAPTURE = re.compile(r"(?P<absent>!)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<value>\S*))?")


def read_sidecar(path: Path) -> list[Expected]:
    expected = []
    for row, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip() or text.startswith("#"):
            continue
        verdict, separator, line = text.partition(" | ")
        assert separator, f"{path.name}:{row}: no ' | ' between the verdict and the line"
        rule, *tokens = verdict.split()
        captures: dict[str, str | None] = {}
        for token in tokens:
            found = _CAPTURE.fullmatch(token)
            assert found, f"{path.name}:{row}: cannot read {token!r}"
            if found["absent"]:
                captures[found["key"]] = None
            else:
                assert found["value"] is not None, f"{path.name}:{row}: {token!r} wants a value"
                captures[found["key"]] = found["value"]
        expected.append(Expected(row, None if rule == "-" else rule, captures, line))
    return expected


def scan(config: Path, corpus: Path) -> dict[int, list[dict[str, object]]]:
    """Match records of `logwarden scan` by line number (alerts left out)."""
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "scan", "-c", str(config), str(corpus)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    by_line: dict[int, list[dict[str, object]]] = {}
    for raw in result.stdout.splitlines():
        record = orjson.loads(raw)
        if record.get("kind") != "alert":
            by_line.setdefault(record["source"]["line_no"], []).append(record)
    return by_line


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_corpus_is_what_its_sidecar_says(name: str) -> None:
    lines = [expected.line for expected in read_sidecar(SIDECARS / f"{name}.expect")]
    assert (DATA / f"{name}.log").read_text().splitlines() == lines


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_each_line_fires_the_expected_rule_with_its_captures(name: str) -> None:
    expected = read_sidecar(SIDECARS / f"{name}.expect")
    got = scan(CORPORA[name], DATA / f"{name}.log")
    problems = []
    for line_no, want in enumerate(expected, start=1):
        records = got.get(line_no, [])
        fired = [record["rule"] for record in records]
        where = f"{name}.expect:{want.row}: {want.line}\n   "
        if want.rule is None:
            if fired:
                problems.append(f"{where} expected no rule, got {fired}")
            continue
        if fired != [want.rule]:
            problems.append(f"{where} expected {want.rule}, got {fired or 'nothing'}")
            continue
        captures = records[0]["captures"]
        assert isinstance(captures, dict)
        for key, value in want.captures.items():
            if captures.get(key) != value:
                problems.append(f"{where} {key} = {captures.get(key)!r}, expected {value!r}")
    assert not problems, "\n".join(problems)


def test_every_address_captured_is_an_address() -> None:
    """`ip` is never a host name, in any record of any corpus (IPv4, IPv6, ::ffff: forms)."""
    address = re.compile(r"[0-9.]+|[0-9A-Fa-f:]+(?:[0-9.]+)?")
    for name, config in CORPORA.items():
        for records in scan(config, DATA / f"{name}.log").values():
            for record in records:
                captures = record["captures"]
                assert isinstance(captures, dict)
                ip = captures.get("ip")
                assert ip is None or address.fullmatch(ip), (name, record["line"])


@pytest.mark.parametrize(
    "config", [SHIPPED, EXAMPLES / "postfix.toml", EXAMPLES / "dovecot.toml"], ids=lambda p: p.name
)
def test_check_config_passes(config: Path) -> None:
    """Every rule's samples pass (`check-config` runs them); only warnings about what this host
    lacks (the shipped paths, a readable journal)."""
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "check-config", "-c", str(config)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert re.match(rf"{re.escape(str(config))}: ok: .* samples passed", result.stdout.decode())
    for line in result.stderr.decode().splitlines():
        assert "matches no file now" in line or "no journal file can be read now" in line, line
