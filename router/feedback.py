"""Feedback: a person's good/bad on an answer becomes an observation of the quality gap.

The surrogate models y = quality(cloud) − quality(local) for a question. A verdict observes one
side of that gap, so the target is its expectation given the verdict, with the other side at the
base rate measured on the prior's data:

    answered locally,  good → p_cloud − 1      bad → p_cloud − 0
    answered by cloud, good → 1 − p_local      bad → 0 − p_local

The label always follows who actually answered, never what the router wanted: a question forced
to the cloud with --route, or sent there and answered locally for want of an endpoint, teaches
about the model that wrote the answer. A changed verdict first takes the old observation back.

Events go to SQLite first and the posterior records the last event it absorbed, in the same
atomic write as the new weights, so each event is applied exactly once even across a kill -9.
"""

from __future__ import annotations

from dataclasses import dataclass

from skiff.router.records import AnswerStore
from skiff.router.state import RouterState

VERDICTS = ("good", "bad")


class FeedbackError(ValueError):
    pass


@dataclass(frozen=True)
class FeedbackResult:
    answer_id: str
    verdict: str
    answered_by: str
    target: float | None  # None: recorded, but nothing the surrogate can learn from
    changed: bool  # False when the same verdict was already standing
    message: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def feedback_target(verdict: str, answered_by: str, p_local: float, p_cloud: float) -> float:
    good = 1.0 if verdict == "good" else 0.0
    if answered_by == "cloud":
        return good - p_local
    return p_cloud - good


def sync(records: AnswerStore, state: RouterState) -> int:
    """Absorb every feedback event the posterior has not seen yet; returns how many."""
    pending = records.feedback_events_after(state.last_feedback_event())
    observations = []
    for _seq, answer_id, target, weight in pending:
        features = records.features(answer_id)
        if features is not None:
            observations.append((features, target, weight))
    if pending:
        state.learn(observations, pending[-1][0])
    return len(pending)


def give_feedback(records: AnswerStore, state: RouterState, verdict: str, answer_id: str | None = None) -> FeedbackResult:
    if verdict not in VERDICTS:
        raise FeedbackError(f"feedback is 'good' or 'bad', not {verdict!r}")
    answer_id = answer_id or records.latest_answer_id()
    if answer_id is None:
        raise FeedbackError("no answers yet: ask something first")
    answer = records.get(answer_id)
    if answer is None:
        raise FeedbackError(f"no answer with id {answer_id!r}")
    answered_by = answer.get("answered_by") or answer["route"]
    standing = records.verdict(answer_id)
    if standing is not None and standing[0] == verdict:
        return FeedbackResult(answer_id, verdict, answered_by, standing[1], False,
                              f"already marked {verdict}; nothing changed")
    features = records.features(answer_id)
    meta = state.surrogate().meta
    target = feedback_target(verdict, answered_by, meta["weak_accuracy"], meta["strong_accuracy"])
    events = []
    if standing is not None:
        events.append((answer_id, standing[0], answered_by, standing[1], -1.0))
    events.append((answer_id, verdict, answered_by, target, 1.0))
    records.add_feedback_events(events)
    sync(records, state)
    if features is None:
        return FeedbackResult(answer_id, verdict, answered_by, None, True,
                              f"marked {verdict}; this answer was not routed, so the router has nothing to learn")
    change = f" (was {standing[0]})" if standing else ""
    return FeedbackResult(answer_id, verdict, answered_by, round(target, 4), True,
                          f"marked {verdict}{change}; the router learned that the {answered_by} answer was {verdict}")
