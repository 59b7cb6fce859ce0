"""Tests for logwarden.config: typed parsing, defaults, and problems placed on their lines."""

from __future__ import annotations

import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pydantic
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from logwarden import config
from logwarden.problems import ConfigError, Problem, key_path

WriteConfig = Callable[..., Path]
Found = tuple[int | None, str, str]  # (line, key path, message) of one problem

DURATION_HELP = 'use a string such as "250ms", "10s", "5m" or "1h"'
SIZE_HELP = 'use bytes or a string such as "64KiB" or "10MiB"'
SEVERITIES = "'debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert' or 'emergency'"


def problems_of(path: Path) -> list[Problem]:
    """The problems `load` raises for `path`, failing the test when it loads."""
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == "\n".join(str(problem) for problem in caught.value.problems)
    assert all(problem.file == path for problem in caught.value.problems)
    return caught.value.problems


def found(path: Path) -> list[Found]:
    """(line, key, message) of every problem, ordered by line then key so lists compare."""
    problems = [(p.line, p.key, p.message) for p in problems_of(path)]
    return sorted(problems, key=lambda item: (item[0] or 0, item[1], item[2]))


# ---------------------------------------------------------------- a valid config

FULL = r"""
[daemon]
state_dir = "state"
commit_interval = "250ms"
rescan_interval = "10m"
watcher = "polling"
read_chunk_bytes = "256KiB"
status_interval = 5

[sources.auth]
paths = ["/var/log/auth.log", "logs/**/*.log"]
exclude = ["*.gz", "*.[0-9]"]
start_at = "beginning"
max_line_bytes = "64KiB"
follow_symlinks = true

[sources.app]
paths = ["/srv/app/*.log"]

[rules.ssh-failed-password]
sources = ["auth"]
match = ['Failed password for (invalid user )?%{user} from %{ip}']
exclude = ['from 10\.0\.']
severity = "warning"
report = "security"
threshold = { key = "ip", count = 5, within = "10m" }
tests = [ { line = "sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2", expect = { user = "root", ip = "203.0.113.9" } } ]

[rules."disk full"]
match = 'No space left on device'
exclude = 'tmpfs'
engine = "regex"
match_timeout = "50ms"
severity = "critical"
report = "ops"
tests = [ { line = "all is well", expect = false } ]

[reports.security]
dir = "/var/lib/logwarden/reports/security"
format = "json"
rotate_max_bytes = "10MiB"
rotate_max_records = 100000
rotate_interval = "1h"
keep = 48
publish_on_stop = true
file_mode = "0640"

[reports.ops]
format = "ndjson"
rotate_max_bytes = 4096
rotate_interval = 90
keep = 7
publish_on_stop = false
file_mode = 0o600

[reports.archive]
dir = "out/archive"
"""  # noqa: E501 (the rule's `tests` line is DESIGN §3's, verbatim)


def test_full_config_parses_into_typed_objects(write_config: WriteConfig, tmp_path: Path) -> None:
    path = write_config(FULL)
    here = tmp_path.resolve()

    loaded, sink = config.load(path)

    assert loaded.path == path
    assert sink.problems == []
    assert loaded.daemon == config.DaemonConfig(
        state_dir=here / "state",
        commit_interval=0.25,
        rescan_interval=600.0,
        watcher="polling",
        read_chunk_bytes=256 * 1024,
        status_interval=5.0,
    )
    assert dict(loaded.sources) == {
        "auth": config.SourceConfig(
            name="auth",
            paths=("/var/log/auth.log", str(here / "logs" / "**" / "*.log")),
            exclude=("*.gz", "*.[0-9]"),
            start_at="beginning",
            max_line_bytes=65536,
            follow_symlinks=True,
        ),
        "app": config.SourceConfig(name="app", paths=("/srv/app/*.log",)),
    }
    ssh = loaded.rules["ssh-failed-password"]
    assert ssh.name == "ssh-failed-password"
    assert ssh.sources == ("auth",)
    assert ssh.match == ("Failed password for (invalid user )?%{user} from %{ip}",)
    assert ssh.exclude == (r"from 10\.0\.",)
    assert ssh.severity == "warning"
    assert ssh.report == "security"
    assert ssh.engine == "re2"
    assert ssh.match_timeout == 0.1
    assert ssh.threshold == config.ThresholdConfig(key="ip", count=5, within=600.0)
    assert ssh.tests == (
        config.RuleTest(
            line="sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2",
            expect={"user": "root", "ip": "203.0.113.9"},
        ),
    )
    disk = loaded.rules["disk full"]
    assert disk.name == "disk full"
    assert disk.sources is None  # every source
    assert disk.match == ("No space left on device",)  # one pattern may be a bare string
    assert disk.exclude == ("tmpfs",)
    assert (disk.engine, disk.match_timeout, disk.severity) == ("regex", 0.05, "critical")
    assert disk.threshold is None
    assert disk.tests == (config.RuleTest(line="all is well", expect=False),)
    assert dict(loaded.reports) == {
        "security": config.ReportConfig(
            name="security",
            dir=Path("/var/lib/logwarden/reports/security"),
            format="json",
            rotate_max_bytes=10 * 1024 * 1024,
            rotate_max_records=100000,
            rotate_interval=3600.0,
            keep=48,
            publish_on_stop=True,
            file_mode=0o640,
        ),
        "ops": config.ReportConfig(
            name="ops",
            dir=here / "state" / "reports" / "ops",  # state_dir/reports/NAME
            format="ndjson",
            rotate_max_bytes=4096,
            rotate_max_records=None,
            rotate_interval=90.0,
            keep=7,
            publish_on_stop=False,
            file_mode=0o600,
        ),
        "archive": config.ReportConfig(name="archive", dir=here / "out" / "archive"),
    }
    assert loaded.report_for(ssh) is loaded.reports["security"]
    assert loaded.report_for(disk) is loaded.reports["ops"]


