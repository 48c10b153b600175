"""What every CLI command shares: the consoles, failing with a one-line message, JSON output and
building the Assistant from settings."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, NoReturn

import typer
from rich.text import Text
from skiff.app.terminal_text import SafeConsole, terminal_safe_json

out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(Text.assemble(("skiff:", "bold red"), " ", message), highlight=False)  # plain text, never markup
    raise typer.Exit(code)


def dump(obj) -> None:
    sys.stdout.write(terminal_safe_json(obj) + "\n")
    sys.stdout.flush()


def assistant_or_fail(**overrides):
    # Heavy imports stay out of `skiff --version` and `skiff --help`.
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    try:
        settings = load_settings(**overrides)
    except Exception as error:  # noqa: BLE001 - pydantic's ValidationError names the bad key and value
        fail(f"invalid configuration: {error}")
    _say_recoveries()
    return Assistant(settings)


def _say_recoveries() -> None:
    """A damaged file skiff found and set aside is said on stderr the moment it happens."""
    from skiff.assistant import on_recovery

    on_recovery(lambda recovery: err.print(Text.assemble(("skiff:", "bold yellow"), " ", recovery.message()),
                                           highlight=False), replay=False)


@contextmanager
def assistant_session(**overrides) -> Iterator:
    """An Assistant for one command, closed however the command ends (a `fail` included)."""
    assistant = assistant_or_fail(**overrides)
    try:
        yield assistant
    finally:
        assistant.close()
