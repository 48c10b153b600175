"""Self-consistency: several sampled answers, the final answers pulled out of each, a majority
vote, and the share that agreed as a confidence the router can use.

Only questions with an extractable answer are voted on: a number (arithmetic, counts, amounts) or
a choice among lettered options. Free text has no reliable notion of "the same answer".
"""

from __future__ import annotations

import re
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