def test_defaults(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]

        [rules.error]
        match = ["ERROR"]
        """)

    loaded, _ = config.load(path)

    assert loaded.daemon == config.DaemonConfig(
        state_dir=Path("/var/lib/logwarden"),
        commit_interval=0.2,
        rescan_interval=10.0,
        watcher="inotify",
        read_chunk_bytes=1024 * 1024,
        status_interval=2.0,
    )
    source = loaded.sources["app"]
    assert (source.exclude, source.start_at, source.max_line_bytes, source.follow_symlinks) == (
        (),
        "end",
        65536,
        False,
    )
    rule = loaded.rules["error"]
    assert (rule.sources, rule.exclude, rule.severity, rule.report) == (None, (), "warning", None)
    assert (rule.engine, rule.match_timeout, rule.threshold, rule.tests) == ("re2", 0.1, None, ())
    # no [reports]: one report named "default" beside the state, which every rule writes to
    assert dict(loaded.reports) == {
        "default": config.ReportConfig(
            name="default",
            dir=Path("/var/lib/logwarden/reports/default"),
            format="json",
            rotate_max_bytes=10 * 1024 * 1024,
            rotate_max_records=None,
            rotate_interval=3600.0,
            keep=48,
            publish_on_stop=True,
            file_mode=0o640,
        )
    }
    assert loaded.report_for(rule) is loaded.reports["default"]


def test_the_only_report_needs_no_naming(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.error]
        match = "ERROR"
        [reports.main]
        dir = "/srv/reports"
        """)

    loaded, _ = config.load(path)

    assert loaded.rules["error"].report is None
    assert loaded.report_for(loaded.rules["error"]).name == "main"


