"""The chat's slash commands (/local, /good, /model, /open N, ...), carried out on the running app.
app/tui/commands.py says what exists; this mixin does it, with SkiffApp's parts: the assistant,
the chat history, the notes bar, the status line and the answer views."""

from __future__ import annotations

from textual import work

from skiff.app.terminal_text import terminal_safe
from skiff.app.tui import format as fmt
from skiff.app.tui.commands import HELP
from skiff.app.tui.source_panel import SourcePanel
from skiff.app.tui.widgets import AnswerView


class SlashCommands:
    def run_command(self, text: str) -> None:
        from skiff.router.policy import ROUTES

        name, _, argument = text.strip()[1:].partition(" ")
        argument = argument.strip()
        questions = self.history.questions() if self.history else []
        if name in ROUTES:
            if questions:
                self._enqueue(questions[-1], name)
        elif name in ("good", "bad"):
            self.action_feedback(name)
        elif name == "details":
            self.action_details()
        elif name == "offline" and self.assistant is not None:
            self.assistant.settings.offline = not self.assistant.settings.offline
            self._refresh_status()
            self.notify("offline: nothing leaves this machine" if self.assistant.settings.offline else "online")
        elif name == "index":
            self.notes_bar.index(argument)
        elif name == "tune":
            self.notes_bar.tune()
        elif name == "new":
            self.action_new_chat()
        elif name == "watch" and self.assistant is not None:
            self.notes_bar.toggle_watching()
        elif name == "rename" and argument and self.conversation_id:
            self.history.rename(self.conversation_id, argument)
            self._show_conversations()
        elif name == "delete" and self.conversation_id and not self.answering:
            self.history.delete(self.conversation_id)
            self.conversation_id = None
            self.messages_column.remove_children()
            self.views = []
            self._show_conversations()
        elif name == "model":
            self._model_command(argument)
        elif name == "open" and argument.isdigit():
            self._show_source(self._latest_answer(), int(argument))
        elif name == "export":
            self._export_command(argument)
        else:
            self.notify(HELP, timeout=20)

    @work(thread=True, name="model", exclusive=True, group="model", exit_on_error=False)
    def _model_command(self, name: str) -> None:
        """/model lists the local models; /model NAME answers with that one from now on."""
        if self.assistant is None or not self.opened.is_set():
            self.call_from_thread(self.notify, "still starting; try /model again in a moment")
            return
        if not name:
            lines = [f"{'▶' if m['in_use'] else ' '} {m['name']}{' (default)' if m['default'] else ''}: "
                     f"{'installed' if m['installed'] else 'not installed'}" for m in self.assistant.models()]
            self.call_from_thread(self.notify, "\n".join(lines + ["/model NAME switches; `skiff model install NAME` "
                                                                  "installs"]), timeout=20, markup=False)
            return
        if self.answering:
            self.call_from_thread(self.notify, "an answer is being written; switch when it is done", severity="warning")
            return
        self.ready.clear()
        self.call_from_thread(self.status_line.set_part, "model", fmt.markup("loading $model", model=name))
        try:
            self.assistant.switch_model(name)
            self.assistant.model  # noqa: B018 - loads it now, off the UI thread
        except Exception as error:  # noqa: BLE001 - said on screen; the previous choice is kept where it can be
            self.call_from_thread(self.notify, terminal_safe(str(error)), severity="error", markup=False)
        self.call_from_thread(self.status_line.set_part, "model",
                              fmt.markup("$model ready", model=self.assistant.model_path.stem))
        self.ready.set()
        self.call_from_thread(self._drain_queue)

    @work(thread=True, name="export", group="export", exit_on_error=False)
    def _export_command(self, argument: str) -> None:
        """/export [md|json] [PATH]: this chat to PATH, or to a new file named after it in the folder
        skiff was started from."""
        from pathlib import Path

        from skiff.app.chat_export import FORMATS, default_file_name, export_chat
        from skiff.local.atomic import write_atomically

        if self.history is None or not self.conversation_id:
            self.call_from_thread(self.notify, "no chat to export yet", severity="warning")
            return
        form, _, target = argument.partition(" ")
        if form not in FORMATS:
            form, target = "md", argument
        chats = {chat.id: chat for chat in self.history.conversations()}
        chat = chats[self.conversation_id]
        path = Path(target.strip()).expanduser() if target.strip() else default_file_name(chat, form, Path.cwd())
        try:
            write_atomically(path, export_chat(self.history, chat, form).encode("utf-8"))
        except OSError as error:
            self.call_from_thread(self.notify, terminal_safe(f"cannot write {path}: {error.strerror or error}"),
                                  severity="error", markup=False)
            return
        self.call_from_thread(self.notify, terminal_safe(f"exported to {path.resolve()}"), markup=False)

    def _show_source(self, view: AnswerView | None, number: int | None) -> None:
        """Source [number] of an answer in the side panel, its cited lines selected."""
        sources = view.answer.sources if view is not None and view.answer is not None else []
        found = [source.as_dict() for source in sources if source.number == number]
        if not found or self.assistant is None:
            self.notify(f"no source [{number}] on that answer", severity="warning")
            return
        try:
            lines = self.assistant.source_lines(found[0])
        except Exception as error:  # noqa: BLE001 - a moved or unreadable note is said, not raised
            self.notify(terminal_safe(f"cannot show {found[0]['path']}: {error}"), severity="error", markup=False)
            return
        self.query_one(SourcePanel).show(found[0], lines)
