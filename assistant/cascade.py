"""The cascade's second stage at run time: watch the local draft as it streams, and once its first
tokens are out (router/draft_check.py), let the check say whether the local model is sure of it.

An unsure draft with a cloud to ask stops there and escalates; the person sees it set aside with
the confidence and τ ("the local model is unsure (0.31 < τ 0.45): asking the cloud"). Offline or
with no endpoint it gets more local compute where that was measured to pay (attempts.py,
allocation.py); otherwise, and with the local model asked for by name, the draft is finished and
stays, marked unsure.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Sequence

from skiff.local.llm import TokenConfidence
from skiff.router.draft_check import CHECK_AT, DraftCheck, DraftVerdict, reads_early

ASKING_THE_CLOUD = "asking the cloud"


class DraftWatch:
    """Reads the draft's token confidence as it is written. The check reads an answer from notes
    after CHECK_AT tokens (early: an unsure draft that may escalate stops there) and every draft
    once it is finished (final); a draft shorter than CHECK_AT is read once, at its end."""

    def __init__(self, check: DraftCheck, chunks: Sequence[str] | None, stop_when_unsure: bool,
                 cancel: threading.Event | None) -> None:
        self.check, self.chunks = check, chunks
        self.stop_when_unsure, self.cancel = stop_when_unsure, cancel
        self.confidence = TokenConfidence()
        self.early: DraftVerdict | None = None
        self.verdict: DraftVerdict | None = None  # the one that decides
        self.stopped = False  # the draft was cut short to escalate
        self.started = time.perf_counter()  # made just before the draft starts
        self.reads_early = reads_early(chunks is not None)

    def should_stop(self) -> bool:
        """Called after every token: stop for a cancel, or for an unsure draft that may escalate."""
        if self.cancel is not None and self.cancel.is_set():
            return True
        if self.early is None and self.reads_early and len(self.confidence.logprobs) >= CHECK_AT:
            self.early = self._judge(whole=False)
            self.stopped = self.stop_when_unsure and self.early.unsure
            if self.stopped:
                self.verdict = self.early
        return self.stopped

    def finish(self, stop_reason: str = "") -> DraftVerdict:
        """The deciding verdict: the early one that stopped the draft, else the draft's lower
        reading (a draft unsure at either point is unsure, as τ was calibrated: an unsure start is
        not overruled by a surer end when the draft ran on), once it ended for `stop_reason`."""
        if self.verdict is None:
            final = self._judge(whole=True, stop_reason=stop_reason)
            if self.early is not None and self.early.confidence < final.confidence:
                final = replace(self.early, features=final.features, draft_s=final.draft_s, check_ms=final.check_ms)
            self.verdict = final
        return self.verdict

    def escalates(self, cancelled: bool, stop_reason: str = "") -> bool:
        return not cancelled and self.stop_when_unsure and self.finish(stop_reason).unsure

    def escalated(self) -> DraftVerdict:
        return replace(self.finish(), escalated=True)

    def _judge(self, whole: bool, stop_reason: str = "") -> DraftVerdict:
        confidence, now = self.confidence, time.perf_counter()
        verdict = self.check.judge(confidence.logprobs, confidence.entropies, confidence.pieces, self.chunks, whole,
                                   earlier=self.early if whole else None, stop_reason=stop_reason)
        return replace(verdict, draft_s=now - self.started, check_ms=(time.perf_counter() - now) * 1000)


def escalation_reason(verdict: DraftVerdict) -> str:
    return f"{verdict.reason}: {ASKING_THE_CLOUD}"


def unsure_notice(verdict: DraftVerdict, why_it_stays: str) -> str:
    """What a kept, unsure draft is marked with."""
    return (f"the local model is unsure of this answer (confidence {verdict.confidence:.2f} < τ "
            f"{verdict.threshold:.2f}); {why_it_stays}. Check it against the sources")
