"""The TOML config: parsed once into frozen, typed objects, with every problem reported at once.

Validation is pydantic's: it collects every field error in one pass with its key path, which is
what an operator fixing a config wants. What pydantic cannot know (the line a key sits on, a
did-you-mean for a misspelt key, references between tables) is added here. The rules module adds
its own problems (patterns that do not compile, failing rule tests) through `ConfigError` too.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from logwarden.problems import ConfigError, KeyLocator, Problem, ProblemSink
from logwarden.sealing import Compression, KeyFileError, ReportKey, load_key, missing_library

EX_CONFIG = 78
DEFAULT_CONFIG_PATH = Path("/etc/logwarden/logwarden.toml")
DEFAULT_STATE_DIR = Path("/var/lib/logwarden")

Severity = Literal["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
Engine = Literal["re2", "regex"]
StartAt = Literal["end", "beginning"]
Watcher = Literal["inotify", "polling"]
ReportFormat = Literal["json", "ndjson"]
ParseFormat = Literal["json", "logfmt", "none"]

# ---------------------------------------------------------------- human units

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
# Fractions, not floats: "9007199254740993" stays exact, and "9ms" is 0.009 rather than
# 0.009000000000000001.
_NUMBER_WITH_UNIT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", re.ASCII)


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as "64KiB", "10MiB" or "1GB"."""
    if isinstance(value, bool):
        raise ValueError('expected a size such as 65536 or "64KiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        found = _NUMBER_WITH_UNIT.fullmatch(value)
        if found and found.group(2).lower() in _SIZE_UNITS:
            return int(Fraction(found.group(1)) * _SIZE_UNITS[found.group(2).lower()])
    raise ValueError(f'{value!r} is not a size: use bytes or a string such as "64KiB" or "10MiB"')


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "250ms", "10s", "5m" or "1h"."""
    if isinstance(value, bool):
        raise ValueError('expected a duration such as "10s"')
    if isinstance(value, int | float):
        if not math.isfinite(value):  # TOML has nan and inf; neither is a duration
            raise ValueError(f"{value!r} is not a duration")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        found = _NUMBER_WITH_UNIT.fullmatch(value)
        if found and found.group(2) in _DURATION_UNITS:
            return float(Fraction(found.group(1)) * _DURATION_UNITS[found.group(2)])
    raise ValueError(
        f'{value!r} is not a duration: use a string such as "250ms", "10s", "5m" or "1h"'
    )


def _parse_file_mode(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777:
        return value
    if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{3}", value):
        return int(value.removeprefix("0").removeprefix("o"), 8)
    raise ValueError(f'{value!r} is not a file mode: use 0o640 or "0640"')


Size = Annotated[int, BeforeValidator(parse_size)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
FileMode = Annotated[int, BeforeValidator(_parse_file_mode)]


def _state_dir_default() -> Path:
    """systemd's StateDirectory= sets $STATE_DIRECTORY; outside systemd the FHS place."""
    from_systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(from_systemd) if from_systemd else DEFAULT_STATE_DIR


# ---------------------------------------------------------------- the typed config


class _Table(BaseModel):
    """Every table is frozen and rejects keys it does not know.

    Lax mode so TOML arrays become tuples and strings Paths; the int and bool fields that lax mode
    would fill from `true`, `4.0` or `"yes"` are marked strict one by one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


_T = TypeVar("_T", bound=_Table)


def _not_blank(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


def _positive(value: float) -> float:
    """A duration: zero would spin or never end, a negative one means nothing."""
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


class DaemonConfig(_Table):
    state_dir: Path = Field(default_factory=_state_dir_default)
    # matches commit at once (group commit); this bounds only offsets-only commits
    commit_interval: Seconds = 0.2
    rescan_interval: Seconds = 10.0
    watcher: Watcher = "inotify"
    read_chunk_bytes: Size = 1024 * 1024
    status_interval: Seconds = 2.0

    _state_dir_not_blank = field_validator("state_dir", mode="before")(_not_blank)

    _durations_positive = field_validator("commit_interval", "rescan_interval", "status_interval")(
        _positive
    )

    @field_validator("read_chunk_bytes")
    @classmethod
    def _chunk_bounds(cls, value: int) -> int:
        if not 4096 <= value <= 64 * 1024 * 1024:
            raise ValueError("must be between 4KiB and 64MiB")
        return value


# A journalctl match: FIELD=VALUE (fields are upper case, digits and "_"), "+" (OR between the
# groups either side), or an absolute path (journalctl's shorthand for _EXE= and friends). Checked
# so that nothing a config holds can become a journalctl option; otherwise passed through as is.
_JOURNAL_MATCH = re.compile(r"\+|[A-Z0-9_]+=.*|/.+", re.DOTALL)


class JournalConfig(_Table):
    """A source read from the systemd journal through the host's `journalctl`."""

    matches: tuple[str, ...] = ()  # journalctl's match syntax; empty: every entry
    directory: Path | None = None  # journal files of this directory instead of the system's

    _directory_not_blank = field_validator("directory", mode="before")(_not_blank)

    @field_validator("matches")
    @classmethod
    def _match_syntax(cls, matches: tuple[str, ...]) -> tuple[str, ...]:
        for match in matches:
            if not _JOURNAL_MATCH.fullmatch(match):
                raise ValueError(
                    f'{match!r} is not a journalctl match: use "FIELD=value" '
                    '(e.g. "SYSLOG_IDENTIFIER=sshd"), "+" or an absolute path'
                )
        if matches and (matches[0] == "+" or matches[-1] == "+"):
            raise ValueError('"+" goes between two groups of matches, not first or last')
        return matches


_TIME_FORMATS = ("auto", "epoch", "epoch_ms")


def check_field_path(path: str) -> str:
    """A dotted path into a parsed line's fields: `msg`, `http.status` (no empty parts)."""
    if not isinstance(path, str) or not all(part.strip() for part in path.split(".")):
        raise ValueError(
            f'{path!r} is not a field path: use a name or a dotted path, e.g. "http.status"'
        )
    return path


_CONDITIONS = ("eq", "match", "gt", "gte", "lt", "lte")
_WHERE_EXAMPLE = '{ level = "error", "http.status" = { gte = 500 } }'


def where_conditions(value: object) -> object:
    """`where = { path = value | { condition = operand, ... } }`, each value made `{ eq = value }`.

    Checked here rather than by pydantic's union so that a misspelt condition, an unquoted dotted
    path (TOML reads `http.status = 1` as a table `http`) and a bad pattern each get one clear
    message on the line of `where`."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"must be a table of conditions on fields, e.g. {_WHERE_EXAMPLE}")
    conditions: dict[str, dict[str, object]] = {}
    for path, given in value.items():
        check_field_path(path)
        condition = given if isinstance(given, dict) else {"eq": given}
        if not condition:
            raise ValueError(f"{path!r}: an empty condition; use one of {', '.join(_CONDITIONS)}")
        for key, operand in condition.items():
            if key not in _CONDITIONS:
                # no close condition: likely TOML's reading of an unquoted `http.status = ...`
                hint = _did_you_mean(key, _CONDITIONS) or (
                    f'; a dotted path is one quoted key: "{path}.{key}" = ...'
                )
                raise ValueError(
                    f"{path!r}: unknown condition {key!r}{hint}"
                    f" (conditions: a value to equal, or {{ {', '.join(_CONDITIONS)} }})"
                )
            _check_operand(path, key, operand)
        conditions[path] = condition
    return conditions


def _check_operand(path: str, key: str, operand: object) -> None:
    if key == "match":
        # `status` and `report` load a config too, and need no pattern engine
        from logwarden.patterns import PatternError, compile_pattern, expand  # noqa: PLC0415

        if not isinstance(operand, str):
            raise ValueError(f"{path!r}: match takes a pattern (a string)")
        try:
            compile_pattern(expand(operand), "re2", operand)
        except PatternError as error:
            raise ValueError(f"{path!r}: match: {'; '.join(error.problems)}") from None
    elif key == "eq":
        if not isinstance(operand, str | int | float | bool):
            raise ValueError(f"{path!r}: compare with a string, a number or true/false")
    elif isinstance(operand, bool) or not isinstance(operand, int | float):
        raise ValueError(f"{path!r}: {key} takes a number, e.g. {{ {key} = 499 }}")
    if isinstance(operand, float) and not math.isfinite(operand):
        raise ValueError(f"{path!r}: {key} takes a finite number")


class FieldCondition(_Table):
    """One field's conditions in a rule's `where`: every one given must hold (`fields.py`)."""

    eq: str | bool | int | float | None = None  # a bare value in `where` is this
    match: str | None = None  # an RE2 pattern searched in the field's text
    gt: int | float | None = None
    gte: int | float | None = None
    lt: int | float | None = None
    lte: int | float | None = None


class TimestampConfig(_Table):
    """Where a line's event time comes from (`eventtime.py`); default: the common formats."""

    capture: str | None = None  # a rule capture holding the time; None: searched in the line
    format: str = "auto"  # "auto", "epoch", "epoch_ms" or a strptime format
    # a parsed field (dotted path) of a structured line: the source must `parse` its lines
    field: str | None = None
    max_ahead: Seconds = 86400.0  # further ahead of the clock than this: out of bounds
    max_behind: Seconds = 366 * 86400.0  # further back than this: out of bounds

    _field_path = field_validator("field")(check_field_path)

    @model_validator(mode="after")
    def _one_place(self) -> TimestampConfig:
        if self.field is not None and self.capture is not None:
            raise ValueError("give `field` or `capture`, not both: the time is read from one")
        return self

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in _TIME_FORMATS and "%" not in value:
            raise ValueError(
                f'{value!r} is not a time format: use "auto", "epoch", "epoch_ms" or a strptime'
                ' format such as "%d/%b/%Y:%H:%M:%S %z"'
            )
        return value


class MultilineConfig(_Table):
    """How a file source's lines group into multi-line events (`multiline.py`)."""

    start: str  # RE2 (placeholders work): a line it matches starts an event; any other line
    #             continues the open one
    max_lines: int = Field(default=500, strict=True, ge=1, le=100_000)
    max_bytes: Size = 256 * 1024
    timeout: Seconds = 2.0  # no new line for this long: the open event ends

    @field_validator("start")
    @classmethod
    def _start_compiles(cls, value: str) -> str:
        # only when a source has multiline: commands that never compile a pattern skip these
        from logwarden.patterns import PatternError, compile_pattern, expand  # noqa: PLC0415

        try:  # as `match` is (`%{iso8601}` expands); `multiline.py` expands it again
            compile_pattern(expand(value), "re2", value)
        except PatternError as error:
            raise ValueError("; ".join(error.problems)) from None
        return value

    @field_validator("max_bytes")
    @classmethod
    def _bytes_bounds(cls, value: int) -> int:
        if not 256 <= value <= 64 * 1024 * 1024:
            raise ValueError("must be between 256 bytes and 64MiB")
        return value

    _timeout_positive = field_validator("timeout")(_positive)


class SourceConfig(_Table):
    """Where lines come from: files (`paths`) or the systemd journal (`journal`), never both."""

    name: str
    paths: tuple[str, ...] = ()
    journal: JournalConfig | None = None
    exclude: tuple[str, ...] = ()
    start_at: StartAt = "end"
    max_line_bytes: Size = 64 * 1024
    follow_symlinks: bool = Field(default=False, strict=True)
    # a file source used only while the journal source named here cannot read its journal: the
    # same events reach both when rsyslog copies the journal into a file (see `fallback.py`)
    fallback_for: str | None = None
    timestamp: TimestampConfig = Field(default_factory=TimestampConfig)
    timezone: str | None = None  # for timestamps without an offset; None: the host's zone
    parse: ParseFormat = "none"  # structured lines, for rules' `where`/`field` (`fields.py`)
    multiline: MultilineConfig | None = None  # None: every line is an event of its own

    @model_validator(mode="after")
    def _field_needs_parse(self) -> SourceConfig:
        if self.timestamp.field is not None and self.parse == "none":
            raise ValueError(
                'timestamp.field needs parse = "json" or "logfmt" on this source:'
                " only parsed lines have fields"
            )
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f'{value!r} is not a time zone this host knows (e.g. "UTC", "Europe/Berlin")'
                ) from None
        return value

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        if not paths:
            raise ValueError("must not be empty")
        for path in paths:
            if not path.strip():
                raise ValueError("a path cannot be empty")
        return paths

    @property
    def is_journal(self) -> bool:
        return self.journal is not None

    @field_validator("max_line_bytes")
    @classmethod
    def _line_bounds(cls, value: int) -> int:
        if not 256 <= value <= 16 * 1024 * 1024:
            raise ValueError("must be between 256 bytes and 16MiB")
        return value


