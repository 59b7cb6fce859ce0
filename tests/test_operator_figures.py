"""What the daemon tells an operator, as a real subprocess: bytes lost to truncation (a figure,
or "unknown", never a 0 that only means "not counted") and sources that match no file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import LOGWARDEN, Daemon, published_records, wait_until, write_config
from test_daemon import (
    CONFIG,
    assert_exactly_once,
    expected_seqs,
    logrotate_config,
    seqs,
    workdir,
    write_lines,
)

pytestmark = pytest.mark.integration

__all__ = ["workdir"]  # the fixture, shared with test_daemon


def logwarden(workdir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*LOGWARDEN, *args, "-c", str(workdir / "logwarden.toml")],
        capture_output=True,
        timeout=60,
        check=False,
    )


def status_json(workdir: Path) -> dict[str, Any]:
    done = logwarden(workdir, "status", "--json")
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = orjson.loads(done.stdout)
    return document


def truncation_events(daemon: Daemon) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if "truncated" in str(e.get("event"))]


def caught_up(workdir: Path, count: int) -> None:
    """Every match of the first `count` lines published: the daemon has read them all."""
    wait_until(
        lambda: set(seqs(published_records(workdir / "reports"))) == expected_seqs(0, count),
        15,
        message="the daemon to publish what was written",
    )


def logrotate(workdir: Path, mode: str) -> None:
    if shutil.which("logrotate") is None:
        pytest.fail("logrotate is not installed: `make test` installs it with apt-get")
    conf = logrotate_config(workdir, mode)
    state = workdir / "logrotate.state"
    subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)], check=True, timeout=30)


# ---------------------------------------------------------------- loss to truncation


def test_a_routine_copytruncate_is_info_and_loses_nothing(workdir: Path, daemon: Daemon) -> None:
    log = workdir / "logs" / "app.log"
    log.touch()
    daemon.start()
    write_lines(log, 0, 300)
    caught_up(workdir, 300)
    logrotate(workdir, "copytruncate")  # app.log.1 (outside the globs) holds the old content
    write_lines(log, 300, 300)
    wait_until(lambda: len(truncation_events(daemon)) == 1, 15, message="the truncation seen")
    wait_until(lambda: status_json(workdir)["lines"] == 600, 15, message="status after it")
    [event] = truncation_events(daemon)
    assert event["level"] == "info", event
    assert event["copies"] == [str(workdir / "logs" / "app.log.1")]
    document = status_json(workdir)
    assert document["possibly_lost_bytes"] == 0
    assert document["unmeasured_truncations"] == 0
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 600))
    assert not [e for e in daemon.events() if e.get("level") in ("warning", "error")]


def test_a_truncation_without_a_copy_is_an_unknown_loss(workdir: Path, daemon: Daemon) -> None:
    """copytruncate into another directory (`olddir`): the daemon never sees the copy, so it
    cannot know what was written between its last read and the truncation."""
    (workdir / "old").mkdir()
    log = workdir / "logs" / "app.log"
    daemon.start()
    write_lines(log, 0, 300)
    caught_up(workdir, 300)
    logrotate(workdir, f"copytruncate\n    olddir {workdir / 'old'}")
    write_lines(log, 300, 30)
    wait_until(lambda: len(truncation_events(daemon)) == 1, 15, message="the truncation seen")
    wait_until(lambda: status_json(workdir)["lines"] == 330, 15, message="status after it")
    [event] = truncation_events(daemon)
    assert event["level"] == "warning" and event["possibly_lost_bytes"] == "unknown", event
    document = status_json(workdir)
    assert document["possibly_lost_bytes"] is None  # not 0: nothing says nothing was lost
    assert document["unmeasured_truncations"] == 1
    assert document["possibly_lost_known_bytes"] == 0
    shown = logwarden(workdir, "status").stdout.decode()
    assert "possibly lost to truncation: unknown" in shown, shown
    assert daemon.stop() == 0


def test_a_truncation_past_what_was_read_counts_those_bytes(workdir: Path, daemon: Daemon) -> None:
    """What the file was seen to hold beyond the lines read (here a partial last line) is lost
    to a truncation: that figure is logged as a warning and shown as known."""
    log = workdir / "logs" / "app.log"
    daemon.start()
    partial = b"seq=300 FA"
    with open(log, "ab") as handle:  # one write: whole lines and the start of the next
        handle.write(b"".join(b"seq=%d ok\n" % n for n in range(299)) + b"seq=299 FAIL\n" + partial)
    wait_until(lambda: status_json(workdir)["lines"] == 300, 15, message="the lines read")
    with open(log, "r+b") as handle:
        handle.truncate(0)
    write_lines(log, 1000, 30)
    wait_until(lambda: len(truncation_events(daemon)) == 1, 15, message="the truncation seen")
    wait_until(lambda: status_json(workdir)["lines"] == 330, 15, message="status after it")
    document = status_json(workdir)
    assert document["possibly_lost_bytes"] is None  # what came after it is unknown
    assert document["possibly_lost_known_bytes"] == len(partial)
    [event] = truncation_events(daemon)
    assert event["level"] == "warning", event
    assert event["lost_bytes_known"] == len(partial)
    assert daemon.stop() == 0


# ---------------------------------------------------------------- sources that match nothing


TWO_SOURCES = CONFIG.replace(
    "[rules.hit]",
    """[sources.auth]
