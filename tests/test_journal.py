"""Journal sources, on real journal files written by systemd-journal-remote and read by the host's
journalctl through a real daemon subprocess (no mocks)."""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import LOGWARDEN, Daemon, published_records, wait_until, write_config
from logwarden.journal_entries import (
    Entry,
    EntryBatch,
    JsonLines,
    frame_entries,
    parse_entry,
    same_entry,
)
from logwarden.rules import Match
from tmuxpane import Pane

JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BOOT_ID = "0123456789abcdef0123456789abcdef"

CONFIG = """
[daemon]
state_dir = "state"
commit_interval = "50ms"
status_interval = "100ms"

[sources.app]
journal = { directory = "journal", matches = ["SYSLOG_IDENTIFIER=app", "SYSLOG_IDENTIFIER=app2"] }
start_at = "{start_at}"

[rules.fail]
match = ['seq=%{int:seq} FAIL']

[reports.out]
dir = "reports"
format = "ndjson"
rotate_max_records = 20
keep = 10000
"""


@pytest.fixture(autouse=True)
def journal_tools() -> None:
    if not os.path.exists(JOURNAL_REMOTE) or shutil.which("journalctl") is None:
        pytest.fail(
            "systemd-journal-remote or journalctl is missing: `make test` installs them with apt-get"
        )


class JournalFiles:
    """A journal directory fed through systemd-journal-remote (export format on stdin)."""

    def __init__(self, directory: Path, name: str = "remote.journal") -> None:
        directory.mkdir(exist_ok=True)
        self.directory = directory
        self.file = directory / name
        self.clock = int(time.time() * 1e6)

    def append(self, entries: list[dict[str, str | bytes]]) -> None:
        data = b"".join(self._export(entry) for entry in entries)
        subprocess.run(
            [JOURNAL_REMOTE, "-o", str(self.file), "-"],
            input=data,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def _export(self, fields: dict[str, str | bytes]) -> bytes:
        self.clock += 1
        out = [
            b"__REALTIME_TIMESTAMP=%d\n" % self.clock,
            b"__MONOTONIC_TIMESTAMP=%d\n" % self.clock,
        ]
        out.append(b"_BOOT_ID=%s\n" % BOOT_ID.encode())
        for key, value in fields.items():
            data = value.encode() if isinstance(value, str) else value
            # the length-prefixed form carries any bytes (newlines, invalid UTF-8)
            out.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        return b"".join(out) + b"\n"


def seq_entry(n: int, ident: str = "app", pid: int | None = 1000) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        "SYSLOG_IDENTIFIER": ident,
        "MESSAGE": f"seq={n} {'FAIL' if n % 3 == 0 else 'ok'}",
    }
    if pid is not None:
        fields["_PID"] = str(pid)
    return fields


def fails(first: int, count: int) -> set[int]:
    return {n for n in range(first, first + count) if n % 3 == 0}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_config(tmp_path / "logwarden.toml", CONFIG.replace("{start_at}", "beginning"))
    return tmp_path


def records(workdir: Path) -> list[dict[str, Any]]:
    return [r for r in published_records(workdir / "reports") if "kind" not in r]


def seqs(workdir: Path) -> list[int]:
    return [int(r["captures"]["seq"]) for r in records(workdir)]


def assert_exactly_once(workdir: Path, expected: set[int]) -> None:
    got = seqs(workdir)
    duplicates = sorted({n for n in got if got.count(n) > 1})
    assert not duplicates, f"{len(duplicates)} duplicated, e.g. {duplicates[:10]}"
    assert set(got) == expected, (
        f"missing {sorted(expected - set(got))[:10]}, extra {sorted(set(got) - expected)[:10]}"
    )


def journalctl_children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return [c for c in children if b"journalctl" in _cmdline(c)]


