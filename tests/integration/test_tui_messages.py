"""The TUI's per-message keys, the source panel, the index progress bar, themes and the status
line's cloud state, against the real model, embedder, index and a loopback HTTP server."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import ProgressBar

from conftest import SHARED
from servers import FaultServer
from skiff.app.tui.app import SkiffApp
from skiff.app.tui.notes_bar import NotesBar
from skiff.app.tui.source_panel import SourcePanel
from skiff.app.tui.widgets import AnswerView, ChatInput, QuestionView
from test_tui import ask, wait_for


async def test_keys_on_a_chosen_message_act_on_that_message(skiff_home, vault):
    app = SkiffApp(max_tokens=16)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, f"/index {vault}")
        await wait_for(pilot, lambda: "12 files" in app.status_line.parts["index"])
        for question in ("How do I link to a heading?", "Name a prime number."):
            await ask(pilot, app, question)
            await wait_for(pilot, lambda: not app.answering and app.views and app.views[-1].answer_id
                           and app.views[-1].question == question)  # noqa: B023 - awaited in this iteration
        first, second = app.views
        await pilot.press("shift+tab")  # from the input to the latest answer
        assert app.focused is second
        await pilot.press("up", "up")  # the second question, then the first answer
        assert app.focused is first

        await pilot.press("g")  # judges the answer in focus, not the latest one
        await wait_for(pilot, lambda: app.assistant.records.verdict(first.answer_id) == "good")
        assert app.assistant.records.verdict(second.answer_id) is None

        await pilot.press("y")
        assert app.clipboard == first.text

        await pilot.press("1")  # source [1] in the side panel, the cited lines selected
        panel = app.query_one(SourcePanel)
        await wait_for(pilot, lambda: panel.display)
        source = first.meta["sources"][0]
        lines = Path(source["path"]).read_text(encoding="utf-8-sig").split("\n")
        assert panel.text_area.text.split("\n") == lines
        cited = "\n".join(lines[source["line_start"] - 1:source["line_end"]])
        assert panel.text_area.selected_text == cited and cited.strip()
        await pilot.press("escape")
        assert not panel.display and isinstance(app.focused, ChatInput)

        first.focus()
        await pilot.press("c")  # the first question again, sent to the cloud (none is configured)
        await wait_for(pilot, lambda: len(app.views) == 3 and not app.answering and app.views[-1].answer_id)
        again = app.views[-1]
        assert again.question == "How do I link to a heading?"
        assert app.query(QuestionView).last().question == "How do I link to a heading?"
        assert again.meta["route"] == "cloud" and again.meta["decision"]["overridden"]
        assert again.meta["answered_by"] == "local" and again.meta["notices"]  # said why it stayed here
        assert "override" in again.badge.render().plain

        await pilot.press("i", "shift+tab", "o")  # back to typing, then the latest answer's decision record
        assert again.details.display and "reason" in again.details.render().plain


async def test_copying_an_answers_code_blocks_one_after_another():
    text = "Two ways:\n\n```python\nprint('one')\n```\n\nor\n\n```sh\necho two\n```\n"

    class Host(App):
        def compose(self):
            yield AnswerView("m1", "How do I print?", text)

    host = Host()
    async with host.run_test() as pilot:
        host.query_one(AnswerView).focus()
        copied = []
        for _ in range(3):
            await pilot.press("k")
            copied.append(host.clipboard)
        await pilot.press("y")
        assert host.clipboard == text
        host.set_keymap({"message.copy_code": "x"})  # a message's keys are remapped by id too
        await pilot.press("x")
        assert host.clipboard == "echo two\n"
    assert copied == ["print('one')\n", "echo two\n", "print('one')\n"]


async def test_indexing_shows_progress_and_escape_stops_it(skiff_home):
    every_language = SHARED / "data" / "notes"  # 6,278 notes: far more than Esc lets through
    if not every_language.is_dir():
        pytest.skip("../shared/data/notes is not beside the repository")
    app = SkiffApp(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, f"/index {every_language}")
        bar = app.query_one(NotesBar)
        progress = bar.query_one(ProgressBar)
        assert bar.display and bar.indexing
        await wait_for(pilot, lambda: (progress.total or 0) > 1000 and progress.progress >= 5)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not bar.indexing)
        assert not bar.display
        assert app.status_line.parts["index"].endswith("(stopped)")
        files = int(app.status_line.parts["index"].split()[1])
        assert 5 <= files < progress.total


async def test_the_theme_follows_the_setting_until_one_is_picked(skiff_home, monkeypatch):
    monkeypatch.setenv("SKIFF_THEME", "nord")
    app = SkiffApp(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready.is_set())
        assert app.theme == "nord"
        assert app.status_line.parts["index"] == "index: empty"
        assert app.history.preference("theme") is None  # applied from the setting, not picked
        app.theme = "gruvbox"  # what choosing it in the command palette does
        await wait_for(pilot, lambda: app.history.preference("theme") == "gruvbox", timeout=5)
    again = SkiffApp(max_tokens=8)
    async with again.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: again.ready.is_set())
        assert again.theme == "gruvbox"


@pytest.fixture(scope="module")
def faults():
    server = FaultServer()
    yield server
    server.stop()


@pytest.mark.parametrize("endpoint, shown", [("fault server", "reachable"), ("closed port", "unreachable")])
async def test_the_status_line_says_whether_the_cloud_answers(skiff_home, monkeypatch, faults, endpoint, shown):
    from servers import free_port

    url = faults.url("ok") if endpoint == "fault server" else f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("SKIFF_CLOUD_BASE_URL", url)
    monkeypatch.setenv("SKIFF_CLOUD_MODEL", "fault-model")
    monkeypatch.setenv("SKIFF_CLOUD_API_KEY", "sk-status-line-test")
    app = SkiffApp(max_tokens=8)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.ready.is_set() and "checking" not in app.status_line.parts["cloud"])
        assert app.status_line.parts["cloud"].startswith(f"cloud: fault-model {shown}" if shown == "reachable"
                                                         else "cloud: unreachable")
        await ask(pilot, app, "/offline")
        assert app.status_line.parts["cloud"] == "cloud: offline"


async def test_more_local_compute_shows_its_progress_and_its_allocation(skiff_home, vault, monkeypatch):
    monkeypatch.setenv("SKIFF_LOCAL_PLUS_METHODS", '["lora"]')  # switched on: measured not to pay by default
    app = SkiffApp(max_tokens=24)
    seen: list[tuple[str, float, float | None]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await ask(pilot, app, f"/index {vault}")
        await wait_for(pilot, lambda: "12 files" in app.status_line.parts["index"])
        await ask(pilot, app, "How do I link to a heading?")
        await wait_for(pilot, lambda: not app.answering and app.views and app.views[-1].answer_id)
        await ask(pilot, app, "/local+")  # the same question, with a LoRA trained on the notes

        def answered_meanwhile_watching_the_bar() -> bool:
            if len(app.views) == 2 and app.views[-1].work.display:
                bar = app.views[-1].work
                seen.append((str(app.views[-1].work_label.render()), bar.progress, bar.total))
            return len(app.views) == 2 and not app.answering and bool(app.views[-1].answer_id)

        await wait_for(pilot, answered_meanwhile_watching_the_bar, 300)
        view = app.views[-1]
        steps = view.meta["allocation"]["training"]["steps"]
        training = [(progress, total) for label, progress, total in seen if label.startswith("training a LoRA")]
        assert training and all(total == steps for _, total in training) and max(p for p, _ in training) >= 1
        assert not view.work.display  # the bar was shown while training, then put away
        assert f"LoRA {steps} steps" in view.badge.render().plain
        await pilot.press("ctrl+o")
        assert "test-time LoRA" in view.details.render().plain
