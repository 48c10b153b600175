"""A surrogate's posterior on disk, learning from the feedback log exactly once.

The posterior is a small .npz replaced atomically (local/atomic.py); it starts as a shipped prior
and records, in the same write as its new weights, the last feedback event it absorbed, so a
kill -9 can neither lose an event nor apply one twice. A file that no longer loads was damaged
after it was written: it is set aside and the posterior is rebuilt from the prior and the log.

The router's gain surrogate (router/state.py) and the draft check's (router/draft_check.py) are
each one of these.
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from skiff.local.atomic import write_atomically
from skiff.local.recovery import Recovery, quarantine, report
from skiff.router.surrogate import BayesianLinearRegression


class PosteriorFile:
    def __init__(self, folder: Path, name: str, prior_path: Path, what: str,
                 validate: Callable[[BayesianLinearRegression], object] = lambda model: None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.prior_path = Path(prior_path)
        self.what = what  # how a recovery report names it
        self.validate = validate  # raises when a loaded posterior is unusable
        # A reset's mark, kept apart from the posterior so a rebuild from the records after
        # damage does not learn again what the person asked to forget.
        self.reset_path = self.folder / "reset.json"
        self._cached: tuple[float, BayesianLinearRegression] | None = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def prior(self) -> BayesianLinearRegression:
        if not self.prior_path.is_file():
            raise FileNotFoundError(f"the {self.what}'s prior is missing: {self.prior_path} (reinstall skiff, "
                                    "or rebuild it with `skiff router fit-prior`)")
        return BayesianLinearRegression.load(self.prior_path)

    def current(self) -> BayesianLinearRegression:
        """The posterior, re-read only when its file changed (another process learned)."""
        path = self.path if self.path.is_file() else self.prior_path
        stamp = path.stat().st_mtime_ns if path.is_file() else -1.0
        if self._cached is None or self._cached[0] != stamp:
            model = self._load() if path == self.path else self.starting_point()
            self._cached = (stamp, model)
        return self._cached[1]

    def _read(self) -> BayesianLinearRegression:
        model = BayesianLinearRegression.load(self.path)
        self.validate(model)
        return model

    def _load(self) -> BayesianLinearRegression:
        try:
            return self._read()
        except Exception:  # noqa: BLE001 - numpy, zipfile and json each raise their own
            pass
        # Writes are atomic, so a file that does not load was damaged after it was written; look
        # again under the lock, in case another process has just replaced it.
        with self.locked():
            try:
                return self._read()
            except Exception as error:  # noqa: BLE001
                reason = f"{type(error).__name__}: {error}"
                backups = quarantine(self.path)
                # Written at once, so the next process does not take the missing file for a new person.
                model = self.starting_point()
                model.save(self.path)
        report(Recovery(self.what, reason, backups,
                        "It is rebuilt from the shipped prior and the feedback in your answer records."))
        return model

    def starting_point(self) -> BayesianLinearRegression:
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

    def learn(self, observations: list[tuple[np.ndarray, float, float]], last_event: int) -> BayesianLinearRegression:
        """Apply (φ, target, weight) observations and remember the last feedback event applied,
        in one atomic write: the posterior and its bookkeeping cannot disagree after a crash."""
        with self.locked():
            self._cached = None
            model = self.current().copy()
            for phi, target, weight in observations:
                model.update(phi, target, weight)
            model.meta["last_feedback_event"] = last_event
            model.save(self.path)
            self._cached = None
            return model

    def last_feedback_event(self) -> int:
        return int(self.current().meta.get("last_feedback_event", 0))

    def forgotten_through_event(self) -> int:
        """Events up to this one were dropped by a reset: the posterior does not hold them."""
        return int(self.current().meta.get("forgotten_through_event", 0))

    def reset(self, last_event: int) -> None:
        """Back to the prior, marking feedback events up to `last_event` as already seen so they
        are not learned again (the reset mark itself is written by whoever resets)."""
        with self.locked():
            model = self.prior()
            model.meta["last_feedback_event"] = last_event
            model.meta["forgotten_through_event"] = last_event
            model.save(self.path)
            self._cached = None

    def mark_reset(self, last_event: int) -> None:
        write_atomically(self.reset_path, json.dumps({"forgotten_through_event": last_event}).encode())
