"""How much local compute a question gets on the local+ route: plain, voting over N samples with
N scaled by difficulty, or a test-time LoRA on notes SIFT selects for it. Compute follows
difficulty, as in Snell et al. (arXiv 2408.03314).

Difficulty is where the router's score sits between the local+ threshold and the cloud one (0 at
τ_local+, 1 at τ_cloud and beyond); a question the router sent to the cloud that has to stay on
the machine (offline, no endpoint, a refusal) counts as the hardest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from skiff.assistant.voting import has_extractable_answer

Kind = Literal["plain", "vote", "lora"]


@dataclass(frozen=True)
class Allocation:
    kind: Kind
    samples: int = 1
    difficulty: float = 0.0
    reason: str = ""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "samples": self.samples, "difficulty": round(self.difficulty, 3),
                "reason": self.reason}


# A policy that does not grade difficulty (Decision.difficulty is None) gets the middle of the range.
UNGRADED = 0.5


def allocate(question: str, difficulty: float | None, has_notes: bool, min_samples: int, max_samples: int,
             cloud_unavailable: bool = False) -> Allocation:
    level = 1.0 if cloud_unavailable else UNGRADED if difficulty is None else difficulty
    if has_extractable_answer(question):
        samples = min_samples + round(level * (max_samples - min_samples))
        graded = ("hardest: the cloud cannot take it" if cloud_unavailable
                  else "the routing policy grades no difficulty; the middle assumed" if difficulty is None
                  else "between τ_local+ and τ_cloud")
        return Allocation("vote", samples, level, f"an answer that can be voted on: {samples} samples "
                                                  f"(difficulty {level:.2f}, {graded})")
    if has_notes:
        return Allocation("lora", 1, level, "notes cover it: a LoRA trained on the chunks SIFT selects")
    return Allocation("plain", 1, level, "no notes to train on and no answer to vote on")
