"""Retrieval for answers (assistant/retrieval.py): reciprocal rank fusion, the candidate pool, the
selection, and, on the real index, a note only BM25 can find reaching the model's context."""

from __future__ import annotations

import numpy as np

from skiff.local.lexical import LexicalHit
from skiff.local.notes_index import Hit
from skiff.router.coverage import posterior_variance
from skiff.assistant.retrieval import RetrievalConfig, candidates, few_per_note, fuse, retrieve, select


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def hit(chunk_id: str, path: str = "", seed: int = 0) -> Hit:
    return Hit(chunk_id, f"text of {chunk_id}", path or f"/n/{chunk_id}.md", chunk_id, "", 1, 1, None, False, 0.5,
               unit(seed or hash(chunk_id) % 1000))


class ScriptedNotes:
    """A stand-in index: fixed dense and BM25 rankings; fetch() serves any known chunk."""

    def __init__(self, dense: list[Hit], lexical: list[str], extra: list[Hit]) -> None:
        self.dense, self.lexical = dense, lexical
        self.known = {h.id: h for h in dense + extra}
        self.fetched: list[str] = []

    def search(self, query_vector, k, with_embeddings=False):
        return self.dense[:k]

    def lexical_search(self, question, k):
        return [LexicalHit(i, self.known[i].path if i in self.known else "", 1.0) for i in self.lexical[:k]]

    def fetch(self, chunk_ids, query_vector=None, with_embeddings=False):
        self.fetched += chunk_ids
        return [self.known[i] for i in chunk_ids if i in self.known]


def test_fuse_rewards_agreement_and_respects_weights():
    assert fuse([["a", "b"], ["b", "c"]]) == ["b", "a", "c"]  # on both lists beats first on one
    assert fuse([["a"], ["b"]], weights=[1.0, 2.0]) == ["b", "a"]
    assert fuse([[], []]) == []


def test_the_pool_fuses_both_sides_and_fetches_only_what_dense_lacked():
    dense = [hit("d1"), hit("d2"), hit("both")]
    notes = ScriptedNotes(dense, ["both", "lex-only", "gone"], [hit("lex-only")])
    pool = candidates(notes, "q", unit(1), RetrievalConfig(k=2, dense=3, lexical=3, pool=10))
    assert [h.id for h in pool][0] == "both"  # on both lists: first
    assert {h.id for h in pool} == {"d1", "d2", "both", "lex-only"}  # a chunk no longer indexed drops out
    assert sorted(notes.fetched) == ["gone", "lex-only"]
    dense_only = candidates(notes, "q", unit(1), RetrievalConfig(k=2, dense=3, lexical=0, pool=10))
    assert [h.id for h in dense_only] == ["d1", "d2", "both"]


def test_selection_by_rank_or_sift_reports_the_variance_it_leaves():
    query = unit(7)
    pool = [hit(f"c{i}", seed=i + 1) for i in range(6)]
    by_rank = select(query, pool, RetrievalConfig(k=3, selection="rank", sift_lambda=0.1))
    assert [h.id for h in by_rank.selected] == ["c0", "c1", "c2"]
    assert np.isclose(by_rank.coverage, posterior_variance(query, np.stack([h.embedding for h in pool[:3]]), 0.1))
    by_sift = select(query, pool, RetrievalConfig(k=3, selection="sift", sift_lambda=0.1))
    chosen = np.stack([h.embedding for h in by_sift.selected])
    assert np.isclose(by_sift.coverage, posterior_variance(query, chosen, 0.1), atol=1e-6)
    assert by_sift.coverage <= by_rank.coverage + 1e-9  # SIFT minimises exactly this, greedily


def test_few_per_note_keeps_order_and_caps_each_note():
    pool = [hit("a1", "/n/a.md"), hit("a2", "/n/a.md"), hit("b1", "/n/b.md"), hit("a3", "/n/a.md")]
    assert [h.id for h in few_per_note(pool, 1)] == ["a1", "b1"]
    assert [h.id for h in few_per_note(pool, 0)] == ["a1", "a2", "b1", "a3"]


def test_a_note_only_bm25_finds_reaches_the_model(assistant, vault):
    """A made-up product code appears in one note's heading only; its vector is unremarkable,
    so the dense ranking alone misses it among the vault's notes."""
    target = vault / "Plugins" / "Quokka.md"
    target.write_text("# Error XQ-7731\n\nRestart the app after clearing the cache folder.\n")
    assistant.index([vault])
    question = "What does XQ-7731 mean?"
    dense_only = retrieve(assistant.notes, question, assistant.embedder.encode_query(question),
                          assistant.retrieval_config().but(lexical=0))
    hybrid = assistant.retrieve(question)
    assert any(h.path == str(target) for h in hybrid)
    assert hybrid[0].path == str(target) or not any(h.path == str(target) for h in dense_only.selected)
