"""Fit the draft check's prior for each local model (skiff.router.draft_check) on skiff's own
routing tables (bench/own_tables.py), and report how well it ranks held-out drafts.

Fitted on: the notes set's dev split (answerable questions, with the chunks each draft was given)
and the first half of the first CHECK_ROWS (200) GSM8K rows in their seeded order (no notes).
Reported on: the notes test split and the second half of those GSM8K rows, which the fit never
sees, and on MMLU rows where they have been collected (a kind of question the fit has never seen
at all). Each draft is read as at run time: after its first CHECK_AT tokens (when it is longer)
and at its end.

    .venv/bin/python bench/fit_draft_check.py --model qwen2.5-coder-1.5b [--write]

--write saves router/priors/draft_check--<model file>.npz, with the fitted drafts' ψ for
calibrating τ before a person has drafts of their own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notes_qa import resolve_model  # noqa: E402
from own_tables import CHECK_ROWS, TABLES, gsm8k_items, mmlu_letter, rows_done  # noqa: E402

from skiff.router.draft_check import (CHECK_AT, DraftFeatureMap, prior_name, reads_early,  # noqa: E402
                                      signals_at)
from skiff.router.research.metrics import auroc  # noqa: E402
from skiff.router.surrogate import BayesianLinearRegression  # noqa: E402

PRIORS = Path(__file__).resolve().parent.parent / "router" / "priors"
PRIOR_VARIANCE = 1.0


def split_rows(model: str) -> dict[str, list[dict]]:
    """{"fit": [...], "notes test": [...], "gsm8k test": [...], "mmlu test": [...]}: each row with its readings'
    signals (early, for an answer from notes longer than CHECK_AT tokens, then final), as at run time."""
    notes = [r for r in rows_done(TABLES / f"notes--{model}.jsonl").values() if r["answerable"]]
    order = {item["id"]: n for n, item in enumerate(gsm8k_items())}
    gsm8k = sorted(rows_done(TABLES / f"gsm8k--{model}.jsonl").values(), key=lambda r: order[r["id"]])[:CHECK_ROWS]
    half = len(gsm8k) // 2
    mmlu = list(rows_done(TABLES / f"mmlu--{model}.jsonl").values())
    for row in mmlu:
        # The MMLU table caps answers at 64 tokens to save time: the letter comes first, and the
        # cap cuts only the sentence after it, which skiff (max_tokens 384) would have finished.
        if row["stop_reason"] == "length" and mmlu_letter(row["response"]) is not None:
            row["stop_reason"] = "eos"
    for row in notes + gsm8k + mmlu:
        row["readings"] = readings(row)
        row["signals"] = row["readings"][0][0]  # the first reading: what an early check sees
    return {"fit": [r for r in notes if r["split"] == "dev"] + gsm8k[:half],
            "notes test": [r for r in notes if r["split"] == "test"], "gsm8k test": gsm8k[half:], "mmlu test": mmlu}


def readings(row: dict) -> list[tuple[dict, bool]]:
    """A draft's readings as at run time: early (an answer from notes longer than CHECK_AT tokens),
    then at its end; each (signals, whole)."""
    args = (row["logprobs"], row["entropies"], row["pieces"], row.get("chunks"))
    early = reads_early(row.get("chunks") is not None) and len(row["logprobs"]) > CHECK_AT
    return ([(signals_at(*args), False)] if early else []) + [(signals_at(*args, None, row["stop_reason"]), True)]


def feature_map_for(rows: list[dict]) -> DraftFeatureMap:
    """Standardised on the fitted rows' readings, answers from notes and general answers apart."""
    with_notes = [signals for r in rows if r.get("chunks") is not None for signals, _ in r["readings"]]
    general = [signals for r in rows if r.get("chunks") is None for signals, _ in r["readings"]]
    return DraftFeatureMap.fitted(with_notes, general)


