"""`skiff` with no arguments: a terminal chat over skiff's library API.

The first paint happens before anything heavy is imported: the router, the embedder and the model
load in a worker while the input already takes questions (they wait in a queue). Answers are
written by a thread worker that posts each piece back as a message; Esc cancels it and keeps what
was shown, marked as cancelled.
"""

from __future__ import annotations

import threading
from functools import cached_property

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer

from skiff.app.terminal_text import terminal_safe
from skiff.app.tui import format as fmt
from skiff.app.tui.chat_list import ChatList
from skiff.app.tui.commands import palette_commands
from skiff.app.tui.source_panel import SourcePanel
from skiff.app.tui.messages import Answered, Pending, SetAside, Token, WorkProgress
from skiff.app.tui.notes_bar import NotesBar
from skiff.app.tui.slash_commands import SlashCommands
from skiff.app.tui.status_line import StatusLine
from skiff.app.tui.widgets import AnswerView, ChatInput, MessageAction, QuestionView


class SkiffApp(SlashCommands, App):
    TITLE = "skiff"
    CSS = """
    #messages { height: 1fr; padding: 0 1; }
    .question { margin: 1 0 0 0; padding: 0 1; background: $boost; color: $text; }
    .answer { height: auto; margin: 0 0 1 0; }
    .answer-text { margin: 0; }
    .badge { color: $text-muted; padding: 0 1; }
    .sources { color: $text-muted; padding: 0 1; }
    .details { padding: 0 1; border-left: thick $accent; }
    .question:focus, .answer:focus { background: $boost; border-left: thick $accent; }
    #ask { height: auto; max-height: 8; border: tall $accent; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+g", "feedback('good')", "Good", id="good"),
        Binding("ctrl+b", "feedback('bad')", "Bad", id="bad"),
        Binding("ctrl+o", "details", "Decision", id="details"),
        Binding("ctrl+n", "new_chat", "New chat", id="new_chat"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(self, **settings_overrides) -> None:
        super().__init__()
        self.settings_overrides = settings_overrides
        self.assistant = None
        self.history = None
        self.opened = threading.Event()  # the assistant and the chat history exist
        self.ready = threading.Event()  # ... and the embedder and the model are loaded
        self.queue: list[Pending] = []
        self.conversation_id: str | None = None
        self.cancel_event: threading.Event | None = None
        self.answering = False
        self.views: list[AnswerView] = []
        self._applied_theme: str | None = None  # the starting theme is applied, not picked: not remembered
        self._stop_recoveries = lambda: None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ChatList(id="sidebar")
            with Vertical():
                yield VerticalScroll(id="messages")
                yield ChatInput(id="ask")
                yield NotesBar()
            yield SourcePanel()
        yield StatusLine()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ChatInput).focus()
        self.theme_changed_signal.subscribe(self, self._theme_picked)
        self.warm_up()

    def get_system_commands(self, screen):
        """skiff's actions in the command palette (ctrl+p), beside Textual's own (themes, quit…)."""
        yield from super().get_system_commands(screen)
        yield from palette_commands(self.run_command)
        yield SystemCommand("Index a folder…", "Type the folder's path after /index", self._prefill_index)

    def _prefill_index(self) -> None:
        box = self.query_one(ChatInput)
        box.load_text("/index ")
        box.move_cursor(box.document.end)
        box.focus()

    # -- loading -------------------------------------------------------------------------------

    @work(thread=True, name="warm-up", exit_on_error=False)
    def warm_up(self) -> None:
        from skiff.app.history import ChatHistory
        from skiff.config.settings import load_settings

        settings = load_settings(**self.settings_overrides)
        from skiff.assistant import on_recovery

        # From here on: what came before in this process was not this app's (tests run several).
        self._stop_recoveries = on_recovery(self._recovered, replay=False)
        self.history = ChatHistory(settings.data_dir / "chats.sqlite3")
        if settings.keymap:
            self.call_from_thread(self.set_keymap, settings.keymap)
        theme = self.history.preference("theme") or settings.theme
        if theme:
            self.call_from_thread(self._apply_theme, theme)

        from skiff.assistant import Assistant  # the heavy import (numpy, chromadb's client, llama_cpp)

        self.assistant = Assistant(settings)
        self.notes_bar.attach(self.assistant)
        self.opened.set()
        self.call_from_thread(self._show_conversations)
        self.call_from_thread(self._refresh_status)
        try:
            self.assistant.embedder.encode_query("warm up")
            self.call_from_thread(self._show_starting_index_size, *self.assistant.index_size())
            self.assistant.model  # noqa: B018 - loads the model now, off the UI thread
        except Exception as error:  # noqa: BLE001 - shown on screen; the chat stays open
            self.call_from_thread(self.status_line.set_part, "model", fmt.markup("[red]model: $error[/]", error=error))
            self.call_from_thread(self.notify, terminal_safe(str(error)), severity="error", timeout=30, markup=False)
            return
        self.call_from_thread(self.status_line.set_part, "model",
                              fmt.markup("$model ready", model=self.assistant.model_path.stem))
        self.ready.set()
        self.call_from_thread(self._drain_queue)
        if settings.watch_notes:
            self.call_from_thread(self.notes_bar.toggle_watching)

    def _recovered(self, recovery) -> None:
        """A damaged file was set aside (called from whichever thread found it): say so, and
        rebuild the index from the indexed folders at once."""
        if not self.is_running:
            return

        def show() -> None:
            self.notify(terminal_safe(recovery.message()), severity="warning", timeout=60, markup=False)
            if recovery.what == "notes index":
                self.notes_bar.index()

        try:
            self.call_from_thread(show)
        except RuntimeError:  # already on the UI thread
            show()

    def _apply_theme(self, name: str) -> None:
        if name not in self.available_themes:
            self.notify(f"unknown theme {name!r}; Textual's themes are listed under ctrl+p → Theme",
                        severity="warning")
            return
        self._applied_theme = name
        self.theme = name

    def _theme_picked(self, theme) -> None:
        # The signal arrives after the change, so the theme applied at start is recognised by name.
        if theme.name == self._applied_theme:
            self._applied_theme = None
        elif self.history is not None:
            self.history.set_preference("theme", theme.name)

    @property
    def status_line(self) -> StatusLine:
        return self.query_one(StatusLine)

    @cached_property
    def notes_bar(self) -> NotesBar:
        return self.query_one(NotesBar)

    @cached_property
    def messages_column(self) -> VerticalScroll:
        return self.query_one("#messages", VerticalScroll)

    def _refresh_status(self) -> None:
        if self.assistant is not None:
            self.status_line.show_assistant(self.assistant)

    # -- conversations ---------------------------------------------------------------------------

    def _show_conversations(self, select: str | None = None) -> None:
        chat_list = self.query_one(ChatList)
        conversations = self.history.conversations(chat_list.search_text)
        chat_list.show(conversations)
        if self.conversation_id is None or select is not None:
            target = select or (conversations[0].id if conversations else None)
            if target is not None:
                self._open(target)
        self.query_one(ChatInput).recall = self.history.questions()

    def _open(self, conversation_id: str) -> None:
        from skiff.assistant.answer import Answer

        self.conversation_id = conversation_id
        messages = self.messages_column
        messages.remove_children()
        self.views = []
        question = ""
        for message in self.history.messages(conversation_id):
            if message.role == "user":
                question = message.content
                messages.mount(QuestionView(question))
            else:
                view = AnswerView(message.id, question, message.content)
                view.answer_id = message.answer_id
                messages.mount(view)
                self.views.append(view)
                if message.meta:
                    answer = Answer.from_dict(message.meta)
                    view.call_after_refresh(view.show_meta, answer, fmt.badge(answer, message.status),
                                            fmt.sources(answer), fmt.details(answer, None))
        messages.scroll_end(animate=False)

    @on(ChatList.SearchChanged)
    def _search_changed(self) -> None:
        if self.history is not None:
            self._show_conversations()

    @on(ChatList.Chosen)
    def _conversation_chosen(self, event: ChatList.Chosen) -> None:
        if not self.answering:
            self._open(event.conversation_id)

    def action_new_chat(self) -> None:
        if self.history is None or self.answering:
            return
        conversation = self.history.create()
        self._show_conversations(select=conversation.id)

    # -- asking ----------------------------------------------------------------------------------

    @on(ChatInput.Submitted)
    def _submitted(self, event: ChatInput.Submitted) -> None:
        text = event.text
        if text.startswith("/"):
            self.run_command(text)
            return
        self._enqueue(text, None)

    def _enqueue(self, question: str, route: str | None) -> None:
        if self.history is None:  # still loading: the question waits for the history too
            self.queue.append(Pending(question, "", route))
            self.status_line.set_part("queue", f"{len(self.queue)} question(s) waiting for the model")
            return
        self.queue.append(Pending(question, self._current_conversation(), route))
        self._drain_queue()

    def _current_conversation(self) -> str:
        if self.conversation_id is None:
            self.conversation_id = self.history.create().id
            self._show_conversations(select=self.conversation_id)
        return self.conversation_id

    def _drain_queue(self) -> None:
        if self.answering or not self.queue or not self.ready.is_set():
            return
        pending = self.queue.pop(0)
        pending.conversation_id = pending.conversation_id or self._current_conversation()
        self.status_line.set_part("queue", "")
        history = self.history.history_for(pending.conversation_id)
        self.history.add_question(pending.conversation_id, pending.question)
        stored = self.history.start_answer(pending.conversation_id)
        messages = self.messages_column
        view = AnswerView(stored.id, pending.question)
        messages.mount(QuestionView(pending.question))
        messages.mount(view)
        self.views.append(view)
        messages.scroll_end(animate=False)
        self.answering = True
        self.cancel_event = threading.Event()
        self._answer(pending, history, view, self.cancel_event)

    @work(thread=True, name="answer", exit_on_error=False)
    def _answer(self, pending: Pending, history: list[dict], view: AnswerView, cancel: threading.Event) -> None:
        try:
            answer = self.assistant.ask(
                pending.question, history=history, route=pending.route,
                on_token=lambda piece: self.post_message(Token(view, piece)), cancel=cancel,
                on_progress=lambda stage, done, total: self.post_message(WorkProgress(view, stage, done, total)),
                on_set_aside=lambda reason: self.post_message(SetAside(view, reason)))
        except Exception as error:  # noqa: BLE001 - shown in the chat, never a crash
            self.post_message(Answered(view, None, "failed", str(error)))
            return
        status = "cancelled" if answer.stop_reason == "cancelled" else "done"
        self.post_message(Answered(view, answer, status))

    async def on_token(self, message: Token) -> None:
        # Stored first, then shown: a kill -9 can never lose text that was on screen.
        self.history.update_answer(message.view.message_id, message.view.stored_text + message.piece)
        await message.view.append(message.piece)
        self.messages_column.scroll_end(animate=False)

    async def on_set_aside(self, message: SetAside) -> None:
        await message.view.set_aside(message.reason)

    def on_work_progress(self, message: WorkProgress) -> None:
        label = fmt.STAGE_LABELS.get(message.stage, message.stage)
        message.view.show_work(f"{label}  (Esc cancels)", message.done, message.total)

    async def on_answered(self, message: Answered) -> None:
        view = message.view
        view.end_work()
        await view.finish()
        answer, status = message.answer, message.status
        if message.error:
            await view.append(f"\n\n*{message.error}*")
        view.answer_id = answer.id if answer is not None else None
        self.history.finish_answer(view.message_id, view.text, status, view.answer_id,
                                   answer.as_dict() if answer is not None else {})
        if answer is None:
            view.show_meta(None, "[red]failed[/]", "", "")
        else:
            view.show_meta(answer, fmt.badge(answer, status), fmt.sources(answer), fmt.details(answer, None))
        self.answering = False
        self.cancel_event = None
        self._show_conversations()
        self.status_line.show_router_stats(self.assistant)
        self._drain_queue()

    def action_cancel(self) -> None:
        """Esc stops the answer being written, or else the indexing under way."""
        if self.cancel_event is not None:
            self.cancel_event.set()
        else:
            self.notes_bar.stop()

    # -- after an answer -------------------------------------------------------------------------

    def _latest_answer(self) -> AnswerView | None:
        return next((view for view in reversed(self.views) if view.answer_id), None)

    def action_feedback(self, verdict: str, view: AnswerView | None = None) -> None:
        view = view or self._latest_answer()
        if view is None or not view.answer_id or self.assistant is None:
            self.notify("no answer to judge yet", severity="warning")
            return
        self._give_feedback(verdict, view.answer_id)

    @work(thread=True, name="feedback", exit_on_error=False)
    def _give_feedback(self, verdict: str, answer_id: str) -> None:
        result = self.assistant.feedback(verdict, answer_id)
        self.call_from_thread(self.notify, result.message)

    def action_details(self, view: AnswerView | None = None) -> None:
        view = view or self._latest_answer()
        if view is not None and view.answer_id:
            record = self.assistant.answer_record(view.answer_id) if self.assistant else None
            if record is not None and record.get("sent") and view.answer is not None:
                view.details.update(fmt.details(view.answer, record))
            view.toggle_details()

    @on(MessageAction)
    def _message_action(self, event: MessageAction) -> None:
        """A key on a focused message acts on that message, not on the latest one."""
        from skiff.router.policy import ROUTES

        view = event.view
        if event.action in ROUTES:
            self._enqueue(view.question, event.action)
        elif isinstance(view, AnswerView):
            if event.action in ("good", "bad"):
                self.action_feedback(event.action, view)
            elif event.action == "details":
                self.action_details(view)
            elif event.action == "source":
                self._show_source(view, event.argument)

    def _show_starting_index_size(self, files: int, chunks: int) -> None:
        if not self.status_line.parts["index"]:  # an /index typed at start may have said more already
            self.status_line.set_part("index", f"index: {files} files, {chunks} chunks" if files
                                      else "index: empty")

    @on(NotesBar.Indexed)
    def _show_index_size(self, event: NotesBar.Indexed) -> None:
        summary = event.summary
        self.status_line.set_part(
            "index", f"index: {summary.files_total} files, {summary.chunks_total} chunks{event.note}"
        )

    def on_unmount(self) -> None:
        self._stop_recoveries()
        if self.cancel_event is not None:
            self.cancel_event.set()
        for part in (self.history, self.assistant):
            if part is not None:
                part.close()
