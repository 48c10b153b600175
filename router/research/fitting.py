"""Fitting the surrogate to labelled questions: Bayesian linear regression whose prior variance
and noise variance are chosen by evidence maximisation (type-II maximum likelihood), so no
held-out data is spent and nothing is tuned on a test set.

With precision α on the weights and β on the noise (Bishop, PRML §3.5):

    ln p(y) = D/2 ln α + N/2 ln β − β/2 ‖y − Φm‖² − α/2 ‖m‖² − ½ ln|A| − N/2 ln 2π,
    A = αI + βΦᵀΦ,  m = βA⁻¹Φᵀy.

One eigendecomposition of ΦᵀΦ makes every point of the (α, β) grid cost O(D²).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skiff.router.surrogate import BayesianLinearRegression

_ALPHAS = np.logspace(-1, 4, 26)
_BETAS = np.logspace(-1, 2, 16)


@dataclass(frozen=True)
class Evidence:
    alpha: float  # prior precision of the weights
    beta: float  # noise precision
    log_evidence: float


def best_evidence(features: np.ndarray, targets: np.ndarray) -> Evidence:
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n, d = features.shape
    eigenvalues, eigenvectors = np.linalg.eigh(features.T @ features)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    projected = eigenvectors.T @ (features.T @ targets)  # Φᵀy in the eigenbasis
    yy = float(targets @ targets)
    best = Evidence(1.0, 1.0, -np.inf)
    for alpha in _ALPHAS:
        for beta in _BETAS:
            a_eigen = alpha + beta * eigenvalues
            m_eigen = beta * projected / a_eigen
            # ‖y − Φm‖² = yᵀy − 2 mᵀΦᵀy + mᵀΦᵀΦm, all in the eigenbasis
            residual = yy - 2 * m_eigen @ projected + (m_eigen**2) @ eigenvalues
            value = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * residual
                     - alpha / 2 * (m_eigen @ m_eigen) - 0.5 * np.sum(np.log(a_eigen)) - n / 2 * np.log(2 * np.pi))
            if value > best.log_evidence:
                best = Evidence(float(alpha), float(beta), float(value))
    return best


def fit_blr(features: np.ndarray, targets: np.ndarray, evidence: Evidence | None = None) -> BayesianLinearRegression:
    """The posterior given (features, targets), from a zero-mean isotropic prior tuned by evidence."""
    evidence = evidence or best_evidence(features, targets)
    model = BayesianLinearRegression.isotropic(features.shape[1], 1.0 / evidence.alpha, 1.0 / evidence.beta)
    model.fit(features, targets)
    model.meta["alpha"] = evidence.alpha
    model.meta["beta"] = evidence.beta
    return model
