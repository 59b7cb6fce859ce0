"""Event time: when the line says it happened, which thresholds and suppression count by.

Each record gets `event_time` and `time_source`: `"journal"` (a journal entry's own realtime),
`"log"` (a time found in the line) or `"arrival"` (none found, or one out of bounds: the moment
the daemon read the line). A line is never dropped for its time.

Recognised without configuration, wherever they are in the line (the leftmost wins): nginx and
Apache's `24/Nov/2026:13:19:38 +0000`, ISO 8601 / RFC 3339 with or without an offset
(`2026-11-24T13:19:38.120Z`, `2026-11-24 13:19:38,120`), and syslog's `Nov 24 13:19:38`, which has
no year: it takes the year that puts it nearest to now, so a December line read on 1 January is
last year's (not simply the current year's, which would date it eleven months ahead). Epoch
seconds or milliseconds are never guessed (any number could be one); a source says so with
`timestamp = { capture = "when", format = "epoch" }`, or, for a source that parses its lines,
`timestamp = { field = "ts" }`, where a number is epoch time in the unit its size says. Times
without an offset are in the source's `timezone` (default: the host's).

A time further ahead of the clock than `max_ahead` or further back than `max_behind` is not
trusted: the record falls back to arrival, the source's `out_of_bounds` count goes up, and one
warning per source per hour says so. fail2ban drops such lines from its windows silently, so a
host with a wrong clock loses detections without a word.

Only lines that matched a rule get here: parsing costs nothing on the path of quiet lines.
Rejected: dateutil's parser (slow, and it guesses: `"1 2 3"` is a date to it) and strptime for
the fixed formats (several times slower than the regex groups used here).
"""

from __future__ import annotations

import enum
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from logwarden.config import SourceConfig, TimestampConfig
from logwarden.fields import MISSING, Parser, lookup, number_of, parser_for, text_of
from logwarden.log import get_logger
from logwarden.origin import Origin
from logwarden.rules import Match

log = get_logger(__name__)

WARN_EVERY_S = 3600.0
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# stdlib `re`, not RE2: it runs on matched lines only, and named alternatives read clearly here
_RECOGNISED = re.compile(
    r"(?P<clf>(?P<cd>\d{2})/(?P<cmon>[A-Z][a-z]{2})/(?P<cy>\d{4}):(?P<cH>\d{2}):(?P<cM>\d{2}):"
    r"(?P<cS>\d{2}) (?P<cz>[+-]\d{4}))"
    r"|(?P<iso>\d{4}-\d{2}-\d{2})[T ](?P<it>\d{2}:\d{2}:\d{2})(?:[.,](?P<if>\d{1,9}))?"
    r"(?P<iz>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
    r"|\b(?P<syslog>(?P<smon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(?P<sd>\d{1,2})"
    r" (?P<sH>\d{2}):(?P<sM>\d{2}):(?P<sS>\d{2}))(?:\.(?P<sf>\d{1,6}))?\b",
    re.ASCII,
)
_CACHE_SIZE = 4096


class _Minute(enum.Enum):
    IRREGULAR = "a minute whose seconds are not one apart each (see `_minute_start`)"


_MINUTES_CACHE: dict[int, str] = {}


def rfc3339(moment: float) -> str:
    """Epoch seconds as the records' spelling: `2026-11-24T13:19:38.120000Z`.

    Each minute is formatted once and cached (matches come in bursts within a minute or a few);
    the seconds and microseconds are appended. Rounded as datetime rounds them."""
    fraction_s, whole = math.modf(moment)  # as datetime.fromtimestamp splits and rounds it
    fraction, seconds = round(fraction_s * 1e6), int(whole)
    if fraction >= 1_000_000:
        seconds, fraction = seconds + 1, fraction - 1_000_000
    elif fraction < 0:
        seconds, fraction = seconds - 1, fraction + 1_000_000
    minute, second = divmod(seconds, 60)  # UTC has no leap seconds: every minute is 60 s
    text = _MINUTES_CACHE.get(minute)
    if text is None:
        if len(_MINUTES_CACHE) > 4096:
            _MINUTES_CACHE.clear()
        start = datetime.fromtimestamp(minute * 60, UTC)
        text = _MINUTES_CACHE[minute] = start.isoformat()[:17]
    return f"{text}{second:02d}.{fraction:06d}Z"


