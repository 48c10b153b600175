"""Ablation: does a local LLM's hidden state beat MiniLM as the router's embedding?

Embeds every prompt of a RouteLLM table with a GGUF model through llama.cpp (mean-pooled last
layer), then compares, on the same 5-fold splits (seeds 0-2, posterior mean of the evidence-fitted
BLR): MiniLM alone, the hidden state alone, skiff's φ, and skiff's φ plus the hidden state.

    .venv/bin/python bench/router_hidden_state.py --gguf qwen2.5-coder-1.5b.gguf \
        --data ../shared/data/routing/gsm8k_responses.csv

The embeddings are cached in skiff's cache folder, so the (slow) embedding pass runs once per model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from skiff.local.embedder import Embedder
from skiff.router.research.embed_cache import EmbeddingCache
from skiff.router.features import FeatureMap
from skiff.router.research.fitting import fit_blr
from skiff.router.research.metrics import router_curve
from skiff.router.research.routing_data import load_routing_data
from skiff.config.settings import Settings


def hidden_states(gguf: Path, prompts: list[str], cache: Path) -> np.ndarray:
    if cache.is_file():
        return np.load(cache)["vectors"]
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf), embedding=True, n_ctx=1024, n_batch=512, n_threads=2, verbose=False,
                          pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
    vectors, started, tokens = [], time.perf_counter(), 0
    for i, prompt in enumerate(prompts):
        ids = llm.tokenize(prompt.encode(), add_bos=True)[:1000]
        tokens += len(ids)
        vectors.append(np.asarray(llm.embed(llm.detokenize(ids).decode(errors="ignore"), normalize=True)))
        if i % 100 == 0:
            print(f"{i}/{len(prompts)} prompts, {tokens / (time.perf_counter() - started):.0f} tok/s", file=sys.stderr)
    stacked = np.stack(vectors).astype(np.float32)
    np.savez(cache, vectors=stacked, tokens_per_s=tokens / (time.perf_counter() - started))
    return stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--data", required=True)
    args = parser.parse_args()

    data = load_routing_data(args.data)
    cache_dir = Settings().cache_dir
    (cache_dir / "bench").mkdir(parents=True, exist_ok=True)
    hidden_cache = cache_dir / "bench" / f"hidden_{args.gguf.stem}_{data.name}.npz"
    hidden = hidden_states(args.gguf, data.prompts, hidden_cache).astype(np.float64)
    minilm = EmbeddingCache.for_embedder(Embedder(cache_dir), cache_dir)(data.prompts)
    ones = np.ones((len(data), 1))
    centred = hidden - hidden.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)

    def skiff_phi(train: np.ndarray) -> np.ndarray:
        return FeatureMap.fitted([data.prompts[i] for i in train]).many(data.prompts, minilm)

    routers = {
        "MiniLM alone": lambda train: np.hstack([minilm, ones]),
        "hidden state alone": lambda train: np.hstack([hidden, ones]),
        "skiff's φ": skiff_phi,
        "skiff's φ + hidden state": lambda train: np.hstack([skiff_phi(train), centred]),
    }
    figures = {}
    for name, build in routers.items():
        apgrs = []
        for seed in (0, 1, 2):
            order = np.random.default_rng(seed).permutation(len(data))
            scores = np.empty(len(data))
            for fold in np.array_split(order, 5):
                train = np.setdiff1d(order, fold)
                features = build(train)
                scores[fold] = features[fold] @ fit_blr(features[train], data.gain[train]).mean
            apgrs.append(router_curve(scores, data.weak, data.strong).apgr)
        figures[name] = {"apgr_mean": round(float(np.mean(apgrs)), 4), "apgr_per_seed": [round(a, 4) for a in apgrs]}
        print(f"{name:28s} APGR {np.mean(apgrs):.4f}", file=sys.stderr)
    save(f"router_hidden_state_{data.name}", {"gguf": args.gguf.name, "data": data.name, "routers": figures})


if __name__ == "__main__":
    main()
