"""sd_notify over a real AF_UNIX datagram socket, including abstract addresses and failures."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from logwarden.notify import Notifier


def receive(sock: socket.socket) -> dict[str, str]:
    sock.settimeout(2)
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.ready("3 files")
        assert receive(sock) == {"READY": "1", "STATUS": "3 files"}
        assert notifier.reloading()
        message = receive(sock)
        assert message["RELOADING"] == "1" and int(message["MONOTONIC_USEC"]) > 0
        notifier.stopping()
        assert receive(sock) == {"STOPPING": "1"}
        notifier.close()


def test_abstract_socket() -> None:
    name = f"logwarden-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.watchdog()
        assert receive(sock) == {"WATCHDOG": "1"}
        notifier.close()


def test_without_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()


def test_never_raises_when_nobody_listens(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not notifier.ready()
    assert notifier.failures == 1
    notifier.close()


def test_watchdog_interval_is_half_and_respects_pid() -> None:
    assert Notifier({"WATCHDOG_USEC": "2000000"}).watchdog_interval == 1.0
    assert (
        Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval
        == 1.0
    )
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({}).watchdog_interval is None
