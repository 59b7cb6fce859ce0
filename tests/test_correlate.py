"""`carry` (logwarden.correlate) through the real stages: a compiled rule set, `MatchProcessor`, real
blocks of sshd lines (from fail2ban's test logs); its bounds, its state, and its config errors."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from logwarden import correlate
from logwarden.correlate import Correlator
from logwarden.framing import Block
from logwarden.journal_entries import Entry, EntryBatch
from logwarden.origin import Origin, SourceRef
from logwarden.problems import ConfigError
from logwarden.records import RecordBuilder
from logwarden.rules import Match, load_config
from logwarden.stages import MatchProcessor
from test_stages import HEAD  # the same one-source, one-report config

RULES = """\
[rules.ssh-connection]
match = ['sshd\\[%{int:pid}\\]: Connection from %{ip} port %{int:port}']
records = false

[rules.ssh-too-many]
match = ['sshd\\[%{int:pid}\\]: Disconnecting: Too many authentication failures(?: for %{user})?']
carry = { key = "pid", from = ["ssh-connection"], within = "2m", captures = ["ip"] }
"""
# a recent day, inside the default bounds of a believable time
BASE = (datetime.now(UTC) - timedelta(days=2)).replace(hour=4, minute=9, second=0, microsecond=0)


def stamp(seconds: float) -> str:
    return (BASE + timedelta(seconds=seconds)).isoformat()


def connection(seconds: float, pid: int, ip: str) -> str:
    # fail2ban/tests/files/logs/sshd: "sshd[26713]: Connection from 115.249.163.77 port 51353"
    return f"{stamp(seconds)} localhost sshd[{pid}]: Connection from {ip} port 51353\n"


def too_many(seconds: float, pid: int) -> str:
    # and, 3 s later: "sshd[26713]: Disconnecting: Too many authentication failures for root"
    return (
        f"{stamp(seconds)} localhost sshd[{pid}]: Disconnecting: Too many authentication failures"
        " for root [preauth]\n"
    )


class Run:
    """A config's rules and stages, fed lines as the daemon's pipeline feeds blocks."""

    def __init__(self, tmp_path: Path, rules: str, head: str = HEAD) -> None:
        (tmp_path / "logwarden.toml").write_text(head + textwrap.dedent(rules))
        self.config, self.rules = load_config(tmp_path / "logwarden.toml")
        self.processor = MatchProcessor(self.rules, self.config.sources, RecordBuilder("web1"))
        self.ref = SourceRef("auth", str(tmp_path / "auth.log"), 1, 2)
        self.offset = 0

    def feed(self, *lines: str, origin: Origin | None = None) -> list[dict[str, Any]]:
        """One block of `lines` (of the file `self.ref`, unless another `origin` is given); the
        records that come out."""
        data = "".join(lines).encode()
        block = Block(data, self.offset, None)
        self.offset += len(data)
        matches = self.rules.for_source("auth").scan(block)
        outputs = self.processor.process(matches, origin or self.ref)
        return [orjson.loads(out.data) for out in outputs]


def test_the_address_comes_from_the_connection_line_of_the_same_pid(tmp_path: Path) -> None:
    """Both lines in one block: the earlier line is remembered before the later one needs it."""
    run = Run(tmp_path, RULES)
    [record] = run.feed(connection(0, 26713, "115.249.163.77"), too_many(3, 26713))
    assert record["rule"] == "ssh-too-many"  # ssh-connection only feeds: no record of its own
    assert record["captures"] == {"pid": "26713", "user": "root", "ip": "115.249.163.77"}
    assert record["carried"] == {
        "captures": ["ip"],
        "rule": "ssh-connection",
        "event_time": (BASE).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
    }
    assert run.processor.matches == {"ssh-connection": 1, "ssh-too-many": 1}


def test_another_pid_or_an_expired_window_carries_nothing(tmp_path: Path) -> None:
    run = Run(tmp_path, RULES)
    run.feed(connection(0, 100, "192.0.2.10"))
    [other_pid] = run.feed(too_many(1, 101))
    [too_late] = run.feed(too_many(121, 100))  # 2m01s after the connection
    for record in (other_pid, too_late):
        assert "ip" not in record["captures"] and "carried" not in record
    # within the window, in a later block: carried
    run.feed(connection(200, 100, "192.0.2.11"))
    [in_time] = run.feed(too_many(320, 100))
    assert in_time["captures"]["ip"] == "192.0.2.11"


def test_another_file_or_journal_host_of_the_source_is_another_process(tmp_path: Path) -> None:
    """`paths = ["/var/log/remote/*/auth.log"]`: pid 500 on h2 is not pid 500 on h1; a rotated
    file's lines read after the rename continue its stream; a journal's hosts (and boots) are
    apart too."""
    run = Run(tmp_path, RULES)
    h1 = SourceRef("auth", "/var/log/remote/h1/auth.log", 1, 10)
    h2 = SourceRef("auth", "/var/log/remote/h2/auth.log", 1, 20)
    run.feed(connection(0, 500, "192.0.2.1"), origin=h1)
    [other_host] = run.feed(too_many(1, 500), origin=h2)
    assert "ip" not in other_host["captures"] and "carried" not in other_host
    [same_host] = run.feed(too_many(2, 500), origin=h1)
    assert same_host["captures"]["ip"] == "192.0.2.1"
    # h1's file rotated: the rest of the old file (now auth.log.1) lends to the new auth.log
    rotated = SourceRef("auth", "/var/log/remote/h1/auth.log.1", 1, 10, h1.path)
    run.feed(connection(10, 501, "192.0.2.2"), origin=rotated)
    [continued] = run.feed(too_many(11, 501), origin=SourceRef("auth", h1.path, 1, 11))
    assert continued["captures"]["ip"] == "192.0.2.2"

    def entry(host: str, boot: str, text: str) -> Entry:
        at = int(datetime.fromisoformat(text.split(maxsplit=1)[0]).timestamp() * 1e6)
        message = text.split(": ", 1)[1].rstrip("\n")
        fields = {"MESSAGE": message}
        return Entry(f"c-{host}-{at}", at, "sshd", 600, None, boot, host, fields)

    def journal(*entries: Entry) -> list[dict[str, Any]]:
        lines: list[str] = []
        starts: list[int] = []
        for item in entries:
            starts.append(run.offset + sum(len(line) for line in lines))
            lines.append(item.line + "\n")
        return run.feed(*lines, origin=EntryBatch("auth", entries, starts))

    [elsewhere, again, rebooted] = journal(
        entry("h1", "b1", connection(20, 600, "192.0.2.3")),
        entry("h2", "b2", too_many(21, 600)),
        entry("h1", "b1", too_many(22, 600)),
        entry("h1", "b3", too_many(23, 600)),
    )
    assert "ip" not in elsewhere["captures"] and "ip" not in rebooted["captures"]
    assert again["captures"]["ip"] == "192.0.2.3"


def test_a_line_with_its_own_address_keeps_it(tmp_path: Path) -> None:
    rules = RULES.replace(
        "Too many authentication failures(?: for %{user})?'",
        "Too many authentication failures(?: for %{user})?(?: from %{ip})?'",
    )
    run = Run(tmp_path, rules)
    run.feed(connection(0, 7, "192.0.2.10"))
    [record] = run.feed(too_many(1, 7).replace(" [preauth]", " from 198.51.100.1 [preauth]"))
    assert record["captures"]["ip"] == "198.51.100.1" and "carried" not in record


def test_carried_addresses_feed_a_threshold_and_an_ignore_list(tmp_path: Path) -> None:
    """5 address-less failures from one carried address alert once, keyed on it; the threshold
    key need not be in the rule's own patterns. An allow-listed carried address is ignored."""
    rules = RULES + (
        'threshold = { key = "ip", count = 5, within = "10m" }\nignore = ["10.0.0.0/8"]\n'
    )
    run = Run(tmp_path, rules)
    lines = []
    for n in range(6):
        lines += [connection(n * 10, 500 + n, "203.0.113.9"), too_many(n * 10 + 3, 500 + n)]
    lines += [connection(70, 600, "10.1.2.3"), too_many(71, 600)]
    records = run.feed(*lines)
    [alert] = [r for r in records if r.get("kind") == "alert"]
    assert alert["key"] == {"ip": "203.0.113.9"} and alert["count"] == 5
    assert sum("kind" not in r for r in records) == 6
    assert run.processor.suppressed == {"ssh-too-many": 1}