def _cmdline(pid: int) -> bytes:
    """A process's command line; empty once it has exited (a child listed a moment ago may be
    gone by now: a reload stops journalctl children)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# ---------------------------------------------------------------- entries, lines, records


def test_an_entry_becomes_the_syslog_line_rules_know() -> None:
    raw = orjson.dumps(
        {
            "__CURSOR": "s=1;i=2;b=3;m=4;t=5;x=6",
            "__REALTIME_TIMESTAMP": "1795649412098809",
            "SYSLOG_IDENTIFIER": "sshd",
            "_PID": "812",
            "_SYSTEMD_UNIT": "ssh.service",
            "MESSAGE": "Failed password for root from 203.0.113.9 port 22 ssh2",
        }
    )
    entry = parse_entry(raw)
    assert entry is not None
    assert entry.line == "sshd[812]: Failed password for root from 203.0.113.9 port 22 ssh2"
    assert entry.realtime == "2026-11-25T23:30:12.098809Z"
    assert entry.unit == "ssh.service"
    assert entry.fields["_SYSTEMD_UNIT"] == "ssh.service"  # kept for structured rules


def test_a_binary_message_is_decoded_with_replacement_and_newlines_escaped() -> None:
    message = list(b"bad \xff\xfe bytes\nsecond line")
    entry = parse_entry(
        orjson.dumps({"__CURSOR": "c", "SYSLOG_IDENTIFIER": "x", "MESSAGE": message})
    )
    assert entry is not None
    assert entry.line == "x: bad \ufffd\ufffd bytes#012second line"  # as rsyslog writes it
    assert parse_entry(b"-- No entries --") is None


def test_a_match_finds_its_own_entry_and_long_lines_are_cut() -> None:
    entries = [
        Entry(f"s=a;i={i}", 1_000_000 * i, "app", i, None, None, None, {"MESSAGE": message})
        for i, message in enumerate(["short", "x" * 300, "after"])
    ]
    blocks, starts = frame_entries(entries, 256)
    assert [block.truncated for block in blocks] == [False, True, False]
    assert len(blocks[1].data) == 256
    batch = EntryBatch("app", entries, starts)
    for index, block in enumerate(blocks):
        match = Match("r", "warning", "out", block.offset, None, "", block.truncated, {})
        assert batch.record_source(match)["journal"]["cursor"] == f"s=a;i={index}"


def test_same_entry_follows_the_cursor_rules() -> None:
    a = "s=aa;i=4;b=bb;m=10;t=20;x=30"
    assert same_entry(a, a)
    assert not same_entry(a, "s=aa;i=5;b=bb;m=10;t=20;x=30")
    assert same_entry(a, "s=cc;i=9;b=bb;m=10;t=20;x=30")  # another seqnum id: by time and hash


# ---------------------------------------------------------------- the daemon


def test_from_the_beginning_with_the_record_shape(workdir: Path, daemon: Daemon) -> None:
    journal = JournalFiles(workdir / "journal")
    journal.append(
        [
            seq_entry(0),
            seq_entry(3, pid=None),
            seq_entry(4),
            seq_entry(6, ident="cron"),
            {"SYSLOG_IDENTIFIER": "app", "_PID": "7", "MESSAGE": b"seq=9 FAIL \xff"},
        ]
    )
    daemon.start()
    journal.append([seq_entry(12, ident="app2", pid=55), seq_entry(13)])  # live, while followed
    wait_until(lambda: daemon.logged("report published") or len(seqs_pending(workdir)) >= 4)
    assert daemon.stop() == 0
    found = {int(r["captures"]["seq"]): r for r in records(workdir)}
    assert sorted(found) == [0, 3, 9, 12]  # cron is not matched by the source's matches
    assert found[0]["line"] == "app[1000]: seq=0 FAIL"
    assert found[3]["line"] == "app: seq=3 FAIL"  # no _PID
    assert found[9]["line"] == "app[7]: seq=9 FAIL \ufffd"  # binary MESSAGE
    assert found[12]["line"] == "app2[55]: seq=12 FAIL"
    source = found[0]["source"]
    assert set(source) == {"name", "journal", "line_no"} and source["line_no"] is None
    assert source["name"] == "app"
    journal_fields = source["journal"]
    assert set(journal_fields) == {
        "cursor", "realtime", "identifier", "pid", "unit", "boot_id", "hostname",
    }  # fmt: skip
    assert journal_fields["cursor"].startswith("s=")
    assert journal_fields["realtime"].endswith("Z") and len(journal_fields["realtime"]) == 27
    assert (journal_fields["identifier"], journal_fields["pid"]) == ("app", 1000)
    assert journal_fields["boot_id"] == BOOT_ID
    assert found[3]["source"]["journal"]["pid"] is None


def seqs_pending(workdir: Path) -> list[int]:
    """Matches in the report journals (committed or not) and published ones, by seq."""
    found = []
    for path in (workdir / "state" / "journals").rglob("*"):
        if path.is_file():
            for line in path.read_bytes().splitlines():
                try:
                    found.append(int(orjson.loads(line)["captures"]["seq"]))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
    return found + seqs(workdir)


def test_start_at_end_then_restart_resumes_at_the_cursor(workdir: Path, daemon: Daemon) -> None:
    write_config(workdir / "logwarden.toml", CONFIG.replace("{start_at}", "end"))
    journal = JournalFiles(workdir / "journal")
    journal.append([seq_entry(n) for n in range(30)])  # history: not read
    daemon.start()
    journal.append([seq_entry(n) for n in range(30, 60)])
    wait_until(lambda: set(seqs_pending(workdir)) >= fails(30, 30), message="live entries")
    assert daemon.stop() == 0
    journal.append([seq_entry(n) for n in range(60, 90)])  # while stopped
    daemon.start()
    wait_until(lambda: set(seqs_pending(workdir)) >= fails(30, 60), message="entries after restart")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, fails(30, 60))


def test_sigkill_at_random_moments_while_the_journal_grows(workdir: Path, daemon: Daemon) -> None:
    """Every matching entry in exactly one published report, with its cursor, through SIGKILLs."""
    journal = JournalFiles(workdir / "journal")
    total, batch = 3000, 100
    done = threading.Event()

    def writer() -> None:
        for start in range(0, total, batch):
            journal.append([seq_entry(n) for n in range(start, start + batch)])
            time.sleep(0.02)
        done.set()

    daemon.start()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        rng = random.Random(11)
        for _ in range(4):
            time.sleep(rng.uniform(0.05, 0.6))
            daemon.kill()
            daemon.start()
        thread.join(60)
        assert done.is_set()
        wait_until(
            lambda: set(seqs_pending(workdir)) >= fails(0, total), 30, message="every entry read"
        )
    finally:
        thread.join(60)
    assert daemon.stop() == 0
    assert_exactly_once(workdir, fails(0, total))
    cursors = [r["source"]["journal"]["cursor"] for r in records(workdir)]
    assert len(set(cursors)) == len(cursors)


def test_a_vacuumed_cursor_warns_and_resumes_after_its_time(workdir: Path, daemon: Daemon) -> None:
    old = JournalFiles(workdir / "journal", "old.journal")
    old.append([seq_entry(n) for n in range(30)])
    daemon.start()
    wait_until(lambda: set(seqs_pending(workdir)) >= fails(0, 30), message="old entries")
    assert daemon.stop() == 0
    # while stopped: the file holding the cursor is vacuumed; a new file holds older copies of
    # entries already read (they must not be read again) and entries never read
    (workdir / "journal" / "old.journal").unlink()
    new = JournalFiles(workdir / "journal", "new.journal")
    new.clock = old.clock - 10_000  # before the cursor's time
    new.append([seq_entry(n) for n in range(0, 6)])
    new.clock = old.clock + 1_000_000
    new.append([seq_entry(n) for n in range(30, 60)])
    daemon.start()
    wait_until(lambda: set(seqs_pending(workdir)) >= fails(0, 60), message="new entries")
    assert daemon.stop() == 0
    warning = [e for e in daemon.events() if "cursor is gone" in e.get("event", "")]
    assert warning and warning[0]["journal_starts"] and warning[0]["resuming_at"]
    assert_exactly_once(workdir, fails(0, 60))


def test_journalctl_killed_under_the_daemon_is_restarted(workdir: Path, daemon: Daemon) -> None:
    journal = JournalFiles(workdir / "journal")
    daemon.start()
    for round_ in range(3):
        journal.append([seq_entry(n) for n in range(round_ * 30, round_ * 30 + 30)])
        wait_until(lambda: len(journalctl_children(daemon.pid)) == 1, message="a journalctl")
        [child] = journalctl_children(daemon.pid)
        os.kill(child, signal.SIGKILL)
        wait_until(
            lambda child=child: journalctl_children(daemon.pid) not in ([], [child]),  # type: ignore[misc]
            15,
            message="journalctl restarted",
        )
    journal.append([seq_entry(n) for n in range(90, 120)])
    wait_until(lambda: set(seqs_pending(workdir)) >= fails(0, 120), message="every entry")
    status = run_status(workdir, "--json")
    [shown] = orjson.loads(status.stdout)["journals"]
    assert shown["restarts"] >= 3
    assert daemon.stop() == 0
    assert_exactly_once(workdir, fails(0, 120))
    restarts = [e for e in daemon.events() if e.get("event") == "journalctl exited; restarting it"]
    assert len(restarts) >= 3


def run_status(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LOGWARDEN, "status", "-c", str(workdir / "logwarden.toml"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_status_shows_cursor_lag_and_restarts(workdir: Path, daemon: Daemon) -> None:
    journal = JournalFiles(workdir / "journal")
    journal.append([seq_entry(n) for n in range(10)])
    daemon.start()
    wait_until(
        lambda: (
            b'"entries": 10' in (workdir / "state" / "status.json").read_bytes()
            if (workdir / "state" / "status.json").exists()
            else False
        ),
        message="status with the entries",
    )
    shown = run_status(workdir, "--json")
    assert shown.returncode == 0, shown.stderr
    [source] = orjson.loads(shown.stdout)["journals"]
    assert source["source"] == "app" and source["state"] == "following"
    assert source["cursor"].startswith("s=") and ";i=a;" in source["cursor"]  # the 10th entry
    assert source["realtime"].endswith("Z")
    assert 0 <= source["lag_s"] < 60
    assert source["restarts"] == 0
    table = run_status(workdir)
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.strip().startswith("app "))
    assert "i=10@" in line and "following" in line
    assert source["cursor"] not in table.stdout  # abbreviated in the table
    # and in a terminal: the journals table, its row with the cursor, last entry and restarts
    pane = Pane(width=140, height=30)
    try:
        config = shlex.quote(str(workdir / "logwarden.toml"))
        pane.start(
            f"{shlex.quote(sys.executable)} -m logwarden status -c {config}; echo EXIT=$?; sleep 30"
        )
        screen = pane.wait_for("EXIT=")
    finally:
        pane.kill()
    assert "EXIT=0" in screen
    assert re.search(r"^JOURNAL +CURSOR +LAST ENTRY +LAG +ENTRIES +RESTARTS +STATE", screen, re.M)
    assert re.search(
        rf"^app +i=10@{source['cursor'][2:10]} +{re.escape(source['realtime'])} +[\d.]+s +10 +0 +following",
        screen,
        re.M,
    ), screen
    assert daemon.stop() == 0


def test_a_source_with_paths_and_journal_is_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        """
        [sources.both]
        paths = ["/var/log/auth.log"]
        journal = { matches = ["SYSLOG_IDENTIFIER=sshd"] }
        [rules.r]
        match = "x"
        """,
    )
    result = subprocess.run(
        [*LOGWARDEN, "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78
    assert f"{config}:4: sources.both.journal: a source has either `paths`" in result.stderr


def test_check_config_warns_when_journalctl_is_missing(workdir: Path, tmp_path: Path) -> None:
    JournalFiles(workdir / "journal").append([seq_entry(1)])
    result = subprocess.run(
        [sys.executable, "-m", "logwarden", "check-config", "-c", str(workdir / "logwarden.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
    )
    assert result.returncode == 0, result.stderr
    assert "sources.app.journal: journalctl is not installed" in result.stderr


# ---------------------------------------------------------------- fallback_for


FALLBACK_CONFIG = """
[daemon]
state_dir = "state"
commit_interval = "50ms"

