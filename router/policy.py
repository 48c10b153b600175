"""The seam where the router decides. A policy sees the question (its text, its embedding, the
note chunks SIFT selected and the coverage σ² they leave) and returns a Decision; the pipeline
records it and follows it. skiff's own policy is router/uncertainty.py; any other can be passed
to the Assistant (tests do), and what it decides is what runs and what is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import numpy as np

from skiff.local.notes_index import Hit

def json_number(value: float | None, digits: int = 4) -> float | None:
    """A number as records and `--json` carry it: rounded, and None for τ = ±∞ (a share of 0 or 1),
    which JSON cannot hold."""
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


Route = Literal["local", "local+", "cloud"]
ROUTES: tuple[Route, ...] = ("local", "local+", "cloud")


@dataclass(frozen=True)
class QuestionWithNotes:
    """A question with the notes retrieved for it: what the router decides from."""

    text: str
    embedding: np.ndarray | None  # unit vector; None when the embedder was not needed
    hits: Sequence[Hit]  # the context SIFT selected, in the order it picked them
    coverage: float | None  # σ²(x*|S): 0 = the notes pin the question down, 1 = they say nothing; None = notes not used
    candidates: Sequence[Hit] = ()  # the index's nearest chunks that SIFT chose from (with embeddings)


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str  # one line a person can read
    signals: dict = field(default_factory=dict)
    overridden: bool = False
    router_route: Route | None = None  # what the router itself chose, when a person overrode it
    # How hard the policy judges the question on its own scale: 0 at the local+ threshold, 1 at the
    # cloud one and beyond. None when the policy does not grade difficulty (local+ then says so).
    difficulty: float | None = None
    # φ(x) as the surrogate saw it: kept with the record so feedback trains on exactly this.
    features: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"route": self.route, "reason": self.reason, "signals": self.signals,
                "overridden": self.overridden, "router_route": self.router_route or self.route,
                "difficulty": self.difficulty}

    @classmethod
    def from_dict(cls, record: dict) -> "Decision":
        return cls(record.get("route", "local"), record.get("reason", ""), dict(record.get("signals") or {}),
                   bool(record.get("overridden")), record.get("router_route"), record.get("difficulty"))

    def overridden_to(self, route: Route) -> "Decision":
        return Decision(route, f"{route} by request (router said {self.route}: {self.reason})",
                        self.signals, overridden=True, router_route=self.route, difficulty=self.difficulty,
                        features=self.features)


class RoutePolicy(Protocol):
    def decide(self, consulted: QuestionWithNotes) -> Decision: ...


class AlwaysLocal:
    """Everything answered by the local model (for a library user who wants no routing)."""

    def decide(self, consulted: QuestionWithNotes) -> Decision:
        hits = consulted.hits
        coverage = f"{len(hits)} note chunk{'s' if len(hits) != 1 else ''} retrieved" if hits else "no notes used"
        return Decision("local", f"local model ({coverage}; routing turned off)", {"notes": len(hits)})