def test_the_memory_rides_in_the_snapshot_and_survives_an_unchanged_reload(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path, RULES)
    run.feed(connection(0, 1, "192.0.2.1"), connection(1, 2, "192.0.2.2"))
    state = orjson.loads(orjson.dumps(run.processor.snapshot()))

    restarted = Run(tmp_path, RULES)
    assert restarted.processor.restore(state) == []
    [record] = restarted.feed(too_many(5, 1))
    assert record["captures"]["ip"] == "192.0.2.1"

    # a reload: unchanged, the memory is kept, and so it is with another `within` (each fill
    # checks its own); another key or other captures start empty, after a reload as after a
    # restart (the memory is the `from` rule's by that key and those captures)
    config, rules = load_config(tmp_path / "logwarden.toml")
    restarted.processor, _, _ = restarted.processor.reconfigure(rules, config.sources)
    [kept] = restarted.feed(too_many(6, 2))
    assert kept["captures"]["ip"] == "192.0.2.2"
    (tmp_path / "logwarden.toml").write_text(HEAD + RULES.replace('"2m"', '"3m"'))
    config, rules = load_config(tmp_path / "logwarden.toml")
    restarted.processor, changes, _ = restarted.processor.reconfigure(rules, config.sources)
    assert changes.changed == ("ssh-too-many",)
    [longer] = restarted.feed(too_many(7, 2))
    assert longer["captures"]["ip"] == "192.0.2.2"
    other = RULES.replace('captures = ["ip"]', 'captures = ["ip", "port"]')
    (tmp_path / "logwarden.toml").write_text(HEAD + other)
    config, rules = load_config(tmp_path / "logwarden.toml")
    reloaded, _, _ = restarted.processor.reconfigure(rules, config.sources)
    after_restart = MatchProcessor(rules, config.sources, RecordBuilder("web1"))
    after_restart.restore(state)
    for processor in (reloaded, after_restart):
        restarted.processor = processor
        [fresh] = restarted.feed(too_many(8, 2))
        assert "ip" not in fresh["captures"]