def test_state_directory_from_systemd(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # StateDirectory= with several entries sets a colon-separated list; the first is ours
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/systemd-state:/var/lib/other")
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.error]
        match = "ERROR"
        """)

    loaded, _ = config.load(path)

    assert loaded.daemon.state_dir == tmp_path / "systemd-state"
    assert loaded.reports["default"].dir == tmp_path / "systemd-state" / "reports" / "default"


def test_explicit_state_dir_beats_systemd(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/run/ignored")
    path = write_config("""
        [daemon]
        state_dir = "/srv/logwarden"
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.error]
        match = "ERROR"
        [reports.main]
        """)

    loaded, _ = config.load(path)

    assert loaded.daemon.state_dir == Path("/srv/logwarden")
    assert loaded.reports["main"].dir == Path("/srv/logwarden/reports/main")


def test_relative_paths_are_relative_to_the_config_file_not_the_cwd(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    etc = tmp_path / "etc"
    write_config(
        """
        [daemon]
        state_dir = "../state"
        [sources.app]
        paths = ["logs/*.log", "../var/log/**/app.log"]
        [rules.error]
        match = "ERROR"
        [reports.main]
        dir = "./reports/main/"
        """,
        directory=etc,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    here = tmp_path.resolve()

    # the config itself named by a relative path, as `-c ../etc/logwarden.toml` would
    loaded, _ = config.load(Path("../etc/logwarden.toml"))

    assert loaded.daemon.state_dir == here / "state"
    assert loaded.sources["app"].paths == (
        str(here / "etc" / "logs" / "*.log"),
        str(here / "var" / "log" / "**" / "app.log"),
    )
    assert loaded.reports["main"].dir == here / "etc" / "reports" / "main"


def test_home_is_expanded_in_dirs_and_globs(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write_config("""
        [daemon]
        state_dir = "~/state"
        [sources.app]
        paths = ["~/logs/*.log"]
        [rules.error]
        match = "ERROR"
        """)

    loaded, _ = config.load(path)

    assert loaded.daemon.state_dir == (tmp_path / "home" / "state").resolve()
    assert loaded.sources["app"].paths == (str(tmp_path / "home" / "logs" / "*.log"),)


def test_minimal_config_fixture_is_valid(minimal_config: Path, tmp_path: Path) -> None:
    loaded, _ = config.load(minimal_config)

    assert loaded.daemon.state_dir == tmp_path.resolve() / "state"
    assert loaded.sources["app"].paths == (str(tmp_path.resolve() / "logs" / "*.log"),)
    assert list(loaded.rules) == ["error"]


@pytest.mark.parametrize(
    ("written", "mode"),
    [('"0640"', 0o640), ('"640"', 0o640), ('"0o600"', 0o600), ("0o644", 0o644), ('"0000"', 0)],
)
def test_file_mode_forms(write_config: WriteConfig, written: str, mode: int) -> None:
    path = write_config(f"""
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.error]
        match = "ERROR"
        [reports.main]
        file_mode = {written}
        """)

    assert config.load(path)[0].reports["main"].file_mode == mode


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ('"0999"', "'0999'"),
        ('"rw-r-----"', "'rw-r-----'"),
        ('"06400"', "'06400'"),
        ("0o1777", "1023"),  # setuid/sticky bits are not for report files
        ("true", "True"),
        ("-1", "-1"),
    ],
)
def test_bad_file_modes(write_config: WriteConfig, written: str, shown: str) -> None:
    path = write_config(f"""
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.error]
        match = "ERROR"
        [reports.main]
        file_mode = {written}
        """)

    assert found(path) == [
        (6, "reports.main.file_mode", f'{shown} is not a file mode: use 0o640 or "0640"')
    ]


def _frozen_parts(loaded: config.Config) -> list[tuple[pydantic.BaseModel, str]]:
    rule = loaded.rules["ssh-failed-password"]
    assert rule.threshold is not None
    return [
        (loaded, "daemon"),
        (loaded.daemon, "state_dir"),
        (loaded.sources["auth"], "paths"),
        (rule, "match"),
        (rule.threshold, "count"),
        (rule.tests[0], "line"),
        (loaded.reports["security"], "dir"),
    ]


def test_every_object_is_frozen(write_config: WriteConfig) -> None:
    loaded, _ = config.load(write_config(FULL))

    for part, field in _frozen_parts(loaded):
        before = getattr(part, field)
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            setattr(part, field, None)
        assert getattr(part, field) == before
    # sequences are tuples, not lists that could be appended to
    assert isinstance(loaded.sources["auth"].paths, tuple)
    assert isinstance(loaded.rules["ssh-failed-password"].tests, tuple)


# ---------------------------------------------------------------- every problem at once


def test_every_problem_in_one_error(write_config: WriteConfig) -> None:
    path = write_config("""
        [daemon]
        comit_interval = "200ms"
        watcher = "inotfy"
        rescan_interval = "10 minutes"

        [sources.auth]
        paths = ["/var/log/auth.log"]
        exlude = ["*.gz"]
        max_line_bytes = "64KB!"

        [rules.ssh]
        sources = ["auht"]
        match = ['Failed password']
        severty = "warning"
        report = "securty"
        threshold = { key = "ip", cout = 5, within = "10m" }
        tests = [ { lien = "x" } ]

        [rules."no match"]
        severity = "urgent"
        report = "security"

        [reports.security]
        rotate_max_byte = "10MiB"
        keep = "many"

        [report.extra]
        dir = "/tmp"
        """)

    assert found(path) == [
        (2, "daemon.comit_interval", "unknown key (did you mean 'commit_interval'?)"),
        (3, "daemon.watcher", "Input should be 'inotify' or 'polling'"),
        (4, "daemon.rescan_interval", f"'10 minutes' is not a duration: {DURATION_HELP}"),
        (8, "sources.auth.exlude", "unknown key (did you mean 'exclude'?)"),
        (9, "sources.auth.max_line_bytes", f"'64KB!' is not a size: {SIZE_HELP}"),
        (12, "rules.ssh.sources[0]", "no source named 'auht' (did you mean 'auth'?)"),
        (14, "rules.ssh.severty", "unknown key (did you mean 'severity'?)"),
        (15, "rules.ssh.report", "no report named 'securty' (did you mean 'security'?)"),
        (16, "rules.ssh.threshold.count", "is required"),
        (16, "rules.ssh.threshold.cout", "unknown key (did you mean 'count'?)"),
        (17, "rules.ssh.tests[0].lien", "unknown key (did you mean 'line'?)"),
        (17, "rules.ssh.tests[0].line", "is required"),
        (19, "rules.no match.match", "is required"),
        (20, "rules.no match.severity", f"Input should be {SEVERITIES}"),
        (24, "reports.security.rotate_max_byte", "unknown key (did you mean 'rotate_max_bytes'?)"),
        (25, "reports.security.keep", "Input should be a valid integer"),
        (27, "report", "unknown table (did you mean 'reports'?)"),
    ]


def test_error_text_is_one_line_per_problem(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.error]
        match = "ERROR"
        severity = "loud"
        report = "mian"
        [reports.main]
        """)

    with pytest.raises(ConfigError) as caught:
        config.load(path)

    assert str(caught.value).splitlines() == [
        f"{path}:5: rules.error.severity: Input should be {SEVERITIES}",
        f"{path}:6: rules.error.report: no report named 'mian' (did you mean 'main'?)",
    ]


