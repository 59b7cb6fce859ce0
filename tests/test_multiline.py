"""Multi-line events in-process: the event framer against a reference grouping (any chunking,
any restart point), its limits and timeout, the rules on a whole event, `scan` and `explain`."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import Daemon, published_records, wait_until
from logwarden import checkpoint
from logwarden.config import Config, MultilineConfig, load
from logwarden.explain import Explainer
from logwarden.framing import Block, FramerState, split_lines
from logwarden.multiline import EventFramer, make_framer, reframe
from logwarden.problems import ConfigError
from logwarden.rules import RuleSet, load_config
from logwarden.scan import Scanner

DATA = Path(__file__).parent / "data"
PYTHON = (DATA / "multiline-python.log").read_bytes()
JAVA = (DATA / "multiline-java.log").read_bytes()
DATED = r"^\d{4}-\d\d-\d\d"  # the samples' start lines begin with a date
BIG = 1 << 20


def multiline(start: str = DATED, **limits: object) -> MultilineConfig:
    return MultilineConfig.model_validate({"start": start, "timeout": "2s", **limits})


Event = tuple[int, int | None, str, bool]


def events(blocks: list[Block]) -> list[Event]:
    """(offset, line_no, text, truncated) per event: line blocks give one event per line."""
    out: list[Event] = []
    for block in blocks:
        if block.event or block.truncated:
            out.append(
                (
                    block.offset,
                    block.line_no,
                    block.data.decode("utf-8", "replace"),
                    block.truncated,
                )
            )
        else:
            out += [
                (o, n, line.decode("utf-8", "replace"), False) for o, n, line in split_lines(block)
            ]
    return out


def reference(data: bytes, start: str, max_lines: int = BIG, max_bytes: int = BIG) -> list[Event]:
    """Events by the definition: split into lines (one \\r dropped), a start line or a full event
    begins the next one; no line here is longer than the framer's limits."""
    found: list[list[Any]] = []  # [offset, line_no, lines, truncated]
    offset = 0
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        text = raw[:-1] if raw.endswith(b"\r") else raw
        is_start = re.search(start, text.decode("utf-8", "replace")) is not None
        if found and not is_start:
            current = found[-1]
            size = sum(len(line) + 1 for line in current[2]) - 1
            if len(current[2]) < max_lines and size + 1 + len(text) <= max_bytes:
                current[2].append(text)
            else:
                current[3] = True
                found.append([offset, number, [text], False])
        else:
            found.append([offset, number, [text], False])
        offset += len(raw) + 1
    return [(o, n, b"\n".join(ls).decode("utf-8", "replace"), t) for o, n, ls, t in found]


def frame(data: bytes, config: MultilineConfig, cuts: list[int], restarts: set[int]) -> list[Block]:
    """Feed in pieces; at a restart point a new framer resumes from the old one's state and reads
    again from its offset (what a restart after a SIGKILL does)."""
    framer = EventFramer(4096, config)
    blocks: list[Block] = []
    position = 0
    for index, cut in enumerate([*sorted(set(cuts)), len(data)]):
        if index in restarts:
            framer = EventFramer(4096, config, framer.state)
            position = framer.state.offset
        blocks += framer.feed(data[position:cut] if cut > position else b"")
        position = max(position, cut)
    return blocks + framer.flush()


@pytest.mark.parametrize(("sample", "count"), [(PYTHON, 4), (JAVA, 3)], ids=["python", "java"])
def test_stack_traces_are_single_events_split_at_every_position(sample: bytes, count: int) -> None:
    config = multiline()
    expected = reference(sample, DATED)
    traces = [event for event in expected if "\n" in event[2]]
    assert len(traces) == 1 and len(expected) == count  # one trace among one-line events
    assert events(make_framer(4096, config).feed(sample)) == expected[:-1]  # the last is open
    for cut in range(len(sample) + 1):
        framer = EventFramer(4096, config)
        got = events(framer.feed(sample[:cut]) + framer.feed(sample[cut:]) + framer.flush())
        assert got == expected, f"split at {cut}"
    framer = EventFramer(4096, config)
    one_by_one = [block for i in range(len(sample)) for block in framer.feed(sample[i : i + 1])]
    assert events(one_by_one + framer.flush()) == expected