def test_the_memory_is_bounded_and_counts_evictions(tmp_path: Path) -> None:
    config, _ = load_config(_write(tmp_path, RULES))
    correlator = Correlator(config.rules.values(), max_keys=3)
    for pid in range(5):
        correlator.apply(
            _match("ssh-connection", pid=str(pid), ip=f"192.0.2.{pid}"), "auth", "a", 0
        )
    assert correlator.entries("ssh-connection") == 3
    assert correlator.evictions() == {"ssh-connection": 2}  # counted for the remembered rule
    evicted, carried = correlator.apply(_match("ssh-too-many", pid="0"), "auth", "a", 1)
    assert carried is None and "ip" not in evicted.captures
    kept, carried = correlator.apply(_match("ssh-too-many", pid="4"), "auth", "a", 1)
    assert kept.captures["ip"] == "192.0.2.4" and carried is not None
    # another source's pid 4 is another process, and so is another file's of the same source
    _, elsewhere = correlator.apply(_match("ssh-too-many", pid="4"), "other", "a", 1)
    assert elsewhere is None
    _, elsewhere = correlator.apply(_match("ssh-too-many", pid="4"), "auth", "b", 1)
    assert elsewhere is None
    # a memory of version 1 (slots without their file) is dropped, not guessed at
    old = {"v": 1, "rules": {"ssh-too-many": [["auth", ["4"], 1, "ssh-connection", {"ip": "x"}]]}}
    fresh = Correlator(config.rules.values())
    fresh.restore(old)
    assert fresh.entries("ssh-connection") == 0
    # entries older than the window go as time moves on
    correlator.apply(_match("ssh-connection", pid="9", ip="192.0.2.9"), "auth", "a", 1000)
    assert correlator.entries("ssh-connection") == 1