def test_unknown_keys_without_a_close_match(write_config: WriteConfig) -> None:
    path = write_config("""
        colour = "red"
        [daemon]
        zzz = 1
        [sources.app]
        paths = ["/srv/app.log"]
        name = "other"
        [rules.error]
        match = "ERROR"
        threshold = { key = "ip", count = 2, within = "1m", qqq = true }
        """)

    assert found(path) == [
        (1, "colour", "unknown key"),
        (3, "daemon.zzz", "unknown key"),
        # the name is the table header's; a `name` key would otherwise be silently dropped
        (6, "sources.app.name", "unknown key (the name is the header's: [sources.NAME])"),
        (9, "rules.error.threshold.qqq", "unknown key"),
    ]


def test_wrong_types(write_config: WriteConfig) -> None:
    path = write_config("""
        [daemon]
        state_dir = 5
        [sources.auth]
        paths = "/var/log/auth.log"
        follow_symlinks = "yes"
        [sources.other]
        oops = 1
        [sources.broken]
        [rules.x]
        match = [5]
        sources = ["auth", 5]
        threshold = 5
        tests = "a line"
        report = 5
        [rules.y]
        match = "a"
        threshold = { key = "ip", count = 4.0, within = true }
        tests = [ { line = "y", expect = "root" }, { line = "z", expect = { user = 5 } } ]
        [reports.a]
        publish_on_stop = 1
        rotate_max_records = "100"
        keep = true
        dir = 5
        """)

    assert found(path) == [
        (2, "daemon.state_dir", "Input should be a path (a string)"),
        (4, "sources.auth.paths", "Input should be an array"),
        (5, "sources.auth.follow_symlinks", "Input should be a valid boolean"),
        (
            6,
            "sources.other.paths",
            "is required (or `journal = { matches = [...] }` to read the systemd journal)",
        ),
        (7, "sources.other.oops", "unknown key"),
        (
            8,
            "sources.broken.paths",
            "is required (or `journal = { matches = [...] }` to read the systemd journal)",
        ),
        (10, "rules.x.match[0]", "Input should be a valid string"),
        (11, "rules.x.sources[1]", "Input should be a valid string"),
        (12, "rules.x.threshold", "Input should be a table"),
        (13, "rules.x.tests", "Input should be an array"),
        (14, "rules.x.report", "Input should be a valid string"),
        (17, "rules.y.threshold.count", "Input should be a valid integer"),
        (17, "rules.y.threshold.within", 'expected a duration such as "10s"'),
        (
            18,
            "rules.y.tests[0].expect",
            "must be a table of expected captures, or false when the line must not match",
        ),
        (18, "rules.y.tests[1].expect", "the expected value of 'user' must be a string"),
        (20, "reports.a.publish_on_stop", "Input should be a valid boolean"),
        (21, "reports.a.rotate_max_records", "Input should be a valid integer"),
        (22, "reports.a.keep", "Input should be a valid integer"),
        (23, "reports.a.dir", "Input should be a path (a string)"),
    ]


def test_tables_of_the_wrong_shape(write_config: WriteConfig) -> None:
    path = write_config("""
        daemon = "fast"
        sources = ["/var/log/auth.log"]
        reports = 3
        [rules.x]
        match = "a"
        [rules]
        y = "b"
        """)

    # each wrong shape is reported, and the rest of the file is still checked
    assert found(path) == [
        (1, "daemon", "must be a table, e.g. [daemon]"),
        (2, "sources", "must be a table, e.g. [sources.NAME]"),
        (3, "reports", "must be a table, e.g. [reports.NAME]"),
        (7, "rules.y", "must be a table"),
    ]