class SourceClock:
    """Reads the event time of one source's matched lines, per its `timestamp` and `timezone`."""

    def __init__(
        self,
        name: str | None,
        spec: TimestampConfig,
        zone: tzinfo,
        now: Callable[[], float] = time.time,
        parse: Parser | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.zone = zone
        self.now = now
        self._parse = parse  # the source's `parse`, for `timestamp.field`
        self.out_of_bounds = 0
        self._warned_at: float | None = None
        self._minutes: dict[tuple[str | int, ...], int | _Minute | None] = {}  # `_recognise`

    def read(self, match: Match, origin: Origin) -> tuple[float, str]:
        """(epoch seconds, time_source) of a matched line."""
        arrival = self.now()
        journal = origin.entry_time(match)
        if journal is not None:
            return journal, "journal"
        if self.spec.field is not None:
            found = self._from_field(match.line, arrival)
        else:
            text = match.line
            if self.spec.capture is not None:
                text = match.captures.get(self.spec.capture) or text
            found = self.parse(text, arrival)
        if found is None:
            return arrival, "arrival"
        # (false for NaN and infinity too: `ts=1e999`, an epoch capture `nan`)
        if not arrival - self.spec.max_behind <= found <= arrival + self.spec.max_ahead:
            self._out_of_bounds(found, arrival)
            return arrival, "arrival"
        return found, "log"

    def parse(self, text: str, now: float) -> float | None:
        """The time in `text` as epoch seconds, or None when there is none this source reads."""
        form = self.spec.format
        try:
            if form == "auto":
                return self._recognise(text, now)
            if form == "epoch":
                return float(text.strip())
            if form == "epoch_ms":
                return float(text.strip()) / 1000
            moment = datetime.strptime(text.strip(), form)
        except (ValueError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.timestamp()

    def _from_field(self, line: str, now: float) -> float | None:
        """The time in the line's `timestamp.field`: a number (or a string of one) is epoch
        time, in seconds, milliseconds, microseconds or nanoseconds by its size unless `format`
        says which; any other text is read per `format` (default: the recognised formats).
        The line is parsed again here: only matched lines get here, and a plain rule's were not
        parsed at all."""
        assert self.spec.field is not None
        fields = self._parse(line) if self._parse is not None else None
        value = MISSING if fields is None else lookup(fields, self.spec.field)
        text = text_of(value)
        if text is None or value is None:
            return None
        number = number_of(value)
        if number is not None and self.spec.format in ("auto", "epoch", "epoch_ms"):
            if self.spec.format == "epoch_ms":
                return number / 1000
            if self.spec.format == "epoch":
                return float(number)
            return _epoch(number)
        return self.parse(text, now)

    def _recognise(self, text: str, now: float) -> float | None:
        """The leftmost recognised time in `text`. The first second of the minute each spelling
        names is cached (lines come in bursts that share it, more often a minute than a second):
        the seconds and the fraction are added to it, so a hit costs one regex search and a few
        string operations. Each spelling has fixed-width minutes and seconds, so slices find them.
        """
        found = _RECOGNISED.search(text)
        if found is None:
            return None
        fraction = found["if"] or found["sf"] or ""
        if clf := found["clf"]:  # 24/Nov/2026:13:19:38 +0000
            key: tuple[str | int, ...] = (clf[:17], clf[20:])
            second = int(clf[18:20])
        elif found["iso"]:
            clock = found["it"]  # 13:19:38
            key = (found["iso"], clock[:5], found["iz"] or "")
            second = int(clock[6:])
        else:  # the nearest year depends on now: an hour's answers are kept
            stamp = found["syslog"]  # Nov 24 13:19:38
            key = (stamp[:-3], int(now // 3600))
            second = int(stamp[-2:])
        if second > 59:
            return None  # as datetime says of a leap second, or of a 61st
        try:
            start = self._minutes[key]
        except KeyError:
            if len(self._minutes) >= _CACHE_SIZE:
                self._minutes.clear()
            start = self._minutes[key] = self._minute_start(found, now)
        if start is _Minute.IRREGULAR:
            whole = self._whole_second(found, now, second)
        else:
            whole = None if start is None else start + second
        if whole is None:
            return None
        micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
        return (whole * 1_000_000 + micros) / 1_000_000

    def _minute_start(self, found: re.Match[str], now: float) -> int | _Minute | None:
        """The epoch second that starts a spelling's minute, None if it names no time, or
        `IRREGULAR` when the minute's seconds are not one apart each (the zone changed its offset
        within it, or the nearest syslog year does): then each second is worked out alone."""
        first = self._whole_second(found, now, 0)
        if first is None:
            return None
        if self._whole_second(found, now, 59) != first + 59:
            return _Minute.IRREGULAR
        return first

    def _whole_second(self, found: re.Match[str], now: float, second: int) -> int | None:
        """The epoch second of a recognised spelling with its seconds field replaced."""
        if found["clf"]:
            month = _MONTHS.get(found["cmon"])
            if month is None:
                return None
            offset = found["cz"]
            sign = -1 if offset[0] == "-" else 1
            zone = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])) * sign
            moment = datetime(
                int(found["cy"]), month, int(found["cd"]),
                int(found["cH"]), int(found["cM"]), second,
            )  # fmt: skip
            return int((moment - zone).replace(tzinfo=UTC).timestamp())
        if found["iso"]:
            offset_text = (found["iz"] or "").upper()
            clock = f"{found['it'][:6]}{second:02d}"
            parsed = datetime.fromisoformat(f"{found['iso']}T{clock}{offset_text}")
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=self.zone)
            return int(parsed.timestamp())
        return self._syslog(found, now, second)

    def _syslog(self, found: re.Match[str], now: float, second: int) -> int | None:
        """A syslog time has no year: the candidate year nearest to `now` wins."""
        current = datetime.fromtimestamp(now, self.zone).year
        best: int | None = None
        for year in (current - 1, current, current + 1):
            try:
                moment = datetime(
                    year, _MONTHS[found["smon"]], int(found["sd"]),
                    int(found["sH"]), int(found["sM"]), second,
                    tzinfo=self.zone,
                ).timestamp()  # fmt: skip
            except ValueError:  # 29 February of a year without one, a day 31 in a short month
                continue
            if best is None or abs(moment - now) < abs(best - now):
                best = int(moment)
        return best

    def _out_of_bounds(self, found: float, arrival: float) -> None:
        self.out_of_bounds += 1
        if self._warned_at is None or arrival - self._warned_at >= WARN_EVERY_S:
            self._warned_at = arrival
            ahead = found - arrival
            log.warning(
                "event time out of bounds; using the arrival time",
                source=self.name,
                event_time=rfc3339(found) if abs(found) < 1e11 else str(found),
                # null past 2**53 s: `round()` fails on infinity and NaN, and an int past 64 bits
                # fails the JSON log renderer (`ts=1e300`)
                ahead_s=round(ahead) if abs(ahead) < 2**53 else None,
                out_of_bounds=self.out_of_bounds,
                next_warning_in="1h",
            )