def test_rules_carrying_from_one_rule_share_its_memory_and_a_snapshot_redoes_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rules carry from ssh-connection: one memory, one copy in the state; after a match of
    one `from` rule the next snapshot serialises that rule's memory again, not the others."""
    rules = RULES + textwrap.dedent("""\
        [rules.ssh-invalid]
        match = ['sshd\\[%{int:pid}\\]: Invalid user %{user} from %{ip}']

        [rules.ssh-kex]
        match = ['sshd\\[%{int:pid}\\]: kex_exchange_identification: (?P<reason>.+)']
        carry = { key = "pid", from = ["ssh-connection", "ssh-invalid"], within = "2m", captures = ["ip"] }
        """)
    run = Run(tmp_path, rules)
    run.feed(*(connection(n, 100 + n, f"192.0.2.{n}") for n in range(10)))
    run.feed(f"{stamp(20)} h sshd[300]: Invalid user bob from 198.51.100.1 port 1\n")
    state = orjson.loads(orjson.dumps(run.processor.snapshot()))
    memories = {m["rule"]: len(m["entries"]) for m in state["carry"]["memories"]}
    assert memories == {"ssh-connection": 10, "ssh-invalid": 1}
    [kex] = run.feed(
        f"{stamp(21)} h sshd[105]: kex_exchange_identification: banner line too long\n"
    )
    [too] = run.feed(too_many(22, 106))
    assert (kex["captures"]["ip"], too["captures"]["ip"]) == ("192.0.2.5", "192.0.2.6")

    dumped: list[bytes] = []

    def counting(value: Any, *args: Any) -> bytes:
        data = orjson.dumps(value, *args)
        dumped.append(data)
        return data

    monkeypatch.setattr(
        correlate, "orjson", SimpleNamespace(dumps=counting, Fragment=orjson.Fragment)
    )
    run.processor.snapshot()
    assert dumped == []  # fills change no memory: both reuse their JSON
    run.feed(f"{stamp(23)} h sshd[301]: Invalid user eve from 198.51.100.2 port 1\n")
    state = orjson.loads(orjson.dumps(run.processor.snapshot()))
    assert [orjson.loads(data)["rule"] for data in dumped] == ["ssh-invalid"]
    assert {m["rule"]: len(m["entries"]) for m in state["carry"]["memories"]} == {
        "ssh-connection": 10,
        "ssh-invalid": 2,
    }


def test_the_processor_reports_carry_evictions_with_the_other_rule_state(tmp_path: Path) -> None:
    """Past 1,000 remembered pids the oldest goes, counted where status and metrics read it."""
    run = Run(tmp_path, RULES)
    assert run.feed(*(connection(n / 100, 10_000 + n, "192.0.2.1") for n in range(1001))) == []
    assert run.processor.evictions() == {"ssh-connection": 1}
    assert run.processor.correlator.entries("ssh-connection") == 1000


def test_scan_of_one_rule_still_takes_what_its_from_rules_give(tmp_path: Path) -> None:
    """`scan --rule ssh-too-many` keeps ssh-connection as a feeder: same records as a full run."""
    _, rules = load_config(_write(tmp_path, RULES.replace("records = false\n", "")))
    only = rules.only(["ssh-too-many"])
    assert only.rules == ("ssh-connection", "ssh-too-many")
    assert only.rule("ssh-connection").config.records is False
    run = Run(tmp_path, RULES)
    run.rules = only
    [record] = run.feed(connection(0, 3, "192.0.2.3"), too_many(1, 3))
    assert record["captures"]["ip"] == "192.0.2.3"


