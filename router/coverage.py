"""Signal 1, note coverage: SIFT selection and the posterior variance it leaves (SIFT, arXiv 2410.08020).

With a linear kernel on unit vectors, k(a, b) = aᵀb, the uncertainty about the query x* after
observing note chunks S (each with noise λ′) is

    σ²(x*|S) = k(x*, x*) − k_Sᵀ (K_SS + λ′I)⁻¹ k_S.

SIFT picks, one at a time, the candidate whose observation lowers σ² the most. That trades
relevance against redundancy: a near-copy of a chunk already picked explains nothing new, so
SIFT passes it over where nearest-neighbour retrieval would take it. The remaining σ² says how
well the notes cover the question: near 0 when they pin it down, 1 when they say nothing.

Instead of inverting K_SS for every candidate, the joint posterior covariance of the query and
all candidates is kept and given a rank-one update per pick (the Gaussian conditioning
identity), so selecting k of n candidates costs O(k·n²) with n ≈ 50.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Coverage:
    selected: list[int]  # indices into the candidates, in the order SIFT picked them
    variances: list[float]  # σ²(x*|S) after each pick; variances[-1] is the final one
    prior_variance: float  # σ²(x*|∅) = k(x*, x*)

    @property
    def variance(self) -> float:
        return self.variances[-1] if self.variances else self.prior_variance


def sift_select(
    query: np.ndarray,
    candidates: np.ndarray,
    k: int,
    lam: float = 0.01,
    min_gain: float = 0.0,
) -> Coverage:
    """Greedily pick up to `k` rows of `candidates` (n×d) for `query` (d,), never the same row twice.

    Stops early when the best remaining candidate would lower σ² by less than `min_gain`.
    """
    query = np.asarray(query, dtype=np.float64)
    prior = float(query @ query)
    if k <= 0 or len(candidates) == 0:
        return Coverage([], [], prior)
    points = np.vstack([query[None, :], np.asarray(candidates, dtype=np.float64)])
    covariance = points @ points.T  # row/column 0 is the query
    available = np.ones(len(points), dtype=bool)
    available[0] = False
    selected: list[int] = []
    variances: list[float] = []
    for _ in range(min(k, len(candidates))):
        diagonal = np.diag(covariance)
        gains = np.where(available, covariance[0] ** 2 / (diagonal + lam), -np.inf)
        best = int(np.argmax(gains))
        if not available[best] or gains[best] < min_gain:
            break
        column = covariance[:, best].copy()
        covariance -= np.outer(column, column) / (column[best] + lam)
        available[best] = False
        selected.append(best - 1)
        variances.append(max(float(covariance[0, 0]), 0.0))
    return Coverage(selected, variances, prior)


def posterior_variance(query: np.ndarray, chosen: np.ndarray, lam: float = 0.01) -> float:
    """σ²(x*|S) straight from the closed form: the reference the greedy updates are tested against."""
    query = np.asarray(query, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.float64).reshape(-1, len(query))
    if len(chosen) == 0:
        return float(query @ query)
    k_s = chosen @ query
    gram = chosen @ chosen.T + lam * np.eye(len(chosen))
    return float(query @ query - k_s @ np.linalg.solve(gram, k_s))
