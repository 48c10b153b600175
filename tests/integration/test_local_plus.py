"""The local+ route: the adaptive stopping rule, answer extraction and voting, allocation by
difficulty, and both kinds of extra local compute through the Assistant with the real model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skiff.local.notes_index import Hit
from skiff.assistant.allocation import allocate
from skiff.assistant.question_adapter import select_training_chunks
from skiff.assistant.voting import extract_answer, has_extractable_answer, majority_vote
from skiff.router.state import Thresholds
from skiff.router.uncertainty import difficulty


def _hit(i: int, vector: np.ndarray) -> Hit:
    return Hit(f"c{i}", f"chunk {i}", "note.md", "note", "", 1, 2, None, False, 0.0, vector / np.linalg.norm(vector))


def test_selection_stops_at_the_first_n_where_n_sigma_reaches_one_over_alpha():
    rng = np.random.default_rng(0)
    query = rng.normal(size=384)  # MiniLM's dimension: 40 chunks leave part of the question uncovered
    query /= np.linalg.norm(query)
    candidates = [_hit(i, rng.normal(size=384) / np.sqrt(384) + 0.3 * query) for i in range(40)]
    for alpha in (0.1, 0.2, 0.5):
        chosen = select_training_chunks(query, candidates, alpha=alpha, max_steps=40)
        n = len(chosen.chunks)
        assert n * chosen.sigmas[-1] >= 1 / alpha
        assert all(m * s < 1 / alpha for m, s in enumerate(chosen.sigmas[:-1], start=1))
    # A larger α (a smaller budget 1/α) never trains longer.
    steps = [len(select_training_chunks(query, candidates, alpha=a, max_steps=40).chunks) for a in (0.1, 0.2, 0.5)]
    assert steps == sorted(steps, reverse=True) and steps[0] > steps[-1]


def test_selection_is_capped_and_skips_chunks_without_embeddings():
    rng = np.random.default_rng(1)
    query = rng.normal(size=16)
    query /= np.linalg.norm(query)
    near = [_hit(i, query + 0.01 * rng.normal(size=16)) for i in range(5)]  # σ collapses: the rule never fires
    chosen = select_training_chunks(query, near, alpha=0.2, max_steps=3)
    assert len(chosen.chunks) == 3 and chosen.reason == "step cap 3"
    bare = Hit("x", "text", "n.md", "n", "", 1, 1, None, False, 0.0, None)
    assert select_training_chunks(query, [bare], alpha=0.2, max_steps=3).chunks == []


@pytest.mark.parametrize("text, answer", [
    ("17 + 25 = 42\n\n[1] [2]", "42"),  # citation markers are not answers
    ("She pays $1,234.00 in all.\n#### 1234", "1234"),
    ("The answer is 18, not 5.", "18"),
    ("So the total is 3.50 dollars", "3.5"),
    ("I cannot tell.", None),
])
def test_extracting_a_numeric_answer(text, answer):
    assert extract_answer(text) == answer


def test_extracting_a_choice_and_voting():
    options = ["A", "B", "C"]
    assert extract_answer("The answer is (B).", options) == "B"
    assert extract_answer("Probably (C) because (A) is wrong... (C)", options) == "C"
    vote = majority_vote(["The answer is (B).", "(A)", "answer: B", "no idea"], options)
    assert (vote.answer, vote.count, vote.samples, vote.chosen) == ("B", 2, 4, 0)
    assert vote.agreement == 0.5
    assert majority_vote(["nothing", "here"]).answer is None
    # "answer a few points" is not option A; the last stated answer counts.
    assert extract_answer("To answer a few points first... the answer is (C)", options) == "C"
    assert extract_answer("answer is **B**", options) == "B"


def test_vote_sample_bounds_must_be_in_order():
    from pydantic import ValidationError

    from skiff.config.settings import Settings

    with pytest.raises(ValidationError, match="vote_min_samples"):
        Settings(vote_min_samples=10, vote_max_samples=8)


def test_a_personal_adapter_for_other_notes_or_another_model_is_stale(tmp_path):
    import json

    from skiff.assistant.personal_adapter import PersonalAdapter

    personal = PersonalAdapter(tmp_path)
    assert personal.status("notes-1", "model-a").state == "none"
    (tmp_path / "personal.gguf").write_bytes(b"GGUF")
    (tmp_path / "state.json").write_text(json.dumps({"fingerprint": "notes-1", "model_key": "model-a",
                                                     "steps_done": 5, "steps_total": 5, "finished": True}))
    assert personal.status("notes-1", "model-a").state == "ready"
    assert personal.usable("notes-1", "model-a") == tmp_path / "personal.gguf"
    assert personal.status("notes-2", "model-a").state == "stale"  # the notes changed
    assert personal.status("notes-1", "model-b").state == "stale"  # another model or LoRA shape
    assert personal.usable("notes-1", "model-b") is None


@pytest.mark.parametrize("question, votable", [
    ("Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips "
     "did she sell altogether?", True),
    ("What is 17 plus 25?", True),
    ("Which is largest?\n(A) 3\n(B) 5\n(C) 4", True),
    ("How do I link to a heading?", False),
    ("What is a callout?", False),
    ("What did I write on 2024-05-01?", False),  # a date is not a sum
])
def test_which_questions_have_an_answer_to_vote_on(question, votable):
    assert has_extractable_answer(question) is votable


def test_difficulty_runs_from_the_local_plus_threshold_to_the_cloud_one():
    thresholds = Thresholds(cloud=0.6, local_plus=0.2, cloud_share=0.2, local_plus_share=0.2, calibrated_on="test")
    assert difficulty(0.2, thresholds) == 0.0
    assert math.isclose(difficulty(0.4, thresholds), 0.5)
    assert difficulty(0.9, thresholds) == 1.0
    switched_on = allocate("What is 3 + 4?", False, True, {}, ["vote"], False, difficulty(0.4, thresholds), (3, 8))
    assert switched_on.samples == 6  # a vote never measured: its size follows difficulty


def test_local_plus_votes_with_the_draft_and_answers_with_more_notes_or_a_lora(skiff_home, vault):
    """Through the Assistant with the real model and the real index, asked for more local compute:
    a numeric question is voted on (the draft and samples), a notes question is answered again
    with SIFT's picks in context, voted on by consensus, or, switched on, answered with a
    test-time LoRA (progress reported per step); all are recorded, and the model after the LoRA
    answer is the untouched base."""
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    assistant = Assistant(load_settings(local_plus_methods=["vote"]))
    try:
        assistant.index([vault])
        voted = assistant.ask("What is 17 plus 25? Answer with a number.", route="local+")
        vote = voted.allocation["vote"]
        assert voted.allocation["kind"] == "vote" and vote["samples"] >= 2 and len(vote["answers"]) == vote["samples"]
        assert voted.text and voted.answered_by == "local"  # cloud not configured: no escalation
        assert assistant.answer_record(voted.id)["allocation"]["vote"] == vote
        assistant.settings.local_plus_methods = ["context"]
        more = assistant.ask("How do I link to a heading?", route="local+")
        assert more.allocation["kind"] == "context" and more.text
        assert more.allocation["context"]["notes_in_prompt"] >= len(more.sources) > 0

        assistant.settings.local_plus_methods = ["vote"]  # free text: the answer most like the others
        consensus = assistant.ask("How do I link to a heading?", route="local+")
        vote = consensus.allocation["vote"]
        assert consensus.allocation["kind"] == "vote" and vote["answers"][0] == "the draft" and consensus.text
        assert vote["answer"] in vote["answers"] and 1 <= vote["count"] <= vote["samples"]

        assistant.settings.local_plus_methods = ["lora"]
        model = assistant.model
        probe = model.tokenize_prompt(model.render([{"role": "user", "content": "How do I link to a heading?"}]))
        base_before = model.next_token_logprobs(probe)
        progress = []
        tuned = assistant.ask("How do I link to a heading?", route="local+", on_progress=lambda *p: progress.append(p))
        training = tuned.allocation["training"]
        assert tuned.allocation["kind"] == "lora" and training["steps"] >= 1 and tuned.text
        assert [p for p in progress if p[0] == "step"][-1] == ("step", training["steps"], training["steps"])
        assert not list((assistant.settings.cache_dir / "adapters").glob("*.gguf"))  # the adapter file is gone
        assert np.abs(model.next_token_logprobs(probe) - base_before).max() < 1e-6
    finally:
        assistant.close()


def test_cancelling_a_test_time_lora_mid_training_leaves_the_untouched_base(skiff_home, vault):
    """Esc while the question's LoRA trains: the answer says it was cancelled, no adapter file is
    left, and the model answers the next question as the base model did before."""
    import threading

    from skiff.assistant import Assistant
    from skiff.config import load_settings

    assistant = Assistant(load_settings(local_plus_methods=["lora"], ttt_max_steps=8, ttt_alpha=0.01))
    try:
        assistant.index([vault])
        model = assistant.model
        probe = model.tokenize_prompt(model.render([{"role": "user", "content": "What is a callout?"}]))
        base_before = model.next_token_logprobs(probe)
        cancel = threading.Event()
        steps = []

        def on_progress(stage, done, total):
            if stage == "step":
                steps.append(done)
                cancel.set()  # Esc after the first optimizer step

        answer = assistant.ask("How do I link to a heading?", route="local+", cancel=cancel, on_progress=on_progress)
        training = answer.allocation["training"]
        assert training["cancelled"] and steps and training["steps"] == max(steps) < 8
        assert answer.stop_reason == "cancelled"
        assert not list((assistant.settings.cache_dir / "adapters").glob("*.gguf"))
        assert np.abs(model.next_token_logprobs(probe) - base_before).max() < 1e-6
    finally:
        assistant.close()
