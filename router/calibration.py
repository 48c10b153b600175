"""Calibration and statistics of the router: what `skiff router calibrate` and `skiff router stats` run.

Thresholds are quantiles of the scores of the person's most recent questions, rescored under
today's posterior, so that a target share of them would go to the cloud. They follow that share
on their own: every RECALIBRATE_EVERY decisions they are recomputed (feedback moves the scores,
and a fixed τ would drift away from the share the person chose). Before there are
MIN_RECENT_FOR_CALIBRATION questions, a shipped set of everyday questions stands in.
"""

from __future__ import annotations

import time
from datetime import datetime

from typing import Callable

import numpy as np

from skiff.router.draft_check import DraftCheck, DraftThreshold
from skiff.router.policy import ROUTES, json_number
from skiff.router.records import AnswerStore
from skiff.router.state import RouterState, Thresholds, calibration_questions
from skiff.router.uncertainty import MIN_RECENT_FOR_CALIBRATION, UncertaintyRouter, thresholds_from_scores

RECENT_QUESTIONS = 500
RECALIBRATE_EVERY = 20


def calibrate(records: AnswerStore, router: UncertaintyRouter, embed: Callable[[list[str]], np.ndarray],
              cloud_share: float | None = None, local_plus_share: float | None = None,
              recent: int = RECENT_QUESTIONS) -> Thresholds:
    """Set τ so that `cloud_share` of recent questions would go to the cloud (shares default to
    the ones last calibrated to, else the configured ones)."""
    current = router.state.thresholds()
    if cloud_share is None:
        cloud_share = current.cloud_share if current else router.cloud_share
    if local_plus_share is None:
        # A share carried over from before gives way to a larger cloud share; given ones must fit.
        local_plus_share = min(current.local_plus_share if current else router.local_plus_share, 1.0 - cloud_share)
    feature_map = router.state.feature_map()
    features = records.recent_features(recent)
    if len(features) >= MIN_RECENT_FOR_CALIBRATION and features.shape[1] == feature_map.dim:
        source = f"your {len(features)} most recent questions"
    else:
        asked = len(features)
        questions = calibration_questions()
        features = feature_map.many(questions, embed(questions))
        source = f"{len(questions)} everyday questions shipped with skiff (you have asked {asked})"
    thresholds = thresholds_from_scores(router.scores(features), cloud_share, local_plus_share, source,
                                        decisions_at=records.decision_total(),
                                        before_draft_share=router.before_draft_share)
    router.state.save_thresholds(thresholds)
    return thresholds


MONTH_S = 30 * 24 * 3600.0
DAY_S = 24 * 3600.0


def share_for_budget(records: AnswerStore, budget_usd: float) -> tuple[float, str]:
    """The cloud share a monthly budget affords: budget / (questions a month × mean cost of a cloud
    answer), both measured from this person's own history."""
    mean_cost, priced = records.mean_cloud_cost()
    if priced == 0:
        raise ValueError("no priced cloud answers yet: set cloud_price_in_per_mtok / cloud_price_out_per_mtok, "
                         "ask a few questions with --route cloud, then calibrate by budget (or use --cloud-share)")
    decisions, in_use_s = records.usage_rate(MONTH_S)
    per_month = decisions / max(in_use_s, DAY_S) * MONTH_S  # at least a day, so one burst is not a month
    share = min(1.0, budget_usd / (per_month * mean_cost)) if per_month > 0 else 1.0
    return share, (f"${budget_usd:.2f}/month at ${mean_cost:.5f} per cloud answer (mean of {priced}) and "
                   f"~{per_month:.0f} questions a month affords {share:.0%} to the cloud")


def keep_calibrated(records: AnswerStore, router: UncertaintyRouter, embed: Callable[[list[str]], np.ndarray],
                    every: int = RECALIBRATE_EVERY) -> Thresholds | None:
    """Calibrate when there are no thresholds yet, when they split the cloud share between the two
    stages otherwise than the router now does, or `every` decisions after the last time."""
    current = router.state.thresholds()
    if (current is None or split_is_stale(current, router)
            or records.decision_total() - current.decisions_at >= every):
        return calibrate(records, router, embed)
    return None


def split_is_stale(current: Thresholds, router: UncertaintyRouter) -> bool:
    """Thresholds set under another split between the stages: before the cascade existed (all of
    the share before a draft, which would leave the draft check nothing to escalate and nothing to
    mark unsure), with the check turned on or off since, or with another `cloud_share_before_draft`.
    The shares themselves are kept: they may have been chosen with `skiff router calibrate`."""
    wanted = None if router.before_draft_share is None else min(router.before_draft_share, current.cloud_share)
    if wanted is None or current.before_draft_share is None:
        return (wanted is None) != (current.before_draft_share is None)
    return abs(wanted - current.before_draft_share) > 1e-9


def keep_draft_check_calibrated(records: AnswerStore, check: DraftCheck, share: float, force: bool = False,
                                every: int = RECALIBRATE_EVERY, recent: int = RECENT_QUESTIONS) -> DraftThreshold:
    """τ of the draft check for `share` of drafts: set when missing, when forced, when the share
    changed, and every `every` checked drafts after the last time (feedback moves the confidences)."""
    current = check.threshold()
    checked = records.draft_total(check.model_file)
    if (force or current is None or abs(current.share - share) > 1e-9
            or checked - current.decisions_at >= every):
        return check.calibrate(share, records.recent_draft_features(check.model_file, recent), checked)
    return current


def month_start(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(now if now is not None else time.time()).astimezone()
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def draft_check_stats(check: DraftCheck | None) -> dict | None:
    if check is None:
        return None
    threshold = check.threshold()
    return {"model": check.model_file, "threshold": json_number(threshold.threshold) if threshold else None,
            "share": threshold.share if threshold else None,
            "calibrated_on": threshold.calibrated_on if threshold else "not yet",
            "observations": check.surrogate().observations}


def router_stats(records: AnswerStore, router: UncertaintyRouter, budget_usd: float | None = None,
                 check: DraftCheck | None = None) -> dict:
    state: RouterState = router.state
    counts = records.decision_counts()
    decided = sum(c["chosen"] for c in counts.values())
    stages = records.cloud_stages()
    for stage in ("before_draft", "after_draft"):
        stages[f"{stage}_share"] = round(stages[stage] / decided, 4) if decided else None
    chosen = {route: counts.get(route, {}).get("chosen", 0) for route in ROUTES}
    ran = {route: counts.get(route, {}).get("ran", 0) for route in ROUTES}
    thresholds = state.thresholds()
    surrogate = state.surrogate()
    return {
        "decisions": decided,
        "router_chose": chosen,
        "ran": ran,
        "cloud_share": round(chosen["cloud"] / decided, 4) if decided else None,
        "target_cloud_share": thresholds.cloud_share if thresholds else router.cloud_share,
        "stages": stages,
        "draft_check": draft_check_stats(check),
        "thresholds": ({**thresholds.as_dict(), "cloud": json_number(thresholds.cloud),
                        "local_plus": json_number(thresholds.local_plus)} if thresholds else None),
        "feedback": records.feedback_counts(),
        "cloud_spend": {**records.cloud_spend(month_start()), "period": "this month", "budget_usd": budget_usd},
        "surrogate": {
            "observations_since_prior": surrogate.observations,
            "from": "your posterior" if state.posterior_path.is_file() else "the shipped prior",
            "beta": router.beta,
        },
    }
