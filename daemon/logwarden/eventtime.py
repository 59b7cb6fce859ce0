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
# every recognised spelling has an HH:MM:SS, at most this many characters after its start
# (`24/Nov/2026:`); `_recognised` looks for that first
_CLOCK = re.compile(r"\d\d:\d\d:\d\d", re.ASCII)
_BEFORE_CLOCK = 12
_SECONDS = [f"{second:02d}" for second in range(60)]
# which spelling matched: the last group to close is `clf` for nginx's, one of `syslog` and
# its fraction for syslog's, one of `iso`'s others for ISO 8601's
_CLF, _SYSLOG, _SYSLOG_FRACTION = (_RECOGNISED.groupindex[n] for n in ("clf", "syslog", "sf"))
_ISO_PARTS = tuple(_RECOGNISED.groupindex[name] for name in ("iso", "it", "if", "iz"))
_CACHE_SIZE = 4096
# below this epoch second (2106), a float of whole seconds and microseconds keeps the
# microseconds exactly, so `rfc3339` of it spells them as they are
_EXACT_BELOW = 2**32


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


def _spelled(start: int | _Minute | None) -> tuple[int, str | None] | _Minute | None:
    """A minute's first epoch second, with the text `rfc3339` starts each of its seconds with,
    when it does so exactly: the minute is one of UTC's (no zone offset in seconds) and its
    times survive the float round trip (1970 to 2106)."""
    if start is None or start is _Minute.IRREGULAR:
        return start
    assert isinstance(start, int)
    if start % 60 or not 0 <= start < _EXACT_BELOW - 60:
        return start, None
    return start, datetime.fromtimestamp(start, UTC).isoformat()[:17]


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
        # asked for every matched line, so worked out once: the recognised spellings anywhere in
        # the line (no capture, field or format named), and the bounds
        self._recognises_line = (
            spec.field is None and spec.capture is None and spec.format == "auto"
        )
        self._behind, self._ahead = spec.max_behind, spec.max_ahead
        self.out_of_bounds = 0
        self._warned_at: float | None = None
        # `_recognised`: a minute's first epoch second, with its text when that is exact
        self._minutes: dict[tuple[str | int, ...], tuple[int, str | None] | _Minute | None] = {}

    def read(self, match: Match, origin: Origin) -> tuple[float, str]:
        """(epoch seconds, time_source) of a matched line."""
        moment, source, _ = self.stamped(match, origin)
        return moment, source

    def stamped(self, match: Match, origin: Origin) -> tuple[float, str, str]:
        """(epoch seconds, time_source, the record's `event_time` spelling) of a matched line.

        A time in one of the recognised spellings, the usual case, is spelled from its whole
        seconds and microseconds, with its minute's text cached with the minute: the same text
        `rfc3339` gives its epoch seconds, without the round trip through a float."""
        arrival = self.now()
        journal = origin.entry_time(match)
        if journal is not None:
            return journal, "journal", rfc3339(journal)
        spec = self.spec
        found: float | None
        if self._recognises_line:
            try:
                parts = self._recognised(match.line, arrival)
            except (ValueError, OverflowError):  # as `parse` says: a spelling of no time
                parts = None
            if parts is None:
                return arrival, "arrival", rfc3339(arrival)
            whole, micros, spelling = parts
            found = (whole * 1_000_000 + micros) / 1_000_000
        else:
            spelling = None
            if spec.field is not None:
                found = self._from_field(match.line, arrival)
            else:
                text = match.line
                if spec.capture is not None:
                    text = match.captures.get(spec.capture) or text
                found = self.parse(text, arrival)
            if found is None:
                return arrival, "arrival", rfc3339(arrival)
        # (false for NaN and infinity too: `ts=1e999`, an epoch capture `nan`)
        if not arrival - self._behind <= found <= arrival + self._ahead:
            self._out_of_bounds(found, arrival)
            return arrival, "arrival", rfc3339(arrival)
        return found, "log", rfc3339(found) if spelling is None else spelling

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
        """The leftmost recognised time in `text`, in epoch seconds."""
        parts = self._recognised(text, now)
        if parts is None:
            return None
        whole, micros, _ = parts
        return (whole * 1_000_000 + micros) / 1_000_000

    def _recognised(self, text: str, now: float) -> tuple[int, int, str | None] | None:
        """The leftmost recognised time in `text`: (epoch second, microseconds, and its `rfc3339`
        spelling when that can be put together exactly from the parts, else None).

        A time at the line's start is tried first (most logs start with theirs). Else the search
        starts at most `_BEFORE_CLOCK` characters before the first `HH:MM:SS` (every spelling has
        one, that far from its start at most; no such clock, no search): a plain search tries the
        three spellings at every character before the time, which was most of an nginx line's
        cost. The first second of the minute each spelling names is cached with its text (lines
        come in bursts that share it, more often a minute than a second): the seconds and the
        fraction are added to it. Each spelling has fixed-width minutes and seconds, so slices
        find them, and which group matched last says which spelling it is.
        """
        found = _RECOGNISED.match(text)
        if found is None:
            clock = _CLOCK.search(text)
            if clock is None:
                return None
            found = _RECOGNISED.search(text, max(1, clock.start() - _BEFORE_CLOCK))
            if found is None:
                return None
        last = found.lastindex
        fraction: str | None = None
        if last == _CLF:  # 24/Nov/2026:13:19:38 +0000
            clf = found[_CLF]
            key: tuple[str | int, ...] = (clf[:17], clf[20:])
            second = int(clf[18:20])
        elif last is not None and last >= _SYSLOG:  # Nov 24 13:19:38: its year depends on now
            syslog, fraction = found.group(_SYSLOG, _SYSLOG_FRACTION)
            key = (syslog[:-3], int(now // 3600))  # an hour's answers are kept
            second = int(syslog[-2:])
        else:  # 2026-11-24T13:19:38.120Z
            iso, hms, fraction, zone = found.group(*_ISO_PARTS)
            key = (iso, hms[:5], zone or "")
            second = int(hms[6:])
        if second > 59:
            return None  # as datetime says of a leap second, or of a 61st
        try:
            start = self._minutes[key]
        except KeyError:
            if len(self._minutes) >= _CACHE_SIZE:
                self._minutes.clear()
            start = self._minutes[key] = _spelled(self._minute_start(found, now))
        if start is None:
            return None
        if fraction:
            digits = fraction if len(fraction) == 6 else fraction[:6].ljust(6, "0")
            micros = int(digits)
        else:
            digits, micros = "000000", 0
        if start is _Minute.IRREGULAR:
            whole = self._whole_second(found, now, second)
            return None if whole is None else (whole, micros, None)
        first, minute = start
        if minute is None:
            return first + second, micros, None
        return first + second, micros, f"{minute}{_SECONDS[second]}.{digits}Z"

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
