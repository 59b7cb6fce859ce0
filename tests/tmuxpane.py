"""A terminal for tests: a command in a pane of a private tmux server, read as a person sees it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid

from harness import wait_until


class Pane:
    """One tmux session on its own socket (never the user's server); `kill` ends the server."""

    def __init__(self, width: int = 160, height: int = 50) -> None:
        if shutil.which("tmux") is None:
            raise AssertionError("tmux is not installed (make test installs it)")
        self.tmux = ["tmux", "-L", f"logwarden-test-{uuid.uuid4().hex[:12]}", "-f", "/dev/null"]
        self.width, self.height = width, height

    def start(self, shell_command: str) -> None:
        """Run `shell_command` (sh syntax) in a terminal that claims 256 colours."""
        subprocess.run(
            [
                *self.tmux,
                "new-session",
                "-d",
                "-x",
                str(self.width),
                "-y",
                str(self.height),
                "-s",
                "test",
                shell_command,
            ],
            env={**os.environ, "TERM": "xterm-256color"},
            check=True,
            timeout=10,
        )

    def screen(self, colours: bool = False) -> str:
        """The pane's text, wrapped lines joined; with `colours`, its SGR sequences too."""
        return self._run("capture-pane", "-p", "-J", *(["-e"] if colours else []), "-t", "test")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        wait_until(lambda: text in self.screen(), timeout, message=f"{text!r} on the screen")
        return self.screen()

    def keys(self, *keys: str) -> None:
        self._run("send-keys", "-t", "test", *keys)

    def title(self) -> str:
        return self._run("display-message", "-p", "-t", "test", "#{pane_title}")

    def kill(self) -> None:
        """Stop what runs in the pane, then the server. Closing a terminal only sends SIGHUP,
        which the daemon takes as "reload": its process group gets a SIGTERM first."""
        try:
            pid = int(self._run("display-message", "-p", "-t", "test", "#{pane_pid}"))
            os.killpg(pid, signal.SIGTERM)
            wait_until(lambda: not _alive(pid), 30, message="the pane's processes to stop")
        except (subprocess.CalledProcessError, ValueError, ProcessLookupError):
            pass  # no session (it never started, or it ended): nothing runs there
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=10, check=False)

    def _run(self, *args: str) -> str:
        done = subprocess.run([*self.tmux, *args], capture_output=True, timeout=10, check=True)
        return done.stdout.decode()


def _alive(group: int) -> bool:
    """Whether any process of a process group is left."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
