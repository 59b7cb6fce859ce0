"""Metrics from the real daemon: scraped over HTTP and read from the textfile, against the work done."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import LOGWARDEN, Daemon, published_records, wait_until, write_config
from logwarden.counters import (
    CommitSnapshot,
    DaemonSnapshot,
    DurationHistogram,
    FileSnapshot,
    JournalSnapshot,
)
from logwarden.metrics import render

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

CONFIG = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"
rescan_interval = "1s"
status_interval = "200ms"

[sources.app]
paths = ["logs/app.log"]
start_at = "beginning"

[sources.auth]
paths = ["logs/auth.log"]
start_at = "beginning"

[sources.trace]
paths = ["logs/trace.log"]
start_at = "beginning"
multiline = { start = '^S', timeout = "200ms" }

[rules.hit]
sources = ["app"]
match = ['seq=%{int:seq} FAIL']

[rules.denied]
sources = ["auth"]
match = ['denied user=%{word:user}']
threshold = { key = "user", count = 3, within = "1h" }

[reports.out]
dir = "reports"
rotate_interval = 0

[metrics]
listen = "LISTEN"
textfile = "TEXTFILE"
interval = "100ms"
"""


def parse(text: str) -> Samples:
    """Every sample by (name, labels); the parser raises on anything not in the text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return parse(response.read().decode())


def serving_port(daemon: Daemon) -> int:
    """The port the last "serving metrics" line names (the kernel's choice for port 0)."""
    ports = [event["port"] for event in daemon.events() if event.get("event") == "serving metrics"]
    assert ports, daemon.log_text()
    return int(ports[-1])


def configure(workdir: Path, listen: str, textfile: str) -> Path:
    text = CONFIG.replace("LISTEN", listen).replace("TEXTFILE", textfile)
    return write_config(workdir / "logwarden.toml", text)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    (tmp_path / "prom").mkdir()
    configure(tmp_path, "127.0.0.1:0", "prom/logwarden.prom")
    return tmp_path


def test_scrape_and_textfile_count_the_work_done(workdir: Path, daemon: Daemon) -> None:
    app, auth = workdir / "logs" / "app.log", workdir / "logs" / "auth.log"
    app.write_bytes(
        b"".join(b"seq=%d %s\n" % (n, b"FAIL" if n % 3 == 0 else b"ok") for n in range(30))
    )
    auth.write_bytes(b"denied user=root\nok\ndenied user=root\ndenied user=root\ndenied user=bob\n")
    trace = workdir / "logs" / "trace.log"
    trace.write_bytes(b"S1 first\r\n  c1\r\n  c2\r\nS2 alone\r\n")  # two events, CRLF
    daemon.start()
    port = serving_port(daemon)
    # every rule and source has its series from the start
    initial = scrape(port)
    assert value(initial, "logwarden_alerts_total", rule="hit") == 0

    def caught_up() -> bool:
        samples = scrape(port)
        return (
            value(samples, "logwarden_lines_total", source="app") == 30
            and value(samples, "logwarden_lines_total", source="auth") == 5
            and value(samples, "logwarden_lines_total", source="trace") == 4
        )

    wait_until(caught_up, message="every line counted")
    samples = scrape(port)
    assert value(samples, "logwarden_bytes_total", source="app") == app.stat().st_size
    assert value(samples, "logwarden_bytes_total", source="auth") == auth.stat().st_size
    assert value(samples, "logwarden_bytes_total", source="trace") == trace.stat().st_size
    assert value(samples, "logwarden_matches_total", rule="hit") == 10
    assert value(samples, "logwarden_matches_total", rule="denied") == 4
    assert value(samples, "logwarden_alerts_total", rule="denied") == 1  # root, 3 times
    assert value(samples, "logwarden_files_watched", source="app") == 1
    assert value(samples, "logwarden_files_watched", source="auth") == 1
    assert value(samples, "logwarden_files_unreadable", source="app") == 0
    for path, source in ((app, "app"), (auth, "auth")):
        assert value(samples, "logwarden_lag_bytes", source=source, path=str(path)) == 0
        assert value(samples, "logwarden_lag_seconds", source=source, path=str(path)) == 0
    assert value(samples, "logwarden_read_errors_total") == 0
    assert value(samples, "logwarden_write_errors_total", stage="commit") == 0
    assert value(samples, "logwarden_lost_bytes_total") == 0
    assert value(samples, "logwarden_unmeasured_truncations_total") == 0
    # one observation per commit
    commits = value(samples, "logwarden_commits_total")
    assert commits >= 1
    assert value(samples, "logwarden_commit_duration_seconds_count") == commits
    assert value(samples, "logwarden_commit_duration_seconds_bucket", le="+Inf") == commits

    # SIGUSR1 publishes the active report: the counter says so, and the dir holds it
    assert value(samples, "logwarden_reports_published_total", report="out") == 0
    daemon.signal(signal.SIGUSR1)
    wait_until(
        lambda: value(scrape(port), "logwarden_reports_published_total", report="out") == 1,
        message="the report published",
    )
    assert len(list((workdir / "reports").glob("out-*.json"))) == 1
    assert len(published_records(workdir / "reports")) == 15  # 14 matches and the alert
    assert value(scrape(port), "logwarden_report_active_records", report="out") == 0

    # the textfile says the same (it is rewritten every 100ms)
    textfile = workdir / "prom" / "logwarden.prom"
    wait_until(
        lambda: (
            textfile.exists()
            and value(
                parse(textfile.read_text()), "logwarden_reports_published_total", report="out"
            )
            == 1
        ),
        message="the textfile to show the publish",
    )
    written = parse(textfile.read_text())
    for key in ("logwarden_lines_total", "logwarden_bytes_total"):
        for source in ("app", "auth"):
            assert value(written, key, source=source) == value(samples, key, source=source)
    assert value(written, "logwarden_matches_total", rule="hit") == 10
    assert textfile.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user

    # at stop: the endpoint closes, the textfile keeps the final figures, files still counted
    assert daemon.stop() == 0
    with pytest.raises(OSError):
        scrape(port)
    final = parse(textfile.read_text())
    assert value(final, "logwarden_lines_total", source="app") == 30
    assert value(final, "logwarden_files_watched", source="app") == 1


def test_lag_of_a_file_the_daemon_is_behind_on(workdir: Path, daemon: Daemon) -> None:
    """A last line without its newline is read but not yet a line: the daemon is behind on it
    by its length, and the age of its first byte grows until the line is completed."""
    app = workdir / "logs" / "app.log"
    app.write_bytes(b"seq=1 ok\n")
    (workdir / "logs" / "auth.log").write_bytes(b"")
    daemon.start()
    port = serving_port(daemon)
    partial = b"seq=3 FAIL but not yet ended"
    with open(app, "ab") as handle:
        handle.write(partial)
    lag = {"source": "app", "path": str(app)}
    wait_until(
        lambda: value(scrape(port), "logwarden_lag_bytes", **lag) == len(partial),
        message="the partial line counted as lag",
    )
    wait_until(
        lambda: value(scrape(port), "logwarden_lag_seconds", **lag) >= 1.0,
        message="the lag's age to grow",
    )
    assert value(scrape(port), "logwarden_matches_total", rule="hit") == 0
    with open(app, "ab") as handle:
        handle.write(b"\n")
    wait_until(
        lambda: value(scrape(port), "logwarden_lag_bytes", **lag) == 0,
        message="the lag gone once the line ends",
    )
    samples = scrape(port)
    assert value(samples, "logwarden_lag_seconds", **lag) == 0
    assert value(samples, "logwarden_matches_total", rule="hit") == 1


def test_textfile_is_never_partial(workdir: Path, daemon: Daemon) -> None:
    """Read while the daemon rewrites it every 100ms: always whole, and nothing in the directory
    that node_exporter's *.prom glob could pick up half-written."""
    (workdir / "logs" / "app.log").write_bytes(b"seq=3 FAIL\n")
    daemon.start()
    textfile = workdir / "prom" / "logwarden.prom"
    wait_until(textfile.exists, message="the textfile")
    first_inode = textfile.stat().st_ino
    inodes, reads = {first_inode}, 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with open(textfile, "rb") as handle:
            inodes.add(os.fstat(handle.fileno()).st_ino)
            text = handle.read().decode()
        samples = parse(text)
        # the last family written is present: the file is whole
        assert ("logwarden_start_time_seconds", frozenset()) in samples, text
        assert value(samples, "logwarden_matches_total", rule="hit") == 1
        for name in (p.name for p in (workdir / "prom").iterdir()):
            assert name == "logwarden.prom" or not name.endswith(".prom"), name
        reads += 1
    assert reads > 10
    assert len(inodes) > 2, "the textfile was not being replaced meanwhile"


def test_counters_stay_monotonic_across_a_reload_that_moves_the_endpoint(
    workdir: Path, daemon: Daemon
) -> None:
    app = workdir / "logs" / "app.log"
    app.write_bytes(b"seq=3 FAIL\nseq=4 ok\n")
    (workdir / "logs" / "auth.log").write_bytes(b"denied user=eve\n")
    daemon.start()
    port = serving_port(daemon)
    wait_until(
        lambda: value(scrape(port), "logwarden_lines_total", source="auth") == 1,
        message="the lines read",
    )
    before = scrape(port)

    # the reload drops source auth, moves the endpoint and the textfile
    text = CONFIG.replace("LISTEN", "localhost:0").replace("TEXTFILE", "prom/moved.prom")
    text = text.replace('[sources.auth]\npaths = ["logs/auth.log"]\nstart_at = "beginning"\n', "")
    write_config(workdir / "logwarden.toml", text.replace('sources = ["auth"]\n', ""))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: daemon.logged("reloaded"), message="the reload")
    new_port = serving_port(daemon)
    assert new_port != port
    with pytest.raises(OSError):
        scrape(port)  # the old endpoint is closed
    with open(app, "ab") as handle:
        handle.write(b"seq=6 FAIL\n")
    wait_until(
        lambda: value(scrape(new_port), "logwarden_matches_total", rule="hit") == 2,
        message="the new match",
    )
    after = scrape(new_port)
    for (name, labels), figure in before.items():
        if name.endswith(("_total", "_count", "_sum", "_bucket")):
            assert after[(name, labels)] >= figure, (name, dict(labels))
    # a source gone since the reload keeps its figures: they count what was done
    assert value(after, "logwarden_lines_total", source="auth") == 1
    moved = workdir / "prom" / "moved.prom"
    wait_until(moved.exists, message="the textfile at its new path")
    assert not (workdir / "prom" / "logwarden.prom").exists()  # no stale file left to serve
    wait_until(
        lambda: value(parse(moved.read_text()), "logwarden_lines_total", source="app") == 3,
        message="the textfile at its new path to count the new line",
    )


