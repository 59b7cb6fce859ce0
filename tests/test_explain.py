"""`logwarden explain` end to end: the real CLI on the shipped config and a small one, as JSON and
as a person sees it in a terminal (tmux)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import write_config
from tmuxpane import Pane

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "logwarden.toml"
TIMEOUT = 60
EX_CONFIG = 78

pytestmark = pytest.mark.integration

CONFIG = """\
[daemon]
state_dir = "state"

[sources.auth]
paths = ["logs/auth.log"]
max_line_bytes = 256

[sources.other]
paths = ["logs/other.log"]

[rules.ssh-failed]
sources = ["auth"]
match = ['Failed password for %{user} from %{ip}']
exclude = ['from 10\\.0\\.']
severity = "warning"
threshold = { key = "ip", count = 3, within = "10m" }

[rules.session-closed]
match = ['session closed for user %{user}\\s']
severity = "info"

[rules.oom]
match = ['Out of memory: Killed process %{int:pid}']
severity = "error"

[reports.out]
dir = "reports"
"""

FAILED = "sshd[7]: Failed password for root from 203.0.113.9 port 22"
SSH_SHIPPED = (
    "2026-11-24T13:19:38.120512+00:00 web1 sshd[20418]: "
    "Failed password for invalid user oracle from 198.51.100.77 port 40022 ssh2"
)


def explain(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The CLI as a user runs it; str arguments as given, bytes arguments byte for byte."""
    argv = [a if isinstance(a, bytes) else str(a) for a in args]
    return subprocess.run(
        [sys.executable, "-m", "logwarden", "explain", *argv],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )


def as_json(*args: object, stdin: bytes | None = None) -> tuple[int, list[dict[str, Any]]]:
    done = explain("--json", *args, stdin=stdin)
    assert done.returncode in (0, 1), done.stderr.decode()
    return done.returncode, [orjson.loads(line) for line in done.stdout.splitlines()]


def by_rule(line: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {verdict["rule"]: verdict for verdict in line["rules"]}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "logwarden.toml", CONFIG)


def test_shipped_config_shows_the_matching_rule_and_its_captures() -> None:
    code, [line] = as_json("-c", SHIPPED, "--source", "auth", SSH_SHIPPED)
    assert code == 0
    assert line["matched"] == ["ssh-failed-password"]
    assert line["prefilter"] is True and line["valid_utf8"] is True
    verdict = by_rule(line)["ssh-failed-password"]
    assert verdict["verdict"] == "matched"
    assert verdict["captures"] == {
        "pid": "20418",
        "method": "password",
        "user": "oracle",
        "ip": "198.51.100.77",
        "port": "40022",
    }
    assert verdict["threshold"]["count"] == 1 and verdict["threshold"]["of"] == 5
    # every rule of the config has a verdict, the web rules are not for source auth
    assert len(line["rules"]) == SHIPPED.read_text().count("\n[rules.")
    assert by_rule(line)["nginx-5xx"]["verdict"] == "not-for-source"

    text = explain("-c", SHIPPED, "--source", "auth", SSH_SHIPPED)
    assert text.returncode == 0
    out = text.stdout.decode()
    assert "✔ ssh-failed-password [warning] matched" in out
    assert "pid=20418 method=password user=oracle ip=198.51.100.77 port=40022" in out
    assert "threshold: 1 of 5 within 10m for ip=198.51.100.77" in out


def test_a_line_no_rule_matches_exits_1_and_says_the_prefilter_skipped_it() -> None:
    code, [line] = as_json("-c", SHIPPED, "just a quiet line")
    assert code == 1
    assert line["matched"] == [] and line["prefilter"] is False
    assert {v["verdict"] for v in line["rules"]} == {"no-match"}
    assert all(v["prefilter"] is False and v["patterns"] == [] for v in line["rules"])

    text = explain("-c", SHIPPED, "just a quiet line").stdout.decode()
    rules = SHIPPED.read_text().count("\n[rules.")
    assert f"{rules} rules did not match (--all lists them)" in text
    listed = explain("-c", SHIPPED, "--all", "just a quiet line").stdout.decode()
    assert "· ssh-invalid-user [notice] no-match" in listed
    assert "prefilter: no hit: none of its patterns can be in the line" in listed


