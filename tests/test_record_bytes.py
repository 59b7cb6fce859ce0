"""The bytes of match and alert records stay what they were while their path is made faster
(issue 14): a mixed sample of lines (syslog across a year's end, nginx, application logs, ISO
8601 spellings, no time, invalid UTF-8, out of bounds) through the real rules, framer and
`MatchProcessor`, in two zones.

The event times are the pre-change code's answers, written out; the records are compared byte for
byte, `time` (the moment of writing) aside, with a plain `orjson.dumps` of DESIGN §4's shape.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logwarden import config, eventtime, reports
from logwarden.config import ReportConfig, TimestampConfig
from logwarden.eventtime import rfc3339
from logwarden.framing import LineFramer
from logwarden.origin import SourceRef
from logwarden.records import RecordBuilder
from logwarden.rules import Match, RuleSet
from logwarden.stages import MatchProcessor

NOW = datetime(2027, 1, 1, 0, 30, tzinfo=UTC).timestamp()  # half an hour into a new year
ARRIVAL = "2027-01-01T00:30:00.000000Z"
CONFIG = """\
[daemon]
state_dir = "state"

[sources.utc]
paths = ["utc.log"]
timezone = "UTC"

[sources.berlin]
paths = ["berlin.log"]
timezone = "Europe/Berlin"

[rules.first-word]
match = ['^(?P<first>[^ ]*)']

[rules.ssh]
match = ['Failed password for (?P<user>[^ ]+) from (?P<ip>[0-9.]+)']
threshold = { key = "ip", count = 3, within = "4h" }

[reports.out]
dir = "reports"
"""
SAMPLE = [
    b"Dec 31 23:59:58 web1 sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2",
    b"Jan  1 00:10:02 web1 sshd[1]: Failed password for admin from 203.0.113.9 port 22 ssh2",
    b"Dec 31 23:59:58.123456 web1 app: syslog with a fraction",
    b'203.0.113.9 - - [31/Dec/2026:23:59:59 +0100] "GET / HTTP/1.1" 502 157 "-" "curl/8.5.0"',
    b'2001:db8::1 - - [01/Jan/2027:00:20:00 -0500] "GET /x HTTP/2.0" 503 1 "-" "-"',
    b"2026-12-31 23:58:01,120 ERROR [worker-3] billing.invoices: gateway said 502",
    b"2026-12-31T23:59:59.123456789-02:00 web1 sshd[1]: Failed password for x from 203.0.113.9",
    b"2026-12-31T22:00:00z lower-case zulu",
    b"2026-12-31T23:15:07+0530 offset without a colon",
    b"2026-10-25 02:30:00 the hour Berlin's clocks go through twice",
    b"2026-12-31T23:59:60Z a leap second",
    b"Traceback (most recent call last):",
    b"2026-12-31T23:50:00.5Z caf\xe9 \xff invalid UTF-8",
    b"job 7 Nov 24 13:19:38 then 2026-12-31T23:00:00Z: the leftmost wins",
    b"10.0.0.1 x 2026-12-31T22:00:00.000001Z after an address",
    b"2030-01-01T00:00:00Z far ahead: out of bounds",
    b"1999-13-45T25:61:00Z no such time",
    b"Feb 29 12:00:00 in no year but 2028 of the three, out of bounds",
    b"",
    b"\tindented 2026-12-31T23:59:00.999999+01:00",
]
# (utc source, berlin source) per line: what the code before issue 14's changes answered
EVENT_TIMES = [
    ("2026-12-31T23:59:58.000000Z", "2026-12-31T22:59:58.000000Z"),
    ("2027-01-01T00:10:02.000000Z", "2026-12-31T23:10:02.000000Z"),
    ("2026-12-31T23:59:58.123456Z", "2026-12-31T22:59:58.123456Z"),
    ("2026-12-31T22:59:59.000000Z", "2026-12-31T22:59:59.000000Z"),
    ("2027-01-01T05:20:00.000000Z", "2027-01-01T05:20:00.000000Z"),
    ("2026-12-31T23:58:01.120000Z", "2026-12-31T22:58:01.120000Z"),
    ("2027-01-01T01:59:59.123456Z", "2027-01-01T01:59:59.123456Z"),
    ("2026-12-31T22:00:00.000000Z", "2026-12-31T22:00:00.000000Z"),
    ("2026-12-31T17:45:07.000000Z", "2026-12-31T17:45:07.000000Z"),
    ("2026-10-25T02:30:00.000000Z", "2026-10-25T00:30:00.000000Z"),
    (ARRIVAL, ARRIVAL),
    (ARRIVAL, ARRIVAL),
    ("2026-12-31T23:50:00.500000Z", "2026-12-31T23:50:00.500000Z"),
    ("2026-11-24T13:19:38.000000Z", "2026-11-24T12:19:38.000000Z"),
    ("2026-12-31T22:00:00.000001Z", "2026-12-31T22:00:00.000001Z"),
    (ARRIVAL, ARRIVAL),
    (ARRIVAL, ARRIVAL),
    (ARRIVAL, ARRIVAL),  # 2028's is nearest, and more than a day ahead
    (ARRIVAL, ARRIVAL),
    ("2026-12-31T22:59:00.999999Z", "2026-12-31T22:59:00.999999Z"),
]


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> tuple[RuleSet, config.Config]:
    path = tmp_path_factory.mktemp("record-bytes") / "logwarden.toml"
    path.write_text(textwrap.dedent(CONFIG))
    loaded, sink = config.load(path)
    return RuleSet.compile(loaded, sink), loaded


def run(
    rules: RuleSet, loaded: config.Config, source: str, chunk: int
) -> list[tuple[Match | None, bytes]]:
    """Every record of the sample read from `source`'s file in `chunk`-byte reads: (match or
    None for an alert, the record as written)."""
    processor = MatchProcessor(rules, loaded.sources, RecordBuilder("host-1"), lambda: NOW)
    origin = SourceRef(source, f"/var/log/{source}.log", 64768, 1234)
    framer = LineFramer(64 * 1024)
    data = b"\n".join(SAMPLE) + b"\n"
    out = []
    for start in range(0, len(data), chunk):
        for block in framer.feed(data[start : start + chunk]):
            for output in processor.process(rules.for_source(source).scan(block), origin):
                out.append((output.match, output.data))
    return out


def sample(source: str, line_no: int) -> bytes:
    """An alert's sample: the path and offset of a line of SAMPLE."""
    offset = sum(len(line) + 1 for line in SAMPLE[: line_no - 1])
    return b'{"path":"/var/log/%s.log","offset":%d}' % (source.encode(), offset)