[sources.auth-journal]
journal = { directory = "journal", matches = ["SYSLOG_IDENTIFIER=sshd"] }
start_at = "end"

[sources.auth-file]
paths = ["logs/auth.log"]
start_at = "beginning"
fallback_for = "auth-journal"

[rules.fail]
sources = ["auth-journal", "auth-file"]
match = ['sshd\\[\\d+\\]: seq=%{int:seq} FAIL']

[reports.out]
dir = "reports"
format = "ndjson"
rotate_max_records = 1
"""


def test_a_file_fallback_runs_only_while_the_journal_cannot_be_read(
    tmp_path: Path, daemon: Daemon
) -> None:
    """rsyslog copies the journal into auth.log: with both read, every event would be reported
    twice. The fallback file source runs only when its journal source cannot read."""
    write_config(tmp_path / "logwarden.toml", FALLBACK_CONFIG)
    (tmp_path / "logs").mkdir()
    (tmp_path / "journal").mkdir()
    auth_log = tmp_path / "logs" / "auth.log"
    auth_log.write_text("Nov 25 10:00:00 h sshd[9]: seq=3 FAIL\n")
    # no journal file: the journal cannot be read, so the file stands in
    daemon.start()
    assert any(
        e.get("fallback") == "auth-file" for e in daemon.events() if "not readable" in e["event"]
    )
    wait_until(lambda: seqs(tmp_path) == [3], message="the file's event")
    assert daemon.stop() == 0
    journal = JournalFiles(tmp_path / "journal")
    journal.append([seq_entry(3, ident="sshd", pid=9)])
    # now the journal can be read: it is the one source of these events, the file is left alone
    daemon.start()
    assert any("journal readable" in e["event"] for e in daemon.events())
    for n in (6, 9):  # each event both ways, as on a host with rsyslog
        journal.append([seq_entry(n, ident="sshd")])
        with open(auth_log, "a") as log:
            log.write(f"Nov 25 10:00:0{n} h sshd[1000]: seq={n} FAIL\n")
    wait_until(lambda: 9 in seqs(tmp_path), message="the journal's events")
    time.sleep(0.5)  # time enough for the file's copy to be (wrongly) reported
    assert daemon.stop() == 0
    by_source = sorted((int(r["captures"]["seq"]), r["source"]["name"]) for r in records(tmp_path))
    assert by_source == [(3, "auth-file"), (6, "auth-journal"), (9, "auth-journal")]


def test_the_shipped_config_catches_sshd_failures_from_the_journal(
    tmp_path: Path, daemon: Daemon
) -> None:
    """A host without /var/log/auth.log (no rsyslog): sshd's failures come from the journal."""
    shipped = (Path(__file__).resolve().parent.parent / "config" / "logwarden.toml").read_text()
    text = shipped.replace("/var/lib/logwarden", str(tmp_path / "var")).replace(
        "/var/log/", str(tmp_path / "no-var-log") + "/"
    )
    assert "journal = { matches = [" in text
    text = text.replace(
        "journal = { matches = [", f'journal = {{ directory = "{tmp_path / "journal"}", matches = ['
    )
    write_config(tmp_path / "logwarden.toml", text)
    journal = JournalFiles(tmp_path / "journal")
    journal.append([{"SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Started ssh.service."}])
    daemon.start()
    failure = "Failed password for root from 203.0.113.9 port 4242 ssh2"
    journal.append(
        [
            {
                "SYSLOG_FACILITY": "4",
                "SYSLOG_IDENTIFIER": "sshd",
                "_PID": "812",
                "MESSAGE": failure,
            },
            # no facility (logged natively): matched by its identifier
            {"SYSLOG_IDENTIFIER": "sshd-session", "_PID": "813", "MESSAGE": failure},
            # the same words from a program that is not sshd: not an sshd failure
            {"SYSLOG_FACILITY": "3", "SYSLOG_IDENTIFIER": "cron", "MESSAGE": failure},
        ]
    )
    reports = tmp_path / "var" / "reports" / "security"

    def found() -> list[dict[str, Any]]:
        return [
            r
            for r in published_records(reports)
            if "kind" not in r and r["captures"].get("ip") == "203.0.113.9"
        ]

    def pending() -> bytes:
        journals = (tmp_path / "var" / "journals").rglob("*")
        return b"".join(p.read_bytes() for p in journals if p.is_file())

    wait_until(
        lambda: b'"pid":812' in pending() and b'"pid":813' in pending(),
        15,
        message="both sshd failures read",
    )
    assert daemon.stop() == 0  # publishes on stop
    assert {r["source"]["name"] for r in found()} == {"auth-journal"}
    assert {r["source"]["journal"]["identifier"] for r in found()} == {"sshd", "sshd-session"}
    assert any("journal readable" in e["event"] for e in daemon.events())


