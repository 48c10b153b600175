"""The SIFT paper's comparison on real data: bits per byte of a GSM8K reference solution given its
question, under the local model (the bundled SmolLM2-135M, its GGUF dequantised into torch):

    base               the model as is
    NN LoRA            a fresh LoRA, one Adam step on each of the n nearest neighbours
    SIFT LoRA          the same, on the n examples SIFT selects (skiff's selection code)
    SIFT in context    no training: the same SIFT examples put before the question

Pool: GSM8K train, each item "Question: … Answer: …" as one text, embedded with skiff's embedder.
With --duplicates K, every pool item also comes as K near-copies (a name swapped, spacing and
punctuation edited, the numbers kept: the setting where nearest neighbours are known to fail,
since the nearest n then hold few distinct items). Test: a seeded sample of GSM8K test items.

Every method takes the same n steps (or, in context, the same n examples). Each method's settings
are chosen on held-out train items (removed from the pool, copies and all) before any test item is
touched, by coordinate search over wide grids: the learning rate for both LoRAs, then SIFT's λ′,
then SIFT's learning rate again at that λ′; a choice at a grid's edge extends the grid a step. The
in-context method uses SIFT's λ′. Results are paired per item, with bootstrap 95% intervals.

    .venv/bin/python bench/ttt_bpb.py --items 100 --steps 8 [--duplicates 3]

Tuning figures and test rows are kept in bench/rows/ttt_bpb/ (tracked in git) as they come; a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROWS, SHARED, save  # noqa: E402
from own_tables import open_rows, rows_done  # noqa: E402

from skiff.config.settings import Settings  # noqa: E402
from skiff.local.assets import bundled_gguf_path  # noqa: E402
from skiff.local.embedder import Embedder  # noqa: E402
from skiff.local.llm import read_model_info  # noqa: E402
from skiff.local.lora.lora import LoraSpec, LoraTrainer  # noqa: E402
from skiff.local.lora.training_copy import load_training_copy  # noqa: E402
from skiff.router.coverage import sift_select  # noqa: E402
from skiff.router.research.embed_cache import EmbeddingCache  # noqa: E402

METHODS = ("base", "nn_lora", "sift_lora", "sift_in_context")
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
LAMBDAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
NAMES = ("James", "Maria", "Ahmed", "Yuki", "Olga", "Carlos", "Priya", "Tom", "Lena", "Kofi")
NOT_NAMES = {"The", "How", "What", "When", "Where", "Which", "Who", "Why", "She", "They", "There", "Then", "This",
             "That", "These", "Those", "Each", "Every", "After", "Before", "For", "Her", "His", "Its", "Their", "One",
             "Two", "Three", "Four", "Five", "Six", "Ten", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
             "Saturday", "Sunday", "January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December", "If", "In", "On", "At", "And", "But", "All", "Some"}
WORK = ROWS / "ttt_bpb"


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def as_text(item: dict) -> str:
    return f"Question: {item['question']}\nAnswer: {item['answer']}"


def near_copy(item: dict, rng: random.Random) -> dict:
    """The same problem, reworded on the surface: its first name swapped for another (everywhere),
    a spacing and a punctuation edit; every number as it was, so the answer still holds."""
    question, answer = item["question"], item["answer"]
    names = [word for word in re.findall(r"\b[A-Z][a-z]{2,}\b", question) if word not in NOT_NAMES]
    if names:
        old, new = names[0], rng.choice([n for n in NAMES if n != names[0]])
        question, answer = (re.sub(rf"\b{old}\b", new, text) for text in (question, answer))
    edits = [lambda t: t.replace(", ", " , ", 1), lambda t: t.replace(". ", ".  ", 1),
             lambda t: t.rstrip("?") + " ?" if t.endswith("?") else t + " .", lambda t: "So, " + t]
    for edit in rng.sample(edits, 2):
        question = edit(question)
    return {"question": question, "answer": answer}


def bootstrap(differences: np.ndarray, rng: np.random.Generator, resamples: int = 10000) -> tuple[float, float]:
    means = rng.choice(differences, size=(resamples, len(differences)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


class Runner:
    def __init__(self, trainer: LoraTrainer, pool: list[dict], pool_vectors: np.ndarray, steps: int,
                 candidates: int) -> None:
        self.trainer, self.pool, self.pool_vectors = trainer, pool, pool_vectors
        self.steps, self.candidates = steps, candidates

    def top(self, query: np.ndarray) -> np.ndarray:
        return np.argsort(-(self.pool_vectors @ query))[: self.candidates]

    def nearest(self, query: np.ndarray) -> list[int]:
        return [int(i) for i in self.top(query)[: self.steps]]

    def sifted(self, query: np.ndarray, lam: float) -> list[int]:
        top = self.top(query)
        return [int(top[i]) for i in sift_select(query, self.pool_vectors[top], self.steps, lam=lam).selected]

    def trained_bpb(self, chosen: list[int], item: dict, lr: float) -> tuple[float, float]:
        started = time.perf_counter()
        self.trainer.spec = replace(self.trainer.spec, learning_rate=lr)
        self.trainer.start()
        for index in chosen:
            self.trainer.step(as_text(self.pool[index]))
        bpb = self.trainer.bits_per_byte(*question_and_target(item))
        return bpb, time.perf_counter() - started

    def distinct(self, chosen: list[int]) -> int:
        return len({self.pool[i]["source"] for i in chosen})

    def measure(self, item: dict, query: np.ndarray, chosen: dict) -> dict:
        context, target = question_and_target(item)
        nearest, sifted = self.nearest(query), self.sifted(query, chosen["sift_lambda"])
        row: dict = {"question": item["question"][:80]}
        started = time.perf_counter()
        row["base"] = self.trainer.bits_per_byte(context, target, with_adapter=False)
        row["base_s"] = time.perf_counter() - started
        row["nn_lora"], row["nn_lora_s"] = self.trained_bpb(nearest, item, chosen["nn_lr"])
        row["sift_lora"], row["sift_lora_s"] = self.trained_bpb(sifted, item, chosen["sift_lr"])
        started = time.perf_counter()
        examples = "\n\n".join(as_text(self.pool[i]) for i in sifted)
        row["sift_in_context"] = self.trainer.bits_per_byte(f"{examples}\n\n{context}", target, with_adapter=False)
        row["sift_in_context_s"] = time.perf_counter() - started
        row.update(overlap=len(set(nearest) & set(sifted)), nn_distinct=self.distinct(nearest),
                   sift_distinct=self.distinct(sifted))
        return row


def question_and_target(item: dict) -> tuple[str, str]:
    return f"Question: {item['question']}\nAnswer:", " " + item["answer"]


class Tuning:
    """Mean trained bpb on the held-out train items per (method, lr, λ′), kept on disk."""

    def __init__(self, runner: Runner, items: list[dict], queries: np.ndarray, path: Path) -> None:
        self.runner, self.items, self.queries, self.path = runner, items, queries, path
        self.seen: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def __call__(self, method: str, lr: float, lam: float) -> float:
        key = f"{method} lr={lr:g} lam={lam:g}"
        if key not in self.seen:
            pick = self.runner.nearest if method == "nn" else (lambda q: self.runner.sifted(q, lam))
            bpbs = [self.runner.trained_bpb(pick(query), item, lr)[0] for item, query in zip(self.items, self.queries)]
            self.seen[key] = float(np.mean(bpbs))
            self.path.write_text(json.dumps(self.seen, indent=1))
            print(f"  {key}: {self.seen[key]:.4f}", file=sys.stderr)
        return self.seen[key]

    def best(self, grid: list[float], score) -> float:
        """The grid's best, the grid extended by its step while the best sits at an edge (twice at most)."""
        grid = sorted(grid)
        for extension in range(3):
            chosen = min(grid, key=score)
            if chosen not in (grid[0], grid[-1]) or extension == 2:
                return chosen
            ratio = grid[1] / grid[0]
            grid = [grid[0] / ratio] + grid if chosen == grid[0] else grid + [grid[-1] * ratio]
        return chosen

    def choose(self) -> dict:
        nn_lr = self.best(list(LEARNING_RATES), lambda lr: self("nn", lr, 0.0))
        sift_lr = self.best(list(LEARNING_RATES), lambda lr: self("sift", lr, 0.01))
        lam = self.best(list(LAMBDAS), lambda lam: self("sift", sift_lr, lam))
        if lam != 0.01:
            sift_lr = self.best(list(LEARNING_RATES), lambda lr: self("sift", lr, lam))
        return {"nn_lr": nn_lr, "sift_lr": sift_lr, "sift_lambda": lam, "search": dict(self.seen)}


