"""`skiff` with no arguments: a terminal chat over skiff's library API.

The first paint happens before anything heavy is imported: the router, the embedder and the model
load in a worker while the input already takes questions (they wait in a queue). Answers are
written by a thread worker that posts each piece back as a message; Esc cancels it and keeps what
was shown, marked as cancelled.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import cached_property

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message as TextualMessage
from textual.widgets import Footer, Input, Label, ListItem, ListView

from skiff.app.tui import format as fmt
from skiff.app.tui.widgets import AnswerView, ChatInput, QuestionView, StatusLine

HELP = """[b]Commands[/b]
/local, /cloud   ask the last question again on that model (the two answers form a pair)
/good, /bad      judge the latest answer (the router learns from it)
/offline         toggle offline mode (nothing leaves the machine)
/index PATH      index a folder of notes            /watch   re-index indexed folders as files change
/new             a new chat        /rename TITLE   rename this chat     /delete   delete this chat
/open N          open source [N] of the latest answer in $EDITOR       /help   this text
Keys: Enter send · ctrl+j newline · Esc cancel · ctrl+g good · ctrl+b bad · ctrl+o decision · ctrl+n new chat"""


@dataclass
class Pending:
    question: str
    conversation_id: str
    route: str | None = None


class Token(TextualMessage):
    def __init__(self, view: AnswerView, piece: str) -> None:
        super().__init__()
        self.view, self.piece = view, piece


class Answered(TextualMessage):
    def __init__(self, view: AnswerView, answer: dict | None, status: str, error: str = "") -> None:
        super().__init__()
        self.view, self.answer, self.status, self.error = view, answer, status, error


class SkiffApp(App):
    TITLE = "skiff"
    CSS = """
    #sidebar { width: 28; border-right: solid $primary-background; }
    #conversations { height: 1fr; }
    #messages { height: 1fr; padding: 0 1; }
    .question { margin: 1 0 0 0; padding: 0 1; background: $boost; color: $text; }
    .answer { height: auto; margin: 0 0 1 0; }
    .answer-text { margin: 0; }
    .badge { color: $text-muted; padding: 0 1; }
    .sources { color: $text-muted; padding: 0 1; }
    .details { padding: 0 1; border-left: thick $accent; }
    #ask { height: auto; max-height: 8; border: tall $accent; }
    StatusLine { height: 1; color: $text-muted; padding: 0 1; }
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
        self.watch_stop: threading.Event | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("[b]Chats[/b]  ctrl+n new")
                yield Input(placeholder="search chats", id="search", compact=True)
                yield ListView(id="conversations")
            with Vertical():
                yield VerticalScroll(id="messages")
                yield ChatInput(id="ask")
                yield StatusLine()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ChatInput).focus()
        self.warm_up()

    def get_system_commands(self, screen):
        """skiff's actions in the command palette (ctrl+p), beside Textual's own (themes, quit…)."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("New chat", "Start a new conversation", self.action_new_chat)
        yield SystemCommand("Answer was good", "Tell the router the latest answer was good",
                            lambda: self.action_feedback("good"))
        yield SystemCommand("Answer was bad", "Tell the router the latest answer was bad",
                            lambda: self.action_feedback("bad"))
        yield SystemCommand("Ask again locally", "Resend the last question to the local model",
                            lambda: self._command("/local"))
        yield SystemCommand("Ask again in the cloud", "Resend the last question to the cloud endpoint",
                            lambda: self._command("/cloud"))
        yield SystemCommand("Show the decision", "Why the latest answer came from where it came",
                            self.action_details)
        yield SystemCommand("Toggle offline mode", "Keep every question on this machine, or not",
                            lambda: self._command("/offline"))
        yield SystemCommand("Watch notes folders", "Re-index indexed folders as their files change (toggle)",
                            lambda: self._command("/watch"))
        yield SystemCommand("skiff help", "Keys and slash commands", lambda: self._command("/help"))

    # -- loading -------------------------------------------------------------------------------

    @work(thread=True, name="warm-up", exit_on_error=False)
    def warm_up(self) -> None:
        from skiff.app.history import ChatHistory
        from skiff.router import Assistant, load_settings

        settings = load_settings(**self.settings_overrides)
        if settings.keymap:
            self.call_from_thread(self.set_keymap, settings.keymap)
        self.assistant = Assistant(settings)
        self.history = ChatHistory(settings.data_dir / "chats.sqlite3")
        self.opened.set()
        self.call_from_thread(self._show_conversations)
        self.call_from_thread(self._refresh_status)
        try:
            self.assistant.embedder.encode_query("warm up")
            self.assistant.model  # noqa: B018 - loads the model now, off the UI thread
        except Exception as error:  # noqa: BLE001 - shown on screen; the chat stays open
            self.call_from_thread(self.status_line.set_part, "model", f"[red]model: {error}[/]")
            self.call_from_thread(self.notify, str(error), severity="error", timeout=30)
            return
        self.call_from_thread(self.status_line.set_part, "model", f"model: {self.assistant.model_path.name} ready")
        self.ready.set()
        self.call_from_thread(self._drain_queue)
        if settings.watch_notes:
            self.call_from_thread(self._start_watching)

    @property
    def status_line(self) -> StatusLine:
        return self.query_one(StatusLine)

    @cached_property
    def messages_column(self) -> VerticalScroll:
        return self.query_one("#messages", VerticalScroll)

    def _refresh_status(self) -> None:
        if self.assistant is None:
            return
        settings = self.assistant.settings
        if settings.offline:
            cloud = "cloud: offline"
        elif settings.cloud_configured:
            cloud = f"cloud: {settings.cloud_model}"
        else:
            cloud = "cloud: not configured"
        self.status_line.set_part("cloud", cloud)
        self._refresh_router_stats()

    @work(thread=True, name="router-stats", exclusive=True, exit_on_error=False)
    def _refresh_router_stats(self) -> None:
        stats = self.assistant.router_stats()
        spend = stats["cloud_spend"]
        share = "—" if stats["cloud_share"] is None else f"{stats['cloud_share']:.0%}"
        budget = f" of ${spend['budget_usd']:.2f}" if spend.get("budget_usd") is not None else ""
        self.call_from_thread(self.status_line.set_part, "router",
                              f"cloud share {share} · spend ${spend['usd']:.2f}{budget}")

    # -- conversations ---------------------------------------------------------------------------

    def _show_conversations(self, select: str | None = None) -> None:
        listing = self.query_one("#conversations", ListView)
        listing.clear()
        conversations = self.history.conversations(self.query_one("#search", Input).value.strip())
        for conversation in conversations:
            listing.append(ListItem(Label(conversation.title), name=conversation.id))
        if self.conversation_id is None or select is not None:
            target = select or (conversations[0].id if conversations else None)
            if target is not None:
                self._open(target)
        self.query_one(ChatInput).recall = self.history.questions()

    def _open(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        messages = self.messages_column
        messages.remove_children()
        self.views = []
        for message in self.history.messages(conversation_id):
            if message.role == "user":
                messages.mount(QuestionView(message.content))
            else:
                view = AnswerView(message.id, message.content)
                view.answer_id = message.answer_id
                messages.mount(view)
                self.views.append(view)
                if message.meta:
                    view.call_after_refresh(view.show_meta, message.meta, fmt.badge(message.meta, message.status),
                                            fmt.sources(message.meta), fmt.details(message.meta, None))
        messages.scroll_end(animate=False)

    @on(Input.Changed, "#search")
    def _search_changed(self) -> None:
        if self.history is not None:
            self._show_conversations()

    @on(ListView.Selected, "#conversations")
    def _conversation_chosen(self, event: ListView.Selected) -> None:
        if event.item.name and not self.answering:
            self._open(event.item.name)

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
            self._command(text)
            return
        self._enqueue(text, None)

    def _enqueue(self, question: str, route: str | None) -> None:
        if self.history is None:  # still loading: the question waits for the history too
            self.queue.append(Pending(question, "", route))
            self.status_line.set_part("index", f"{len(self.queue)} question(s) waiting for the model")
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
        self.status_line.set_part("index", "")
        history = self.history.history_for(pending.conversation_id)
        self.history.add_question(pending.conversation_id, pending.question)
        stored = self.history.start_answer(pending.conversation_id)
        messages = self.messages_column
        view = AnswerView(stored.id)
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
            answer = self.assistant.ask(pending.question, history=history, route=pending.route,
                                        on_token=lambda piece: self.post_message(Token(view, piece)), cancel=cancel)
        except Exception as error:  # noqa: BLE001 - shown in the chat, never a crash
            self.post_message(Answered(view, None, "failed", str(error)))
            return
        status = "cancelled" if answer.stop_reason == "cancelled" else "done"
        self.post_message(Answered(view, answer.as_dict(), status))

    async def on_token(self, message: Token) -> None:
        # Stored first, then shown: a kill -9 can never lose text that was on screen.
        self.history.update_answer(message.view.message_id, message.view.text + message.piece)
        await message.view.append(message.piece)
        self.messages_column.scroll_end(animate=False)

    async def on_answered(self, message: Answered) -> None:
        view = message.view
        await view.finish()
        meta = message.answer or {}
        status = message.status
        if message.error:
            await view.append(f"\n\n*{message.error}*")
        view.answer_id = meta.get("id")
        self.history.finish_answer(view.message_id, view.text, status, view.answer_id, meta)
        view.show_meta(meta, fmt.badge(meta, status) if meta else "[red]failed[/]", fmt.sources(meta),
                       fmt.details(meta, None) if meta else "")
        self.answering = False
        self.cancel_event = None
        self._show_conversations()
        self._refresh_router_stats()
        self._drain_queue()

    def action_cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()

    # -- after an answer -------------------------------------------------------------------------

    def _latest_answer(self) -> AnswerView | None:
        return next((view for view in reversed(self.views) if view.answer_id), None)

    def action_feedback(self, verdict: str) -> None:
        view = self._latest_answer()
        if view is None or self.assistant is None:
            self.notify("no answer to judge yet", severity="warning")
            return
        self._give_feedback(verdict, view.answer_id)

    @work(thread=True, name="feedback", exit_on_error=False)
    def _give_feedback(self, verdict: str, answer_id: str) -> None:
        result = self.assistant.feedback(verdict, answer_id)
        self.call_from_thread(self.notify, result.message)

    def action_details(self) -> None:
        view = self._latest_answer()
        if view is not None:
            record = self.assistant.answer_record(view.answer_id) if self.assistant else None
            if record is not None and record.get("sent"):
                view.details.update(fmt.details(view.meta, record))
            view.toggle_details()

    def _command(self, text: str) -> None:
        name, _, argument = text[1:].partition(" ")
        questions = self.history.questions() if self.history else []
        if name in ("local", "cloud"):
            if questions:
                self._enqueue(questions[-1], name)
        elif name in ("good", "bad"):
            self.action_feedback(name)
        elif name == "offline" and self.assistant is not None:
            self.assistant.settings.offline = not self.assistant.settings.offline
            self._refresh_status()
            self.notify("offline: nothing leaves this machine" if self.assistant.settings.offline else "online")
        elif name == "index" and argument.strip():
            self._index(argument.strip())
        elif name == "new":
            self.action_new_chat()
        elif name == "watch" and self.assistant is not None:
            self._stop_watching() if self.watch_stop is not None else self._start_watching()
        elif name == "rename" and argument.strip() and self.conversation_id:
            self.history.rename(self.conversation_id, argument)
            self._show_conversations()
        elif name == "delete" and self.conversation_id and not self.answering:
            self.history.delete(self.conversation_id)
            self.conversation_id = None
            self.messages_column.remove_children()
            self.views = []
            self._show_conversations()
        elif name == "open" and argument.strip().isdigit():
            self._open_source(int(argument))
        else:
            self.notify(HELP, timeout=15)

    def _open_source(self, number: int) -> None:
        """Source [number] of the latest answer, at its line, in $EDITOR (the TUI steps aside)."""
        import os
        import shlex
        import subprocess

        view = self._latest_answer()
        found = [s for s in (view.meta if view is not None else {}).get("sources", []) if s["number"] == number]
        if not found:
            self.notify(f"no source [{number}] on the latest answer", severity="warning")
            return
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            self.notify(f"set $EDITOR to open notes; the note is {found[0]['path']}", severity="warning")
            return
        with self.suspend():
            subprocess.run([*shlex.split(editor), f"+{found[0]['line_start']}", found[0]["path"]], check=False)

    def _start_watching(self) -> None:
        if self.watch_stop is None:
            self.watch_stop = threading.Event()
            self._watch(self.watch_stop)
            self.notify("watching indexed folders: edits re-index in the background")

    def _stop_watching(self) -> None:
        if self.watch_stop is not None:
            self.watch_stop.set()
            self.watch_stop = None
            self.notify("stopped watching indexed folders")

    @work(thread=True, name="watch-notes", exit_on_error=False)
    def _watch(self, stop: threading.Event) -> None:
        def reindexed(summary) -> None:
            self.call_from_thread(self._show_index_size, summary, f" (re-indexed {time.strftime('%H:%M:%S')})")

        self.assistant.watch_notes(stop, reindexed)

    @work(thread=True, name="index", exclusive=True, exit_on_error=False)
    def _index(self, folder: str) -> None:
        self.opened.wait()  # indexing needs the embedder, not the chat model

        def progress(p) -> None:
            self.call_from_thread(self.status_line.set_part, "index",
                                  f"indexing {p.files_done}/{p.files_total or '?'} files, {p.chunks_added} chunks")

        summary = self.assistant.index([folder], progress=progress)
        self.call_from_thread(self._show_index_size, summary)

    def _show_index_size(self, summary, note: str = "") -> None:
        self.status_line.set_part("index", f"index: {summary.files_total} files, {summary.chunks_total} chunks{note}")

    def on_unmount(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
        if self.watch_stop is not None:
            self.watch_stop.set()
        for part in (self.history, self.assistant):
            if part is not None:
                part.close()
