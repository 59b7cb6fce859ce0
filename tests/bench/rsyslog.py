"""rsyslog as the live-CPU benchmark's yardstick: its config and `rsyslogd -n` as a child.

The config (written into the benchmark's work dir, nothing of the host's is read): imfile in
inotify mode follows the one log file from its beginning, a ruleset runs bench.toml's five rules
as POSIX EREs with `re_match`, fills the same named captures with `re_extract`, and writes one
JSON line per match (rule, time, the line, the file's name and offset, the captures) to a file
through omfile. No network or socket module is loaded (no imuxsock, imklog, imudp, imtcp);
rsyslogd's own messages go to a file in the work dir (processInternalMessages), not to the host's
syslog. The daemon is started by the bench (never installed by it: `apt-get install rsyslog`)
and stopped by its PID: SIGTERM, a bounded wait, SIGKILL, also when the bench is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

STOP_TIMEOUT = 30.0


class Failed(Exception):
    """rsyslog could not be configured, started or stopped."""


def find() -> str | None:
    """The rsyslogd binary, or None when rsyslog is not installed (root's PATH has /usr/sbin,
    another user's may not)."""
    return shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")


def posix_ere(pattern: str) -> tuple[str, dict[str, int]]:
    """A POSIX ERE written with Python-style named groups `(?P<name>...)`: the ERE without the
    names, and each name's submatch number (every `(` outside a bracket expression opens one)."""
    out: list[str] = []
    names: dict[str, int] = {}
    groups = 0
    index = 0
    bracket = False
    while index < len(pattern):
        char = pattern[index]
        if bracket:
            if pattern.startswith("[:", index):  # a character class such as [:space:]
                end = pattern.index(":]", index + 2) + 2
                out.append(pattern[index:end])
                index = end
                continue
            if char == "]":
                bracket = False
        elif char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        elif char == "[":
            bracket = True
            out.append(char)
            index += 1
            # a `]` right after `[` or `[^` is a member, not the end
            for prefix in ("^", "]"):
                if pattern.startswith(prefix, index):
                    out.append(prefix)
                    index += 1
            continue
        elif char == "(":
            groups += 1
            if pattern.startswith("(?P<", index):
                end = pattern.index(">", index)
                names[pattern[index + 4 : end]] = groups
                out.append("(")
                index = end + 1
                continue
        out.append(char)
        index += 1
    if bracket:
        raise ValueError(f"unterminated bracket expression in {pattern!r}")
    return "".join(out), names


def _string(value: str | Path) -> str:
    """A RainerScript string literal for an expression (single quotes; backslash escapes are
    processed)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _param(value: str | Path) -> str:
    """A parameter value of a config object (double quotes only)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config(work: Path, log: Path, output: Path, rules: Mapping[str, str]) -> str:
    """rsyslog.conf for the benchmark: `rules` maps each rule to its ERE with named groups."""
    blocks = []
    for rule, pattern in rules.items():
        ere, captures = posix_ere(pattern)
        sets = "".join(
            f"    set $!captures!{name} = re_extract($msg, {_string(ere)}, 0, {number}, '');\n"
            for name, number in captures.items()
        )
        blocks.append(
            f"  if re_match($msg, {_string(ere)}) then {{\n"
            "    unset $!captures;\n"
            f"    set $!rule = {_string(rule)};\n"
            "    set $!time = exec_template('lw_time');\n"
            "    set $!line = $msg;\n"
            f"{sets}"
            "    call lw_out\n"
            "  }\n"
        )
    return (
        "# written by tests/bench (live CPU): rsyslog on the same load as logwarden\n"
        f'global(workDirectory={_param(work)} processInternalMessages="on")\n'
        'module(load="imfile" mode="inotify")\n'
        'template(name="lw_time" type="list") {\n'
        '  property(name="timegenerated" dateFormat="rfc3339")\n'
        "}\n"
        "# the whole local tree, one object a line: metadata (filename, fileoffset), rule, time,\n"
        "# line, captures\n"
        'template(name="lw_json" type="string" string="%$!%\\n")\n'
        "# one omfile action (one open file), called for each rule that matches\n"
        'ruleset(name="lw_out") {\n'
        f'  action(type="omfile" file={_param(output)} template="lw_json")\n'
        "}\n"
        'ruleset(name="lw") {\n' + "".join(blocks) + "}\n"
        f'input(type="imfile" File={_param(log)} Tag="live" ruleset="lw"\n'
        '      addMetadata="on" freshStartTail="off")\n'
        "# rsyslogd's own messages (processInternalMessages): into the work dir, not the host's log\n"
        f'*.* action(type="omfile" file={_param(work / "rsyslogd.log")})\n'
    )


class RsyslogRun:
    """`rsyslogd -n -f CONFIG -i PIDFILE` as a child (no fork: its PID is the child's); always
    stopped by PID."""

    def __init__(self, binary: str, config_path: Path, work: Path) -> None:
        self.binary = binary
        self.config_path = config_path
        self.work = work
        self.log_path = work / "rsyslogd.out"  # its stdout and stderr
        self.internal_log = work / "rsyslogd.log"  # its own messages, through the config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> RsyslogRun:
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()

    def check(self) -> None:
        """`rsyslogd -N1`: the config validates."""
        result = subprocess.run(
            [self.binary, "-N1", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise Failed(f"rsyslogd -N1 refused {self.config_path}: {result.stdout}{result.stderr}")

    def start(self, timeout: float = 30.0) -> RsyslogRun:
        """Start it and wait (bounded) for its start message: the input is set up by then."""
        self.internal_log.unlink(missing_ok=True)
        command = [
            self.binary,
            "-n",
            "-f",
            str(self.config_path),
            "-i",
            str(self.work / "rsyslogd.pid"),
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # a ^C to the bench does not reach it; we stop it
            )
        deadline = time.monotonic() + timeout
        while b"] start" not in self._read(self.internal_log):
            if not self.running():
                raise Failed(f"rsyslogd exited early ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() >= deadline:
                raise Failed(f"rsyslogd did not log its start within {timeout:.0f}s")
            time.sleep(0.01)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, a bounded wait; its exit code."""
        assert self.process is not None
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failed(f"rsyslogd did not stop within {timeout:.0f}s of SIGTERM") from None

    def kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""

    def tail(self) -> str:
        data = self._read(self.log_path) + self._read(self.internal_log)
        return data.decode(errors="replace")[-4000:] or "(no output)"
