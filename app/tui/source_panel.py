"""A side panel that shows a cited note at the cited lines, without leaving the chat; `e` opens the
same place in $EDITOR."""

from __future__ import annotations

import os
import shlex
import subprocess

from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, TextArea
from textual.widgets.text_area import Selection

from skiff.app.terminal_text import terminal_safe
from skiff.app.tui.format import markup
from skiff.app.tui.widgets import ChatInput


class SourcePanel(Vertical):
    DEFAULT_CSS = """
    SourcePanel { dock: right; width: 50%; border-left: solid $accent; display: none; }
    SourcePanel > Label { width: 1fr; padding: 0 1; background: $boost; }
    SourcePanel TextArea { height: 1fr; border: none; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close", id="source.close"),
        Binding("e", "edit", "Open in $EDITOR", id="source.edit"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source: dict | None = None

    def compose(self):
        yield Label("")
        yield TextArea("", read_only=True, show_line_numbers=True, soft_wrap=True, id="source-text")

    @property
    def text_area(self) -> TextArea:
        return self.query_one(TextArea)

    def show(self, source: dict, lines: list[str]) -> None:
        """`lines` are the note's lines as the indexer numbered them; the cited span is selected."""
        self.source = source
        where = f" › {source['section']}" if source.get("section") else ""
        page = f", page {source['page']}" if source.get("page") else ""
        self.query_one(Label).update(markup(
            "\\[$number] $path$where$page · lines $start–$end   (e edit, Esc close)", number=source["number"],
            path=source["path"], where=where, page=page, start=source["line_start"], end=source["line_end"]))
        area = self.text_area
        lines = [terminal_safe(line) for line in lines]
        area.load_text("\n".join(lines))
        last = max(0, min(source["line_end"], len(lines)) - 1)
        first = max(0, min(source["line_start"] - 1, last))
        area.selection = Selection((first, 0), (last, len(lines[last]) if lines else 0))
        self.display = True
        area.focus()
        area.scroll_to(y=max(0, first - 2), animate=False, immediate=True)

    def action_close(self) -> None:
        self.display = False
        self.screen.query_one(ChatInput).focus()

    def action_edit(self) -> None:
        if self.source is None:
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            self.notify("set $VISUAL or $EDITOR to edit notes from skiff", severity="warning")
            return
        with self.app.suspend():
            subprocess.run([*shlex.split(editor), f"+{self.source['line_start']}", self.source["path"]], check=False)
