"""The local language model: a GGUF file run by llama.cpp (llama-cpp-python).

skiff renders the chat template itself and drives llama.cpp's token loop directly, so it knows
the exact prompt length (to fit the context window), counts every generated token, and can stop
between any two tokens (cancellation).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

ChatMessage = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    architecture: str
    size_bytes: int
    context_length: int | None
    quantization: str | None
    has_chat_template: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TokenConfidence:
    """The model's own confidence in what it wrote, token by token: the log-probability of each
    generated token and the entropy (nats) of the distribution it was drawn from, with the text
    of each token so that a span of the answer can be found again."""

    logprobs: list[float] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)

    def add(self, logits, token: int, piece: str) -> None:
        import numpy as np

        row = np.asarray(logits, dtype=np.float64)
        top = row.max()
        shifted = row - top
        log_total = float(np.log(np.exp(shifted).sum()))
        logprobs = shifted - log_total
        self.logprobs.append(float(logprobs[token]))
        self.entropies.append(float(-(np.exp(logprobs) * logprobs).sum()))
        self.pieces.append(piece)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None  # from the call to the first generated token
    total_s: float = 0.0
    decode_s: float = 0.0  # from the first to the last generated token
    stop_reason: str = ""  # "eos", "length", "context", "cancelled"
    # Set `confidence` to a TokenConfidence before streaming to have each generated token's
    # log-probability and the entropy of the distribution it was drawn from recorded in it.
    confidence: "TokenConfidence | None" = None

    @property
    def decode_tokens_per_s(self) -> float | None:
        if self.completion_tokens < 2 or self.decode_s <= 0:
            return None
        return (self.completion_tokens - 1) / self.decode_s


# GGUF general.file_type values (llama.cpp's LLAMA_FTYPE) for the common quantisations.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp writes load chatter straight to fd 2; keep the terminal for skiff's output."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _info_from_metadata(path: Path, metadata: dict[str, str]) -> ModelInfo:
    arch = metadata.get("general.architecture", "unknown")
    ctx = metadata.get(f"{arch}.context_length")
    file_type = metadata.get("general.file_type")
    quant = _FILE_TYPES.get(int(file_type)) if file_type and file_type.isdigit() else None
    return ModelInfo(
        path=str(path),
        name=metadata.get("general.name", path.stem),
        architecture=arch,
        size_bytes=path.stat().st_size,
        context_length=int(ctx) if ctx and ctx.isdigit() else None,
        quantization=quant,
        has_chat_template="tokenizer.chat_template" in metadata,
    )


def read_model_info(path: Path) -> ModelInfo:
    """Metadata without loading the weights (vocab only)."""
    from llama_cpp import Llama

    with _quiet_stderr():
        vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return _info_from_metadata(Path(path), dict(vocab.metadata))
    finally:
        vocab.close()


_FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class LocalModel:
    """One loaded GGUF model. Not thread-safe: one generation at a time (guarded by a lock)."""

    def __init__(self, path: Path, n_ctx: int = 4096, n_threads: int | None = None, seed: int = 0) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        threads = n_threads or max(1, os.cpu_count() or 1)
        self.threads = threads
        with _quiet_stderr():
            self.llama = Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                seed=seed,
                verbose=False,
            )
        self.n_ctx = self.llama.n_ctx()
        self.info = _info_from_metadata(self.path, dict(self.llama.metadata))
        template = self.llama.metadata.get("tokenizer.chat_template") or _FALLBACK_TEMPLATE
        model = self.llama._model
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(self.llama.token_eos()),
            bos_token=model.token_get_text(self.llama.token_bos()),
        )
        # Re-entrant: a generation inside `with model.adapter(...)` takes it again in the same thread.
        self._lock = threading.RLock()
        self._base_adapter: tuple[Path, int, object] | None = None  # (path, mtime, llama.cpp handle)
        self._closed = False

    def close(self) -> None:
        """Free the model once the generation in progress (if any) has stopped: closing it under a
        running decode (an app quitting mid-answer) would crash the process."""
        with self._lock:
            self._closed = True
            self.llama.close()

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("the local model was closed")

    # -- prompts ---------------------------------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage]) -> str:
        return self._formatter(messages=list(messages)).prompt

    def tokenize_prompt(self, prompt: str) -> list[int]:
        # The template writes BOS itself when the model wants one; never add a second.
        tokens = self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        bos = self.llama.token_bos()
        if self.llama._model.add_bos_token() and bos >= 0 and (not tokens or tokens[0] != bos):
            tokens = [bos] + tokens
        return tokens

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_chat_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self.tokenize_prompt(self.render(messages)))

    # -- adapters --------------------------------------------------------------------------------

    def _apply_adapters(self, handles: list) -> None:
        import ctypes

        import llama_cpp

        if handles:
            array = (llama_cpp.llama_adapter_lora_p_ctypes * len(handles))(*handles)
            scales = (ctypes.c_float * len(handles))(*([1.0] * len(handles)))
            failed = llama_cpp.llama_set_adapters_lora(self.llama._ctx.ctx, array, len(handles), scales)
        else:
            failed = llama_cpp.llama_set_adapters_lora(self.llama._ctx.ctx, None, 0, None)
        self.llama.reset()  # cached tokens were computed under the previous adapters
        if failed:
            raise ValueError("llama.cpp could not attach the LoRA adapter(s)")

    def _load_adapter(self, path: Path):
        import llama_cpp

        handle = llama_cpp.llama_adapter_lora_init(self.llama._model.model, str(path).encode())
        if not handle:
            raise ValueError(f"llama.cpp could not load the LoRA adapter {path}")
        return handle

    @property
    def base_adapter(self) -> Path | None:
        return self._base_adapter[0] if self._base_adapter else None

    def adapter_handles(self) -> list:
        """llama.cpp handles of the adapters in effect (for another context on this model)."""
        return [self._base_adapter[2]] if self._base_adapter else []

    def set_base_adapter(self, path: Path | None) -> None:
        """An adapter under every generation until changed (the personal adapter), or none. A file
        rewritten at the same path (a retrained adapter) is loaded afresh."""
        import llama_cpp

        with self._lock:
            self._require_open()
            stamp = Path(path).stat().st_mtime_ns if path is not None else None
            current = self._base_adapter[:2] if self._base_adapter else None
            if current == ((Path(path), stamp) if path is not None else None):
                return
            handle = self._load_adapter(Path(path)) if path is not None else None
            old = self._base_adapter
            try:
                self._apply_adapters([handle] if handle is not None else [])
            except ValueError:
                if handle is not None:
                    llama_cpp.llama_adapter_lora_free(handle)
                raise
            self._base_adapter = (Path(path), stamp, handle) if handle is not None else None
            if old is not None:
                llama_cpp.llama_adapter_lora_free(old[2])

    @contextlib.contextmanager
    def adapter(self, path: Path) -> Iterator[None]:
        """Generate with the GGUF LoRA adapter at `path` attached (on top of the base adapter, if
        any); only the base is left when the block ends, however it ends. The model is not
        reloaded; the KV cache is cleared on the way in and out. Other threads wait for the block."""
        import llama_cpp

        with self._lock:
            self._require_open()
            base = self.adapter_handles()
            handle = self._load_adapter(path)
            try:
                self._apply_adapters(base + [handle])
                yield
            finally:
                self._apply_adapters(base)
                llama_cpp.llama_adapter_lora_free(handle)

    def next_token_logprobs(self, prompt_tokens: Sequence[int]):
        """Log-probabilities over the vocabulary for the token after `prompt_tokens`. The part of
        the prompt this context evaluated last time is reused, so a check whose prompt shares its
        start with the answer's costs only the tokens where they differ (and the answer, after
        it, only its own)."""
        import numpy as np

        with self._lock:
            self._require_open()
            self._evaluate_reusing(list(prompt_tokens))
            logits = self._last_logits().astype(np.float64)
        top = logits.max()
        return logits - (top + np.log(np.exp(logits - top).sum()))

    def _last_logits(self):
        import numpy as np

        # Without logits_all, llama-cpp-python keeps no scores; the context holds the last row.
        return np.ctypeslib.as_array(self.llama._ctx.get_logits(), shape=(self.llama.n_vocab(),))

    def _evaluate_reusing(self, tokens: list[int]) -> None:
        cached = self.llama._input_ids[: self.llama.n_tokens].tolist()
        keep = 0
        for a, b in zip(cached, tokens[:-1]):  # at least the last token is evaluated: its logits are wanted
            if a != b:
                break
            keep += 1
        self.llama.n_tokens = keep  # eval() drops the KV cache past n_tokens before it evaluates
        self.llama.eval(tokens[keep:])

    def token_ids(self, texts: Sequence[str]) -> list[int]:
        """The first token of each text, as this model's tokenizer splits it (duplicates dropped)."""
        ids: list[int] = []
        for text in texts:
            tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            if tokens and tokens[0] not in ids:
                ids.append(tokens[0])
        return ids

    # -- generation ------------------------------------------------------------------------------

    def stream(
        self,
        prompt_tokens: list[int],
        max_tokens: int,
        temperature: float = 0.0,
        repeat_penalty: float = 1.1,
        stats: GenerationStats | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """Yield text pieces as tokens are generated. `stats` is filled in as it goes."""
        stats = stats if stats is not None else GenerationStats()
        stats.prompt_tokens = len(prompt_tokens)
        room = self.n_ctx - len(prompt_tokens)
        if room <= 0:
            raise ValueError(f"prompt of {len(prompt_tokens)} tokens does not fit the {self.n_ctx}-token context")
        limit = min(max_tokens, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        import llama_cpp

        vocab = self.llama._model.vocab
        started = time.perf_counter()
        first_at = last_at = None
        stats.stop_reason = "length" if limit == max_tokens else "context"
        with self._lock:
            self._require_open()
            generator = self.llama.generate(
                prompt_tokens,
                temp=temperature,
                top_k=40,
                top_p=0.95,
                min_p=0.05,
                repeat_penalty=repeat_penalty,
                reset=True,
            )
            try:
                for token in generator:
                    now = time.perf_counter()
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        stats.stop_reason = "eos"
                        break
                    if first_at is None:
                        first_at = now
                        stats.first_token_s = now - started
                    last_at = now
                    stats.completion_tokens += 1
                    piece = decoder.decode(self.llama.detokenize([token], special=False))
                    if stats.confidence is not None:
                        # The context still holds the logits this token was drawn from: it is
                        # evaluated only when the generator resumes.
                        stats.confidence.add(self._last_logits(), token, piece)
                    if piece:
                        yield piece
                    if stats.completion_tokens >= limit:
                        break
                    if should_stop is not None and should_stop():
                        stats.stop_reason = "cancelled"
                        break
            finally:
                generator.close()
                tail = decoder.decode(b"", final=True)
                stats.total_s = time.perf_counter() - started
                if first_at is not None and last_at is not None:
                    stats.decode_s = last_at - first_at
        if tail:
            yield tail
