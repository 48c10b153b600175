"""`skiff tune`: a personal adapter, a LoRA trained on the whole notes index (one step per chunk,
in a fixed shuffled order; private notes left out), used under every answer until the notes change.

Training is resumable: every `checkpoint_every` steps the adapter, the optimizer and the position
are saved together (written to a temporary file and renamed, so a kill -9 leaves the previous
checkpoint whole); a later run with the same notes carries on from there. When the notes change
(their fingerprint: each indexed file's path and content hash), a finished adapter is no longer
used and the next `skiff tune` starts afresh.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


@dataclass(frozen=True)
class PersonalStatus:
    state: str  # "none", "partial", "ready" or "stale"
    steps_done: int = 0
    steps_total: int = 0
    fingerprint: str | None = None
    private_left_out: int = 0  # chunks of private notes it never saw
    switched_off: bool = False  # `personal_adapter = false`: kept, but answers go without it

    def describe(self) -> str:
        left_out = (f"; {self.private_left_out} chunk(s) of private notes left out"
                    if self.private_left_out else "")
        return {"none": "no personal adapter (run `skiff tune`)",
                "partial": f"trained {self.steps_done}/{self.steps_total} steps{left_out}; `skiff tune` resumes",
                "ready": (f"trained ({self.steps_total} steps) but not used: personal_adapter = false"
                          if self.switched_off else
                          f"in use under every answer ({self.steps_total} steps over your notes{left_out})"),
                "stale": "your notes or private_paths changed since it was trained; not used "
                         "(`skiff tune` trains it again)",
                }[self.state]


class PersonalAdapter:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.checkpoint_path = self.folder / "checkpoint.pt"
        self.adapter_path = self.folder / "personal.gguf"
        self.state_path = self.folder / "state.json"

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self, state: dict) -> None:
        tmp = self.state_path.with_name(f"state.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def status(self, fingerprint: str, model_key: str = "") -> PersonalStatus:
        """`model_key` names the model and LoRA settings: an adapter made for others is stale too."""
        state = self._state()
        if state is None:
            return PersonalStatus("none")
        if state["fingerprint"] != fingerprint or state.get("model_key", "") != model_key:
            return PersonalStatus("stale", state["steps_done"], state["steps_total"], state["fingerprint"])
        left_out = state.get("private_left_out", 0)
        if state.get("finished") and self.adapter_path.is_file():
            return PersonalStatus("ready", state["steps_done"], state["steps_total"], fingerprint, left_out)
        return PersonalStatus("partial", state["steps_done"], state["steps_total"], fingerprint, left_out)

    def usable(self, fingerprint: str, model_key: str = "") -> Path | None:
        """The adapter to put under every answer, if it was trained on exactly these notes for
        this model."""
        return self.adapter_path if self.status(fingerprint, model_key).state == "ready" else None

    def lora_tensors(self) -> tuple[dict, float, int] | None:
        """The finished adapter as (tensors, alpha, rank), to train a question's adapter on top."""
        import torch

        state = self._state()
        if state is None or not state.get("finished") or not self.checkpoint_path.is_file():
            return None
        saved = torch.load(self.checkpoint_path, weights_only=False)
        return saved["tensors"], state["alpha"], state["rank"]

    def forget(self) -> None:
        for path in (self.state_path, self.checkpoint_path, self.adapter_path):
            path.unlink(missing_ok=True)

    def train(self, trainer, chunks: Sequence[str], fingerprint: str, model_key: str = "",
              progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
              checkpoint_every: int = 25, private_left_out: int = 0) -> PersonalStatus:
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in [*self.folder.glob("checkpoint.pt.tmp*"), *self.folder.glob("state.json.tmp*")]:
            leftover.unlink(missing_ok=True)  # a run killed mid-save; the files it replaces are whole
        total = len(chunks)
        order = list(range(total))
        random.Random(0).shuffle(order)
        position = 0
        state = self._state()
        resumable = (state is not None and state["fingerprint"] == fingerprint and not state.get("finished")
                     and state.get("model_key", "") == model_key and state["steps_total"] == total
                     and self.checkpoint_path.is_file())
        if resumable:
            saved = torch.load(self.checkpoint_path, weights_only=False)
            trainer.restore(saved["trainer"])
            position = saved["position"]
        else:
            self.forget()
            trainer.start()

        def save(finished: bool) -> None:
            tmp = self.checkpoint_path.with_name(f"checkpoint.pt.tmp{os.getpid()}")
            torch.save({"trainer": trainer.checkpoint(), "position": position,
                        "tensors": trainer.lora_tensors() if finished else None}, tmp)
            os.replace(tmp, self.checkpoint_path)
            if finished:
                trainer.write_gguf(self.adapter_path)
            self._write_state({"fingerprint": fingerprint, "model_key": model_key, "steps_done": position,
                               "steps_total": total, "private_left_out": private_left_out,
                               "finished": finished, "alpha": trainer.spec.alpha, "rank": trainer.spec.rank,
                               "updated_at": time.time()})

        if progress is not None:
            progress(position, total)
        while position < total:
            if cancel is not None and cancel.is_set():
                save(finished=False)
                return self.status(fingerprint, model_key)
            trainer.step(chunks[order[position]])
            position += 1
            if progress is not None:
                progress(position, total)
            if position % checkpoint_every == 0 and position < total:
                save(finished=False)
        save(finished=True)
        return self.status(fingerprint, model_key)


def tune_on_notes(notes, personal: PersonalAdapter, gguf: Path, architecture: str, settings, model_key: str,
                  progress: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None) -> PersonalStatus:
    """Train (or resume) the personal adapter over every chunk in `notes` (a NotesIndex) that is not
    from a private note. Private notes are left out because what the adapter learns shows up in
    answers that cite no private source, and such an answer may later go to the cloud as chat
    history. `model_key` must name `settings.private_paths`, so changing them makes the adapter stale."""
    from skiff.local.lora.lora import LoraTrainer
    from skiff.local.lora.training_copy import load_training_copy
    from skiff.assistant.privacy import is_private_path
    from skiff.assistant.adapter_spec import lora_spec

    chunks, private_left_out = [], 0
    for chunk in notes.chunk_texts():
        if chunk.private or is_private_path(chunk.path, settings.private_paths):
            private_left_out += 1
        else:
            chunks.append(chunk.text)
    if not chunks:
        raise ValueError("every indexed note is private, so there is nothing to tune on" if private_left_out
                         else "nothing is indexed yet: run `skiff index FOLDER` first")
    fingerprint = notes.fingerprint()
    if personal.status(fingerprint, model_key).state == "ready":
        return personal.status(fingerprint, model_key)
    copy = load_training_copy(gguf, settings.cache_dir, threads=settings.n_threads)
    trainer = LoraTrainer(copy, lora_spec(settings), architecture)
    return personal.train(trainer, chunks, fingerprint, model_key, progress, cancel,
                          checkpoint_every=settings.tune_checkpoint_steps, private_left_out=private_left_out)