def test_bad_values(write_config: WriteConfig) -> None:
    path = write_config("""
        [daemon]
        commit_interval = "0s"
        rescan_interval = -1
        status_interval = nan
        read_chunk_bytes = "1KiB"
        [sources.app]
        paths = ["/srv/app.log", " "]
        start_at = "middle"
        max_line_bytes = 100
        [rules.x]
        match = []
        engine = "pcre"
        match_timeout = "0ms"
        threshold = { key = "ip", count = 0, within = "0s" }
        [reports.r]
        format = "xml"
        rotate_max_bytes = -1
        rotate_interval = "1 hour"
        keep = 0
        rotate_max_records = -1
        [reports.s]
        dir = ""
        """)

    assert found(path) == [
        (2, "daemon.commit_interval", "must be greater than zero"),
        (3, "daemon.rescan_interval", "a duration cannot be negative"),
        (4, "daemon.status_interval", "nan is not a duration"),
        (5, "daemon.read_chunk_bytes", "must be between 4KiB and 64MiB"),
        (7, "sources.app.paths", "a path cannot be empty"),
        (8, "sources.app.start_at", "Input should be 'end' or 'beginning'"),
        (9, "sources.app.max_line_bytes", "must be between 256 bytes and 16MiB"),
        (10, "rules.x", "say which report this rule writes to (report = one of ['r', 's'])"),
        (11, "rules.x.match", "must not be empty"),
        (12, "rules.x.engine", "Input should be 're2' or 'regex'"),
        (13, "rules.x.match_timeout", "must be greater than zero"),
        (14, "rules.x.threshold.count", "Input should be greater than or equal to 1"),
        (14, "rules.x.threshold.within", "must be greater than zero"),
        (16, "reports.r.format", "Input should be 'json' or 'ndjson'"),
        (17, "reports.r.rotate_max_bytes", "a size cannot be negative"),
        (18, "reports.r.rotate_interval", f"'1 hour' is not a duration: {DURATION_HELP}"),
        (19, "reports.r.keep", "Input should be greater than or equal to 1"),
        (20, "reports.r.rotate_max_records", "Input should be greater than or equal to 0"),
        (22, "reports.s.dir", "must not be empty"),
    ]


def test_references_are_checked_even_when_the_rule_has_other_problems(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        [sources.nginx-access]
        paths = ["/var/log/nginx/access.log"]
        [sources.auth]
        paths = ["/var/log/auth.log"]

        [rules.broken]
        sources = ["nginx-acess", "auth", "kernel"]
        severity = "bogus"
        report = "secrity"
        threshold = { key = "ip" }

        [reports.security]
        dir = "/srv/reports/security"
        """)

    assert found(path) == [
        (6, "rules.broken.match", "is required"),
        (
            7,
            "rules.broken.sources[0]",
            "no source named 'nginx-acess' (did you mean 'nginx-access'?)",
        ),
        (7, "rules.broken.sources[2]", "no source named 'kernel'"),
        (8, "rules.broken.severity", f"Input should be {SEVERITIES}"),
        (9, "rules.broken.report", "no report named 'secrity' (did you mean 'security'?)"),
        (10, "rules.broken.threshold.count", "is required"),
        (10, "rules.broken.threshold.within", "is required"),
    ]


def test_a_rule_may_name_a_source_that_has_problems_of_its_own(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.auth]
        paths = []
        [rules.x]
        sources = ["auth"]
        match = "a"
        """)

    # the source's problem is reported once; the reference to it is not a second problem
    assert found(path) == [(2, "sources.auth.paths", "must not be empty")]


def test_report_omitted_with_several_reports(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]

        [rules.named]
        match = "a"
        report = "b"

        [rules.unnamed]
        match = "b"

        [reports.b]
        [reports.a]
        """)

    assert found(path) == [
        (8, "rules.unnamed", "say which report this rule writes to (report = one of ['a', 'b'])"),
    ]


def test_a_report_named_when_there_is_no_reports_table(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.x]
        match = "a"
        report = "security"
        """)

    assert found(path) == [(5, "rules.x.report", "no report named 'security'")]


def test_empty_sources_and_rules_when_absent(write_config: WriteConfig) -> None:
    path = write_config("""
        [daemon]
        watcher = "polling"
        """)

    assert found(path) == [
        (None, "rules", "at least one rule is needed, e.g. [rules.NAME] with match = [...]"),
        (
            None,
            "sources",
            "at least one source is needed, e.g. [sources.auth] with paths = [...]",
        ),
    ]