def test_java_trace_keeps_caused_by_and_more() -> None:
    framer = EventFramer(4096, multiline())
    [trace] = [e for e in events(framer.feed(JAVA) + framer.flush()) if "\n" in e[2]]
    lines = trace[2].split("\n")
    assert lines[1] == "java.lang.IllegalStateException: payment service unavailable"
    assert "Caused by: java.net.ConnectException: Connection refused" in lines
    assert lines[-1] == "\t... 12 more" and len(lines) == 11
    assert trace[:2] == (JAVA.index(b"2026-11-24T13:20:05"), 2)


LINES = [
    b"2026-01-01 start\n",
    b"2026-01-02 start again\r\n",
    b"  continued\n",
    b"\tat x.y(Z.java:1)\n",
    b"\n",
    b"Caused by: E\r\n",
    "  é \n".encode(),
    b"\xff bad\n",
]


@settings(max_examples=300)
@given(
    lines=st.lists(st.sampled_from(LINES), max_size=40),
    tail=st.sampled_from([b"", b"2026-01-03 partial", b"  partial"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    restarts=st.sets(st.integers(min_value=0, max_value=10), max_size=4),
    limits=st.tuples(st.sampled_from([1, 2, 3, 6, 500]), st.integers(min_value=256, max_value=400)),
)
def test_framing_matches_reference_across_chunks_and_restarts(
    lines: list[bytes], tail: bytes, cuts: list[int], restarts: set[int], limits: tuple[int, int]
) -> None:
    data = b"".join(lines) + tail
    max_lines, max_bytes = limits
    config = multiline(max_lines=max_lines, max_bytes=max_bytes)
    got = events(frame(data, config, [c for c in cuts if c <= len(data)], restarts))
    assert got == reference(data, DATED, max_lines=max_lines, max_bytes=max_bytes)


def test_offset_never_passes_the_open_event() -> None:
    framer = EventFramer(4096, multiline())
    head = b"2026-11-24 first\n2026-11-24 ERROR boom\nTraceback (most recent call last):\n"
    [block] = framer.feed(head)
    assert block.data == b"2026-11-24 first\n"  # a single-line event: an ordinary line block
    start = len(b"2026-11-24 first\n")
    assert framer.state == FramerState(start, 2, False)
    assert framer.feed(b'  File "x.py", line 1\nValueError: x\n') == []
    assert framer.state == FramerState(start, 2, False)  # still open: a restart reads it again
    assert framer.position == len(head) + len(b'  File "x.py", line 1\nValueError: x\n')
    resumed = EventFramer(4096, multiline(), framer.state)
    rest = (head + b'  File "x.py", line 1\nValueError: x\n2026-11-24 next\n')[start:]
    [event, *_] = resumed.feed(rest)
    assert event.event and event.offset == start and event.line_no == 2 and event.lines == 4
    assert event.data.endswith(b"ValueError: x")


def test_lines_before_the_first_start_line_are_an_event_of_their_own() -> None:
    framer = EventFramer(4096, multiline())
    blocks = framer.feed(b"  orphan one\n  orphan two\n2026-11-24 first\n") + framer.flush()
    assert events(blocks) == [
        (0, 1, "  orphan one\n  orphan two", False),
        (26, 3, "2026-11-24 first", False),
    ]


def test_start_expands_placeholders_as_match_does() -> None:
    """`start = '^%{iso8601}'` starts events at dated lines, not at the literal text."""
    framer = EventFramer(4096, multiline("^%{iso8601}"))
    data = b"2026-11-24T13:19:38Z boom\n  at x\n2026-11-24T13:19:39Z next\n"
    assert events(framer.feed(data) + framer.flush()) == [
        (0, 1, "2026-11-24T13:19:38Z boom\n  at x", False),
        (33, 3, "2026-11-24T13:19:39Z next", False),
    ]
    with pytest.raises(ValueError, match="nosuch"):
        multiline("^%{nosuch}")


def test_timeout_ends_a_quiet_event_and_late_lines_make_their_own() -> None:
    now = [100.0]
    framer = EventFramer(4096, multiline(), clock=lambda: now[0])
    assert framer.deadline is None
    framer.feed(b"2026-11-24 ERROR\n  at one\n")
    assert framer.deadline == 102.0
    now[0] = 101.5
    framer.feed(b"  at two\n")  # a new line pushes the deadline
    assert framer.expire(103.0) == []
    [event] = framer.expire(103.5)
    assert event.data == b"2026-11-24 ERROR\n  at one\n  at two" and event.event
    assert framer.deadline is None and framer.state.offset == len(
        b"2026-11-24 ERROR\n  at one\n  at two\n"
    )
    framer.feed(b"  late\n2026-11-24 next\n")
    assert events(framer.flush())[-1][2] == "2026-11-24 next"


def test_timeout_leaves_a_partial_line_pending() -> None:
    framer = EventFramer(4096, multiline(), clock=lambda: 0.0)
    framer.feed(b"2026-11-24 ERROR\n  at one\n  at tw")
    [event] = framer.expire(5.0)
    assert event.data == b"2026-11-24 ERROR\n  at one"
    assert framer.state.offset == len(b"2026-11-24 ERROR\n  at one\n")
    assert events(framer.feed(b"o\n") + framer.flush()) == [(26, 3, "  at two", False)]


def test_max_lines_cuts_and_the_rest_is_a_continuation_event() -> None:
    framer = EventFramer(4096, multiline(r"^2026", max_lines=3))
    data = b"2026 x\n" + b"".join(b"  at %d\n" % n for n in range(7)) + b"2026 y\n"
    got = events(framer.feed(data) + framer.flush())
    assert got == [
        (0, 1, "2026 x\n  at 0\n  at 1", True),
        (21, 4, "  at 2\n  at 3\n  at 4", True),
        (42, 7, "  at 5\n  at 6", False),
        (56, 9, "2026 y", False),
    ]


def test_max_bytes_bounds_the_open_event() -> None:
    framer = EventFramer(4096, multiline(r"^2026", max_bytes=300))
    blocks = framer.feed(b"2026 head\n")
    for _ in range(100):
        blocks += framer.feed(b"  " + b"x" * 50 + b"\n")
        assert framer.pending_bytes <= 300
    got = events(blocks + framer.flush())
    assert all(len(text.encode()) <= 300 for _, _, text, _ in got)
    assert got[0][2].startswith("2026 head\n  xxx") and got[0][3]
    assert sum(text.count("\n") + 1 for _, _, text, _ in got) == 101  # nothing dropped


def test_a_line_longer_than_max_bytes_is_cut() -> None:
    framer = EventFramer(4096, multiline(max_bytes=256))
    [block] = framer.feed(b"2026 " + "é".encode() * 200 + b"\n") + framer.flush()
    assert block.truncated and len(block.data) <= 256 and block.data.decode()


def test_a_line_cut_by_max_line_bytes_marks_its_event_truncated() -> None:
    framer = EventFramer(256, multiline(r"^2026"))
    blocks = framer.feed(b"2026 a\n  " + b"y" * 1000 + b"\n  more\n2026 b\n") + framer.flush()
    event = events(blocks)[0]
    assert event[3] and event[2].startswith("2026 a\n  yyy") and event[2].endswith("\n  more")


def test_reload_switching_multiline_off_ends_the_open_event() -> None:
    framer = EventFramer(4096, multiline())
    framer.feed(b"2026 a\n  b\n")
    lines, blocks = reframe(framer, 4096, None)
    assert events(blocks) == [(0, 1, "2026 a\n  b", False)]
    assert lines.position == framer.position and lines.state.offset == 11
    again, blocks = reframe(lines, 4096, multiline())
    assert blocks == [] and isinstance(again, EventFramer)


# ---------------------------------------------------------------- rules on a whole event

RULES = r"""
[daemon]
state_dir = "state"

[sources.app]
paths = ["{logs}/*.log"]
multiline = {{ start = '^\d{{4}}-\d\d-\d\d', timeout = "2s" }}

[sources.plain]
paths = ["{logs}/*.txt"]

[rules.exception]
match = ['(?m)^(?P<error>[\w.]+(?:Error|Exception)): (?P<message>.*)$']

[rules.caused]
match = ['Caused by: (?P<cause>[\w.]+)']

[rules.whole]
match = ['^\S+ \S+ ERROR']
exclude = ['health$']

[rules.spanning]
match = ['request failed\s+Traceback']
"""


@pytest.fixture
def ruleset(tmp_path: Path) -> tuple[Config, RuleSet]:
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logwarden.toml"
    path.write_text(RULES.format(logs=tmp_path / "logs"))
    return load_config(path)


def scan(
    config: Config, rules: RuleSet, path: Path, source: str | None = None
) -> list[dict[str, Any]]:
    out = io.BytesIO()
    Scanner(config, rules, out, progress=False).scan([str(path)], source)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_an_event_is_one_candidate_line_anchors_at_its_ends(
    ruleset: tuple[Config, RuleSet], tmp_path: Path
) -> None:
    config, rules = ruleset
    log = tmp_path / "logs" / "app.log"
    log.write_bytes(PYTHON)
    records = scan(config, rules, log)
    by_rule = {record["rule"]: record for record in records}
    assert set(by_rule) == {"exception", "whole", "spanning"}
    trace = by_rule["exception"]
    assert trace["line"] == PYTHON.decode().split("\n", 1)[1].split("\n2026-11-24 13:19:41")[0]
    assert trace["source"]["offset"] == PYTHON.index(b"2026-11-24 13:19:40")
    assert trace["source"]["line_no"] == 2 and trace["truncated"] is False
    # (?m)^ finds the first error line inside the event; the first match wins
    assert trace["captures"] == {"error": "TimeoutError", "message": "backend db1 did not answer"}
    # ^ without (?m) is the event's start: the ERROR line is the event's first line
    assert by_rule["whole"]["source"]["offset"] == trace["source"]["offset"]
    # a pattern across the line break (\s matches the \n) matches the event; its prefilter saw it
    assert by_rule["spanning"]["source"]["line_no"] == 2


def test_the_same_text_without_multiline_is_line_by_line(
    ruleset: tuple[Config, RuleSet], tmp_path: Path
) -> None:
    config, rules = ruleset
    plain = tmp_path / "logs" / "app.txt"
    plain.write_bytes(PYTHON)
    records = scan(config, rules, plain)
    assert sorted(r["rule"] for r in records) == ["exception", "exception", "whole"]
    assert all("\n" not in r["line"] for r in records)


def test_java_caused_by_matches_in_the_event(
    ruleset: tuple[Config, RuleSet], tmp_path: Path
) -> None:
    config, rules = ruleset
    log = tmp_path / "logs" / "java.log"
    log.write_bytes(JAVA.replace(b"\n", b"\r\n"))  # CRLF: each line's \r dropped
    records = {r["rule"]: r for r in scan(config, rules, log)}
    assert records["caused"]["captures"] == {"cause": "java.net.ConnectException"}
    assert records["exception"]["captures"]["error"] == "java.lang.IllegalStateException"
    assert "\r" not in records["caused"]["line"] and records["caused"]["line"].endswith("12 more")


def test_explain_sees_a_pasted_trace_as_one_event(ruleset: tuple[Config, RuleSet]) -> None:
    config, rules = ruleset
    trace = PYTHON.decode().split("\n2026-11-24 13:19:41")[0].split("\n", 1)[1]
    [verdict] = list(Explainer(config, rules, "app").explain([trace]))
    assert verdict.trace.line == trace
    assert set(verdict.matched) == {"exception", "whole", "spanning"}
    assert any("multi-line event of 14 lines" in note for note in verdict.notes)
    prefilter = {s.detail for v in verdict.rules for s in v.steps if s.name == "prefilter"}
    assert prefilter == {"a multi-line event: its own search, not traced per rule"}
    lines = list(Explainer(config, rules, "plain").explain([trace]))
    assert len(lines) == 14  # a source without multiline: line by line, as before


# ---------------------------------------------------------------- config


def test_config_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[sources.app]\n"
        'paths = ["/var/log/app.log"]\n'
        "multiline = { start = '^(unclosed', max_lines = 0, colour = 1 }\n"
        "\n"
        "[sources.j]\n"
        'journal = { matches = ["_SYSTEMD_UNIT=x.service"] }\n'
        "multiline = { start = '^\\S' }\n"
        "\n"
        "[rules.r]\n"
        "match = ['x']\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert re.search(r"bad\.toml:3.*multiline\.start.*RE2 cannot compile", text), text
    assert re.search(r"bad\.toml:3.*multiline\.max_lines", text), text
    assert re.search(r"bad\.toml:3.*multiline\.colour", text), text
    assert re.search(r"bad\.toml:7.*sources\.j\.multiline.*file sources", text), text


# ---------------------------------------------------------------- the daemon

DAEMON_CONFIG = r"""
[daemon]
state_dir = "state"
commit_interval = "50ms"
rescan_interval = "1s"

[sources.app]
paths = ["logs/*.log"]
start_at = "beginning"
multiline = {{ start = '^\d{{4}}-\d\d-\d\d', timeout = "{timeout}" }}

[rules.failed]
match = ['request failed|order failed']

[rules.exception]
match = ['(?m)^(?P<error>[\w.]+(?:Error|Exception)): (?P<message>.*)$']

[rules.warning]
match = ['WARNING']

[reports.out]
dir = "reports"
format = "ndjson"
rotate_interval = "200ms"
"""

TRACE_HEAD = (
    b"2026-11-24 13:19:40,512 ERROR app.handlers: request failed\n"
    b"Traceback (most recent call last):\n"
    b'  File "/srv/app/handlers.py", line 41, in handle\n'
)
TRACE_REST = b"    result = backend.fetch(request.key)\nTimeoutError: backend db1 did not answer\n"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path


def configure(workdir: Path, timeout: str) -> None:
    (workdir / "logwarden.toml").write_text(DAEMON_CONFIG.format(timeout=timeout))


def records_of(workdir: Path) -> list[dict[str, Any]]:
    return published_records(workdir / "reports")


def committed(workdir: Path, name: str) -> tuple[int, int] | None:
    """(offset, tail_end) of a file in the last durable checkpoint: where a restart resumes,
    and how far it had read."""
    found = checkpoint.load(workdir / "state")
    for file in found.files if found else ():
        if file.path.endswith(name):
            return file.framer.offset, file.tail_end
    return None


@pytest.mark.integration
def test_daemon_times_out_quiet_events_and_agrees_with_scan(workdir: Path, daemon: Daemon) -> None:
    configure(workdir, "300ms")
    for sample in ("multiline-python.log", "multiline-java.log"):
        (workdir / "logs" / sample).write_bytes((DATA / sample).read_bytes())
    daemon.start()
    # the python sample's last line is an event no start line follows: only the timeout ends it
    wait_until(
        lambda: any(r["rule"] == "warning" for r in records_of(workdir)),
        10,
        message="the last event, ended by its timeout while the daemon runs",
    )
    assert daemon.stop() == 0
    config, rules = load_config(workdir / "logwarden.toml")
    scanned = []
    for sample in ("multiline-python.log", "multiline-java.log"):
        scanned += scan(config, rules, workdir / "logs" / sample)

    def key(record: dict[str, Any]) -> tuple[str, int, str]:
        return record["source"]["path"], record["source"]["offset"], record["rule"]

    from_daemon = sorted((r for r in records_of(workdir)), key=key)
    assert len(from_daemon) == 5  # python: failed, exception, warning; java: failed, exception
    for record in (*from_daemon, *scanned):
        del record["time"]
    assert from_daemon == sorted(scanned, key=key)


@pytest.mark.integration
def test_sigkill_in_the_middle_of_an_event(workdir: Path, daemon: Daemon) -> None:
    configure(workdir, "1h")  # only a start line, a rotation or a stop ends an event here
    log = workdir / "logs" / "app.log"
    log.write_bytes(b"2026-11-24 13:19:38,120 INFO app.server: started\n" + TRACE_HEAD)
    start = len(b"2026-11-24 13:19:38,120 INFO app.server: started\n")
    daemon.start()
    wait_until(
        lambda: committed(workdir, "app.log") == (start, start + len(TRACE_HEAD)),
        10,
        message="a commit holding the head read, the offset at the open event's start",
    )
    daemon.kill()
    with open(log, "ab") as handle:
        handle.write(TRACE_REST + b"2026-11-24 13:19:41,950 WARNING app.cache: miss rate 0.4\n")
    daemon.start()
    wait_until(lambda: len(records_of(workdir)) >= 2, 10, message="the whole traceback")
    assert [r["rule"] for r in records_of(workdir)] == ["failed", "exception"]
    assert daemon.stop() == 0  # the last event is open (timeout 1h): the stop ends it
    records = records_of(workdir)
    assert [r["rule"] for r in records] == ["failed", "exception", "warning"]
    records.pop()
    whole = (TRACE_HEAD + TRACE_REST).decode().removesuffix("\n")
    assert all(r["line"] == whole and r["source"]["offset"] == start for r in records)
    assert records[1]["captures"]["error"] == "TimeoutError"


@pytest.mark.integration
def test_rotation_ends_the_old_files_event_before_the_new_file(
    workdir: Path, daemon: Daemon
) -> None:
    configure(workdir, "1h")
    log = workdir / "logs" / "app.log"
    started = b"2026-11-24 13:19:38,120 INFO app.server: started\n"
    log.write_bytes(started + TRACE_HEAD + TRACE_REST)  # complete, but no start line after it
    daemon.start()
    wait_until(
        lambda: committed(workdir, "app.log") == (len(started), log.stat().st_size),
        10,
        message="the old file read to its end, the event open",
    )
    assert records_of(workdir) == []  # the event is open: nothing yet
    os.rename(log, workdir / "logs" / "app.log.1")  # logrotate's create: rename, new file
    log.write_bytes(b"2026-11-24 13:20:00,000 ERROR app.handlers: request failed again\n")
    with open(log, "ab") as handle:
        handle.write(b"2026-11-24 13:20:01,000 INFO next\n")
    wait_until(lambda: len(records_of(workdir)) >= 3, 10, message="both files' events")
    assert daemon.stop() == 0
    records = records_of(workdir)
    assert [(r["rule"], r["source"]["offset"]) for r in records] == [
        ("failed", len(started)),
        ("exception", len(started)),
        ("failed", 0),
    ]
    assert records[0]["line"] == (TRACE_HEAD + TRACE_REST).decode().removesuffix("\n")
    assert records[2]["line"].endswith("request failed again")


@pytest.mark.integration
def test_lines_written_to_a_rotated_file_stay_in_its_event(workdir: Path, daemon: Daemon) -> None:
    """logrotate's `create`: the writer keeps its old descriptor until postrotate, so the rest of
    a trace lands in the rotated file after the daemon drained it. The event stays whole (as
    `scan` of the rotated file sees it) and still goes out before the new file's lines."""
    configure(workdir, "30s")
    log = workdir / "logs" / "app.log"
    started = b"2026-11-24 13:19:38,120 INFO app.server: started\n"
    head = (len(started), len(started) + len(TRACE_HEAD))
    with open(log, "ab", buffering=0) as writer:
        writer.write(started + TRACE_HEAD)
        daemon.start()
        wait_until(
            lambda: committed(workdir, "app.log") == head,
            10,
            message="the head read, the event open",
        )
        os.rename(log, workdir / "logs" / "app.log.1")
        log.write_bytes(
            b"2026-11-24 13:20:00,000 ERROR app.handlers: request failed again\n"
            b"2026-11-24 13:20:01,000 INFO next\n"
        )
        wait_until(
            lambda: daemon.logged("file left its path; draining it"),
            10,
            message="the rotation seen",
        )
        time.sleep(1.0)  # its drain is a read away: the rest comes well after it
        writer.write(TRACE_REST)  # through the old descriptor
    wait_until(lambda: len(records_of(workdir)) >= 3, 15, message="both files' events")
    assert daemon.stop() == 0
    records = records_of(workdir)
    assert [(r["rule"], r["source"]["path"][-9:], r["source"]["offset"]) for r in records] == [
        ("failed", "app.log.1", len(started)),
        ("exception", "app.log.1", len(started)),
        ("failed", "s/app.log", 0),
    ]
    assert records[0]["line"] == (TRACE_HEAD + TRACE_REST).decode().removesuffix("\n")
    config, rules = load_config(workdir / "logwarden.toml")
    scanned = scan(config, rules, workdir / "logs" / "app.log.1", "app")
    assert [(r["rule"], r["line"]) for r in scanned] == [
        (r["rule"], r["line"]) for r in records[:2]
    ]


@pytest.mark.integration
def test_scan_of_a_pipe_ends_the_open_event_at_its_timeout(workdir: Path) -> None:
    """`tail -f x | logwarden scan --source app -`: the input never ends, so the last event ends
    at its timeout, as in the daemon, and its records are written then."""
    configure(workdir, "300ms")
    command = ["scan", "-c", str(workdir / "logwarden.toml"), "--source", "app", "-"]
    piped = subprocess.Popen(
        [sys.executable, "-m", "logwarden", *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert piped.stdin is not None and piped.stdout is not None
    try:
        piped.stdin.write(TRACE_HEAD + TRACE_REST)
        piped.stdin.flush()
        ready, _, _ = select.select([piped.stdout], [], [], 20)
        assert ready, "no record while the input stays open"
        first = orjson.loads(piped.stdout.readline())
        assert (first["rule"], first["line"]) == (
            "failed",
            (TRACE_HEAD + TRACE_REST).decode().removesuffix("\n"),
        )
    finally:
        piped.stdin.close()
        piped.wait(20)
        piped.stdout.close()
    assert piped.returncode == 0


def test_a_parsed_source_parses_a_multi_line_event_whole(tmp_path: Path) -> None:
    """`parse` with `multiline`: a pretty-printed JSON object is one event and parses; an event
    that is no JSON (a line and its continuation) stays plain text, kept whole."""
    conf = tmp_path / "logwarden.toml"
    conf.write_text(
        f"""
[daemon]
state_dir = "{tmp_path}/state"
[sources.app]
paths = ["{tmp_path}/app.log"]
parse = "json"
multiline = {{ start = '^\\{{' }}
[rules.err]
where = {{ level = "error" }}
capture_fields = ["msg"]
[rules.continued]
match = ['continued']
[reports.r]
dir = "{tmp_path}/reports"
"""
    )
    log = tmp_path / "app.log"
    log.write_bytes(
        b'{"level":"error","msg":"one line"}\n'
        b'{\n  "level": "error",\n  "msg": "pretty"\n}\n'
        b'{"level":"error","msg":"not alone"}\n  continued\n'
    )
    config, rules = load_config(conf)
    records = scan(config, rules, log)
    assert [(r["rule"], r["source"]["line_no"], r["captures"]) for r in records] == [
        ("err", 1, {"msg": "one line"}),
        ("err", 2, {"msg": "pretty"}),
        ("continued", 6, {}),
    ]
    assert records[1]["line"] == '{\n  "level": "error",\n  "msg": "pretty"\n}'
    assert records[2]["line"] == '{"level":"error","msg":"not alone"}\n  continued'


def test_a_logfmt_event_is_parsed_from_its_first_line(tmp_path: Path) -> None:
    """`parse = "logfmt"` with `multiline`: the fields are its first line's (the stack trace after
    it neither ends a value nor adds bare keys); the record's line is the whole event."""
    conf = tmp_path / "logwarden.toml"
    conf.write_text(
        f"""
[daemon]
state_dir = "{tmp_path}/state"
[sources.app]
paths = ["{tmp_path}/app.log"]
parse = "logfmt"
multiline = {{ start = '^level=' }}
[rules.err]
where = {{ level = "error" }}
capture_fields = ["user", "at"]
[rules.bare]
where = {{ at = true }}
[reports.r]
dir = "{tmp_path}/reports"
"""
    )
    log = tmp_path / "app.log"
    log.write_bytes(b'level=error msg="db timeout" user=bob\n  at com.x.Y\nlevel=info\n')
    config, rules = load_config(conf)
    records = scan(config, rules, log)
    assert [(r["rule"], r["line"], r["captures"]) for r in records] == [
        ("err", 'level=error msg="db timeout" user=bob\n  at com.x.Y', {"user": "bob", "at": None})
    ]
