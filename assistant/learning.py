"""What the Assistant does with the router beyond deciding: keeping both stages of the cascade
calibrated and up to date with feedback, learning from a verdict, resetting, statistics, and
what local+ was measured to gain with the model in use.

A mixin of the Assistant (assistant/pipeline.py), which provides the attributes declared below;
kept apart because it is about the router's learning, not about answering."""

from __future__ import annotations

from skiff.assistant.allocation import measured_table
from skiff.config.settings import Settings
from skiff.local.embedder import Embedder
from skiff.router.calibration import (calibrate, keep_calibrated, keep_draft_check_calibrated, router_stats,
                                      share_for_budget)
from skiff.router.draft_check import DraftCheck, share_of_drafts
from skiff.router.feedback import FeedbackResult, give_feedback, sync, sync_draft_check
from skiff.router.policy import RoutePolicy
from skiff.router.records import AnswerStore
from skiff.router.state import RouterState, Thresholds
from skiff.router.uncertainty import UncertaintyRouter


class Learning:
    settings: Settings
    policy: RoutePolicy
    router_state: RouterState
    records: AnswerStore
    embedder: Embedder
    model_name: str
    _draft_checks: dict[str, DraftCheck]
    _router_prepared: bool

    def draft_check(self, recalibrate: bool = False) -> DraftCheck | None:
        """The cascade's check for the model in use, up to date with feedback and calibrated to the
        share of drafts it should escalate (anew when `recalibrate`); None when drafts are not
        checked or no check was fitted for this model (router/draft_check.py)."""
        if not self.settings.check_drafts:
            return None
        name = self.model_name
        if name not in self._draft_checks:
            self._draft_checks[name] = DraftCheck(self.settings.router_dir, name, self.settings.draft_check_prior)
        check = self._draft_checks[name]
        if not check.available:
            return None
        sync_draft_check(self.records, check)
        keep_draft_check_calibrated(self.records, check, self._drafts_to_escalate(), force=recalibrate)
        return check

    def local_plus_measured(self) -> dict:
        """What each local+ method was measured to gain with the model in use, by kind of question
        and the draft check's stratum (assistant/allocation.py); empty for a model never measured."""
        return measured_table(self.model_name)

    def _drafts_to_escalate(self) -> float:
        thresholds = self.router_state.thresholds() if isinstance(self.policy, UncertaintyRouter) else None
        if thresholds is not None:
            return thresholds.drafts_to_escalate
        settings = self.settings
        return share_of_drafts(settings.cloud_share, settings.cloud_share_before_draft, settings.local_plus_share)

    def feedback(self, verdict: str, answer_id: str | None = None) -> FeedbackResult:
        """good/bad on an answer (the latest when no id is given); the router learns from it."""
        with self._router_lock:
            return give_feedback(self.records, self.router_state, verdict, answer_id, self.draft_check())

    def reset_router(self) -> None:
        """Forget what the router learned from feedback (the history stays in the database)."""
        last = self.records.last_feedback_event()
        self.router_state.reset(last)
        for posterior in self.settings.router_dir.glob("draft_check--*.npz"):
            posterior.unlink()  # each starts again from its prior, past the reset mark just written
        self._draft_checks.clear()

    def calibrate(self, cloud_share: float | None = None, local_plus_share: float | None = None,
                  budget_usd: float | None = None) -> Thresholds:
        """Thresholds that send `cloud_share` of recent questions to the cloud, or the share a monthly
        `budget_usd` affords at this person's question rate and cloud cost (router/calibration.py)."""
        if budget_usd is not None:
            cloud_share, _ = share_for_budget(self.records, budget_usd)
            if local_plus_share is not None:
                local_plus_share = min(local_plus_share, 1.0 - cloud_share)
        thresholds = calibrate(self.records, self._uncertainty_router(), self.embedder.encode, cloud_share,
                               local_plus_share)
        self.draft_check(recalibrate=True)  # τ of the second stage, for the share the first leaves it
        return thresholds

    def budget_share(self, budget_usd: float) -> tuple[float, str]:
        return share_for_budget(self.records, budget_usd)

    def router_stats(self) -> dict:
        return router_stats(self.records, self._uncertainty_router(), self.settings.cloud_budget_usd,
                            self.draft_check())

    def _uncertainty_router(self) -> UncertaintyRouter:
        if not isinstance(self.policy, UncertaintyRouter):
            raise ValueError("this assistant was given another routing policy")
        return self.policy

    def _prepare_router(self) -> None:
        if not self._router_prepared:
            # Events written by a process that died before its posterior write are absorbed here.
            sync(self.records, self.router_state)
            self._router_prepared = True
        if isinstance(self.policy, UncertaintyRouter):
            keep_calibrated(self.records, self.policy, self.embedder.encode)
