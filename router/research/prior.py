"""The prior skiff ships: the surrogate fitted on public per-query routing data, so it routes
sensibly before the person has given any feedback.

Two deliberate changes to the plain posterior:
- Tempering: the posterior covariance is scaled up as if the public data held only
  `effective_questions` questions. The person's questions are not benchmark questions, and an
  untempered posterior from 12k of them would barely move for a hundred pieces of feedback.
- Note coverage: the public questions come without notes, so the data says nothing about the
  coverage weight; its prior mean says that well-covered questions need the cloud a little less,
  with a spread wide enough for feedback to overrule it.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from skiff.router.features import FeatureMap
from skiff.router.research.fitting import fit_blr
from skiff.router.research.routing_data import RoutingData
from skiff.router.surrogate import BayesianLinearRegression

ATTRIBUTION = (
    "Fitted on RouteLLM's per-query correctness data (Mixtral-8x7B-Instruct vs GPT-4-1106 on GSM8K "
    "and MMLU; github.com/lm-sys/RouteLLM, Apache-2.0), decontaminated as RouteLLM does; and, when "
    "given, on skiff's own routing tables (bench/own_tables.py; bench/data/own_tables)."
)
COVERAGE_WEIGHT_MEAN = -0.2
COVERAGE_WEIGHT_VARIANCE = 0.05
DEFAULT_EFFECTIVE_QUESTIONS = 1000


def prompts_digest(prompts: list[str]) -> str:
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(hashlib.sha256(prompt.encode()).digest())
    return digest.hexdigest()[:16]


def temper(model: BayesianLinearRegression, questions: int, effective_questions: int) -> BayesianLinearRegression:
    """Widen the posterior as if it had seen only `effective_questions` of its `questions`."""
    model.covariance *= max(1.0, questions / effective_questions)
    return model


def build_prior(datasets: list[RoutingData], embed: Callable[[list[str]], np.ndarray],
                effective_questions: int = DEFAULT_EFFECTIVE_QUESTIONS) -> BayesianLinearRegression:
    """The tempered posterior, with what it was fitted on in its meta. When a dataset was asked
    with notes (its σ² known), the coverage weight is learned with the rest; otherwise the data
    says nothing about it and it is set to its stated prior."""
    prompts = [p for d in datasets for p in d.prompts]
    gains = np.concatenate([d.gain for d in datasets])
    sigma2 = np.concatenate([np.ones(len(d)) if d.sigma2 is None else d.sigma2 for d in datasets])
    feature_map = FeatureMap.fitted(prompts)
    features = feature_map.many(prompts, embed(prompts), sigma2)
    model = temper(fit_blr(features, gains), len(prompts), effective_questions)
    coverage = feature_map.coverage_index
    with_notes = [d.name for d in datasets if d.sigma2 is not None]
    if not with_notes:
        model.mean[coverage] = COVERAGE_WEIGHT_MEAN
        model.covariance[coverage, :] = 0.0
        model.covariance[:, coverage] = 0.0
        model.covariance[coverage, coverage] = COVERAGE_WEIGHT_VARIANCE
    model.observations = 0  # the person's own observations are counted from here
    model.meta.update({
        "coverage_weight": (f"learned from {', '.join(with_notes)}" if with_notes
                            else f"set: mean {COVERAGE_WEIGHT_MEAN}, variance {COVERAGE_WEIGHT_VARIANCE}"),
        "features": feature_map.as_meta(),
        "weak_accuracy": float(np.concatenate([d.weak for d in datasets]).mean()),
        "strong_accuracy": float(np.concatenate([d.strong for d in datasets]).mean()),
        "datasets": [{"name": d.name, "prompts": len(d), "digest": prompts_digest(d.prompts)} for d in datasets],
        "tempered_to_questions": effective_questions,
        "attribution": ATTRIBUTION,
    })
    return model


def fit_prior_file(embed: Callable[[list[str]], np.ndarray], datasets: list[RoutingData], out,
                   effective_questions: int | None = None) -> BayesianLinearRegression:
    """Fit and write a prior file that RouterState can load (router_prior in the config)."""
    from pathlib import Path

    model = build_prior(datasets, embed, effective_questions or DEFAULT_EFFECTIVE_QUESTIONS)
    model.save(Path(out))
    return model