# a key part: a capture name, optionally with an address prefix length ("ip/24", "ip/64")
_KEY_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(?:/([0-9]{1,3}))?")  # dots: capture_fields


def _key_parts(value: object) -> object:
    """`key = "ip"` or `key = ["user", "ip/64"]`, as a tuple; each part checked."""
    parts = (value,) if isinstance(value, str) else value
    if not isinstance(parts, list | tuple) or not parts:
        raise ValueError('must be a capture name or a list of them, e.g. "ip" or ["user", "ip"]')
    for part in parts:
        found = _KEY_PART.fullmatch(part) if isinstance(part, str) else None
        if found is None:
            raise ValueError(f'{part!r} is not a capture name (or NAME/PREFIX such as "ip/24")')
        if found.group(2) is not None and int(found.group(2)) > 128:
            raise ValueError(f"{part!r}: a prefix length is at most 128")
    names = [str(part).split("/")[0] for part in parts]
    if len(set(names)) != len(names):
        raise ValueError("each capture may appear once in a key")
    return tuple(parts)


KeyParts = Annotated[tuple[str, ...], BeforeValidator(_key_parts)]


def key_captures(key: tuple[str, ...]) -> tuple[str, ...]:
    """The capture names a key is made of (`"ip/24"` → `"ip"`)."""
    return tuple(part.split("/")[0] for part in key)


