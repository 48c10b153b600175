""""My notes don't say": deciding, before the model writes, that the notes do not hold the answer.

A small model given unrelated chunks answers from them anyway, confidently and wrongly; asked in
its prompt to admit when the notes lack the answer, it admits it for answerable questions too
(Qwen2.5-0.5B did so for three answerable questions in four on the notes benchmark). So skiff
decides itself, from how well the retrieved notes support the question:

- best_similarity: the cosine similarity of the nearest chunk (dense retrieval's own confidence);
- covered: the share of the question's words, weighted by their rarity in the notes (IDF), that
  the chunks given to the model hold. A question about "Docker" or "YubiKey" whose words appear
  nowhere in the notes is not covered, however close its vector lands;
- rarest_missing: the IDF of the rarest question word the chunks lack (a word absent from every
  note has the highest IDF there is);
- coverage: SIFT's posterior variance σ² left by the chunks (0 = pinned down, 1 = unrelated);
- model_says_yes: the local model's own log-odds of "yes" against "no" when asked whether the
  notes in its prompt contain the answer. The check's prompt is the answer's prompt with the
  check appended to the question, so llama.cpp evaluates the notes once for both and the check
  costs only a few dozen tokens.

A logistic regression over these (fitted on the notes benchmark's dev split by
`bench/notes_qa.py fit-abstention`; the numbers are below) gives the probability that the notes do
not say; above `abstain_threshold` skiff says so first, then lets the model answer from general
knowledge, marked as such.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Protocol, Sequence

import numpy as np

from skiff.local.lexical import TermStats
from skiff.local.notes_index import Hit

# Fitted by `bench/notes_qa.py fit-abstention bench/out/notes_qa/signals--qwen2.5-coder-1.5b--k5.jsonl
# --false-abstention 0.05` on the dev split (171 questions, 22 unanswerable) with the default model
# and retrieval; standardised features. The model's own check carries the most weight.
FEATURES = ("best_similarity", "covered", "rarest_missing", "coverage", "model_says_yes")
MEANS = np.array([0.6291, 0.6369, 5.7294, 0.5075, 1.1994])
SCALES = np.array([0.0943, 0.1891, 2.316, 0.112, 0.8053])
WEIGHTS = np.array([-0.7147, -0.2291, -0.5019, -0.1988, -1.0175])
BIAS = -2.4419
# The threshold is chosen by what abstaining costs, not by how often it fires: saying "my notes
# don't say" for a question the model would have answered wrongly loses nothing. `fit-abstention
# --answers dev--qwen15--hybrid--k5 ... --accuracy-drop 0.015` places it where dev loses at most
# 1.5 points of answerable accuracy (it lost 1 right answer of 149) and says so for 11 of dev's 22
# unanswerable questions. Capping false abstention at 5% instead said so for 7.
DEFAULT_THRESHOLD = 0.2575
# The model whose yes/no the weights were fitted on (its GGUF file name).
FITTED_FOR = "qwen2.5-coder-1.5b-instruct.gguf"


def check_applies(setting: bool | None, model_file: str) -> bool:
    """Whether to run the notes check: as set, or when unset, with the model it was fitted for."""
    return setting if setting is not None else model_file == FITTED_FOR

NOTES_DONT_SAY = "My notes don't say."


CHECK = "Do the notes above contain the answer to this question? Reply with yes or no."
_YES = ("Yes", "yes", " Yes", " yes", "YES")
_NO = ("No", "no", " No", " no", "NO")


class TermStatistics(Protocol):
    def term_stats(self, question: str, chunk_ids: list[str]) -> tuple[int, list[TermStats]]: ...


class CheckingModel(Protocol):
    def render(self, messages: Sequence[dict]) -> str: ...

    def tokenize_prompt(self, prompt: str) -> list[int]: ...

    def next_token_logprobs(self, prompt_tokens: Sequence[int]) -> np.ndarray: ...

    def token_ids(self, texts: Sequence[str]) -> list[int]: ...


def model_says_yes(model: CheckingModel, messages: Sequence[dict]) -> float:
    """log P(yes) − log P(no) for the check, asked after the answer's own prompt `messages`."""
    checking = [*messages[:-1], {**messages[-1], "content": f"{messages[-1]['content']}\n\n{CHECK}"}]
    logprobs = model.next_token_logprobs(model.tokenize_prompt(model.render(checking)))
    yes, no = logprobs[model.token_ids(_YES)], logprobs[model.token_ids(_NO)]
    return float(np.logaddexp.reduce(yes) - np.logaddexp.reduce(no))


@dataclass(frozen=True)
class Support:
    """How well the retrieved notes support answering a question (the module's note says why)."""

    best_similarity: float
    covered: float
    rarest_missing: float
    coverage: float
    model_says_yes: float = 0.0

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in FEATURES], dtype=np.float64)

    def as_dict(self) -> dict:
        return {name: round(value, 4) for name, value in asdict(self).items()}


def idf(documents: int, total: int) -> float:
    return math.log((total + 1) / (documents + 0.5))


def measure_support(notes: TermStatistics, question: str, selected: Sequence[Hit], candidates: Sequence[Hit],
                    coverage: float | None) -> Support:
    total, stats = notes.term_stats(question, [hit.id for hit in selected])
    weights = [idf(term.documents, total) for term in stats]
    held = sum(w for w, term in zip(weights, stats) if term.in_context)
    missing = [w for w, term in zip(weights, stats) if not term.in_context]
    best = max((1.0 - hit.distance for hit in candidates), default=0.0)
    return Support(best_similarity=best, covered=held / sum(weights) if weights else 0.0,
                   rarest_missing=max(missing, default=0.0), coverage=1.0 if coverage is None else coverage)


def probability_unsupported(support: Support) -> float:
    """The fitted probability that the notes do not hold the answer."""
    z = float(((support.vector() - MEANS) / SCALES) @ WEIGHTS + BIAS)
    return 1.0 / (1.0 + math.exp(-z))


class NotesCheck:
    """Asked by the answer pipeline with the planned prompt: do its notes hold the answer? Keeps
    what it measured, for the answer's record."""

    def __init__(self, notes: TermStatistics, model: CheckingModel, question: str, candidates: Sequence[Hit],
                 coverage: float | None, threshold: float) -> None:
        self.notes, self.model, self.question = notes, model, question
        self.candidates, self.coverage, self.threshold = candidates, coverage, threshold
        self.outcome: dict | None = None

    def __call__(self, plan) -> bool:
        support = measure_support(self.notes, self.question, plan.notes, self.candidates, self.coverage)
        support = replace(support, model_says_yes=model_says_yes(self.model, plan.messages))
        probability = probability_unsupported(support)
        self.outcome = {"abstained": probability > self.threshold, "probability": round(probability, 4),
                        "threshold": self.threshold, **support.as_dict()}
        return not self.outcome["abstained"]