paths = ["auth/auth.log"]

[rules.hit]""",
)


def test_check_config_warns_about_a_source_that_matches_nothing(workdir: Path) -> None:
    config = write_config(workdir / "logwarden.toml", TWO_SOURCES)
    (workdir / "logs" / "a.log").write_text("seq=1 ok\n")
    done = logwarden(workdir, "check-config")
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.decode().splitlines()
    line = TWO_SOURCES.splitlines().index('paths = ["auth/auth.log"]') + 1
    assert warnings == [
        f"logwarden: warning: {config}:{line}: sources.auth.paths: matches no file now "
        f"({workdir / 'auth' / 'auth.log'})"
    ]
    (workdir / "auth").mkdir()
    (workdir / "auth" / "auth.log").touch()
    done = logwarden(workdir, "check-config")
    assert done.returncode == 0 and done.stderr == b""


def test_the_daemon_says_which_sources_match_nothing(workdir: Path, daemon: Daemon) -> None:
    write_config(workdir / "logwarden.toml", TWO_SOURCES)
    write_lines(workdir / "logs" / "a.log", 0, 3)
    daemon.start()

    def said(event: str) -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event", "").startswith(event)]

    [warning] = said("source matches no file")
    assert warning["level"] == "warning" and warning["source"] == "auth"
    wait_until(lambda: "sources" in status_json(workdir), 10, message="a status")
    document = status_json(workdir)
    assert document["sources"] == {"app": {"files": 1}, "auth": {"files": 0}}
    shown = logwarden(workdir, "status").stdout.decode()
    assert "auth" in shown and "matches no file" in shown, shown

    # a discovery that changes nothing for it says nothing more (here: another source's file)
    write_lines(workdir / "logs" / "b.log", 3, 3)
    wait_until(
        lambda: status_json(workdir)["sources"]["app"] == {"files": 2}, 10, message="b.log found"
    )
    assert len(said("source matches no file")) == 1
    # a file appearing is told once, at info
    (workdir / "auth").mkdir()
    (workdir / "auth" / "auth.log").write_text("hello\n")
    wait_until(lambda: len(said("source matches files again")) == 1, 10, message="the info")
    [again] = said("source matches files again")
    assert again["level"] == "info" and again["source"] == "auth" and again["files"] == 1
    wait_until(
        lambda: status_json(workdir)["sources"]["auth"] == {"files": 1}, 10, message="status"
    )

    # and when it matches nothing again, that is said again, once
    (workdir / "auth" / "auth.log").unlink()
    wait_until(lambda: len(said("source matches no file")) == 2, 10, message="a new warning")
    wait_until(
        lambda: status_json(workdir)["sources"]["auth"] == {"files": 0}, 10, message="status"
    )
    assert daemon.stop() == 0
    assert len(said("source matches no file")) == 2
    assert len(said("source matches files again")) == 1


# ---------------------------------------------------------------- a rotated file's name


def test_a_rotated_file_is_named_by_its_current_name_while_it_drains(
    workdir: Path, daemon: Daemon
) -> None:
    log = workdir / "logs" / "app.log"
    rotated = workdir / "logs" / "app.log.1"  # outside the globs (`exclude = "*.[0-9]"`)
    write_lines(log, 0, 30)
    daemon.start()
    caught_up(workdir, 30)
    os.rename(log, rotated)
    write_lines(log, 30, 30)
    write_lines(rotated, 60, 30)  # a writer that has not reopened yet: the old file drains

    def names() -> list[str]:
        return sorted(os.path.basename(f["path"]) for f in status_json(workdir)["files"])

    wait_until(lambda: names() == ["app.log", "app.log.1"], 15, message="a row for each file")
    rows = {os.path.basename(f["path"]): f for f in status_json(workdir)["files"]}
    assert rows["app.log.1"]["state"] == "draining"
    assert rows["app.log"]["state"] == "following"

    def finished() -> list[dict[str, Any]]:
        return [e for e in daemon.events() if e.get("event") == "finished file"]

    wait_until(lambda: len(finished()) == 1, 15, message="the rotated file finished")
    assert finished()[0]["path"] == str(rotated)
    left = [e for e in daemon.events() if e.get("event") == "file left its path; draining it"]
    assert [(e["path"], e["old_path"]) for e in left] == [(str(rotated), str(log))]
    assert daemon.stop() == 0
    assert_exactly_once(workdir, expected_seqs(0, 90))
