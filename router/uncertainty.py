"""skiff's routing policy: escalate by the upper confidence bound of the expected gain.

    score = μ(x) + β·σ(x)      (μ, σ: the surrogate's posterior mean and std of cloud − local)
    cloud   if score > τ_cloud
    local+  if score > τ_local+   (more local compute; notes coverage decides what kind)
    local   otherwise

τ_cloud and τ_local+ are quantiles of recent scores, so a target share of questions goes to the
cloud (`skiff router calibrate --cloud-share 0.2`; router/calibration.py keeps them following that
share as the surrogate learns). Before a person has asked enough questions, the quantiles come
from a shipped set of everyday questions (router/priors/calibration_questions.txt).

Optimism under uncertainty (β > 0) is deliberate: a question unlike anything the surrogate has
seen gets the benefit of the doubt, and the answer's feedback then teaches the surrogate about
that region, which a mean-only router would never explore.
"""

from __future__ import annotations

import numpy as np

from skiff.router.policy import Decision, QuestionWithNotes, Route, json_number
from skiff.router.state import RouterState, Thresholds

# Fewer recent questions than this and calibration uses the shipped everyday questions.
MIN_RECENT_FOR_CALIBRATION = 20


def coverage_phrase(sigma2: float | None) -> str:
    if sigma2 is None:
        return "notes not consulted"
    if sigma2 < 0.4:
        return f"notes cover this well (σ²={sigma2:.2f})"
    if sigma2 < 0.75:
        return f"notes cover this in part (σ²={sigma2:.2f})"
    return f"notes say little about this (σ²={sigma2:.2f})"


def surrogate_phrase(route: Route, mean: float, std: float, thresholds: Thresholds) -> str:
    gain = f"gain {mean:+.2f} ± {std:.2f}"
    if route == "cloud":
        return f"surrogate expects the cloud to do better ({gain}, bound above τ {thresholds.cloud:.2f})"
    if route == "local+":
        return f"surrogate is unsure the local model suffices ({gain}); giving it more compute"
    return f"surrogate expects local to do fine ({gain}, bound below τ {thresholds.local_plus:.2f})"


def _share_threshold(scores: np.ndarray, share: float) -> float:
    # The ends are absolute: share 0 sends nothing above τ, share 1 sends everything, including
    # questions scored outside the range seen at calibration.
    if share <= 0:
        return np.inf
    if share >= 1:
        return -np.inf
    return float(np.quantile(scores, 1.0 - share))


def thresholds_from_scores(scores: np.ndarray, cloud_share: float, local_plus_share: float,
                           calibrated_on: str, decisions_at: int = 0,
                           before_draft_share: float | None = None) -> Thresholds:
    """τ at the (1 − share) quantiles: that share of these scores lies above it. With the cascade,
    τ_cloud sends only `before_draft_share` out before a draft (the draft check sends the rest)."""
    if not 0.0 <= cloud_share <= 1.0 or not 0.0 <= local_plus_share <= 1.0 - cloud_share:
        raise ValueError("shares must lie in [0, 1] and add up to at most 1")
    before = cloud_share if before_draft_share is None else min(before_draft_share, cloud_share)
    scores = np.asarray(scores, dtype=np.float64)
    cloud = _share_threshold(scores, before)
    local_plus = _share_threshold(scores, before + local_plus_share)
    return Thresholds(cloud, min(local_plus, cloud), cloud_share, local_plus_share, calibrated_on, decisions_at,
                      None if before_draft_share is None else before)


def difficulty(score: float, thresholds: Thresholds) -> float:
    """Where the score sits between the local+ threshold (0) and the cloud one (1 and beyond)."""
    low, high = thresholds.local_plus, thresholds.cloud
    if high <= low:
        return 1.0 if score > low else 0.0
    return min(1.0, max(0.0, (score - low) / (high - low)))


class UncertaintyRouter:
    def __init__(self, state: RouterState, beta: float = 1.0, cloud_share: float = 0.2,
                 local_plus_share: float = 0.0, before_draft_share: float | None = None) -> None:
        self.state = state
        self.beta = beta
        self.cloud_share = cloud_share
        self.local_plus_share = local_plus_share
        self.before_draft_share = before_draft_share  # None: no cascade, all of cloud_share before a draft

    def thresholds(self) -> Thresholds:
        stored = self.state.thresholds()
        if stored is None:
            raise RuntimeError("the router has no thresholds yet: run `skiff router calibrate`")
        return stored

    def scores(self, features: np.ndarray) -> np.ndarray:
        means, stds = self.state.surrogate().predict_many(features)
        return means + self.beta * stds

    def score(self, features: np.ndarray) -> tuple[float, float, float]:
        prediction = self.state.surrogate().predict(features)
        return prediction.mean, prediction.std, prediction.upper(self.beta)

    def decide(self, consulted: QuestionWithNotes) -> Decision:
        if consulted.embedding is None:
            raise ValueError("the uncertainty router needs the question's embedding")
        sigma2 = 1.0 if consulted.coverage is None else consulted.coverage
        features = self.state.feature_map()(consulted.text, consulted.embedding, sigma2)
        mean, std, score = self.score(features)
        thresholds = self.thresholds()
        route: Route = "cloud" if score > thresholds.cloud else "local+" if score > thresholds.local_plus else "local"
        reason = f"{coverage_phrase(consulted.coverage)}; {surrogate_phrase(route, mean, std, thresholds)}"
        signals = {
            "sigma2": None if consulted.coverage is None else round(consulted.coverage, 4),
            "gain_mean": round(mean, 4),
            "gain_std": round(std, 4),
            "score": round(score, 4),
            "beta": self.beta,
            "threshold_cloud": json_number(thresholds.cloud),
            "threshold_local_plus": json_number(thresholds.local_plus),
            "notes": len(consulted.hits),
        }
        return Decision(route, reason, signals, difficulty=difficulty(score, thresholds), features=features)
