"""End-to-end cost-quality trade-off on a live pair: local = SmolLM2-135M (skiff's bundled model),
"cloud" = Qwen2.5-Coder-1.5B-Instruct behind llama.cpp's OpenAI-compatible server on loopback
(scripts/cloud-local.sh), on a seeded sample of GSM8K test questions.

Every question is asked through skiff twice (`ask --route local`, `ask --route cloud`), graded
against GSM8K's answer, and scored by skiff's router as it ships (its prior, no feedback). Then:
always-local, always-cloud, the router at thresholds calibrated (as `skiff router calibrate`
does, on unlabelled recent questions: here 200 seeded GSM8K *train* questions) for 20/50/80%
cloud share, the random router and the oracle. The per-question table is saved in RouteLLM's
format for `skiff router eval`.

    bash scripts/cloud-local.sh &        # the loopback "cloud"
    SKIFF_CLOUD_BASE_URL=http://127.0.0.1:8765/v1 SKIFF_CLOUD_MODEL=qwen2.5-coder-1.5b-instruct \\
        .venv/bin/python bench/cloud_pair.py --n 150

Resumable: answers are appended to a JSONL file as they come, and a re-run skips those done.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, SHARED, save  # noqa: E402

from skiff.assistant import Assistant
from skiff.config import load_settings
from skiff.router.research.metrics import oracle_curve, random_curve, router_curve

LOCAL_COL, CLOUD_COL = "smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct"
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"


def gold_answer(solution: str) -> float:
    return float(solution.split("####")[-1].strip().replace(",", ""))


def predicted_answer(text: str) -> float | None:
    """\\boxed{…} if present, else 'answer is …', else the last number in the text."""
    for pattern in (r"\\boxed\{([^}]*)\}", r"answer is[:\s$]*(" + _NUMBER + ")"):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            numbers = re.findall(_NUMBER, found[-1])
            if numbers:
                return float(numbers[-1].replace(",", ""))
    numbers = re.findall(_NUMBER, text)
    return float(numbers[-1].replace(",", "")) if numbers else None


def correct(text: str, gold: float) -> bool:
    value = predicted_answer(text)
    return value is not None and abs(value - gold) < 1e-6


def load_questions(split: str) -> list[dict]:
    path = SHARED / "data" / "gsm8k" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=512)
    args = parser.parse_args()

    test = load_questions("test")
    sample = [test[i] for i in np.random.default_rng(args.seed).permutation(len(test))[: args.n]]
    raw_path = OUT / f"cloud_pair_seed{args.seed}.jsonl"  # shared by every --n: the sample is a prefix
    OUT.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["question"]: json.loads(line) for line in raw_path.read_text().splitlines()} \
        if raw_path.exists() else {}

    home = Path(tempfile.mkdtemp(prefix="skiff-pair-"))
    settings = load_settings(data_dir=home / "data", max_tokens=args.max_tokens, cloud_max_tokens=args.max_tokens)
    if not settings.cloud_configured:
        sys.exit("set SKIFF_CLOUD_BASE_URL and SKIFF_CLOUD_MODEL (see scripts/cloud-local.sh)")
    assistant = Assistant(settings)
    try:
        for number, item in enumerate(sample, start=1):
            if item["question"] in done:
                continue
            gold = gold_answer(item["answer"])
            row = {"question": item["question"], "gold": gold}
            for side in ("local", "cloud"):
                answer = assistant.ask(item["question"], use_notes=False, route=side)
                row[side] = {"text": answer.text, "correct": correct(answer.text, gold),
                             "answered_by": answer.answered_by, "tokens": answer.tokens, "timings": answer.timings,
                             "notices": answer.notices}
                row["score"] = answer.decision.signals["score"]
            with raw_path.open("a", encoding="utf-8") as sink:
                sink.write(json.dumps(row) + "\n")
            done[item["question"]] = row
            print(f"{number}/{len(sample)} local {row['local']['correct']} cloud {row['cloud']['correct']} "
                  f"score {row['score']:.3f}", file=sys.stderr, flush=True)
        # Calibration as skiff does it: thresholds are quantiles of unlabelled recent questions' scores.
        train = load_questions("train")
        recent = [train[i]["question"] for i in np.random.default_rng(args.seed + 1).permutation(len(train))[:200]]
        recent_scores = np.array([assistant.decide(q, use_notes=False).signals["score"] for q in recent])
    finally:
        assistant.close()

    rows = [done[item["question"]] for item in sample]
    fallbacks = sum(r["cloud"]["answered_by"] != "cloud" for r in rows)
    weak = np.array([r["local"]["correct"] for r in rows], dtype=float)
    strong = np.array([r["cloud"]["correct"] for r in rows], dtype=float)
    scores = np.array([r["score"] for r in rows])
    table = {"always local": {"accuracy": round(weak.mean(), 4), "cloud_share": 0.0},
             "always cloud": {"accuracy": round(strong.mean(), 4), "cloud_share": 1.0}}
    for share in (0.2, 0.5, 0.8):
        threshold = float(np.quantile(recent_scores, 1 - share))
        to_cloud = scores > threshold
        table[f"skiff, τ for {share:.0%} cloud"] = {
            "accuracy": round(float(np.where(to_cloud, strong, weak).mean()), 4),
            "cloud_share": round(float(to_cloud.mean()), 4), "threshold": round(threshold, 4)}
    curve = router_curve(scores, weak, strong)
    figures = {
        "questions": len(rows), "seed": args.seed, "cloud_fallbacks": fallbacks, "table": table,
        "apgr": {"skiff (shipped prior)": curve.summary(), "random": random_curve(weak, strong).summary(),
                 "oracle": oracle_curve(weak, strong).summary()},
        "median_seconds": {side: float(np.median([r[side]["timings"]["total_s"] for r in rows]))
                           for side in ("local", "cloud")},
        "mean_completion_tokens": {side: float(np.mean([r[side]["tokens"]["completion"] for r in rows]))
                                   for side in ("local", "cloud")},
    }
    csv_path = OUT / f"gsm8k_live_pair_n{args.n}_seed{args.seed}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as sink:
        writer = csv.writer(sink)
        writer.writerow(["prompt", LOCAL_COL, CLOUD_COL, f"{LOCAL_COL}_response", f"{CLOUD_COL}_response"])
        for r in rows:
            writer.writerow([r["question"], r["local"]["correct"], r["cloud"]["correct"], r["local"]["text"],
                             r["cloud"]["text"]])
    figures["table_csv"] = str(csv_path.relative_to(OUT.parent.parent))
    save(f"cloud_pair_n{args.n}_seed{args.seed}", figures)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
