"""Router quality as RouteLLM measures it: accuracy against the share of questions sent to the
strong model, PGR, APGR and CPT.

A router is a score per question; sending the top-m scores to the strong model for m = 0..n
traces the curve. Ties are broken by expectation (every order of a tied block equally likely),
so a router that cannot tell questions apart is scored like the random router it is, never lucky.

- PGR(x) = (accuracy(x) − weak) / (strong − weak), x = strong-call share in [0, 1]
- APGR = area under PGR(x) (trapezoids over the n + 1 points); random = 0.5
- CPT(p) = the smallest strong-call share whose PGR reaches p
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RouterCurve:
    strong_share: np.ndarray  # x, n + 1 points from 0 to 1
    accuracy: np.ndarray
    weak_accuracy: float
    strong_accuracy: float

    @property
    def pgr(self) -> np.ndarray:
        return (self.accuracy - self.weak_accuracy) / (self.strong_accuracy - self.weak_accuracy)

    @property
    def apgr(self) -> float:
        pgr, share = self.pgr, self.strong_share
        return float(np.sum((pgr[1:] + pgr[:-1]) / 2 * np.diff(share)))

    def cpt(self, target: float) -> float:
        reached = np.nonzero(self.pgr >= target - 1e-12)[0]
        return float(self.strong_share[reached[0]]) if len(reached) else 1.0

    def summary(self) -> dict:
        return {
            "apgr": round(self.apgr, 4),
            "cpt20": round(self.cpt(0.2), 4),
            "cpt50": round(self.cpt(0.5), 4),
            "cpt80": round(self.cpt(0.8), 4),
        }

    def points(self, steps: int = 20) -> list[dict]:
        """The curve at `steps` + 1 evenly spaced strong-call shares, for tables and plots."""
        out = []
        for share in np.linspace(0, 1, steps + 1):
            accuracy = float(np.interp(share, self.strong_share, self.accuracy))
            out.append({"strong_share": round(float(share), 4), "accuracy": round(accuracy, 4),
                        "pgr": round((accuracy - self.weak_accuracy) / (self.strong_accuracy - self.weak_accuracy), 4)})
        return out


def router_curve(scores: np.ndarray, weak_correct: np.ndarray, strong_correct: np.ndarray) -> RouterCurve:
    """Higher score = send to the strong model first."""
    scores = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak_correct, dtype=np.float64)
    strong = np.asarray(strong_correct, dtype=np.float64)
    n = len(scores)
    if n == 0 or not (len(weak) == len(strong) == n):
        raise ValueError("scores and both correctness columns need the same, non-zero length")
    gain = strong - weak
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_gain = scores[order], gain[order]
    # Within a block of equal scores every member is equally likely to go first, so each position
    # in the block gains the block's mean.
    expected_gain = sorted_gain.copy()
    boundaries = np.flatnonzero(np.diff(sorted_scores) != 0) + 1
    for block in np.split(np.arange(n), boundaries):
        expected_gain[block] = sorted_gain[block].mean()
    accuracy = (weak.sum() + np.concatenate([[0.0], np.cumsum(expected_gain)])) / n
    return RouterCurve(np.arange(n + 1) / n, accuracy, float(weak.mean()), float(strong.mean()))


def random_curve(weak_correct: np.ndarray, strong_correct: np.ndarray) -> RouterCurve:
    """The expected curve of a router that picks questions uniformly at random: a straight line."""
    return router_curve(np.zeros(len(weak_correct)), weak_correct, strong_correct)


def oracle_curve(weak_correct: np.ndarray, strong_correct: np.ndarray) -> RouterCurve:
    """A router that knows the answers: questions only the strong model gets right go first."""
    gain = np.asarray(strong_correct, dtype=np.float64) - np.asarray(weak_correct, dtype=np.float64)
    return router_curve(gain, weak_correct, strong_correct)


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
