"""Compute allocation on GSM8K test accuracy, Qwen2.5-Coder-1.5B-Instruct as the local model:

    greedy                 one greedy answer per question
    self-consistency@N     a majority vote over N samples, for every question
    difficulty-allocated   the same average N, spent where skiff's router scores a question harder:
                           N_i = 1 + round(d_i · (2N − 2)), d_i the question's score rank in [0, 1]
                           (N_i = 1 is the greedy answer), as the local+ route scales its votes

Samples come from skiff's ParallelSampler (one batch per question) and answers from skiff's
extractor, so this measures skiff's own code. Each question gets one greedy answer and 2N − 1
samples; self-consistency@N votes over the first N, the allocated policy over the first N_i: the
policies are compared on the same draws, paired, with bootstrap 95% intervals. The router is the
shipped prior, as on day one (a fresh SKIFF_HOME).

A fourth, reference policy uses the samples' own agreement instead of the router: it reads the pool
one sample at a time and stops once the leading answer is `--margin` votes ahead of the runner-up
(or the pool is spent). It spends what it spends; its mean samples are printed beside it.

The items are a seeded shuffle of the test set, so a run of 60 items is the first 60 of a run of 100;
rows are kept in bench/out as they finish and a rerun with the same seed resumes from them.

    .venv/bin/python bench/compute_allocation.py --items 100 --n 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, SHARED, save

PROMPT = "{question}\nSolve it step by step, then give the final number after ####."


def gold(answer: str) -> str:
    from skiff.assistant.voting import extract_answer

    return extract_answer("#### " + answer.split("####")[-1].strip())


def vote(answers: list[str | None]) -> str | None:
    """skiff's majority vote (router.voting) over answers already extracted: ties go to the first seen."""
    counts = {a: answers.count(a) for a in answers if a is not None}
    if not counts:
        return None
    return next(a for a in answers if a is not None and counts[a] == max(counts.values()))


def adaptive_vote(answers: list[str | None], margin: int) -> tuple[str | None, int]:
    """Read the samples in order; stop once the leader is `margin` votes ahead of the runner-up."""
    counts: dict[str, int] = {}
    for used, answer in enumerate(answers, start=1):  # noqa: B007 - `used` is read after the loop
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
        ranked = sorted(counts.values(), reverse=True) + [0, 0]
        if ranked[0] - ranked[1] >= margin:
            break
    return vote(answers[:used]), used


