"""Self-consistency: several sampled answers, the final answers pulled out of each, a majority
vote, and the share that agreed as a confidence the router can use.

A number (arithmetic, counts, amounts) or a choice among lettered options is pulled out of each
answer and the majority wins. Free text (an answer from notes) has no exact notion of "the same
answer": there the answer most like the others wins (`consensus_vote`, by shared words).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

_OPTION = re.compile(r"(?m)^\s*\(?([A-Ea-e])[).:]\s+\S")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_NUMERIC_QUESTION = re.compile(
    r"\b(?:how (?:many|much|long|far|old)|calculate|compute|total|sum|difference|product|percent|average|"
    r"per cent|remain(?:s|ing)?|left over|in all|altogether|plus|minus|times|divided by|multiplied by)\b"
    r"|\bwhat is -?\d|\d\s*[+*/×÷^]\s*\d|\d\s+-\s+\d", re.IGNORECASE)  # "2024-05-01" is a date, not a sum


def lettered_options(question: str) -> list[str]:
    return [letter.upper() for letter in _OPTION.findall(question)]


def has_extractable_answer(question: str) -> bool:
    """A lettered choice (two or more options) or a question whose answer is a number."""
    if len(set(lettered_options(question))) >= 2:
        return True
    return bool(_NUMERIC_QUESTION.search(question)) and bool(re.search(r"\d", question))


def _number(text: str) -> str | None:
    cleaned = text.replace("$", "").replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else f"{value:g}"


def extract_answer(text: str, options: Sequence[str] = ()) -> str | None:
    """The final answer a sampled response commits to, normalised ("42", "B"), or None."""
    text = re.sub(r"\[\d+\]", " ", text)  # citation markers [n] are not answers
    if options:
        # Only the word is case-insensitive: "answer a few points" must not read as option A.
        stated = [m for m in re.findall(r"(?i:answer)\s*(?:is|:)?\s*[*(]*([A-E])\b", text) if m in options]
        if stated:
            return stated[-1]
        bare = [m for m in re.findall(r"\(([A-E])\)", text) if m in options]
        return bare[-1] if bare else None
    marked = re.search(r"####\s*(" + _NUMBER.pattern + ")", text)
    if marked:
        return _number(marked.group(1))
    stated = re.findall(r"answer\s*(?:is|:|=)\s*\**\s*(" + _NUMBER.pattern + ")", text, re.IGNORECASE)
    if stated:
        return _number(stated[-1])
    numbers = _NUMBER.findall(text)
    return _number(numbers[-1]) if numbers else None


@dataclass(frozen=True)
class Vote:
    answer: str | None  # the majority's answer; None when no sample gave one
    count: int  # samples that gave it
    samples: int
    chosen: int  # index of the sample shown (the first that gave the majority answer)
    answers: tuple[str | None, ...]

    @property
    def agreement(self) -> float:
        return self.count / self.samples if self.samples else 0.0

    def as_dict(self) -> dict:
        return {"answer": self.answer, "agreement": round(self.agreement, 3), "count": self.count,
                "samples": self.samples, "answers": list(self.answers)}


def majority_vote(texts: Sequence[str], options: Sequence[str] = ()) -> Vote:
    answers = tuple(extract_answer(text, options) for text in texts)
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote(None, 0, len(texts), 0, answers)
    # Ties go to the answer seen first: the earlier sample is as good a tie-break as any, and stable.
    best = max(counts.values())
    answer = next(a for a in answers if a is not None and counts[a] == best)
    return Vote(answer, best, len(texts), answers.index(answer), answers)


_WORD = re.compile(r"[^\W\d_]+|\d+")
AGREE_AT = 0.5  # token F1 at which two free-text answers count as saying the same


def _words(text: str) -> Counter:
    text = re.sub(r"\[\d+\]", " ", text)  # citation markers say where, not what
    return Counter(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


def _f1(a: Counter, b: Counter) -> float:
    shared = sum((a & b).values())
    return 0.0 if not shared else 2 * shared / (sum(a.values()) + sum(b.values()))


def consensus_vote(texts: Sequence[str]) -> Vote:
    """The free-text answer with the most words in common with the others (mean token F1): a
    vote among answers that cannot be pulled out as a number or a letter. Ties go to the first
    (the draft, when it leads the list); `count` is how many answers share at least half their
    words with the chosen one (itself included)."""
    if not texts:
        return Vote(None, 0, 0, 0, ())
    bags = [_words(text) for text in texts]
    if len(bags) == 1:
        return Vote("the draft", 1, 1, 0, ("the draft",))
    scores = [sum(_f1(bag, other) for j, other in enumerate(bags) if j != i) / (len(bags) - 1)
              for i, bag in enumerate(bags)]
    chosen = max(range(len(texts)), key=lambda i: (scores[i], -i))
    names = tuple("the draft" if i == 0 else f"sample {i}" for i in range(len(texts)))
    count = sum(1 for i, bag in enumerate(bags) if i == chosen or _f1(bag, bags[chosen]) >= AGREE_AT)
    return Vote(names[chosen], count, len(texts), chosen, names)
