"""Embeddings of evaluation prompts, cached on disk by content: `skiff router eval` re-run on the
same 12k prompts costs milliseconds instead of two minutes of encoding."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Callable

import numpy as np

from skiff.local.atomic import write_atomically


class EmbeddingCache:
    def __init__(self, path: Path, encode: Callable[[list[str]], np.ndarray], model_key: str) -> None:
        self.path = Path(path)
        self.encode = encode
        self.model_key = model_key
        self._vectors: dict[str, np.ndarray] | None = None

    @classmethod
    def for_embedder(cls, embedder, cache_dir: Path) -> "EmbeddingCache":
        """The evaluation cache of skiff's embedder; a different model or backend starts afresh."""
        key = embedder.onnx_path().name if embedder.backend == "onnx" else f"torch:{embedder.model_dir}"
        return cls(Path(cache_dir) / "router-eval" / "embeddings.npz", embedder.encode, key)

    def _load(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if str(data["model_key"]) == self.model_key:
                        self._vectors = dict(zip((str(k) for k in data["keys"]), data["vectors"]))
            except (OSError, KeyError, ValueError):
                pass  # no cache yet, or an unreadable one: recompute
        return self._vectors

    def __call__(self, texts: list[str]) -> np.ndarray:
        vectors = self._load()
        keys = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest()[:24] for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in vectors))
        if missing:
            first = {k: t for k, t in zip(keys, texts)}
            for key, vector in zip(missing, self.encode([first[k] for k in missing])):
                vectors[key] = np.asarray(vector, dtype=np.float32)
            buffer = io.BytesIO()
            np.savez(buffer, model_key=np.array(self.model_key), keys=np.array(list(vectors)),
                     vectors=np.stack(list(vectors.values())))
            write_atomically(self.path, buffer.getvalue())
        return np.stack([vectors[k] for k in keys]).astype(np.float64)
