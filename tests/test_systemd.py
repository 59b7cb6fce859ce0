"""The unit file, checked offline by systemd's own tools (never a running systemd manager)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "logwarden.service"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this venv's logwarden (verify checks it exists)."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: `make test` installs the systemd package")
    binary = Path(sys.executable).parent / "logwarden"
    assert binary.exists()
    copy = tmp_path / "logwarden.service"
    copy.write_text(UNIT.read_text().replace("/opt/logwarden/bin/logwarden", str(binary)))
    return copy


def test_verify_is_clean(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "logwarden.service" not in result.stderr, result.stderr


def test_security_exposure_at_most_one(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=10", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"Overall exposure level for logwarden.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= 1.0


def test_unit_contract() -> None:
    """What the service relies on, stated once: a change here must be deliberate."""
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "RestartSec=2s",
        "RestartPreventExitStatus=78",
        "DynamicUser=yes",
        "SupplementaryGroups=adm systemd-journal",
        "StateDirectory=logwarden",
        "ConfigurationDirectory=logwarden",
        "RuntimeDirectory=logwarden",
        "UMask=0027",
        "ProtectSystem=strict",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "CapabilityBoundingSet=",
        "ExecReload=/opt/logwarden/bin/logwarden check-config",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ]:
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    assert not re.search(r"^Type=notify-reload", text, re.MULTILINE), (
        "systemd 252 runs it as Type=simple"
    )
    assert "--foreground" not in text and "PIDFile" not in text


def test_metrics_drop_ins_verify_and_open_loopback_only(unit: Path) -> None:
    """The drop-ins the README gives for metrics load cleanly with the unit, and the endpoint's
    opens the host's network to loopback addresses only."""
    drop_ins = unit.parent / "logwarden.service.d"
    drop_ins.mkdir()
    for name in ("metrics-listen.conf", "metrics-textfile.conf"):
        (drop_ins / name).write_text((UNIT.parent / name).read_text())
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert "logwarden.service" not in verify.stderr, verify.stderr  # drop-in lines included
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "IP address allow list with only localhost entries" in security.stdout, security.stdout
    assert "Service may allocate Internet sockets" in security.stdout  # the drop-in applied
