"""Which signal knows when the local answer is wrong (the cascade issue, part 2), from the rows of
bench/own_tables.py: no model runs here.

For each signal: its AUROC for "the local answer is wrong" (0.5 is chance), and the APGR and
CPT(50%) of routing questions to the strong side in the signal's order, beside the router as it
ships (its score before any model runs), random and the oracle. Signals, each oriented so that
higher means "more likely wrong":

- before the draft: the shipped router's score (embedding, text features, notes coverage σ²);
- after the draft, at no extra call: skiff.router.draft_signals (token log-probabilities and
  entropies, the answer's span, early exit after 16 and 32 tokens, length, refusal words,
  citations and support by the chunks);
- combined: a logistic regression over the post-draft signals, fitted on the other half (GSM8K,
  seeded halves) or on dev (notes, reported on test).

    .venv/bin/python bench/cascade_signals.py gsm8k --weak qwen2.5-coder-1.5b --strong gpt-4-1106-preview
    .venv/bin/python bench/cascade_signals.py notes --weak qwen2.5-coder-0.5b --strong qwen2.5-coder-1.5b --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notes_qa_abstention import fit_logistic as fit_standardised  # noqa: E402
from own_tables import GPT4, TABLES, rows_done  # noqa: E402
from skiff.router.draft_signals import draft_signals  # noqa: E402
from skiff.router.research.metrics import oracle_curve, random_curve, router_curve  # noqa: E402

def auroc(scores: np.ndarray, wrong: np.ndarray) -> float:
    """The chance that a wrong answer scores above a right one (ties count half)."""
    positives, negatives = scores[wrong], scores[~wrong]
    if not len(positives) or not len(negatives):
        return float("nan")
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([positives, negatives])[order]
    start = 0
    while start < len(values):  # average ranks over ties
        end = start
        while end + 1 < len(values) and values[end + 1] == values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[:len(positives)].sum() - len(positives) * (len(positives) + 1) / 2)
                 / (len(positives) * len(negatives)))


def post_draft(row: dict) -> dict[str, float]:
    return draft_signals(row["response"], row["logprobs"], row["entropies"], row["pieces"], row.get("chunks"))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0):
    """notes_qa_abstention's regression, on standardised signals; returns what `predict` needs."""
    means, scales = x.mean(axis=0), x.std(axis=0) + 1e-9
    weights, bias = fit_standardised((x - means) / scales, y, l2=l2)
    return np.append(weights, bias), means, scales


def predict(model, x: np.ndarray) -> np.ndarray:
    w, means, scales = model
    return np.hstack([(x - means) / scales, np.ones((len(x), 1))]) @ w


def router_scores(rows: list[dict]) -> np.ndarray:
    """The shipped router's score before any model runs (its prior, no feedback)."""
    import os
    import tempfile

    os.environ["SKIFF_HOME"] = tempfile.mkdtemp(prefix="skiff-signals-")
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    assistant = Assistant(load_settings(offline=True))
    state, policy = assistant.router_state, assistant.policy
    feature_map = state.feature_map()
    vectors = assistant.embedder.encode([row["prompt"] for row in rows])
    return np.array([policy.score(feature_map(row["prompt"], vector, row.get("coverage", 1.0)))[2]
                     for row, vector in zip(rows, vectors)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["gsm8k", "notes"])
    parser.add_argument("--weak", required=True)
    parser.add_argument("--strong", required=True, help=f"a model with rows, {GPT4} (gsm8k), or none (AUROC only)")
    parser.add_argument("--split", default="test", choices=["dev", "test"], help="notes: report on this split")
    args = parser.parse_args()

    weak = rows_done(TABLES / f"{args.dataset}--{args.weak}.jsonl")
    if args.strong == "none":  # no stronger side measured: the signals' AUROC only
        strong = {key: True for key in weak}
    elif args.strong == GPT4:
        strong = {key: row["strong"] for key, row in weak.items()}
    else:
        measured = rows_done(TABLES / f"{args.dataset}--{args.strong}.jsonl")
        strong = {key: row["correct"] for key, row in measured.items()}
    rows = [row for key, row in weak.items() if key in strong and (args.dataset == "gsm8k" or row["answerable"])]
    if args.dataset == "notes":
        train = [row for row in rows if row["split"] != args.split]
        rows = [row for row in rows if row["split"] == args.split]
    else:  # seeded halves: the combined signal is fitted on one and scored on the other, both ways
        rng = np.random.default_rng(20261130)
        half = set(rng.permutation(len(rows))[: len(rows) // 2].tolist())
        train = None
    signals = [post_draft(row) for row in rows]
    names = list(signals[0])
    x = np.array([[s[name] for name in names] for s in signals])
    weak_right = np.array([bool(row["correct"]) for row in rows])
    strong_right = np.array([bool(strong[row["id"]]) for row in rows])
    wrong = ~weak_right
    table = {name: x[:, n] for n, name in enumerate(names)}
    if args.dataset == "notes":
        tx = np.array([[post_draft(row)[name] for name in names] for row in train])
        ty = np.array([not row["correct"] for row in train], dtype=float)
        table["combined (logistic, fitted on the other split)"] = predict(fit_logistic(tx, ty), x)
    else:
        combined = np.zeros(len(rows))
        for fit_on in (True, False):
            chosen = np.array([(i in half) == fit_on for i in range(len(rows))])
            model = fit_logistic(x[chosen], wrong[chosen].astype(float))
            combined[~chosen] = predict(model, x[~chosen])
        table["combined (logistic, fitted on the other half)"] = combined
    table = {"before the draft: the router as shipped": router_scores(rows), **table}
    print(f"\n{args.dataset}: {len(rows)} questions, weak {args.weak} right {weak_right.mean():.1%}, "
          f"strong {args.strong} "
          f"right {strong_right.mean():.1%}\n")
    if args.strong == "none":
        print("| signal | AUROC (weak wrong) |\n|---|---|")
        for name, scores in table.items():
            print(f"| {name} | {auroc(scores, wrong):.3f} |")
        return
    print("| signal | AUROC (weak wrong) | APGR | CPT(50%) |")
    print("|---|---|---|---|")
    for name, scores in table.items():
        curve = router_curve(scores, weak_right.astype(float), strong_right.astype(float))
        print(f"| {name} | {auroc(scores, wrong):.3f} | {curve.apgr:.3f} | {curve.cpt(0.5):.1%} |")
    for name, curve in (("random", random_curve(weak_right.astype(float), strong_right.astype(float))),
                        ("oracle", oracle_curve(weak_right.astype(float), strong_right.astype(float)))):
        print(f"| {name} | — | {curve.apgr:.3f} | {curve.cpt(0.5):.1%} |")


if __name__ == "__main__":
    main()
