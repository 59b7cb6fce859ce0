"""Tests for logwarden.eventtime: which time a matched line carries, and where it came from."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from logcapture import RecordingLog
from logwarden.config import TimestampConfig
from logwarden.eventtime import SourceClock, rfc3339
from logwarden.fields import parse_logfmt
from logwarden.journal_entries import Entry, EntryBatch
from logwarden.origin import SourceRef
from logwarden.rules import Match

FILE = SourceRef("app", "/var/log/app.log", 1, 2)


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def clock(now: str, zone: str = "UTC", **spec: object) -> SourceClock:
    return SourceClock("app", TimestampConfig.model_validate(spec), ZoneInfo(zone), lambda: at(now))


def read(
    line: str, now: str = "2026-11-24T13:30:00+00:00", zone: str = "UTC", **spec: object
) -> tuple[str, str]:
    match = Match("r", "warning", "default", 0, 1, line, False, {"when": line.split(" ", 1)[0]})
    moment, source = clock(now, zone, **spec).read(match, FILE)
    return rfc3339(moment), source


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # nginx / Apache access logs: %d/%b/%Y:%H:%M:%S %z
        (
            '203.0.113.9 - - [24/Nov/2026:14:19:38 +0100] "GET / HTTP/1.1" 502 157',
            "2026-11-24T13:19:38.000000Z",
        ),
        # RFC 3339 with offset, fraction beyond microseconds
        ("2026-11-24T13:19:38.123456789-02:00 web1 sshd[1]: x", "2026-11-24T15:19:38.123456Z"),
        ("2026-11-24T13:19:38Z app: x", "2026-11-24T13:19:38.000000Z"),
        # ISO 8601 without offset (the source's zone: UTC here), comma fraction, space separator
        ("2026-11-24 13:19:38,120 ERROR [w] x: y", "2026-11-24T13:19:38.120000Z"),
        # syslog, no year: this year's, nearest to now
        ("Nov 24 13:19:38 web1 sshd[1]: x", "2026-11-24T13:19:38.000000Z"),
        ("Nov  4 03:00:01 web1 cron[2]: x", "2026-11-04T03:00:01.000000Z"),
    ],
)
def test_common_formats_are_recognised(line: str, expected: str) -> None:
    assert read(line) == (expected, "log")


def test_a_december_syslog_line_read_on_new_years_day_is_last_years() -> None:
    assert read("Dec 31 23:59:58 web1 sshd[1]: x", now="2027-01-01T00:00:05+00:00") == (
        "2026-12-31T23:59:58.000000Z",
        "log",
    )
    # and a January line read on New Year's Eve (a clock a little behind the sender's): next year
    assert read("Jan  1 00:00:03 web1 sshd[1]: x", now="2026-12-31T23:59:59+00:00") == (
        "2027-01-01T00:00:03.000000Z",
        "log",
    )


def test_a_time_without_offset_is_in_the_sources_zone() -> None:
    # 13:19 in Berlin (CET, +01:00 in November) is 12:19 UTC
    assert read("2026-11-24 13:19:38 x", zone="Europe/Berlin") == (
        "2026-11-24T12:19:38.000000Z",
        "log",
    )
    assert read("Nov 24 13:19:38 web1 x", zone="Europe/Berlin")[0] == "2026-11-24T12:19:38.000000Z"
    # an offset in the line wins over the zone
    assert read("2026-11-24T13:19:38+00:00 x", zone="Europe/Berlin")[0].startswith(
        "2026-11-24T13:19:38"
    )


def test_epoch_seconds_and_millis_when_the_source_says_so() -> None:
    assert read("1795526378 GET /", capture="when", format="epoch") == (
        "2026-11-24T13:19:38.000000Z",
        "log",
    )
    assert read("1795526378250 GET /", capture="when", format="epoch_ms") == (
        "2026-11-24T13:19:38.250000Z",
        "log",
    )
    # never guessed: a number in a line is not a time by default
    assert read("1795526378 GET /")[1] == "arrival"


def test_a_capture_with_a_strptime_format() -> None:
    assert read(
        "24.11.2026-13:19:38 x", capture="when", format="%d.%m.%Y-%H:%M:%S", zone="UTC"
    ) == ("2026-11-24T13:19:38.000000Z", "log")
    # a capture that does not parse: arrival, said so
    assert read("garbage x", capture="when", format="%d.%m.%Y-%H:%M:%S")[1] == "arrival"


def test_no_time_falls_back_to_arrival() -> None:
    assert read("kernel: Out of memory", now="2026-11-24T13:30:00+00:00") == (
        "2026-11-24T13:30:00.000000Z",
        "arrival",
    )


def test_far_future_and_past_times_are_counted_and_warned_once_an_hour(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = clock("2026-11-24T13:30:00+00:00")
    future = Match("r", "w", "d", 0, 1, "2026-11-26T13:30:00Z x", False, {})  # 2 days ahead
    past = Match("r", "w", "d", 0, 1, "2024-01-01T00:00:00Z x", False, {})  # ~3 years back
    for match in (future, past, future):
        moment, kind = source.read(match, FILE)
        assert (moment, kind) == (at("2026-11-24T13:30:00+00:00"), "arrival")
    assert source.out_of_bounds == 3
    # a day ahead is the default bound; within it the line's time is kept
    near = Match("r", "w", "d", 0, 1, "2026-11-25T10:00:00Z x", False, {})
    assert source.read(near, FILE)[1] == "log"
    assert source._warned_at == at("2026-11-24T13:30:00+00:00")  # one warning for the three


def test_infinite_nan_and_absurd_times_fall_back_to_arrival(capture_logs: None) -> None:
    """`ts=1e999` (infinity), `ts=1e300`, an epoch capture `nan`, 400 digits of epoch time: the
    arrival time, counted out of bounds, and a warning the JSON log renderer can write."""
    now = "2026-11-24T13:30:00+00:00"
    spec = TimestampConfig.model_validate({"field": "ts"})
    source = SourceClock("app", spec, ZoneInfo("UTC"), lambda: at(now), parse_logfmt)
    epoch = clock(now, capture="when", format="epoch")
    for times, line in (
        (source, "ts=1e999 m=x"),
        (source, "ts=1e300 m=x"),
        (source, f"ts={'9' * 400} m=x"),
        (source, f"ts=-{'9' * 5000} m=x"),
        (epoch, "nan x"),
        (epoch, "-inf x"),
    ):
        match = Match("r", "w", "d", 0, 1, line, False, {"when": line.split(" ", 1)[0]})
        times._warned_at = None  # a warning for each
        assert times.read(match, FILE) == (at(now), "arrival"), line
    assert (source.out_of_bounds, epoch.out_of_bounds) == (4, 2)
    warned = [fields for _, event, fields in RecordingLog().events if "out of bounds" in event]
    assert [w["ahead_s"] for w in warned] == [None] * 6
    assert all(orjson.dumps(w) for w in warned)


def test_a_journal_entrys_realtime_is_its_event_time() -> None:
    entry = Entry(
        cursor="s=1;i=2",
        realtime_us=1_795_526_378_250_000,
        identifier="sshd",
        pid=7,
        unit=None,
        boot_id=None,
        hostname=None,
        fields={"MESSAGE": "Nov 01 00:00:00 not this time"},
    )
    batch = EntryBatch("journal", [entry], [0])
    match = Match("r", "w", "d", 0, None, entry.line, False, {})
    moment, kind = clock("2026-11-24T13:30:00+00:00").read(match, batch)
    assert (rfc3339(moment), kind) == ("2026-11-24T13:19:38.250000Z", "journal")
    assert batch.sample(match) == {"cursor": "s=1;i=2"}


def test_rfc3339_is_the_records_spelling() -> None:
    assert rfc3339(datetime(2026, 11, 24, 13, 19, 38, 120512, UTC).timestamp()) == (
        "2026-11-24T13:19:38.120512Z"
    )


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/New_York", "2026-03-08", (1, 2, 3)),  # spring forward: 02:xx does not exist
        ("America/New_York", "2026-11-01", (0, 1, 2)),  # fall back: 01:xx happens twice
        ("Europe/Amsterdam", "1937-06-30", (23,)),  # +00:19:32 to +00:20 at midnight: the clock
        ("Europe/Amsterdam", "1937-07-01", (0,)),  # skipped 28 s, inside a minute
    ],
)
def test_every_second_of_a_cached_minute_is_datetimes_answer(
    zone: str, day: str, hours: tuple[int, ...]
) -> None:
    """The clock caches where each minute starts and adds the seconds (issue 14): across zone
    changes, including one 28 s into a minute, every second still reads what datetime says."""
    source = clock("2026-11-24T13:30:00+00:00", zone)
    now = at("2026-11-24T13:30:00+00:00")
    for hour in hours:
        for minute in range(60):
            for second in range(60):
                text = f"{day} {hour:02d}:{minute:02d}:{second:02d}"
                expected = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()
                assert source.parse(f"{text},250 x", now) == expected + 0.25, text
    # a leap second, or any second past 59, is no time datetime knows: arrival, as before
    assert source.parse(f"{day} 00:00:60 x", now) is None
    assert source.parse("Nov 24 13:19:61 web1 x", now) is None
    assert source.parse("24/Nov/2026:13:19:60 +0000 x", now) is None