def test_reload_starts_stops_and_restarts_journal_sources(workdir: Path, daemon: Daemon) -> None:
    config = workdir / "logwarden.toml"
    journal = JournalFiles(workdir / "journal")
    journal.append([seq_entry(n) for n in range(30)])
    daemon.start()
    wait_until(lambda: set(seqs_pending(workdir)) >= fails(0, 30), message="first entries")
    [first_child] = journalctl_children(daemon.pid)
    # unchanged source: the same child goes on
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.logged("reloaded"), message="reload")
    assert journalctl_children(daemon.pid) == [first_child]
    # changed matches: restarted at its cursor (nothing read twice); a new source starts
    text = config.read_text()
    config.write_text(
        text.replace('"SYSLOG_IDENTIFIER=app2"', '"SYSLOG_IDENTIFIER=app3"')
        + '\n[sources.other]\njournal = { directory = "journal", matches = ["SYSLOG_IDENTIFIER=b"] }\n'
    )
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(journalctl_children(daemon.pid)) == 2, message="two children")
    assert first_child not in journalctl_children(daemon.pid)
    journal.append([seq_entry(n) for n in range(30, 60)] + [seq_entry(90, ident="b")])
    wait_until(lambda: 90 in seqs_pending(workdir), message="the new source's entry")
    # removed: its child stops
    config.write_text(text)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: len(journalctl_children(daemon.pid)) == 1, message="one child again")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, fails(0, 60) | {90})


