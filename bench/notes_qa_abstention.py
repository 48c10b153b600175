"""The abstention model of assistant/abstention.py, measured and fitted on the notes question set
(run through bench/notes_qa.py: `signals`, then `fit-abstention`).

    signals: each question's support features under one retrieval configuration, and with
        --model the model's own yes/no check (rows on disk, resumable)
    fit-abstention: an L2-regularised logistic regression on the dev split's rows; the threshold
        is the one that keeps false abstention on dev's answerable questions within the budget,
        or with --answers the accuracy the check costs on dev (abstaining on a question the model
        answered wrongly costs nothing); both splits are reported, and the constants to ship are
        printed
"""

from __future__ import annotations

import json
import sys
import time

from check_notes_qa import load
from common import OUT
from notes_qa import open_assistant, resolve_model, retrieval_configs


def run_signals(args) -> None:
    """Each question's support features (assistant/abstention.py) under one retrieval configuration."""
    from dataclasses import replace

    from skiff.local.llm import LocalModel
    from skiff.assistant.abstention import measure_support, model_says_yes
    from skiff.assistant.prompting import plan_prompt
    from skiff.assistant.retrieval import retrieve

    items = load(args.questions)
    config = retrieval_configs()[args.retrieval].but(k=args.k)
    assistant = open_assistant()
    model = LocalModel(resolve_model(args.model), n_ctx=4096) if args.model else None
    path = OUT / "notes_qa" / f"signals--{args.model or 'retrieval'}--k{config.k}.jsonl"
    done = {json.loads(line)["id"] for line in path.read_text().splitlines()} if path.exists() else set()
    with path.open("a") as sink:
        for number, item in enumerate(items, start=1):
            if item.id in done:
                continue
            vector = assistant.embedder.encode_query(item.question)
            got = retrieve(assistant.notes, item.question, vector, config)
            support = measure_support(assistant.notes, item.question, got.selected, got.candidates, got.coverage)
            check_s = None
            if model is not None:
                plan = plan_prompt(model, item.question, got.selected, (), max_answer_tokens=args.max_tokens)
                started = time.perf_counter()
                support = replace(support, model_says_yes=model_says_yes(model, plan.messages))
                check_s = round(time.perf_counter() - started, 3)
            sink.write(json.dumps({"id": item.id, "split": item.split, "answerable": item.answerable,
                                   **support.as_dict(), "check_s": check_s}) + "\n")
            sink.flush()
            print(f"\r{number}/{len(items)}", end="", file=sys.stderr)
    print(f"\n-> {path}")


def fit_logistic(x, y, l2: float = 1.0, steps: int = 50):
    """L2-regularised logistic regression by Newton's method (x standardised, bias unpenalised)."""
    import numpy as np

    design = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(design.shape[1])
    penalty = np.eye(design.shape[1]) * l2
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w[:-1], float(w[-1])


def threshold_by_false_abstention(answerable_p, budget: float) -> float:
    """The lowest threshold that abstains on at most `budget` of the answerable questions."""
    import numpy as np

    ordered = np.sort(answerable_p)[::-1]
    allowed = int(np.floor(budget * len(ordered)))
    return float(ordered[allowed]) + 1e-6 if allowed < len(ordered) else 0.0


def threshold_by_accuracy(dev_p, rows, right: dict[str, bool], budget: float) -> float:
    """The threshold that says so for as many of dev's unanswerable questions as abstaining can
    while costing at most `budget` of dev's answerable accuracy (only questions the model answered
    right count against it), placed as high as that catch allows, so that it abstains no more
    than it must."""
    dev = list(zip([r for r in rows if r["split"] == "dev"], map(float, dev_p)))
    answerable = sum(1 for r, _ in dev if r["answerable"])
    lost_at = sorted((q for r, q in dev if r["answerable"] and right.get(r["id"])), reverse=True)
    allowed = int(budget * answerable)
    lowest = lost_at[allowed] + 1e-6 if allowed < len(lost_at) else 0.0
    caught = [q for r, q in dev if not r["answerable"] and q > lowest]
    return min(caught) - 1e-6 if caught else lowest


def answered_right(runs) -> dict[str, bool]:
    """Question id → whether the run (without the check) answered it right."""
    from notes_qa import read_rows
    from qa_grading import grade

    items = {item.id: item for item in load()}
    return {key: grade(items[key], row["answer"]).right for run in runs for key, row in read_rows(run).items()}


def run_fit_abstention(args) -> None:
    """Fit the abstention model on the dev split's signals; pick the threshold on dev (false
    abstention on answerable questions ≤ the budget); report both splits."""
    import numpy as np

    from skiff.assistant.abstention import FEATURES

    rows = [json.loads(line) for line in args.signals.read_text().splitlines() if line.strip()]
    features_used = [f for f in FEATURES if any(r.get(f) for r in rows)]
    features = lambda split: np.array([[r[f] for f in features_used] for r in rows if r["split"] == split])  # noqa: E731
    labels = lambda split: np.array([0.0 if r["answerable"] else 1.0 for r in rows if r["split"] == split])  # noqa: E731
    x, y = features("dev"), labels("dev")
    means, scales = x.mean(axis=0), x.std(axis=0) + 1e-9
    weights, bias = fit_logistic((x - means) / scales, y, l2=args.l2)

    def probabilities(split):
        return 1 / (1 + np.exp(-(((features(split) - means) / scales) @ weights + bias)))

    dev_p = probabilities("dev")
    right = answered_right(args.answers) if args.answers else None
    threshold = (threshold_by_accuracy(dev_p, rows, right, args.accuracy_drop) if right is not None
                 else threshold_by_false_abstention(dev_p[y == 0], args.false_abstention))
    for split in ("dev", "test"):
        p, truth = probabilities(split), labels(split)
        said = int(((p > threshold) & (truth == 1)).sum())
        false = int(((p > threshold) & (truth == 0)).sum())
        line = (f"{split}: unanswerable said {said} of {int(truth.sum())}; answerable abstained {false} of "
                f"{int((truth == 0).sum())}")
        if right is not None:
            ids = [r["id"] for r in rows if r["split"] == split]
            lost = sum(1 for i, q in zip(ids, p) if right.get(i) and q > threshold)
            line += f"; answered right before, abstained now {lost} ({100 * lost / int((truth == 0).sum()):.1f} points)"
        print(line)
    print(f"FEATURES = {tuple(features_used)}\nMEANS = np.array({np.round(means, 4).tolist()})\n"
          f"SCALES = np.array({np.round(scales, 4).tolist()})\nWEIGHTS = np.array({np.round(weights, 4).tolist()})\n"
          f"BIAS = {bias:.4f}\nthreshold = {threshold:.4f}")