def test_empty_sources_and_rules_tables(write_config: WriteConfig) -> None:
    path = write_config("""
        [daemon]

        [sources]

        [rules]  # to do
        """)

    assert found(path) == [
        (3, "sources", "at least one source is needed, e.g. [sources.auth] with paths = [...]"),
        (5, "rules", "at least one rule is needed, e.g. [rules.NAME] with match = [...]"),
    ]


def test_an_empty_file(write_config: WriteConfig) -> None:
    path = write_config("")

    assert found(path) == [
        (None, "rules", "at least one rule is needed, e.g. [rules.NAME] with match = [...]"),
        (
            None,
            "sources",
            "at least one source is needed, e.g. [sources.auth] with paths = [...]",
        ),
    ]


def test_two_reports_sharing_a_dir(write_config: WriteConfig, tmp_path: Path) -> None:
    here = tmp_path.resolve()
    path = write_config(f"""
        [daemon]
        state_dir = "/srv/state"
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.x]
        match = "a"
        report = "one"

        [reports.one]
        dir = "/srv/reports"
        [reports.two]
        dir = "/srv/reports/"

        [reports.three]
        dir = "{here}/out"
        [reports.four]
        dir = "out"

        [reports.five]
        [reports.six]
        dir = "/srv/state/reports/five"
        """)

    assert found(path) == [
        (12, "reports.two.dir", "already used by report 'one'; each report needs its own dir"),
        (17, "reports.four.dir", "already used by report 'three'; each report needs its own dir"),
        (21, "reports.six.dir", "already used by report 'five'; each report needs its own dir"),
    ]


def test_default_report_dir_follows_a_state_dir_that_has_problems_nearby(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        [daemon]
        state_dir = "/srv/state"
        watcher = "fanotify"
        [sources.app]
        paths = ["/srv/app.log"]
        [rules.x]
        match = "a"
        report = "a"
        [reports.a]
        [reports.b]
        dir = "/srv/state/reports/a"
        """)

    # [daemon] is invalid, but its state_dir still decides where report `a` would go
    assert found(path) == [
        (3, "daemon.watcher", "Input should be 'inotify' or 'polling'"),
        (11, "reports.b.dir", "already used by report 'a'; each report needs its own dir"),
    ]


def test_toml_syntax_error_names_its_line(write_config: WriteConfig) -> None:
    path = write_config("""
        [daemon]
        state_dir = "/srv/state"
        watcher = inotify
        """)

    problems = problems_of(path)

    assert [(p.line, p.key) for p in problems] == [(3, "")]
    assert problems[0].message.startswith("not valid TOML: Invalid value (at line 3")
    assert str(problems[0]).startswith(f"{path}:3: not valid TOML: ")


def test_duplicate_table_is_a_syntax_error(write_config: WriteConfig) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/a"]

        [sources.app]
        paths = ["/b"]
        """)

    assert [(p.line, p.key) for p in problems_of(path)] == [(4, "")]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    problems = problems_of(path)

    assert [(p.line, p.key) for p in problems] == [(None, "")]
    assert problems[0].message.startswith("cannot read the config: [Errno 2] No such file")
    assert str(problems[0]).startswith(f"{path}: cannot read the config: ")


def test_a_directory_is_not_a_config(tmp_path: Path) -> None:
    problems = problems_of(tmp_path)

    assert [(p.line, p.key) for p in problems] == [(None, "")]
    assert problems[0].message.startswith("cannot read the config: [Errno 21] Is a directory")


def test_unreadable_file(write_config: WriteConfig) -> None:
    """Root reads files whatever their mode, so the load runs in a forked child that drops to
    an unprivileged uid first (no exec: the venv need not be reachable by that user)."""
    path = write_config("[daemon]\n")
    path.chmod(0)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        if os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
        message = "\n".join(f"{p.line}|{p.key}|{p.message}" for p in problems_of(path))
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        reported = reader.read().decode()
    assert os.waitpid(child, 0)[1] == 0
    line, key, message = reported.split("|", 2)
    assert (line, key) == ("None", "")
    assert message.startswith("cannot read the config: [Errno 13] Permission denied")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[daemon]\nstate_dir = "/srv/\u00e9t\u00e9"\n'.encode("latin-1"))

    problems = problems_of(path)

    assert [(p.line, p.key) for p in problems] == [(None, "")]
    assert problems[0].message.startswith(
        "cannot read the config: 'utf-8' codec can't decode byte 0xe9 in position 27"
    )


