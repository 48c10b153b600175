"""The TUI's widgets: the question box, the messages with their badges, the status line."""

from __future__ import annotations

from textual.containers import Vertical
from textual.message import Message as TextualMessage
from textual.widgets import Markdown, Static, TextArea
from textual.widgets._markdown import MarkdownStream


class ChatInput(TextArea):
    """Enter sends; ctrl+j (or shift+enter where the terminal reports it) adds a newline; up and
    down on the first or last line recall earlier questions."""

    class Submitted(TextualMessage):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, **kwargs) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, compact=True, highlight_cursor_line=False,
                         placeholder="Ask about your notes…  (Enter sends, ctrl+j newline, / for commands)", **kwargs)
        self.recall: list[str] = []
        self._recall_at: int | None = None

    async def _on_key(self, event) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text.strip()
            if text:
                self.post_message(self.Submitted(text))
                self.recall.append(text)
                self._recall_at = None
                self.clear()
            return
        if event.key in ("ctrl+j", "shift+enter"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        row = self.cursor_location[0]
        if event.key == "up" and row == 0 and self.recall:
            event.prevent_default()
            event.stop()
            self._recall_at = len(self.recall) - 1 if self._recall_at is None else max(0, self._recall_at - 1)
            self.load_text(self.recall[self._recall_at])
            return
        if event.key == "down" and row == self.document.line_count - 1 and self._recall_at is not None:
            event.prevent_default()
            event.stop()
            self._recall_at += 1
            if self._recall_at >= len(self.recall):
                self._recall_at = None
                self.clear()
            else:
                self.load_text(self.recall[self._recall_at])
            return
        await super()._on_key(event)


class QuestionView(Static):
    DEFAULT_CLASSES = "question"


class AnswerView(Vertical):
    """One answer: streamed Markdown, then its badge and sources. `details` toggles the full
    decision record."""

    DEFAULT_CLASSES = "answer"

    def __init__(self, message_id: str, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.message_id = message_id
        self.text = text
        self.answer_id: str | None = None
        self.meta: dict = {}  # the answer's record as the assistant returned it (badge, sources, decision)
        self.markdown = Markdown(text, classes="answer-text")
        self.badge = Static("", classes="badge")
        self.sources = Static("", classes="sources")
        self.details = Static("", classes="details")
        self.details.display = False
        self._stream: MarkdownStream | None = None

    def compose(self):
        yield self.markdown
        yield self.badge
        yield self.sources
        yield self.details

    async def append(self, piece: str) -> None:
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        self.text += piece
        await self._stream.write(piece)

    async def finish(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None

    def show_meta(self, meta: dict, badge: str, sources: str, details: str) -> None:
        self.meta = meta
        self.badge.update(badge)
        self.sources.update(sources)
        self.sources.display = bool(sources)
        self.details.update(details)

    def toggle_details(self) -> None:
        self.details.display = not self.details.display


class StatusLine(Static):
    """Model, cloud and index state, and the router's share and spend, on one line."""

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.parts: dict[str, str] = {"model": "model: loading…", "cloud": "", "index": "", "router": ""}

    def set_part(self, name: str, text: str) -> None:
        self.parts[name] = text
        self.update("  │  ".join(part for part in self.parts.values() if part))
