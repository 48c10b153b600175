"""Which signal knows when the local answer is wrong (the cascade issue, part 2), from the rows of
bench/own_tables.py: no model runs here. One ablation table per (dataset, weak, strong).

For each signal: its AUROC for "the local answer is wrong" (0.5 is chance), the APGR and
CPT(50%) of routing questions to the strong side in the signal's order, and the accuracy at a
30% strong share as a fraction of always-strong accuracy; beside the router as it ships (its
score before any model runs), random and the oracle, all on the same held-out questions.
Intervals: 95% bootstrap over questions (1,000 resamples) for AUROC and APGR.

- before the draft: the shipped router's score (embedding, text features, notes coverage σ²);
- after the draft, at no extra call: skiff.router.draft_signals (token log-probabilities and
  entropies, the answer's span, length, refusal words, citations and support by the chunks);
- early exit: the signals of the first 16 and 32 tokens, combined;
- combined: a logistic regression over the whole draft's signals;
- the draft check: the Bayesian linear regression skiff runs, reading the draft after 32 tokens
  and at its end (its lowest confidence decides), fitted as bench/fit_draft_check.py fits the
  shipped prior; and its early reading alone.

Held out: the notes test split, GSM8K rows 100-199 in their seeded order, or every MMLU row (no
MMLU question is fitted on: a general answer of another kind); the combinations are fitted on the
notes dev split and GSM8K rows 0-99 (bench/fit_draft_check.py, own_tables.CHECK_ROWS).

    .venv/bin/python bench/cascade_signals.py gsm8k --weak qwen2.5-coder-1.5b --strong gpt-4-1106-preview
    .venv/bin/python bench/cascade_signals.py notes --weak qwen2.5-coder-0.5b --strong qwen2.5-coder-1.5b
    .venv/bin/python bench/cascade_signals.py mmlu --weak qwen2.5-coder-1.5b --strong gpt-4-1106-preview
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notes_qa_abstention import fit_logistic as fit_standardised  # noqa: E402
from fit_draft_check import confidence, features, fit, split_rows  # noqa: E402
from own_tables import GPT4, TABLES, rows_done  # noqa: E402
from skiff.router.draft_check import CUT_SHORT  # noqa: E402
from skiff.router.draft_signals import draft_signals, words  # noqa: E402
from skiff.router.research.metrics import auroc, oracle_curve, random_curve, router_curve  # noqa: E402

def post_draft(row: dict) -> dict[str, float]:
    signals = draft_signals(row["response"], row["logprobs"], row["entropies"], row["pieces"], row.get("chunks"))
    return {**signals, "cut off at the token limit": float(row["stop_reason"] in CUT_SHORT)}


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0):
    """notes_qa_abstention's regression, on standardised signals; returns what `predict` needs."""
    means, scales = x.mean(axis=0), x.std(axis=0) + 1e-9
    weights, bias = fit_standardised((x - means) / scales, y, l2=l2)
    return np.append(weights, bias), means, scales


def predict(model, x: np.ndarray) -> np.ndarray:
    w, means, scales = model
    return np.hstack([(x - means) / scales, np.ones((len(x), 1))]) @ w


def router_scores(rows: list[dict], prior: Path | None = None) -> np.ndarray:
    """The router's score before any model runs (the shipped prior, or `prior`; no feedback)."""
    import os
    import tempfile

    os.environ["SKIFF_HOME"] = tempfile.mkdtemp(prefix="skiff-signals-")
    from skiff.assistant import Assistant
    from skiff.config import load_settings

    assistant = Assistant(load_settings(offline=True, router_prior=prior))
    state, policy = assistant.router_state, assistant.policy
    feature_map = state.feature_map()
    vectors = assistant.embedder.encode([row["prompt"] for row in rows])
    return np.array([policy.score(feature_map(row["prompt"], vector, row.get("coverage", 1.0)))[2]
                     for row, vector in zip(rows, vectors)])


def early(row: dict, tokens: int) -> dict[str, float]:
    """The signals of the draft's first `tokens` tokens, as a check that stops there reads them."""
    pieces = row["pieces"][:tokens]
    return draft_signals("".join(pieces), row["logprobs"][:tokens], row["entropies"][:tokens], pieces,
                         row.get("chunks"))


def matrix(rows: list[dict], read) -> tuple[np.ndarray, list[str]]:
    signals = [read(row) for row in rows]
    names = [name for name in signals[0] if "first" not in name]
    return np.array([[s[name] for name in names] for s in signals]), names


def bootstrap(metric, scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, rng) -> tuple[float, float]:
    values = []
    for _ in range(1000):
        pick = rng.integers(0, len(scores), len(scores))
        value = metric(scores[pick], weak[pick], strong[pick])
        if np.isfinite(value):
            values.append(value)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def disagreement(greedy: str, sample: str) -> float:
    """1 − the Jaccard overlap of the content words of the greedy draft and a sampled one."""
    first, second = set(words(greedy)), set(words(sample))
    return 1.0 - len(first & second) / len(first | second) if first | second else 0.0