class ThresholdConfig(_Table):
    """One alert when `count` matches of one key fall within `within` (`thresholds.py`)."""

    key: KeyParts
    count: int = Field(ge=1, strict=True)
    within: Seconds
    alert_only: bool = Field(default=False, strict=True)  # single matches stay out of the report

    _durations_positive = field_validator("within")(_positive)


class SuppressConfig(_Table):
    """Repeats of one key within `within` fold into the first record (`suppress.py`)."""

    key: KeyParts
    within: Seconds

    _durations_positive = field_validator("within")(_positive)


class CarryConfig(_Table):
    """Captures a match lacks, taken from the latest match of the `from` rules with the same
    `key` within `within` (`correlate.py`)."""

    key: KeyParts
    from_: tuple[str, ...] = Field(alias="from", min_length=1)
    within: Seconds
    captures: tuple[str, ...] = Field(min_length=1)

    _durations_positive = field_validator("within")(_positive)

    @model_validator(mode="after")
    def _not_the_key(self) -> CarryConfig:
        if both := sorted(set(self.captures) & set(key_captures(self.key))):
            raise ValueError(
                f"{', '.join(map(repr, both))} cannot be both the key and a carried capture"
            )
        return self


def _networks(value: object) -> object:
    """`ignore = [...]` is short for `ignore = { capture = "ip", nets = [...] }`."""
    return {"nets": value} if isinstance(value, list | tuple) else value


