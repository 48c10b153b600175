"""chromadb, as skiff keeps its notes there: one collection of chunk vectors, texts and metadata.

Opening it checks it: a store chromadb calls damaged is set aside (renamed, never deleted) and a
new one started, and the owner is told through `on_damaged`. Reads are paged, since chromadb
refuses one query over a whole large collection ("too many SQL variables").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from skiff.local.embedder import Embedder
from skiff.local.recovery import quarantine

COLLECTION = "notes"
# chromadb rejects very large single add() calls; stay well under its limit.
CHROMA_WRITE_BATCH = 2000
# How chromadb words a damaged store (its Rust core passes SQLite's message through).
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt", "no such table", "disk image")
# Rows per read of a whole collection.
READ_PAGE = 5000


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    path: str
    title: str
    section: str
    line_start: int
    line_end: int
    page: int | None
    private: bool
    distance: float
    embedding: np.ndarray | None = None


class StoredChunk(NamedTuple):
    id: str
    text: str
    path: str
    private: bool  # `private: true` front matter (private_paths are the caller's to apply)


class SkiffEmbeddingFunction:
    """chromadb's embedding-function protocol over skiff's embedder, so chromadb never falls back
    to its own default (which downloads a model). skiff passes vectors itself on every call."""

    def __init__(self, embedder: Embedder | None) -> None:
        self._embedder = embedder

    def __call__(self, input):  # noqa: A002 - chromadb's protocol names it so
        if self._embedder is None:
            raise RuntimeError("skiff passes its own vectors; this collection has no embedder attached")
        return list(self._embedder.encode(list(input)))

    def embed_query(self, input):  # noqa: A002
        return self(input)

    @staticmethod
    def name() -> str:
        return "skiff-minilm"

    def get_config(self) -> dict:
        return {}

    @staticmethod
    def build_from_config(config: dict):
        # chromadb rebuilds the function from the collection's stored config when it reads the
        # collection back; skiff never lets chromadb embed, so a detached one is enough.
        return SkiffEmbeddingFunction(None)

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]


class ChromaStore:
    def __init__(self, folder: Path, embedder: Embedder,
                 on_damaged: Callable[[str, tuple[Path, ...]], None], on_opened: Callable[[], None]) -> None:
        self.folder = Path(folder)
        self.embedder = embedder
        self.on_damaged = on_damaged  # (reason, backups): the store was set aside and started anew
        self.on_opened = on_opened  # once, after the first open, before anyone else uses it
        self._collection = None
        self._client = None
        self._open_lock = threading.RLock()

    @property
    def collection(self):
        with self._open_lock:  # two threads may ask for it first at once
            return self._open_collection()

    def set_aside(self) -> tuple[Path, ...]:
        """Rename the store out of the way (its owner lost the means to trust it)."""
        return quarantine(self.folder)

    def _open_collection(self):
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings as ChromaSettings
            from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

            if SkiffEmbeddingFunction.name() not in known_embedding_functions:
                register_embedding_function(SkiffEmbeddingFunction)

            def open_collection():
                self._client = chromadb.PersistentClient(
                    path=str(self.folder),
                    settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
                )
                return self._client.get_or_create_collection(
                    COLLECTION,
                    embedding_function=SkiffEmbeddingFunction(self.embedder),
                    metadata={"hnsw:space": "cosine"},
                )

            try:
                collection = open_collection()
            except Exception as error:  # noqa: BLE001 - chromadb raises several types; the words tell damage
                if not any(word in str(error).lower() for word in _DAMAGE_WORDS):
                    raise
                # chromadb caches its system per path before starting it, so the failed one would
                # be handed back to the retry.
                from chromadb.api.shared_system_client import SharedSystemClient

                SharedSystemClient._identifier_to_system.pop(str(self.folder), None)
                backups = quarantine(self.folder)
                self.on_damaged(str(error).strip().splitlines()[0], backups)
                collection = open_collection()
            self._collection = collection
            self.on_opened()  # under the lock: no other thread reads before the owner's checks
        return self._collection

    def count(self) -> int:
        return self.collection.count()

    def chunks(self, page: int = 1000) -> Iterator[StoredChunk]:
        """Every chunk, in id order (stable across runs, so training over them can resume by
        position)."""
        ids: list[str] = []
        for offset in range(0, self.count(), READ_PAGE):
            ids += self.collection.get(include=[], limit=READ_PAGE, offset=offset)["ids"]
        ids.sort()
        for start in range(0, len(ids), page):
            batch = ids[start:start + page]
            result = self.collection.get(ids=batch, include=["documents", "metadatas"])
            found = {chunk_id: (text, meta or {}) for chunk_id, text, meta
                     in zip(result["ids"], result["documents"], result["metadatas"])}
            for chunk_id in batch:
                text, meta = found.get(chunk_id, ("", {}))
                if text:
                    yield StoredChunk(chunk_id, text, str(meta.get("path", "")), bool(meta.get("private", False)))

    def replace(self, stale_paths, ids, vectors, documents, metadatas) -> None:
        """Delete every chunk of `stale_paths`, then add these."""
        for start in range(0, len(stale_paths), 500):
            self.collection.delete(where={"path": {"$in": stale_paths[start : start + 500]}})
        for start in range(0, len(ids), CHROMA_WRITE_BATCH):
            end = start + CHROMA_WRITE_BATCH
            self.collection.add(
                ids=ids[start:end],
                embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                documents=documents[start:end],
                metadatas=metadatas[start:end],
            )

    def search(self, query_vector: np.ndarray, k: int, with_embeddings: bool = False) -> list[Hit]:
        # No count() guard: chromadb answers an empty collection with no hits, and its count() scans
        # every row in SQLite (66 ms at 1.4M chunks, against 1.7 ms for the query; bench/RESULTS.md).
        if k <= 0:
            return []
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if with_embeddings else [])
        result = self.collection.query(
            query_embeddings=[np.asarray(query_vector, dtype=np.float32)], n_results=k, include=include
        )
        embeddings = result.get("embeddings")
        return [_hit(chunk_id, result["documents"][0][n], result["metadatas"][0][n], result["distances"][0][n],
                     embeddings[0][n] if embeddings is not None else None)
                for n, chunk_id in enumerate(result["ids"][0])]

    def fetch(self, chunk_ids: list[str], query_vector: np.ndarray | None,
              with_embeddings: bool = False) -> list[Hit]:
        """These chunks (those that exist, in the order given), with their cosine distance to
        `query_vector` (computed from the stored vectors; 1.0 when no vector is given)."""
        if not chunk_ids:
            return []
        result = self.collection.get(ids=list(chunk_ids), include=["documents", "metadatas", "embeddings"])
        found = {chunk_id: n for n, chunk_id in enumerate(result["ids"])}
        hits = []
        for chunk_id in chunk_ids:
            n = found.get(chunk_id)
            if n is None:
                continue
            vector = np.asarray(result["embeddings"][n], dtype=np.float32)
            distance = (
                1.0 - float(vector @ np.asarray(query_vector, dtype=np.float32)) if query_vector is not None else 1.0
            )
            hits.append(_hit(chunk_id, result["documents"][n], result["metadatas"][n], distance,
                             vector if with_embeddings else None))
        return hits

    def rows(self) -> Iterator[tuple[str, str, dict]]:
        """(id, text, metadata) of every chunk, paged."""
        for offset in range(0, self.count(), READ_PAGE):
            page = self.collection.get(include=["documents", "metadatas"], limit=READ_PAGE, offset=offset)
            for chunk_id, text, meta in zip(page["ids"], page["documents"], page["metadatas"]):
                yield chunk_id, text or "", meta or {}


def _hit(chunk_id: str, text: str | None, meta: dict | None, distance: float, embedding) -> Hit:
    meta = meta or {}
    return Hit(
        id=chunk_id,
        text=text or "",
        path=str(meta.get("path", "")),
        title=str(meta.get("title", "")),
        section=str(meta.get("section", "")),
        line_start=int(meta.get("line_start", 0)),
        line_end=int(meta.get("line_end", 0)),
        page=int(meta["page"]) if "page" in meta else None,
        private=bool(meta.get("private", False)),
        distance=float(distance),
        embedding=np.asarray(embedding, dtype=np.float32) if embedding is not None else None,
    )
