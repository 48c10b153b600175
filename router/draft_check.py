"""The cascade's second stage: after the local model has written the first CHECK_AT tokens of its
draft, how likely is the draft to be right?

The router's first stage decides before any model runs, from the question alone; on skiff's own
job that picks at chance (bench/RESULTS.md, the cascade issue). The local model's confidence in
what it is writing knows far more: its token log-probabilities and entropies, whether the draft
cites its notes, how much of it the notes support (router/draft_signals.py), whether the token
limit cut it short. The check is a
Bayesian linear regression over those signals, standardised,

    P(right | draft) ≈ ψ(draft)ᵀw,   w ~ N(m, S)

with the same conjugate online updates as the first stage (router/surrogate.py): a person's
good or bad on a local answer is one observation of whether its draft was right. Its prior is
fitted per local model on skiff's own routing tables (bench/fit_draft_check.py), because one
model's token confidence means nothing on another's scale; a model with no fitted prior gets no
check (and the decision record says so).

The check reads an answer from notes at two points: after its first CHECK_AT tokens ("early"),
and once more when a longer draft is finished ("final"). There the first 32 tokens rank drafts as
well as the whole (the default model's median notes answer is 37 tokens long), so an unsure one
stops early and costs little. A general answer, such as a worked GSM8K solution, states its
result only at the end, so it is read once, when finished (bench/RESULTS.md). One regression
serves both points: it is fitted on every reading of every draft, with the reading's length and
whether it was the whole draft among its features. Answers from notes and general answers weigh
the token signals apart (chosen by cross-validation on the fitted drafts: for Qwen-0.5B two sets
of weights rank general answers at AUROC 0.69 where one shared set reaches 0.61; for the default
model the two are within noise).

A draft whose estimated chance of being right falls below τ at either point is "unsure": with a
cloud to ask it escalates, otherwise it stays, marked. τ is the quantile of recent drafts' lowest
confidence that sends the wanted share of drafts on (shipped drafts stand in until there are
enough of the person's).
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Sequence

import numpy as np

from skiff.local.atomic import write_atomically
from skiff.router.draft_signals import draft_signals
from skiff.router.policy import json_number
from skiff.router.posterior_file import PosteriorFile
from skiff.router.surrogate import BayesianLinearRegression

CHECK_AT = 32
SIGNALS = ("-mean logprob", "-min logprob", "-answer span logprob", "mean entropy", "max entropy", "log length",
           "refusal words", "cut off at the token limit")
# A draft that stopped for one of these reasons was cut short, not finished by the model.
CUT_SHORT = ("length", "context")
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
    """ψ(reading): the signals, standardised as on the prior's data. An answer from notes and a
    general answer are two regimes: each has its own standardisation and its own weights for the
    token signals (a worked solution's confidence reads differently from a quoted note's); the
    notes signals count only for an answer from notes, and an indicator carries the difference in
    base rate. One more says whether the reading covers the whole draft (the final one) or its start."""

    means: np.ndarray  # over `names`, on readings of answers from notes
    scales: np.ndarray
    general_means: np.ndarray  # over SIGNALS, on readings of general answers
    general_scales: np.ndarray

    names = SIGNALS + NOTES_SIGNALS

    @property
    def dim(self) -> int:
        return 2 * len(SIGNALS) + len(NOTES_SIGNALS) + 3

    def __call__(self, signals: dict[str, float], with_notes: bool, whole: bool) -> np.ndarray:
        raw = np.array([signals.get(name, 0.0) for name in self.names], dtype=np.float64)
        cut = len(SIGNALS)
        if with_notes:
            standard = (raw - self.means) / self.scales
            token, general, notes = standard[:cut], np.zeros(cut), standard[cut:]
        else:
            token, general = np.zeros(cut), (raw[:cut] - self.general_means) / self.general_scales
            notes = np.zeros(len(NOTES_SIGNALS))
        return np.concatenate([token, general, notes, [0.0 if with_notes else 1.0, 1.0 if whole else 0.0, 1.0]])

    def weight_of(self, name: str, with_notes: bool = True) -> int:
        """The position in ψ of a signal's weight (a token signal has one per regime)."""
        if name in NOTES_SIGNALS:
            return 2 * len(SIGNALS) + NOTES_SIGNALS.index(name)
        return SIGNALS.index(name) + (0 if with_notes else len(SIGNALS))

    def as_meta(self) -> dict:
        return {"names": list(self.names), "means": self.means.round(6).tolist(),
                "scales": self.scales.round(6).tolist(), "general_means": self.general_means.round(6).tolist(),
                "general_scales": self.general_scales.round(6).tolist()}

    @classmethod
    def from_meta(cls, meta: dict) -> "DraftFeatureMap":
        if list(meta["names"]) != list(cls.names) or "general_means" not in meta:
            raise ValueError("the draft check's posterior was fitted on other signals")
        return cls(*(np.asarray(meta[key], dtype=np.float64)
                     for key in ("means", "scales", "general_means", "general_scales")))

    @classmethod
    def fitted(cls, with_notes: Sequence[dict[str, float]], general: Sequence[dict[str, float]]) -> "DraftFeatureMap":
        """Standardised on these readings: of answers from notes, and of general answers (either
        regime without readings keeps the other's token standardisation)."""
        def moments(signals, names):
            raw = np.array([[s.get(name, 0.0) for name in names] for s in signals], dtype=np.float64)
            spread = raw.std(axis=0)
            # A signal that never varied in the fit (no notes answer was cut off) keeps its raw
            # scale: dividing by its zero spread would blow up its first real value.
            return raw.mean(axis=0), np.where(spread > 1e-6, spread, 1.0)

        notes = moments(with_notes or general, cls.names)
        token = moments(general, SIGNALS) if general else (notes[0][:len(SIGNALS)], notes[1][:len(SIGNALS)])
        return cls(*notes, *token)

    @classmethod
    def identity(cls) -> "DraftFeatureMap":
        """No standardisation (ψ holds the raw signals): for priors written by hand."""
        return cls(np.zeros(len(cls.names)), np.ones(len(cls.names)), np.zeros(len(SIGNALS)), np.ones(len(SIGNALS)))


