"""The router's persistent state under the data dir: the person's surrogate posterior and the
calibrated thresholds. Both are small files replaced atomically; read-modify-write is serialised
with a lock file, so a TUI and a CLI `skiff feedback` can both update the posterior safely.

On first use the posterior is the prior shipped in router/priors/ (fitted on RouteLLM's public
routing data, see its README.md).
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Iterator

import numpy as np

from skiff.local.atomic import write_atomically
from skiff.local.recovery import Recovery, quarantine, report
from skiff.router.features import FeatureMap
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

    def as_dict(self) -> dict:
        return asdict(self)


class RouterState:
    def __init__(self, folder: Path, prior_path: Path | None = None) -> None:
        self.folder = Path(folder)
        self.prior_path = Path(prior_path) if prior_path else shipped_prior_path()
        self.posterior_path = self.folder / "surrogate.npz"
        self.thresholds_path = self.folder / "thresholds.json"
        # A reset's mark, kept apart from the posterior so a rebuild from the records after
        # damage does not learn again what the person asked to forget.
        self.reset_path = self.folder / "reset.json"
        # (file stamp, posterior, its feature map): decisions read both, the disk only on change.
        self._cached: tuple[float, BayesianLinearRegression, FeatureMap] | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- surrogate ---------------------------------------------------------------------------

    def prior(self) -> BayesianLinearRegression:
        if not self.prior_path.is_file():
            raise FileNotFoundError(f"the router's prior is missing: {self.prior_path} (reinstall skiff, "
                                    "or rebuild it with `skiff router fit-prior`)")
        return BayesianLinearRegression.load(self.prior_path)

    def _current(self) -> tuple[float, BayesianLinearRegression, FeatureMap]:
        """Re-read only when the file changed (another process learned)."""
        path = self.posterior_path if self.posterior_path.is_file() else self.prior_path
        stamp = path.stat().st_mtime_ns if path.is_file() else -1.0
        if self._cached is None or self._cached[0] != stamp:
            model = self._load_posterior() if path == self.posterior_path else self._starting_point()
            self._cached = (stamp, model, FeatureMap.from_meta(model.meta["features"]))
        return self._cached

    def _load_posterior(self) -> BayesianLinearRegression:
        try:
            return self._read_posterior()
        except Exception:  # noqa: BLE001 - numpy, zipfile and json each raise their own
            pass
        # Writes are atomic, so a file that does not load was damaged after it was written; look
        # again under the lock, in case another process has just replaced it.
        with self.locked():
            try:
                return self._read_posterior()
            except Exception as error:  # noqa: BLE001
                reason = f"{type(error).__name__}: {error}"
                backups = quarantine(self.posterior_path)
                # Written at once, so the next process does not take the missing file for a new person.
                model = self._starting_point()
                model.save(self.posterior_path)
        report(Recovery("router posterior", reason, backups,
                        "It is rebuilt from the shipped prior and the feedback in your answer records."))
        return model

    def _read_posterior(self) -> BayesianLinearRegression:
        model = BayesianLinearRegression.load(self.posterior_path)
        FeatureMap.from_meta(model.meta["features"])
        return model

    def _starting_point(self) -> BayesianLinearRegression:
        """The prior, marked with any reset, so that syncing with the records rebuilds the posterior."""
        model = self.prior()
        try:
            forgotten = int(json.loads(self.reset_path.read_text())["forgotten_through_event"])
        except (OSError, ValueError, KeyError, TypeError):
            forgotten = 0
        if forgotten:
            model.meta["last_feedback_event"] = forgotten
            model.meta["forgotten_through_event"] = forgotten
        return model

    def surrogate(self) -> BayesianLinearRegression:
        """The current posterior."""
        return self._current()[1]

    def feature_map(self) -> FeatureMap:
        return self._current()[2]

    def learn(self, observations: list[tuple[np.ndarray, float, float]], last_event: int) -> BayesianLinearRegression:
        """Apply (φ, target, weight) observations and remember the last feedback event applied,
        in one atomic write: the posterior and its bookkeeping cannot disagree after a crash."""
        with self.locked():
            self._cached = None
            model = self.surrogate().copy()
            for phi, target, weight in observations:
                model.update(phi, target, weight)
            model.meta["last_feedback_event"] = last_event
            model.save(self.posterior_path)
            self._cached = None
            return model

    def last_feedback_event(self) -> int:
        return int(self.surrogate().meta.get("last_feedback_event", 0))

    def forgotten_through_event(self) -> int:
        """Events up to this one were dropped by a reset: the posterior does not hold them."""
        return int(self.surrogate().meta.get("forgotten_through_event", 0))

    def reset(self, last_event: int) -> None:
        """Back to the prior, marking feedback events up to `last_event` as already seen so they
        are not learned again."""
        with self.locked():
            write_atomically(self.reset_path, json.dumps({"forgotten_through_event": last_event}).encode())
            model = self.prior()
            model.meta["last_feedback_event"] = last_event
            model.meta["forgotten_through_event"] = last_event
            model.save(self.posterior_path)
            self._cached = None

    # -- thresholds --------------------------------------------------------------------------

    def thresholds(self) -> Thresholds | None:
        try:
            return Thresholds(**json.loads(self.thresholds_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save_thresholds(self, thresholds: Thresholds) -> None:
        write_atomically(self.thresholds_path, json.dumps(thresholds.as_dict(), indent=2).encode())
