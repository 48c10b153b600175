"""The answer as a chain of attempts (assistant/attempts.py): each outcome driven by scripted
attempts, then through the Assistant with a scripted model and an in-process cloud endpoint."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from scripted import RouteAs, ScriptedEmbedder, ScriptedModel, cloud_answering
from skiff.assistant.answering import Generated
from skiff.assistant.attempts import Tried, Turn, run_attempts
from skiff.router.policy import Decision, QuestionWithNotes


class Scripted:
    """An attempt that writes `text` (streamed or not) and ends with `outcome`."""

    def __init__(self, answered_by: str, text: str, outcome: str = "final", reason: str = "", notices=(),
                 streamed: bool = True, on_run=None) -> None:
        self.answered_by, self.model = answered_by, f"{answered_by}-model"
        self.text, self.outcome, self.reason, self.notices, self.streamed = text, outcome, reason, notices, streamed
        self.on_run, self.ran = on_run, 0

    def run(self, turn: Turn) -> Tried:
        self.ran += 1
        if self.on_run is not None:
            self.on_run()
        if self.streamed and turn.on_token is not None and self.text:
            turn.on_token(self.text)
        return Tried(Generated(text=self.text, stop_reason="eos", notices=list(self.notices)), self.outcome,
                     self.reason, streamed=self.streamed)


def turn(shown: list[str] | None = None, cancel: threading.Event | None = None) -> Turn:
    consulted = QuestionWithNotes("What is a sail?", None, [], None)
    return Turn(consulted, Decision("local", "scripted"), on_token=shown.append if shown is not None else None,
                cancel=cancel)


def test_a_final_attempt_ends_the_chain():
    first, second = Scripted("cloud", "from the cloud"), Scripted("local", "from here")
    shown: list[str] = []
    result = run_attempts([first, second], turn(shown), notices=["said first"])
    assert (result.answered_by, result.model, result.generated.text) == ("cloud", "cloud-model", "from the cloud")
    assert second.ran == 0 and shown == ["from the cloud"] and result.notices == ["said first"]


def test_falling_back_passes_the_question_on_and_says_why():
    cloud = Scripted("cloud", "", "fall_back", notices=["the cloud timed out; answered locally"])
    local = Scripted("local", "from here", notices=["trimmed"])
    result = run_attempts([cloud, local], turn())
    assert result.answered_by == "local" and result.generated.text == "from here"
    assert result.notices == ["the cloud timed out; answered locally", "trimmed"]


def test_an_escalation_answered_says_why_it_escalated():
    vote = Scripted("local", "42", "escalate", reason="the samples agreed only 2/5: asked the cloud",
                    notices=["vote notice"], streamed=False)
    cloud = Scripted("cloud", "forty-two")
    shown: list[str] = []
    result = run_attempts([vote, cloud], turn(shown))
    assert result.answered_by == "cloud" and result.generated.text == "forty-two"
    assert result.notices == ["vote notice", "the samples agreed only 2/5: asked the cloud"]
    assert shown == ["forty-two"]  # the vote's answer was never shown


def test_an_escalation_that_falls_back_keeps_the_escalating_answer_and_shows_it_once():
    vote = Scripted("local", "42", "escalate", reason="asked the cloud", streamed=False)
    cloud = Scripted("cloud", "", "fall_back", notices=["the cloud refused; answered locally"])
    shown: list[str] = []
    result = run_attempts([vote, cloud], turn(shown))
    assert (result.answered_by, result.generated.text) == ("local", "42")
    assert result.notices == ["the cloud refused; answered locally"]  # no claim that the cloud answered
    assert shown == ["42"] and result.generated.first_piece_at is not None


def test_cancelling_stops_the_chain_after_an_escalation():
    cancel = threading.Event()
    vote = Scripted("local", "42", "escalate", reason="asked the cloud", streamed=False, on_run=cancel.set)
    cloud = Scripted("cloud", "forty-two")
    result = run_attempts([vote, cloud], turn(cancel=cancel))
    assert cloud.ran == 0 and (result.answered_by, result.generated.text) == ("local", "42")


def test_a_chain_with_no_answer_is_an_error_not_a_silent_empty_answer():
    with pytest.raises(RuntimeError, match="no attempt"):
        run_attempts([Scripted("cloud", "", "fall_back")], turn())


# -- through the Assistant, with scripted parts -----------------------------------------------------


def assistant_with(skiff_home, tmp_path, route: str, answers, cloud=None, **settings):
    from skiff.assistant import Assistant
    from skiff.cloud import CloudClient
    from skiff.config import load_settings

    loaded = load_settings(abstain=False, **settings)

    def opener(s):
        return CloudClient(s.cloud_base_url, s.cloud_model, s.cloud_key(), transport=cloud, retries=0)

    return Assistant(loaded, RouteAs(route), model=ScriptedModel(tmp_path / "scripted.gguf", answers),
                     embedder=ScriptedEmbedder(), open_cloud_client=opener)


def recorded(skiff_home, answer_id: str) -> dict:
    from skiff.config import load_settings

    with sqlite3.connect(load_settings().database_path) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM answers WHERE id=?", (answer_id,)).fetchone())


CLOUD = {"cloud_base_url": "http://cloud.test/v1", "cloud_model": "big", "cloud_api_key": "sk-scripted-key-123"}


def test_a_local_answer_streams_and_is_recorded_with_its_model(skiff_home, tmp_path):
    assistant = assistant_with(skiff_home, tmp_path, "local", ["A sail catches the wind."])
    shown: list[str] = []
    answer = assistant.ask("What is a sail?", use_notes=False, on_token=shown.append)
    assert "".join(shown) == answer.text == "A sail catches the wind."
    row = recorded(skiff_home, answer.id)
    assert (row["answered_by"], row["model"], row["stop_reason"]) == ("local", "scripted.gguf", "eos")


def test_a_cloud_answer_is_streamed_with_the_key_hidden(skiff_home, tmp_path):
    cloud = cloud_answering(["The key is ", "sk-scripted-", "key-123", "."])
    assistant = assistant_with(skiff_home, tmp_path, "cloud", [], cloud, **CLOUD)
    shown: list[str] = []
    answer = assistant.ask("What is my key?", use_notes=False, on_token=shown.append)
    assert answer.answered_by == "cloud" and answer.text == "".join(shown) == "The key is [key hidden]."
    row = recorded(skiff_home, answer.id)
    assert row["answered_by"] == "cloud" and json.loads(row["sent"])["model"] == "big"


def test_a_cloud_failure_falls_back_to_the_local_model_and_says_so(skiff_home, tmp_path):
    assistant = assistant_with(skiff_home, tmp_path, "cloud", ["Answered here."], cloud_answering(None, 500), **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False)
    assert (answer.answered_by, answer.text) == ("local", "Answered here.")
    assert any("answered locally" in notice for notice in answer.notices)
    assert recorded(skiff_home, answer.id)["answered_by"] == "local"


def test_offline_a_cloud_question_stays_here_without_touching_the_endpoint(skiff_home, tmp_path):
    calls = []

    def never(request):
        calls.append(request)
        raise AssertionError("offline mode reached the endpoint")

    import httpx

    assistant = assistant_with(skiff_home, tmp_path, "cloud", ["Answered here."], httpx.MockTransport(never),
                               offline=True, **CLOUD)
    answer = assistant.ask("What is a sail?", use_notes=False)
    assert answer.answered_by == "local" and not calls
    assert answer.notices[0].startswith("offline mode")


def test_a_cancelled_local_answer_keeps_what_was_written(skiff_home, tmp_path):
    cancel = threading.Event()
    assistant = assistant_with(skiff_home, tmp_path, "local", ["one two three four five six"])
    shown: list[str] = []

    def stop_after_two(piece: str) -> None:
        shown.append(piece)
        if len(shown) == 2:
            cancel.set()

    answer = assistant.ask("Count.", use_notes=False, on_token=stop_after_two, cancel=cancel)
    assert answer.stop_reason == "cancelled" and answer.text == "one two"
    assert recorded(skiff_home, answer.id)["stop_reason"] == "cancelled"
