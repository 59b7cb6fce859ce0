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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import Daemon, published_records, wait_until, write_config

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


# ---------------------------------------------------------------- the shipped rules' state


def auth_rules_only() -> str:
    """The shipped sshd, sudo and PAM rules, reading logs/auth.log and writing one ndjson report
    (the shipped sources are the host's journal and /var/log)."""
    head = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"
rescan_interval = "1s"

[sources.auth]
paths = ["logs/auth.log"]
start_at = "beginning"

[reports.security]
dir = "reports"
format = "ndjson"
rotate_interval = "1s"
keep = 1000000
"""
    tables = re.split(r"(?m)^(?=\[)", SHIPPED.read_text())
    kept = [t for t in tables if re.match(r"\[rules\.(?:ssh|sudo|pam)-", t)]
    assert len(kept) == 19
    return head + "".join(re.sub(r"(?m)^sources = .*\n", "", table) for table in kept)


def bursts() -> list[str]:
    """Recent lines (inside the bounds of a believable time) that the shipped thresholds are
    for: a password guesser at a sudo prompt, an sshd brute force, and a flood of
    kex_exchange_identification errors whose address only the `Connection from` line names."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def at(seconds: int, text: str) -> str:
        return f"{(base + timedelta(seconds=seconds)).isoformat()} web1 {text}"

    lines = [
        at(
            n,
            "sudo:    alice : 1 incorrect password attempt ; TTY=pts/0 ; PWD=/home/alice ;"
            " USER=root ; COMMAND=/usr/bin/apt update",
        )
        for n in range(3)
    ]
    lines += [
        at(
            10 + n,
            f"sshd[{900 + n}]: Failed password for root from 203.0.113.9 port {40000 + n} ssh2",
        )
        for n in range(5)
    ]
    for n in range(20):
        pid = 1000 + n
        lines += [
            at(
                20 + n,
                f"sshd[{pid}]: Connection from 192.0.2.10 port {62004 + n} on 192.0.2.1 port 22",
            ),
            at(
                20 + n,
                f"sshd[{pid}]: error: kex_exchange_identification: Connection closed by remote host",
            ),
        ]
    return lines


def test_the_shipped_thresholds_alert_on_sudo_ssh_and_carried_addresses(tmp_path: Path) -> None:
    corpus = tmp_path / "auth.log"
    corpus.write_text("\n".join(bursts()) + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "scan", "-c", str(SHIPPED), str(corpus)],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    alerts = [r for r in map(orjson.loads, result.stdout.splitlines()) if r.get("kind")]
    assert [(a["rule"], a["key"], a["count"]) for a in alerts] == [
        ("sudo-incorrect-password", {"user": "alice"}, 3),
        ("ssh-failed-password", {"ip": "203.0.113.9"}, 5),
        ("ssh-protocol-error", {"ip": "192.0.2.10"}, 20),
    ]


def comparable(record: dict[str, Any]) -> bytes:
    differ = {"time", "event_time"} if record.get("time_source") == "arrival" else {"time"}
    return orjson.dumps(
        {k: v for k, v in record.items() if k not in differ}, option=orjson.OPT_SORT_KEYS
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the `daemon` fixture finds its config."""
    return tmp_path


def test_the_daemon_gives_scans_records_with_the_shipped_auth_rules(
    tmp_path: Path, daemon: Daemon
) -> None:
    """The sshd corpus (carried addresses included) and the bursts, read by the daemon and by
    `scan`: the same records and alerts."""
    write_config(tmp_path / "logwarden.toml", auth_rules_only())
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "auth.log"
    log.write_text((DATA / "attack-sshd.log").read_text() + "\n".join(bursts()) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "logwarden",
            "scan",
            "-c",
            str(tmp_path / "logwarden.toml"),
            str(log),
        ],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    from_scan = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sum("carried" in r for r in from_scan) >= 30

    daemon.start()
    wait_until(
        lambda: len(published_records(tmp_path / "reports")) >= len(from_scan),
        30,
        message="the daemon's records",
    )
    assert daemon.stop() == 0
    from_daemon = published_records(tmp_path / "reports")
    assert sorted(map(comparable, from_daemon)) == sorted(map(comparable, from_scan))