def test_verdicts_field_by_field(config: Path) -> None:
    vetoed = "sshd[7]: Failed password for root from 10.0.0.5 port 22"
    crlf = "pam_unix: session closed for user root\r"  # the \r is dropped, as from a file
    code, lines = as_json("-c", config, "--source", "auth", FAILED, vetoed, crlf)
    assert code == 0
    matched, veto, near = lines
    assert [line["line_no"] for line in lines] == [1, 2, 3]
    assert matched == {
        "line_no": 1,
        "line": FAILED,
        "source": "auth",
        "truncated": False,
        "valid_utf8": True,
        "prefilter": True,
        "notes": [],
        "matched": ["ssh-failed"],
        "rules": matched["rules"],
        "event_time": matched["event_time"],  # no time in the line: when it was explained
        "time_source": "arrival",
    }
    assert by_rule(matched)["ssh-failed"] == {
        "rule": "ssh-failed",
        "severity": "warning",
        "verdict": "matched",
        "applies": True,
        "would_match": False,
        "records": True,
        "prefilter": True,
        "patterns": [0],
        "excludes": [],
        "captures": {"user": "root", "ip": "203.0.113.9"},
        "fields": None,
        "threshold": {
            "key": {"ip": "203.0.113.9"},
            "count": 1,
            "of": 3,
            "within_s": 600.0,
            "alert": False,
            "alerted_before": False,
        },
        "steps": [
            {"step": "source", "ok": True, "detail": "for auth"},
            {"step": "prefilter", "ok": True, "detail": "its patterns' prefilter hits the line"},
            {
                "step": "match",
                "ok": True,
                "detail": "match[0] 'Failed password for %{user} from %{ip}': "
                "user=root ip=203.0.113.9",
            },
            {"step": "exclude", "ok": True, "detail": "no exclude found (1 pattern)"},
            {"step": "threshold", "ok": True, "detail": "1 of 3 within 10m for ip=203.0.113.9"},
        ],
    }
    assert by_rule(matched)["oom"]["verdict"] == "no-match"

    # the pattern matched, the exclude vetoed it: no captures, nothing counted
    assert veto["matched"] == []
    ssh = by_rule(veto)["ssh-failed"]
    assert (ssh["verdict"], ssh["patterns"], ssh["excludes"]) == ("vetoed", [0], [0])
    assert ssh["captures"] is None and ssh["threshold"] is None
    assert ssh["steps"][-1] == {
        "step": "exclude",
        "ok": False,
        "detail": "vetoed by exclude[0] 'from 10\\.0\\.'",
    }

    # the prefilter reads raw bytes, \r included, so `\s` finds it; the rules see the line without
    assert near["line"] == "pam_unix: session closed for user root"
    assert near["prefilter"] is True and near["matched"] == []
    closed = by_rule(near)["session-closed"]
    assert (closed["verdict"], closed["prefilter"], closed["patterns"]) == ("near-miss", True, [])
    assert "a final \\r dropped (CRLF line end), as in a file" in near["notes"]


def test_a_rule_scoped_to_another_source(config: Path) -> None:
    code, [line] = as_json("-c", config, "--source", "other", FAILED)
    assert code == 1
    ssh = by_rule(line)["ssh-failed"]
    assert ssh["verdict"] == "not-for-source"
    assert ssh["applies"] is False and ssh["would_match"] is True and ssh["captures"] is None
    assert ssh["steps"][0] == {
        "step": "source",
        "ok": False,
        "detail": "not for source other (only for: auth)",
    }
    text = explain("-c", config, "--source", "other", FAILED).stdout.decode()
    assert "- ssh-failed [warning] not-for-source" in text
    assert "match: its patterns match this line where the rule applies" in text
    # without --source every rule applies, as `scan` gives a file of no source every rule
    code, [line] = as_json("-c", config, FAILED)
    assert code == 0 and line["matched"] == ["ssh-failed"]


