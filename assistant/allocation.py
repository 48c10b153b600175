"""How much local compute a question gets on the local+ route, and which kind.

Three ways to spend it, each measured on the model's own answers (bench/local_plus_report.py):

    vote      samples decoded together beside the draft, then a vote: the majority number or letter,
              or, for free text from notes, the answer most like the others
    context   the note chunks SIFT selects for the question added to the prompt (a question the notes
              answer)
    lora      a test-time LoRA trained on those chunks, the answer written with it attached

The measured table for a model (router/priors/local_plus--MODEL.json) gives, per kind of question
and per stratum of the draft check (unsure or not), each method's gain in accuracy over the greedy
answer with its 95% interval, and its time. By default only the methods measured to pay there
are used, the most gain per second first: compute follows measured difficulty and measured gain
(Snell et al., arXiv 2408.03314), not a guess. `local_plus_methods` switches methods on by hand;
a person who asks for more local compute gets the best measured method even where it did not pay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal, Sequence

from skiff.assistant.voting import has_extractable_answer

Kind = Literal["plain", "vote", "context", "lora"]
METHODS = ("vote", "context", "lora")
QuestionKind = Literal["number", "notes", "general"]


@dataclass(frozen=True)
class Measured:
    """One method's measured effect on one kind of question in one stratum."""

    method: str
    samples: int
    gain: float  # accuracy over greedy, paired on the same questions
    low: float  # its 95% bootstrap interval
    high: float
    time_ratio: float | None  # (draft + method) / greedy
    n: int
    pays: bool

    @property
    def gain_per_time(self) -> float:
        """Gain for each greedy answer's worth of extra time it costs (what the allocation orders by)."""
        return self.gain / max((self.time_ratio or 2.0) - 1.0, 0.05)

    def describe(self) -> str:
        ratio = f" at {self.time_ratio:.1f}× greedy's time" if self.time_ratio else ""
        return f"measured {100 * self.gain:+.0f} points [{100 * self.low:+.0f}, {100 * self.high:+.0f}] " \
               f"over {self.n} questions{ratio}"


@dataclass(frozen=True)
class Allocation:
    kind: Kind
    samples: int = 1
    difficulty: float = 0.0
    reason: str = ""
    measured: Measured | None = field(default=None, compare=False)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "samples": self.samples, "difficulty": round(self.difficulty, 3),
                "reason": self.reason}


def table_path(model_file: str) -> Path:
    return Path(str(files("skiff.router").joinpath("priors", f"local_plus--{Path(model_file).stem}.json")))


@lru_cache(maxsize=8)
def measured_table(model_file: str) -> dict:
    """The shipped measurements for a model, {kind: {stratum: [Measured, ...]}}; empty when it
    was never measured."""
    try:
        raw = json.loads(table_path(model_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {kind: {stratum: [Measured(**entry) for entry in entries] for stratum, entries in strata.items()}
            for kind, strata in raw.get("kinds", {}).items()}


def question_kind(question: str, has_notes: bool) -> QuestionKind:
    if has_extractable_answer(question):
        return "number"
    return "notes" if has_notes else "general"


def applies(method: str, kind: QuestionKind) -> bool:
    """A vote takes numbers and letters, and free text from notes (by consensus); more notes and a
    LoRA need notes."""
    return method == "vote" if kind == "number" else kind == "notes" and method in METHODS


def allocate(question: str, has_notes: bool, unsure: bool, measured: dict, switched_on: Sequence[str] | None,
             asked_for: bool, difficulty: float = 0.0, vote_samples: tuple[int, int] = (3, 8)) -> Allocation:
    """The method for this question. `unsure`: the draft check's verdict on its draft (the stratum);
    `switched_on`: the person's methods, or None for those measured to pay; `asked_for`: the person
    asked for more local compute (the best measured method then, even one that did not pay). A method
    switched on by hand acts on unsure drafts and when asked for; a confident draft gets only
    what was measured to pay on confident drafts."""
    kind = question_kind(question, has_notes)
    stratum = "flagged" if unsure else "not flagged"
    found = [m for m in measured.get(kind, {}).get(stratum, []) if applies(m.method, kind)]
    if switched_on is not None:
        found = [m for m in found if m.method in switched_on]
    paying = sorted((m for m in found if m.pays), key=lambda m: -m.gain_per_time)
    where = f"{'unsure' if unsure else 'confident'} drafts of {kind} questions"
    if paying:
        return _chosen(paying[0], difficulty, f"{_label(paying[0])}: {paying[0].describe()} on {where}")
    if switched_on is not None and (unsure or asked_for):
        unmeasured = [name for name in switched_on if applies(name, kind) and name not in {m.method for m in found}]
        best = max(found, key=lambda m: m.gain, default=None)
        if unmeasured or best is not None:
            if best is not None:
                return _chosen(best, difficulty, f"{_label(best)}, switched on by you ({best.describe()} on {where})")
            samples = vote_samples[0] + round(difficulty * (vote_samples[1] - vote_samples[0]))
            return Allocation(unmeasured[0], samples if unmeasured[0] == "vote" else 1, difficulty,
                              f"{unmeasured[0]}, switched on by you (not measured on {where})")
    if asked_for:
        best = max(found, key=lambda m: m.gain, default=None)
        if best is not None:
            return _chosen(best, difficulty, f"{_label(best)}, as you asked ({best.describe()} on {where}: "
                                             "not enough to use it unasked)")
        fallback = {"number": "vote", "notes": "context"}.get(kind)
        if fallback is not None:
            return Allocation(fallback, vote_samples[0] if fallback == "vote" else 1, difficulty,
                              f"{fallback}, as you asked (not measured on {where})")
    best = max(found, key=lambda m: m.gain, default=None)
    why = f"best measured: {_label(best)}, {best.describe()}" if best else "none measured"
    return Allocation("plain", 1, difficulty, f"no local+ method pays on {where} ({why}); the draft stands")


def _chosen(measured: Measured, difficulty: float, reason: str) -> Allocation:
    return Allocation(measured.method, measured.samples, difficulty, reason, measured)  # type: ignore[arg-type]


def _label(measured: Measured) -> str:
    return {"vote": f"a vote of the draft and {measured.samples - 1} samples",
            "context": "more notes in context (SIFT's picks)",
            "lora": "a test-time LoRA on SIFT's picks"}.get(measured.method, measured.method)
