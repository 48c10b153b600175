"""A chat as Markdown or JSON (`skiff export`, the TUI's /export): the questions, the answers, who
answered each, and their sources as links to the files."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from skiff.app.history import CANCELLED, FAILED, ChatHistory, Conversation, Message

FORMATS = ("md", "json")


class ExportError(ValueError):
    pass


def find_chat(history: ChatHistory, which: str | None) -> Conversation:
    """The chat `which` names: its id, or words of its title (the newest that has them); the latest
    chat when None."""
    chats = history.conversations()
    if not chats:
        raise ExportError("there are no chats yet: ask something in `skiff` (the chat) first")
    if not which:
        return chats[0]
    by_id = [chat for chat in chats if chat.id == which]
    if by_id:
        return by_id[0]
    words = which.casefold()
    titled = [chat for chat in chats if words in chat.title.casefold()]
    if not titled:
        raise ExportError(f"no chat has the id or a title with {which!r}; `skiff export --list` lists them")
    return titled[0]


def export_chat(history: ChatHistory, chat: Conversation, form: str) -> str:
    if form not in FORMATS:
        raise ExportError(f"unknown format {form!r}: use md or json")
    messages = history.messages(chat.id)
    if form == "json":
        return json.dumps(as_json(chat, messages), ensure_ascii=False, indent=2) + "\n"
    return as_markdown(chat, messages)


def as_json(chat: Conversation, messages: list[Message]) -> dict:
    return {"id": chat.id, "title": chat.title, "updated_at": chat.updated_at, "exported_at": time.time(),
            "messages": [_message_json(message) for message in messages]}


def _message_json(message: Message) -> dict:
    if message.role == "user":
        return {"role": "user", "content": message.content}
    meta = message.meta
    return {"role": "assistant", "content": message.content, "status": message.status,
            "answer_id": message.answer_id, "answered_by": meta.get("answered_by"), "route": meta.get("route"),
            "model": meta.get("model"), "sources": meta.get("sources") or [], "notices": meta.get("notices") or []}


def as_markdown(chat: Conversation, messages: list[Message]) -> str:
    updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated_at))
    lines = [f"# {chat.title}", "", f"*A skiff chat, last updated {updated}.*", ""]
    for message in messages:
        if message.role == "user":
            lines += ["## Question", "", message.content.strip(), ""]
            continue
        lines += [f"### Answer ({_who(message)})", "", message.content.strip() or "*(no text)*", ""]
        if message.status in (CANCELLED, FAILED):
            lines += [f"*This answer was {message.status}.*", ""]
        sources = message.meta.get("sources") or []
        if sources:
            lines += ["Sources:", ""] + [_source_line(source) for source in sources] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _who(message: Message) -> str:
    meta = message.meta
    answered_by, model = meta.get("answered_by"), meta.get("model")
    if not answered_by:
        return "skiff"
    return f"{answered_by}, {model}" if model else answered_by


def _source_line(source: dict) -> str:
    path = Path(source.get("path", ""))
    name = source.get("title") or path.stem
    if source.get("section"):
        name += f" › {source['section']}"
    where = (f"page {source['page']}" if source.get("page") is not None
             else f"lines {source.get('line_start')}-{source.get('line_end')}")
    link = path.as_uri() if path.is_absolute() else str(path)
    # Brackets in a title would end the link text early.
    label = name.replace("[", "(").replace("]", ")")
    return f"{source.get('number', '-')}. [{label}](<{link}>), {where}"


def default_file_name(chat: Conversation, form: str, folder: Path) -> Path:
    """A file named after the chat in `folder`, never one that exists already."""
    slug = re.sub(r"[^\w-]+", "-", chat.title.casefold()).strip("-")[:50] or "chat"
    path = folder / f"skiff-{slug}.{form}"
    number = 2
    while path.exists():
        path = folder / f"skiff-{slug}-{number}.{form}"
        number += 1
    return path
