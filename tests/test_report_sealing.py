"""Compressed and encrypted reports, index.json and retention, with the real daemon."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import LOGWARDEN, Daemon, published_records, wait_until, write_config
from logwarden.config import load
from logwarden.problems import ConfigError
from logwarden.report_index import INDEX_NAME, ReportIndex
from logwarden.sealing import MAGIC, ReportKey, ReportOpenError, load_key, open_report
from test_daemon import expected_seqs, seqs, start_writer

pytestmark = pytest.mark.integration

# one rule per report, all matching the same lines: each report holds the same matches
SEALED = """\
[daemon]
state_dir = "state"
commit_interval = "50ms"

[sources.app]
paths = ["logs/*.log"]
start_at = "beginning"

{rules}
[reports.plain]
dir = "reports/plain"
rotate_max_records = 7

[reports.gzip]
dir = "reports/gzip"
compress = "gzip"
rotate_max_records = 7

[reports.zstd]
dir = "reports/zstd"
format = "ndjson"
compress = "zstd"
rotate_max_records = 7

[reports.sealed]
dir = "reports/sealed"
compress = "gzip"
rotate_max_records = 7
encrypt = {{ key_file = "report.key" }}
"""
RULE = """\
[rules.{name}]
match = ['GET (?P<path>\\S+) from %{{ip}} user=%{{user}}']
report = "{name}"
"""
NAMES = ("plain", "gzip", "zstd", "sealed")


def make_key(path: Path) -> ReportKey:
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    return load_key(path)


@pytest.fixture
def sealed_dir(tmp_path: Path) -> Iterator[tuple[Path, Daemon, ReportKey]]:
    (tmp_path / "logs").mkdir()
    key = make_key(tmp_path / "report.key")
    rules = "".join(RULE.format(name=name) for name in NAMES)
    write_config(tmp_path / "logwarden.toml", SEALED.format(rules=rules))
    daemon = Daemon(tmp_path / "logwarden.toml", tmp_path / "daemon.log")
    yield tmp_path, daemon, key
    daemon.cleanup()


def access_lines(count: int) -> bytes:
    """Access-log lines; one in ten carries an ANSI escape in its path, as an attacker's would."""
    lines = []
    for n in range(count):
        path = f"/x\x1b[31mred{n}" if n % 10 == 0 else f"/page/{n % 4}"
        lines.append(f"GET {path} from 203.0.113.{n % 5} user=u{n % 3}\n")
    return "".join(lines).encode()