# ---------------------------------------------------------------- lines


def test_lines_in_quoted_tables_and_inline_tables(write_config: WriteConfig) -> None:
    path = write_config("""
        # a comment on line 1
        [sources.app]
        paths = ["/srv/app.log"]

        [rules."quoted name"]
        match = "a"
        severity = "high"
        threshold = { key = "ip", count = 2, within = "soon" }

        [rules.'literal.name']   # dots inside quotes do not split the name
        match = "b"
        engine = "pcre"

        [ rules . "spaced" ]
        match = "c"
        tests = [
          { line = "ok" },
          { line = 5 },
        ]

        [rules.sub]
        match = "d"
        [rules.sub.threshold]
        key = "ip"
        count = 2
        within = "later"

        [rules.dotted]
        match = "e"
        threshold.key = "ip"
        threshold.count = -1
        threshold.within = "1m"
        """)

    assert found(path) == [
        (7, "rules.quoted name.severity", f"Input should be {SEVERITIES}"),
        (8, "rules.quoted name.threshold.within", f"'soon' is not a duration: {DURATION_HELP}"),
        (12, "rules.literal.name.engine", "Input should be 're2' or 'regex'"),
        # a multi-line array: its key's line
        (16, "rules.spaced.tests[1].line", "Input should be a valid string"),
        (26, "rules.sub.threshold.within", f"'later' is not a duration: {DURATION_HELP}"),
        (31, "rules.dotted.threshold.count", "Input should be greater than or equal to 1"),
    ]


def test_lines_are_not_fooled_by_multiline_strings(write_config: WriteConfig) -> None:
    path = write_config('''
        [sources.app]
        paths = ["/srv/app.log"]

        [rules.doc]
        match = """
        [sources.app]
        severity = "fake"
        """
        exclude = [
          \'\'\'
        severity = "also fake"
        \'\'\',
        ]
        severity = "bogus"
        ''')

    assert found(path) == [(14, "rules.doc.severity", f"Input should be {SEVERITIES}")]


