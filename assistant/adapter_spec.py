"""What the two LoRA adapters share: the one trained for a single question (question_adapter.py)
and the personal one trained on all the notes (personal_adapter.py, `skiff tune`)."""

from __future__ import annotations

from typing import Callable

# (stage, done, total): "load" while the training copy loads, "step" after each optimizer step.
TuningProgress = Callable[[str, int, int], None]


def lora_spec(settings):
    """The LoRA the settings ask for (question adapters and the personal adapter alike)."""
    from skiff.local.lora.lora import LoraSpec

    return LoraSpec(rank=settings.lora_rank, alpha=settings.lora_alpha, targets=tuple(settings.lora_targets),
                    learning_rate=settings.lora_learning_rate)