def scored_table(fit_rows: list[dict], held: list[dict], model: str,
                 other_prior: Path | None = None) -> dict[str, np.ndarray]:
    """Every signal's score on the held-out rows (higher = more likely wrong). The logistic
    combinations are fitted on the same dataset's fit part; the draft check on all of it, as shipped."""
    with_notes = held[0].get("chunks") is not None
    same = [row for row in fit_rows if (row.get("chunks") is not None) == with_notes]
    wrong_fit = np.array([not r["correct"] for r in same], dtype=float)
    table = {"before the draft: the router as shipped": router_scores(held)}
    if other_prior is not None:
        table[f"before the draft: the router with {other_prior.name}"] = router_scores(held, other_prior)
    samples = rows_done(TABLES / f"notes-sample--{model}.jsonl")
    if held and all(row["id"] in samples for row in held):
        table["disagreement with one sample (an extra call)"] = np.array(
            [disagreement("".join(row["pieces"][:32]), samples[row["id"]]["sample"]) for row in held])
    x, names = matrix(held, post_draft)
    for n, name in enumerate(names):
        table[name] = x[:, n]
    for label, read in (("first 16 tokens", lambda r: early(r, 16)), ("first 32 tokens", lambda r: early(r, 32)),
                        ("whole draft", post_draft)):
        fx, _ = matrix(same, read)
        hx, _ = matrix(held, read)
        table[f"combined (logistic), {label}"] = predict(fit_logistic(fx, wrong_fit), hx)
    check, feature_map = fit(fit_rows)
    table["the draft check, early reading only (first 32 tokens)"] = -(features(feature_map, held, "first")
                                                                       @ check.mean)
    table["**the draft check** (early and final readings, as it runs)"] = -confidence(check, feature_map, held)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["gsm8k", "notes", "mmlu"])
    parser.add_argument("--weak", required=True)
    parser.add_argument("--strong", required=True,
                        help=f"a model with rows, {GPT4} (gsm8k, mmlu), or none (AUROC only)")
    parser.add_argument("--share", type=float, default=0.3, help="the strong share to report accuracy at")
    parser.add_argument("--other-prior", type=Path, default=None, help="also score the router with this prior")
    args = parser.parse_args()

    rows = split_rows(args.weak)
    held = rows[f"{args.dataset} test"]
    if args.strong == "none":  # no stronger side measured: the signals' AUROC only
        strong = {row["id"]: True for row in held}
    elif args.strong == GPT4:
        strong = {row["id"]: row["strong"] for row in held}
    else:
        measured = rows_done(TABLES / f"{args.dataset}--{args.strong}.jsonl")
        strong = {key: row["correct"] for key, row in measured.items()}
    held = [row for row in held if row["id"] in strong]
    weak_right = np.array([bool(row["correct"]) for row in held])
    strong_right = np.array([bool(strong[row["id"]]) for row in held])
    wrong = ~weak_right
    table = scored_table(rows["fit"], held, args.weak, args.other_prior)
    rng = np.random.default_rng(20261130)
    print(f"\n{args.dataset}, held out: {len(held)} questions; weak {args.weak} right {weak_right.mean():.1%}, "
          f"strong {args.strong} right {strong_right.mean():.1%}; fitted on {len(rows['fit'])} other drafts\n")

    def auroc_of(scores, weak, _strong):
        return auroc(scores, ~weak.astype(bool))

    if args.strong == "none":
        print("| signal | AUROC (weak wrong) [95%] |\n|---|---|")
        for name, scores in table.items():
            low, high = bootstrap(auroc_of, scores, weak_right, strong_right, rng)
            print(f"| {name} | {auroc(scores, wrong):.3f} [{low:.2f}, {high:.2f}] |")
        return

    def apgr_of(scores, weak, strong_):
        return router_curve(scores, weak.astype(float), strong_.astype(float)).apgr if strong_.mean() != weak.mean() \
            else float("nan")

    share = args.share
    always = strong_right.mean()
    print(f"| signal | AUROC (weak wrong) [95%] | APGR [95%] | CPT(50%) | accuracy at {share:.0%} strong "
          "(of always-strong) |")
    print("|---|---|---|---|---|")
    for name, scores in table.items():
        curve = router_curve(scores, weak_right.astype(float), strong_right.astype(float))
        a_low, a_high = bootstrap(auroc_of, scores, weak_right, strong_right, rng)
        p_low, p_high = bootstrap(apgr_of, scores, weak_right, strong_right, rng)
        at = float(np.interp(share, curve.strong_share, curve.accuracy))
        print(f"| {name} | {auroc(scores, wrong):.3f} [{a_low:.2f}, {a_high:.2f}] | {curve.apgr:.3f} "
              f"[{p_low:.2f}, {p_high:.2f}] | {curve.cpt(0.5):.1%} | {at:.1%} ({at / always:.0%}) |")
    for name, curve in (("random", random_curve(weak_right.astype(float), strong_right.astype(float))),
                        ("oracle", oracle_curve(weak_right.astype(float), strong_right.astype(float)))):
        at = float(np.interp(share, curve.strong_share, curve.accuracy))
        print(f"| {name} | — | {curve.apgr:.3f} | {curve.cpt(0.5):.1%} | {at:.1%} ({at / always:.0%}) |")
    print(f"| always strong | — | — | — | {always:.1%} (100%) |")


if __name__ == "__main__":
    main()
