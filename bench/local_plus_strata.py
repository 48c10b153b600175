"""The questions of the local+ benchmark and their strata: the default model's greedy rows from
skiff's own tables, split into tune and report parts, each question read by the draft check as
shipped (and, for the notes dev split, by checks fitted without it), "flagged" below τ.
bench/local_plus_bench.py runs methods on them; bench/local_plus_report.py reports by stratum."""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROWS as BENCH_ROWS  # noqa: E402
from own_tables import TABLES, gsm8k_items, rows_done  # noqa: E402

MODEL = "qwen2.5-coder-1.5b"
ROWS = BENCH_ROWS / "local_plus"  # tracked; only the personal adapter's weights stay out of git
FLAGS = ROWS / "flags.json"
GSM8K_TUNE, GSM8K_REPORT = range(0, 100), range(100, 300)
GREEDY_CAP = {"gsm8k": 400, "notes": 384}


def escalated_share() -> float:
    """The share of drafts the check finds unsure under skiff's default shares."""
    from skiff.config.settings import Settings
    from skiff.router.draft_check import share_of_drafts

    s = Settings()
    return share_of_drafts(s.cloud_share, s.cloud_share_before_draft, s.local_plus_share)


def greedy_rows(dataset: str) -> dict[str, dict]:
    return rows_done(TABLES / f"{dataset}--{MODEL}.jsonl")


def questions(dataset: str, part: str) -> list[dict]:
    """The greedy rows of a part, in seeded order, each with its position (gsm8k) or split (notes)."""
    rows = greedy_rows(dataset)
    if dataset == "gsm8k":
        positions = GSM8K_TUNE if part == "tune" else GSM8K_REPORT
        ordered = [item["id"] for item in gsm8k_items()]
        return [rows[ordered[n]] for n in positions if ordered[n] in rows]
    split = "dev" if part == "tune" else "test"
    chosen = [row for row in rows.values() if row["split"] == split]
    random.Random(20261130).shuffle(chosen)
    return chosen


def compute_flags() -> dict:
    from fit_draft_check import readings
    from notes_qa import resolve_model

    from skiff.router.draft_check import DraftCheck

    check = DraftCheck(Path(tempfile.mkdtemp(prefix="skiff-flags-")), resolve_model(MODEL).name)
    feature_map = check.feature_map()
    tau = check.calibrate(escalated_share(), [], 0).threshold
    flags: dict = {"tau": tau, "share": escalated_share(), "prior": check.posterior.prior_path.name,
                   "prior_sha256": hashlib.sha256(check.posterior.prior_path.read_bytes()).hexdigest()[:16],
                   "questions": {}}
    for dataset in ("gsm8k", "notes"):
        for part in ("tune", "report"):
            for row in questions(dataset, part):
                with_notes = row.get("chunks") is not None
                psi = np.array([feature_map(signals, with_notes, whole) for signals, whole in readings(row)])
                confidence = float(check.lowest_confidence([psi])[0])
                flags["questions"][row["id"]] = {"dataset": dataset, "part": part, "confidence": round(confidence, 4),
                                                 "flagged": confidence < tau, "greedy_right": bool(row["correct"])}
    if questions("notes", "tune"):  # the notes table may come later; `flags` then runs again
        cross_fit_notes_dev(flags["questions"])
    ROWS.mkdir(parents=True, exist_ok=True)
    FLAGS.write_text(json.dumps(flags, indent=1))
    return flags


def cross_fit_notes_dev(flags: dict, folds: int = 5) -> None:
    """The shipped check was fitted on the notes dev split, so its own reading of a dev question is
    in-sample. For a pooled notes set (test plus dev), each dev question also gets the reading of a
    check fitted without its fold, and τ at the same share of that fit's drafts."""
    from fit_draft_check import confidence, fit, readings, split_rows

    rows = split_rows(MODEL)["fit"]
    dev = list(questions("notes", "tune"))
    random.Random(7).shuffle(dev)
    for fold in range(folds):
        held = {row["id"] for row in dev[fold::folds]}
        model, feature_map = fit([row for row in rows if row["id"] not in held])
        fitted = confidence(model, feature_map, [row for row in rows if row["id"] not in held])
        tau = float(np.quantile(fitted, escalated_share()))
        for row in dev[fold::folds]:
            row = {**row, "readings": readings(row)}
            value = float(confidence(model, feature_map, [row])[0])
            flags[row["id"]].update(cross_fit_confidence=round(value, 4), cross_fit_flagged=value < tau)


def load_flags() -> dict:
    return json.loads(FLAGS.read_text()) if FLAGS.exists() else compute_flags()


def in_run_order(dataset: str, part: str, only_flagged: bool, limit: int, only_unflagged: bool = False) -> list[dict]:
    """Flagged questions first, then the rest; each in seeded order. "pooled" (notes) is the report
    set and then the tune set, the tune set's flags cross-fitted. `only_unflagged` takes the rest
    alone, so a stratum can be extended without the other."""
    flags = load_flags()["questions"]
    rows = questions(dataset, "report") + questions(dataset, "tune") if part == "pooled" else questions(dataset, part)

    def flagged(row: dict) -> bool:
        mark = flags[row["id"]]
        return mark["cross_fit_flagged"] if part == "pooled" and "cross_fit_flagged" in mark else mark["flagged"]

    ordered = ([] if only_unflagged else [r for r in rows if flagged(r)]) + \
        ([] if only_flagged else [r for r in rows if not flagged(r)])
    return ordered[: limit or None]
