"""Routing decision latency on a ~10k-chunk index, per stage, beside plain top-k retrieval.

    .venv/bin/python bench/route_latency.py [--folders en de fr es] [--queries 300]

Stages of one decision: embed the question, candidates (chromadb top-K with vectors, FTS5 BM25
top-K, fused by reciprocal rank, the lexical-only ones fetched), selection of k (with σ²),
surrogate (features + posterior mean and std). Baseline, same run and queries: what retrieval
cost before the router (embed + chromadb top-k without vectors). Also the posterior update
(one conjugate step, and the atomic write that persists it). Saves bench/out/route_latency.json.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from common import VAULT, percentile, save  # noqa: E402


def summarise(values: list[float]) -> dict:
    return {"p50_ms": round(percentile(values, 50), 3), "p95_ms": round(percentile(values, 95), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folders", nargs="+", default=["en", "de", "fr", "es"])
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    os.environ.setdefault("SKIFF_HOME", tempfile.mkdtemp(prefix="skiff-bench-route-"))
    from skiff.assistant import Assistant
    from skiff.config import load_settings
    from skiff.router.policy import QuestionWithNotes
    from skiff.assistant.retrieval import candidates, select

    assistant = Assistant(load_settings())
    summary = assistant.index([VAULT / folder for folder in args.folders])
    settings = assistant.settings
    notes, embedder, policy = assistant.notes, assistant.embedder, assistant.policy

    rng = random.Random(3)
    headings: list[str] = []
    collection = notes.collection
    for offset in range(0, collection.count(), 5000):
        page = collection.get(include=["metadatas"], limit=5000, offset=offset)
        headings += [m.get("section") or m.get("title") for m in page["metadatas"] if m]
    queries = [q for q in rng.sample(headings, min(len(headings), args.queries * 2)) if q][: args.queries]

    assistant.decide("warm up")  # also sets the thresholds on first use
    config = assistant.retrieval_config()
    stages: dict[str, list[float]] = {k: [] for k in ("embed", "candidates", "select", "surrogate", "total")}
    lexical_alone: list[float] = []
    baseline: list[float] = []
    for query in queries:
        t0 = time.perf_counter()
        vector = embedder.encode_query(query)
        t1 = time.perf_counter()
        pool = candidates(notes, query, vector, config)  # dense top-K, BM25 top-K, fused, fetched
        t2 = time.perf_counter()
        found = select(vector, pool, config)
        t3 = time.perf_counter()
        policy.decide(QuestionWithNotes(query, vector, found.selected, found.coverage, found.candidates))
        t4 = time.perf_counter()
        for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            stages[name].append(value * 1000)
        t6 = time.perf_counter()
        notes.lexical_search(query, config.lexical)
        lexical_alone.append((time.perf_counter() - t6) * 1000)
        # The baseline: retrieval as it was before the router (embed + top-k, no vectors).
        t5 = time.perf_counter()
        notes.search(embedder.encode_query(query), settings.top_k)
        baseline.append((time.perf_counter() - t5) * 1000)

    model = policy.state.surrogate().copy()
    phi = policy.state.feature_map()(queries[0], embedder.encode_query(queries[0]), 0.5)
    updates = []
    for _ in range(200):
        t0 = time.perf_counter()
        model.update(phi, 0.5)
        updates.append((time.perf_counter() - t0) * 1000)
    writes = []
    for _ in range(20):
        t0 = time.perf_counter()
        model.save(Path(settings.router_dir) / "bench-posterior.npz")
        writes.append((time.perf_counter() - t0) * 1000)
    assistant.close()

    save("route_latency", {
        "index_chunks": summary.chunks_total,
        "index_files": summary.files_total,
        "queries": len(queries),
        "retrieval": {"k": config.k, "dense": config.dense, "lexical": config.lexical, "pool": config.pool,
                      "selection": config.selection},
        "feature_dim": int(len(phi)),
        "decision_stages": {name: summarise(values) for name, values in stages.items()},
        "lexical_search_alone": summarise(lexical_alone),
        "baseline_plain_top_k_retrieval": summarise(baseline),
        "posterior_update": summarise(updates),
        "posterior_atomic_write": summarise(writes),
    })


if __name__ == "__main__":
    main()