def signals_at(logprobs: Sequence[float], entropies: Sequence[float], pieces: Sequence[str],
               chunks: Sequence[str] | None, at: int | None = CHECK_AT, stop_reason: str = "") -> dict[str, float]:
    """The draft's signals over its first `at` tokens (all of them when None or the draft is
    shorter); for the whole draft, also whether the token limit cut it short (`stop_reason`)."""
    whole = at is None
    at = len(logprobs) if at is None else at
    text = "".join(pieces[:at])
    every = draft_signals(text, logprobs[:at], entropies[:at], pieces[:at], chunks)
    every["cut off at the token limit"] = 1.0 if whole and stop_reason in CUT_SHORT else 0.0
    return {name: round(value, 4) for name, value in every.items() if name in DraftFeatureMap.names}


def reads_early(with_notes: bool) -> bool:
    """Whether a draft gets the early reading. An answer from notes says what it found first, and
    its first 32 tokens rank drafts as well as the whole; a general answer (a worked GSM8K
    solution) states its result last, and an early verdict only adds noise there (on the fitted
    drafts, the early reading lowered the GSM8K ranking from 0.807 to 0.744 AUROC and raised the
    notes one from 0.739 to 0.760)."""
    return with_notes


def pack(features: Sequence[np.ndarray]) -> bytes:
    """ψ of a draft's readings as bytes for the records (one row per reading)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(np.stack(features), dtype=np.float64), allow_pickle=False)
    return buffer.getvalue()


def unpack(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


@dataclass(frozen=True)
class DraftVerdict:
    confidence: float  # the posterior mean of P(the draft is right), at the reading that decided
    std: float  # the posterior's uncertainty about that mean
    threshold: float | None  # τ (±∞ for a share of 1 or 0); None when not calibrated (never "unsure" then)
    at_tokens: int  # how many of the draft's tokens that reading covered
    stage: str  # "early" (the first CHECK_AT tokens) or "final" (the whole draft)
    signals: dict[str, float]
    # ψ of every reading the draft got (early, then final): feedback trains on exactly these.
    features: np.ndarray = field(repr=False, compare=False)
    escalated: bool = False  # the draft was set aside and the question sent to the cloud
    replaced_by: str | None = None  # a local+ method's answer replaced the draft ("vote", "context", "lora")
    draft_s: float | None = None  # seconds of drafting before the check ran
    check_ms: float | None = None  # the check's own time

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
                "threshold": json_number(self.threshold),
                "unsure": self.unsure, "escalated": self.escalated, "replaced_by": self.replaced_by,
                "at_tokens": self.at_tokens, "stage": self.stage,
                "reason": self.reason, "signals": self.signals,
                "draft_s": None if self.draft_s is None else round(self.draft_s, 3),
                "check_ms": None if self.check_ms is None else round(self.check_ms, 3)}


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

    def judge(self, logprobs: Sequence[float], entropies: Sequence[float], pieces: Sequence[str],
              chunks: Sequence[str] | None, whole: bool, earlier: DraftVerdict | None = None,
              stop_reason: str = "") -> DraftVerdict:
        """Read the draft so far: its first CHECK_AT tokens (early), or all of it once it is
        finished (whole, ended for `stop_reason`). `earlier` is the early verdict, whose ψ the
        final one keeps too."""
        signals = signals_at(logprobs, entropies, pieces, chunks, None if whole else CHECK_AT, stop_reason)
        features = self.feature_map()(signals, chunks is not None, whole)
        prediction = self.surrogate().predict(features)
        stored = self.threshold()
        seen = features[None, :] if earlier is None else np.vstack([earlier.features, features])
        return DraftVerdict(prediction.mean, prediction.std, stored.threshold if stored else None,
                            len(logprobs) if whole else min(len(logprobs), CHECK_AT), "final" if whole else "early",
                            signals, seen)

    def lowest_confidence(self, drafts: Sequence[np.ndarray]) -> np.ndarray:
        """Each draft's lowest confidence over its readings (what decides whether it escalates)."""
        if not len(drafts):
            return np.zeros(0)
        means, _ = self.surrogate().predict_many(np.vstack(drafts))
        bounds = np.cumsum([0] + [len(draft) for draft in drafts])
        return np.array([means[a:b].min() for a, b in zip(bounds[:-1], bounds[1:])])

    # -- τ -----------------------------------------------------------------------------------

    def threshold(self) -> DraftThreshold | None:
        try:
            return DraftThreshold(**json.loads(self.threshold_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def shipped_drafts(self) -> list[np.ndarray]:
        """ψ of the readings of the drafts the prior was fitted on (a new person's stand-in)."""
        with np.load(self.posterior.prior_path, allow_pickle=False) as data:
            features = np.asarray(data["calibration_features"], dtype=np.float64)
            draft_of = np.asarray(data["calibration_drafts"], dtype=np.int64)
        return [features[draft_of == n] for n in np.unique(draft_of)]

    def calibrate(self, share: float, recent: Sequence[np.ndarray], checked: int) -> DraftThreshold:
        """τ such that `share` of these drafts (the person's recent ones, or the shipped ones while
        there are fewer than MIN_RECENT_DRAFTS) would have escalated at one of their readings."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("the share of drafts to escalate must lie in [0, 1]")
        dim = self.feature_map().dim
        recent = [draft for draft in recent if draft.ndim == 2 and draft.shape[1] == dim]
        if len(recent) >= MIN_RECENT_DRAFTS:
            drafts, source = recent, f"your {len(recent)} most recent drafts"
        else:
            drafts = self.shipped_drafts()
            source = f"{len(drafts)} drafts shipped with the check (you have {len(recent)})"
        confidences = self.lowest_confidence(drafts)
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