def essence(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a record says about its line, without the rule that matched it."""
    return sorted(
        (r["source"]["offset"], r["line"], tuple(sorted(r["captures"].items()))) for r in records
    )


def index_of(directory: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads((directory / INDEX_NAME).read_bytes())
    return document


def assert_index_matches(directory: Path, keys: list[ReportKey]) -> None:
    """index.json lists exactly the published files, with their true digest, size, count, times."""
    listed = index_of(directory)["files"]
    present = sorted(p.name for p in directory.iterdir() if p.name not in {INDEX_NAME})
    assert [item["file"] for item in listed] == present
    for item in listed:
        path = directory / item["file"]
        data = path.read_bytes()
        assert item["sha256"] == hashlib.sha256(data).hexdigest()
        assert item["bytes"] == len(data)
        records = published_records_of(path, keys)
        assert item["records"] == len(records)
        times = sorted(r["time"] for r in records)
        assert (item["first_time"], item["last_time"]) == (times[0], times[-1])


def published_records_of(path: Path, keys: list[ReportKey]) -> list[dict[str, Any]]:
    data = open_report(path, keys)
    if ".ndjson" in path.name:
        return [orjson.loads(line) for line in data.splitlines()]
    records: list[dict[str, Any]] = orjson.loads(data)["records"]
    return records


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*LOGWARDEN, *args], capture_output=True, timeout=60, check=False)


def test_sealed_reports_hold_exactly_what_a_plain_one_holds(
    sealed_dir: tuple[Path, Daemon, ReportKey],
) -> None:
    workdir, daemon, key = sealed_dir
    (workdir / "logs" / "access.log").write_bytes(access_lines(60))
    daemon.start()
    reports = workdir / "reports"
    wait_until(
        lambda: all(len(published_records(reports / n, [key])) >= 56 for n in NAMES),
        20,
        message="every report published",
    )
    assert daemon.stop() == 0  # publishes the rest (publish_on_stop)

    plain = published_records(reports / "plain")
    assert len(plain) == 60
    for name in NAMES[1:]:
        assert essence(published_records(reports / name, [key])) == essence(plain), name
    names = {name: sorted(p.name for p in (reports / name).iterdir()) for name in NAMES}
    assert all(n.endswith(".json.gz") for n in names["gzip"] if n != INDEX_NAME)
    assert all(n.endswith(".ndjson.zst") for n in names["zstd"] if n != INDEX_NAME)
    sealed_files = [reports / "sealed" / n for n in names["sealed"] if n != INDEX_NAME]
    assert sealed_files and all(p.name.endswith(".json.gz.enc") for p in sealed_files)
    for path in sealed_files:  # nothing readable on disk: no plaintext, not even gzip's magic
        data = path.read_bytes()
        assert data.startswith(MAGIC) and b"203.0.113" not in data
    for name in NAMES:
        assert_index_matches(reports / name, [key])
        assert not [p for p in (reports / name).iterdir() if p.name.startswith(".")]

    # `report decrypt` gives the JSON document; the wrong key is named as such
    decrypted = cli("report", "decrypt", "--key", str(workdir / "report.key"), str(sealed_files[0]))
    assert decrypted.returncode == 0, decrypted.stderr
    assert orjson.loads(decrypted.stdout)["records"] == published_records_of(sealed_files[0], [key])
    make_key(workdir / "other.key")
    wrong = cli("report", "decrypt", "--key", str(workdir / "other.key"), str(sealed_files[0]))
    assert wrong.returncode == 1 and b"wrong key" in wrong.stderr and not wrong.stdout
    tampered = workdir / sealed_files[0].name
    flipped = bytearray(sealed_files[0].read_bytes())
    flipped[40] ^= 1
    tampered.write_bytes(flipped)
    refused = cli("report", "decrypt", "--key", str(workdir / "report.key"), str(tampered))
    assert refused.returncode == 1 and b"authentication failed" in refused.stderr
    assert not refused.stdout


def test_sigkill_while_publishing_sealed_reports_is_exactly_once(tmp_path: Path) -> None:
    """SIGKILL at random moments while zstd + encrypted reports are staged and published."""
    (tmp_path / "logs").mkdir()
    key = make_key(tmp_path / "report.key")
    write_config(
        tmp_path / "logwarden.toml",
        """\
        [daemon]
        state_dir = "state"
        commit_interval = "50ms"
        [sources.app]
        paths = ["logs/*.log"]
        start_at = "beginning"
        [rules.hit]
        match = ['seq=%{int:seq} FAIL']
        [reports.out]
        dir = "reports"
        compress = "zstd"
        encrypt = { key_file = "report.key" }
        rotate_max_records = 5
        keep = 1000000
        """,
    )
    daemon = Daemon(tmp_path / "logwarden.toml", tmp_path / "daemon.log")
    rng = random.Random(13)
    total = 6000
    writer = start_writer(tmp_path / "logs" / "app.log", 0, total, rate=1500)
    try:
        for _ in range(5):
            daemon.start(timeout=30)
            time.sleep(rng.uniform(0.2, 0.8))
            daemon.kill()
        assert writer.wait(60) == 0
        daemon.start(timeout=30)
        expected = expected_seqs(0, total)
        wait_until(
            lambda: len(set(seqs(published_records(tmp_path / "reports", [key])))) >= len(expected),
            30,
            message="catch-up after the last restart",
        )
        assert daemon.stop() == 0
    finally:
        writer.kill()
        writer.wait(10)
        daemon.cleanup()
    reports = tmp_path / "reports"
    assert set(seqs(published_records(reports, [key]))) == expected_seqs(0, total)
    assert_exactly_once_keyed(reports, key, expected_seqs(0, total))
    assert_index_matches(reports, [key])
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]


def assert_exactly_once_keyed(reports: Path, key: ReportKey, expected: set[int]) -> None:
    got = seqs(published_records(reports, [key]))
    assert sorted(got) == sorted(expected), "duplicates or losses"


def test_retention_by_age_and_total_size(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    write_config(
        tmp_path / "logwarden.toml",
        """\
        [daemon]
        state_dir = "state"
        commit_interval = "50ms"
        [sources.app]
        paths = ["logs/*.log"]
        start_at = "beginning"
        [rules.hit]
        match = ['seq=%{int:seq} FAIL']
        report = "aged"
        [rules.hit2]
        match = ['seq=%{int:seq} FAIL']
        report = "sized"
        [reports.aged]
        dir = "aged"
        rotate_max_records = 1
        keep_days = 0.00004   # 3.5 s
        [reports.sized]
        dir = "sized"
        compress = "gzip"
        rotate_max_records = 1
        max_total_bytes = "2KiB"
        """,
    )
    daemon = Daemon(tmp_path / "logwarden.toml", tmp_path / "daemon.log")
    log_file = tmp_path / "logs" / "app.log"
    try:
        daemon.start()
        log_file.write_bytes(b"".join(b"seq=%d FAIL\n" % n for n in range(30)))
        wait_until(
            lambda: len(published_records(tmp_path / "aged")) == 30,
            20,
            message="first reports published",
        )
        sized = tmp_path / "sized"
        wait_until(lambda: (sized / INDEX_NAME).exists() and len(index_of(sized)["files"]) > 0, 10)
        time.sleep(4)  # the first 30 reports are now older than keep_days
        with open(log_file, "ab") as handle:
            handle.write(b"seq=100 FAIL\n")
        wait_until(
            lambda: seqs(published_records(tmp_path / "aged")) == [100],
            20,
            message="the reports older than keep_days deleted",
        )
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
    assert [item["records"] for item in index_of(tmp_path / "aged")["files"]] == [1]
    assert_index_matches(tmp_path / "aged", [])
    files = [p for p in sized.iterdir() if p.name != INDEX_NAME]
    assert sum(p.stat().st_size for p in files) <= 2048
    assert 0 < len(files) < 31  # some deleted to fit, the newest kept
    assert seqs(published_records(sized))[-1] == 100
    assert_index_matches(sized, [])


def test_key_and_library_problems_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    config = tmp_path / "logwarden.toml"
    base = """\
        [sources.app]
        paths = ["logs/*.log"]
        [rules.hit]
        match = ['FAIL']
        [reports.out]
        dir = "reports"
        """
    write_config(config, base + 'encrypt = { key_file = "missing.key" }\n')
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 78
    assert f"{config}:7: reports.out.encrypt.key_file: cannot read the key file".encode() in (
        result.stderr
    )
    (tmp_path / "short.key").write_bytes(b"0123456789")
    write_config(config, base + 'encrypt = { key_file = "short.key" }\n')
    with pytest.raises(ConfigError, match="must hold a 256-bit key"):
        load(config)
    (tmp_path / "raw.key").write_bytes(os.urandom(32))  # raw bytes are fine too
    write_config(config, base + 'encrypt = { key_file = "raw.key" }\ncompress = "zstd"\n')
    assert cli("check-config", "-c", str(config)).returncode == 0
    without_zstd = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['zstandard'] = None\n"
            "from logwarden.cli import main; sys.exit(main(sys.argv[1:]))",
            "check-config",
            "-c",
            str(config),
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert without_zstd.returncode == 78
    assert f'{config}:8: reports.out.compress: compress = "zstd" needs the zstandard'.encode() in (
        without_zstd.stderr
    )


def test_a_reload_with_an_unreadable_key_keeps_the_old_config(
    sealed_dir: tuple[Path, Daemon, ReportKey],
) -> None:
    workdir, daemon, key = sealed_dir
    daemon.start()
    (workdir / "report.key").unlink()
    daemon.signal(signal.SIGHUP)
    wait_until(
        lambda: any(
            e.get("event", "").startswith("reload refused")
            and "cannot read the key file" in str(e.get("problems"))
            for e in daemon.events()
        ),
        10,
        message="the refused reload",
    )
    (workdir / "logs" / "access.log").write_bytes(access_lines(7))  # one full sealed report
    wait_until(lambda: len(published_records(workdir / "reports" / "sealed", [key])) == 7, 10)
    assert daemon.stop() == 0


def test_an_index_lost_in_a_crash_is_rebuilt_from_the_files(
    sealed_dir: tuple[Path, Daemon, ReportKey],
) -> None:
    """A crash between a rename and its index.json: the next start describes the file itself."""
    workdir, daemon, key = sealed_dir
    (workdir / "logs" / "access.log").write_bytes(access_lines(14))
    daemon.start()
    assert daemon.stop() == 0
    reports = workdir / "reports"
    before = {name: index_of(reports / name)["files"] for name in NAMES}
    for name in NAMES:
        (reports / name / INDEX_NAME).unlink()
    daemon.start()
    wait_until(lambda: all((reports / n / INDEX_NAME).exists() for n in NAMES), 10)
    assert daemon.stop() == 0
    for name in NAMES:
        assert_index_matches(reports / name, [key])
        after = index_of(reports / name)["files"]
        assert [item["sha256"] for item in after] == [item["sha256"] for item in before[name]]


def test_a_report_name_with_dots_is_indexed_and_reloaded(tmp_path: Path) -> None:
    # `[reports."sec.v2"]` is a valid name: the index must order its files by seq, not trip on
    # the dots (it raised IndexError at every start once one report was published)
    names = [f"sec.v2-20261125T1200{n:02d}Z-{n:08d}.json" for n in (10, 9, 11)]
    for name in names:
        (tmp_path / name).write_bytes(b'{"records": []}')
    index = ReportIndex.load(tmp_path, "sec.v2", 0o640, [])
    assert list(index.entries) == sorted(names, key=lambda name: name.split("-")[-1])


def test_a_cut_zstd_report_is_an_error_not_a_shorter_report(tmp_path: Path) -> None:
    import zstandard

    whole = zstandard.ZstdCompressor().compress(b'{"records": [' + b"1," * 5000 + b"1]}")
    path = tmp_path / "out-20261125T120000Z-00000001.json.zst"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ReportOpenError, match="ends early"):
        open_report(path)
    path.write_bytes(whole)
    assert open_report(path).endswith(b"1]}")
