"""Which note chunks reach the model: dense and lexical candidates, fused, then selected.

1. Candidates. The question's nearest chunks by vector (MiniLM, cosine) and, when `lexical` is on,
   its best chunks by BM25 over title, heading path and text (SQLite FTS5). Dense search finds
   paraphrases; BM25 finds the rare exact word (a setting's name, a file name) a vector blurs.
2. Fusion. Reciprocal rank fusion: a chunk scores Σ 1/(rrf_k + rank) over the lists it is in.
   Ranks, not scores, are fused, so BM25's unbounded scale needs no calibration against cosine.
3. Selection of `k` chunks from the fused top `pool`:
   - "rank": the fused order itself;
   - "sift": SIFT over the pool (relevant and not redundant; see coverage.py), λ′ = `sift_lambda`.
   Either way the variance σ² the chosen chunks leave about the question is the coverage signal
   the router reads.

Every step's choice is a measured row of bench/notes_qa.py's ablation; the defaults are the ones
the numbers kept (bench/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol, Sequence

import numpy as np

from skiff.local.lexical import LexicalHit
from skiff.local.notes_index import Hit
from skiff.router.coverage import posterior_variance, sift_select

Selection = Literal["rank", "sift"]


@dataclass(frozen=True)
class RetrievalConfig:
    k: int = 3  # chunks given to the model
    dense: int = 50  # nearest chunks by vector
    lexical: int = 50  # best chunks by BM25; 0 turns the lexical side off
    rrf_k: float = 60.0
    lexical_weight: float = 1.0  # BM25's ranks count this much against the dense ranks'
    pool: int = 50  # fused candidates the selection chooses from
    per_note: int = 0  # at most this many chunks of one note reach the model; 0 = no limit
    selection: Selection = "sift"
    sift_lambda: float = 0.01

    def but(self, **changes) -> "RetrievalConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class Retrieved:
    selected: list[Hit]  # what the model is given, best first
    candidates: list[Hit]  # the fused pool, best first, with embeddings
    coverage: float  # σ²(x*|selected): 0 = the notes pin the question down, 1 = they say nothing


class SearchableNotes(Protocol):
    def search(self, query_vector: np.ndarray, k: int, with_embeddings: bool = False) -> list[Hit]: ...

    def lexical_search(self, question: str, k: int) -> list[LexicalHit]: ...

    def fetch(self, chunk_ids: list[str], query_vector: np.ndarray | None = None,
              with_embeddings: bool = False) -> list[Hit]: ...


def fuse(rankings: Sequence[Sequence[str]], rrf_k: float = 60.0, weights: Sequence[float] | None = None) -> list[str]:
    """Reciprocal rank fusion of ranked id lists: best first; ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (rrf_k + rank)
    return sorted(scores, key=lambda chunk_id: -scores[chunk_id])


def candidates(notes: SearchableNotes, question: str, embedding: np.ndarray, config: RetrievalConfig) -> list[Hit]:
    """The fused candidate pool, best first, each with its vector (SIFT and the router need them)."""
    dense = notes.search(embedding, max(config.dense, config.k), with_embeddings=True) if config.dense > 0 else []
    if config.lexical <= 0:
        return dense[:max(config.pool, config.k)]
    lexical = notes.lexical_search(question, config.lexical)
    order = fuse([[hit.id for hit in dense], [hit.id for hit in lexical]], config.rrf_k,
                 [1.0, config.lexical_weight])[:max(config.pool, config.k)]
    known = {hit.id: hit for hit in dense}
    missing = [chunk_id for chunk_id in order if chunk_id not in known]
    known.update({hit.id: hit for hit in notes.fetch(missing, embedding, with_embeddings=True)})
    return [known[chunk_id] for chunk_id in order if chunk_id in known]


def few_per_note(pool: list[Hit], per_note: int) -> list[Hit]:
    """The pool (in order) with at most `per_note` chunks of any one note."""
    if per_note <= 0:
        return pool
    taken: dict[str, int] = {}
    kept = []
    for hit in pool:
        if taken.get(hit.path, 0) < per_note:
            taken[hit.path] = taken.get(hit.path, 0) + 1
            kept.append(hit)
    return kept


def select(embedding: np.ndarray, pool: list[Hit], config: RetrievalConfig) -> Retrieved:
    if not pool or config.k <= 0:
        return Retrieved([], pool, float(np.asarray(embedding, dtype=np.float64) @ embedding))
    full_pool, pool = pool, few_per_note(pool, config.per_note)
    vectors = np.stack([hit.embedding for hit in pool])
    if config.selection == "sift":
        coverage = sift_select(embedding, vectors, config.k, lam=config.sift_lambda)
        return Retrieved([pool[i] for i in coverage.selected], full_pool, coverage.variance)
    chosen = list(range(min(config.k, len(pool))))
    return Retrieved([pool[i] for i in chosen], full_pool,
                     posterior_variance(embedding, vectors[chosen], config.sift_lambda))


def retrieve(notes: SearchableNotes, question: str, embedding: np.ndarray, config: RetrievalConfig) -> Retrieved:
    return select(embedding, candidates(notes, question, embedding, config), config)
