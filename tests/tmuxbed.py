"""A command in tmux on a tmux server of its own (``tmux -L``: a private socket), as a
person would see it.  The user's own tmux server is never touched, and two tests never
share one."""

from __future__ import annotations

import itertools
import os
import subprocess
import time

_numbers = itertools.count(1)


class Tmux:
    def __init__(self, command: str, width: int = 120, height: int = 40) -> None:
        self.name = f"clusterd-test-{os.getpid()}-{next(_numbers)}"
        self.base = ["tmux", "-L", self.name]
        subprocess.run([*self.base, "new-session", "-d", "-s", "t", "-x", str(width), "-y",
                        str(height), command], check=True, timeout=10)  # fmt: skip

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "t", *keys], check=True, timeout=10)

    def alive(self) -> bool:
        found = subprocess.run([*self.base, "has-session", "-t", "t"], capture_output=True,
                               timeout=10)  # fmt: skip
        return found.returncode == 0

    def screen(self) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "t", "-S", "-200"],
                              capture_output=True, text=True, timeout=10).stdout  # fmt: skip

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