def test_a_huge_entry_is_matched_on_its_start_and_flagged_cut(tmp_path: Path) -> None:
    """An entry far over the reader's limit (a client can log 80 KiB through syslog) is matched
    on the start of its message, like a cut file line, never skipped whole: padding a line must
    not hide it. Control characters (six bytes each in journalctl's JSON) included."""
    write_config(
        tmp_path / "logwarden.toml",
        CONFIG.replace("{start_at}", "beginning").replace(
            'start_at = "beginning"', 'start_at = "beginning"\nmax_line_bytes = "1KiB"'
        ),
    )
    journal = JournalFiles(tmp_path / "journal")
    huge = "seq=3 FAIL " + "\x01" * 40_000 + "x" * 40_000
    journal.append([seq_entry(0), {**seq_entry(3), "MESSAGE": huge}, seq_entry(6)])
    daemon = Daemon(tmp_path / "logwarden.toml", tmp_path / "daemon.log")
    try:
        daemon.start()
        wait_until(lambda: set(seqs_pending(tmp_path)) >= {0, 3, 6}, message="all three")
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    found = {int(r["captures"]["seq"]): r for r in records(tmp_path)}
    assert sorted(found) == [0, 3, 6]
    assert found[3]["truncated"] is True and found[0]["truncated"] is False
    assert found[3]["line"].startswith("app[1000]: seq=3 FAIL \x01")
    assert len(found[3]["line"].encode()) <= 1024
    assert found[3]["source"]["journal"]["cursor"]
    assert any(e.get("event") == "journal entry too large; cut" for e in daemon.events())


