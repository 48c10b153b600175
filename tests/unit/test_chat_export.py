"""A chat exported (app/chat_export.py) from a real chat history database."""

from __future__ import annotations

import json

import pytest

from skiff.app.chat_export import ExportError, default_file_name, export_chat, find_chat
from skiff.app.history import CANCELLED, DONE, ChatHistory


@pytest.fixture
def history(tmp_path):
    history = ChatHistory(tmp_path / "chats.sqlite3")
    yield history
    history.close()


def _answered(history: ChatHistory, question: str, answer: str, status: str = DONE, sources=()) -> str:
    chat = history.create()
    history.add_question(chat.id, question)
    message = history.start_answer(chat.id)
    meta = {"answered_by": "cloud", "route": "cloud", "model": "big-model", "sources": list(sources)}
    history.finish_answer(message.id, answer, status, "a1b2c3", meta)
    return chat.id


def test_markdown_names_who_answered_and_links_each_source_to_its_file(history, tmp_path):
    note = tmp_path / "My notes" / "Links [draft].md"
    source = {"number": 1, "path": str(note), "title": "Links [draft]", "section": "Headings", "line_start": 3,
              "line_end": 9, "page": None}
    chat_id = _answered(history, "How do I link?", "Use [[double brackets]] [1].", sources=[source])
    text = export_chat(history, find_chat(history, chat_id), "md")
    assert "# How do I link?" in text and "## Question\n\nHow do I link?" in text
    assert "### Answer (cloud, big-model)" in text and "Use [[double brackets]] [1]." in text
    # The file's URI (spaces escaped) inside <>, and the title's brackets cannot end the link text.
    assert f"1. [Links (draft) › Headings](<{note.as_uri()}>), lines 3-9" in text
    assert "%20" in note.as_uri()


def test_json_keeps_every_message_with_its_status_and_sources(history):
    _answered(history, "First?", "One.")
    chat_id = _answered(history, "Second?", "Half an ans", status=CANCELLED)
    exported = json.loads(export_chat(history, find_chat(history, "second"), "json"))
    assert exported["id"] == chat_id and exported["title"] == "Second?"
    user, answer = exported["messages"]
    assert user == {"role": "user", "content": "Second?"}
    assert answer["status"] == "cancelled" and answer["answered_by"] == "cloud" and answer["answer_id"] == "a1b2c3"
    assert "This answer was cancelled" in export_chat(history, find_chat(history, chat_id), "md")


def test_the_latest_chat_by_default_and_clear_errors_otherwise(history, tmp_path):
    with pytest.raises(ExportError, match="no chats yet"):
        find_chat(history, None)
    _answered(history, "Older?", "a")
    newest = _answered(history, "Newer?", "b")
    assert find_chat(history, None).id == newest
    with pytest.raises(ExportError, match="--list"):
        find_chat(history, "nothing like it")
    with pytest.raises(ExportError, match="md or json"):
        export_chat(history, find_chat(history, None), "pdf")
    first = default_file_name(find_chat(history, None), "md", tmp_path)
    first.write_text("taken")
    assert first.name == "skiff-newer.md" and default_file_name(find_chat(history, None), "md", tmp_path).name == \
        "skiff-newer-2.md"