def blank_time(data: bytes) -> bytes:
    return re.sub(rb'^\{"v":1,"time":"[^"]*"', b'{"v":1,"time":""', data)


@pytest.mark.parametrize("chunk", [1 << 20, 7])
@pytest.mark.parametrize(("source", "column"), [("utc", 0), ("berlin", 1)])
def test_records_are_byte_for_byte_as_before(
    rules: tuple[RuleSet, config.Config], source: str, column: int, chunk: int
) -> None:
    written = run(*rules, source, chunk)
    matches = [(match, data) for match, data in written if match is not None]
    # every line matches first-word; the three failed passwords match ssh too
    assert [m.rule for m, _ in matches].count("first-word") == len(SAMPLE)
    assert [m.rule for m, _ in matches].count("ssh") == 3
    for match, data in matches:
        expected_time = EVENT_TIMES[match.line_no - 1][column]  # type: ignore[operator]
        record = {
            "v": 1,
            "time": "",
            "event_time": expected_time,
            "time_source": "arrival" if expected_time == ARRIVAL else "log",
            "rule": match.rule,
            "severity": "warning",
            "host": "host-1",
            "source": {
                "name": source,
                "path": f"/var/log/{source}.log",
                "dev": 64768,
                "inode": 1234,
                "offset": match.offset,
                "line_no": match.line_no,
            },
            "line": match.line,
            "truncated": False,
            "captures": match.captures,
        }
        assert blank_time(data) == orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    invalid = next(match for match, _ in matches if match.line_no == 13)
    assert invalid.line == "2026-12-31T23:50:00.5Z caf\ufffd \ufffd invalid UTF-8"
    [(_, alert)] = [(match, data) for match, data in written if match is None]
    assert blank_time(alert) == (
        b'{"v":1,"time":"","kind":"alert","rule":"ssh","severity":"warning","host":"host-1",'
        b'"key":{"ip":"203.0.113.9"},"count":3,"within_s":14400.0,'
        b'"first":"' + EVENT_TIMES[0][column].encode() + b'",'
        b'"last":"' + EVENT_TIMES[6][column].encode() + b'",'
        b'"samples":[' + b",".join(sample(source, line) for line in (1, 2, 7)) + b"]}\n"
    )


