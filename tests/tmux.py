"""The real `skiff` TUI in a real terminal: a detached tmux session, read back as the screen tmux
keeps (capture-pane), its window title and its paste buffers."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Callable

import pytest


class TmuxSession:
    """`redact` is applied to every screen an assertion quotes (the secrets test hides its key)."""

    def __init__(self, command: str, env: dict[str, str], width: int = 120, height: int = 32,
                 redact: Callable[[str], str] = str) -> None:
        if not shutil.which("tmux"):
            pytest.skip("tmux not installed")
        self.redact = redact
        self.screens: list[str] = []  # every screen read, in order
        self.name = f"skiff-test-{os.getpid()}-{time.monotonic_ns()}"
        env_args = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        *env_args, command], check=True)

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True).stdout

    def screen(self, scrollback: bool = False) -> str:
        shown = self._tmux("capture-pane", "-p", *(["-S", "-"] if scrollback else []), "-t", self.name)
        self.screens.append(shown)
        return shown

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 120,
                 scrollback: bool = False) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen(scrollback)
            if condition(shown):
                return shown
            time.sleep(0.2)
        raise AssertionError(self.redact(f"{what} never appeared:\n{self.screen(scrollback)}"))

    def wait_screen(self, text: str, timeout: float = 120) -> str:
        return self.wait_for(lambda shown: text in shown, repr(text), timeout)

    def type(self, text: str) -> None:  # literally, keys and all
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)

    def press(self, key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)

    def title(self) -> str:
        return self._tmux("display-message", "-p", "-t", self.name, "#{pane_title}").strip()

    def buffers(self) -> str:
        """tmux's paste buffers, which an OSC 52 from the program fills when set-clipboard is on."""
        return self._tmux("list-buffers")

    def option(self, name: str, value: str) -> None:
        subprocess.run(["tmux", "set-option", "-t", self.name, name, value], check=True)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def quit_with(self, key: str, timeout: float = 20) -> None:
        self.press(key)
        deadline = time.monotonic() + timeout
        while self.alive():
            assert time.monotonic() < deadline, f"skiff did not quit on {key}"
            time.sleep(0.2)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)

    def __enter__(self) -> TmuxSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