def test_a_threshold_builds_up_over_the_lines_in_order(config: Path) -> None:
    other = FAILED.replace("203.0.113.9", "198.51.100.1")
    _, lines = as_json("-c", config, "--source", "auth", FAILED, FAILED, other, FAILED, FAILED)
    windows = [by_rule(line)["ssh-failed"]["threshold"] for line in lines]
    assert [(w["key"], w["count"], w["alert"], w["alerted_before"]) for w in windows] == [
        ({"ip": "203.0.113.9"}, 1, False, False),
        ({"ip": "203.0.113.9"}, 2, False, False),
        ({"ip": "198.51.100.1"}, 1, False, False),
        ({"ip": "203.0.113.9"}, 3, True, False),  # the line that raises the alert
        ({"ip": "203.0.113.9"}, 3, False, True),  # quiet until its window has emptied
    ]
    text = explain("-c", config, "--source", "auth", FAILED, FAILED, FAILED).stdout.decode()
    assert "threshold: 3 of 3 within 10m for ip=203.0.113.9: this line crosses it, ALERT" in text


def test_stdin_one_line_per_line_with_invalid_utf8_and_a_cut_line(config: Path) -> None:
    long = "Out of memory: Killed process 4242 " + "x" * 400
    stdin = b"".join(
        [
            b"quiet\n",
            FAILED.encode() + b" \xff\xfe\n",  # not UTF-8
            long.encode() + b"\n",
            b"Out of memory: Killed process 17",  # a last line without newline is a line
        ]
    )
    code, lines = as_json("-c", config, "--source", "auth", "-", stdin=stdin)
    assert code == 0
    assert [line["matched"] for line in lines] == [[], ["ssh-failed"], ["oom"], ["oom"]]
    invalid = lines[1]
    assert invalid["valid_utf8"] is False and invalid["prefilter"] is None
    assert invalid["line"] == FAILED + " \ufffd\ufffd"
    assert by_rule(invalid)["ssh-failed"]["prefilter"] is None
    assert any("not valid UTF-8" in note for note in invalid["notes"])
    cut = lines[2]
    assert cut["truncated"] is True and len(cut["line"]) == 256
    assert by_rule(cut)["oom"]["captures"] == {"pid": "4242"}
    assert any("longer than max_line_bytes (256)" in note for note in cut["notes"])
    assert by_rule(lines[3])["oom"]["captures"] == {"pid": "17"}

    # an argument is taken byte for byte too
    code, [line] = as_json("-c", config, b"Out of memory: Killed process 9 \xc3")
    assert code == 0 and line["valid_utf8"] is False and line["line"].endswith("\ufffd")


def test_exit_codes_for_bad_config_and_usage(tmp_path: Path, config: Path) -> None:
    broken = write_config(tmp_path / "broken.toml", CONFIG.replace("%{user}", "%{usr}"))
    done = explain("-c", broken, FAILED)
    assert done.returncode == EX_CONFIG
    assert b"rules.ssh-failed.match[0]" in done.stderr
    done = explain("-c", config, "--source", "nope", FAILED)
    assert done.returncode == 2 and b"no source named 'nope'" in done.stderr
    assert explain("-c", config).returncode == 2  # no LINE


# ---------------------------------------------------------------- in a terminal


@pytest.fixture
def pane() -> Iterator[Pane]:
    terminal = Pane()
    yield terminal
    terminal.kill()


