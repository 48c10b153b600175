"""The router's persistent state under the data dir: the person's surrogate posterior and the
calibrated thresholds. Both are small files replaced atomically; read-modify-write is serialised
with a lock file, so a TUI and a CLI `skiff feedback` can both update the posterior safely.

On first use the posterior is the prior shipped in router/priors/ (fitted on RouteLLM's public
routing data, see its README.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from skiff.local.atomic import write_atomically
from skiff.router.features import FeatureMap
from skiff.router.posterior_file import PosteriorFile
from skiff.router.surrogate import BayesianLinearRegression

PRIOR_NAME = "routellm-minilm.npz"
CALIBRATION_QUESTIONS = "calibration_questions.txt"


def shipped_prior_path() -> Path:
    return Path(str(files("skiff.router").joinpath("priors", PRIOR_NAME)))


def calibration_questions() -> list[str]:
    """Everyday questions the thresholds are calibrated on before a person has asked enough."""
    text = files("skiff.router").joinpath("priors", CALIBRATION_QUESTIONS).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class Thresholds:
    cloud: float  # escalate when μ + β·σ exceeds this
    local_plus: float  # more local compute above this (≤ cloud)
    cloud_share: float  # the share of questions they were calibrated to send to the cloud
    local_plus_share: float
    calibrated_on: str  # what scores the quantiles came from
    decisions_at: int = 0  # how many decisions had been recorded when they were set
    # The share `cloud` sends out before any draft; the rest of cloud_share is left to the draft
    # check. None in thresholds set before the cascade: all of it before a draft.
    before_draft_share: float | None = None

    @property
    def sent_before_draft(self) -> float:
        return self.cloud_share if self.before_draft_share is None else self.before_draft_share

    @property
    def drafts_to_escalate(self) -> float:
        """The share of local drafts the check should escalate so that cloud_share is met."""
        drafted = 1.0 - self.sent_before_draft - self.local_plus_share
        if drafted <= 0:
            return 0.0
        return float(min(1.0, max(0.0, (self.cloud_share - self.sent_before_draft) / drafted)))

    def as_dict(self) -> dict:
        return asdict(self)


class RouterState:
    def __init__(self, folder: Path, prior_path: Path | None = None) -> None:
        self.folder = Path(folder)
        self.posterior = PosteriorFile(self.folder, "surrogate.npz", Path(prior_path) if prior_path
                                       else shipped_prior_path(), "router posterior",
                                       validate=lambda model: FeatureMap.from_meta(model.meta["features"]))
        self.thresholds_path = self.folder / "thresholds.json"
        # (the posterior it was built for, its feature map): decisions read both.
        self._feature_map: tuple[BayesianLinearRegression, FeatureMap] | None = None

    @property
    def prior_path(self) -> Path:
        return self.posterior.prior_path

    @property
    def posterior_path(self) -> Path:
        return self.posterior.path

    def locked(self):
        return self.posterior.locked()

    # -- surrogate ---------------------------------------------------------------------------

    def prior(self) -> BayesianLinearRegression:
        return self.posterior.prior()

    def surrogate(self) -> BayesianLinearRegression:
        """The current posterior."""
        return self.posterior.current()

    def feature_map(self) -> FeatureMap:
        model = self.surrogate()
        if self._feature_map is None or self._feature_map[0] is not model:
            self._feature_map = (model, FeatureMap.from_meta(model.meta["features"]))
        return self._feature_map[1]

    def learn(self, observations: list[tuple[np.ndarray, float, float]], last_event: int) -> BayesianLinearRegression:
        return self.posterior.learn(observations, last_event)

    def last_feedback_event(self) -> int:
        return self.posterior.last_feedback_event()

    def forgotten_through_event(self) -> int:
        return self.posterior.forgotten_through_event()

    def reset(self, last_event: int) -> None:
        """Back to the prior, marking feedback events up to `last_event` as already seen so they
        are not learned again."""
        self.posterior.mark_reset(last_event)
        self.posterior.reset(last_event)

    # -- thresholds --------------------------------------------------------------------------

    def thresholds(self) -> Thresholds | None:
        try:
            return Thresholds(**json.loads(self.thresholds_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save_thresholds(self, thresholds: Thresholds) -> None:
        write_atomically(self.thresholds_path, json.dumps(thresholds.as_dict(), indent=2).encode())
