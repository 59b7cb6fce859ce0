"""The atomic publish leaves the old file or the new one, never a temporary under a real name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from logwarden.atomic import TEMP_PREFIX, make_dirs, remove_stale_temporaries, write_atomically


def test_replaces_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_bytes(b"old")
    write_atomically(target, [b"new", b"er"], mode=0o644)
    assert target.read_bytes() == b"newer"
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failure_midway_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_bytes(b"old")

    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomically(target, chunks())
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc-r.json").write_bytes(b"half")
    (tmp_path / "kept.json").write_bytes(b"{}")
    assert remove_stale_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["kept.json"]


def test_make_dirs_fsyncs_each_new_directory_into_its_parent(
    tmp_path: Path, fsync_spy: list[Path]
) -> None:
    synced = fsync_spy
    make_dirs(tmp_path / "a" / "b" / "c", mode=0o750)
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o750
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    make_dirs(tmp_path / "a" / "b" / "c")
    make_dirs(tmp_path / "a" / "b" / "d")
    assert synced == [tmp_path / "a" / "b"], "only what is created costs an fsync"


def test_make_dirs_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "a" / "b")
