"""The one embedder skiff uses for indexing, retrieval and routing: all-MiniLM-L6-v2, 384-d, unit norm.

Two backends give the same vectors:
- "onnx" (default): the model exported once with torch.onnx.export into skiff's cache, then run by
  onnxruntime with the fast `tokenizers` tokenizer. No torch import at query time and ~1.6x the
  encode throughput of torch on two cores.
- "torch": sentence-transformers, the reference implementation.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from skiff.local.assets import embedder_model_dir

EMBEDDING_DIM = 384
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _max_seq_length(model_dir: Path) -> int:
    import json

    try:
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return 256


class Embedder:
    """Turns texts into L2-normalised float32 vectors; also counts tokens for the chunker."""

    def __init__(
        self,
        cache_dir: Path,
        backend: str = "onnx",
        n_threads: int | None = None,
        model_dir: Path | None = None,
        batch_size: int = 4,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else embedder_model_dir()
        self.cache_dir = Path(cache_dir)
        self.backend = backend
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.batch_size = batch_size
        self.max_seq_length = _max_seq_length(self.model_dir)
        self._lock = threading.Lock()
        self._session = None
        self._st_model = None
        from tokenizers import Tokenizer

        self._counter = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()

    # -- token counting (the chunker's size unit) ---------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token, for cutting over-long text on token boundaries."""
        return list(self._counter.encode(text, add_special_tokens=False).offsets)

    # -- encoding --------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        with self._lock:
            if self.backend == "torch":
                return self._encode_torch(list(texts))
            return self._encode_onnx(list(texts))

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]

    def _encode_torch(self, texts: list[str]) -> np.ndarray:
        if self._st_model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(self.n_threads)
            self._st_model = SentenceTransformer(str(self.model_dir), device="cpu")
        vectors = self._st_model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)

    def _encode_onnx(self, texts: list[str]) -> np.ndarray:
        # Small batches measured fastest on 2 cores (cache-resident activations): 4 gave ~140
        # chunks/s against ~100 at 32 on 128-token chunks.
        session, tokenizer = self._onnx()
        # Sorting by length keeps padding (wasted compute) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            encodings = tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = session.run(None, feeds)[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.clip(norms, 1e-12, None)
        return out

    def _onnx(self):
        if self._session is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            quiet_onnxruntime()
            path = self.onnx_path()
            if not path.exists():
                export_onnx_in_subprocess(self.model_dir, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.n_threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Idle pool threads otherwise spin for milliseconds after each run, taking the cores
            # from what runs next: a routing decision went from 27 to 11 ms p50 without spinning,
            # for ~5-10% less batch-encode throughput (bench/RESULTS.md).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
            tokenizer.enable_truncation(self.max_seq_length)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            self._tokenizer = tokenizer
        return self._session, self._tokenizer

    def onnx_path(self) -> Path:
        weights = self.model_dir / "model.safetensors"
        stat = weights.stat()
        key = hashlib.sha256(f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        return self.cache_dir / "embedder" / f"minilm-{key}.onnx"


def quiet_onnxruntime() -> None:
    """Belt and braces beside ORT_DISABLE_TELEMETRY (set in skiff.local): the runtime switch."""
    import onnxruntime as ort

    ort.disable_telemetry_events()


def export_onnx_in_subprocess(model_dir: Path, target: Path) -> None:
    """Run export_onnx in a child process, so torch (~300 MB resident) never stays in skiff's own
    memory for the rest of a long session."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "skiff.local.embedder", str(model_dir), str(target)],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or not target.exists():
        raise RuntimeError(f"exporting the embedder to ONNX failed:\n{result.stderr[-2000:]}")


def export_onnx(model_dir: Path, target: Path) -> None:
    """Export the transformer body to ONNX (pooling stays in numpy). Written atomically."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    class _Body(torch.nn.Module):
        """Positional inputs in a fixed order; the hidden states out."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True)

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    model = _Body().eval()
    sample = torch.ones((2, 8), dtype=torch.int64)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    dynamic = {name: {0: "batch", 1: "sequence"} for name in _ONNX_INPUTS}
    dynamic["last_hidden_state"] = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about code we do not own
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample)),
            str(tmp),
            input_names=list(_ONNX_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)


if __name__ == "__main__":
    import sys

    export_onnx(Path(sys.argv[1]), Path(sys.argv[2]))
