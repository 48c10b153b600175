"""Snapshots of the TUI's main screens at a fixed size (pytest-textual-snapshot). The chat shown
is restored from the history store with fixed content, so the pictures do not depend on timing."""

from __future__ import annotations

import time

from skiff.app.history import ChatHistory
from skiff.app.tui.app import SkiffApp
from skiff.app.tui.widgets import ChatInput

ANSWER_META = {
    "id": "a1b2c3d4e5f6",
    "route": "cloud",
    "answered_by": "cloud",
    "decision": {"reason": "notes cover this in part (σ²=0.62); surrogate expects the cloud to do better "
                           "(gain +0.27 ± 0.14, bound above τ 0.39)", "overridden": False,
                 "signals": {"sigma2": 0.62, "gain_mean": 0.27, "gain_std": 0.14, "score": 0.41}},
    "sources": [{"number": 1, "path": "/notes/Linking notes and files/Internal links.md",
                 "section": "Link to a heading in a note", "line_start": 41}],
    "timings": {"first_token_s": 1.6, "total_s": 7.3},
    "tokens": {"prompt": 412, "completion": 168, "estimated": True},
    "cost_usd": 0.00042,
    "notices": [],
}
ANSWER = ("Use `[[Note#Heading]]`: type `[[`, pick the note, then `#` and the heading [1].\n\n"
          "```md\n[[Internal links#Link to a heading in a note]]\n```")


async def _until_ready(pilot) -> None:
    app = pilot.app
    deadline = time.monotonic() + 120
    while not (app.ready.is_set() and app.status_line.parts["router"]):
        assert time.monotonic() < deadline
        await pilot.pause(0.1)
    app.query_one(ChatInput).cursor_blink = False  # a blinking cursor would make the picture random
    await pilot.pause(0.3)


def _seed_history(home, meta: dict = ANSWER_META) -> None:
    history = ChatHistory(home / "data" / "chats.sqlite3")
    conversation = history.create()
    history.add_question(conversation.id, "How do I link to a heading?")
    answer = history.start_answer(conversation.id)
    history.finish_answer(answer.id, ANSWER, "done", meta["id"], meta)
    history.close()


async def _expand_details(pilot) -> None:
    await _until_ready(pilot)
    pilot.app.views[-1].toggle_details()
    await pilot.pause(0.3)


def test_snapshot_empty_chat(skiff_home, snap_compare):
    assert snap_compare(SkiffApp(), terminal_size=(110, 30), run_before=_until_ready)


def test_snapshot_answer_with_badge_sources_and_decision(skiff_home, snap_compare):
    _seed_history(skiff_home)
    assert snap_compare(SkiffApp(), terminal_size=(110, 30), run_before=_expand_details)


def test_snapshot_source_panel_beside_the_chat(skiff_home, snap_compare, tmp_path, monkeypatch):
    """Key 1 on an answer shows its source [1] beside the chat with the cited lines selected. The
    note sits at a relative path so the picture does not depend on the test's folder."""
    monkeypatch.chdir(tmp_path)
    note = tmp_path / "notes" / "Internal links.md"
    note.parent.mkdir()
    note.write_text("# Internal links\n\nLinks connect notes.\n\n## Link to a heading in a note\n\n"
                    "Add `#` after the note name, then the heading:\n\n`[[Internal links#Link to a heading]]`\n\n"
                    "## Link to a block\n\nUse `^` and a block id.\n", encoding="utf-8")
    meta = {**ANSWER_META, "sources": [{**ANSWER_META["sources"][0], "path": "notes/Internal links.md",
                                        "line_start": 5, "line_end": 9, "page": None}]}
    history = ChatHistory(skiff_home / "data" / "chats.sqlite3")
    conversation = history.create()
    history.add_question(conversation.id, "How do I link to a heading?")
    answer = history.start_answer(conversation.id)
    history.finish_answer(answer.id, ANSWER, "done", meta["id"], meta)
    history.close()

    async def show_source(pilot) -> None:
        await _until_ready(pilot)
        await pilot.press("shift+tab", "1")
        await pilot.pause(0.3)
        pilot.app.query_one("#source-text").cursor_blink = False
        await pilot.pause(0.3)

    assert snap_compare(SkiffApp(), terminal_size=(110, 30), run_before=show_source)


def test_snapshot_an_escalated_answer_keeps_its_draft_folded(skiff_home, snap_compare):
    """The cascade set the local draft aside for the cloud's answer: the draft stays, folded under
    the reason, above the answer that replaced it."""
    reason = "the local model is unsure (0.31 < τ 0.45): asking the cloud"
    meta = {**ANSWER_META, "route": "local", "notices": [reason], "draft": "You can link a heading by typing",
            "draft_check": {"confidence": 0.31, "std": 0.04, "threshold": 0.45, "unsure": True, "escalated": True,
                            "at_tokens": 32, "reason": "the local model is unsure (0.31 < τ 0.45)",
                            "signals": {"-mean logprob": 1.9, "mean entropy": 2.2}}}
    _seed_history(skiff_home, meta)
    assert snap_compare(SkiffApp(), terminal_size=(110, 34), run_before=_expand_details)