def test_json_lines_keep_the_head_and_tail_of_a_line_over_the_limit() -> None:
    lines = JsonLines(limit=100)
    long_line = b"H" * 150 + b"M" * (JsonLines.TAIL_BYTES * 3) + b"T" * 50
    out = []
    for start in range(0, len(long_line), 7000):  # in chunks, as a pipe gives them
        out += lines.feed(long_line[start : start + 7000])
    out += lines.feed(b"\n{short}\n{partial")
    [(head, tail), (short, none)] = out
    assert head == b"H" * 100 and len(tail or b"") == JsonLines.TAIL_BYTES
    assert (tail or b"").endswith(b"M" * 10 + b"T" * 50)
    assert (short, none) == (b"{short}", None)
    assert len(lines._line) == len(b"{partial")  # memory: the limit and the tail, no more


def test_a_pid_that_is_not_a_plain_number_is_no_pid() -> None:
    # SYSLOG_PID is set by the client: "²" passes str.isdigit but not int()
    entry = parse_entry(
        orjson.dumps({"__CURSOR": "c", "SYSLOG_IDENTIFIER": "x", "SYSLOG_PID": "²", "MESSAGE": "m"})
    )
    assert entry is not None and entry.pid is None and entry.line == "x: m"


def test_a_journal_source_keeps_its_cursor_while_its_fallback_stands_in(
    tmp_path: Path, daemon: Daemon
) -> None:
    """The journal unreadable for a while (permissions, a container restart): the file fallback
    runs, and the checkpoints written meanwhile keep the journal source's cursor, so when the
    journal can be read again it resumes there instead of reading it all again."""
    write_config(tmp_path / "logwarden.toml", FALLBACK_CONFIG)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "auth.log").write_text("")
    journal = JournalFiles(tmp_path / "journal")
    journal.append([seq_entry(1, ident="sshd")])  # before the first start: start_at = "end"
    daemon.start()
    journal.append([seq_entry(n, ident="sshd") for n in (3, 6)])
    wait_until(lambda: sorted(seqs_pending(tmp_path)) == [3, 6], message="the journal's events")
    assert daemon.stop() == 0
    os.rename(tmp_path / "journal", tmp_path / "journal.away")
    daemon.start()  # the fallback stands in; start-up commits a checkpoint
    assert any("not readable" in e["event"] for e in daemon.events())
    assert daemon.stop() == 0
    os.rename(tmp_path / "journal.away", tmp_path / "journal")
    journal.append([seq_entry(9, ident="sshd")])
    daemon.start()
    wait_until(lambda: 9 in seqs_pending(tmp_path), message="the new entry")
    assert daemon.stop() == 0
    assert_exactly_once(tmp_path, {3, 6, 9})
