"""`skiff export`: a chat from the TUI's history as Markdown or JSON, to stdout or a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from skiff.app.common import err, fail, out


def export(
    chat: Optional[str] = typer.Argument(None, help="The chat's id, or words of its title (default: the latest chat)."),
    form: str = typer.Option("md", "--format", "-f", help="md (Markdown) or json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    list_chats: bool = typer.Option(False, "--list", help="List the chats (id, when, title) and export nothing."),
) -> None:
    """Export a chat: its questions, answers, who answered each, and the sources as links to the files."""
    import time

    from skiff.app.chat_export import ExportError, export_chat, find_chat
    from skiff.app.history import ChatHistory
    from skiff.config.settings import load_settings
    from skiff.local.atomic import write_atomically

    try:
        settings = load_settings()
    except Exception as error:  # noqa: BLE001 - pydantic's ValidationError names the bad key and value
        fail(f"invalid configuration: {error}")
    path = settings.data_dir / "chats.sqlite3"
    if not path.exists():
        fail("there are no chats yet: ask something in `skiff` (the chat) first")
    history = ChatHistory(path)
    try:
        if list_chats:
            for conversation in history.conversations():
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(conversation.updated_at))
                out.print(f"{conversation.id}  [dim]{when}[/]  {escape(conversation.title)}", highlight=False)
            return
        try:
            conversation = find_chat(history, chat)
            text = export_chat(history, conversation, form)
        except ExportError as error:
            fail(str(error))
    finally:
        history.close()
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_atomically(output.expanduser(), text.encode("utf-8"))
    except OSError as error:
        fail(f"cannot write {output}: {error.strerror or error}")
    err.print(f"exported {escape(conversation.title)} to {output}", highlight=False)
