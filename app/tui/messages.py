"""What the answering worker posts back to the app, and a question waiting for the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message as TextualMessage

from skiff.app.tui.widgets import AnswerView

if TYPE_CHECKING:
    from skiff.assistant.answer import Answer


@dataclass
class Pending:
    question: str
    conversation_id: str
    route: str | None = None


class Token(TextualMessage):
    def __init__(self, view: AnswerView, piece: str) -> None:
        super().__init__()
        self.view, self.piece = view, piece


class SetAside(TextualMessage):
    """The text streamed so far was a draft set aside for a stronger answer."""

    def __init__(self, view: AnswerView, reason: str) -> None:
        super().__init__()
        self.view, self.reason = view, reason


class WorkProgress(TextualMessage):
    def __init__(self, view: AnswerView, stage: str, done: int, total: int) -> None:
        super().__init__()
        self.view, self.stage, self.done, self.total = view, stage, done, total


class Answered(TextualMessage):
    def __init__(self, view: AnswerView, answer: Answer | None, status: str, error: str = "") -> None:
        super().__init__()
        self.view, self.answer, self.status, self.error = view, answer, status, error
