"""The local model on the real llama.cpp engine with the bundled SmolLM2-135M GGUF."""

from __future__ import annotations

import pytest

from skiff.local.assets import bundled_gguf_path
from skiff.local.llm import GenerationStats, LocalModel, TokenConfidence, read_model_info


@pytest.fixture(scope="module")
def model():
    instance = LocalModel(bundled_gguf_path(), n_ctx=1024, n_threads=2)
    yield instance
    instance.close()


def test_metadata_without_loading_weights():
    info = read_model_info(bundled_gguf_path())
    assert info.architecture == "llama" and info.quantization == "Q4_1"
    assert info.context_length == 8192 and info.has_chat_template


def test_streams_counts_and_respects_max_tokens(model):
    prompt = model.tokenize_prompt(model.render([{"role": "user", "content": "Count from one to fifty in words."}]))
    stats = GenerationStats()
    pieces = list(model.stream(prompt, max_tokens=12, stats=stats))
    assert stats.completion_tokens == 12 and stats.stop_reason == "length"
    assert len(pieces) >= 6 and "".join(pieces).strip()
    assert stats.first_token_s is not None and stats.first_token_s <= stats.total_s


def test_each_greedy_token_is_recorded_with_its_probability_and_the_entropy_it_came_from(model):
    prompt = model.tokenize_prompt(model.render([{"role": "user", "content": "What is the capital of France?"}]))
    stats = GenerationStats(confidence=TokenConfidence())
    text = "".join(model.stream(prompt, max_tokens=16, stats=stats))
    confidence = stats.confidence
    assert len(confidence.logprobs) == len(confidence.entropies) == stats.completion_tokens
    assert "".join(confidence.pieces) == text
    assert all(lp <= 0 for lp in confidence.logprobs) and all(h >= 0 for h in confidence.entropies)
    # The first greedy token is the most likely one: its probability matches the check's own
    # distribution over the same prompt.
    assert abs(confidence.logprobs[0] - float(model.next_token_logprobs(prompt).max())) < 1e-3


def test_greedy_generation_is_deterministic_and_reuses_nothing_stale(model):
    def answer(question: str) -> str:
        prompt = model.tokenize_prompt(model.render([{"role": "user", "content": question}]))
        return "".join(model.stream(prompt, max_tokens=24))

    first = answer("What is the capital of France?")
    other = answer("Name a primary colour.")
    assert answer("What is the capital of France?") == first != other


def test_cancel_stops_between_tokens(model):
    prompt = model.tokenize_prompt(model.render([{"role": "user", "content": "Write a long story about the sea."}]))
    stats = GenerationStats()
    seen = []
    list(model.stream(prompt, max_tokens=200, stats=stats, should_stop=lambda: len(seen.append(1) or seen) >= 5))
    assert stats.stop_reason == "cancelled" and stats.completion_tokens == 5


def test_prompt_that_fills_the_window_is_refused_clearly(model):
    with pytest.raises(ValueError, match="does not fit"):
        list(model.stream([1] * 1024, max_tokens=8))
