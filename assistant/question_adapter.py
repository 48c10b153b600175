"""Test-time LoRA for one question: the local+ route's heaviest tool (SIFT, arXiv 2410.08020).

SIFT picks note chunks from the question's candidates one at a time; the local model's LoRA takes
one optimizer step per pick; selection stops by the adaptive SIFT rule, once n·σ_n ≥ 1/α (σ_n is
the posterior standard deviation about the question after n picks): when the notes already pin
the question down, σ_n is small and training runs longer only if it keeps paying; when they
barely cover it, σ_n stays large and training stops early, since more steps on loosely related
text buy little. The adapter is written as a GGUF LoRA file, attached for the answer, and
removed afterwards; the base model is never reloaded.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from skiff.assistant.adapter_spec import TuningProgress
from skiff.assistant.personal_adapter import PersonalAdapter
from skiff.local.notes_index import Hit
from skiff.router.coverage import sift_select


@dataclass(frozen=True)
class TrainingSelection:
    chunks: list[Hit]
    sigmas: list[float]  # σ_n after each pick
    reason: str  # why selection stopped


def select_training_chunks(query: np.ndarray, candidates: Sequence[Hit], alpha: float, max_steps: int,
                           lam: float = 0.01) -> TrainingSelection:
    """SIFT's picks, in order, up to the first n with n·σ_n ≥ 1/α (or `max_steps`)."""
    usable = [hit for hit in candidates if hit.embedding is not None]
    if not usable or max_steps <= 0:
        return TrainingSelection([], [], "no note chunks to train on")
    coverage = sift_select(query, np.stack([hit.embedding for hit in usable]), max_steps, lam=lam)
    sigmas = [math.sqrt(v) for v in coverage.variances]
    for n, sigma in enumerate(sigmas, start=1):
        if n * sigma >= 1.0 / alpha:
            return TrainingSelection([usable[i] for i in coverage.selected[:n]], sigmas[:n],
                                     f"n·σ_n = {n}·{sigma:.2f} ≥ 1/α = {1 / alpha:.1f}")
    reason = f"step cap {max_steps}" if len(sigmas) == max_steps else f"all {len(sigmas)} candidates used"
    return TrainingSelection([usable[i] for i in coverage.selected], sigmas, reason)


@dataclass
class TunedAdapter:
    path: Path | None
    selection: TrainingSelection
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0
    cancelled: bool = False

    def as_dict(self) -> dict:
        return {"steps": len(self.losses), "stop": self.selection.reason, "seconds": round(self.seconds, 2),
                "load_seconds": round(self.load_seconds, 2),
                "loss_first": round(self.losses[0], 3) if self.losses else None,
                "loss_last": round(self.losses[-1], 3) if self.losses else None,
                "sigma_last": round(self.selection.sigmas[-1], 3) if self.selection.sigmas else None,
                "cancelled": self.cancelled}


def remove_orphaned_adapters(folder: Path) -> None:
    """A question's adapter is deleted after its answer; one left by a killed process (its pid in
    the name no longer runs) is deleted here."""
    for path in folder.glob("question-*.gguf"):
        parts = path.stem.split("-")
        if len(parts) == 3 and parts[1].isdigit() and not _running(int(parts[1])):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class QuestionTuner:
    """Holds the torch training copy (loaded on first use, cached on disk) and trains one fresh
    adapter per question."""

    def __init__(self, gguf: Path, architecture: str, cache_dir: Path, spec, threads: int | None = None) -> None:
        self.gguf, self.architecture, self.cache_dir, self.spec, self.threads = (
            gguf,
            architecture,
            cache_dir,
            spec,
            threads,
        )
        self._trainer = None
        self._base_key: tuple | None = None  # the personal adapter the training copy carries
        self._lock = threading.Lock()

    def trainer(self, base: Path | None = None):
        """The trainer over the training copy, with the personal adapter `base` folded into its
        weights when one is in use (so a question's adapter is trained on top of it, as it runs)."""
        from skiff.local.lora.lora import LoraTrainer, merge_lora
        from skiff.local.lora.training_copy import load_training_copy

        key = (str(base), base.stat().st_mtime_ns) if base is not None and base.is_file() else None
        with self._lock:
            if self._trainer is None or key != self._base_key:
                copy = load_training_copy(self.gguf, self.cache_dir, threads=self.threads)
                personal = PersonalAdapter(base.parent).lora_tensors() if key is not None else None
                if personal is not None:
                    merge_lora(copy.model, *personal)
                self._trainer = LoraTrainer(copy, self.spec, self.architecture)
                self._base_key = key
            return self._trainer

    def adapt(self, selection: TrainingSelection, progress: TuningProgress | None = None,
              cancel: threading.Event | None = None, base: Path | None = None) -> TunedAdapter:
        import time

        result = TunedAdapter(None, selection)
        if not selection.chunks:
            return result
        total = len(selection.chunks)
        started = time.perf_counter()
        if progress is not None and self._trainer is None:
            progress("load", 0, total)
        trainer = self.trainer(base)
        result.load_seconds = time.perf_counter() - started
        trainer.start()
        for done, hit in enumerate(selection.chunks, start=1):
            if cancel is not None and cancel.is_set():
                result.cancelled = True
                break
            result.losses.append(trainer.step(hit.text).loss)
            if progress is not None:
                progress("step", done, total)
        result.seconds = time.perf_counter() - started
        if result.losses and not result.cancelled:
            folder = Path(self.cache_dir) / "adapters"
            folder.mkdir(parents=True, exist_ok=True)
            remove_orphaned_adapters(folder)
            result.path = trainer.write_gguf(folder / f"question-{os.getpid()}-{uuid.uuid4().hex[:12]}.gguf")
        return result