def test_a_problem_on_a_table_without_its_own_line_uses_the_enclosing_one(
    write_config: WriteConfig,
) -> None:
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]

        [rules.x.threshold]
        key = "ip"
        count = 2
        within = "1m"
        """)

    # [rules.x] is never written; its own header line is that of [rules.x.threshold]
    assert found(path) == [(4, "rules.x.match", "is required")]


def test_sink_places_later_problems(write_config: WriteConfig) -> None:
    """The rules module reports bad patterns through the sink `load` returns."""
    path = write_config("""
        [sources.app]
        paths = ["/srv/app.log"]

        [rules.x]
        match = [
          "ok",
          "(unclosed",
        ]
        """)
    _, sink = config.load(path)

    sink.add(("rules", "x", "match", 1), "missing ): (unclosed")
    sink.add(("daemon", "state_dir"), "not writable")  # no [daemon] in the file: no line
    with pytest.raises(ConfigError) as caught:
        sink.raise_if_any()

    assert caught.value.problems == [
        Problem(path, 5, "rules.x.match[1]", "missing ): (unclosed"),
        Problem(path, None, "daemon.state_dir", "not writable"),
    ]
    assert str(caught.value).splitlines() == [
        f"{path}:5: rules.x.match[1]: missing ): (unclosed",
        f"{path}: daemon.state_dir: not writable",
    ]


def test_key_path_rendering() -> None:
    assert key_path(()) == ""
    assert key_path(("daemon",)) == "daemon"
    assert key_path(("rules", "ssh", "match", 0)) == "rules.ssh.match[0]"
    assert key_path(("rules", "x", "tests", 2, "expect", "ip")) == "rules.x.tests[2].expect.ip"


# ---------------------------------------------------------------- sizes and durations


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (65536, 65536),
        ("65536", 65536),
        ("64KiB", 65536),
        ("64kib", 65536),
        (" 64 KiB ", 65536),
        ("10MiB", 10 * 1024**2),
        ("1GiB", 1024**3),
        ("2TiB", 2 * 1024**4),
        ("1.5KiB", 1536),
        ("0.5MiB", 512 * 1024),
        ("64k", 64_000),
        ("64KB", 64_000),
        ("3M", 3_000_000),
        ("1GB", 10**9),
        ("100b", 100),
        ("9007199254740993", 9007199254740993),  # beyond a float's exact integers
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert config.parse_size(text) == size
    assert type(config.parse_size(text)) is int


@pytest.mark.parametrize(
    "text", ["", "KiB", "-1", "64 KiBs", "64XB", "1e3", "0x10", "1,024", "\u0663KiB", "64KiB64"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a size: use bytes or a string such as"):
        config.parse_size(text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "a size cannot be negative"),
        (True, 'expected a size such as 65536 or "64KiB"'),
        (1.5, "1.5 is not a size"),
        (None, "None is not a size"),
    ],
)
def test_parse_size_rejects_values(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_size(value)
    assert str(caught.value).startswith(message)


@given(n=st.integers(min_value=0, max_value=2**64))
@example(n=2**53 + 1)
def test_size_units_round_trip(n: int) -> None:
    assert config.parse_size(n) == n
    assert config.parse_size(str(n)) == n
    assert config.parse_size(f"{n}KiB") == n * 1024
    assert config.parse_size(f"{n}kb") == n * 1000
    assert config.parse_size(f"{n}MiB") == n * 1024**2
    assert config.parse_size(f"{n} GiB") == n * 1024**3


@given(
    whole=st.integers(min_value=0, max_value=10**6), tenths=st.integers(min_value=0, max_value=9)
)
def test_fractional_sizes_truncate_to_whole_bytes(whole: int, tenths: int) -> None:
    assert config.parse_size(f"{whole}.{tenths}KiB") == (whole * 10 + tenths) * 1024 // 10


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (10, 10.0),
        (2.5, 2.5),
        ("250ms", 0.25),
        ("9ms", 0.009),
        ("10s", 10.0),
        ("1.5s", 1.5),
        (" 10 s ", 10.0),
        ("5m", 300.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("0.5h", 1800.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert config.parse_duration(text) == seconds
    assert type(config.parse_duration(text)) is float


@pytest.mark.parametrize(
    "text", ["", "10", "s", "-1s", "10S", "10 sec", "1h30m", "1e3s", "10us", "\u0663s", "5m5"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration: use a string such as"):
        config.parse_duration(text)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.5, "a duration cannot be negative"),
        (False, 'expected a duration such as "10s"'),
        (float("nan"), "nan is not a duration"),
        (float("inf"), "inf is not a duration"),
        (None, "None is not a duration"),
    ],
)
def test_parse_duration_rejects_values(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        config.parse_duration(value)
    assert str(caught.value).startswith(message)


@given(n=st.integers(min_value=0, max_value=10**12))
@example(n=9)
def test_duration_units_round_trip(n: int) -> None:
    assert config.parse_duration(f"{n}ms") == n / 1000  # correctly rounded, as 9 / 1000 is
    assert config.parse_duration(f"{n}s") == n
    assert config.parse_duration(f"{n}m") == n * 60
    assert config.parse_duration(f"{n}h") == n * 3600
    assert config.parse_duration(f"{n}d") == n * 86400
    assert config.parse_duration(n) == n


@given(seconds=st.integers(min_value=0, max_value=10**9), millis=st.integers(0, 999))
def test_decimal_seconds_equal_milliseconds(seconds: int, millis: int) -> None:
    decimal = config.parse_duration(f"{seconds}.{millis:03d}s")
    assert decimal == config.parse_duration(f"{seconds * 1000 + millis}ms")
    assert decimal == float(Fraction(seconds * 1000 + millis, 1000))


# ---------------------------------------------------------------- where the config is


def test_default_config_path_is_etc() -> None:
    assert config.default_config_path() == Path("/etc/logwarden/logwarden.toml")


def test_default_config_path_from_logwarden_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGWARDEN_CONFIG", "/srv/lw/custom.toml")
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", "/etc/from-systemd")

    assert config.default_config_path() == Path("/srv/lw/custom.toml")


def test_default_config_path_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    # ConfigurationDirectory= with several entries: the first is ours
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", "/etc/logwarden-a:/etc/logwarden-b")

    assert config.default_config_path() == Path("/etc/logwarden-a/logwarden.toml")


def test_empty_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGWARDEN_CONFIG", "")
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", "")

    assert config.default_config_path() == Path("/etc/logwarden/logwarden.toml")


def test_ex_config_is_78() -> None:
    assert config.EX_CONFIG == 78


def test_zero_turns_a_rotation_limit_off(write_config: WriteConfig) -> None:
    path = write_config(
        """
        [sources.s]
        paths = ["/var/log/x.log"]
        [rules.r]
        match = ["x"]
        [reports.out]
        dir = "/tmp/out"
        rotate_max_bytes = 0
        rotate_max_records = 0
        rotate_interval = "0s"
        """
    )
    loaded, _ = config.load(path)
    report = loaded.reports["out"]
    assert (report.rotate_max_bytes, report.rotate_max_records, report.rotate_interval) == (
        None,
        None,
        None,
    )
