"""The TUI's widgets: the question box and the messages, with their badges and keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from markdown_it import MarkdownIt
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message as TextualMessage
from textual.widget import Widget
from textual.widgets import Collapsible, Markdown, ProgressBar, Static, TextArea
from textual.widgets._markdown import MarkdownStream

from skiff.app.terminal_text import terminal_safe

if TYPE_CHECKING:
    from skiff.assistant.answer import Answer


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


class MessageAction(TextualMessage):
    """A key pressed on a focused message, for the app to carry out: "local" / "cloud" (ask this
    question again there), "good" / "bad" (judge this answer), "details", "source" (argument: N)."""

    def __init__(self, view: ChatMessage, action: str, argument: int | None = None) -> None:
        super().__init__()
        self.view, self.action, self.argument = view, action, argument


class ChatMessage(Widget):
    """A question or an answer that takes focus (shift+tab from the input, or a click), so the
    keys below act on that message rather than on the latest one."""

    DEFAULT_CSS = "ChatMessage { height: auto; }"
    can_focus = True
    BINDINGS = [
        Binding("l", "act('local')", "Ask again locally", id="message.local"),
        Binding("c", "act('cloud')", "Ask again in the cloud", id="message.cloud"),
        Binding("plus", "act('local+')", "Ask again with more local compute", id="message.local_plus"),
        Binding("y", "copy", "Copy", id="message.copy"),
        Binding("up", "neighbour(-1)", "Previous", show=False, id="message.previous"),
        Binding("down", "neighbour(1)", "Next", show=False, id="message.next"),
        Binding("i", "type", "Type", id="message.type"),
    ]

    question: str = ""

    def action_act(self, action: str, argument: int | None = None) -> None:
        self.post_message(MessageAction(self, action, argument))

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.plain_text())
        self.notify("copied")

    def plain_text(self) -> str:
        return self.question

    def action_neighbour(self, step: int) -> None:
        siblings = [child for child in self.parent.children if isinstance(child, ChatMessage)]
        at = siblings.index(self) + step
        if at >= len(siblings):
            self.action_type()
        elif at >= 0:
            siblings[at].focus()
            siblings[at].scroll_visible(animate=False)

    def action_type(self) -> None:
        self.screen.query_one(ChatInput).focus()


class QuestionView(ChatMessage, Static):
    DEFAULT_CLASSES = "question"

    def __init__(self, question: str, **kwargs) -> None:
        super().__init__(terminal_safe(question), markup=False, **kwargs)
        self.question = question


class AnswerView(ChatMessage, Vertical):
    """One answer: streamed Markdown, then its badge and sources. `details` toggles the full
    decision record."""

    DEFAULT_CLASSES = "answer"
    BINDINGS = [
        Binding("g", "act('good')", "Good", id="message.good"),
        Binding("b", "act('bad')", "Bad", id="message.bad"),
        Binding("o", "act('details')", "Decision", id="message.details"),
        Binding("k", "copy_code", "Copy code", id="message.copy_code"),
        *(Binding(str(n), f"act('source', {n})", f"Source {n}", show=False, id=f"message.source{n}")
          for n in range(1, 10)),
    ]

    def __init__(self, message_id: str, question: str, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.message_id = message_id
        self.question = question
        self.text = terminal_safe(text)  # model and cloud text: see skiff.app.terminal_text
        self.answer_id: str | None = None
        self.answer: Answer | None = None  # as the assistant returned it, or as the chat history kept it
        self.markdown = Markdown(self.text, classes="answer-text")
        self.badge = Static("", classes="badge")
        self.sources = Static("", classes="sources")
        self.details = Static("", classes="details")
        self.details.display = False
        self.work = ProgressBar(total=None, show_eta=False, classes="work")  # local+ training or sampling
        self.work_label = Static("", classes="badge")
        self.work.display = self.work_label.display = False
        self._stream: MarkdownStream | None = None
        self._code_copied = -1
        self.set_aside_prefix = ""

    def compose(self):
        yield self.work_label
        yield self.work
        yield self.markdown
        yield self.badge
        yield self.sources
        yield self.details

    def plain_text(self) -> str:
        return self.text

    def code_blocks(self) -> list[str]:
        return [token.content for token in MarkdownIt().parse(self.text) if token.type == "fence"]

    def action_copy_code(self) -> None:
        """Each press copies the next code block of the answer."""
        blocks = self.code_blocks()
        if not blocks:
            self.notify("this answer has no code block", severity="warning")
            return
        self._code_copied = (self._code_copied + 1) % len(blocks)
        self.app.copy_to_clipboard(blocks[self._code_copied])
        self.notify(f"copied code block {self._code_copied + 1} of {len(blocks)}")

    def show_work(self, label: str, done: int, total: int) -> None:
        self.work_label.update(label)
        self.work.update(total=total or None, progress=done)
        self.work.display = self.work_label.display = True

    def end_work(self) -> None:
        self.work.display = self.work_label.display = False

    async def append(self, piece: str) -> None:
        if self.work.display:
            self.end_work()
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        piece = terminal_safe(piece)
        self.text += piece
        await self._stream.write(piece)

    async def finish(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None

    @property
    def meta(self) -> dict:
        """The answer's record as the chat history keeps it."""
        return self.answer.as_dict() if self.answer is not None else {}

    async def set_aside(self, reason: str) -> None:
        """The text so far was a draft the check set aside: it folds under a line saying why, and
        the stronger answer streams in its place."""
        await self.finish()
        draft, self.text = self.text, ""
        # Until the answer is finished (and its record keeps the draft), the chat history holds
        # the draft above what follows, so a kill -9 loses nothing that was on screen.
        self.set_aside_prefix = f"{draft}\n\n*draft set aside: {reason}*\n\n"
        await self.markdown.update("")
        self._fold(draft, reason)

    @property
    def stored_text(self) -> str:
        """The text the chat history holds while the answer streams."""
        return self.set_aside_prefix + self.text

    def _fold(self, draft: str, reason: str) -> None:
        if not self.query(".draft"):
            folded = Collapsible(Static(terminal_safe(draft), markup=False), title=f"draft set aside: {reason}",
                                 collapsed=True, classes="draft")
            self.mount(folded, before=self.markdown)

    def show_meta(self, answer: Answer | None, badge: str, sources: str, details: str) -> None:
        if answer is not None and answer.draft:
            check = answer.draft_check or {}
            self._fold(answer.draft, check.get("reason", "the local model was unsure"))
        self.answer = answer
        self.badge.update(badge)
        self.sources.update(sources)
        self.sources.display = bool(sources)
        self.details.update(details)

    def toggle_details(self) -> None:
        self.details.display = not self.details.display