class IgnoreConfig(_Table):
    """Addresses and networks whose matches are dropped (and counted), on one capture."""

    capture: str = "ip"
    nets: tuple[str, ...]

    @field_validator("nets")
    @classmethod
    def _addresses(cls, nets: tuple[str, ...]) -> tuple[str, ...]:
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(
                    f'{net!r} is not an IP address or CIDR range (e.g. "192.0.2.7",'
                    ' "10.0.0.0/8", "2001:db8::/32"); host names are not looked up'
                ) from None
        return nets

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(net, strict=False) for net in self.nets)


class RuleTest(_Table):
    """A sample line; `expect` is the captures it must yield, or false when it must not match."""

    line: str
    expect: dict[str, str | None] | Literal[False] = Field(default_factory=dict)

    @field_validator("expect", mode="before")
    @classmethod
    def _shape(cls, value: object) -> object:
        # checked here because a failing union reports once per member ("should be a valid
        # dictionary", "should be False"), which reads as two problems where there is one
        if value is False:
            return value
        if isinstance(value, dict):
            for capture, expected in value.items():
                if expected is not None and not isinstance(expected, str):
                    raise ValueError(f"the expected value of {capture!r} must be a string")
            return value
        raise ValueError(
            "must be a table of expected captures, or false when the line must not match"
        )


