"""The SIFT paper's comparison on real data: bits per byte of a GSM8K reference solution given its
question, under the local model (the bundled SmolLM2-135M, its GGUF dequantised into torch):

    base               the model as is
    NN LoRA            a fresh LoRA, one Adam step on each of the n nearest neighbours
    SIFT LoRA          the same, on the n examples SIFT selects (skiff's selection code)
    SIFT in context    no training: the same SIFT examples put before the question

Notes pool: GSM8K train, each item "Question: … Answer: …" as one text, embedded with skiff's
embedder. Test: a seeded sample of GSM8K test items. Every method takes the same n steps (or, in
context, the same n examples); results are paired per item, with bootstrap 95% intervals on the
paired differences. The learning rate is chosen on held-out train items (removed from the pool)
before the test items are touched.

    .venv/bin/python bench/ttt_bpb.py --items 100 --steps 8
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, SHARED, save  # noqa: E402

from skiff.local.assets import bundled_gguf_path
from skiff.local.embedder import Embedder
from skiff.local.lora.lora import LoraSpec, LoraTrainer
from skiff.local.lora.training_copy import load_training_copy
from skiff.router.coverage import sift_select
from skiff.router.research.embed_cache import EmbeddingCache
from skiff.config.settings import Settings

METHODS = ("base", "nn_lora", "sift_lora", "sift_in_context")


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def as_text(item: dict) -> str:
    return f"Question: {item['question']}\nAnswer: {item['answer']}"


def bootstrap(differences: np.ndarray, rng: np.random.Generator, resamples: int = 10000) -> tuple[float, float]:
    means = rng.choice(differences, size=(resamples, len(differences)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


class Runner:
    def __init__(self, trainer: LoraTrainer, pool: list[dict], pool_vectors: np.ndarray, steps: int,
                 candidates: int, lam: float) -> None:
        self.trainer, self.pool, self.pool_vectors = trainer, pool, pool_vectors
        self.steps, self.candidates, self.lam = steps, candidates, lam

    def select(self, query: np.ndarray) -> tuple[list[int], list[int]]:
        similarity = self.pool_vectors @ query
        top = np.argsort(-similarity)[: self.candidates]
        nearest = [int(i) for i in top[: self.steps]]
        coverage = sift_select(query, self.pool_vectors[top], self.steps, lam=self.lam)
        return nearest, [int(top[i]) for i in coverage.selected]

    def trained_bpb(self, chosen: list[int], context: str, target: str) -> tuple[float, float]:
        started = time.perf_counter()
        self.trainer.start()
        for index in chosen:
            self.trainer.step(as_text(self.pool[index]))
        bpb = self.trainer.bits_per_byte(context, target)
        return bpb, time.perf_counter() - started

    def measure(self, item: dict, query: np.ndarray) -> dict:
        context, target = f"Question: {item['question']}\nAnswer:", " " + item["answer"]
        nearest, sifted = self.select(query)
        row: dict = {"question": item["question"][:80]}
        started = time.perf_counter()
        row["base"] = self.trainer.bits_per_byte(context, target, with_adapter=False)
        row["base_s"] = time.perf_counter() - started
        row["nn_lora"], row["nn_lora_s"] = self.trained_bpb(nearest, context, target)
        row["sift_lora"], row["sift_lora_s"] = self.trained_bpb(sifted, context, target)
        started = time.perf_counter()
        examples = "\n\n".join(as_text(self.pool[i]) for i in sifted)
        row["sift_in_context"] = self.trainer.bits_per_byte(f"{examples}\n\n{context}", target, with_adapter=False)
        row["sift_in_context_s"] = time.perf_counter() - started
        row["overlap"] = len(set(nearest) & set(sifted))
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--lam", type=float, default=0.01)
    parser.add_argument("--learning-rates", default="1e-4,3e-4,1e-3")
    parser.add_argument("--tune-items", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    settings = Settings()
    rng = random.Random(args.seed)
    train = load(SHARED / "data" / "gsm8k" / "train.jsonl")
    test = load(SHARED / "data" / "gsm8k" / "test.jsonl")
    held_out = set(rng.sample(range(len(train)), args.tune_items))
    tune = [train[i] for i in sorted(held_out)]
    pool = [item for i, item in enumerate(train) if i not in held_out]
    items = rng.sample(test, args.items)

    embedder = Embedder(settings.cache_dir, n_threads=args.threads)
    cache = EmbeddingCache(settings.cache_dir / "bench" / "gsm8k_train_pool.npz", embedder.encode,
                           embedder.onnx_path().name)
    started = time.perf_counter()
    pool_vectors = cache([as_text(item) for item in pool]).astype(np.float64)
    embed_s = time.perf_counter() - started
    queries = embedder.encode([item["question"] for item in tune + items]).astype(np.float64)
    print(f"pool of {len(pool)} embedded in {embed_s:.0f}s", file=sys.stderr)

    started = time.perf_counter()
    copy = load_training_copy(bundled_gguf_path(), settings.cache_dir, threads=args.threads)
    load_s = time.perf_counter() - started

    # The learning rate, chosen on held-out train items only (mean of the NN and SIFT LoRA bpb).
    tuning = {}
    for lr in [float(x) for x in args.learning_rates.split(",")]:
        trainer = LoraTrainer(copy, LoraSpec(learning_rate=lr), "llama", seed=args.seed)
        runner = Runner(trainer, pool, pool_vectors, args.steps, args.candidates, args.lam)
        rows = [runner.measure(item, query) for item, query in zip(tune, queries[: len(tune)])]
        tuning[lr] = float(np.mean([(r["nn_lora"] + r["sift_lora"]) / 2 for r in rows]))
        print(f"lr {lr:g}: mean trained bpb on held-out train items {tuning[lr]:.4f}", file=sys.stderr)
        copy.model = trainer.model.unload()  # the plain model again, for the next learning rate
    lr = min(tuning, key=tuning.get)

    trainer = LoraTrainer(copy, LoraSpec(learning_rate=lr), "llama", seed=args.seed)
    runner = Runner(trainer, pool, pool_vectors, args.steps, args.candidates, args.lam)
    rows = []
    for number, (item, query) in enumerate(zip(items, queries[len(tune):]), start=1):
        rows.append(runner.measure(item, query))
        if number % 10 == 0:
            means = {m: np.mean([r[m] for r in rows]) for m in METHODS}
            print(f"{number}/{len(items)} " + " ".join(f"{m} {v:.4f}" for m, v in means.items()), file=sys.stderr)

    stats_rng = np.random.default_rng(args.seed)
    values = {m: np.array([r[m] for r in rows]) for m in METHODS}
    figures = {
        "items": len(rows), "steps": args.steps, "candidates": args.candidates, "sift_lambda": args.lam,
        "learning_rate": lr, "learning_rate_search": {f"{k:g}": round(v, 4) for k, v in tuning.items()},
        "lora": {"rank": trainer.spec.rank, "alpha": trainer.spec.alpha, "targets": list(trainer.spec.targets)},
        "model": bundled_gguf_path().name, "pool": len(pool), "pool_embed_s": round(embed_s, 1),
        "training_copy_load_s": round(load_s, 1),
        "bits_per_byte": {m: {"mean": round(float(v.mean()), 4)} for m, v in values.items()},
        "seconds_per_query": {m: round(float(np.mean([r[f"{m}_s"] for r in rows])), 3) for m in METHODS},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "mean_overlap_nn_sift": round(float(np.mean([r["overlap"] for r in rows])), 2),
        "paired_differences": {},
    }
    for better, worse in [("sift_lora", "nn_lora"), ("nn_lora", "base"), ("sift_lora", "base"),
                          ("sift_lora", "sift_in_context"), ("sift_in_context", "base")]:
        difference = values[better] - values[worse]
        low, high = bootstrap(difference, stats_rng)
        figures["paired_differences"][f"{better} - {worse}"] = {
            "mean": round(float(difference.mean()), 4), "ci95": [round(low, 4), round(high, 4)],
            "wins": int((difference < 0).sum()), "significant": high < 0 or low > 0}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"ttt_bpb_n{len(rows)}_seed{args.seed}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    save(f"ttt_bpb_n{len(rows)}_seed{args.seed}", figures)


if __name__ == "__main__":
    main()
