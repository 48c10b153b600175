"""The sidebar: chats, most recent first, and a search box over their titles and messages."""

from __future__ import annotations

from textual import on
from textual.containers import Vertical
from textual.message import Message as TextualMessage
from textual.widgets import Input, Label, ListItem, ListView

from skiff.app.terminal_text import terminal_safe


class ChatList(Vertical):
    DEFAULT_CSS = """
    ChatList { width: 28; border-right: solid $primary-background; }
    ChatList ListView { height: 1fr; }
    """

    class Chosen(TextualMessage):
        def __init__(self, conversation_id: str) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    class SearchChanged(TextualMessage):
        pass

    def compose(self):
        yield Label("[b]Chats[/b]  ctrl+n new")
        yield Input(placeholder="search chats", id="search", compact=True)
        yield ListView(id="conversations")

    @property
    def search_text(self) -> str:
        return self.query_one("#search", Input).value.strip()

    def show(self, conversations) -> None:
        listing = self.query_one(ListView)
        listing.clear()
        for conversation in conversations:
            listing.append(ListItem(Label(terminal_safe(conversation.title), markup=False), name=conversation.id))

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged())

    @on(ListView.Selected)
    def _chosen(self, event: ListView.Selected) -> None:
        event.stop()
        if event.item.name:
            self.post_message(self.Chosen(event.item.name))
