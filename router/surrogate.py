"""Signal 2, the competence surrogate: Bayesian linear regression of the quality gap cloud − local.

    y = φ(x)ᵀw + ε,   w ~ N(m, S),   ε ~ N(0, σ²)

φ(x) is the question's feature vector (router/features.py). The posterior after each observation
is again Gaussian (conjugate), updated in O(D²) with the Sherman–Morrison identity, so skiff learns
from every piece of feedback as it arrives. A negative weight removes an observation again (a
person who changes their mind about an answer).

The posterior is a small .npz written atomically (local/atomic.py): a kill -9 leaves either the
old posterior or the new one, never a torn file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skiff.local.atomic import write_atomically


@dataclass(frozen=True)
class Prediction:
    mean: float  # expected gain of sending the question to the cloud
    std: float  # posterior standard deviation of that expectation (epistemic, not noise)

    def upper(self, beta: float) -> float:
        return self.mean + beta * self.std


class BayesianLinearRegression:
    def __init__(self, mean: np.ndarray, covariance: np.ndarray, noise_variance: float,
                 observations: int = 0, meta: dict | None = None) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.covariance = np.asarray(covariance, dtype=np.float64)
        self.noise_variance = float(noise_variance)
        self.observations = observations
        self.meta = dict(meta or {})

    @classmethod
    def isotropic(
        cls, dim: int, prior_variance: float = 1.0, noise_variance: float = 0.25
    ) -> "BayesianLinearRegression":
        return cls(np.zeros(dim), np.eye(dim) * prior_variance, noise_variance)

    @property
    def dim(self) -> int:
        return len(self.mean)

    # -- inference ---------------------------------------------------------------------------

    def predict(self, phi: np.ndarray) -> Prediction:
        phi = np.asarray(phi, dtype=np.float64)
        variance = float(phi @ self.covariance @ phi)
        return Prediction(float(phi @ self.mean), float(np.sqrt(max(variance, 0.0))))

    def predict_many(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.asarray(features, dtype=np.float64)
        means = features @ self.mean
        variances = np.einsum("ij,jk,ik->i", features, self.covariance, features)
        return means, np.sqrt(np.clip(variances, 0.0, None))

    # -- learning ----------------------------------------------------------------------------

    def update(self, phi: np.ndarray, target: float, weight: float = 1.0) -> None:
        """One observation (weight w counts it w times; w = −1 takes an earlier one back)."""
        phi = np.asarray(phi, dtype=np.float64)
        s_phi = self.covariance @ phi
        denominator = self.noise_variance / weight + float(phi @ s_phi)
        if weight < 0 and denominator >= 0:
            raise ValueError("cannot remove an observation this posterior never absorbed")
        gain = s_phi / denominator
        self.mean = self.mean + gain * (target - float(phi @ self.mean))
        self.covariance = self.covariance - np.outer(gain, s_phi)
        # Keep it exactly symmetric; round-off would otherwise accumulate over thousands of updates.
        self.covariance = (self.covariance + self.covariance.T) / 2
        self.observations += 1 if weight > 0 else -1

    def fit(self, features: np.ndarray, targets: np.ndarray) -> None:
        """All observations at once, in closed form from the current (prior) posterior."""
        features = np.asarray(features, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        prior_precision = np.linalg.inv(self.covariance)
        precision = prior_precision + features.T @ features / self.noise_variance
        rhs = prior_precision @ self.mean + features.T @ targets / self.noise_variance
        self.covariance = np.linalg.inv(precision)
        self.covariance = (self.covariance + self.covariance.T) / 2
        self.mean = self.covariance @ rhs
        self.observations += len(targets)

    def copy(self) -> "BayesianLinearRegression":
        return BayesianLinearRegression(self.mean.copy(), self.covariance.copy(), self.noise_variance,
                                        self.observations, self.meta)

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: Path, **extra_arrays: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **extra_arrays, mean=self.mean, covariance=self.covariance,
                 noise_variance=np.float64(self.noise_variance), observations=np.int64(self.observations),
                 meta=np.array(json.dumps(self.meta, sort_keys=True)))
        write_atomically(Path(path), buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "BayesianLinearRegression":
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(data["mean"], data["covariance"], float(data["noise_variance"]),
                       int(data["observations"]), json.loads(str(data["meta"]) or "{}"))
