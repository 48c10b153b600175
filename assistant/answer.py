"""An answer as skiff returns, records and shows it: its text, who wrote it, the numbered sources
it may cite, and the decision behind it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from skiff.local.notes_index import Hit
from skiff.router.policy import Decision, Route


@dataclass(frozen=True)
class Source:
    number: int  # the [n] the answer cites
    path: str
    title: str
    section: str
    line_start: int
    line_end: int
    page: int | None
    score: float  # cosine similarity to the question
    private: bool = False  # `private: true` front matter; a later cloud question withholds this answer

    @classmethod
    def numbered(cls, hits: Sequence[Hit]) -> list["Source"]:
        return [cls(n, hit.path, hit.title, hit.section, hit.line_start, hit.line_end, hit.page,
                    round(1.0 - hit.distance, 4), hit.private) for n, hit in enumerate(hits, start=1)]

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, record: dict) -> "Source":
        return cls(int(record["number"]), record["path"], record.get("title", ""), record.get("section", ""),
                   int(record.get("line_start", 1)), int(record.get("line_end", record.get("line_start", 1))),
                   record.get("page"), float(record.get("score", 0.0)), bool(record.get("private", False)))

    @property
    def location(self) -> str:
        if self.page is not None:
            return f"page {self.page}"
        if self.line_start == self.line_end:
            return f"line {self.line_start}"
        return f"lines {self.line_start}-{self.line_end}"


# A citation marker: "[3]" after a space or punctuation, not an index like a[1] nor a link [1](…).
CITATION = re.compile(r"(?<![\w\]])\[(\d{1,3})\](?!\()")


def citations_without_a_source(text: str, source_count: int) -> list[int]:
    """The [n] an answer cites that name none of its sources: a small model invents them, and the
    person would otherwise look for a source that is not there."""
    return sorted({int(n) for n in CITATION.findall(text) if not 1 <= int(n) <= source_count})


def unknown_citations_notice(text: str, source_count: int) -> str | None:
    unknown = citations_without_a_source(text, source_count)
    if not unknown:
        return None
    cited = ", ".join(f"[{n}]" for n in unknown)
    if not source_count:
        return f"the answer cites {cited}, but it was given no sources"
    verb = "is" if len(unknown) == 1 else "are"
    return f"the answer cites {cited}, which {verb} not among its {source_count} source(s)"


@dataclass
class Answer:
    id: str
    question: str
    text: str
    decision: Decision
    sources: list[Source]
    timings: dict[str, float | None]
    tokens: dict[str, int | bool]
    stop_reason: str
    model: str
    notices: list[str] = field(default_factory=list)
    answered_by: Route = "local"  # who wrote the text (a cloud decision may fall back to local)
    cost_usd: float | None = None  # cloud answers: tokens × the configured prices
    local_offered: bool = False  # a cloud stream broke mid-answer: the local model can answer instead
    pair_id: str | None = None  # set when a local and a cloud answer to this question both exist
    allocation: dict | None = None  # local+: how much local compute it got (vote, LoRA) and what came of it
    # "My notes don't say": the check's signals and verdict (assistant/abstention.py), when it ran.
    abstention: dict | None = None
    # The cascade's check of the local draft (router/draft_check.py): confidence, τ, signals, reason.
    draft_check: dict | None = None
    draft: str | None = None  # the local draft that was set aside when the check escalated it

    @classmethod
    def from_dict(cls, record: dict) -> "Answer":
        """An answer as `as_dict` wrote it (the TUI's chat history keeps them so); fields an older
        skiff did not write take their defaults."""
        return cls(record.get("id", ""), record.get("question", ""), record.get("answer", ""),
                   Decision.from_dict({"route": record.get("route", "local"), **(record.get("decision") or {})}),
                   [Source.from_dict(s) for s in record.get("sources") or ()], dict(record.get("timings") or {}),
                   dict(record.get("tokens") or {}), record.get("stop_reason", ""), record.get("model", ""),
                   list(record.get("notices") or ()), record.get("answered_by") or record.get("route", "local"),
                   record.get("cost_usd"), bool(record.get("local_offered")), record.get("pair_id"),
                   record.get("allocation"), record.get("abstention"), record.get("draft_check"),
                   record.get("draft"))

    @property
    def abstained(self) -> bool:
        return bool(self.abstention and self.abstention.get("abstained"))

    @property
    def route(self) -> Route:
        return self.decision.route

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.text,
            "route": self.route,
            "answered_by": self.answered_by,
            "decision": self.decision.as_dict(),
            "sources": [s.as_dict() for s in self.sources],
            "timings": self.timings,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "stop_reason": self.stop_reason,
            "model": self.model,
            "notices": self.notices,
            "local_offered": self.local_offered,
            "pair_id": self.pair_id,
            "allocation": self.allocation,
            "abstained": self.abstained,
            "abstention": self.abstention,
            "draft_check": self.draft_check,
            "draft": self.draft,
        }