def auc(scores: np.ndarray, greedy_correct: np.ndarray) -> float | None:
    """How often a question the greedy answer got wrong scores harder than one it got right (0.5: chance)."""
    wrong, right = scores[greedy_correct == 0], scores[greedy_correct == 1]
    if not len(wrong) or not len(right):
        return None
    pairs = (wrong[:, None] > right[None, :]).mean() + 0.5 * (wrong[:, None] == right[None, :]).mean()
    return round(float(pairs), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--n", type=int, default=4, help="average samples per question")
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--margin", type=int, default=2, help="lead that stops the agreement-adaptive policy")
    parser.add_argument("--gguf", type=Path, default=None, help="default: the assembled Qwen2.5-Coder-1.5B")
    args = parser.parse_args()

    os.environ["SKIFF_HOME"] = tempfile.mkdtemp(prefix="skiff-bench-")  # the shipped prior, nothing learned
    from skiff.local.models import install
    from skiff.local.llm import GenerationStats, LocalModel
    from skiff.local.sampling import ParallelSampler, SamplingStats
    from skiff.assistant import Assistant
    from skiff.config import load_settings
    from skiff.assistant.voting import extract_answer, majority_vote

    settings = load_settings(n_threads=args.threads)
    gguf = args.gguf or install("qwen2.5-coder-1.5b", settings.data_dir)
    rng = random.Random(args.seed)
    test = [json.loads(line) for line in (SHARED / "data" / "gsm8k" / "test.jsonl").read_text().splitlines()]
    order = list(range(len(test)))
    rng.shuffle(order)
    items = [test[i] for i in order[: args.items]]
    rows_file = OUT / f"compute_allocation_rows_seed{args.seed}.jsonl"
    done = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    # Resume only rows for the same items, drawn with the same settings.
    same = {"max_tokens": args.max_tokens, "temperature": args.temperature, "pool": 2 * args.n - 1}
    rows = []
    for row, item in zip(done, items):
        if row.get("question") != item["question"][:80] or row.get("settings") != same:
            break
        rows.append(row)

    assistant = Assistant(settings)
    scores = np.array([assistant.decide(item["question"], use_notes=False).signals["score"] for item in items])
    assistant.close()
    ranks = scores.argsort().argsort() / max(1, len(items) - 1)
    pool = 2 * args.n - 1
    allocated = [1 + round(rank * (2 * args.n - 2)) for rank in ranks]

    model = LocalModel(gguf, n_ctx=4096, n_threads=args.threads, seed=args.seed)
    sampler = ParallelSampler(model, max_sequences=pool, n_ctx=4096)
    for number, item in enumerate(items, start=1):
        if number <= len(rows):
            continue
        prompt = model.tokenize_prompt(
            model.render([{"role": "user", "content": PROMPT.format(question=item["question"])}])
        )
        stats = GenerationStats()
        started = time.perf_counter()
        greedy = "".join(model.stream(prompt, args.max_tokens, temperature=0.0, stats=stats))
        greedy_s = time.perf_counter() - started
        sampling = SamplingStats()
        samples = sampler.sample(prompt, pool, args.max_tokens, temperature=args.temperature,
                                 seed=args.seed * 100003 + number, stats=sampling)
        texts = [s.text for s in samples]
        answer = gold(item["answer"])
        row = {
            "question": item["question"][:80], "gold": answer, "score": round(float(scores[number - 1]), 4),
            "greedy": extract_answer(greedy), "sc": majority_vote(texts[: args.n]).answer,
            "samples": [extract_answer(t) for t in texts], "greedy_tokens": stats.completion_tokens,
            "greedy_s": round(greedy_s, 2), "sample_tokens": sampling.completion_tokens,
            "sample_s": round(sampling.seconds, 2), "settings": same,
        }
        rows.append(row)
        OUT.mkdir(parents=True, exist_ok=True)  # the rows so far survive an interrupted run
        scratch = rows_file.with_suffix(".tmp")
        scratch.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        scratch.replace(rows_file)
        correct = {k: np.mean([r[k] == r["gold"] for r in rows]) for k in ("greedy", "sc")}
        print(f"{number}/{len(items)} " + " ".join(f"{k} {v:.3f}" for k, v in correct.items())
              + f" ({greedy_s:.0f}s greedy, {sampling.seconds:.0f}s for {pool} samples)", file=sys.stderr)
    sampler.close()
    model.close()

    # Ranks depend on the whole item set, so the allocation is settled here, after every row is in.
    for row, n_i in zip(rows, allocated):
        row["allocated_n"] = n_i
        row["allocated"] = row["greedy"] if n_i == 1 else vote(row["samples"][:n_i])
    adaptive = [adaptive_vote(r["samples"], args.margin) for r in rows]
    for row, (answer, used) in zip(rows, adaptive):
        row["adaptive"], row["adaptive_n"] = answer, used
    stats_rng = np.random.default_rng(args.seed)
    correct = {k: np.array([r[k] == r["gold"] for r in rows], dtype=float)
               for k in ("greedy", "sc", "allocated", "adaptive")}

    def interval(a: np.ndarray, b: np.ndarray) -> dict:
        difference = a - b
        means = stats_rng.choice(difference, size=(10000, len(difference)), replace=True).mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        return {"mean": round(float(difference.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}

    # Where the router's difficulty points: accuracy of greedy in the easiest and hardest thirds.
    order = np.argsort(scores)
    third = len(rows) // 3
    figures = {
        "items": len(rows),
        "average_samples": args.n,
        "pool_per_question": pool,
        "model": Path(gguf).name,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "accuracy": {k: round(float(v.mean()), 4) for k, v in correct.items()},
        "mean_samples": {
            "greedy": 1,
            "sc": args.n,
            "allocated": round(float(np.mean(allocated)), 3),
            "adaptive": round(float(np.mean([used for _, used in adaptive])), 3),
        },
        "adaptive_margin": args.margin,
        "paired": {
            "sc - greedy": interval(correct["sc"], correct["greedy"]),
            "allocated - greedy": interval(correct["allocated"], correct["greedy"]),
            "allocated - sc": interval(correct["allocated"], correct["sc"]),
            "adaptive - sc": interval(correct["adaptive"], correct["sc"]),
        },
        "router_score_vs_greedy_correct_auc": auc(scores, correct["greedy"]),
        "greedy_accuracy_by_router_score": {
            "easiest third": round(float(correct["greedy"][order[:third]].mean()), 4),
            "hardest third": round(float(correct["greedy"][order[-third:]].mean()), 4),
        },
        "seconds_per_question": {
            "greedy": round(float(np.mean([r["greedy_s"] for r in rows])), 2),
            f"{pool} samples in one batch": round(float(np.mean([r["sample_s"] for r in rows])), 2),
        },
        "tokens_per_s": {
            "greedy": round(sum(r["greedy_tokens"] for r in rows) / sum(r["greedy_s"] for r in rows), 1),
            "batched samples": round(sum(r["sample_tokens"] for r in rows) / sum(r["sample_s"] for r in rows), 1),
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"compute_allocation_n{len(rows)}_seed{args.seed}.jsonl").write_text(
        "\n".join(json.dumps(r) for r in rows) + "\n")
    save(f"compute_allocation_n{len(rows)}_seed{args.seed}", figures)


if __name__ == "__main__":
    main()