class EventClocks:
    """A `SourceClock` for each source (and for files of no source), made once per config."""

    def __init__(
        self, sources: Mapping[str, SourceConfig], now: Callable[[], float] = time.time
    ) -> None:
        host = _host_zone()
        self._clocks = {
            name: SourceClock(
                name,
                source.timestamp,
                ZoneInfo(source.timezone) if source.timezone else host,
                now,
                parser_for(source.parse),
            )
            for name, source in sources.items()
        }
        self._default = SourceClock(None, TimestampConfig(), host, now)

    def for_source(self, name: str | None) -> SourceClock:
        return self._clocks.get(name, self._default) if name is not None else self._default

    def out_of_bounds(self) -> dict[str, int]:
        """Times found out of bounds, per source (sources with none omitted)."""
        return {n: c.out_of_bounds for n, c in self._clocks.items() if c.out_of_bounds}


# the largest magnitude read as seconds, then milliseconds, then microseconds (else nanoseconds):
# 1e11 s is the year 5138, 1e11 ms is 1973, so the units do not overlap over any believable time
_EPOCH_UNITS = ((1e11, 1.0), (1e14, 1e3), (1e17, 1e6))


def _epoch(number: float) -> float:
    """Epoch time in whichever unit its size says (a field named as the time holds one)."""
    for limit, per_second in _EPOCH_UNITS:
        if abs(number) < limit:
            return number / per_second
    return number / 1e9


def _host_zone() -> tzinfo:
    """The host's zone: $TZ's or /etc/localtime's as a ZoneInfo (DST-correct for any date), else
    the current fixed offset."""
    named = os.environ.get("TZ", "").lstrip(":")
    try:
        if named:
            return ZoneInfo(named)
        with open("/etc/localtime", "rb") as data:
            return ZoneInfo.from_file(data, key="localtime")
    except (OSError, ValueError, ZoneInfoNotFoundError):
        zone = datetime.now().astimezone().tzinfo
        return zone if zone is not None else UTC
