"""Several continuations of one prompt, decoded together (for self-consistency voting).

The prompt is evaluated once in a second llama.cpp context on the already loaded model (no
reload, only its own KV cache), its cache is copied to N sequences, and each step decodes one
token for every live sequence in a single batch: matrix-matrix work, which even two CPU cores do
markedly faster than N separate generations. Sampling (temperature, top-k, top-p) is done in numpy
with a seeded generator per call, so a vote is reproducible.
"""

from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass
class Sample:
    text: str
    tokens: int
    stop_reason: str  # "eos", "length" or "cancelled"


@dataclass
class SamplingStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    capped_to: int | None = None  # tokens per sample, when the context could not hold max_tokens each


def pick_token(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int = 40,
               top_p: float = 0.95) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    k = min(top_k, len(logits))
    top = np.argpartition(logits, -k)[-k:]
    scaled = logits[top].astype(np.float64) / temperature
    order = np.argsort(-scaled)
    top, scaled = top[order], scaled[order]
    p = np.exp(scaled - scaled[0])
    p /= p.sum()
    keep = max(1, int(np.searchsorted(np.cumsum(p), top_p) + 1))
    p = p[:keep] / p[:keep].sum()
    return int(top[rng.choice(keep, p=p)])


class ParallelSampler:
    def __init__(self, model, max_sequences: int = 8, n_ctx: int = 4096, n_batch: int = 512) -> None:
        import llama_cpp
        from llama_cpp import _internals as internals

        self.model = model
        self.max_sequences = max_sequences
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = max_sequences
        params.kv_unified = True  # the sequences share one cache of n_ctx cells (the prompt once, then copies)
        params.n_threads = params.n_threads_batch = model.threads
        self.n_batch = n_batch
        self.ctx = internals.LlamaContext(model=model.llama._model, params=params, verbose=False)
        self.batch = internals.LlamaBatch(n_tokens=max(n_batch, max_sequences), embd=0, n_seq_max=max_sequences)
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Free the context once a vote in progress (if any) has stopped."""
        with self._lock:
            self._closed = True
            self.batch.close()
            self.ctx.close()

    def _fill(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """(token, position, sequence, wants logits) per batch row."""
        batch = self.batch.batch
        batch.n_tokens = len(entries)
        for row, (token, position, sequence, logits) in enumerate(entries):
            batch.token[row] = token
            batch.pos[row] = position
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = sequence
            batch.logits[row] = logits

    def _logits(self, row: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.ctx.get_logits_ith(row), shape=(self.model.llama.n_vocab(),)).copy()

    def sample(self, prompt_tokens: Sequence[int], n: int, max_tokens: int, temperature: float = 0.7,
               seed: int = 0, should_stop: Callable[[], bool] | None = None,
               on_step: Callable[[int, int], None] | None = None,
               stats: SamplingStats | None = None) -> list[Sample]:
        """`n` sampled continuations of `prompt_tokens`. `on_step(tokens_done, max_tokens)` is
        called as decoding goes."""
        import llama_cpp

        if not 1 <= n <= self.max_sequences:
            raise ValueError(f"between 1 and {self.max_sequences} samples, not {n}")
        prompt = list(prompt_tokens)
        stats = stats if stats is not None else SamplingStats()
        if len(prompt) + n * max_tokens > self.ctx.n_ctx():
            max_tokens = max(1, (self.ctx.n_ctx() - len(prompt)) // n)
            stats.capped_to = max_tokens
        stats.prompt_tokens = len(prompt)
        started = time.perf_counter()
        vocab = self.model.llama._model.vocab
        rng = np.random.default_rng(seed)
        # The model's lock: the adapters in effect (the personal one) must not change mid-vote.
        with self._lock, self.model._lock:
            if self._closed:
                raise RuntimeError("the sampler was closed")
            handles = self.model.adapter_handles()
            if handles:
                import ctypes

                array = (llama_cpp.llama_adapter_lora_p_ctypes * len(handles))(*handles)
                llama_cpp.llama_set_adapters_lora(
                    self.ctx.ctx, array, len(handles), (ctypes.c_float * len(handles))(*[1.0] * len(handles))
                )
            else:
                llama_cpp.llama_set_adapters_lora(self.ctx.ctx, None, 0, None)
            memory = llama_cpp.llama_get_memory(self.ctx.ctx)
            llama_cpp.llama_memory_clear(memory, True)
            for start in range(0, len(prompt), self.n_batch):
                piece = prompt[start:start + self.n_batch]
                last = start + len(piece) == len(prompt)
                self._fill([(t, start + i, 0, last and i == len(piece) - 1) for i, t in enumerate(piece)])
                self.ctx.decode(self.batch)
            first_logits = self._logits(len(prompt) - 1 - (len(prompt) - 1) // self.n_batch * self.n_batch)
            for sequence in range(1, n):
                llama_cpp.llama_memory_seq_cp(memory, 0, sequence, -1, -1)
            tokens: list[list[int]] = [[] for _ in range(n)]
            endings = ["length"] * n
            live = list(range(n))
            next_tokens = {s: pick_token(first_logits, rng, temperature) for s in live}
            for step in range(max_tokens):
                for sequence in list(live):
                    token = next_tokens[sequence]
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        endings[sequence] = "eos"
                        live.remove(sequence)
                    else:
                        tokens[sequence].append(token)
                if not live or step == max_tokens - 1:
                    break
                if should_stop is not None and should_stop():
                    for sequence in live:
                        endings[sequence] = "cancelled"
                    break
                self._fill([(next_tokens[s], len(prompt) + step, s, True) for s in live])
                self.ctx.decode(self.batch)
                next_tokens = {s: pick_token(self._logits(row), rng, temperature) for row, s in enumerate(live)}
                if on_step is not None:
                    on_step(step + 1, max_tokens)
        samples = []
        for sequence in range(n):
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            text = decoder.decode(self.model.llama.detokenize(tokens[sequence], special=False), final=True)
            samples.append(Sample(text, len(tokens[sequence]), endings[sequence]))
        stats.completion_tokens = sum(s.tokens for s in samples)
        stats.seconds = time.perf_counter() - started
        return samples
