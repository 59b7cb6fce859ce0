"""The Makefile's install steps: `make run` installs what running needs, `make test` the rest.

The real Makefile runs in a copy of the repository whose venv is fake: `.venv/bin/python`,
`logwarden`, `ruff` and `mypy` are scripts that record how they were called. So what is checked
is what make really runs, in order, without minutes of pip; a real venv from a bare clone is what
`make test` in CI builds anyway.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
RUN_INSTALL = "python -m pip install --quiet -e ."
DEV_INSTALL = "python -m pip install --quiet -e .[dev]"
FAKE_TOOL = '#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n'


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The Makefile and pyproject in a scratch dir, beside a venv of recording scripts."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    samples = tmp_path / "config" / "examples" / "samples"
    samples.mkdir(parents=True)
    for name in ("auth.log", "app.log"):
        (samples / name).write_text("")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "logwarden", "ruff", "mypy"):
        (bin_dir / tool).write_text(FAKE_TOOL)
        (bin_dir / tool).chmod(0o755)
    return tmp_path


def make(repo: Path, target: str) -> list[str]:
    """Run `make TARGET` in `repo`; the fake tools' calls, in order."""
    calls = repo / "calls.txt"
    calls.write_text("")
    result = subprocess.run(
        # no Debian packages to check: that step may call apt-get and is not what is tested
        ["make", "--no-print-directory", target, "DEBIAN_TEST_PACKAGES="],
        cwd=repo,
        env={**os.environ, "CALLS": str(calls), "MAKEFLAGS": ""},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return calls.read_text().splitlines()


def installs(calls: list[str]) -> list[str]:
    return [call for call in calls if " pip install " in call]


def test_run_installs_only_what_running_needs_and_test_adds_the_rest(repo: Path) -> None:
    run = make(repo, "run")
    assert installs(run) == [RUN_INSTALL]
    assert run[-1] == "logwarden run --foreground -c config/demo.toml"

    test = make(repo, "test")
    assert installs(test) == [DEV_INSTALL]
    assert "ruff check daemon tests" in test and "mypy " in test
    assert test[-1] == "python -m pytest -q"

    again = make(repo, "run")  # after `make test`: nothing to install
    assert installs(again) == []
    assert again == ["logwarden run --foreground -c config/demo.toml"]


def test_test_from_a_bare_clone_installs_everything_once(repo: Path) -> None:
    assert installs(make(repo, "test")) == [DEV_INSTALL]
    assert installs(make(repo, "run")) == []
    assert installs(make(repo, "test")) == []


def test_a_changed_pyproject_reinstalls(repo: Path) -> None:
    make(repo, "test")
    earlier = time.time() - 60
    for stamp in (repo / ".venv").glob(".installed-*"):
        os.utime(stamp, (earlier, earlier))
    assert installs(make(repo, "run")) == [RUN_INSTALL]
    assert installs(make(repo, "test")) == [DEV_INSTALL]