def reading_features(feature_map: DraftFeatureMap, row: dict) -> np.ndarray:
    return np.array([feature_map(signals, row.get("chunks") is not None, whole) for signals, whole in row["readings"]])


def features(feature_map: DraftFeatureMap, rows: list[dict], reading: str = "lowest") -> np.ndarray:
    """One ψ per row: its first reading ("first") or its last ("final"), for scoring by a weight
    vector. With "lowest", use `confidence` instead."""
    pick = 0 if reading == "first" else -1
    return np.array([reading_features(feature_map, row)[pick] for row in rows])


def confidence(model: BayesianLinearRegression, feature_map: DraftFeatureMap, rows: list[dict]) -> np.ndarray:
    """Each row's lowest confidence over its readings: what decides at run time."""
    return np.array([float((reading_features(feature_map, row) @ model.mean).min()) for row in rows])


def fit(rows: list[dict]) -> tuple[BayesianLinearRegression, DraftFeatureMap]:
    """Every reading of every draft is an observation of whether the draft was right, at the
    weight of its share of the draft (a verdict counts once, as feedback counts it at run time)."""
    feature_map = feature_map_for(rows)
    x = np.vstack([reading_features(feature_map, row) for row in rows])
    right = np.concatenate([[float(row["correct"])] * len(row["readings"]) for row in rows])
    weight = np.concatenate([[1.0 / len(row["readings"])] * len(row["readings"]) for row in rows])
    model = BayesianLinearRegression.isotropic(feature_map.dim, PRIOR_VARIANCE, 0.25)
    model.fit(x * np.sqrt(weight)[:, None], right * np.sqrt(weight))
    # The noise a 0/1 outcome leaves around its fitted chance, measured on the fitted readings.
    noise = float(np.average((right - x @ model.mean) ** 2, weights=weight))
    model = BayesianLinearRegression.isotropic(feature_map.dim, PRIOR_VARIANCE, noise)
    model.fit(x * np.sqrt(weight)[:, None], right * np.sqrt(weight))
    model.observations = 0  # the person's own observations are counted from here
    return model, feature_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a `skiff model list` name")
    parser.add_argument("--write", action="store_true", help="save the prior under router/priors/")
    args = parser.parse_args()
    rows = split_rows(args.model)
    model, feature_map = fit(rows["fit"])
    print(f"{args.model}: fitted on {len(rows['fit'])} drafts (read after {CHECK_AT} tokens and at their end), "
          f"noise variance {model.noise_variance:.3f}")
    print("| held out | drafts | local right | AUROC (local wrong): early reading | final reading | "
          "the check (lowest) |\n|---|---|---|---|---|---|")
    for name in ("notes test", "gsm8k test", "mmlu test"):
        held = rows[name]
        if not held:
            print(f"| {name} | 0 | — | — | — | — |")
            continue
        wrong = np.array([not r["correct"] for r in held])
        figures = [auroc(-(features(feature_map, held, reading) @ model.mean), wrong) for reading in ("first", "final")]
        lowest = auroc(-confidence(model, feature_map, held), wrong)
        print(f"| {name} | {len(held)} | {1 - wrong.mean():.1%} | {figures[0]:.3f} | {figures[1]:.3f} | {lowest:.3f} |")
    if args.write:
        path = PRIORS / prior_name(resolve_model(args.model).name)
        model.meta = {"features": feature_map.as_meta(), "model": resolve_model(args.model).name,
                      "check_at": CHECK_AT, "fitted_on": f"{len(rows['fit'])} drafts: skiff's notes set (dev split, "
                      "answerable) and GSM8K test questions (first half of bench/own_tables.py's seeded order)",
                      "fitted_by": "bench/fit_draft_check.py"}
        readings = [reading_features(feature_map, row) for row in rows["fit"]]
        model.save(path, calibration_features=np.vstack(readings).round(5),
                   calibration_drafts=np.concatenate([[n] * len(r) for n, r in enumerate(readings)]))
        path.chmod(0o644)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
