"""`skiff tune`: the personal adapter over the whole index, resumable, used under every answer
until the notes change. Real model, real index, real training."""

from __future__ import annotations

import threading

import numpy as np
import pytest


@pytest.fixture
def small_vault(vault):
    """Three notes of the vault slice: a few dozen chunks, so whole-index training stays quick."""
    keep = {"Plugins/Templates.md", "Getting started/Link notes.md", "Help and support.md"}
    for path in list(vault.rglob("*.md")):
        if path.relative_to(vault).as_posix() not in keep:
            path.unlink()
    return vault


def test_a_cancelled_tune_resumes_to_exactly_the_uninterrupted_adapter(assistant, small_vault, tmp_path):
    from skiff.assistant.personal_adapter import PersonalAdapter

    assistant.index([small_vault])
    cancel = threading.Event()
    seen = []

    def stop_after_seven(done, total):
        seen.append((done, total))
        if done == 7:
            cancel.set()

    status = assistant.tune(progress=stop_after_seven, cancel=cancel)
    total = seen[-1][1]
    assert status.state == "partial" and status.steps_done == 7 and total > 7
    resumed = []
    status = assistant.tune(progress=lambda done, total: resumed.append(done))
    assert resumed[0] == 7 and resumed[-1] == total  # carried on from the checkpoint
    assert status.state == "ready" and status.steps_total == total
    interrupted = assistant.personal.lora_tensors()[0]

    # The same training in one go, into another folder, gives the same adapter.
    straight = PersonalAdapter(tmp_path / "straight")
    from skiff.local.lora.lora import LoraTrainer
    from skiff.local.lora.training_copy import load_training_copy
    from skiff.assistant.adapter_spec import lora_spec

    trainer = LoraTrainer(load_training_copy(assistant.model_path, assistant.settings.cache_dir),
                          lora_spec(assistant.settings), "llama")
    chunks = [chunk.text for chunk in assistant.notes.chunk_texts()]
    straight.train(trainer, chunks, assistant.notes.fingerprint())
    uninterrupted = straight.lora_tensors()[0]
    assert interrupted.keys() == uninterrupted.keys()
    for name in interrupted:
        for a, b in zip(interrupted[name], uninterrupted[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_the_personal_adapter_sits_under_answers_until_the_notes_change(assistant, small_vault):
    assistant.index([small_vault])
    assistant.settings.max_tokens = 8
    model = assistant.model
    probe = model.tokenize_prompt(model.render([{"role": "user", "content": "How do I link to a heading?"}]))
    base = model.next_token_logprobs(probe)
    assert assistant.tune().state == "ready"
    assistant.ask("How do I link to a heading?")
    assert model.base_adapter == assistant.personal.adapter_path
    assert np.abs(model.next_token_logprobs(probe) - base).max() > 1e-3  # the adapter is in effect

    assistant.settings.personal_adapter = False  # switched off: kept, but answers go without it
    assistant.ask("How do I link to a heading?")
    assert model.base_adapter is None
    assert np.abs(model.next_token_logprobs(probe) - base).max() < 1e-6
    assert assistant.status()["personal_adapter"]["note"].endswith("not used: personal_adapter = false")
    assistant.settings.personal_adapter = True
    assistant.ask("How do I link to a heading?")
    assert model.base_adapter == assistant.personal.adapter_path  # back on, with no training

    note = small_vault / "Plugins" / "Templates.md"
    note.write_text(note.read_text(encoding="utf-8") + "\n\nA new paragraph about brass cabinets.\n",
                    encoding="utf-8")
    assistant.index([small_vault])
    assert assistant.personal_status().state == "stale"
    assistant.ask("How do I link to a heading?")
    assert model.base_adapter is None
    assert np.abs(model.next_token_logprobs(probe) - base).max() < 1e-6  # the untouched base again
    assert assistant.status()["personal_adapter"]["state"] == "stale"


def test_tune_leaves_private_notes_out_and_goes_stale_when_private_paths_change(assistant, small_vault):
    """What the adapter learns shows up in answers that cite no private source (and such answers
    may later reach the cloud as chat history), so it never trains on a private note."""
    marked = small_vault / "Help and support.md"
    text = marked.read_text(encoding="utf-8")
    assert text.startswith("---\n")  # its front matter says private too
    marked.write_text("---\nprivate: true\n" + text[4:], encoding="utf-8")
    assistant.settings.private_paths = [str(small_vault / "Plugins")]
    assistant.index([small_vault])
    chunks = list(assistant.notes.chunk_texts())
    private = [chunk for chunk in chunks if chunk.path == str(marked) or "/Plugins/" in chunk.path]
    assert 0 < len(private) < len(chunks)
    assert all(chunk.private for chunk in chunks if chunk.path == str(marked))

    cancel = threading.Event()
    cancel.set()  # the step count is settled before the first step; no need to train
    status = assistant.tune(cancel=cancel)
    assert status.state == "partial"
    assert status.steps_total == len(chunks) - len(private)
    assert status.private_left_out == len(private)
    assert f"{len(private)} chunk(s) of private notes left out" in status.describe()

    assistant.settings.private_paths = []  # the Plugins notes may be learnt from now
    assert assistant.personal_status().state == "stale"
