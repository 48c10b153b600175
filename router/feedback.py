"""Feedback: a person's good/bad on an answer becomes an observation of the quality gap.

The surrogate models y = quality(cloud) − quality(local) for a question. A verdict on one answer
observes one side of that gap, so the target is its expectation given the verdict, with the
other side at the base rate measured on the prior's data:

    answered locally,  good → p_cloud − 1      bad → p_cloud − 0
    answered by cloud, good → 1 − p_local      bad → 0 − p_local

When both models answered the same question (`skiff ask --compare`, or a question asked again
with --route) and both answers have verdicts, the gap is observed exactly,
y = good(cloud) − good(local), and that one observation replaces the two one-sided ones.

The label always follows who actually answered, never what the router wanted: a question forced
to the cloud with --route, or sent there and answered locally for want of an endpoint, teaches
about the model that wrote the answer.

What the surrogate should hold follows from the standing verdicts alone; every change writes the
difference (retractions at weight −1, additions at +1) to SQLite together with the verdict, and
the posterior records the last event it absorbed in the same atomic write as the new weights, so
each event is applied exactly once even across a kill -9.
"""

from __future__ import annotations

from dataclasses import dataclass

from skiff.router.draft_check import DraftCheck
from skiff.router.records import AnswerStore, ObservationKey
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
    absorbed = state.last_feedback_event()
    if records.last_feedback_event() < absorbed:
        records.number_events_after(absorbed)  # the log was started afresh (a damaged file)
    pending = records.feedback_events_after(absorbed)
    observations = []
    for _seq, answer_id, target, weight in pending:
        features = records.features(answer_id)
        if features is not None:
            observations.append((features, target, weight))
    if pending:
        state.learn(observations, pending[-1][0])
    return len(pending)


def sync_draft_check(records: AnswerStore, check: DraftCheck) -> int:
    """Absorb every feedback event this model's draft check has not seen yet; returns how many.

    A verdict on a local answer whose draft the check read is one observation of whether that
    draft was right (good 1, bad 0), on ψ exactly as the check saw it (split evenly over its
    readings, early and final). A verdict on a cloud answer
    says nothing about the draft it replaced, nor does one on a local+ answer that replaced its
    draft (a vote's winner, an answer with more notes or a LoRA), and a pair (both models judged)
    teaches the first stage only, so none of these moves the check."""
    posterior = check.posterior
    absorbed = posterior.last_feedback_event()
    if records.last_feedback_event() < absorbed:
        records.number_events_after(absorbed)
    pending = records.verdict_events_after(absorbed)
    observations = []
    dim = check.feature_map().dim
    for _seq, answer_id, kind, verdict, answered_by, weight in pending:
        if kind != "single" or answered_by != "local" or records.draft_replaced(answer_id):
            continue
        readings = records.draft_features(answer_id, check.model_file)
        # A draft read by an older check's signals cannot teach this one: its verdict is skipped.
        if readings is not None and readings.shape[1] == dim:
            # One verdict, however many readings: each counts for its share of it.
            observations += [(psi, 1.0 if verdict == "good" else 0.0, weight / len(readings)) for psi in readings]
    if pending:
        posterior.learn(observations, pending[-1][0])
    return len(pending)


def desired_observations(records: AnswerStore, answer_ids: list[str], verdicts: dict[str, str],
                         p_local: float, p_cloud: float) -> set[ObservationKey]:
    """What the surrogate should hold about these answers (an answer and its pair partner)."""
    by = {answer_id: _answered_by(records, answer_id) for answer_id in answer_ids}
    judged = [a for a in answer_ids if a in verdicts]
    if len(answer_ids) == 2 and len(judged) == 2 and {by[a] for a in answer_ids} == {"local", "cloud"}:
        cloud = next(a for a in answer_ids if by[a] == "cloud")
        local = next(a for a in answer_ids if by[a] == "local")
        gap = float(verdicts[cloud] == "good") - float(verdicts[local] == "good")
        return {(cloud, "pair", verdicts[cloud], "pair", gap)}
    return {(a, "single", verdicts[a], by[a], feedback_target(verdicts[a], by[a], p_local, p_cloud)) for a in judged}


def _answered_by(records: AnswerStore, answer_id: str) -> str:
    answer = records.get(answer_id) or {}
    return answer.get("answered_by") or answer.get("route") or "local"


def give_feedback(records: AnswerStore, state: RouterState, verdict: str, answer_id: str | None = None,
                  draft_check: DraftCheck | None = None) -> FeedbackResult:
    if verdict not in VERDICTS:
        raise FeedbackError(f"feedback is 'good' or 'bad', not {verdict!r}")
    answer_id = answer_id or records.latest_answer_id()
    if answer_id is None:
        raise FeedbackError("no answers yet: ask something first")
    if records.get(answer_id) is None:
        raise FeedbackError(f"no answer with id {answer_id!r}")
    answered_by = _answered_by(records, answer_id)
    standing = records.verdict(answer_id)
    if standing == verdict:
        return FeedbackResult(
            answer_id, verdict, answered_by, None, False, f"already marked {verdict}; nothing changed"
        )

    partner = records.partner(answer_id)
    involved = [answer_id] + ([partner] if partner else [])
    verdicts = {a: v for a in involved if (v := records.verdict(a)) is not None}
    verdicts[answer_id] = verdict
    meta = state.surrogate().meta
    desired = desired_observations(records, involved, verdicts, meta["weak_accuracy"], meta["strong_accuracy"])
    applied = records.applied_observations(involved, state.forgotten_through_event())
    events = [(*key, -weight) for key, weight in applied.items() if key not in desired]
    events += [
        (*key, 1.0 - applied.get(key, 0.0)) for key in sorted(desired) if abs(applied.get(key, 0.0) - 1.0) > 1e-9
    ]
    records.record_verdict(answer_id, verdict, events)
    sync(records, state)
    if draft_check is not None:
        sync_draft_check(records, draft_check)

    change = f" (was {standing})" if standing else ""
    if records.features(answer_id) is None:
        return FeedbackResult(
            answer_id,
            verdict,
            answered_by,
            None,
            True,
            f"marked {verdict}{change}; this answer was not routed, so the router has nothing to learn",
        )
    pair = next((key for key in desired if key[1] == "pair"), None)
    if pair is not None:
        return FeedbackResult(answer_id, verdict, answered_by, round(pair[4], 4), True,
                              f"marked {verdict}{change}; with both answers judged, the router learned the gap "
                              f"between cloud and local on this question exactly ({pair[4]:+.0f})")
    target = next(key[4] for key in desired if key[0] == answer_id)
    checked = (draft_check is not None and answered_by == "local"
               and records.draft_features(answer_id, draft_check.model_file) is not None)
    also = "; the draft check learned whether to trust drafts like it" if checked else ""
    return FeedbackResult(answer_id, verdict, answered_by, round(target, 4), True,
                          f"marked {verdict}{change}; the router learned that the {answered_by} answer was "
                          f"{verdict}{also}")