def test_bad_listen_is_a_config_error(workdir: Path) -> None:
    configure(workdir, "9108", "prom/logwarden.txt")
    result = subprocess.run(
        [*LOGWARDEN, "check-config", "-c", str(workdir / "logwarden.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    lines = (workdir / "logwarden.toml").read_text().splitlines()
    listen_line = next(i for i, line in enumerate(lines, 1) if line.startswith("listen"))
    assert (
        f"logwarden.toml:{listen_line}: metrics.listen: '9108' is not an address" in result.stderr
    )
    assert "metrics.textfile: must end in .prom" in result.stderr


def test_a_port_in_use_stops_start_up_with_a_clear_error(workdir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        configure(workdir, f"127.0.0.1:{port}", "prom/logwarden.prom")
        result = subprocess.run(
            [*LOGWARDEN, "run", "-c", str(workdir / "logwarden.toml"), "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} for metrics: Address already in use" in (
        result.stderr + result.stdout
    )


def test_render_one_series_per_path_and_cumulative_buckets() -> None:
    """Two files at one path for a moment (a deleted file draining beside its successor) give one
    series, or Prometheus would reject the scrape; histogram buckets add up."""
    durations = DurationHistogram()
    for seconds in (0.0001, 0.002, 0.002, 20.0):
        durations.observe(seconds)
    files = (
        FileSnapshot("app", "/l/a.log", 1, 10, 100, 150, 50, 9, "draining", None, 4.0),
        FileSnapshot("app", "/l/a.log", 1, 11, 0, 20, 20, 0, "following", None, 1.0),
        FileSnapshot("app", "/l/b.log", 0, 0, 0, 0, 0, 0, "error", "Permission denied"),
    )
    snapshot = DaemonSnapshot(
        taken=10.0, started=0.0, config_path=Path("c.toml"), lines=9, bytes=100,
        matches={}, alerts=0, possibly_lost_bytes=0, unmeasured_truncations=0,
        commit=CommitSnapshot(4, 0, None, 20.0, durations=durations.snapshot()),
        reports={}, files=files, sources=("app",), rules=("hit",),
        rule_state_evictions={"hit": 2}, times_out_of_bounds={"app": 5},
        journals=(
            JournalSnapshot(
                "auth-journal", None, "s=1;i=2", "2026-11-25T23:00:00.000000Z", 1.5, 40, 3, 0,
                "following", None,
            ),
        ),
    )  # fmt: skip
    samples = parse(render(snapshot).decode())
    assert value(samples, "logwarden_rule_state_evictions_total", rule="hit") == 2
    assert value(samples, "logwarden_event_times_out_of_bounds_total", source="app") == 5
    assert value(samples, "logwarden_journalctl_restarts_total", source="auth-journal") == 3
    assert value(samples, "logwarden_journal_entries_total", source="auth-journal") == 40
    assert value(samples, "logwarden_journal_lag_seconds", source="auth-journal") == 1.5
    assert value(samples, "logwarden_lag_bytes", source="app", path="/l/a.log") == 70
    assert value(samples, "logwarden_lag_seconds", source="app", path="/l/a.log") == 4.0
    assert (
        "logwarden_lag_bytes",
        frozenset({("source", "app"), ("path", "/l/b.log")}),
    ) not in samples
    assert value(samples, "logwarden_files_watched", source="app") == 2
    assert value(samples, "logwarden_files_unreadable", source="app") == 1
    assert value(samples, "logwarden_matches_total", rule="hit") == 0
    assert value(samples, "logwarden_lines_total", source="app") == 0
    buckets = {
        le: value(samples, "logwarden_commit_duration_seconds_bucket", le=le)
        for le in ("0.0005", "0.0025", "10.0", "+Inf")
    }
    assert buckets == {"0.0005": 1, "0.0025": 3, "10.0": 3, "+Inf": 4}
    assert value(samples, "logwarden_commit_duration_seconds_sum") == pytest.approx(20.0041)
