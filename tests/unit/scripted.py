"""Scripted stand-ins for the Assistant's parts, for the fast tier: a local model whose answers
come from a script (words are its tokens), an embedder of hashed words, and a policy that routes
as told. The real parts keep their real tests in tests/integration."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import httpx
import numpy as np

from skiff.local.llm import GenerationStats
from skiff.router.policy import Decision, QuestionWithNotes, Route


class ScriptedModel:
    """LocalModel's methods the answer path calls. Each answer is the next line of `answers`;
    `logprobs`, when given, is each answer's log-probability for every one of its tokens (what a
    draft check reads; the entropy reported is its negative)."""

    def __init__(self, path: Path, answers: Sequence[str], n_ctx: int = 4096,
                 logprobs: Sequence[float] = ()) -> None:
        path.write_bytes(b"GGUF scripted")  # a file, as the personal adapter's key reads one
        self.path, self.answers, self.n_ctx = path, list(answers), n_ctx
        self.logprobs = list(logprobs)
        self.base_adapter: Path | None = None
        self.prompts: list[list[int]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def count_chat_tokens(self, messages: Sequence[dict]) -> int:
        return sum(self.count_tokens(m["content"]) + 4 for m in messages)

    def render(self, messages: Sequence[dict]) -> str:
        return "\n".join(f"<{m['role']}> {m['content']}" for m in messages)

    def tokenize_prompt(self, prompt: str) -> list[int]:
        return [len(word) for word in prompt.split()]

    def stream(self, prompt_tokens: list[int], max_tokens: int, temperature: float = 0.0,
               repeat_penalty: float = 1.1, stats: GenerationStats | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
        stats = stats if stats is not None else GenerationStats()
        self.prompts.append(list(prompt_tokens))
        words = self.answers.pop(0).split(" ")
        logprob = self.logprobs.pop(0) if self.logprobs else -0.5
        stats.prompt_tokens, stats.stop_reason = len(prompt_tokens), "eos"
        started = time.perf_counter()
        for n, word in enumerate(words[:max_tokens]):
            piece = word if n == 0 else " " + word
            stats.completion_tokens += 1
            if stats.confidence is not None:
                stats.confidence.logprobs.append(logprob)
                stats.confidence.entropies.append(-logprob)
                stats.confidence.pieces.append(piece)
            yield piece
            if should_stop is not None and should_stop():
                stats.stop_reason = "cancelled"
                return
        stats.decode_s = time.perf_counter() - started

    def set_base_adapter(self, path: Path | None) -> None:
        self.base_adapter = path

    def close(self) -> None:
        pass


class ScriptedEmbedder:
    """Unit vectors from hashed words: the same text, the same vector."""

    dimension = 384

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dimension))
        for row, text in zip(rows, texts):
            for word in text.lower().split():
                row[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
            row /= max(np.linalg.norm(row), 1e-9)
        return rows


class RouteAs:
    """A routing policy that sends every question where it is told."""

    def __init__(self, route: Route) -> None:
        self.route = route

    def decide(self, consulted: QuestionWithNotes) -> Decision:
        return Decision(self.route, f"scripted: {self.route}")


def cloud_answering(pieces: Sequence[str] | None, status: int = 200) -> httpx.MockTransport:
    """An OpenAI-compatible endpoint in-process: streams `pieces`, or answers `status` with an
    error body."""

    def handle(request: httpx.Request) -> httpx.Response:
        if status != 200 or pieces is None:
            body = json.dumps({"error": {"message": "scripted failure"}}).encode()
            return httpx.Response(status, headers={"Content-Type": "application/json"}, stream=httpx.ByteStream(body))
        events = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in pieces]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 12, "completion_tokens": len(pieces)}})
        body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        return httpx.Response(
            200, headers={"Content-Type": "text/event-stream"}, stream=httpx.ByteStream(body.encode())
        )

    return httpx.MockTransport(handle)
