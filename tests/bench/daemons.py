"""The daemon benchmarks of `make bench`: catch-up, live latency, many idle files, live CPU.

Each one runs `logwarden run` as a child process in its own scratch directory (under
tests/bench/corpus/out/, made fresh every run), with the rules of bench.toml copied verbatim, and
stops it by PID: SIGTERM, a bounded wait, then SIGKILL. Every wait is bounded; a daemon that exits
early, misses a deadline or publishes a wrong set of matches is a failed benchmark, not a number.
Live CPU runs rsyslogd too (rsyslog.py), when it is installed, on the same load in the same run.

The daemon is started through a small probe (a fresh Python that forks and execs it, like run.py's
PROBE) so that wait4 reports the daemon's own peak RSS over its whole life, drain included, and
so that the moment of the fork is known on the monotonic clock every process shares.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import corpus as corpus_module  # a sibling script: run.py puts this directory on sys.path
import orjson
import rsyslog  # a sibling script too

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "bench.toml"
LOGWARDEN = [sys.executable, "-m", "logwarden"]
STOP_TIMEOUT = 120.0  # SIGTERM → exit, drain and publish included
CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY = str(Path(sys.executable).with_name("py-spy"))
REPORT_INDEX = "index.json"  # the report dir's index (report_index.py), not a report


@dataclass
class Figure:
    """One line of the daemon table: a measured figure and, when the issue sets one, its target."""

    benchmark: str
    name: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: no target


@dataclass
class TableRow:
    """A contender for run.py's main table (same columns as the scan contenders)."""

    name: str
    wall: float  # seconds
    peak_rss: int  # bytes
    counts: dict[str, int]
    note: str = ""
    rule_set: str = "bench.toml"  # whose rules it ran: its ratio divides by that set's grep


@dataclass
class Outcome:
    """What a daemon benchmark hands back: main-table rows, figures, and problems."""

    rows: list[TableRow] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # profiles, when --profile asked for them


def profile_path(ctx: Any, work: Path) -> Path | None:
    return work / "profile.txt" if getattr(ctx.args, "profile", False) else None


def add_profile(outcome: Outcome, path: Path | None) -> None:
    if path is not None and path.exists():
        outcome.notes.append(profile_summary(path))


class BenchmarkFailed(Exception):
    """The benchmark could not produce an honest figure (timeout, early exit, wrong output)."""


# ---------------------------------------------------------------- helpers


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise BenchmarkFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def bench_rules(config: Path = CONFIG) -> str:
    """The [rules.*] tables of bench.toml (or of plain.toml, for catch-up), verbatim: every daemon
    benchmark runs the same five rules."""
    text = config.read_text()
    return text[text.index("[rules.") : text.index("[reports.")].rstrip() + "\n"


