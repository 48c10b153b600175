"""Grading answers to the notes question set (bench/data/notes_qa_dev.jsonl) by reference strings.

Normalisation, used for every comparison here (answers, references, gold files):
  - Unicode NFKC, then lowercase;
  - everything that is not a letter or a digit separates tokens (Markdown marks, punctuation,
    spaces), and a run of letters is a different token from a run of digits, so "5GB" and
    "5 GB" are both [5, gb] and "Ctrl+Shift+F", "ctrl-shift-f" and "`Ctrl` + `Shift` + `F`" are
    all [ctrl, shift, f];
  - a reference is contained when its tokens occur as consecutive whole tokens of the answer
    ("tab" is not contained in "table", "100 mb" is not in "1100 mb").

A question's answer is right when, for every group of alternatives it has (one group, or two for
questions needing two facts), some alternative is contained, and the answer does not abstain.
An abstention is an answer whose first sentence says the notes do not hold the answer (ABSTAINS).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

_TOKEN = re.compile(r"[^\W\d_]+|\d+")

# Phrasings of "the notes do not say", in the answer's first sentence. skiff's own wording is the
# first; the rest are how models say it unprompted.
ABSTAINS = re.compile(
    r"my notes don.?t say|(notes|sources|context|documents?|provided (text|information))\b[^.\n]{0,40}"
    r"\b(do(es)?n.?t|do(es)? not|never) (say|mention|contain|cover|include|specify|provide|address|answer)"
    r"|\bno (information|mention|details?)\b[^.\n]{0,40}\b(notes|sources|context|provided)"
    r"|\bnot (mentioned|covered|specified|stated|found) in (the|my|your|these) (notes|sources|context)"
    r"|\bi (could not|couldn.?t|cannot|can.?t) find\b[^.\n]{0,40}\b(notes|sources|context)",
    re.IGNORECASE,
)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


def normalise(text: str) -> str:
    return " ".join(tokens(text))


def contains(haystack: str, needle: str) -> bool:
    """Whether `needle`'s tokens occur consecutively, as whole tokens, in `haystack`."""
    wanted = normalise(needle)
    return bool(wanted) and f" {wanted} " in f" {normalise(haystack)} "


_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


def opening(answer: str) -> str:
    """The answer's first sentence (or line), at most 240 characters."""
    text = answer.strip()[:240]
    end = _SENTENCE_END.search(text)
    return text[:end.start()] if end else text


def abstains(answer: str) -> bool:
    """The answer opens by saying the notes do not hold the answer."""
    return bool(ABSTAINS.search(opening(answer)))


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    kind: str  # lookup, howto, twofact, unanswerable
    references: tuple[str, ...]
    references_2: tuple[str, ...]
    gold_file: str | None  # relative to the vault's en/ folder
    gold_section: str | None
    split: str  # dev (tune on it) or test (report on it)

    @property
    def answerable(self) -> bool:
        return self.kind != "unanswerable"

    @property
    def groups(self) -> list[tuple[str, ...]]:
        return [g for g in (self.references, self.references_2) if g]

    @classmethod
    def from_dict(cls, row: dict) -> "QAItem":
        return cls(row["id"], row["question"], row["kind"], tuple(row.get("references") or ()),
                   tuple(row.get("references_2") or ()), row.get("gold_file"), row.get("gold_section"),
                   row.get("split", "dev"))


def mentions_references(item: QAItem, answer: str) -> bool:
    """Every group of reference alternatives has one contained in the answer."""
    return bool(item.groups) and all(any(contains(answer, ref) for ref in group) for group in item.groups)


@dataclass(frozen=True)
class Grade:
    right: bool  # answerable: references contained and no abstention; unanswerable: abstained
    abstained: bool
    mentions: bool  # references contained, abstention or not


def grade(item: QAItem, answer: str) -> Grade:
    abstained = abstains(answer)
    if not item.answerable:
        return Grade(abstained, abstained, False)
    mentions = mentions_references(item, answer)
    return Grade(mentions and not abstained, abstained, mentions)


def gold_in(item: QAItem, paths: Sequence[str]) -> bool:
    """Whether the note holding the answer is among `paths` (absolute or vault-relative)."""
    if not item.gold_file:
        return False
    suffix = "/" + item.gold_file
    return any(p == item.gold_file or p.endswith(suffix) for p in paths)


def reciprocal_rank(item: QAItem, ranked_paths: Sequence[str]) -> float:
    """1/rank of the first candidate from the gold note (0 when none is)."""
    for rank, path in enumerate(ranked_paths, start=1):
        if gold_in(item, [path]):
            return 1.0 / rank
    return 0.0


def problems(item: QAItem, gold_text: str | None) -> list[str]:
    """What is wrong with one question of the set (the set's own checker, bench/check_notes_qa.py)."""
    found: list[str] = []
    if item.kind not in ("lookup", "howto", "twofact", "unanswerable"):
        found.append(f"unknown kind {item.kind!r}")
    if not item.answerable:
        if item.references or item.gold_file:
            found.append("an unanswerable question has references or a gold file")
        return found
    if gold_text is None:
        return found + [f"gold file {item.gold_file!r} not found"]
    if (item.kind == "twofact") != bool(item.references_2):
        found.append("references_2 is for two-fact questions, and they need it")
    for group in item.groups:
        if not 1 <= len(group) <= 4:
            found.append("a group holds 1 to 4 alternatives")
        for reference in group:
            if not tokens(reference):
                found.append(f"reference {reference!r} is empty once normalised")
            elif not contains(gold_text, reference):
                found.append(f"reference {reference!r} does not occur in {item.gold_file}")
            elif contains(item.question, reference):
                found.append(f"reference {reference!r} is in the question itself")
    if item.gold_section is not None and not re.search(
            r"^#+\s*" + re.escape(item.gold_section) + r"\s*$", gold_text, re.MULTILINE):
        found.append(f"gold section {item.gold_section!r} is not a heading of {item.gold_file}")
    return found