def test_terminal_rendering_makes_escape_sequences_harmless(
    tmp_path: Path, config: Path, pane: Pane
) -> None:
    hostile = "sshd[7]: Failed password for \x1b]0;owned\x07root\x1b[2J from 203.0.113.9 port 22"
    (tmp_path / "line").write_text(hostile)
    pane.start(
        f"{shlex.quote(sys.executable)} -m logwarden explain -c {shlex.quote(str(config))}"
        f' --source auth "$(cat {shlex.quote(str(tmp_path / "line"))})"'
        f" {shlex.quote(FAILED.replace('203.0.113.9', '10.0.0.5'))} quiet; echo EXIT=$?; sleep 60"
    )
    screen = pane.wait_for("EXIT=")
    assert "EXIT=0" in screen, screen
    lines = screen.splitlines()
    assert (
        "line 1: sshd[7]: Failed password for \\x1b]0;owned\\x07root\\x1b[2J from 203.0.113.9"
        " port 22" in lines
    )
    assert "  ✔ ssh-failed [warning] matched" in lines
    assert (
        "      match: match[0] 'Failed password for %{user} from %{ip}':"
        " user=\\x1b]0;owned\\x07root\\x1b[2J ip=203.0.113.9" in lines
    )
    assert "  ✘ ssh-failed [warning] vetoed" in lines
    assert "      exclude: vetoed by exclude[0] 'from 10\\.0\\.'" in lines
    assert "line 3: quiet" in lines
    assert "  3 rules did not match (--all lists them)" in lines
    # the sequences did nothing: the screen was not cleared before line 1, the title not set
    assert lines[0].startswith("line 1: ")
    assert "owned" not in pane.title()
    # and it is a terminal rendering: the verdicts are coloured
    coloured = pane.screen(colours=True)
    assert "\x1b[" in coloured and "\x1b]" not in coloured


def test_a_regex_engine_rule_is_not_in_the_prefilter(tmp_path: Path) -> None:
    text = CONFIG.split("[rules.ssh-failed]", maxsplit=1)[0] + (
        "[rules.look]\n"
        'engine = "regex"\n'
        "match = ['user (?P<user>\\w+)(?! from 10\\.)']\n"
        "exclude = ['admin']\n\n"
        "[rules.oom]\nmatch = ['Out of memory']\n\n"  # an RE2 rule, so there is a prefilter
        '[reports.out]\ndir = "reports"\n'
    )
    config = write_config(tmp_path / "regex.toml", text)
    code, [bob, admin] = as_json("-c", config, "user bob", "user admin")
    assert code == 0
    assert bob["prefilter"] is False and bob["matched"] == ["look"]
    assert by_rule(bob)["look"]["prefilter"] is None
    assert by_rule(bob)["look"]["captures"] == {"user": "bob"}
    assert by_rule(admin)["look"]["verdict"] == "vetoed"
    assert "only regex rules look" in bob["notes"][0]


def test_carry_shows_what_an_earlier_line_of_the_pid_lent() -> None:
    """The shipped ssh-connection lends its address to the address-less line of the same pid;
    another pid gets nothing, and says why."""
    connection = (
        "2026-11-24T13:19:30+00:00 web1 sshd[26713]: Connection from 115.249.163.77 port 51"
    )
    too_many = "2026-11-24T13:19:31+00:00 web1 sshd[PID]: Disconnecting: Too many authentication"
    too_many += " failures for root [preauth]"
    _, lines = as_json(
        "-c",
        SHIPPED,
        connection,
        too_many.replace("PID", "26713"),
        too_many.replace("PID", "26714"),
    )
    lent, other = (by_rule(line)["ssh-max-auth-attempts"]["steps"][-1] for line in lines[1:])
    feeder = by_rule(lines[0])["ssh-connection"]
    assert (feeder["verdict"], feeder["records"]) == ("matched", False)
    assert by_rule(lines[1])["ssh-max-auth-attempts"]["records"] is True
    text = explain("-c", SHIPPED, connection).stdout.decode()
    assert "ssh-connection [info] matched (feeds carry only; no record)" in text
    assert lent == {
        "step": "carry",
        "ok": True,
        "detail": "ip=115.249.163.77 from ssh-connection (pid=26713)",
    }
    assert other == {
        "step": "carry",
        "ok": None,
        "detail": "nothing to carry: no match of ssh-connection, ssh-invalid-user,"
        " ssh-failed-password with pid=26714 within 2m",
    }