def write_config(path: Path, daemon: str, sources: str, report: str, rules: Path = CONFIG) -> Path:
    """A config of these [daemon] and [sources.*] tables, the rules of `rules` (bench.toml's by
    default), and this report."""
    head = "\n".join(textwrap.dedent(part).strip() + "\n" for part in (daemon, sources))
    path.write_text(f"{head}\n{bench_rules(rules)}\n{textwrap.dedent(report).strip()}\n")
    check = subprocess.run(
        [*LOGWARDEN, "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check.returncode != 0:
        raise BenchmarkFailed(f"config {path} refused: {check.stdout}{check.stderr}")
    return path


def live_config(work: Path, log: Path, report_dir: Path, report_settings: str = "") -> Path:
    """The live benchmarks' config: one file followed from its start, one report `live`."""
    return write_config(
        work / "logwarden.toml",
        f"[daemon]\nstate_dir = {toml_string(work / 'state')}\n",
        f'[sources.live]\npaths = [{toml_string(log)}]\nstart_at = "beginning"\n',
        f"[reports.live]\ndir = {toml_string(report_dir)}\n{report_settings}\n",
    )


def toml_string(value: Path | str) -> str:
    return orjson.dumps(str(value)).decode()  # a JSON string is a valid TOML basic string here


def read_reports(
    report_dir: Path, contents: dict[str, bytes | None] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Every published report's records by file name; each report checked to be whole JSON.
    From the dir, or from `contents` (name → bytes, as DirWatch kept them)."""
    if contents is None:
        contents = {
            entry.name: Path(entry.path).read_bytes()
            for entry in os.scandir(report_dir)
            if not entry.name.startswith(".") and entry.name != REPORT_INDEX
        }
    found: dict[str, list[dict[str, Any]]] = {}
    for name, data in sorted(contents.items()):
        if not name.endswith(".json"):
            raise BenchmarkFailed(f"unexpected file in a report dir: {report_dir / name}")
        if data is None:
            raise BenchmarkFailed(f"{report_dir / name} was deleted before it could be read")
        document = orjson.loads(data)
        found[name] = document["records"]
    return found


def profile_summary(path: Path, top: int = 12) -> str:
    """The functions where a py-spy raw profile spent its samples: self and inclusive shares."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the process or thread
        total += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return f"{path}: no samples"
    lines = [
        f"{path}: {total:,} samples at 250 Hz of the threads py-spy judged busy (some waits slip "
        "through: _worker, Condition.wait, select; C code such as RE2 or fsync is charged to the "
        "Python line that called it)",
        "  self%  incl%  frame",
    ]
    for frame, samples in own.most_common(top):
        lines.append(
            f"  {100 * samples / total:5.1f}  {100 * inclusive[frame] / total:5.1f}  {frame}"
        )
    return "\n".join(lines)


def _stat_cpu(path: str) -> float:
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def process_cpu(pid: int) -> float:
    """utime + stime of a process so far, every thread's, ended ones included: /proc/PID/stat."""
    return _stat_cpu(f"/proc/{pid}/stat")


@dataclass(frozen=True)
class Task:
    """One thread of a process, from /proc/PID/task/TID/{comm,schedstat,status}."""

    name: str  # comm
    cpu: float  # seconds on a CPU so far: schedstat's (ns), else stat's utime + stime (ticks)
    switches: int  # voluntary + nonvoluntary context switches so far


def tasks(pid: int) -> dict[int, Task]:
    """Every live thread of a process by TID (a thread that ends meanwhile is left out)."""
    found = {}
    with os.scandir(f"/proc/{pid}/task") as entries:
        for entry in entries:
            try:
                name = Path(entry.path, "comm").read_text().rstrip("\n")
                try:
                    cpu = int(Path(entry.path, "schedstat").read_text().split()[0]) / 1e9
                except FileNotFoundError:  # a kernel without CONFIG_SCHED_INFO
                    cpu = _stat_cpu(f"{entry.path}/stat")
                status = Path(entry.path, "status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            switches = sum(
                int(line.split()[1])
                for line in status.splitlines()
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"))
            )
            found[int(entry.name)] = Task(name, cpu, switches)
    return found


def python_thread_names(pid: int) -> dict[int, str]:
    """TID → Python thread name, from `py-spy dump` when py-spy is in the venv ({} otherwise):
    Python 3.11 does not name its threads for the kernel, so /proc's comm cannot tell them apart."""
    if not Path(PY_SPY).exists():
        return {}
    try:
        dump = subprocess.run(
            [PY_SPY, "dump", "--pid", str(pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {}
    return {
        int(found[1]): found[2]
        for found in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump.stdout, re.MULTILINE)
    }


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * share // 100))  # ceil
    return ordered[int(rank) - 1]


# ---------------------------------------------------------------- watching a report dir


class DirWatch:
    """When each file appeared in a directory (IN_CREATE, IN_MOVED_TO), on the monotonic clock.

    Raw inotify through ctypes, read by a thread blocked in poll(): the time taken is that of the
    wake-up, microseconds after the rename. Not watchdog: it queues each IN_MOVED_FROM with a 0.5 s
    delay to pair it with its IN_MOVED_TO, and a reader that wakes between the two halves sleeps
    that whole delay, so a report's rename (temporary → final name) could now and then be seen
    500 ms late. Without inotify: a 1 kHz scandir poll.
    """

    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_Q_OVERFLOW = 0x4000
    HEADER = struct.Struct("iIII")

    def __init__(self, directory: Path, keep_contents: bool = False) -> None:
        self.directory = directory
        self.seen: dict[str, int] = {}  # name → monotonic ns
        # with keep_contents, each file is read as soon as it is seen (after its time is taken),
        # so that retention may delete it later: None when it was gone already
        self.keep_contents = keep_contents
        self.contents: dict[str, bytes | None] = {}
        self.overflowed = False
        self.method = "inotify"
        self._lock = threading.Lock()
        self._stop_read, self._stop_write = os.pipe()
        self._stopping = threading.Event()
        self._fd = -1
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            mask = self.IN_MOVED_TO | self.IN_CREATE
            if libc.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
                error = ctypes.get_errno()
                os.close(fd)
                raise OSError(error, "inotify_add_watch")
            self._fd = fd
            target = self._read_inotify
        except (OSError, AttributeError):
            self.method = "1 kHz scandir poll"
            target = self._poll
        self._thread = threading.Thread(target=target, name="bench-dirwatch", daemon=True)
        self._thread.start()

    def _note(self, name: str, when: int) -> None:
        if name.startswith(".") or name == REPORT_INDEX:
            return
        with self._lock:
            if name in self.seen:
                return
            self.seen[name] = when
        if self.keep_contents:
            try:
                data: bytes | None = (self.directory / name).read_bytes()
            except FileNotFoundError:
                data = None
            with self._lock:
                self.contents[name] = data

    def _read_inotify(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        while not self._stopping.is_set():
            poller.poll()
            now = time.monotonic_ns()
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(data):
                _, mask, _, length = self.HEADER.unpack_from(data, offset)
                offset += self.HEADER.size
                name = data[offset : offset + length].rstrip(b"\0").decode()
                offset += length
                if mask & self.IN_Q_OVERFLOW:
                    self.overflowed = True
                elif name:
                    self._note(name, now)

    def _poll(self) -> None:
        while not self._stopping.wait(0.001):
            now = time.monotonic_ns()
            with contextlib.suppress(FileNotFoundError), os.scandir(self.directory) as entries:
                for entry in entries:
                    self._note(entry.name, now)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    def close(self) -> None:
        self._stopping.set()
        os.write(self._stop_write, b"x")
        self._thread.join(5)
        for fd in (self._fd, self._stop_read, self._stop_write):
            if fd >= 0:
                os.close(fd)


# ---------------------------------------------------------------- the daemon as a child


# Forks the daemon, writes "PID FORK_MONOTONIC_NS FORK_TIME_NS" to a file as soon as it exists,
# and at its exit what wait4 says of it alone: peak RSS, exit code, and when it was reaped.
PROBE = """
import os, sys, time
pid_path, report_path = sys.argv[1], sys.argv[2]
start, wall = time.monotonic_ns(), time.time_ns()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[3], sys.argv[3:])
with open(pid_path + ".tmp", "w") as out:
    out.write(f"{pid} {start} {wall}")
os.replace(pid_path + ".tmp", pid_path)
_, status, usage = os.wait4(pid, 0)
end = time.monotonic_ns()
with open(report_path, "w") as out:
    out.write(f"{usage.ru_maxrss * 1024} {end} {os.waitstatus_to_exitcode(status)}")
"""


@dataclass
class Exited:
    at: float  # seconds from the fork
    peak_rss: int  # bytes, the daemon's own (wait4)
    code: int


class DaemonRun:
    """`logwarden run -c CONFIG --log-format json` as a child; always stopped by PID."""

    def __init__(self, config: Path, workdir: Path, profile: Path | None = None) -> None:
        self.config = config
        self.profile = profile  # py-spy record's output (collapsed stacks), when asked
        self.spy: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "daemon.log"
        self.pid_path = workdir / ".daemon.pid"
        self.exit_path = workdir / ".daemon.exit"
        self.state_dir = workdir / "state"
        self.probe: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.t0 = 0  # monotonic ns at the fork
        self.t0_wall = 0  # time.time_ns() at the fork
        self._events: list[dict[str, Any]] = []
        self._log_offset = 0

    def __enter__(self) -> DaemonRun:
        return self

    def __exit__(self, *_: object) -> None:
        self.kill()

    def start(self) -> DaemonRun:
        for path in (self.log_path, self.pid_path, self.exit_path):
            path.unlink(missing_ok=True)
        command = [*LOGWARDEN, "run", "-c", str(self.config), "--log-format", "json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.pop("LOGWARDEN_CONFIG", None)
        with self.log_path.open("wb") as log:
            self.probe = subprocess.Popen(
                [sys.executable, "-c", PROBE, str(self.pid_path), str(self.exit_path), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,  # a ^C to the bench does not reach it; we stop it
            )
        wait_for(self.pid_path.exists, 10, "the probe to fork the daemon", 0.002)
        pid, t0, wall = self.pid_path.read_text().split()
        self.pid, self.t0, self.t0_wall = int(pid), int(t0), int(wall)
        if self.profile is not None:
            spy = [PY_SPY, "record", "-p", str(self.pid), "-r", "250", "-f", "raw"]
            self.spy = subprocess.Popen(
                [*spy, "--nonblocking", "-o", str(self.profile)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return self

    def since_start(self, monotonic_ns: int | None = None) -> float:
        return ((monotonic_ns or time.monotonic_ns()) - self.t0) / 1e9

    def running(self) -> bool:
        return self.probe is not None and self.probe.poll() is None

    def events(self) -> list[dict[str, Any]]:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            data = log.read()
        complete = data.rfind(b"\n") + 1
        self._log_offset += complete
        for line in data[:complete].splitlines():
            try:
                self._events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self._events.append({"event": line.decode(errors="replace")})
        return self._events

    def wait_event(self, name: str, timeout: float) -> float:
        """Seconds from the fork to the event, by the event's own timestamp (microseconds), or by
        when this poll saw it (10 ms steps) if it has none."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            if not self.running():
                raise BenchmarkFailed(f"daemon exited early:\n{self.log_tail()}")
            found.extend(e for e in self.events() if e.get("event") == name)
            return bool(found)

        wait_for(seen, timeout, f"the daemon's {name!r} log event")
        stamp = found[0].get("timestamp")
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                return when - self.t0_wall / 1e9
        return self.since_start()

    def status(self) -> dict[str, Any] | None:
        try:
            document: dict[str, Any] = orjson.loads((self.state_dir / "status.json").read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return document

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon so far (all its threads), from /proc/PID/stat."""
        return process_cpu(self.pid)

    def memory(self) -> dict[str, int]:
        """VmRSS, VmHWM (bytes), Threads, and open descriptors, from /proc/PID."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
            elif key == "Threads":
                values[key] = int(rest)
        values["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
        return values

    def signal(self, signum: int) -> None:
        if self.pid > 0 and self.running():
            os.kill(self.pid, signum)  # the probe has not reaped it, so the PID is still its

    def stop(self, timeout: float = STOP_TIMEOUT) -> Exited:
        """SIGTERM, then wait (bounded) for the drain, the final commit and the exit."""
        assert self.probe is not None
        self.signal(signal.SIGTERM)
        try:
            self.probe.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchmarkFailed(
                f"daemon did not stop within {timeout:.0f}s of SIGTERM:\n{self.log_tail()}"
            ) from None
        rss, end, code = self.exit_path.read_text().split()
        return Exited(self.since_start(int(end)), int(rss), int(code))

    def kill(self) -> None:
        if self.probe is not None and self.probe.poll() is None:
            # the daemon by its PID; before the probe told it, the probe itself (by its own PID)
            os.kill(self.pid if self.pid > 0 else self.probe.pid, signal.SIGKILL)
        if self.probe is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.probe.wait(10)
        if self.spy is not None:  # it writes its file and exits once the daemon is gone
            try:
                self.spy.wait(30)
            except subprocess.TimeoutExpired:
                self.spy.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.spy.wait(10)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no log)"


# ---------------------------------------------------------------- 1. catch-up on a backlog


def catch_up(ctx: Any, runs: int, rule_set: Any) -> Outcome:
    """The corpus as one backlog file, start_at = "beginning", one big report: start → published.

    Method: status.json (status_interval 100 ms) is polled every 10 ms until it says every byte of
    the file was read (bytes = the file's size, lag 0); then SIGTERM, whose drain commits and
    publishes the one report (publish_on_stop). The figure is the fork → the report's rename in
    the report dir (inotify), so it includes the detection delay (≤ ~110 ms, charged to the
    daemon) and the stop's commit + publish. The published report is then checked: every rule's
    count equal to the rule set's expected count, no line twice. `rule_set` is run.py's RuleSet:
    its config's rules, its expected counts, its same-run grep time and its target.
    """
    corpus = ctx.corpus
    work = fresh_dir(ctx.scratch / "catchup" / rule_set.name)
    logs = work / "logs"
    logs.mkdir()
    backlog = logs / "backlog.log"
    try:
        os.link(corpus.path, backlog)  # same bytes, same page cache, no 240 MB copy
    except OSError:
        shutil.copyfile(corpus.path, backlog)
    report_dir = work / "reports"
    config = write_config(
        work / "logwarden.toml",
        f"""
        [daemon]
        state_dir = {toml_string(work / "state")}
        status_interval = "100ms"
        """,
        f"""
        [sources.backlog]
        paths = [{toml_string(logs / "*.log")}]
        start_at = "beginning"
        """,
        f"""
        [reports.bench]
        dir = {toml_string(report_dir)}
        format = "json"
        rotate_max_bytes = "4GiB"
        rotate_max_records = 100000000
        rotate_interval = "24h"
        keep = 1000
        """,
        rules=rule_set.config,
    )
    outcome = Outcome()
    results: list[tuple[float, float, float, Exited, dict[str, int], int]] = []
    for _ in range(runs):
        for directory in ("state", "reports"):
            fresh_dir(work / directory)
        watch = DirWatch(report_dir)
        try:
            with DaemonRun(config, work, profile_path(ctx, work)) as daemon:
                daemon.start()
                ready = daemon.wait_event("ready", 60)

                def caught_up(daemon: DaemonRun = daemon) -> bool:
                    if not daemon.running():
                        raise BenchmarkFailed(f"daemon exited early:\n{daemon.log_tail()}")
                    status = daemon.status()
                    return (
                        status is not None
                        and status["bytes"] >= corpus.bytes
                        and status["lag_bytes"] == 0
                    )

                wait_for(caught_up, 600, "status.json to show the backlog read (lag 0)")
                seen_caught_up = daemon.since_start()
                exited = daemon.stop()
        finally:
            watch.close()
        if exited.code != 0:
            raise BenchmarkFailed(f"catch-up daemon exited {exited.code}:\n{daemon.log_tail()}")
        reports = read_reports(report_dir)
        if not reports:
            raise BenchmarkFailed("catch-up: nothing published")
        unseen = [name for name in reports if name not in watch.seen]
        if unseen or watch.overflowed:
            raise BenchmarkFailed(f"catch-up: inotify missed the publication of {unseen}")
        published = max(daemon.since_start(watch.seen[name]) for name in reports)
        records = [r for found in reports.values() for r in found if "kind" not in r]
        counts = Counter(r["rule"] for r in records)
        offsets = Counter(r["source"]["offset"] for r in records)
        twice = sum(1 for n in offsets.values() if n > 1)
        if twice:
            outcome.problems.append(f"catch-up published {twice} lines more than once")
        if dict(counts) != {rule: n for rule, n in rule_set.expected.items() if n}:
            outcome.problems.append(
                f"catch-up ({rule_set.name}) run {len(results) + 1} published {dict(counts)}"
            )
        results.append((published, ready, seen_caught_up, exited, dict(counts), len(reports)))
    results.sort(key=lambda result: result[0])
    published, ready, seen_caught_up, exited, median_counts, files = results[len(results) // 2]
    spread = ", ".join(f"{result[0]:.2f}" for result in results)
    outcome.rows.append(
        TableRow(
            "`logwarden run` catch-up (start → published)",
            published,
            exited.peak_rss,
            median_counts,
            note=f"median of {runs} ({spread} s); ready {ready:.2f} s, lag 0 seen "
            f"{seen_caught_up:.2f} s, published {published:.2f} s, exit {exited.at:.2f} s; "
            f"{files} report(s)",
            rule_set=rule_set.name,
        )
    )
    ratio = published / rule_set.grep_wall
    target = rule_set.catchup_target
    outcome.figures += [
        Figure(
            f"catch-up ({rule_set.name})",
            f"start → every match published ({corpus.lines:,} lines, median of {runs})",
            f"{published:.2f} s = {ratio:.2f}x grep ({rule_set.grep_wall:.2f} s)",
            f"≤ {target:.1f}x grep",
            ratio <= target,
        ),
        Figure(
            f"catch-up ({rule_set.name})", "peak RSS (wait4)", f"{exited.peak_rss / 2**20:.0f} MiB"
        ),
    ]
    add_profile(outcome, profile_path(ctx, work))
    return outcome


# ---------------------------------------------------------------- 2. live latency


# Appends lines at a steady rate, PER_WRITE lines per write(2) (default 1), each ending with
# " lwb=SEQ:MONOTONIC_NS" taken just before its write; prints what it achieved as JSON.
WRITER = r"""
import json, os, sys, time
lines_path, log_path, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
per_write = int(sys.argv[4]) if len(sys.argv) > 4 else 1
lines = open(lines_path, "rb").read().split(b"\n")[:-1]
fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
period = 1e9 * per_write / rate
behind = 0
start = time.monotonic_ns()
for batch, first in enumerate(range(0, len(lines), per_write)):
    due = start + int(batch * period)
    now = time.monotonic_ns()
    if due > now:
        time.sleep((due - now) / 1e9)
    else:
        behind = max(behind, now - due)
    now = time.monotonic_ns()
    chunk = lines[first : first + per_write]
    os.write(fd, b"".join(b"%s lwb=%d:%d\n" % (line, seq, now) for seq, line in enumerate(chunk, first)))
end = time.monotonic_ns()
os.close(fd)
print(json.dumps({"lines": len(lines), "seconds": (end - start) / 1e9, "behind_ms": behind / 1e6}))
"""
STAMP = re.compile(r" lwb=(\d+):(\d+)$")


def live_lines(count: int, seed: int, share: float) -> list[tuple[str, str | None]]:
    """`count` lines in the corpus' style, each with the rule it must match (or None), matching
    lines making about `share` of them: quiet items are skipped while the share is below it."""
    writer = corpus_module._Writer(
        seed
    )  # the generator's own line maker: it knows what matches what
    kinds = (writer.sshd, writer.nginx, writer.app)
    rng = random.Random(seed)
    out: list[tuple[str, str | None]] = []
    matching = 0
    while len(out) < count:
        hits: Counter[str] = Counter()
        produced = rng.choices(kinds, (29, 27, 44))[0](hits)
        if not hits and matching < share * (len(out) + 1):
            continue
        if len(out) + len(produced) > count:
            break
        for index, line in enumerate(produced):
            rule = None
            if index == 0 and hits:  # the sshd/nginx line, or the app's ERROR line
                rule = next(r for r in hits if r != "traceback")
            elif index == 1 and hits["traceback"]:
                rule = "traceback"
            matching += rule is not None
            out.append((line, rule))
    return out


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def bare_durable_sequence(work: Path, count: int = 300, budget: float = 15.0) -> list[float]:
    """What one durable publish costs this filesystem with no daemon around it, in ms each:
    a staged file of a few hundred bytes written and fsynced, its dir fsynced, a 4 KiB slot of a
    pre-created slot file pwritten and fdatasynced (in another dir, as a checkpoint is), the
    staged file renamed to its final name, the dir fsynced again. `count` times, or fewer when
    `budget` seconds run out."""
    reports, state = fresh_dir(work / "reports"), fresh_dir(work / "state")
    slot_file = state / "slots"
    slot = bytes(range(256)) * 16  # 4 KiB
    record = b'{"report": "bare", "records": [' + b"x" * 300 + b"]}\n"
    timings: list[float] = []
    descriptor = os.open(slot_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(descriptor, slot * 2, 0)  # two slots, as the daemon's checkpoint has
        os.fsync(descriptor)
        _fsync_dir(state)
        deadline = time.monotonic() + budget
        for number in range(count):
            if time.monotonic() >= deadline:
                break
            staged, final = reports / f".staged-{number}.json", reports / f"bare-{number:06d}.json"
            start = time.perf_counter_ns()
            out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(out, record)
                os.fsync(out)
            finally:
                os.close(out)
            _fsync_dir(reports)
            os.pwrite(descriptor, slot, (number % 2) * len(slot))
            os.fdatasync(descriptor)
            os.rename(staged, final)
            _fsync_dir(reports)
            timings.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        os.close(descriptor)
    shutil.rmtree(work, ignore_errors=True)
    return timings


def live_latency(ctx: Any, rate: float, seconds: float, share: float) -> Outcome:
    """One followed file, rotate_max_records = 1 (every match its own fsynced, renamed report),
    default commit and retention settings (keep = 48, so the bench reads each report as it
    appears); a writer process appends `rate` lines/s, one line per write. The latency of a
    matching line: its write → its report's IN_MOVED_TO in the report dir."""
    work = fresh_dir(ctx.scratch / "live")
    logs, report_dir = work / "logs", work / "reports"
    logs.mkdir()
    report_dir.mkdir()
    log = logs / "live.log"
    log.touch()
    lines = live_lines(int(rate * seconds), ctx.args.seed, share)
    (work / "lines.txt").write_text("".join(line + "\n" for line, _ in lines))
    expected = {seq: rule for seq, (_, rule) in enumerate(lines) if rule is not None}
    config = live_config(work, log, report_dir, 'format = "json"\nrotate_max_records = 1')
    outcome = Outcome()
    bare = sorted(bare_durable_sequence(work / "bare"))  # same filesystem, before the daemon runs
    if not bare:
        raise BenchmarkFailed("live: the bare durable sequence did not run once")
    bare_p99 = percentile(bare, 99)
    target = max(10.0, 2 * bare_p99 + 2)
    watch = DirWatch(report_dir, keep_contents=True)  # retention (keep = 48) deletes behind us
    writer: subprocess.Popen[bytes] | None = None
    try:
        with DaemonRun(config, work, profile_path(ctx, work)) as daemon:
            daemon.start()
            daemon.wait_event("ready", 60)
            cpu_before, t_before = daemon.cpu_seconds(), time.monotonic()
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(work / "lines.txt"), str(log), str(rate)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
            try:
                written, _ = writer.communicate(timeout=seconds * 3 + 30)
            except subprocess.TimeoutExpired:
                raise BenchmarkFailed("the live writer did not finish in time") from None
            if writer.returncode != 0:
                raise BenchmarkFailed(f"the live writer failed ({writer.returncode})")
            wait_for(
                lambda: watch.count() >= len(expected) or not daemon.running(),
                30,
                f"{len(expected)} reports to be published",
            )
            cpu = (daemon.cpu_seconds() - cpu_before) / (time.monotonic() - t_before)
            memory = daemon.memory()
            exited = daemon.stop()
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
            writer.wait(10)
        watch.close()
    stats = orjson.loads(written)
    latencies: list[float] = []
    wall_minus_monotonic = time.time_ns() - time.monotonic_ns()
    timeline: list[tuple[int, int, float, float, str]] = []  # kept in latencies.json
    got: Counter[int] = Counter()
    wrong = 0
    for name, records in read_reports(report_dir, watch.contents).items():
        for record in records:
            if "kind" in record:
                continue
            found = STAMP.search(record["line"])
            if found is None:
                wrong += 1
                continue
            seq, written_at = int(found[1]), int(found[2])
            got[seq] += 1
            matched = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
            to_record = (matched * 1e9 - wall_minus_monotonic - written_at) / 1e6
            if name in watch.seen:  # the record's `time` is wall clock, to the microsecond
                latencies.append((watch.seen[name] - written_at) / 1e6)
                timeline.append((seq, written_at, to_record, latencies[-1], name))
            wrong += expected.get(seq) != record["rule"]
    if wrong:
        outcome.problems.append(f"live: {wrong} records of lines that match no such rule")
    missing = set(expected) - set(got)
    timeline.sort()
    (work / "latencies.json").write_bytes(
        orjson.dumps(
            [
                {"seq": a, "written_ns": b, "to_record_ms": c, "to_report_ms": d, "report": e}
                for a, b, c, d, e in timeline
            ]
        )
    )
    if missing:
        outcome.problems.append(f"live: {len(missing)} matches never published")
    if any(n > 1 for n in got.values()):
        outcome.problems.append("live: some matches published more than once")
    if watch.overflowed or len(latencies) != len(expected):
        outcome.problems.append(f"live: only {len(latencies)} of {len(expected)} reports timed")
    if exited.code != 0:
        outcome.problems.append(f"live: daemon exited {exited.code}")
    if not latencies:
        raise BenchmarkFailed("live: no latency measured")

    def spread(values: list[float]) -> str:
        values = sorted(values)
        p50, p90, p99 = (percentile(values, p) for p in (50, 90, 99))
        return f"{p50:.1f} / {p90:.1f} / {p99:.1f} / {values[-1]:.1f} ms"

    p99 = percentile(sorted(latencies), 99)
    achieved = stats["lines"] / stats["seconds"]
    outcome.figures += [
        Figure(
            "live latency",
            f"write → report in dir, p50 / p90 / p99 / max (n = {len(latencies):,}, "
            f"{achieved:,.0f} lines/s for {stats['seconds']:.1f} s, "
            f"{100 * len(expected) / len(lines):.0f}% matching)",
            spread(latencies),
            f"p99 ≤ {target:.1f} ms",
            p99 <= target,
        ),
        Figure(
            "live latency",
            f"bare durable sequence in the live work dir, p50 / p99 (n = {len(bare)}; target: "
            "max(10 ms, 2 x its p99 + 2 ms))",
            f"{percentile(bare, 50):.2f} / {bare_p99:.2f} ms",
        ),
        Figure(
            "live latency",
            "of which write → record built (read + match), by the record's `time`",
            spread([t[2] for t in timeline]),
        ),
        Figure(
            "live latency",
            "and record built → report in dir (commit + publish)",
            spread([t[3] - t[2] for t in timeline]),
        ),
        Figure(
            "live latency",
            "daemon CPU while writing; RSS at end, peak",
            f"{100 * cpu:.0f}% of a core; {memory['VmRSS'] / 2**20:.0f}, "
            f"{exited.peak_rss / 2**20:.0f} MiB",
        ),
    ]
    if stats["behind_ms"] > 50:
        outcome.figures.append(
            Figure(
                "live latency", "writer fell behind its schedule by", f"{stats['behind_ms']:.0f} ms"
            )
        )
    add_profile(outcome, profile_path(ctx, work))
    return outcome


# ---------------------------------------------------------------- 3. many idle files


def many_files(ctx: Any, dirs: int, per_dir: int, idle_seconds: float) -> Outcome:
    """`dirs` x `per_dir` small files under one glob (`dir*/*.log`), default daemon settings
    (start_at = "end", status every 2 s, rescan every 10 s): start → ready, start → status.json
    listing every file, then CPU and memory over `idle_seconds` with nothing written."""
    work = fresh_dir(ctx.scratch / "idle")
    total = dirs * per_dir
    sample = "".join(line + "\n" for line, _ in live_lines(5, ctx.args.seed, 0.0)).encode()
    for d in range(dirs):
        directory = work / "logs" / f"dir{d:02d}"
        directory.mkdir(parents=True)
        for f in range(per_dir):
            (directory / f"f{f:04d}.log").write_bytes(sample)
    config = write_config(
        work / "logwarden.toml",
        f"""
        [daemon]
        state_dir = {toml_string(work / "state")}
        """,
        f"""
        [sources.many]
        paths = [{toml_string(work / "logs" / "dir*" / "*.log")}]
        """,
        f"""
        [reports.many]
        dir = {toml_string(work / "reports")}
        """,
    )
    outcome = Outcome()
    with DaemonRun(config, work, profile_path(ctx, work)) as daemon:
        daemon.start()
        ready = daemon.wait_event("ready", 120)

        def all_listed() -> bool:
            if not daemon.running():
                raise BenchmarkFailed(f"daemon exited early:\n{daemon.log_tail()}")
            status = daemon.status()
            return status is not None and len(status["files"]) >= total

        wait_for(all_listed, 120, f"status.json to list {total} files", 0.05)
        listed = daemon.since_start()
        time.sleep(2.0)  # let start-up work (first commit, first status writes) finish
        cpu_before, t_before = daemon.cpu_seconds(), time.monotonic()
        time.sleep(idle_seconds)
        cpu = (daemon.cpu_seconds() - cpu_before) / (time.monotonic() - t_before)
        memory = daemon.memory()
        exited = daemon.stop()
    if exited.code != 0:
        outcome.problems.append(f"many files: daemon exited {exited.code}")
    rss = memory["VmRSS"] / 2**20
    outcome.figures += [
        Figure(
            "many files",
            f"start → ready ({total:,} files in {dirs} dirs)",
            f"{ready:.2f} s",
            "≤ 10 s",
            ready <= 10.0,
        ),
        Figure(
            "many files",
            "start → status.json lists them all (written every 2 s)",
            f"{listed:.2f} s",
        ),
        Figure(
            "many files",
            f"idle CPU over {idle_seconds:.0f} s (utime + stime)",
            f"{100 * cpu:.2f}% of a core",
            "< 0.5%",
            cpu < 0.005,
        ),
        Figure("many files", "idle RSS (VmRSS)", f"{rss:.0f} MiB", "< 150 MiB", rss < 150),
        Figure(
            "many files",
            "peak RSS; threads; open descriptors",
            f"{exited.peak_rss / 2**20:.0f} MiB; {memory['Threads']}; {memory['fds']}",
        ),
    ]
    add_profile(outcome, profile_path(ctx, work))
    return outcome


# ---------------------------------------------------------------- 4. live CPU


LIVE_CPU_SHARE = 0.04  # one line in 25 matches
# name, lines/s, lines per write(2), target for logwarden's CPU per line / rsyslog's (None: none)
LIVE_CPU_LOADS: tuple[tuple[str, int, int, float | None], ...] = (
    ("a", 200, 1, None),
    ("b", 2_000, 1, 1.0),
    ("c", 20_000, 100, 1.0),
)
QUIET = 1.0  # s from the daemon's readiness to the window's start: its start-up work is done
SETTLE = 1.0  # s the window runs on after the writer's exit, for both daemons alike
BUSY = 0.05  # share of a core above which a daemon is still at work after the window
DONE_WITHIN = 180.0  # s after the window for a daemon to show it has handled every line


@dataclass
class CpuWindow:
    """A daemon's CPU over one load: from just before the writer starts to SETTLE after its exit
    (or, when it was still busy then, to when it was seen done)."""

    cpu: float  # s, utime + stime of every thread, ended ones included (/proc/PID/stat)
    seconds: float  # the window's length
    switches: int  # context switches over the window, summed over its threads
    threads: list[tuple[str, float, int]]  # per thread alive at the end: name, CPU s, switches
    unaccounted: float  # s: the stat total less the live threads' sum (ended threads, ticks)
    late_cpu: float  # s of CPU from the window's end to when the work was seen done
    late_seconds: float
    extended: bool  # still busy after the settle: the window was stretched to "done"
    finished: bool  # the work was seen done (within DONE_WITHIN)
    writer: dict[str, Any]


def cpu_window(
    pid: int,
    writer_command: list[str],
    writer_timeout: float,
    done: Callable[[], bool],
    python: bool,
) -> CpuWindow:
    """Run the writer against a started daemon and account for the daemon's CPU: the process
    total from /proc/PID/stat, and per thread from /proc/PID/task/*/{schedstat,status,comm}."""
    time.sleep(QUIET)
    before = tasks(pid)
    cpu0, t0 = process_cpu(pid), time.monotonic()
    writer = subprocess.Popen(writer_command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    try:
        written, _ = writer.communicate(timeout=writer_timeout)
    except subprocess.TimeoutExpired:
        raise BenchmarkFailed("the live-CPU writer did not finish in time") from None
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
    if writer.returncode != 0:
        raise BenchmarkFailed(f"the live-CPU writer failed ({writer.returncode})")
    time.sleep(SETTLE)
    cpu1, t1 = process_cpu(pid), time.monotonic()
    after = tasks(pid)
    finished = False
    while time.monotonic() < t1 + DONE_WITHIN:
        if done():
            finished = True
            break
        time.sleep(0.01)
    cpu2, t2 = process_cpu(pid), time.monotonic()
    names = python_thread_names(pid) if python else {}  # after the window: it stops the process
    late_cpu, late_seconds = cpu2 - cpu1, t2 - t1
    extended = late_seconds > 0 and late_cpu / late_seconds > BUSY and late_cpu > 0.05
    if extended:  # it had not caught up: charge it all, and the threads as seen at the end
        cpu1, t1, after = cpu2, t2, tasks(pid)
    threads = []
    zero = Task("", 0.0, 0)
    for tid, task in after.items():
        start = before.get(tid, zero)
        name = names.get(tid) or (f"{task.name} (main)" if tid == pid else task.name)
        threads.append((f"{name} [{tid}]", task.cpu - start.cpu, task.switches - start.switches))
    threads.sort(key=lambda thread: (-thread[1], -thread[2]))
    return CpuWindow(
        cpu=cpu1 - cpu0,
        seconds=t1 - t0,
        switches=sum(thread[2] for thread in threads),
        threads=threads,
        unaccounted=(cpu1 - cpu0) - sum(thread[1] for thread in threads),
        late_cpu=late_cpu,
        late_seconds=late_seconds,
        extended=extended,
        finished=finished,
        writer=orjson.loads(written),
    )


def stamped(line: str) -> int | None:
    found = STAMP.search(line)
    return int(found[1]) if found else None


Found = list[tuple[int | None, str, dict[str, Any]]]  # (seq, rule, captures) of each match


def check_matches(
    who: str, found: Found, expected: dict[int, str]
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """(seq, rule, captures) of every match a daemon wrote, against the lines' expected rules:
    the captures by seq, and what is wrong, as sentences."""
    problems = []
    by_seq: dict[int, dict[str, Any]] = {}
    wrong = twice = 0
    for seq, rule, raw in found:
        # the stamp the writer appends (in app-error's `message`) differs by run: left out
        captures = {k: STAMP.sub("", v) if isinstance(v, str) else v for k, v in raw.items()}
        if seq is None or expected.get(seq) != rule:
            wrong += 1
        elif seq in by_seq:
            twice += 1
        else:
            by_seq[seq] = captures
    if wrong:
        problems.append(f"{who}: {wrong} matches of lines that match no such rule")
    if twice:
        problems.append(f"{who}: {twice} lines matched more than once")
    if len(by_seq) != len(expected):
        problems.append(f"{who}: {len(expected) - len(by_seq)} of {len(expected)} matches missing")
    return by_seq, problems


def _logwarden_load(
    ctx: Any, work: Path, count: int, writer: Callable[[str], list[str]], timeout: float
) -> tuple[CpuWindow, Found, list[str]]:
    """logwarden following one file, default commit, status and report settings (the report is
    published once, at stop)."""
    logs, report_dir = fresh_dir(work / "logs"), work / "reports"
    log = logs / "live.log"
    log.touch()
    config = live_config(work, log, report_dir)
    problems = []
    with DaemonRun(config, work, profile_path(ctx, work)) as daemon:
        daemon.start()
        daemon.wait_event("ready", 60)

        def done() -> bool:
            if not daemon.running():
                raise BenchmarkFailed(f"daemon exited early:\n{daemon.log_tail()}")
            status = daemon.status()  # written every 2 s (the default)
            return status is not None and status["lines"] >= count and status["lag_bytes"] == 0

        window = cpu_window(daemon.pid, writer(str(log)), timeout, done, python=True)
        exited = daemon.stop()
    if exited.code != 0:
        problems.append(f"logwarden exited {exited.code}")
    found = [
        (stamped(record["line"]), record["rule"], record["captures"])
        for records in read_reports(report_dir).values()
        for record in records
        if "kind" not in record
    ]
    return window, found, problems


def _rsyslog_load(
    binary: str,
    *,
    eres: dict[str, str],
    work: Path,
    matches: int,
    writer: Callable[[str], list[str]],
    timeout: float,
) -> tuple[CpuWindow, Found, list[str]]:
    """rsyslogd -n on the same file: imfile (inotify), the rules as EREs, JSON lines out."""
    logs = fresh_dir(work / "logs")
    log, output = logs / "live.log", work / "matches.json"
    log.touch()
    config = work / "rsyslog.conf"
    config.write_text(rsyslog.config(work, log, output, eres))
    problems = []
    daemon = rsyslog.RsyslogRun(binary, config, work)
    daemon.check()
    seen = [0, 0]  # bytes read, lines counted: the output is read on from where it was

    def done() -> bool:
        if not daemon.running():
            raise BenchmarkFailed(f"rsyslogd exited early:\n{daemon.tail()}")
        with contextlib.suppress(FileNotFoundError), output.open("rb") as stream:
            stream.seek(seen[0])
            data = stream.read()
            seen[0] += len(data)
            seen[1] += data.count(b"\n")
        return seen[1] >= matches

    with daemon:
        daemon.start()
        window = cpu_window(daemon.pid, writer(str(log)), timeout, done, python=False)
        code = daemon.stop()
    if code != 0:
        problems.append(f"rsyslogd exited {code}")
    found = []
    with contextlib.suppress(FileNotFoundError), output.open("rb") as stream:
        for line in stream:
            record = orjson.loads(line)
            found.append((stamped(record["line"]), record["rule"], record.get("captures", {})))
    return window, found, problems


def _thread_note(window: CpuWindow, lines: int) -> str:
    shown = [t for t in window.threads if t[1] > 0 or t[2] > 0]
    parts = [
        f"{name} {cpu:.2f} s = {cpu / lines * 1e6:.0f} µs/line, {switches / lines:.2f} cs/line"
        for name, cpu, switches in shown[:8]
    ]
    if len(shown) > 8:
        rest = shown[8:]
        parts.append(
            f"{len(rest)} more threads {sum(t[1] for t in rest):.2f} s, "
            f"{sum(t[2] for t in rest) / lines:.2f} cs/line"
        )
    if abs(window.unaccounted) >= 0.02:  # the total's ticks are 10 ms, stat's utime and stime
        parts.append(f"not in live threads (ended ones, tick rounding) {window.unaccounted:+.2f} s")
    return "; ".join(parts)


def live_cpu(ctx: Any, seconds: float, eres: dict[str, str]) -> Outcome:
    """Each load of LIVE_CPU_LOADS on one followed file, for logwarden and (when installed)
    rsyslog in turn: the daemon's CPU per line over the writing window plus SETTLE."""
    outcome = Outcome()
    binary = rsyslog.find()
    root = fresh_dir(ctx.scratch / "live-cpu")
    notes = [
        "live CPU: CPU = utime + stime of the whole process (/proc/PID/stat, 10 ms ticks) from "
        f"just before the writer's start to {SETTLE:.0f} s after its exit; per thread: time on "
        "a CPU from /proc/PID/task/*/schedstat (ns), names from comm or, for logwarden, py-spy's "
        "Python thread names; context switches (cs): voluntary + nonvoluntary from "
        "/proc/PID/task/*/status, summed over the threads, over the same window."
    ]
    if binary is None:
        notes.append("  rsyslog is not installed: no comparison (`apt-get install rsyslog`).")
    for key, rate, per_write, target in LIVE_CPU_LOADS:
        work = fresh_dir(root / key)
        count = int(rate * seconds)
        lines = live_lines(count, ctx.args.seed, LIVE_CPU_SHARE)
        lines_file = work / "lines.txt"
        lines_file.write_text("".join(line + "\n" for line, _ in lines))
        expected = {seq: rule for seq, (_, rule) in enumerate(lines) if rule is not None}
        timeout = seconds * 3 + 30

        def command(
            log: str, path: Path = lines_file, rate: int = rate, per_write: int = per_write
        ) -> list[str]:
            return [sys.executable, "-c", WRITER, str(path), log, str(rate), str(per_write)]

        label = f"({key}) {rate:,} lines/s, {per_write} line{'s' if per_write > 1 else ''} a write"
        windows: dict[str, CpuWindow] = {}
        captures: dict[str, dict[int, dict[str, Any]]] = {}
        for who in ("logwarden", "rsyslog"):
            if who == "rsyslog" and binary is None:
                continue
            place = fresh_dir(work / who)
            try:
                if who == "logwarden":
                    window, found, problems = _logwarden_load(
                        ctx, place, len(lines), command, timeout
                    )
                else:
                    assert binary is not None
                    window, found, problems = _rsyslog_load(
                        binary,
                        eres=eres,
                        work=place,
                        matches=len(expected),
                        writer=command,
                        timeout=timeout,
                    )
            except (BenchmarkFailed, rsyslog.Failed) as error:
                outcome.problems.append(f"live CPU {label}, {who}: {error}")
                continue
            by_seq, wrong = check_matches(f"live CPU {label}, {who}", found, expected)
            outcome.problems += [f"live CPU {label}, {who}: {p}" for p in problems] + wrong
            if not window.finished:
                outcome.problems.append(
                    f"live CPU {label}, {who}: not seen done {DONE_WITHIN:.0f} s after the window"
                )
            windows[who], captures[who] = window, by_seq
        if len(captures) == 2:
            differ = [
                seq
                for seq, theirs in captures["rsyslog"].items()
                if seq in captures["logwarden"]
                and {k: str(v) for k, v in captures["logwarden"][seq].items()}
                != {k: str(v) for k, v in theirs.items()}
            ]
            if differ:
                seq = differ[0]
                outcome.problems.append(
                    f"live CPU {label}: rsyslog's captures differ from logwarden's for "
                    f"{len(differ)} matches, e.g. line {seq}: {captures['rsyslog'][seq]} vs "
                    f"{captures['logwarden'][seq]}"
                )
        per_line = {who: w.cpu / len(lines) for who, w in windows.items()}
        for who, window in windows.items():
            outcome.figures.append(
                Figure(
                    "live CPU",
                    f"{label}: {who} CPU per line; % of a core; context switches per line",
                    f"{per_line[who] * 1e6:,.1f} µs; {100 * window.cpu / window.seconds:.1f}%; "
                    f"{window.switches / len(lines):.2f}",
                )
            )
        goal = f"≤ {target:.1f} (ambition 0.5)" if target is not None else ""
        if "logwarden" in per_line and "rsyslog" in per_line and per_line["rsyslog"] > 0:
            ratio = per_line["logwarden"] / per_line["rsyslog"]
            outcome.figures.append(
                Figure(
                    "live CPU",
                    f"{label}: logwarden / rsyslog, CPU per line",
                    f"{ratio:.2f}",
                    goal,
                    None if target is None else ratio <= target,
                )
            )
        elif target is not None:
            why = "no rsyslogd (`apt-get install rsyslog`)" if binary is None else "no figure"
            outcome.figures.append(
                Figure("live CPU", f"{label}: logwarden / rsyslog, CPU per line", why, goal)
            )
        notes.append(f"  {label}: {len(lines):,} lines, {len(expected):,} matching")
        for who, window in windows.items():
            stats = window.writer
            late = (
                f"still busy after the settle: counted to done, {window.seconds:.1f} s"
                if window.extended
                else f"then {window.late_cpu:.2f} s CPU in the {window.late_seconds:.1f} s "
                "until it was seen done"
            )
            notes.append(
                f"    {who}: {window.cpu:.2f} s CPU over {window.seconds:.1f} s (writer: "
                f"{stats['lines'] / stats['seconds']:,.0f} lines/s, {stats['behind_ms']:.0f} ms "
                f"behind at worst), {window.switches:,} cs; {late}"
            )
            notes.append(f"      threads: {_thread_note(window, len(lines))}")
        add_profile(outcome, profile_path(ctx, work / "logwarden"))
    outcome.notes.append("\n".join(notes))
    return outcome
