"""The cascade's second stage: after the local model has written the first CHECK_AT tokens of its
draft, how likely is the draft to be right?

The router's first stage decides before any model runs, from the question alone; on skiff's own
job that picks at chance (bench/RESULTS.md, the cascade issue). The local model's confidence in
what it is writing knows far more: its token log-probabilities and entropies, whether the draft
cites its notes, how much of it the notes support (router/draft_signals.py). The check is a
Bayesian linear regression over those signals, standardised,

    P(right | draft) ≈ ψ(draft)ᵀw,   w ~ N(m, S)

with the same conjugate online updates as the first stage (router/surrogate.py): a person's
good or bad on a local answer is one observation of whether its draft was right. Its prior is
fitted per local model on skiff's own routing tables (bench/fit_draft_check.py), because one
model's token confidence means nothing on another's scale; a model with no fitted prior gets no
check (and the decision record says so).

A draft whose estimated chance of being right falls below τ is "unsure": with a cloud to ask it
escalates, otherwise it stays, marked. τ is the quantile of recent drafts' confidences that sends
the wanted share of drafts on (shipped drafts stand in until there are enough of the person's).
The signals of the first 32 tokens rank drafts as well as the whole draft's (median notes answer
of the default model: 37 tokens), so the check waits for no more than that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Sequence

import numpy as np

from skiff.local.atomic import write_atomically
from skiff.router.draft_signals import draft_signals
from skiff.router.posterior_file import PosteriorFile
from skiff.router.surrogate import BayesianLinearRegression

CHECK_AT = 32
SIGNALS = ("-mean logprob", "-min logprob", "-answer span logprob", "mean entropy", "max entropy", "log length",
           "refusal words")
NOTES_SIGNALS = ("cites no source", "content not in its chunks")
# Fewer of the person's own drafts than this and τ is set on the drafts shipped with the prior.
MIN_RECENT_DRAFTS = 20
RECALIBRATE_EVERY = 20


def prior_name(model_file: str) -> str:
    return f"draft_check--{Path(model_file).stem}.npz"


def shipped_prior(model_file: str) -> Path:
    return Path(str(files("skiff.router").joinpath("priors", prior_name(model_file))))


@dataclass(frozen=True)
class DraftFeatureMap:
    """ψ(draft): the signals, standardised as on the prior's data; the notes signals count only
    for a question answered from notes, and an indicator carries the difference otherwise."""

    means: np.ndarray
    scales: np.ndarray

    names = SIGNALS + NOTES_SIGNALS

    @property
    def dim(self) -> int:
        return len(self.names) + 2

    def __call__(self, signals: dict[str, float], with_notes: bool) -> np.ndarray:
        raw = np.array([signals.get(name, 0.0) for name in self.names], dtype=np.float64)
        standard = (raw - self.means) / self.scales
        if not with_notes:
            standard[len(SIGNALS):] = 0.0
        return np.concatenate([standard, [0.0 if with_notes else 1.0, 1.0]])

    def as_meta(self) -> dict:
        return {"names": list(self.names), "means": self.means.round(6).tolist(),
                "scales": self.scales.round(6).tolist()}

    @classmethod
    def from_meta(cls, meta: dict) -> "DraftFeatureMap":
        if list(meta["names"]) != list(cls.names):
            raise ValueError("the draft check's posterior was fitted on other signals")
        return cls(np.asarray(meta["means"], dtype=np.float64), np.asarray(meta["scales"], dtype=np.float64))

    @classmethod
    def fitted(cls, signals: Sequence[dict[str, float]]) -> "DraftFeatureMap":
        raw = np.array([[s.get(name, 0.0) for name in cls.names] for s in signals], dtype=np.float64)
        return cls(raw.mean(axis=0), raw.std(axis=0) + 1e-6)


def signals_at(logprobs: Sequence[float], entropies: Sequence[float], pieces: Sequence[str],
               chunks: Sequence[str] | None, at: int = CHECK_AT) -> dict[str, float]:
    """The draft's signals over its first `at` tokens (all of them when it is shorter)."""
    text = "".join(pieces[:at])
    every = draft_signals(text, logprobs[:at], entropies[:at], pieces[:at], chunks)
    return {name: round(value, 4) for name, value in every.items() if name in DraftFeatureMap.names}


