"""Rotated files the daemon never read at a covered path: rotated while it was stopped, renamed out
of the globs before it was opened, compressed. The daemon as a real subprocess, real files."""

from __future__ import annotations

import gzip
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Daemon, published_records, wait_until, write_config
from test_daemon import CONFIG, assert_exactly_once, expected_seqs, seqs, write_lines

pytestmark = pytest.mark.integration


@pytest.fixture(name="workdir")
def workdir_fixture(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    write_config(tmp_path / "logwarden.toml", CONFIG)  # follows logs/*.log, not *.gz nor *.[0-9]
    return tmp_path


@pytest.fixture(name="daemon")
def daemon_fixture(workdir: Path) -> Iterator[Daemon]:
    started = Daemon(workdir / "logwarden.toml", workdir / "daemon.log")
    yield started
    started.cleanup()


def compress(path: Path) -> Path:
    """What logrotate's `compress` does: `path.gz` written whole, then `path` removed."""
    target = path.with_name(path.name + ".gz")
    with open(path, "rb") as plain, gzip.open(target, "wb") as packed:
        while chunk := plain.read(64 * 1024):
            packed.write(chunk)
    path.unlink()
    return target


def published_seqs(workdir: Path) -> set[int]:
    return set(seqs(published_records(workdir / "reports")))


def wait_published(workdir: Path, expected: set[int], what: str) -> None:
    wait_until(lambda: published_seqs(workdir) >= expected, 20, message=what)


@pytest.mark.parametrize("second", ["plain", "gzip"])
def test_a_file_rotated_twice_while_stopped_is_read_once(
    workdir: Path, daemon: Daemon, second: str
) -> None:
    """a.log is followed; stopped; a.log → a.log.1, a new a.log gets lines, a.log → a.log.2
    (compressed: a.log.2.gz), a new a.log gets lines; started: every line of a.log.2 is in a
    report exactly once, and stays so across another restart."""
    logs = workdir / "logs"
    log = logs / "a.log"
    write_lines(log, 0, 30)
    daemon.start()
    wait_published(workdir, expected_seqs(0, 30), "the first lines")
    assert daemon.stop() == 0
    os.rename(log, logs / "a.log.1")
    write_lines(log, 30, 30)
    os.rename(log, logs / "a.log.2")
    if second == "gzip":
        compress(logs / "a.log.2")
    write_lines(log, 60, 30)
    daemon.start()
    wait_published(workdir, expected_seqs(0, 90), "the lines of the file rotated twice")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 90))
    # the rotated file is known now (finished, or in the checkpoint): not read again
    daemon.start()
    write_lines(log, 90, 30)
    wait_published(workdir, expected_seqs(0, 120), "lines after another restart")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 120))


def test_a_file_compressed_while_stopped_continues_where_it_was_read(
    workdir: Path, daemon: Daemon
) -> None:
    """a.log is read up to a partial last line; stopped; the line is completed and more written,
    then a.log → a.log.1 → a.log.1.gz (a.log.1 removed): the daemon continues in the
    decompressed stream where it stopped reading a.log, and sends nothing twice."""
    logs = workdir / "logs"
    log = logs / "a.log"
    write_lines(log, 0, 3000)
    with open(log, "ab") as handle:
        handle.write(b"seq=3000 FA")
    daemon.start()
    wait_published(workdir, expected_seqs(0, 3000), "the first lines")
    assert daemon.stop() == 0
    with open(log, "ab") as handle:
        handle.write(b"IL\n")
    write_lines(log, 3001, 299)
    os.rename(log, logs / "a.log.1")
    compress(logs / "a.log.1")
    daemon.start()
    wait_published(workdir, expected_seqs(0, 3300), "the rest, from the compressed file")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 3300))
    assert any(
        event.get("event") == "following file" and str(event.get("path")).endswith("a.log.1.gz")
        for event in daemon.events()
    ), "the compressed file was followed"


def test_a_file_renamed_out_of_the_globs_before_it_was_opened_is_drained(
    workdir: Path, daemon: Daemon
) -> None:
    """logrotate's race: after its rename, the writer re-creates app.log and writes to it; logrotate
    finds app.log there and renames it to app.log-<date>.backup, out of the globs. The daemon is
    held with SIGSTOP meanwhile, so it never sees that file at app.log: it must find it by its
    new name and drain it, exactly once."""
    logs = workdir / "logs"
    log = logs / "app.log"
    write_lines(log, 0, 30)
    daemon.start()
    wait_published(workdir, expected_seqs(0, 30), "the first lines")
    daemon.signal(signal.SIGSTOP)
    try:
        os.rename(log, logs / "app.log.1")
        write_lines(log, 30, 21)  # the short-lived file the writer re-created
        os.rename(log, logs / "app.log-2026112520.backup")
        log.touch()  # logrotate's create
    finally:
        daemon.signal(signal.SIGCONT)
    write_lines(log, 51, 30)
    wait_published(workdir, expected_seqs(0, 81), "the lines of the file renamed to .backup")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 81))
    daemon.start()
    write_lines(log, 81, 30)
    wait_published(workdir, expected_seqs(0, 111), "lines after a restart")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 111))


def test_compressing_a_file_already_read_sends_nothing_twice(workdir: Path, daemon: Daemon) -> None:
    """logrotate's `compress` while running: a.log → a.log.1, then a.log.1.gz written and
    a.log.1 removed. The .gz is a rotation the globs do not cover whose content was read already:
    it is recognised as a copy, and also after a restart nothing is sent twice."""
    logs = workdir / "logs"
    log = logs / "a.log"
    write_lines(log, 0, 300)
    daemon.start()
    wait_published(workdir, expected_seqs(0, 300), "the first lines")
    os.rename(log, logs / "a.log.1")
    write_lines(log, 300, 30)
    time.sleep(0.3)  # the watcher sees the rename before the compression
    compress(logs / "a.log.1")
    write_lines(log, 330, 30)
    wait_published(workdir, expected_seqs(0, 360), "the lines after the rotation")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 360))
    daemon.start()
    write_lines(log, 360, 30)
    wait_published(workdir, expected_seqs(0, 390), "lines after a restart")
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 390))
