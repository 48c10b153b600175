"""The personal adapter (`skiff tune`) as the Assistant owns it: training it on the indexed
notes, and putting it under the model while it still matches them.

A mixin of the Assistant (assistant/pipeline.py), which provides the attributes declared below;
kept apart because it is about a LoRA over all the notes, not about answering one question."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable

from skiff.assistant.adapter_spec import lora_spec
from skiff.assistant.personal_adapter import PersonalAdapter, PersonalStatus, tune_on_notes
from skiff.config.settings import Settings
from skiff.local.llm import LocalModel, read_model_info
from skiff.local.notes_index import NotesIndex


class Tuning:
    settings: Settings
    notes: NotesIndex
    model: LocalModel
    model_path: Path
    _model: LocalModel | None
    _index_lock: threading.Lock

    @property
    def personal(self) -> PersonalAdapter:
        return PersonalAdapter(self.settings.data_dir / "personal-adapter")

    def personal_status(self) -> PersonalStatus:
        status = self.personal.status(self.notes.fingerprint() if self.settings.index_dir.exists() else "",
                                      self._personal_key())
        return replace(status, switched_off=not self.settings.personal_adapter)

    def tune(self, progress: Callable[[int, int], None] | None = None,
             cancel: threading.Event | None = None) -> PersonalStatus:
        """Train (or resume) a LoRA on every indexed chunk; once finished it sits under every
        answer until the notes change. Cancelling keeps a checkpoint to resume from."""
        with self._index_lock:  # the notes must not change under the training
            status = tune_on_notes(self.notes, self.personal, self.model_path,
                                   read_model_info(self.model_path).architecture, self.settings, self._personal_key(),
                                   progress, cancel)
        if self._model is not None:
            self._use_personal_adapter()
        return replace(status, switched_off=not self.settings.personal_adapter)

    def _use_personal_adapter(self) -> list[str]:
        """The personal adapter goes under the model while it matches the notes (and this model and
        LoRA settings), and off when not. A broken adapter file is said, never fatal."""
        fingerprint = self.notes.fingerprint() if self.settings.index_dir.exists() else ""
        try:
            usable = self.personal.usable(fingerprint, self._personal_key()) if self.settings.personal_adapter else None
            self.model.set_base_adapter(usable)
        except (OSError, ValueError) as error:
            self.model.set_base_adapter(None)
            return [f"the personal adapter could not be used ({error}); `skiff tune` trains it again"]
        return []

    def _personal_key(self) -> str:
        from skiff.local.lora.training_copy import cache_key

        spec = lora_spec(self.settings)
        # private_paths decide which notes it may learn from: changing them makes it stale
        private = hashlib.sha256(json.dumps(sorted(self.settings.private_paths)).encode()).hexdigest()[:12]
        return f"{cache_key(self.model_path)}|r{spec.rank}|a{spec.alpha}|{','.join(spec.targets)}|p{private}"