@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=999_999),
)
def test_rfc3339_of_whole_seconds_and_micros_round_trips(whole: int, micros: int) -> None:
    """A recognised time is kept as whole seconds and microseconds; its record spelling is the
    float's, through `rfc3339`, for every second up to 2106."""
    moment = (whole * 1_000_000 + micros) / 1_000_000
    expected = datetime.fromtimestamp(whole, UTC).isoformat()[:19] + f".{micros:06d}Z"
    assert rfc3339(moment) == expected


def stamped(n: int, moment: str) -> bytes:
    return orjson.dumps({"v": 1, "time": moment, "rule": "r", "n": n, "line": "x\\ny"}) + b"\n"


@pytest.mark.parametrize("chunk", [100, 1 << 20])
@pytest.mark.parametrize("form", ["ndjson", "json"])
def test_a_staged_report_is_its_journals_lines_and_its_index_entry_their_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, chunk: int
) -> None:
    """A report is rendered from its journal a chunk at a time, not a line: the same bytes as
    the lines joined one by one, across chunk ends, with an empty line or a record not as
    records.py writes it (its `time` parsed) among them."""
    monkeypatch.setattr(reports, "READ_CHUNK", chunk)  # 100: many chunks, lines cut across them
    config = ReportConfig.model_validate({"name": "r", "dir": tmp_path / "out", "format": form})
    reports.prepare_dirs({"r": config}, tmp_path / "journals")
    writer = reports.ReportWriter(config, tmp_path / "journals" / "r", "host-1", [], 1)
    lines = [stamped(n, f"2026-11-24T13:19:{59 - n:02d}.000000Z") for n in range(12)]
    lines[5] = b'{"time":"2026-11-24T13:18:00.000000Z","v":1}\n'  # the earliest, parsed
    lines[9] = b"\n"
    lines.append(stamped(12, "2026-11-24T13:20:00.000000Z"))  # the latest, in memory only
    for line in lines[:-1]:
        writer.append(line, "r")
    batches = writer.take_batches(seal=False)  # into the journal file
    reports.write_batches(batches)
    reports.settle(batches)
    writer.append(lines[-1], "r")
    batches = writer.take_batches(seal=True)  # rendered from the file, then the batch
    reports.write_batches(batches)
    reports.settle(batches)
    [journal] = writer.sealed
    data = reports.staged_path(journal.state).read_bytes()
    records = [line.rstrip(b"\n") for line in lines if line != b"\n"]
    if form == "ndjson":
        assert data == b"".join(record + b"\n" for record in records)
    else:
        assert data.endswith(b',"records":[' + b",\n".join(records) + b"]}\n")
        assert len(orjson.loads(data)["records"]) == 12
    assert journal.index_entry is not None
    assert (
        journal.index_entry["records"],
        journal.index_entry["first_time"],
        journal.index_entry["last_time"],
    ) == (12, "2026-11-24T13:18:00.000000Z", "2026-11-24T13:20:00.000000Z")


Step = tuple[str, int, int]
STEPS = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 60), st.just(0)),
    st.tuples(st.sampled_from(["commit", "fail", "seal"]), st.just(0), st.just(0)),
    st.tuples(st.just("limits"), st.integers(0, 6), st.integers(0, 200)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(STEPS, max_size=40))
def test_appends_seal_journals_where_the_size_and_count_limits_say(steps: list[Step]) -> None:
    """`append` keeps the room left in the active journal instead of asking `_full_with` every
    time: the journals are the same as when it asks every time, through commits, failed commits
    (their data given back), seals and reloads that change the limits (0: no limit)."""
    with tempfile.TemporaryDirectory() as scratch:
        writers = []
        for name in ("counted", "asked"):
            base = Path(scratch) / name
            config = ReportConfig.model_validate({"name": "r", "dir": base / "out"})
            reports.prepare_dirs({"r": config}, base / "journals")
            writers.append(reports.ReportWriter(config, base / "journals" / "r", "h", [], 1))
        for kind, first, second in steps:
            for writer in writers:
                if kind == "append":
                    if writer is writers[1]:
                        writer._room_records = 0  # the straightforward way: `_full_with` each time
                    writer.append(b"x" * (first - 1) + b"\n", "r")
                elif kind == "limits":
                    limits = {
                        "rotate_max_records": first or None,
                        "rotate_max_bytes": second or None,
                    }
                    writer.reconfigure(writer.config.model_copy(update=limits))
                else:
                    batches = writer.take_batches(seal=kind == "seal")
                    if kind == "fail":
                        reports.give_back(batches)
                    else:
                        reports.write_batches(batches)
                        reports.settle(batches)
        counted, asked = (
            [
                (j.state.seq, j.records, j.length)
                for j in [*w.sealed, *([w.active] if w.active else [])]
            ]
            for w in writers
        )
        assert counted == asked


