"""The TUI driven by Textual's pilot against the real local model, embedder and index."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from skiff.app.tui.app import SkiffApp
from skiff.app.tui.widgets import AnswerView, ChatInput, QuestionView


async def wait_for(pilot, condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the TUI")
        await pilot.pause(0.1)


async def ask(pilot, app: SkiffApp, text: str) -> None:
    box = app.query_one(ChatInput)
    box.load_text(text)
    box.move_cursor(box.document.end)
    await pilot.press("enter")


async def test_ask_streams_an_answer_with_its_badge_and_sources(skiff_home, vault, tmp_path):
    app = SkiffApp(max_tokens=24)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, f"/index {vault}")
        await wait_for(pilot, lambda: "12 files" in app.status_line.parts["index"])
        assert "12 files" in app.status_line.parts["index"]
        await ask(pilot, app, "How do I link to a heading?")
        await wait_for(pilot, lambda: not app.answering and app.views and app.views[-1].answer_id)
        view = app.query(AnswerView).last()
        assert view.text.strip()
        assert app.query(QuestionView).last().render().plain == "How do I link to a heading?"
        badge = view.badge.render().plain
        assert badge.startswith("local") and "tok" in badge
        assert "Internal links.md" in view.sources.render().plain or "Link notes.md" in view.sources.render().plain
        await pilot.press("ctrl+o")  # the full decision record
        assert view.details.display and "reason" in view.details.render().plain
        assert "nothing left this machine" in view.details.render().plain
        record = app.assistant.answer_record(view.answer_id)
        assert record["answer"] == view.text
        stored = app.history.messages(app.conversation_id)
        assert [m.role for m in stored] == ["user", "assistant"] and stored[1].content == view.text
        exported = tmp_path / "chat.json"
        await ask(pilot, app, f"/export json {exported}")
        await wait_for(pilot, exported.exists, timeout=30)
    _the_chat_exports_as_it_was_answered(exported, view, vault)


def _the_chat_exports_as_it_was_answered(exported, view, vault) -> None:
    """/export wrote the chat as JSON; `skiff export` writes the same chat as Markdown, its sources
    linked to the files."""
    import json

    from conftest import run_skiff

    chat = json.loads(exported.read_text(encoding="utf-8"))
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant"]
    answer = chat["messages"][1]
    assert answer["content"] == view.text and answer["answered_by"] == "local" and answer["sources"]
    markdown = run_skiff("export").stdout
    assert "## Question\n\nHow do I link to a heading?" in markdown and "### Answer (local, " in markdown
    assert view.text.strip() in markdown
    cited = answer["sources"][0]["path"]
    assert f"(<{Path(cited).as_uri()}>)" in markdown and str(vault) in cited
    listed = run_skiff("export", "--list").stdout
    assert chat["id"] in listed
    assert run_skiff("export", "no-such-chat-title", check=False).returncode == 2


async def test_escape_cancels_and_keeps_the_partial_answer(skiff_home):
    app = SkiffApp(max_tokens=384)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, "Write a long story about a lighthouse keeper and the sea.")  # queued while loading
        assert len(app.queue) == 1 or app.answering
        await wait_for(pilot, lambda: app.views and len(app.views[-1].text) > 20)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not app.answering)
        view = app.views[-1]
        assert "cancelled" in view.badge.render().plain
        stored = app.history.messages(app.conversation_id)[-1]
        assert stored.status == "cancelled" and stored.content == view.text and len(view.text) > 20


async def test_feedback_key_and_the_conversation_survive_a_restart(skiff_home):
    app = SkiffApp(max_tokens=16)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready.is_set())
        await ask(pilot, app, "Name a prime number.")
        await wait_for(pilot, lambda: not app.answering and app.views and app.views[-1].answer_id)
        answer_id = app.views[-1].answer_id
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: app.assistant.records.verdict(answer_id) == "bad")
        conversation = app.conversation_id
    again = SkiffApp(max_tokens=16)
    async with again.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: again.history is not None and again.conversation_id is not None)
        await pilot.pause(0.2)
        assert again.conversation_id == conversation
        assert [v.answer_id for v in again.query(AnswerView)] == [answer_id]
        assert again.query_one(ChatInput).recall[-1] == "Name a prime number."


async def test_chats_can_be_searched_renamed_and_deleted_and_keys_remapped(skiff_home, monkeypatch):
    monkeypatch.setenv("SKIFF_KEYMAP", '{"good": "ctrl+t"}')
    app = SkiffApp(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready.is_set())
        for question in ("Name a colour.", "Name a fruit."):
            await pilot.press("ctrl+n")
            await ask(pilot, app, question)
            await wait_for(pilot, lambda: not app.answering and app.views and app.views[-1].answer_id)
        await pilot.press("ctrl+t")  # "good", remapped from ctrl+g by the keymap setting
        await wait_for(pilot, lambda: app.assistant.records.verdict(app.views[-1].answer_id) == "good")
        titles = [c.title for c in app.history.conversations()]
        assert titles == ["Name a fruit.", "Name a colour."]
        await ask(pilot, app, "/rename Fruit")
        assert app.history.conversations()[0].title == "Fruit"
        app.query_one("#search").value = "colour"
        await wait_for(pilot, lambda: len(app.query("#conversations ListItem")) == 1)
        app.query_one("#search").value = ""
        await wait_for(pilot, lambda: len(app.query("#conversations ListItem")) == 2)
        app.query_one(ChatInput).focus()
        await ask(pilot, app, "/delete")
        await pilot.pause(0.2)
        assert [c.title for c in app.history.conversations()] == ["Name a colour."]


def test_the_real_skiff_binary_in_tmux_streams_an_answer_with_its_badge(skiff_home):
    """End to end: `skiff` with no arguments in a real terminal (tmux), a typed question, a
    streamed answer and its badge on screen, then a clean quit."""
    import os

    from conftest import SKIFF
    from tmux import TmuxSession

    with TmuxSession(str(SKIFF), {name: os.environ[name] for name in ("SKIFF_HOME", "SKIFF_CACHE_DIR",
                                                                       "SKIFF_MODEL_PATH")}) as tui:
        tui.wait_screen("Chats")
        tui.wait_screen("ready")
        tui.type("Name a prime number.")
        tui.press("Enter")
        shown = tui.wait_screen(" tok")  # the badge: "local · … · N tok"
        assert "Name a prime number." in shown and "local" in shown
        tui.quit_with("C-q")


async def test_watching_reindexes_an_edited_note_in_the_background(skiff_home, vault):
    app = SkiffApp(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, f"/index {vault}")
        await wait_for(pilot, lambda: "12 files" in app.status_line.parts["index"])
        await ask(pilot, app, "/watch")
        await wait_for(pilot, lambda: app.notes_bar.watch_stop is not None)
        await pilot.pause(1.0)  # the watcher is up
        note = vault / "Plugins" / "Templates.md"
        note.write_text(note.read_text(encoding="utf-8") + "\n\nThe zeppelin quartermaster keeps the "
                        "spare templates in the brass cabinet.\n", encoding="utf-8")
        await wait_for(pilot, lambda: "re-indexed" in app.status_line.parts["index"], timeout=60)
        hits = app.assistant.retrieve("Where does the zeppelin quartermaster keep the spare templates?")
        assert any("zeppelin quartermaster" in hit.text for hit in hits)
        await ask(pilot, app, "/watch")
        assert app.notes_bar.watch_stop is None


@pytest.mark.slow
def answer_words(screen: str) -> list[str]:
    """The words of the answer on a tmux screen: the chat column (right of the 28-column sidebar),
    between the question (it may have scrolled off the top) and the input box."""
    import re

    lines = [line[29:] for line in screen.splitlines()]
    top = next((i for i, line in enumerate(lines) if "Tell me a long story about a lighthouse." in line), -1)
    bottom = next((i for i, line in enumerate(lines) if "▔" in line), 0)
    return re.findall(r"[A-Za-z]{4,}", "\n".join(lines[top + 1:bottom]))


def test_a_kill_9_mid_answer_loses_nothing_that_was_shown(skiff_home):
    import os
    import shutil
    import signal
    import subprocess

    from conftest import SKIFF
    from skiff.app.history import ChatHistory

    if not shutil.which("tmux"):
        pytest.skip("tmux not installed")
    session = f"skiff-kill-{os.getpid()}"
    env_args = [arg for name in ("SKIFF_HOME", "SKIFF_CACHE_DIR", "SKIFF_MODEL_PATH")
                for arg in ("-e", f"{name}={os.environ[name]}")]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", *env_args,
                    "-e", "SKIFF_MAX_TOKENS=1024", f"{SKIFF}"], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

    try:
        deadline = time.monotonic() + 120
        while "ready" not in screen():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", session, "-l", "Tell me a long story about a lighthouse."],
                       check=True)
        subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)
        pid = int(subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                                 capture_output=True, text=True).stdout.strip())
        # Mid-answer (1,024 tokens take ~8 s): once a dozen words are on screen, however loaded
        # the machine is.
        deadline = time.monotonic() + 120
        while len(answer_words(shown := screen())) < 12:
            assert time.monotonic() < deadline, shown
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert " tok" not in shown  # the badge had not appeared: the answer was still streaming
    history = ChatHistory(skiff_home / "data" / "chats.sqlite3")
    try:
        (conversation,) = history.conversations()
        question, answer = history.messages(conversation.id)
        assert question.content == "Tell me a long story about a lighthouse."
        assert answer.status == "cancelled" and len(answer.content) > 40
        # Every word of the answer that was on screen at the kill is in the stored text.
        on_screen = answer_words(shown)
        assert len(on_screen) >= 10
        missing = [word for word in on_screen if word not in answer.content]
        assert missing == []
    finally:
        history.close()


async def test_the_command_palette_carries_skiffs_actions(skiff_home):
    app = SkiffApp(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready.is_set())
        titles = [command.title for command in app.get_system_commands(app.screen)]
        assert {"New chat", "Answer was good", "Ask again in the cloud", "Toggle offline mode"} <= set(titles)
        offline = next(c for c in app.get_system_commands(app.screen) if c.title == "Toggle offline mode")
        before = app.assistant.settings.offline
        offline.callback()
        assert app.assistant.settings.offline is not before
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"offline")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.assistant.settings.offline is before)


async def test_damaged_files_are_said_and_the_index_rebuilds_itself(skiff_home, vault):
    """A damaged chat history and chromadb found at start-up: both are said in notifications, and
    the index is rebuilt from the indexed folders without being asked."""
    from conftest import run_skiff

    run_skiff("index", str(vault))  # another process: chromadb keeps a store open per process
    data = skiff_home / "data"
    (data / "chats.sqlite3").write_bytes(b"not a database" * 512)
    chroma = data / "index" / "chroma" / "chroma.sqlite3"
    chroma.write_bytes(chroma.read_bytes()[:1024])

    app = SkiffApp(max_tokens=16)
    async with app.run_test(size=(120, 40)) as pilot:
        said = lambda: " ".join(n.message for n in app._notifications)  # noqa: E731
        await wait_for(pilot, lambda: "chat history was damaged" in said() and "notes index was damaged" in said())
        await wait_for(pilot, lambda: "12 files" in app.status_line.parts["index"] and not app.notes_bar.indexing)
        hits = app.assistant.notes.search(app.assistant.embedder.encode_query("link to a heading"), 3)
        assert hits and any("links" in hit.path.lower() for hit in hits)
    assert any(p.name.startswith("chats.sqlite3.damaged-") for p in data.iterdir())
    assert any(p.name.startswith("chroma.damaged-") for p in (data / "index").iterdir())


async def test_model_lists_the_models_and_switches_the_one_that_answers(skiff_home, monkeypatch, tmp_path):
    """With no model_path setting the default model answers; /model lists the catalog, refuses an
    unknown name on screen, and /model PATH switches: the next question is answered by it."""
    from conftest import fast_model_path

    from skiff.assistant.model_choice import DEFAULT_MODEL

    monkeypatch.delenv("SKIFF_MODEL_PATH")
    app = SkiffApp(max_tokens=8)
    notices: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        original_notify = app.notify
        monkeypatch.setattr(app, "notify", lambda message, **kw: (notices.append(str(message)),
                                                                  original_notify(message, **kw)))
        await wait_for(pilot, lambda: app.opened.is_set() and str(app.status_line.parts["model"]))
        await ask(pilot, app, "/model")
        await wait_for(pilot, lambda: any("/model NAME switches" in n for n in notices))
        assert f"{DEFAULT_MODEL} (default)" in notices[-1]
        await ask(pilot, app, "/model no-such-model")
        await wait_for(pilot, lambda: any("neither a model" in n for n in notices))
        await ask(pilot, app, f"/model {fast_model_path()}")
        await wait_for(pilot, lambda: app.ready.is_set() and "ready" in str(app.status_line.parts["model"]))
        assert fast_model_path().stem in str(app.status_line.parts["model"])
        await ask(pilot, app, "Say hello.")
        await wait_for(pilot, lambda: not app.answering and app.views and app.views[-1].answer_id)
        assert app.assistant.answer_record(app.views[-1].answer_id)["model"] == fast_model_path().name