class RuleConfig(_Table):
    name: str
    sources: tuple[str, ...] | None = None
    match: tuple[str, ...] = ()  # required, unless `where` alone says what matches
    exclude: tuple[str, ...] = ()
    severity: Severity = "warning"
    report: str | None = None
    engine: Engine = "re2"
    match_timeout: Seconds = 0.1
    threshold: ThresholdConfig | None = None
    suppress: SuppressConfig | None = None
    ignore: Annotated[IgnoreConfig | None, BeforeValidator(_networks)] = None
    carry: CarryConfig | None = None
    records: bool = Field(default=True, strict=True)  # false: matches only feed thresholds, carry
    tests: tuple[RuleTest, ...] = ()
    # on parsed lines (a source's `parse`): conditions, what `match` reads, fields made captures
    where: Annotated[Mapping[str, FieldCondition], BeforeValidator(where_conditions)] | None = None
    field: str | None = None
    capture_fields: tuple[str, ...] = ()

    _field_path = field_validator("field")(check_field_path)

    @field_validator("capture_fields")
    @classmethod
    def _capture_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            check_field_path(path)
        if len(set(paths)) != len(paths):
            raise ValueError("each field may be named once")
        return paths

    @property
    def reads_fields(self) -> bool:
        """Whether the rule reads parsed fields (`where`, `field` or `capture_fields`)."""
        return self.where is not None or self.field is not None or bool(self.capture_fields)

    @model_validator(mode="after")
    def _something_to_match(self) -> RuleConfig:
        if self.field is not None and not self.match:
            raise ValueError("`field` says what `match` reads: give `match` patterns too")
        if not self.match:  # captures come from capture_fields alone
            for table, key in (
                ("threshold", self.threshold and self.threshold.key),
                ("suppress", self.suppress and self.suppress.key),
                ("ignore", self.ignore and (self.ignore.capture,)),
            ):
                missing = [n for n in key_captures(key or ()) if n not in self.capture_fields]
                if missing:
                    raise ValueError(
                        f"{table} uses {', '.join(map(repr, missing))}, which no capture_fields"
                        " name (a rule without `match` has only those captures)"
                    )
        return self

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("exclude", mode="before")
    @classmethod
    def _one_or_many_excludes(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    _durations_positive = field_validator("match_timeout")(_positive)


class EncryptConfig(_Table):
    """`encrypt = { key_file = ... }`: the key is read when the config is loaded, so a new key
    file applies from the next start or reload on, to the reports sealed after it."""

    key_file: Path
    _key: ReportKey | None = PrivateAttr(None)

    @property
    def key(self) -> ReportKey:
        if self._key is None:
            raise RuntimeError(f"the key of {self.key_file} was never loaded")
        return self._key


class ReportConfig(_Table):
    name: str
    dir: Path
    format: ReportFormat = "json"
    compress: Compression | None = None
    encrypt: EncryptConfig | None = None
    rotate_max_bytes: Size | None = 10 * 1024 * 1024
    rotate_max_records: int | None = Field(default=None, ge=0, strict=True)
    rotate_interval: Seconds | None = 3600.0
    keep: int = Field(default=48, ge=1, strict=True)
    keep_days: float | None = Field(default=None, ge=0)
    max_total_bytes: Size | None = None
    publish_on_stop: bool = Field(default=True, strict=True)
    file_mode: FileMode = 0o640

    _dir_not_blank = field_validator("dir", mode="before")(_not_blank)

    @field_validator(
        "rotate_max_bytes", "rotate_max_records", "rotate_interval", "keep_days", "max_total_bytes"
    )
    @classmethod
    def _zero_is_off(cls, value: float | None) -> float | None:
        """TOML has no null: 0 turns a rotation or retention limit off."""
        return None if value == 0 else value


_LISTEN = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>[0-9]{1,5})"
)


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` → (host, port); the host is required, so that exposing the
    endpoint beyond this machine is always written out (`0.0.0.0:9108`), never a default."""
    found = _LISTEN.fullmatch(value)
    if not found or int(found.group("port")) > 65535:
        raise ValueError(
            f'{value!r} is not an address to listen on: use "127.0.0.1:9108" or "[::1]:9108"'
        )
    return found.group("v6") or found.group("host"), int(found.group("port"))


class MetricsConfig(_Table):
    """Prometheus metrics, both ways out off by default."""

    textfile: Path | None = None  # for node_exporter's textfile collector: a `*.prom` file
    listen: str | None = None  # an HTTP endpoint, "127.0.0.1:9108"
    interval: Seconds = 15.0  # how often the textfile is rewritten

    _textfile_not_blank = field_validator("textfile", mode="before")(_not_blank)

    @field_validator("textfile")
    @classmethod
    def _prom(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError(
                "must end in .prom: node_exporter's textfile collector reads only those"
            )
        return value

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    _durations_positive = field_validator("interval")(_positive)

    @property
    def address(self) -> tuple[str, int] | None:
        return None if self.listen is None else parse_listen(self.listen)


class Config(_Table):
    """The whole config, as every other module sees it."""

    path: Path
    daemon: DaemonConfig
    sources: Mapping[str, SourceConfig]
    rules: Mapping[str, RuleConfig]
    reports: Mapping[str, ReportConfig]
    metrics: MetricsConfig = MetricsConfig()

    @property
    def file_sources(self) -> dict[str, SourceConfig]:
        return {name: source for name, source in self.sources.items() if not source.is_journal}

    @property
    def journal_sources(self) -> dict[str, SourceConfig]:
        return {name: source for name, source in self.sources.items() if source.is_journal}

    def report_for(self, rule: RuleConfig) -> ReportConfig:
        """The report a rule writes to (its own, or the only one there is)."""
        if rule.report is not None:
            return self.reports[rule.report]
        return next(iter(self.reports.values()))


# ---------------------------------------------------------------- loading


def default_config_path() -> Path:
    """`$LOGWARDEN_CONFIG`, else systemd's `$CONFIGURATION_DIRECTORY`, else /etc/logwarden."""
    if env := os.environ.get("LOGWARDEN_CONFIG"):
        return Path(env)
    if conf_dir := os.environ.get("CONFIGURATION_DIRECTORY", "").split(":")[0]:
        return Path(conf_dir) / "logwarden.toml"
    return DEFAULT_CONFIG_PATH


def load(path: Path, defer: bool = False) -> tuple[Config, ProblemSink]:
    """Read and validate a config file; raise ConfigError naming every problem.

    Also returns the sink so later stages (rule compilation) report against the same file
    and lines. With `defer`, problems found so far are left in the sink and the valid part of
    the config is returned, so that rule compilation can add its own problems and the operator
    sees every problem in one round; the caller must then call `sink.raise_if_any()`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([Problem(path, None, "", f"cannot read the config: {error}")]) from error
    sink = ProblemSink(path, KeyLocator(text), [])
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"line (\d+)", str(error))
        line = int(found.group(1)) if found else None
        raise ConfigError([Problem(path, line, "", f"not valid TOML: {error}")]) from error
    config = parse(document, path, sink)
    if not defer:
        sink.raise_if_any()
    return config, sink


def parse(document: dict[str, Any], path: Path, sink: ProblemSink) -> Config:
    """Validate a parsed TOML document; problems go to `sink`.

    Returns what is valid: with problems, that is a partial config (tables that failed are left
    out, as are rules whose references do not resolve), good for finding further problems only.
    """
    base = path.parent
    known_top = ("daemon", "sources", "rules", "reports", "metrics")
    for key, value in document.items():
        if key not in known_top:
            kind = "table" if isinstance(value, dict) else "key"
            sink.add((key,), f"unknown {kind}{_did_you_mean(key, known_top)}")
    # a top-level entry of the wrong shape is reported and read as empty, so that the problems in
    # the rest of the file are still found (one round of fixes, not one per problem)
    tables: dict[str, dict[str, Any]] = {}
    for table in known_top:
        value = document.get(table, {})
        if isinstance(value, dict):
            tables[table] = value
        else:
            example = f"[{table}]" if table in ("daemon", "metrics") else f"[{table}.NAME]"
            sink.add((table,), f"must be a table, e.g. {example}")
            tables[table] = {}
    metrics_raw = dict(tables["metrics"])
    if _is_path_text(metrics_raw.get("textfile")):
        metrics_raw["textfile"] = _resolve(base, metrics_raw["textfile"])
    metrics = _validate(MetricsConfig, metrics_raw, ("metrics",), sink)
    if not tables["sources"] and isinstance(document.get("sources", {}), dict):
        sink.add(
            ("sources",), "at least one source is needed, e.g. [sources.auth] with paths = [...]"
        )
    if not tables["rules"] and isinstance(document.get("rules", {}), dict):
        sink.add(("rules",), "at least one rule is needed, e.g. [rules.NAME] with match = [...]")

    # blank paths are not resolved (that would make them the config's dir): validation rejects them
    daemon_raw = dict(tables["daemon"])
    if _is_path_text(daemon_raw.get("state_dir")):
        daemon_raw["state_dir"] = _resolve(base, daemon_raw["state_dir"])
    daemon = _validate(DaemonConfig, daemon_raw, ("daemon",), sink)
    if daemon is not None:
        state_dir = daemon.state_dir
    elif isinstance(daemon_raw.get("state_dir"), Path):  # [daemon] has other problems
        state_dir = daemon_raw["state_dir"]
    else:
        state_dir = _state_dir_default()

    sources = {}
    for name, source_raw in tables["sources"].items():
        resolved = source_raw
        if isinstance(source_raw, dict) and isinstance(source_raw.get("paths"), list):
            paths = [_resolve_glob(base, p) if _is_path_text(p) else p for p in source_raw["paths"]]
            resolved = source_raw | {"paths": paths}
        journal = source_raw.get("journal") if isinstance(source_raw, dict) else None
        if isinstance(journal, dict) and _is_path_text(journal.get("directory")):
            resolved = resolved | {
                "journal": journal | {"directory": _resolve(base, journal["directory"])}
            }
        kind_ok = _one_kind(name, source_raw, sink)
        if isinstance(source_raw, dict) and not kind_ok:
            # still validated, for the other problems of the table; then left out
            resolved = {k: v for k, v in resolved.items() if k not in ("paths", "journal")}
            resolved["paths"] = ["-"]
        validated = _validate(SourceConfig, resolved, ("sources", name), sink, name=name)
        sources[name] = validated if kind_ok else None
    _check_fallbacks(sources, sink)

    # no [reports] at all: one report beside the state is a sensible default
    reports_raw = tables["reports"] or {"default": {}}
    reports = {}
    for name, report_raw in reports_raw.items():
        resolved = report_raw
        if isinstance(report_raw, dict):
            directory = report_raw.get("dir")
            if _is_path_text(directory):
                resolved = report_raw | {"dir": _resolve(base, directory)}
            elif "dir" not in report_raw:
                resolved = report_raw | {"dir": state_dir / "reports" / name}
            # any other `dir` is left for validation to reject, not replaced by the default
            encrypt = report_raw.get("encrypt")
            if isinstance(encrypt, dict) and _is_path_text(encrypt.get("key_file")):
                key_file = _resolve(base, encrypt["key_file"])
                resolved = resolved | {"encrypt": encrypt | {"key_file": key_file}}
        reports[name] = _check_sealing(
            _validate(ReportConfig, resolved, ("reports", name), sink, name=name), sink
        )

    rules: dict[str, RuleConfig | None] = {}
    for name, raw in tables["rules"].items():
        if isinstance(raw, dict) and not raw.get("match") and "where" not in raw:
            # `match` may be left out when `where` says what matches; checked here, since a
            # model validator would not run while another key is wrong. The rest of the table
            # is still validated, for its other problems; then the rule is left out.
            sink.add(
                ("rules", name, "match"), "must not be empty" if "match" in raw else "is required"
            )
            _validate(RuleConfig, raw | {"match": ["-"]}, ("rules", name), sink, name=name)
            rules[name] = None
        else:
            rules[name] = _validate(RuleConfig, raw, ("rules", name), sink, name=name)
        if isinstance(raw, dict):
            _check_references(
                name,
                raw,
                sources_named=tables["sources"],
                reports_named=reports,
                rules_named=tables["rules"],
                sink=sink,
            )

    _check_parsed_sources(rules, sources, sink)

    seen_dirs: dict[Path, str] = {}
    for name, report in reports.items():
        if report is None:
            continue
        if report.dir in seen_dirs:
            sink.add(
                ("reports", name, "dir"),
                f"already used by report {seen_dirs[report.dir]!r}; each report needs its own dir",
            )
        seen_dirs[report.dir] = name

    valid_sources = {name: source for name, source in sources.items() if source is not None}
    valid_reports = {name: report for name, report in reports.items() if report is not None}
    valid_rules = {
        name: rule
        for name, rule in rules.items()
        if rule is not None
        and all(source in valid_sources for source in rule.sources or ())
        and (rule.report in valid_reports if rule.report is not None else len(valid_reports) == 1)
    }
    return Config(
        path=path,
        daemon=daemon or DaemonConfig(state_dir=state_dir),
        sources=valid_sources,
        rules=valid_rules,
        reports=valid_reports,
        metrics=metrics or MetricsConfig(),
    )


_FILE_ONLY_KEYS = ("exclude", "follow_symlinks", "fallback_for", "parse", "multiline")


def _one_kind(name: str, raw: object, sink: ProblemSink) -> bool:
    """A source reads files (`paths`) or the journal (`journal`): exactly one of them."""
    if not isinstance(raw, dict):
        return True  # validation says what is wrong with it
    where = ("sources", name)
    if "paths" in raw and "journal" in raw:
        sink.add(
            (*where, "journal"),
            "a source has either `paths` (files) or `journal` (the systemd journal), not both;"
            " make two sources",
        )
        return False
    if "paths" not in raw and "journal" not in raw:
        sink.add(
            (*where, "paths"),
            "is required (or `journal = { matches = [...] }` to read the systemd journal)",
        )
        return False
    if "journal" in raw:
        for key in _FILE_ONLY_KEYS:
            if key in raw:
                sink.add((*where, key), "applies to file sources (`paths`) only")
                return False
    return True


def _check_fallbacks(sources: Mapping[str, SourceConfig | None], sink: ProblemSink) -> None:
    """`fallback_for` names a journal source of this config."""
    for name, source in sources.items():
        if source is None or source.fallback_for is None:
            continue
        target = sources.get(source.fallback_for)
        if source.fallback_for not in sources:
            sink.add(
                ("sources", name, "fallback_for"),
                f"no source named {source.fallback_for!r}{_did_you_mean(source.fallback_for, sources)}",
            )
        elif target is not None and not target.is_journal:
            sink.add(
                ("sources", name, "fallback_for"),
                f"{source.fallback_for!r} is not a journal source: a fallback stands in for a"
                " journal source that cannot read its journal",
            )


def _check_parsed_sources(
    rules: Mapping[str, RuleConfig | None],
    sources: Mapping[str, SourceConfig | None],
    sink: ProblemSink,
) -> None:
    """A rule with `where` or `field` needs a source that parses lines, or it never matches;
    one with `capture_fields` too, or its captures are always null (a threshold keyed by them
    never fires). A rule of every source needs one source of the config to parse: a config of
    mixed sources may give all of them such a rule (its fields read on the parsed ones)."""
    for name, rule in rules.items():
        if rule is None or not rule.reads_fields:
            continue
        scope = rule.sources if rule.sources is not None else tuple(sources)
        chosen = [sources.get(source) for source in scope]
        if any(source is None for source in chosen):
            continue  # a source with problems of its own: reported already
        if not any(source is not None and source.parse != "none" for source in chosen):
            sink.add(
                ("rules", name, _first_field_key(rule)),
                "reads fields, but none of its sources parses its lines:"
                ' give one parse = "json" or "logfmt"',
            )


def _first_field_key(rule: RuleConfig) -> str:
    if rule.where is not None:
        return "where"
    return "field" if rule.field is not None else "capture_fields"


def _check_sealing(report: ReportConfig | None, sink: ProblemSink) -> ReportConfig | None:
    """A report's compression and encryption must be usable now: the library installed, the
    key file readable and 32 bytes. Found here, they fail `check-config`, a start and a reload
    alike, instead of the first sealing hours later."""
    if report is None:
        return None
    where = ("reports", report.name)
    missing = missing_library(report.compress, report.encrypt is not None)
    if missing:
        sink.add((*where, "compress" if "zstd" in missing else "encrypt"), missing)
        return None
    if report.encrypt is not None:
        try:
            report.encrypt._key = load_key(report.encrypt.key_file)
        except KeyFileError as error:
            sink.add((*where, "encrypt", "key_file"), str(error))
            return None
    return report


def _check_references(
    name: str,
    raw: dict[str, Any],
    *,
    sources_named: Mapping[str, object],
    reports_named: Mapping[str, object],
    rules_named: Mapping[str, object],
    sink: ProblemSink,
) -> None:
    """A rule's `sources`, `report` and `carry.from` must name tables that exist (checked on the
    raw table, so a rule with other problems still gets these reported too)."""
    rule_sources = raw.get("sources")
    if isinstance(rule_sources, list):
        for index, source in enumerate(rule_sources):
            if isinstance(source, str) and source not in sources_named:
                sink.add(
                    ("rules", name, "sources", index),
                    f"no source named {source!r}{_did_you_mean(source, sources_named)}",
                )
    report = raw.get("report")
    if report is None and len(reports_named) > 1:
        sink.add(
            ("rules", name),
            f"say which report this rule writes to (report = one of {sorted(reports_named)})",
        )
    elif isinstance(report, str) and report not in reports_named:
        sink.add(
            ("rules", name, "report"),
            f"no report named {report!r}{_did_you_mean(report, reports_named)}",
        )
    carry = raw.get("carry")
    carried_from = carry.get("from") if isinstance(carry, dict) else None
    if isinstance(carried_from, list):
        for index, rule in enumerate(carried_from):
            if isinstance(rule, str) and rule not in rules_named:
                sink.add(
                    ("rules", name, "carry", "from", index),
                    f"no rule named {rule!r}{_did_you_mean(rule, rules_named)}",
                )


def _is_path_text(value: object) -> typing.TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _resolve(base: Path, value: str) -> Path:
    """Relative paths in a config are relative to the config file, not the working directory."""
    return (
        (base / Path(value).expanduser()).resolve()
        if not Path(value).is_absolute()
        else Path(value)
    )


def _resolve_glob(base: Path, pattern: str) -> str:
    pattern = os.path.expanduser(pattern)
    return (
        pattern
        if os.path.isabs(pattern)
        else os.path.normpath(os.path.join(base.resolve(), pattern))
    )


def _validate(
    model: type[_T],
    raw: object,
    where: tuple[str, ...],
    sink: ProblemSink,
    *,
    name: str | None = None,
) -> _T | None:
    """Validate one table; `name` is the table's name in its parent, given to models that keep it."""
    if not isinstance(raw, dict):
        sink.add(where, "must be a table")
        return None
    if name is not None:
        if "name" in raw:  # the name comes from the table header; a `name` key would be dropped
            sink.add((*where, "name"), f"unknown key (the name is the header's: [{where[0]}.NAME])")
        raw = raw | {"name": name}
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        errors = [
            (tuple(part for part in item["loc"] if part not in _PYDANTIC_UNION_TAGS), item)
            for item in error.errors()
        ]
        for location, item in errors:
            path = where + location
            if item["type"] == "too_short" and any(
                len(other) > len(location) and other[: len(location)] == location
                for other, _ in errors
            ):
                # pydantic counts only the items that validated: `match = [5]` would also be
                # called empty, beside the real problem at match[0]
                continue
            if item["type"] == "too_short" and item.get("ctx", {}).get("min_length") == 1:
                sink.add(path, "must not be empty")
            elif item["type"] == "extra_forbidden":
                key = str(location[-1])
                known = [k for k in _keys_at(model, location[:-1]) if k != "name"]
                sink.add(path, f"unknown key{_did_you_mean(key, known)}")
            elif item["type"] == "missing":
                sink.add(path, "is required")
            else:
                sink.add(path, _clean_message(item["msg"]))
        return None


def _keys_at(model: type[BaseModel], location: tuple[str | int, ...]) -> list[str]:
    """The keys the table at `location` inside `model` accepts (for did-you-mean), [] if unknown."""
    current: Any = model
    for part in location:
        if isinstance(part, int):  # an index into a tuple of tables: the tuple was unwrapped below
            continue
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        if not is_model or part not in current.model_fields:
            return []
        current = _table_model(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [field.alias or key for key, field in current.model_fields.items()]
    return []


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside `X`, `X | None` or `tuple[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _table_model(argument)
        if found is not None:
            return found
    return None


# pydantic inserts the union member it tried into error locations; operators never wrote those
_PYDANTIC_UNION_TAGS = {
    "dict[str,nullable[str]]",
    "literal[False]",
    "function-before[parse_size(), int]",
}


# pydantic speaks Python; the operator wrote TOML
_TOML_TERMS = {
    "should be a valid tuple": "should be an array",
    "should be a valid list": "should be an array",
    "should be a valid dictionary": "should be a table",
    "is not a valid path for <class 'pathlib.Path'>": "should be a path (a string)",
}


def _clean_message(message: str) -> str:
    message = message.removeprefix("Value error, ")
    for python, toml in _TOML_TERMS.items():
        message = message.replace(python, toml)
    return re.sub(r" or instance of \w+$", "", message)


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    import difflib  # noqa: PLC0415 - 5 ms of every start, for a config with a typo

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
