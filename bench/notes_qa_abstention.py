"""The abstention model of router/abstention.py, measured and fitted on the notes question set
(run through bench/notes_qa.py: `signals`, then `fit-abstention`).

    signals: each question's support features under one retrieval configuration, and with
        --model the model's own yes/no check (rows on disk, resumable)
    fit-abstention: an L2-regularised logistic regression on the dev split's rows; the threshold
        is the one that keeps false abstention on dev's answerable questions within the budget;
        both splits are reported, and the constants to ship are printed
"""

from __future__ import annotations

import json
import sys
import time

from check_notes_qa import load
from common import OUT
from notes_qa import open_assistant, resolve_model, retrieval_configs


def run_signals(args) -> None:
    """Each question's support features (router/abstention.py) under one retrieval configuration."""
    from dataclasses import replace

    from skiff.local.llm import LocalModel
    from skiff.router.abstention import measure_support, model_says_yes
    from skiff.router.prompting import plan_prompt
    from skiff.router.retrieval import retrieve

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


def run_fit_abstention(args) -> None:
    """Fit the abstention model on the dev split's signals; pick the threshold on dev (false
    abstention on answerable questions ≤ the budget); report both splits."""
    import numpy as np

    from skiff.router.abstention import FEATURES

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
    answerable_p = np.sort(dev_p[y == 0])[::-1]
    allowed = int(np.floor(args.false_abstention * len(answerable_p)))
    threshold = float(answerable_p[allowed]) + 1e-6 if allowed < len(answerable_p) else 0.0
    for split in ("dev", "test"):
        p, truth = probabilities(split), labels(split)
        said = int(((p > threshold) & (truth == 1)).sum())
        false = int(((p > threshold) & (truth == 0)).sum())
        print(f"{split}: unanswerable said {said} of {int(truth.sum())}; answerable abstained {false} of "
              f"{int((truth == 0).sum())}")
    print(f"FEATURES = {tuple(features_used)}\nMEANS = np.array({np.round(means, 4).tolist()})\n"
          f"SCALES = np.array({np.round(scales, 4).tolist()})\nWEIGHTS = np.array({np.round(weights, 4).tolist()})\n"
          f"BIAS = {bias:.4f}\nthreshold = {threshold:.4f}")