@pytest.mark.parametrize(
    ("rules", "at", "message"),
    [
        (
            RULES.replace('from = ["ssh-connection"]', 'from = ["ssh-conection"]'),
            "rules.ssh-too-many.carry.from[0]",
            "no rule named 'ssh-conection' (did you mean 'ssh-connection'?)",
        ),
        (
            RULES.replace("sshd\\[%{int:pid}\\]: Connection", "sshd\\[\\d+\\]: Connection"),
            "rules.ssh-too-many.carry.from[0]",
            "'ssh-connection''s match[0] has no capture named 'pid': the key must be a capture"
            " of both rules",
        ),
        (
            RULES.replace('captures = ["ip"]', 'captures = ["ip", "host"]'),
            "rules.ssh-too-many.carry.from[0]",
            "'ssh-connection' has no capture named 'host' to carry (its captures: ip, pid, port)",
        ),
        (
            RULES.replace('key = "pid"', 'key = "session"'),
            "rules.ssh-too-many.carry.key",
            "match[0] has no capture named 'session' to carry by",
        ),
        (
            RULES.replace('captures = ["ip"]', 'captures = ["ip", "pid"]'),
            "rules.ssh-too-many.carry",
            "'pid' cannot be both the key and a carried capture",
        ),
        (
            RULES.replace('within = "2m"', 'withn = "2m"'),
            "rules.ssh-too-many.carry.withn",
            "unknown key (did you mean 'within'?)",
        ),
        (
            RULES.replace("carry = {", "# carry = {"),
            "rules.ssh-connection.records",
            "records = false writes nothing, and nothing uses this rule's matches",
        ),
        (
            RULES.replace('from = ["ssh-connection"]', 'from = ["ssh-too-many"]'),
            "rules.ssh-too-many.carry.from[0]",
            "a rule cannot carry from itself",
        ),
        (
            '[sources.other]\npaths = ["other.log"]\n\n'
            + RULES.replace("records = false", 'sources = ["other"]\nrecords = false').replace(
                "carry = {", 'sources = ["auth"]\ncarry = {'
            ),
            "rules.ssh-too-many.carry.from[0]",
            "'ssh-connection' reads none of this rule's sources (other against auth)",
        ),
        (
            RULES.replace(
                "records = false", 'records = false\nsuppress = { key = "ip", within = "1m" }'
            ),
            "rules.ssh-connection.suppress",
            "records = false writes no records, so there are none to fold",
        ),
        (
            RULES.replace(
                "records = false",
                'records = false\nthreshold = { key = "ip", count = 5, within = "1m", alert_only = true }',
            ),
            "rules.ssh-connection.threshold.alert_only",
            "records = false already keeps the matches out of the report",
        ),
        (
            RULES.replace("records = false", 'records = "no"'),
            "rules.ssh-connection.records",
            "Input should be a valid boolean",
        ),
    ],
)
def test_carry_problems_name_file_line_and_key(
    tmp_path: Path, rules: str, at: str, message: str
) -> None:
    path = _write(tmp_path, rules)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    problems = [str(problem) for problem in raised.value.problems]
    last = at.rsplit(".", 1)[-1]
    key = {"records": "records =", "suppress": "suppress =", "alert_only": "threshold ="}.get(
        last, "carry = {"
    )
    line = next(n for n, text in enumerate(_lines(path), start=1) if text.startswith(key))
    assert any(p.startswith(f"{path}:{line}: {at}: {message}") for p in problems), problems


def test_a_carry_by_fields_of_parsed_lines_is_accepted_and_lends(tmp_path: Path) -> None:
    """The key and the captures may come from `capture_fields` (JSON lines), not only from
    the patterns' groups."""
    head = HEAD.replace('paths = ["auth.log"]', 'paths = ["auth.log"]\nparse = "json"')
    run = Run(
        tmp_path,
        """\
        [rules.login]
        where = { event = "connect" }
        capture_fields = ["session", "client.ip"]
        records = false

        [rules.failure]
        where = { event = "fail" }
        capture_fields = ["session"]
        carry = { key = "session", from = ["login"], within = "2m", captures = ["client.ip"] }
        """,
        head,
    )
    connect = {"ts": stamp(0), "event": "connect", "session": "s1", "client": {"ip": "192.0.2.7"}}
    fail = {"ts": stamp(1), "event": "fail", "session": "s1"}
    lines = [orjson.dumps(item).decode() + "\n" for item in (connect, fail)]
    [record] = run.feed(*lines)
    assert record["captures"] == {"session": "s1", "client.ip": "192.0.2.7"}
    assert record["carried"]["rule"] == "login"


def _lines(path: Path) -> Iterator[str]:
    yield from path.read_text().splitlines()


def _write(tmp_path: Path, rules: str) -> Path:
    path = tmp_path / "logwarden.toml"
    path.write_text(HEAD + textwrap.dedent(rules))
    return path


def _match(rule: str, **captures: str) -> Match:
    return Match(rule, "warning", "out", 0, None, "", False, dict(captures))
