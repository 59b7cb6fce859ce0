"""sd_notify: tell systemd about readiness, status, reloads, stopping and liveness.

The protocol is one datagram of `KEY=VALUE` lines to the AF_UNIX socket named by $NOTIFY_SOCKET
(a path, or an abstract address when it starts with `@`), modelled on the self-contained example
in sd_notify(3). In-house rather than a dependency because it is that small, and because a
notifier must never raise: an error while notifying once killed a peer's service at start-up,
so every failure here is swallowed and counted.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """A no-op without $NOTIFY_SOCKET; otherwise sends notifications, never raising."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.failures = 0
        self.watchdog_interval = _watchdog_interval(env)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto(message.encode(), self.address)
        except OSError:
            self.failures += 1
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(ready=1, status=status) if status else self.send(ready=1)

    def reloading(self) -> bool:
        # systemd requires MONOTONIC_USEC with RELOADING=1 so it can tell this reload from the next
        return self.send(
            reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def stopping(self) -> bool:
        return self.send(stopping=1)

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def watchdog(self) -> bool:
        return self.send(watchdog=1)

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(extend_timeout_usec=int(seconds * 1_000_000))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _address(raw: str) -> str | bytes | None:
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]  # abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # vsock and other forms are not for a local daemon


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of WATCHDOG_USEC (sd_watchdog_enabled(3)), if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
