"""The seam where the router decides. A policy sees the question and the retrieved notes and
returns a Decision; the pipeline records it and follows it.

Until the router issue lands, the shipped policy always answers locally; the seam is real: any
policy can be passed to the Assistant, and what it decides is what runs and what is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

from skiff.local.notes_index import Hit

Route = Literal["local", "local+", "cloud"]
ROUTES: tuple[Route, ...] = ("local", "local+", "cloud")


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str  # one line a person can read
    signals: dict = field(default_factory=dict)
    overridden: bool = False

    def as_dict(self) -> dict:
        return {"route": self.route, "reason": self.reason, "signals": self.signals, "overridden": self.overridden}


class RoutePolicy(Protocol):
    def decide(self, question: str, hits: Sequence[Hit]) -> Decision: ...


class AlwaysLocal:
    """The foundation's policy: everything is answered by the local model."""

    def decide(self, question: str, hits: Sequence[Hit]) -> Decision:
        coverage = f"{len(hits)} note chunk{'s' if len(hits) != 1 else ''} retrieved" if hits else "no notes used"
        return Decision("local", f"local model ({coverage}; difficulty routing not enabled yet)",
                        {"notes": len(hits)})
