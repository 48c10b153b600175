"""Test-time LoRA against the real parts: the bundled SmolLM2 GGUF dequantised into torch, an
adapter trained with peft, written in llama.cpp's GGUF LoRA format and attached to the running
llama.cpp context."""

from __future__ import annotations

import numpy as np
import pytest

from skiff.local.assets import bundled_gguf_path

NOVEL = "The zeppelin quartermaster keeps the spare templates in the brass cabinet on deck three."
PROMPT = "The zeppelin quartermaster keeps the spare templates in the"


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((np.exp(p) * (p - q)).sum())


@pytest.fixture(scope="module")
def trained(shared_cache, tmp_path_factory):
    """A strong adapter (8 steps at a high learning rate on one sentence), so its effect is large."""
    from skiff.local.lora.lora import LoraSpec, LoraTrainer
    from skiff.local.lora.training_copy import load_training_copy

    copy = load_training_copy(bundled_gguf_path(), shared_cache)
    spec = LoraSpec(rank=8, alpha=16, learning_rate=1e-3,
                    targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    trainer = LoraTrainer(copy, spec, "llama")
    trainer.start()
    losses = [trainer.step(NOVEL).loss for _ in range(8)]
    path = trainer.write_gguf(tmp_path_factory.mktemp("adapter") / "adapter.gguf")
    return trainer, path, losses


@pytest.fixture(scope="module")
def local_model():
    from skiff.local.llm import LocalModel

    model = LocalModel(bundled_gguf_path(), n_ctx=512)
    yield model
    model.close()


def test_training_steps_lower_the_loss_on_the_text(trained):
    _, _, losses = trained
    assert losses[-1] < losses[0] / 2


def test_the_gguf_adapter_gives_the_torch_adapters_next_token_distribution(trained, local_model):
    trainer, path, _ = trained
    ids = local_model.llama.tokenize(PROMPT.encode(), add_bos=False)
    torch_lora = trainer.next_token_logprobs(ids)
    torch_base = trainer.next_token_logprobs(ids, with_adapter=False)
    llama_base = local_model.next_token_logprobs(ids)
    with local_model.adapter(path):
        llama_lora = local_model.next_token_logprobs(ids)
    # The adapter moves the distribution a long way, and llama.cpp follows it to within the
    # quantisation gap (the same gap the base models show).
    assert kl(torch_lora, torch_base) > 1.0
    assert kl(torch_lora, llama_lora) < 0.02
    assert kl(torch_lora, llama_lora) < kl(torch_lora, llama_base) / 100
    assert int(np.argmax(llama_lora)) == int(np.argmax(torch_lora)) != int(np.argmax(llama_base))


def test_the_base_model_is_restored_after_the_adapter_even_on_error(trained, local_model):
    _, path, _ = trained
    ids = local_model.llama.tokenize(PROMPT.encode(), add_bos=False)
    before = local_model.next_token_logprobs(ids)
    with pytest.raises(RuntimeError, match="mid-answer"):
        with local_model.adapter(path):
            assert np.abs(local_model.next_token_logprobs(ids) - before).max() > 1.0
            raise RuntimeError("mid-answer")
    after = local_model.next_token_logprobs(ids)
    assert np.abs(after - before).max() < 1e-6


def test_the_adapter_file_follows_llama_cpps_naming(trained):
    import gguf

    trainer, path, _ = trained
    reader = gguf.GGUFReader(str(path))
    fields = {name: reader.fields[name] for name in ("general.type", "adapter.type", "adapter.lora.alpha")}
    text = {name: bytes(f.parts[f.data[0]]).decode() for name, f in fields.items() if name != "adapter.lora.alpha"}
    assert text == {"general.type": "adapter", "adapter.type": "lora"}
    assert float(fields["adapter.lora.alpha"].parts[-1][0]) == 16.0
    tensors = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    layers = trainer.config.num_hidden_layers
    assert len(tensors) == layers * 7 * 2
    hidden, rank = trainer.config.hidden_size, 8
    # GGUF lists dimensions innermost first: A is rank × in, stored as (in, rank).
    assert tensors["blk.0.attn_q.weight.lora_a"] == (hidden, rank)
    assert tensors["blk.0.attn_q.weight.lora_b"] == (rank, hidden)
    assert f"blk.{layers - 1}.ffn_down.weight.lora_b" in tensors


def test_the_training_copy_is_cached_once(shared_cache):
    from skiff.local.lora.training_copy import copy_folder, load_training_copy

    folder = copy_folder(bundled_gguf_path(), shared_cache)
    load_training_copy(bundled_gguf_path(), shared_cache)
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert not list(folder.parent.glob("*.tmp*"))  # nothing half-written left behind


def test_an_unknown_architecture_is_refused_with_a_reason(trained):
    from skiff.local.lora.lora import LoraTrainer

    trainer, _, _ = trained
    with pytest.raises(ValueError, match="supports llama, qwen2"):
        LoraTrainer(type("Copy", (), {"model": None, "tokenizer": None})(), trainer.spec, "mamba")


def test_a_base_adapter_reloads_when_its_file_is_rewritten_and_votes_use_it(trained, local_model, tmp_path):
    """The personal adapter sits under generation and under the vote sampler's own context; a
    retrained file at the same path is loaded afresh."""
    import shutil

    from skiff.local.sampling import ParallelSampler

    trainer, path, _ = trained
    ids = local_model.llama.tokenize(PROMPT.encode(), add_bos=False)
    base = local_model.next_token_logprobs(ids)
    personal = tmp_path / "personal.gguf"
    shutil.copy(path, personal)
    sampler = ParallelSampler(local_model, max_sequences=2, n_ctx=512)
    try:
        local_model.set_base_adapter(personal)
        tuned = local_model.next_token_logprobs(ids)
        assert int(np.argmax(tuned)) != int(np.argmax(base))
        (sample,) = sampler.sample(ids, 1, max_tokens=1, temperature=0.0)
        assert local_model.llama.tokenize(sample.text.encode(), add_bos=False)[0] == int(np.argmax(tuned))

        trainer.start()  # a fresh (no-op) adapter written over the same file: the base again
        trainer.write_gguf(personal)
        local_model.set_base_adapter(personal)
        assert np.abs(local_model.next_token_logprobs(ids) - base).max() < 1e-3
    finally:
        local_model.set_base_adapter(None)
        sampler.close()
    assert np.abs(local_model.next_token_logprobs(ids) - base).max() < 1e-6