def build_pool(train: list[dict], held_out: set[int], duplicates: int, seed: int) -> list[dict]:
    rng = random.Random(seed + 1)
    pool = []
    for i, item in enumerate(train):
        if i in held_out:
            continue
        pool.append({**item, "source": i})
        pool += [{**near_copy(item, rng), "source": i} for _ in range(duplicates)]
    return pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--duplicates", type=int, default=0, help="near-copies of every pool item")
    parser.add_argument("--tune-items", type=int, default=12)
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
    items = rng.sample(test, args.items)
    pool = build_pool(train, held_out, args.duplicates, args.seed)
    name = f"dup{args.duplicates}_steps{args.steps}_seed{args.seed}"
    WORK.mkdir(parents=True, exist_ok=True)

    embedder = Embedder(settings.cache_dir, n_threads=args.threads)
    cache = EmbeddingCache(settings.cache_dir / "bench" / "gsm8k_train_pool.npz", embedder.encode,
                           embedder.onnx_path().name)
    started = time.perf_counter()
    pool_vectors = cache([as_text(item) for item in pool]).astype(np.float64)
    embed_s = time.perf_counter() - started
    queries = embedder.encode([item["question"] for item in tune + items]).astype(np.float64)
    print(f"pool of {len(pool)} embedded in {embed_s:.0f}s", file=sys.stderr)

    gguf = bundled_gguf_path()
    started = time.perf_counter()
    copy = load_training_copy(gguf, settings.cache_dir, threads=args.threads)
    load_s = time.perf_counter() - started
    trainer = LoraTrainer(copy, LoraSpec(), read_model_info(gguf).architecture, seed=args.seed)
    runner = Runner(trainer, pool, pool_vectors, args.steps, args.candidates)
    chosen = Tuning(runner, tune, queries[: len(tune)], WORK / f"tuning_{name}.json").choose()
    print(f"chosen on held-out train items: NN lr {chosen['nn_lr']:g}; SIFT lr {chosen['sift_lr']:g}, "
          f"λ′ {chosen['sift_lambda']:g}", file=sys.stderr)

    rows_path = WORK / f"rows_{name}.jsonl"
    done = rows_done(rows_path)
    with open_rows(rows_path) as sink:
        for number, (item, query) in enumerate(zip(items, queries[len(tune):]), start=1):
            key = f"test-{number:04d}"
            if key in done:
                continue
            done[key] = {"id": key, **runner.measure(item, query, chosen)}
            sink.write(json.dumps(done[key]) + "\n")
            sink.flush()
            if number % 10 == 0:
                print(f"{number}/{len(items)}", file=sys.stderr)
    rows = [done[f"test-{n:04d}"] for n in range(1, len(items) + 1)]

    stats_rng = np.random.default_rng(args.seed)
    values = {m: np.array([r[m] for r in rows]) for m in METHODS}
    figures = {
        "items": len(rows), "steps": args.steps, "candidates": args.candidates, "duplicates": args.duplicates,
        "chosen": {k: v for k, v in chosen.items() if k != "search"}, "search": chosen["search"],
        "lora": {"rank": trainer.spec.rank, "alpha": trainer.spec.alpha, "targets": list(trainer.spec.targets)},
        "model": gguf.name, "pool": len(pool), "pool_embed_s": round(embed_s, 1),
        "training_copy_load_s": round(load_s, 1),
        "bits_per_byte": {m: {"mean": round(float(v.mean()), 4)} for m, v in values.items()},
        "seconds_per_query": {m: round(float(np.mean([r[f"{m}_s"] for r in rows])), 3) for m in METHODS},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "mean_overlap_nn_sift": round(float(np.mean([r["overlap"] for r in rows])), 2),
        "distinct_problems": {"nn": round(float(np.mean([r["nn_distinct"] for r in rows])), 2),
                              "sift": round(float(np.mean([r["sift_distinct"] for r in rows])), 2)},
        "paired_differences": {},
    }
    for better, worse in [("sift_lora", "nn_lora"), ("nn_lora", "base"), ("sift_lora", "base"),
                          ("sift_lora", "sift_in_context"), ("sift_in_context", "base")]:
        difference = values[better] - values[worse]
        low, high = bootstrap(difference, stats_rng)
        figures["paired_differences"][f"{better} - {worse}"] = {
            "mean": round(float(difference.mean()), 4), "ci95": [round(low, 4), round(high, 4)],
            "wins": int((difference < 0).sum()), "significant": high < 0 or low > 0}
    save(f"ttt_bpb_{name}_n{len(rows)}", figures)


if __name__ == "__main__":
    main()