@dataclass(frozen=True)
class DraftVerdict:
    confidence: float  # the posterior mean of P(the draft is right)
    std: float  # the posterior's uncertainty about that mean
    threshold: float | None  # τ; None when the check was not calibrated (never "unsure" then)
    at_tokens: int  # how many of the draft's tokens it read
    signals: dict[str, float]
    features: np.ndarray = field(repr=False, compare=False)
    escalated: bool = False  # the draft was set aside and the question sent to the cloud

    @property
    def unsure(self) -> bool:
        return self.threshold is not None and self.confidence < self.threshold

    @property
    def reason(self) -> str:
        if self.threshold is None:
            return f"the local model's confidence in its draft: {self.confidence:.2f}"
        if self.unsure:
            return f"the local model is unsure ({self.confidence:.2f} < τ {self.threshold:.2f})"
        return f"the local model is confident ({self.confidence:.2f} ≥ τ {self.threshold:.2f})"

    def as_dict(self) -> dict:
        return {"confidence": round(self.confidence, 4), "std": round(self.std, 4),
                "threshold": None if self.threshold is None else round(self.threshold, 4),
                "unsure": self.unsure, "escalated": self.escalated, "at_tokens": self.at_tokens,
                "reason": self.reason, "signals": self.signals}


@dataclass(frozen=True)
class DraftThreshold:
    threshold: float  # escalate a draft whose confidence is below this
    share: float  # the share of drafts it was calibrated to escalate
    calibrated_on: str
    decisions_at: int = 0  # drafts checked when it was set

    def as_dict(self) -> dict:
        return asdict(self)


class DraftCheck:
    """The check for one local model: its posterior (learning from feedback) and its τ."""

    def __init__(self, folder: Path, model_file: str, prior_path: Path | None = None) -> None:
        self.model_file = Path(model_file).name
        prior = Path(prior_path) if prior_path else shipped_prior(self.model_file)
        stem = Path(self.model_file).stem
        self.posterior = PosteriorFile(folder, f"draft_check--{stem}.npz", prior, "draft check posterior",
                                       validate=lambda model: DraftFeatureMap.from_meta(model.meta["features"]))
        self.threshold_path = Path(folder) / f"draft_check--{stem}.json"

    @property
    def available(self) -> bool:
        """Whether a prior was fitted for this model (else there is no check)."""
        return self.posterior.prior_path.is_file()

    def surrogate(self) -> BayesianLinearRegression:
        return self.posterior.current()

    def feature_map(self) -> DraftFeatureMap:
        return DraftFeatureMap.from_meta(self.surrogate().meta["features"])

    def confidences(self, features: np.ndarray) -> np.ndarray:
        return self.surrogate().predict_many(features)[0] if len(features) else np.zeros(0)

    def judge(self, logprobs: Sequence[float], entropies: Sequence[float], pieces: Sequence[str],
              chunks: Sequence[str] | None) -> DraftVerdict:
        at = min(len(logprobs), CHECK_AT)
        signals = signals_at(logprobs, entropies, pieces, chunks)
        features = self.feature_map()(signals, with_notes=chunks is not None)
        prediction = self.surrogate().predict(features)
        stored = self.threshold()
        return DraftVerdict(prediction.mean, prediction.std, stored.threshold if stored else None, at, signals,
                            features)

    # -- τ -----------------------------------------------------------------------------------

    def threshold(self) -> DraftThreshold | None:
        try:
            return DraftThreshold(**json.loads(self.threshold_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def shipped_drafts(self) -> np.ndarray:
        """ψ of the drafts the prior was fitted on (the stand-in for a new person's own)."""
        with np.load(self.posterior.prior_path, allow_pickle=False) as data:
            return np.asarray(data["calibration_features"], dtype=np.float64)

    def calibrate(self, share: float, recent: np.ndarray, checked: int) -> DraftThreshold:
        """τ such that `share` of these drafts (the person's recent ones, or the shipped ones while
        there are fewer than MIN_RECENT_DRAFTS) would have escalated."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("the share of drafts to escalate must lie in [0, 1]")
        if len(recent) >= MIN_RECENT_DRAFTS and recent.shape[1] == self.feature_map().dim:
            drafts, source = recent, f"your {len(recent)} most recent drafts"
        else:
            drafts = self.shipped_drafts()
            source = f"{len(drafts)} drafts shipped with the check (you have {len(recent)})"
        confidences = self.confidences(drafts)
        if share <= 0:
            tau = -np.inf
        elif share >= 1:
            tau = np.inf
        else:
            tau = float(np.quantile(confidences, share))
        chosen = DraftThreshold(tau, share, source, checked)
        write_atomically(self.threshold_path, json.dumps(chosen.as_dict(), indent=2).encode())
        return chosen


def share_of_drafts(cloud_share: float, before_draft: float, local_plus_share: float) -> float:
    """The share of drafts to escalate so that, with `before_draft` sent out before any draft and
    `local_plus_share` given more local compute instead, `cloud_share` of questions reach the cloud."""
    drafted = 1.0 - before_draft - local_plus_share
    if drafted <= 0:
        return 0.0
    return float(min(1.0, max(0.0, (cloud_share - before_draft) / drafted)))