PIECES = [
    "2026-11-24", "2026-02-29", "T", " ", "13:19:38", "23:59:59", "00:00:60", "13:19", "99:99:99",
    ".123", ",5", ".1234567891", "Z", "z", "+01:00", "-0530", "+02", "24/Nov/2026:", "01/Abc/2026:",
    " +0000", " -0130", "Nov", "Dec 31 ", "Jan  1 ", "Feb 29 ", " 24 ", "x", "1", "12", "[", ":",
    "/", "-", "abc ", "10.0.0.1 ",
    # whole times, so that lines have some after decoys
    "24/Nov/2026:13:19:38 +0000", "2026-11-24T13:19:38.5Z", "2026-11-24 13:19:38,120",
    "Nov 24 13:19:38", "Dec 31 23:59:58.123456", "[01/Jan/2027:00:20:00 -0500]",
    "2026-03-29 02:30:00", "2026-10-25T02:59:59",
]  # fmt: skip
REFERENCE_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov"]
REFERENCE_MONTHS.append("Dec")


def reference_time(text: str, now: float, zone: ZoneInfo) -> float | None:
    """The leftmost recognised time, worked out plainly: one search of the whole line, each
    second computed alone (no minute cache), as eventtime.py did before issue 14's changes."""
    found = eventtime._RECOGNISED.search(text)
    if found is None:
        return None
    fraction = found["if"] or found["sf"] or ""
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    try:
        if found["clf"]:
            if found["cmon"] not in REFERENCE_MONTHS:
                return None
            sign = -1 if found["cz"][0] == "-" else 1
            offset = timedelta(hours=int(found["cz"][1:3]), minutes=int(found["cz"][3:5])) * sign
            naive = datetime(
                int(found["cy"]), REFERENCE_MONTHS.index(found["cmon"]) + 1, int(found["cd"]),
                int(found["cH"]), int(found["cM"]), int(found["cS"]),
            )  # fmt: skip
            whole = int((naive - offset).replace(tzinfo=UTC).timestamp())
        elif found["iso"]:
            parsed = datetime.fromisoformat(
                f"{found['iso']}T{found['it']}{found['iz'] or ''}".upper()
            )
            whole = int((parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).timestamp())
        else:
            current = datetime.fromtimestamp(now, zone).year
            candidates = []
            for year in (current - 1, current, current + 1):
                with contextlib.suppress(ValueError):
                    month = REFERENCE_MONTHS.index(found["smon"]) + 1
                    moment = datetime(
                        year, month, int(found["sd"]), int(found["sH"]), int(found["sM"]),
                        int(found["sS"]), tzinfo=zone,
                    ).timestamp()  # fmt: skip
                    candidates.append(int(moment))
            if not candidates:
                return None
            whole = min(candidates, key=lambda moment: abs(moment - now))
    except ValueError:
        return None
    return (whole * 1_000_000 + micros) / 1_000_000


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    st.sampled_from(["UTC", "Europe/Berlin"]),
)
def test_the_recognised_time_is_the_plain_searchs(text: str, zone_name: str) -> None:
    """Starting at the line's start, then from before its first HH:MM:SS, and the minute cache
    find what one plain search of the whole line finds; the record's spelling is `rfc3339`'s."""
    zone = ZoneInfo(zone_name)
    now = datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp()
    spec = TimestampConfig(max_ahead=1e12, max_behind=1e12)
    clock = eventtime.SourceClock("s", spec, zone, lambda: now)
    expected = reference_time(text, now, zone)
    assert clock.parse(text, now) == expected
    match = Match("r", "warning", "out", 0, 1, text, False, {})
    moment, source, spelling = clock.stamped(match, SourceRef("s", "/x", 1, 2))
    assert (moment, source) == ((expected, "log") if expected is not None else (now, "arrival"))
    assert spelling == rfc3339(moment)
